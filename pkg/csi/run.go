package csi

import (
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	storagelisters "k8s.io/client-go/listers/storage/v1"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v13/controller"

	"github.com/berth-dev/berth/internal/daemon"
	"github.com/berth-dev/berth/internal/kubeclient"
)

// Config is the configuration of a csi-sharedfs process (cmd/csi-sharedfs/app fills it from
// flags): the driver and, per role, what runs next to it.
type Config struct {
	Driver          Options
	GlusterBinary   string // controller: gluster CLI
	GlusterdSocket  string // controller: glusterd management socket ("" = the CLI's default)
	MetricsAddr     string // address of /healthz, /readyz and /metrics
	Kubeconfig      string // controller: "" = in-cluster, then $KUBECONFIG
	RegistrationDir string // node: kubelet plugins_registry dir ("" = do not register)
	KubeletEndpoint string // node: the CSI socket path as the kubelet sees it
	Provision       bool   // controller: run the provisioning, resize and health controllers
	LeaderElection  bool   // controller: elect one active provisioner among replicas
	// LeaseNamespace holds the controllers' leader election Lease, e.g. berth-system.
	LeaseNamespace string
	// QuotaWriteBehind and GlusterAuthAllow: see GlusterCLI.WriteBehind and AuthAllow.
	QuotaWriteBehind bool
	GlusterAuthAllow string
}

// Validate checks what can be checked before anything starts.
func (c *Config) Validate() error {
	if err := c.Driver.validate(); err != nil {
		return err
	}
	return validAuthAllow(c.GlusterAuthAllow)
}

// Run starts the CSI server, the probes and, per role, the kubelet registration or the
// provisioning/resize/health controllers, and stops all of them when ctx ends.
func Run(ctx context.Context, o Config) error {
	probes := daemon.NewProbes()
	o.Driver.Metrics = NewMetrics(probes.Registry)
	if o.Driver.Controller {
		o.Driver.GlusterCLI = NewGlusterCLI(o.GlusterBinary, o.GlusterdSocket, "", "")
		o.Driver.GlusterCLI.WriteBehind = o.QuotaWriteBehind
		if err := validAuthAllow(o.GlusterAuthAllow); err != nil {
			return err
		}
		o.Driver.GlusterCLI.AuthAllow = o.GlusterAuthAllow
		if o.GlusterAuthAllow == "" {
			klog.FromContext(ctx).Info("no --gluster-auth-allow: GlusterFS volumes accept " +
				"clients from any host that reaches the brick ports")
		}
	}
	d, err := NewDriver(o.Driver)
	if err != nil {
		return err
	}
	probes.AddReadyz("csi", d.Ready)
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return d.Run(ctx) })
	g.Go(func() error { return daemon.Serve(ctx, o.MetricsAddr, probes.Handler()) })
	if o.Driver.Node && o.RegistrationDir != "" {
		ep := o.KubeletEndpoint
		if ep == "" {
			ep = o.Driver.Endpoint
		}
		reg := NewRegistrar(ep)
		probes.AddReadyz("kubelet-registration", reg.Ready)
		g.Go(func() error {
			select {
			case <-d.Serving():
			case <-ctx.Done():
				return nil
			}
			return reg.Serve(ctx, o.RegistrationDir)
		})
	}
	if o.Driver.Controller && o.Provision {
		if err := runControllers(ctx, g, d, o); err != nil {
			return err
		}
	}
	if err := g.Wait(); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

