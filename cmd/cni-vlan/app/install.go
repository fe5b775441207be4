package app

import (
	"fmt"
	"net/netip"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"k8s.io/klog/v2"

	"github.com/berth-dev/berth/internal/daemon"
	"github.com/berth-dev/berth/pkg/cni"
	"github.com/berth-dev/berth/pkg/ipam"
)

// installOptions are the flags of `cni-vlan install`.
type installOptions struct {
	cni.InstallOptions
	ipam            ipam.Config
	subnet, gateway string
	sleep           bool
}

func (o *installOptions) AddFlags(f *pflag.FlagSet) {
	ic := &o.ipam
	f.StringVar(&o.BinDir, "cni-bin-dir", "/host/opt/cni/bin",
		"the node's CNI plugin directory, as mounted here")
	f.StringVar(&o.ConfDir, "cni-conf-dir", "/host/etc/cni/net.d",
		"the node's CNI config directory, as mounted here")
	f.StringVar(&o.ConfName, "conf-name", "10-berth.conflist",
		"conflist file name (the runtime uses the first in lexical order)")
	f.StringVar(&o.Network.Name, "name", "berth", "CNI network name")
	f.StringVar(&o.Network.Uplink, "uplink", "eth0", "host interface on the switch's trunk port")
	f.IntVar(&o.Network.VLAN, "vlan", 0, "802.1Q VLAN id of the network (1-4094)")
	f.StringVar(&o.Network.Bridge, "bridge", "", "per-VLAN bridge name (default berth<vlan>)")
	f.IntVar(&o.Network.MTU, "mtu", 0, "pod MTU (default: the uplink's)")
	f.StringVar(&o.Network.Datapath, "datapath", cni.DatapathAuto,
		"auto (kernel if this node's kernel has 802.1Q, else tc-bpf; the conflist gets the one "+
			"found), kernel (802.1Q sub-interface) or tc-bpf (for kernels without 802.1Q)")
	f.BoolVar(&o.Network.HostGateway, "host-gateway", false, "put the pool gateway on every "+
		"node's bridge (a distributed gateway; the node joins the VLAN at install)")
	f.BoolVar(&o.Bandwidth, "bandwidth", true, "chain the reference bandwidth plugin "+
		"(kubernetes.io/ingress-bandwidth, egress-bandwidth)")
	f.BoolVar(&o.Portmap, "portmap", false, "chain the reference portmap plugin (hostPort)")
	f.BoolVar(&o.BerthIPAM, "install-berth-ipam", false, "also install the stand-alone IPAM "+
		"plugin as berth-ipam in --cni-bin-dir (the slim build: it allocates through this node's "+
		"agent, for macvlan, ipvlan or bridge networks whose config names \"agentSocket\")")
	f.StringVar(&o.RuntimeCNIVersion, "runtime-cni-version", "1.0.0",
		"newest CNI version the node's container runtime accepts: 1.0.0 (containerd 1.6/1.7) "+
			"or 1.1.0 (containerd >= 2.0, CRI-O >= 1.30; STATUS and GC are then called)")
	f.BoolVar(&o.RequireChained, "require-chained", false, "fail when a chained plugin "+
		"(--bandwidth, --portmap) is not in --cni-bin-dir, instead of leaving it out of the "+
		"conflist with an error log")
	f.StringSliceVar(&ic.Etcd.Endpoints, "etcd-endpoints", nil, "etcd client URLs of the IPAM")
	f.StringVar(&o.TLSSourceDir, "etcd-tls-dir", "", "directory with tls.crt, tls.key, ca.crt "+
		"for etcd (a mounted Secret); copied onto the node")
	f.StringVar(&ic.Prefix, "etcd-prefix", "", "etcd key prefix of the IPAM (default /berth/ipam)")
	f.StringVar(&ic.Pool, "pool", "", "IPAM pool the network allocates from")
	f.StringVar(&o.subnet, "pool-subnet", "",
		"create the pool with this subnet on first use (else it must exist)")
	f.StringVar(&o.gateway, "pool-gateway", "",
		"gateway of the pool created with --pool-subnet (default: first address)")
	f.StringVar(&ic.NodeName, "node-name", os.Getenv("NODE_NAME"),
		"node name recorded with allocations (default $NODE_NAME, else the hostname)")
	f.StringSliceVar(&ic.FixedIPStatefulSets, "fixed-ip-statefulsets", nil,
		"namespace/statefulset (or namespace/*) whose pods keep their IP")
	f.BoolVar(&o.sleep, "sleep", false,
		"after installing, wait for SIGTERM (to run as a long-lived container)")
}

// Validate parses the pool flags into the IPAM config and checks it; the errors name the flag.
func (o *installOptions) Validate() error {
	ic := &o.ipam
	ic.PoolSpec = nil
	if o.subnet != "" {
		p := ipam.Pool{Name: ic.Pool, VLAN: o.Network.VLAN}
		var err error
		if p.Subnet, err = netip.ParsePrefix(o.subnet); err != nil {
			return fmt.Errorf("--pool-subnet %q: %w", o.subnet, err)
		}
		if o.gateway != "" {
			if p.Gateway, err = netip.ParseAddr(o.gateway); err != nil {
				return fmt.Errorf("--pool-gateway %q: %w", o.gateway, err)
			}
		}
		ic.PoolSpec = &p
	}
	return ic.Validate()
}

func newInstallCommand() *cobra.Command {
	o := &installOptions{}
	cmd := &cobra.Command{
		Use: "install",
		Short: "copy this binary into the node's CNI bin dir and write the network's conflist " +
			"(DaemonSet init container)",
		Example: `  cni-vlan install --uplink eth1 --vlan 100 --datapath tc-bpf \
    --etcd-endpoints https://10.0.0.1:2379 --etcd-tls-dir /etc/berth/etcd \
    --pool vlan100 --pool-subnet 10.100.0.0/22 --pool-gateway 10.100.0.1`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.Validate(); err != nil {
				return err
			}
			if err := o.install(); err != nil {
				return err
			}
			if o.sleep {
				ctx, cancel := daemon.SignalContextFrom(cmd.Context())
				defer cancel()
				<-ctx.Done()
			}
			return nil
		},
	}
	o.AddFlags(cmd.Flags())
	return cmd
}

func (o *installOptions) install() error {
	o.Network.SetIPAM(&o.ipam)
	rep, err := cni.Install(o.InstallOptions)
	for _, d := range rep.Dropped {
		effect := "hostPort mappings do not work on this node"
		if d.Name == "bandwidth" {
			effect = "kubernetes.io/ingress-bandwidth and egress-bandwidth are NOT enforced " +
				"on this node"
		}
		klog.ErrorS(nil, "CHAINED PLUGIN MISSING, left out of the conflist: "+effect+
			". Install the reference CNI plugins into --cni-bin-dir "+
			"(or pass --require-chained to fail instead)",
			"plugin", d.Name, "reason", d.Reason)
	}
	if err != nil {
		return err
	}
	klog.InfoS("installed", "binary", o.BinDir+"/"+cni.Name,
		"conflist", o.ConfDir+"/"+o.ConfName, "vlan", o.Network.VLAN,
		"datapath", rep.Datapath, "cniVersion", rep.CNIVersion,
		"cniVersionReason", rep.CNIVersionReason, "chained", rep.Chained,
		"joinedVLAN", rep.JoinedVLAN)
	if rep.BerthIPAM != "" {
		klog.InfoS("installed the stand-alone IPAM plugin", "binary", rep.BerthIPAM)
	}
	return nil
}
