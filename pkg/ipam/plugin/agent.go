package plugin

import (
	"context"
	"fmt"
	"net"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/berth-dev/berth/pkg/ipam/agentapi"
)

// viaAgent sends one verb to the node's IPAM agent: its etcd session, its
// buffer for etcd outages and its journal then serve this plugin as they
// serve cni-vlan. The request says it comes from berth-ipam, so the agent
// does not take the missing cni-vlan veth of a macvlan or bridge pod for a
// gone attachment.
func viaAgent(ctx context.Context, args *skel.CmdArgs, c *agentConf, verb string) error {
	req := &agentapi.Request{Verb: verb, Network: c.Name, IPAM: c.RawIPAM, Plugin: agentapi.PluginBerthIPAM}
	if verb != agentapi.VerbStatus && verb != agentapi.VerbGC {
		req.ContainerID, req.IfName, req.Args = args.ContainerID, args.IfName, args.Args
	}
	for _, a := range c.ValidAttachments {
		req.Valid = append(req.Valid, agentapi.Attachment{ContainerID: a.ContainerID, IfName: a.IfName})
	}
	resp, err := c.IPAM.Do(ctx, req)
	if err != nil {
		return err
	}
	switch verb {
	case agentapi.VerbAdd:
		res := resp.Allocation.Result()
		res.CNIVersion = c.CNIVersion
		return types.PrintResult(res, c.CNIVersion)
	case agentapi.VerbCheck:
		return checkPrevResult(&c.PluginConf, args, resp.Allocation.IP.Addr().AsSlice(),
			resp.Allocation.IP.String())
	}
	return nil
}

// checkPrevResult: the reserved address must be the one the runtime's prevResult names.
func checkPrevResult(nc *types.PluginConf, args *skel.CmdArgs, reserved net.IP, shown string) error {
	if err := version.ParsePrevResult(nc); err != nil {
		return types.NewError(types.ErrDecodingFailure, "failed to parse prevResult", err.Error())
	}
	if nc.PrevResult == nil {
		return nil
	}
	prev, err := types100.NewResultFromResult(nc.PrevResult)
	if err != nil {
		return fmt.Errorf("berth-ipam: convert prevResult: %w", err)
	}
	for _, ip := range prev.IPs {
		if ip.Address.IP.Equal(reserved) {
			return nil
		}
	}
	return fmt.Errorf("berth-ipam: %s/%s holds %s, which is not in prevResult", args.ContainerID,
		args.IfName, shown)
}
