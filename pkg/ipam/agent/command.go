package agent

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
	"k8s.io/klog/v2"

	"github.com/berth-dev/berth/internal/daemon"
	"github.com/berth-dev/berth/pkg/ipam"
	"github.com/berth-dev/berth/pkg/ipam/agentapi"
)

type flags struct {
	etcd      ipam.EtcdConfig
	prefix    string
	opts      Options
	probeAddr string
}

// NewCommand returns the node agent daemon command (`cni-vlan agent`).
// present tells whether an attachment's interface exists on the node (nil:
// the agent does not free addresses of gone attachments itself).
func NewCommand(present func(containerID, ifName string) (bool, error)) *cobra.Command {
	f := &flags{}
	f.opts.AttachmentPresent = present
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the node's IPAM agent: the cni-vlan plugin allocates through it (one etcd session per node)",
		Long: `Run the node-local IPAM agent. The cni-vlan plugin binary sends every ADD, DEL, CHECK,
STATUS and GC to it on --socket. It keeps --node-buffer addresses per pool (the pool's
"nodeBuffer" in the network config) claimed in etcd under this node's name, hands them out
while etcd is unreachable, and journals assignments and releases in --state-dir until
etcd answers again. Serves /healthz and /metrics on --health-probe-bind-address.`,
		Example: "  cni-vlan agent --etcd-endpoints https://10.0.0.1:2379 --etcd-ca /etc/berth/etcd/ca.crt \\\n" +
			"    --etcd-cert /etc/berth/etcd/tls.crt --etcd-key /etc/berth/etcd/tls.key --node-name $NODE_NAME",
		Args:         cobra.NoArgs,
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
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
	fs.StringVar(&f.opts.Node, "node-name", os.Getenv("NODE_NAME"), "this node's name (default $NODE_NAME)")
	fs.StringVar(&f.opts.Socket, "socket", agentapi.DefaultSocket, "unix socket the plugin calls (a hostPath directory)")
	fs.StringVar(&f.opts.StateDir, "state-dir", "/var/lib/berth/ipam-agent", "directory of the journal, on the node's disk (a hostPath)")
	fs.DurationVar(&f.opts.SyncInterval, "sync-interval", time.Second, "how often the journal is replayed, buffers refilled and an unreachable etcd probed")
	fs.DurationVar(&f.opts.CallTimeout, "call-timeout", 3*time.Second, "bound of one ADD's or DEL's etcd work before the buffer or the journal takes over")
	fs.DurationVar(&f.opts.ReclaimInterval, "reclaim-interval", 30*time.Second, "how often this node's addresses whose attachment is gone are freed")
	fs.StringVar(&f.probeAddr, "health-probe-bind-address", ":9106", "address of /healthz and /metrics (\"0\" disables)")
	klogFlags := goflag.NewFlagSet("klog", goflag.ContinueOnError)
	klog.InitFlags(klogFlags)
	fs.AddGoFlagSet(klogFlags)
	return cmd
}

func splitEnv(name string) []string {
	if v := os.Getenv(name); v != "" {
		return strings.Split(v, ",")
	}
	return nil
}

func (f *flags) run(ctx context.Context) error {
	if err := f.etcd.Validate(); err != nil {
		return fmt.Errorf("%w (set --etcd-endpoints or $BERTH_ETCD_ENDPOINTS)", err)
	}
	cli, err := f.etcd.NewClient()
	if err != nil {
		return err
	}
	defer func() { _ = cli.Close() }() // exiting anyway
	alloc, err := ipam.NewEtcd(cli, f.prefix, ipam.WithAttemptTimeout(time.Second))
	if err != nil {
		return err
	}
	probes := daemon.NewProbes()
	f.opts.Registry = probes.Registry
	a, err := New(alloc, f.opts)
	if err != nil {
		return err
	}
	// Alive while it serves: an agent on its buffer during an etcd outage must not be restarted.
	probes.AddHealthz("socket", func(context.Context) error {
		_, err := os.Stat(f.opts.Socket)
		return err
	})
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return daemon.Serve(ctx, f.probeAddr, probes.Handler()) })
	g.Go(func() error { return a.Run(ctx) })
	return g.Wait()
}
