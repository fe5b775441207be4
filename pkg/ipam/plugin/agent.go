package plugin

import (
	"context"
	"encoding/json"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/berth-dev/berth/pkg/ipam/agentapi"
)

// viaAgent sends ADD or DEL to the node's IPAM agent (cni-vlan agent) when
// the config names "agentSocket": the node's etcd session, its buffer for
// etcd outages and its journal then serve this plugin as they serve cni-vlan.
// CHECK, STATUS and GC still go to etcd directly.
func viaAgent(parent context.Context, args *skel.CmdArgs, c *conf, verb string) error {
	var w struct {
		IPAM json.RawMessage `json:"ipam"`
	}
	if err := json.Unmarshal(args.StdinData, &w); err != nil {
		return types.NewError(types.ErrDecodingFailure, "failed to parse the network config", err.Error())
	}
	ctx, cancel := context.WithTimeout(parent, c.ipam.Timeout())
	defer cancel()
	req := &agentapi.Request{Verb: verb, ContainerID: args.ContainerID, IfName: args.IfName,
		Args:    args.Args,
		Network: c.net.Name, IPAM: w.IPAM}
	resp, err := agentapi.Call(ctx, c.ipam.AgentSocket, req)
	if err := agentapi.CNIError(resp, err); err != nil {
		return err
	}
	if verb != agentapi.VerbAdd {
		return nil
	}
	if resp.Allocation == nil {
		return types.NewError(types.ErrInternal, "the node agent answered without an address",
			c.ipam.AgentSocket)
	}
	res := resp.Allocation.Result()
	res.CNIVersion = c.net.CNIVersion
	return types.PrintResult(res, c.net.CNIVersion)
}