func runControllers(ctx context.Context, g *errgroup.Group, d *Driver, o Config) error {
	cfg, err := kubeclient.RESTConfig(o.Kubeconfig)
	if err != nil {
		return err
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("failed to create Kubernetes client: %w", err)
	}
	p, err := NewProvisioner(d, client)
	if err != nil {
		return err
	}
	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	broadcaster.StartRecordingToSink(
		&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")})
	recorder := broadcaster.NewRecorder(scheme.Scheme, v1.EventSource{Component: "csi-sharedfs"})
	start := func(ctx context.Context) {
		// One election for all three: the resizer's and health monitor's PV/PVC updates
		// and Events must not race between replicas.
		// As the CSI external-provisioner does: failed provisioning and deletion are retried
		// for good (a delete waits out an offline brick, however long), 1 s doubling to 5 min.
		pc := controller.NewProvisionController(ctx, client, Name, p,
			controller.LeaderElection(false), controller.FailedProvisionThreshold(0),
			controller.FailedDeleteThreshold(0), controller.RateLimiter(
				workqueue.NewTypedItemExponentialFailureRateLimiter[string](time.Second, 5*time.Minute)))
		cg, ctx := errgroup.WithContext(ctx)
		cg.Go(func() error { pc.Run(ctx); return nil })
		cg.Go(func() error { return NewResizer(d, client, recorder).Run(ctx) })
		hm := newHealthMonitor(ctx, d, client, recorder)
		cg.Go(func() error { return hm.Run(ctx) })
		klog.FromContext(ctx).Info("provisioning, resize and health controllers started",
			"provisioner", Name)
		if err := cg.Wait(); err != nil {
			klog.FromContext(ctx).Error(err, "controller stopped")
		}
	}
	if !o.LeaderElection {
		g.Go(func() error { start(ctx); return nil })
		return nil
	}
	id, err := os.Hostname()
	if err != nil {
		return fmt.Errorf("failed to read hostname for the leader election identity: %w", err)
	}
	lock, err := resourcelock.New(resourcelock.LeasesResourceLock, o.LeaseNamespace, leaseName,
		client.CoreV1(), client.CoordinationV1(),
		resourcelock.ResourceLockConfig{Identity: id, EventRecorder: recorder})
	if err != nil {
		return fmt.Errorf("failed to create leader election lock: %w", err)
	}
	g.Go(func() error {
		leaderelection.RunOrDie(ctx, leaderelection.LeaderElectionConfig{
			Lock: lock, ReleaseOnCancel: true, Name: leaseName,
			LeaseDuration: 15 * time.Second, RenewDeadline: 10 * time.Second,
			RetryPeriod: 2 * time.Second,
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: start,
				OnStoppedLeading: func() {
					klog.FromContext(ctx).Info("leader election lost or released", "identity", id)
				},
			},
		})
		if ctx.Err() == nil {
			// Lost the lease while running: exit so a restart rejoins the election
			// rather than keep serving without controllers.
			return errors.New("lost the controller leader election")
		}
		return nil
	})
	return nil
}

// leaseName is the Lease the controller replicas elect their leader on.
const leaseName = "sharedfs-csi-berth-dev"

// newHealthMonitor watches PVs and StorageClasses through informers (the health loop reads
// them every poll) and returns the monitor of their GlusterFS volumes.
func newHealthMonitor(ctx context.Context, d *Driver, client kubernetes.Interface,
	recorder record.EventRecorder) *HealthMonitor {
	factory := informers.NewSharedInformerFactory(client, 10*time.Minute)
	pvs := factory.Core().V1().PersistentVolumes().Lister()
	scs := factory.Storage().V1().StorageClasses().Lister()
	factory.Start(ctx.Done())
	factory.WaitForCacheSync(ctx.Done())
	return &HealthMonitor{Driver: d, PVs: pvs, Recorder: recorder,
		Volumes: func(context.Context) []string { return d.knownGlusterVolumes(scs, pvs) }}
}

// knownGlusterVolumes are the GlusterFS volumes of every StorageClass of this driver, the
// default volume, the dedicated volumes of existing PVs and every volume this process mounted.
func (d *Driver) knownGlusterVolumes(scs storagelisters.StorageClassLister,
	pvs corelisters.PersistentVolumeLister) []string {
	seen := map[string]bool{}
	var out []string
	add := func(v string) {
		if v != "" && !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	add(d.opts.DefaultGlusterVolume)
	if scs != nil {
		classes, _ := scs.List(labels.Everything()) // a lister's List does not fail
		for _, sc := range classes {
			for k, v := range sc.Parameters {
				if sc.Provisioner == Name && strings.EqualFold(k, ParamGlusterVolume) {
					add(v)
				}
			}
		}
	}
	if pvs != nil {
		volumes, _ := pvs.List(labels.Everything())
		for _, pv := range volumes {
			if pv.Spec.CSI == nil || pv.Spec.CSI.Driver != Name {
				continue
			}
			if ref, err := parseVolumeID(pv.Spec.CSI.VolumeHandle); err == nil && ref.Dedicated() {
				add(ref.GlusterVolume)
			}
		}
	}
	d.mu.Lock()
	for v := range d.mounts {
		add(v)
	}
	d.mu.Unlock()
	return out
}

var authAllowRe = regexp.MustCompile(`^[0-9A-Za-z*.:-]+(/[0-9]{1,3})?$`)

// validAuthAllow checks --gluster-auth-allow: comma-separated addresses, host names or
// '*' patterns, as GlusterFS's auth.allow takes them.
func validAuthAllow(v string) error {
	if v == "" {
		return nil
	}
	if len(v) > 4096 {
		return fmt.Errorf("invalid --gluster-auth-allow: %d characters, at most 4096", len(v))
	}
	for _, a := range strings.Split(v, ",") {
		if !authAllowRe.MatchString(a) || a == "*" {
			return fmt.Errorf("invalid --gluster-auth-allow entry %q: want node addresses or patterns "+
				"such as 10.0.0.11,10.0.1.*  (not '*', which allows every client)", a)
		}
	}
	return nil
}
