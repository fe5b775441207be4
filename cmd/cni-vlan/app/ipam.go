package app

// The IPAM admin command line (`cni-vlan ipam ...`): list pools with their
// free counts, list allocations and fixed-IP pins, create and delete pools,
// release a stuck address safely, unpin a StatefulSet pod.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/pkg/ipam"
)

// ipamOptions are the flags shared by every ipam subcommand.
type ipamOptions struct {
	etcdOptions
	configFile string
	output     string
	timeout    time.Duration
}

// newIPAMCommand returns the "ipam" command with its subcommands.
func newIPAMCommand() *cobra.Command {
	o := &ipamOptions{}
	cmd := &cobra.Command{
		Use:   "ipam",
		Short: "Administer the cluster-global IPAM: pools, allocations, stuck addresses",
		Long: `Administer berth's cluster-global etcd IPAM.

etcd is found from --etcd-endpoints (or $BERTH_ETCD_ENDPOINTS, comma separated)
with --etcd-cert/--etcd-key/--etcd-ca, or from the "ipam" section of a CNI
config file given with --config (e.g. /etc/cni/net.d/10-berth.conflist).`,
		Example: `  cni-vlan ipam pools
  cni-vlan ipam create-pool vlan100 --vlan 100 --subnet 10.100.0.0/22 --reserved 10.100.0.2-10.100.0.9
  cni-vlan ipam list vlan100
  cni-vlan ipam release vlan100 10.100.0.17 --container-id 3f2a...   # only if it still belongs to that container`,
		SilenceUsage: true,
	}
	f := cmd.PersistentFlags()
	o.etcdOptions.AddFlags(f)
	f.StringVar(&o.configFile, "config", "", "CNI config file (.conf or .conflist) to take the etcd "+
		"settings from")
	f.StringVarP(&o.output, "output", "o", "table", "output format: table or json")
	f.DurationVar(&o.timeout, "timeout", 30*time.Second, "timeout of the whole command")
	cmd.AddCommand(newPoolsCommand(o), newCreatePoolCommand(o), newDeletePoolCommand(o),
		newListCommand(o), newReleaseCommand(o), newPinsCommand(o), newUnpinCommand(o))
	return cmd
}

// connect opens the allocator; the returned func closes it.
func (o *ipamOptions) connect(ctx context.Context) (*ipam.EtcdAllocator, func(), error) {
	if o.configFile != "" {
		etcdCfg, prefix, err := etcdFromCNIConfig(o.configFile)
		if err != nil {
			return nil, nil, err
		}
		o.Etcd = etcdCfg
		if prefix != "" {
			o.Prefix = prefix
		}
	}
	if err := o.Etcd.Validate(); err != nil {
		return nil, nil, fmt.Errorf("%w (set --etcd-endpoints or $BERTH_ETCD_ENDPOINTS, or use --config "+
			"with a CNI config file)", err)
	}
	cli, err := o.Etcd.NewClient()
	if err != nil {
		return nil, nil, err
	}
	a, err := ipam.NewEtcd(cli, o.Prefix)
	if err != nil {
		_ = cli.Close()
		return nil, nil, err
	}
	// Fail fast with a readable error when etcd is not there.
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := a.Status(sctx, ""); err != nil {
		_ = cli.Close() // the status error is what the admin needs
		return nil, nil, fmt.Errorf("cannot reach etcd at %v: %w", o.Etcd.Endpoints, err)
	}
	return a, func() { _ = cli.Close() }, nil
}

// etcdFromCNIConfig reads the etcd settings from a CNI .conf or .conflist.
func etcdFromCNIConfig(path string) (ipam.EtcdConfig, string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return ipam.EtcdConfig{}, "", fmt.Errorf("read CNI config: %w", err)
	}
	type withIPAM struct {
		IPAM *ipam.Config `json:"ipam"`
	}
	var list struct {
		withIPAM
		Plugins []withIPAM `json:"plugins"`
	}
	if err := json.Unmarshal(data, &list); err != nil {
		return ipam.EtcdConfig{}, "", fmt.Errorf("parse CNI config %s: %w", path, err)
	}
	for _, p := range append([]withIPAM{list.withIPAM}, list.Plugins...) {
		if p.IPAM != nil && len(p.IPAM.Etcd.Endpoints) > 0 {
			return p.IPAM.Etcd, p.IPAM.Prefix, nil
		}
	}
	return ipam.EtcdConfig{}, "", fmt.Errorf("CNI config %s has no \"ipam\" section with "+
		"\"etcd.endpoints\"", path)
}

// run wraps a subcommand body with the timeout and the connection.
func (o *ipamOptions) run(fn func(ctx context.Context, a *ipam.EtcdAllocator,
	out io.Writer) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, _ []string) error {
		if o.output != "table" && o.output != "json" {
			return fmt.Errorf("--output %q: use table or json", o.output)
		}
		ctx, cancel := context.WithTimeout(cmd.Context(), o.timeout)
		defer cancel()
		a, closeFn, err := o.connect(ctx)
		if err != nil {
			return err
		}
		defer closeFn()
		return fn(ctx, a, cmd.OutOrStdout())
	}
}

// print writes v as JSON, or calls table with a tabwriter.
func (o *ipamOptions) print(out io.Writer, v any, table func(w io.Writer)) error {
	if o.output == "json" {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	table(tw)
	return tw.Flush()
}

func age(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return time.Since(t).Round(time.Second).String()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// notFoundHint turns a missing pool into an actionable message.
func notFoundHint(err error) error {
	if errors.Is(err, ipam.ErrPoolNotFound) {
		return fmt.Errorf("%w: list pools with `cni-vlan ipam pools`", err)
	}
	return err
}
