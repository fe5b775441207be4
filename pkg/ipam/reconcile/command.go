package reconcile

import (
	"context"
	goflag "flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/klog/v2"

	"github.com/berth-dev/berth/internal/daemon"
	"github.com/berth-dev/berth/pkg/ipam"
)

type flags struct {
	etcd          ipam.EtcdConfig
	prefix        string
	kubeconfig    string
	opts          Options
	probeAddr     string
	leaderElect   bool
	leaseNS       string
	leaseName     string
	leaseIdentity string
	leaseDuration time.Duration
}

// NewCommand returns the "reconcile" daemon command (`cni-vlan reconcile`).
func NewCommand() *cobra.Command {
	f := &flags{}
	cmd := &cobra.Command{
		Use:   "reconcile",
		Short: "Run the IPAM leak reconciler: free addresses of pods that no longer exist",
		Long: `Run the IPAM leak reconciler. Every --interval it lists the IPAM's allocations and
releases those whose pod (matched by UID, never by name alone) has been missing
for --grace-period and is still missing when asked again right before the release.
Serves /healthz, /readyz and /metrics on --health-probe-bind-address.`,
		Example:      "  cni-vlan reconcile --etcd-endpoints https://10.0.0.1:2379 --etcd-ca /etc/berth/etcd/ca.crt --leader-elect",
		Args:         cobra.NoArgs,
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// Like daemon.SignalContext, but under cmd.Context() so a caller can stop it too.
			ctx, cancel := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer cancel()
			return f.run(ctx)
		},
	}
	fs := cmd.Flags()
	fs.StringSliceVar(&f.etcd.Endpoints, "etcd-endpoints", splitEnv("BERTH_ETCD_ENDPOINTS"), "etcd client URLs of the IPAM")
	fs.StringVar(&f.etcd.CertFile, "etcd-cert", os.Getenv("BERTH_ETCD_CERT"), "etcd client certificate file")
	fs.StringVar(&f.etcd.KeyFile, "etcd-key", os.Getenv("BERTH_ETCD_KEY"), "etcd client key file")
	fs.StringVar(&f.etcd.TrustedCAFile, "etcd-ca", os.Getenv("BERTH_ETCD_CA"), "etcd CA file")
	fs.StringVar(&f.prefix, "prefix", ipam.DefaultPrefix, "etcd key prefix of the IPAM")
	fs.StringVar(&f.kubeconfig, "kubeconfig", "", "kubeconfig (default: in-cluster config)")
	fs.DurationVar(&f.opts.Interval, "interval", time.Minute, "time between two passes")
	fs.DurationVar(&f.opts.GracePeriod, "grace-period", 5*time.Minute, "how long a pod must be missing before its address is released")
	fs.StringVar(&f.opts.Pool, "pool", "", "only reconcile this pool (default: all)")
	fs.StringVar(&f.probeAddr, "health-probe-bind-address", ":9105", "address of /healthz, /readyz and /metrics (\"0\" disables)")
	fs.BoolVar(&f.leaderElect, "leader-elect", false, "run as one of several replicas; only the Lease holder reconciles")
	fs.StringVar(&f.leaseNS, "leader-elect-namespace", envOr("POD_NAMESPACE", "berth-system"), "namespace of the leader-election Lease")
	fs.StringVar(&f.leaseName, "leader-elect-lease", "berth-ipam-reconciler", "name of the leader-election Lease")
	fs.StringVar(&f.leaseIdentity, "leader-elect-identity", hostname(), "this replica's identity in the Lease (default: the hostname, the node name in the DaemonSet)")
	fs.DurationVar(&f.leaseDuration, "leader-elect-lease-duration", 15*time.Second, "leader-election lease duration")
	klogFlags := goflag.NewFlagSet("klog", goflag.ContinueOnError)
	klog.InitFlags(klogFlags) // -v, --logtostderr, ... (flags a parent already has are kept)
	fs.AddGoFlagSet(klogFlags)
	return cmd
}

func splitEnv(name string) []string {
	if v := os.Getenv(name); v != "" {
		return strings.Split(v, ",")
	}
	return nil
}

func hostname() string {
	h, _ := os.Hostname() // empty only on a broken host; the flag then must be set
	return h
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func (f *flags) run(ctx context.Context) error {
	log := klog.FromContext(ctx).WithValues("controller", Name)
	ctx = klog.NewContext(ctx, log)
	if err := f.etcd.Validate(); err != nil {
		return fmt.Errorf("%w (set --etcd-endpoints or $BERTH_ETCD_ENDPOINTS)", err)
	}
	cfg, err := kubeConfig(f.kubeconfig)
	if err != nil {
		return err
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	cli, err := f.etcd.NewClient()
	if err != nil {
		return err
	}
	defer func() { _ = cli.Close() }() // exiting anyway
	alloc, err := ipam.NewEtcd(cli, f.prefix)
	if err != nil {
		return err
	}
	probes := daemon.NewProbes()
	f.opts.Registry = probes.Registry
	r, err := New(alloc, kube, f.opts)
	if err != nil {
		return err
	}
	probes.AddHealthz("etcd", func(ctx context.Context) error { return alloc.Status(ctx, "") })
	// Standbys are ready when they could take over; the leader once its informer synced.
	probes.AddReadyz("reconciler", r.Ready)
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return daemon.Serve(ctx, f.probeAddr, probes.Handler()) })
	g.Go(func() error {
		if !f.leaderElect {
			return r.Run(ctx)
		}
		return f.runElected(ctx, kube, r)
	})
	return g.Wait()
}

func kubeConfig(path string) (*rest.Config, error) {
	if path == "" {
		if cfg, err := rest.InClusterConfig(); err == nil {
			return cfg, nil
		}
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w (pass --kubeconfig outside a cluster)", err)
	}
	return cfg, nil
}

// runElected reconciles only while holding the Lease.
func (f *flags) runElected(ctx context.Context, kube kubernetes.Interface, r *Reconciler) error {
	if f.leaseIdentity == "" {
		return fmt.Errorf("--leader-elect-identity is empty (no hostname): set it to a name unique among the replicas")
	}
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: f.leaseNS, Name: f.leaseName},
		Client:     kube.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: f.leaseIdentity},
	}
	var runErr error
	leaderelection.RunOrDie(ctx, leaderelection.LeaderElectionConfig{
		Lock: lock, ReleaseOnCancel: true, Name: Name,
		LeaseDuration: f.leaseDuration, RenewDeadline: f.leaseDuration * 2 / 3, RetryPeriod: f.leaseDuration / 6,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(ctx context.Context) { runErr = r.Run(ctx) },
			OnStoppedLeading: func() { klog.FromContext(ctx).Info("Stopped leading") },
		},
	})
	return runErr
}
