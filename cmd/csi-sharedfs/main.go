// Command csi-sharedfs is the berth CSI driver for GlusterFS SharedStorage with capacity and IO quotas.
package main

import (
	goflag "flag"
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"k8s.io/klog/v2"

	"github.com/berth-dev/berth/internal/daemon"
	"github.com/berth-dev/berth/internal/version"
	"github.com/berth-dev/berth/pkg/csi"
)

func main() {
	var o csi.RunOptions
	cmd := &cobra.Command{
		Use:           "csi-sharedfs",
		Short:         "berth CSI driver for GlusterFS SharedStorage with capacity and IO quotas",
		Version:       version.Version,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := daemon.SignalContext()
			defer cancel()
			ctx = klog.NewContext(ctx, klog.Background().WithValues("driver", csi.Name))
			return csi.Run(ctx, o)
		},
	}
	cmd.SetVersionTemplate(version.String("csi-sharedfs") + "\n")
	cmd.AddCommand(&cobra.Command{
		Use:                "iolayer",
		Short:              "serve one volume target through the IO-limited FUSE layer (started by the node plugin)",
		Hidden:             true,
		DisableFlagParsing: true,
		RunE:               func(_ *cobra.Command, args []string) error { return csi.IOLayerMain(args) },
	})
	f := cmd.Flags()
	f.BoolVar(&o.Driver.Controller, "controller", false, "serve the CSI controller service (create, delete, expand, modify)")
	f.BoolVar(&o.Driver.Node, "node", false, "serve the CSI node service (stage, publish, stats)")
	f.StringVar(&o.Driver.Endpoint, "endpoint", "unix:///csi/csi.sock", "CSI socket")
	f.StringVar(&o.Driver.NodeID, "node-id", os.Getenv("NODE_NAME"), "this node's name (default $NODE_NAME)")
	f.StringVar(&o.Driver.StateDir, "state-dir", "/var/lib/berth/csi-sharedfs", "GlusterFS mounts, logs and mount records")
	f.StringVar(&o.Driver.GlusterServer, "gluster-server", "", "host of a glusterd the FUSE client fetches volume layouts from (required)")
	f.StringVar(&o.Driver.DefaultGlusterVolume, "gluster-volume", "", "GlusterFS volume for StorageClasses that name none")
	f.StringVar(&o.Driver.GlusterfsBinary, "glusterfs", "glusterfs", "GlusterFS FUSE client binary")
	f.StringVar(&o.Driver.MountCgroupRoot, "mount-cgroup-root", "", "node: the host's /sys/fs/cgroup as mounted in this container; the mounts' FUSE daemons move to a cgroup there and survive a restart of the plugin (empty: they die with it)")
	f.StringVar(&o.Driver.MountCgroup, "mount-cgroup", csi.DefaultMountCgroup, "node: cgroup below each hierarchy of --mount-cgroup-root for the mounts' FUSE daemons")
	f.StringVar(&o.GlusterBinary, "gluster", "gluster", "gluster CLI binary (controller: quotas and volume status)")
	f.StringVar(&o.GlusterdSocket, "glusterd-socket", "", "glusterd management socket (default: the CLI's default)")
	f.StringVar(&o.MetricsAddr, "metrics-address", ":9811", "address of /healthz, /readyz and /metrics")
	f.StringVar(&o.Kubeconfig, "kubeconfig", "", "kubeconfig (default: in-cluster, then $KUBECONFIG)")
	f.BoolVar(&o.Provision, "provision", true, "controller: run the PVC provisioning, resize and health controllers")
	f.BoolVar(&o.QuotaWriteBehind, "quota-write-behind", false, "controller: keep GlusterFS write-behind on for volumes with berth quotas (faster small writes; a write past the quota may then be acknowledged and fail only at a later write or close)")
	f.StringVar(&o.GlusterAuthAllow, "gluster-auth-allow", "", "controller: auth.allow set on every GlusterFS volume berth provisions on: the node addresses, comma-separated, '*' wildcards allowed (e.g. 10.0.0.*); empty: any client")
	f.BoolVar(&o.LeaderElection, "leader-election", true, "controller: elect one active provisioner among replicas")
	f.StringVar(&o.RegistrationDir, "registration-dir", "/registration", "node: kubelet plugin registration dir (empty: do not register)")
	f.StringVar(&o.KubeletEndpoint, "kubelet-endpoint", "/var/lib/kubelet/plugins/"+csi.Name+"/csi.sock", "node: the CSI socket path as the kubelet sees it")
	klogFlags := goflag.NewFlagSet("klog", goflag.ExitOnError)
	klog.InitFlags(klogFlags)
	f.AddGoFlagSet(klogFlags)
	if err := cmd.Execute(); err != nil {
		fmt.Fprintf(os.Stderr, "csi-sharedfs: %v\n", err)
		os.Exit(1)
	}
}
