package agent

import (
	"context"
	"fmt"
	"os"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/berth-dev/berth/internal/daemon"
	"github.com/berth-dev/berth/pkg/ipam"
)

// DaemonConfig is the node agent process (`cni-vlan agent`): the agent's Options, where its
// etcd is and where it serves /healthz and /metrics.
type DaemonConfig struct {
	Etcd   ipam.EtcdConfig
	Prefix string
	Options
	// ProbeAddr serves /healthz and /metrics ("0" disables).
	ProbeAddr string
}

// RunDaemon connects to etcd and serves the node's IPAM calls and its probes until ctx ends.
func RunDaemon(ctx context.Context, c DaemonConfig) error {
	if err := c.Etcd.Validate(); err != nil {
		return fmt.Errorf("%w (set --etcd-endpoints or $BERTH_ETCD_ENDPOINTS)", err)
	}
	cli, err := c.Etcd.NewClient()
	if err != nil {
		return err
	}
	defer func() { _ = cli.Close() }() // exiting anyway
	alloc, err := ipam.NewEtcd(cli, c.Prefix, ipam.WithAttemptTimeout(time.Second))
	if err != nil {
		return err
	}
	probes := daemon.NewProbes()
	c.Registry = probes.Registry
	a, err := New(alloc, c.Options)
	if err != nil {
		return err
	}
	// Alive while it serves: an agent on its buffer during an etcd outage must not be restarted.
	probes.AddHealthz("socket", func(context.Context) error {
		_, err := os.Stat(c.Socket)
		return err
	})
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return daemon.Serve(ctx, c.ProbeAddr, probes.Handler()) })
	g.Go(func() error { return a.Run(ctx) })
	return g.Wait()
}
