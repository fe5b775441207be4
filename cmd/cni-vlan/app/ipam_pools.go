package app

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"strings"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/pkg/ipam"
)

type poolRow struct {
	ipam.Pool
	Stats ipam.PoolStats `json:"stats"`
}

func newPoolsCommand(o *ipamOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "pools",
		Short: "List pools with their size, used, held and free addresses",
		Args:  cobra.NoArgs,
		RunE: o.run(func(ctx context.Context, a *ipam.EtcdAllocator, out io.Writer) error {
			pools, err := a.ListPools(ctx)
			if err != nil {
				return err
			}
			rows := make([]poolRow, 0, len(pools))
			for _, p := range pools {
				st, err := a.Stats(ctx, p.Name)
				if err != nil {
					return err
				}
				rows = append(rows, poolRow{Pool: p, Stats: st})
			}
			return o.print(out, rows, func(w io.Writer) {
				fmt.Fprintln(w, "POOL\tVLAN\tSUBNET\tGATEWAY\tSIZE\tUSED\tHELD\tFREE")
				for _, r := range rows {
					fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%d\t%d\t%d\t%d\n", r.Name, r.VLAN, r.Subnet, r.Gateway,
						r.Stats.Size, r.Stats.Used, r.Stats.Held, r.Stats.Free)
				}
			})
		}),
	}
}

func newCreatePoolCommand(o *ipamOptions) *cobra.Command {
	var (
		p        ipam.Pool
		subnet   string
		gateway  string
		reserved []string
		routes   []string
	)
	cmd := &cobra.Command{
		Use: "create-pool NAME --subnet CIDR [--vlan ID] [--gateway IP] [--reserved START-END]... " +
			"[--route DST[,GW]]...",
		Short: "Create a pool (pools are immutable once created)",
		Example: "  cni-vlan ipam create-pool vlan100 --vlan 100 --subnet 10.100.0.0/22 --gateway " +
			"10.100.0.1 --reserved 10.100.0.2-10.100.0.9",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p.Name = args[0]
			if err := parsePoolFlags(&p, subnet, gateway, reserved, routes); err != nil {
				return err
			}
			if err := p.Validate(); err != nil {
				return err
			}
			return o.run(func(ctx context.Context, a *ipam.EtcdAllocator, out io.Writer) error {
				if err := a.CreatePool(ctx, p); err != nil {
					return err
				}
				st, err := a.Stats(ctx, p.Name)
				if err != nil {
					return err
				}
				fmt.Fprintf(out, "pool %s created: VLAN %d, %s via %s, %d allocatable addresses\n", p.Name,
					p.VLAN, p.Subnet, p.Gateway, st.Size)
				return nil
			})(cmd, args)
		},
	}
	f := cmd.Flags()
	f.StringVar(&subnet, "subnet", "", "the pool's CIDR, e.g. 10.100.0.0/22 (required)")
	f.IntVar(&p.VLAN, "vlan", 0, "802.1Q VLAN id 1-4094 (0: untagged)")
	f.StringVar(&gateway, "gateway", "", "the pods' gateway (default: the subnet's first address)")
	f.StringArrayVar(&reserved, "reserved", nil, "START-END (or one IP) never to allocate; repeatable")
	f.StringArrayVar(&routes, "route", nil, "DST[,GW] route given to pods (default: 0.0.0.0/0 via "+
		"the gateway); repeatable")
	return cmd
}

func parsePoolFlags(p *ipam.Pool, subnet, gateway string, reserved, routes []string) error {
	var err error
	if subnet == "" {
		return fmt.Errorf("--subnet is required, e.g. --subnet 10.100.0.0/22")
	}
	if p.Subnet, err = netip.ParsePrefix(subnet); err != nil {
		return fmt.Errorf("--subnet %q: %w", subnet, err)
	}
	if gateway != "" {
		if p.Gateway, err = netip.ParseAddr(gateway); err != nil {
			return fmt.Errorf("--gateway %q: %w", gateway, err)
		}
	}
	for _, r := range reserved {
		s, e, found := strings.Cut(r, "-")
		if !found {
			e = s
		}
		start, err1 := netip.ParseAddr(s)
		end, err2 := netip.ParseAddr(e)
		if err1 != nil || err2 != nil {
			return fmt.Errorf("--reserved %q: want START-END or one IP, e.g. 10.100.0.2-10.100.0.9", r)
		}
		p.Reserved = append(p.Reserved, ipam.IPRange{Start: start, End: end})
	}
	for _, r := range routes {
		d, g, _ := strings.Cut(r, ",")
		dst, err := netip.ParsePrefix(d)
		if err != nil {
			return fmt.Errorf("--route %q: want DST[,GW], e.g. 192.168.0.0/16,10.100.0.254: %w", r, err)
		}
		rt := ipam.Route{Dst: dst}
		if g != "" {
			if rt.GW, err = netip.ParseAddr(g); err != nil {
				return fmt.Errorf("--route %q gateway: %w", r, err)
			}
		}
		p.Routes = append(p.Routes, rt)
	}
	return nil
}

func newDeletePoolCommand(o *ipamOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "delete-pool NAME",
		Short: "Delete a pool that has no allocations and no pins",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.run(func(ctx context.Context, a *ipam.EtcdAllocator, out io.Writer) error {
				if err := a.DeletePool(ctx, args[0]); err != nil {
					return notFoundHint(err)
				}
				fmt.Fprintf(out, "pool %s deleted\n", args[0])
				return nil
			})(cmd, args)
		},
	}
}

func newListCommand(o *ipamOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "list [POOL]",
		Short: "List allocations (of one pool, or all): address, container, pod, node, age",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			pool := ""
			if len(args) == 1 {
				pool = args[0]
			}
			return o.run(func(ctx context.Context, a *ipam.EtcdAllocator, out io.Writer) error {
				all, err := a.ListAllocations(ctx, pool)
				if err != nil {
					return notFoundHint(err)
				}
				return o.print(out, all, func(w io.Writer) {
					fmt.Fprintln(w, "POOL\tIP\tCONTAINER\tIFNAME\tPOD\tPOD UID\tNODE\tAGE\tFIXED")
					for _, al := range all {
						h := al.Handle
						pod := "-"
						if h.PodName != "" {
							pod = h.PodNamespace + "/" + h.PodName
						}
						cid := dash(h.ContainerID)
						if al.Held() {
							cid = "(held)"
						}
						fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%v\n", al.Pool, al.IP.Addr(), cid,
							dash(h.IfName), pod, dash(h.PodUID), dash(h.Node), age(al.AllocatedAt), al.Fixed)
					}
				})
			})(cmd, args)
		},
	}
}
