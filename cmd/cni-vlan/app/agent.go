package app

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/berth-dev/berth/internal/daemon"
	"github.com/berth-dev/berth/pkg/cni"
	"github.com/berth-dev/berth/pkg/ipam/agent"
	"github.com/berth-dev/berth/pkg/ipam/agentapi"
)

// agentOptions are the flags of `cni-vlan agent`.
type agentOptions struct {
	etcdOptions
	agent.DaemonConfig
}

func (o *agentOptions) AddFlags(fs *pflag.FlagSet) {
	o.etcdOptions.AddFlags(fs)
	fs.StringVar(&o.Node, "node-name", os.Getenv("NODE_NAME"),
		"this node's name (default $NODE_NAME)")
	fs.StringVar(&o.Socket, "socket", agentapi.DefaultSocket,
		"unix socket the plugin calls (a hostPath directory)")
	fs.StringVar(&o.StateDir, "state-dir", "/var/lib/berth/ipam-agent",
		"directory of the journal, on the node's disk (a hostPath)")
	fs.DurationVar(&o.SyncInterval, "sync-interval", time.Second, "how often the journal is "+
		"replayed, buffers refilled and an unreachable etcd probed")
	fs.DurationVar(&o.CallTimeout, "call-timeout", 3*time.Second, "bound of one ADD's or "+
		"DEL's etcd work before the buffer or the journal takes over")
	fs.DurationVar(&o.ReclaimInterval, "reclaim-interval", 30*time.Second,
		"how often this node's addresses whose attachment is gone are freed")
	fs.StringVar(&o.ProbeAddr, "health-probe-bind-address", ":9106",
		"address of /healthz and /metrics (\"0\" disables)")
}

// Validate checks what the agent needs before it touches etcd.
func (o *agentOptions) Validate() error {
	if err := o.etcdOptions.Etcd.Validate(); err != nil {
		return fmt.Errorf("%w (set --etcd-endpoints or $BERTH_ETCD_ENDPOINTS)", err)
	}
	return nil
}

func newAgentCommand() *cobra.Command {
	o := &agentOptions{}
	// The agent frees the addresses of this node's attachments whose interface is gone.
	o.AttachmentPresent = cni.AttachmentPresent
	cmd := &cobra.Command{
		Use: "agent",
		Short: "Run the node's IPAM agent: the cni-vlan plugin allocates through it " +
			"(one etcd session per node)",
		Long: `Run the node-local IPAM agent. The cni-vlan plugin binary sends every ADD, DEL, CHECK,
STATUS and GC to it on --socket. It keeps --node-buffer addresses per pool (the pool's
"nodeBuffer" in the network config) claimed in etcd under this node's name, hands them out
while etcd is unreachable, and journals assignments and releases in --state-dir until
etcd answers again. Serves /healthz and /metrics on --health-probe-bind-address.`,
		Example: "  cni-vlan agent --etcd-endpoints https://10.0.0.1:2379 " +
			"--etcd-ca /etc/berth/etcd/ca.crt \\\n" +
			"    --etcd-cert /etc/berth/etcd/tls.crt --etcd-key /etc/berth/etcd/tls.key " +
			"--node-name $NODE_NAME",
		Args:         cobra.NoArgs,
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.Validate(); err != nil {
				return err
			}
			ctx, cancel := daemon.SignalContextFrom(cmd.Context())
			defer cancel()
			o.DaemonConfig.Etcd, o.DaemonConfig.Prefix = o.etcdOptions.Etcd, o.etcdOptions.Prefix
			return agent.RunDaemon(ctx, o.DaemonConfig)
		},
	}
	o.AddFlags(cmd.Flags())
	return cmd
}
