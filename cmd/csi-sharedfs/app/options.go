package app

import (
	"os"

	"github.com/spf13/pflag"

	"github.com/berth-dev/berth/pkg/csi"
	"github.com/berth-dev/berth/pkg/csi/mountcgroup"
)

// Options are the flags of csi-sharedfs; they fill a csi.Config.
type Options struct {
	csi.Config
}

// NewOptions returns the defaults, some taken from the pod's environment (NODE_NAME and
// POD_NAMESPACE from the downward API).
func NewOptions() *Options {
	o := &Options{Config: csi.Config{
		Driver: csi.Options{
			Endpoint: "unix:///csi/csi.sock", NodeID: os.Getenv("NODE_NAME"),
			StateDir: "/var/lib/berth/csi-sharedfs", GlusterfsBinary: "glusterfs",
			MountCgroup: mountcgroup.DefaultName,
		},
		GlusterBinary: "gluster", MetricsAddr: ":9811", Provision: true, LeaderElection: true,
		RegistrationDir: "/registration",
		KubeletEndpoint: "/var/lib/kubelet/plugins/" + csi.Name + "/csi.sock",
		LeaseNamespace:  "berth-system",
	}}
	if ns := os.Getenv("POD_NAMESPACE"); ns != "" {
		o.LeaseNamespace = ns
	}
	return o
}

// AddFlags binds the options to fs.
func (o *Options) AddFlags(fs *pflag.FlagSet) {
	d := &o.Driver
	fs.BoolVar(&d.Controller, "controller", d.Controller,
		"serve the CSI controller service (create, delete, expand, modify)")
	fs.BoolVar(&d.Node, "node", d.Node, "serve the CSI node service (stage, publish, stats)")
	fs.StringVar(&d.Endpoint, "endpoint", d.Endpoint, "CSI socket")
	fs.StringVar(&d.NodeID, "node-id", d.NodeID, "this node's name (default $NODE_NAME)")
	fs.StringVar(&d.StateDir, "state-dir", d.StateDir,
		"GlusterFS mounts, logs and mount records")
	fs.StringVar(&d.GlusterServer, "gluster-server", d.GlusterServer,
		"host of a glusterd the FUSE client fetches volume layouts from (required)")
	fs.StringVar(&d.DefaultGlusterVolume, "gluster-volume", d.DefaultGlusterVolume,
		"GlusterFS volume for StorageClasses that name none")
	fs.StringVar(&d.GlusterfsBinary, "glusterfs", d.GlusterfsBinary, "GlusterFS FUSE client binary")
	fs.StringVar(&d.MountCgroupRoot, "mount-cgroup-root", d.MountCgroupRoot,
		"node: the host's /sys/fs/cgroup as mounted in this container; the mounts' FUSE "+
			"daemons move to a cgroup there and survive a restart of the plugin "+
			"(empty: they die with it)")
	fs.StringVar(&d.MountCgroup, "mount-cgroup", d.MountCgroup,
		"node: cgroup below each hierarchy of --mount-cgroup-root for the mounts' FUSE daemons")
	fs.StringVar(&o.GlusterBinary, "gluster", o.GlusterBinary,
		"gluster CLI binary (controller: quotas and volume status)")
	fs.StringVar(&o.GlusterdSocket, "glusterd-socket", o.GlusterdSocket,
		"glusterd management socket (default: the CLI's default)")
	fs.StringVar(&o.MetricsAddr, "metrics-address", o.MetricsAddr,
		"address of /healthz, /readyz and /metrics")
	fs.StringVar(&o.Kubeconfig, "kubeconfig", o.Kubeconfig,
		"kubeconfig (default: in-cluster, then $KUBECONFIG)")
	fs.BoolVar(&o.Provision, "provision", o.Provision,
		"controller: run the PVC provisioning, resize and health controllers")
	fs.BoolVar(&o.QuotaWriteBehind, "quota-write-behind", o.QuotaWriteBehind,
		"controller: keep GlusterFS write-behind on for volumes with berth quotas (faster "+
			"small writes; a write past the quota may then be acknowledged and fail only at "+
			"a later write or close)")
	fs.StringVar(&o.GlusterAuthAllow, "gluster-auth-allow", o.GlusterAuthAllow,
		"controller: auth.allow set on every GlusterFS volume berth provisions on: the node "+
			"addresses, comma-separated, '*' wildcards allowed (e.g. 10.0.0.*); empty: any client")
	fs.BoolVar(&o.LeaderElection, "leader-election", o.LeaderElection,
		"controller: elect one active provisioner among replicas")
	fs.StringVar(&o.RegistrationDir, "registration-dir", o.RegistrationDir,
		"node: kubelet plugin registration dir (empty: do not register)")
	fs.StringVar(&o.KubeletEndpoint, "kubelet-endpoint", o.KubeletEndpoint,
		"node: the CSI socket path as the kubelet sees it")
}

// Validate checks the flags before anything starts.
func (o *Options) Validate() error { return o.Config.Validate() }
