package reconcile

import (
	"context"
	"fmt"
	"time"

	"golang.org/x/sync/errgroup"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/klog/v2"

	"github.com/berth-dev/berth/internal/daemon"
	"github.com/berth-dev/berth/pkg/ipam"
)

// DaemonConfig is the reconciler process (`cni-vlan reconcile`): the reconciler's Options,
// where its etcd is, where it serves its probes and whether it elects a leader.
type DaemonConfig struct {
	Etcd   ipam.EtcdConfig
	Prefix string
	Options
	// ProbeAddr serves /healthz, /readyz and /metrics ("0" disables).
	ProbeAddr string
	// LeaderElection, when set, makes the process one of several replicas: only the holder of
	// the Lease reconciles.
	LeaderElection *LeaderElection
}

// LeaderElection names the Lease the replicas share and this replica's identity in it.
type LeaderElection struct {
	Namespace, Lease, Identity string
	LeaseDuration              time.Duration
}

// RunDaemon reconciles, and serves the probes, until ctx ends.
func RunDaemon(ctx context.Context, kube kubernetes.Interface, c DaemonConfig) error {
	log := klog.FromContext(ctx).WithValues("controller", Name)
	ctx = klog.NewContext(ctx, log)
	if err := c.Etcd.Validate(); err != nil {
		return fmt.Errorf("%w (set --etcd-endpoints or $BERTH_ETCD_ENDPOINTS)", err)
	}
	cli, err := c.Etcd.NewClient()
	if err != nil {
		return err
	}
	defer func() { _ = cli.Close() }() // exiting anyway
	alloc, err := ipam.NewEtcd(cli, c.Prefix)
	if err != nil {
		return err
	}
	probes := daemon.NewProbes()
	c.Registry = probes.Registry
	r, err := New(alloc, kube, c.Options)
	if err != nil {
		return err
	}
	probes.AddHealthz("etcd", func(ctx context.Context) error { return alloc.Status(ctx, "") })
	// Standbys are ready when they could take over; the leader once its informer synced.
	probes.AddReadyz("reconciler", r.Ready)
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return daemon.Serve(ctx, c.ProbeAddr, probes.Handler()) })
	g.Go(func() error {
		if c.LeaderElection == nil {
			return r.Run(ctx)
		}
		return runElected(ctx, kube, r, *c.LeaderElection)
	})
	return g.Wait()
}

// runElected reconciles only while holding the Lease.
func runElected(ctx context.Context, kube kubernetes.Interface, r *Reconciler,
	le LeaderElection) error {
	if le.Identity == "" {
		return fmt.Errorf("--leader-elect-identity is empty (no hostname): " +
			"set it to a name unique among the replicas")
	}
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: le.Namespace, Name: le.Lease},
		Client:     kube.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: le.Identity},
	}
	var runErr error
	leaderelection.RunOrDie(ctx, leaderelection.LeaderElectionConfig{
		Lock: lock, ReleaseOnCancel: true, Name: Name,
		LeaseDuration: le.LeaseDuration, RenewDeadline: le.LeaseDuration * 2 / 3,
		RetryPeriod: le.LeaseDuration / 6,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(ctx context.Context) { runErr = r.Run(ctx) },
			OnStoppedLeading: func() { klog.FromContext(ctx).Info("Stopped leading") },
		},
	})
	return runErr
}
