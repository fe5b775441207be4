// Package plugin is berth's etcd IPAM as a stand-alone CNI IPAM plugin
// (cmd/berth-ipam, "ipam": {"type": "berth-ipam", ...}), so main plugins
// other than cni-vlan (bridge, macvlan, ipvlan) can use the global pools.
// It implements the CNI 1.1 verbs ADD, DEL, CHECK, STATUS, GC and VERSION
// on containernetworking/cni's skel; the config is ipam.Config.
package plugin

import (
	"context"
	"encoding/json"
	"fmt"
	"net"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/berth-dev/berth/pkg/ipam"
	"github.com/berth-dev/berth/pkg/ipam/agentapi"
)

// Funcs returns the plugin's verbs for skel.PluginMainFuncs; they run under ctx.
func Funcs(ctx context.Context) skel.CNIFuncs {
	verb := func(v func(context.Context, *skel.CmdArgs) error) func(*skel.CmdArgs) error {
		return func(args *skel.CmdArgs) error { return v(ctx, args) }
	}
	return skel.CNIFuncs{Add: verb(cmdAdd), Del: verb(cmdDel), Check: verb(cmdCheck),
		Status: verb(cmdStatus), GC: verb(cmdGC)}
}

// Versions are the CNI spec versions the plugin speaks.
var Versions = version.All

type conf struct {
	net  types.PluginConf
	ipam *ipam.Config
}

func loadConf(stdin []byte) (*conf, error) {
	c := &conf{}
	if err := json.Unmarshal(stdin, &c.net); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "failed to parse the network config",
			err.Error())
	}
	ic, err := ipam.LoadConfig(stdin)
	if err == nil {
		err = ic.CheckNode()
	}
	if err != nil {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "invalid berth-ipam config", err.Error())
	}
	c.ipam = ic
	return c, nil
}

// open loads the config and connects; the caller must call done.
func open(parent context.Context, args *skel.CmdArgs) (*conf, *ipam.EtcdAllocator, context.Context,
	func(), error) {
	c, err := loadConf(args.StdinData)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	ctx, cancel := context.WithTimeout(parent, c.ipam.Timeout())
	alloc, closeFn, err := c.ipam.Open(ctx)
	if err != nil {
		cancel()
		return nil, nil, nil, nil, ipam.CNIError(err)
	}
	return c, alloc, ctx, func() { _ = closeFn(); cancel() },
		nil // close errors change nothing for the runtime
}

func (c *conf) handle(args *skel.CmdArgs) (ipam.Handle, error) {
	h, err := ipam.HandleFromCNI(args.ContainerID, args.IfName, args.Args, c.net.Name, c.ipam.Node())
	if err != nil {
		return h, types.NewError(types.ErrInvalidEnvironmentVariables, "bad CNI arguments", err.Error())
	}
	return c.ipam.WithFixed(h), nil
}

func cmdAdd(parent context.Context, args *skel.CmdArgs) error {
	if c, err := loadConf(args.StdinData); err == nil && c.ipam.AgentSocket != "" {
		return viaAgent(parent, args, c, agentapi.VerbAdd)
	}
	c, alloc, ctx, done, err := open(parent, args)
	if err != nil {
		return err
	}
	defer done()
	if err := c.ipam.EnsurePool(ctx, alloc); err != nil {
		return ipam.CNIError(err)
	}
	h, err := c.handle(args)
	if err != nil {
		return err
	}
	a, err := alloc.Allocate(ctx, c.ipam.Pool, h)
	if err != nil {
		return ipam.CNIError(err)
	}
	res := a.Result()
	res.CNIVersion = c.net.CNIVersion
	return types.PrintResult(res, c.net.CNIVersion)
}

// cmdDel releases the handle's address; nothing allocated is success.
func cmdDel(parent context.Context, args *skel.CmdArgs) error {
	if c, err := loadConf(args.StdinData); err == nil && c.ipam.AgentSocket != "" {
		return viaAgent(parent, args, c, agentapi.VerbDel)
	}
	c, alloc, ctx, done, err := open(parent, args)
	if err != nil {
		return err
	}
	defer done()
	h, err := c.handle(args)
	if err != nil {
		return err
	}
	return ipam.CNIError(alloc.Release(ctx, h))
}

// cmdCheck verifies the reservation exists and matches prevResult.
func cmdCheck(parent context.Context, args *skel.CmdArgs) error {
	c, alloc, ctx, done, err := open(parent, args)
	if err != nil {
		return err
	}
	defer done()
	h, err := c.handle(args)
	if err != nil {
		return err
	}
	a, found, err := alloc.Lookup(ctx, h)
	if err != nil {
		return ipam.CNIError(err)
	}
	if !found {
		return fmt.Errorf("berth-ipam: no address is reserved for %s in pool %q", h.Key(), c.ipam.Pool)
	}
	if err := version.ParsePrevResult(&c.net); err != nil {
		return types.NewError(types.ErrDecodingFailure, "failed to parse prevResult", err.Error())
	}
	if c.net.PrevResult == nil {
		return nil
	}
	prev, err := types100.NewResultFromResult(c.net.PrevResult)
	if err != nil {
		return fmt.Errorf("berth-ipam: convert prevResult: %w", err)
	}
	for _, ip := range prev.IPs {
		if ip.Address.IP.Equal(net.IP(a.IP.Addr().AsSlice())) {
			return nil
		}
	}
	return fmt.Errorf("berth-ipam: %s holds %s, which is not in prevResult", h.Key(), a.IP)
}

// cmdStatus reports code 50 when etcd is unreachable or the pool exhausted.
func cmdStatus(parent context.Context, args *skel.CmdArgs) error {
	c, err := loadConf(args.StdinData)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(parent, c.ipam.Timeout())
	defer cancel()
	alloc, closeFn, err := c.ipam.Open(ctx)
	if err != nil {
		return ipam.CNIStatusError(err)
	}
	defer func() { _ = closeFn() }() // nothing to do about a close error
	err = alloc.Status(ctx, c.ipam.Pool)
	if c.ipam.InlinePoolMissing(err) {
		err = alloc.Status(ctx, "") // the first ADD creates it: only etcd must answer
	}
	return ipam.CNIStatusError(err)
}

// cmdGC releases this node's attachments of this network that are not in cni.dev/valid-attachments.
func cmdGC(parent context.Context, args *skel.CmdArgs) error {
	c, alloc, ctx, done, err := open(parent, args)
	if err != nil {
		return err
	}
	defer done()
	_, err = alloc.GC(ctx, ipam.GCRequest{
		Network: c.net.Name, Node: c.ipam.Node(), Pool: c.ipam.Pool,
		Valid: ipam.HandlesFromAttachments(c.net.ValidAttachments),
	})
	if c.ipam.InlinePoolMissing(err) {
		return nil // never created, so nothing allocated from it
	}
	return ipam.CNIError(err)
}
