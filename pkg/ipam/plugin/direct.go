//go:build !cniplugin

package plugin

import (
	"context"
	"encoding/json"
	"fmt"
	"net"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/berth-dev/berth/pkg/ipam"
)

// The verbs without a node agent: each call dials etcd (the config's "etcd")
// and allocates itself. The slim build has direct_slim.go instead.

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

// connect dials etcd; the caller must call done.
func (c *conf) connect(parent context.Context) (*ipam.EtcdAllocator, context.Context, func(), error) {
	ctx, cancel := context.WithTimeout(parent, c.ipam.Timeout())
	alloc, closeFn, err := c.ipam.Open(ctx)
	if err != nil {
		cancel()
		return nil, nil, nil, ipam.CNIError(err)
	}
	return alloc, ctx, func() { _ = closeFn(); cancel() }, nil // close errors change nothing for the runtime
}

func (c *conf) handle(args *skel.CmdArgs) (ipam.Handle, error) {
	h, err := ipam.HandleFromCNI(args.ContainerID, args.IfName, args.Args, c.net.Name, c.ipam.Node())
	if err != nil {
		return h, types.NewError(types.ErrInvalidEnvironmentVariables, "bad CNI arguments", err.Error())
	}
	return c.ipam.WithFixed(h), nil
}

// openAttachment loads the config, checks the call's attachment (before
// anything is dialled) and connects; the caller must call done.
func openAttachment(parent context.Context, args *skel.CmdArgs) (c *conf, h ipam.Handle,
	alloc *ipam.EtcdAllocator, ctx context.Context, done func(), err error) {
	if c, err = loadConf(args.StdinData); err != nil {
		return nil, h, nil, nil, nil, err
	}
	if h, err = c.handle(args); err != nil {
		return nil, h, nil, nil, nil, err
	}
	alloc, ctx, done, err = c.connect(parent)
	return c, h, alloc, ctx, done, err
}

func cmdAdd(parent context.Context, args *skel.CmdArgs) error {
	c, h, alloc, ctx, done, err := openAttachment(parent, args)
	if err != nil {
		return err
	}
	defer done()
	if err := c.ipam.EnsurePool(ctx, alloc); err != nil {
		return ipam.CNIError(err)
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
	_, h, alloc, ctx, done, err := openAttachment(parent, args)
	if err != nil {
		return err
	}
	defer done()
	return ipam.CNIError(alloc.Release(ctx, h))
}

// cmdCheck verifies the reservation exists and matches prevResult.
func cmdCheck(parent context.Context, args *skel.CmdArgs) error {
	c, h, alloc, ctx, done, err := openAttachment(parent, args)
	if err != nil {
		return err
	}
	defer done()
	a, found, err := alloc.Lookup(ctx, h)
	if err != nil {
		return ipam.CNIError(err)
	}
	if !found {
		return fmt.Errorf("berth-ipam: no address is reserved for %s in pool %q", h.Key(), c.ipam.Pool)
	}
	return checkPrevResult(&c.net, args, net.IP(a.IP.Addr().AsSlice()), a.IP.String())
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
	c, err := loadConf(args.StdinData)
	if err != nil {
		return err
	}
	alloc, ctx, done, err := c.connect(parent)
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
