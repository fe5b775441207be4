package app

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/berth-dev/berth/internal/daemon"
	"github.com/berth-dev/berth/internal/kubeclient"
	"github.com/berth-dev/berth/pkg/ipam/reconcile"
)

// reconcileOptions are the flags of `cni-vlan reconcile`.
type reconcileOptions struct {
	etcdOptions
	reconcile.DaemonConfig
	kubeconfig  string
	leaderElect bool
	election    reconcile.LeaderElection
}

func (o *reconcileOptions) AddFlags(fs *pflag.FlagSet) {
	o.etcdOptions.AddFlags(fs)
	fs.StringVar(&o.kubeconfig, "kubeconfig", "",
		"kubeconfig (default: $KUBECONFIG, else the in-cluster config, else ~/.kube/config)")
	fs.DurationVar(&o.Interval, "interval", time.Minute, "time between two passes")
	fs.DurationVar(&o.GracePeriod, "grace-period", 5*time.Minute,
		"how long a pod must be missing before its address is released")
	fs.StringVar(&o.Pool, "pool", "", "only reconcile this pool (default: all)")
	fs.StringVar(&o.ProbeAddr, "health-probe-bind-address", ":9105",
		"address of /healthz, /readyz and /metrics (\"0\" disables)")
	fs.BoolVar(&o.leaderElect, "leader-elect", false,
		"run as one of several replicas; only the Lease holder reconciles")
	fs.StringVar(&o.election.Namespace, "leader-elect-namespace",
		envOr("POD_NAMESPACE", "berth-system"), "namespace of the leader-election Lease")
	fs.StringVar(&o.election.Lease, "leader-elect-lease", "berth-ipam-reconciler",
		"name of the leader-election Lease")
	fs.StringVar(&o.election.Identity, "leader-elect-identity", hostname(),
		"this replica's identity in the Lease (default: the hostname, the node name in the "+
			"DaemonSet)")
	fs.DurationVar(&o.election.LeaseDuration, "leader-elect-lease-duration", 15*time.Second,
		"leader-election lease duration")
}

// Validate checks what the reconciler needs before it touches etcd or the cluster.
func (o *reconcileOptions) Validate() error {
	if err := o.etcdOptions.Etcd.Validate(); err != nil {
		return fmt.Errorf("%w (set --etcd-endpoints or $BERTH_ETCD_ENDPOINTS)", err)
	}
	return nil
}

// Complete fills the reconciler's DaemonConfig from the flags.
func (o *reconcileOptions) Complete() {
	o.DaemonConfig.Etcd, o.DaemonConfig.Prefix = o.etcdOptions.Etcd, o.etcdOptions.Prefix
	if o.leaderElect {
		o.LeaderElection = &o.election
	}
}

func newReconcileCommand() *cobra.Command {
	o := &reconcileOptions{}
	cmd := &cobra.Command{
		Use:   "reconcile",
		Short: "Run the IPAM leak reconciler: free addresses of pods that no longer exist",
		Long: `Run the IPAM leak reconciler. Every --interval it lists the IPAM's allocations and
releases those whose pod (matched by UID, never by name alone) has been missing
for --grace-period and is still missing when asked again right before the release.
Serves /healthz, /readyz and /metrics on --health-probe-bind-address.`,
		Example: "  cni-vlan reconcile --etcd-endpoints https://10.0.0.1:2379 " +
			"--etcd-ca /etc/berth/etcd/ca.crt --leader-elect",
		Args:         cobra.NoArgs,
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.Validate(); err != nil {
				return err
			}
			o.Complete()
			kube, err := kubeclient.NewClientset(o.kubeconfig)
			if err != nil {
				return err
			}
			ctx, cancel := daemon.SignalContextFrom(cmd.Context())
			defer cancel()
			return reconcile.RunDaemon(ctx, kube, o.DaemonConfig)
		},
	}
	o.AddFlags(cmd.Flags())
	return cmd
}
