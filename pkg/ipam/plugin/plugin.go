// Package plugin is berth's etcd IPAM as a stand-alone CNI IPAM plugin
// (cmd/berth-ipam, "ipam": {"type": "berth-ipam", ...}), so main plugins
// other than cni-vlan (bridge, macvlan, ipvlan) can use the global pools.
// It implements the CNI 1.1 verbs ADD, DEL, CHECK, STATUS, GC and VERSION
// on containernetworking/cni's skel; the config is ipam.Config.
//
// A config that names "agentSocket" sends every verb to the node's IPAM agent
// (cni-vlan agent, pkg/ipam/agent), which holds the node's etcd session, its
// buffer for etcd outages and its journal (agent.go). Without it each call
// dials etcd itself (direct.go). The slim build (go build -tags cniplugin,
// shipped as berth-ipam-plugin) has only the agent path: it links no etcd,
// gRPC or protobuf code, so the process the runtime starts for every pod
// starts as fast as the reference plugins.
package plugin

import (
	"context"
	"encoding/json"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/berth-dev/berth/pkg/ipam/agentapi"
)

// Funcs returns the plugin's verbs for skel.PluginMainFuncs; they run under ctx.
func Funcs(ctx context.Context) skel.CNIFuncs {
	verb := func(name string, direct func(context.Context, *skel.CmdArgs) error) func(*skel.CmdArgs) error {
		return func(args *skel.CmdArgs) error {
			c, err := loadAgentConf(args.StdinData)
			if err != nil {
				return err
			}
			if c.IPAM.AgentSocket != "" {
				return viaAgent(ctx, args, c, name)
			}
			return direct(ctx, args)
		}
	}
	return skel.CNIFuncs{
		Add:    verb(agentapi.VerbAdd, cmdAdd),
		Del:    verb(agentapi.VerbDel, cmdDel),
		Check:  verb(agentapi.VerbCheck, cmdCheck),
		Status: verb(agentapi.VerbStatus, cmdStatus),
		GC:     verb(agentapi.VerbGC, cmdGC),
	}
}

// Versions are the CNI spec versions the plugin speaks.
var Versions = version.All

// agentConf is what the plugin itself reads of the network config on the
// agent path; the agent validates the whole "ipam" object (RawIPAM).
type agentConf struct {
	types.PluginConf
	RawIPAM json.RawMessage `json:"ipam"`
	IPAM    agentapi.Client `json:"-"`
}

func loadAgentConf(stdin []byte) (*agentConf, error) {
	c := &agentConf{}
	if err := json.Unmarshal(stdin, c); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "failed to parse the network config",
			err.Error())
	}
	if len(c.RawIPAM) > 0 {
		if err := json.Unmarshal(c.RawIPAM, &c.IPAM); err != nil {
			return nil, types.NewError(types.ErrDecodingFailure, "failed to parse \"ipam\"", err.Error())
		}
	}
	if c.IPAM.AgentSocket == "" {
		return c, nil // the direct path validates the whole config itself (ipam.LoadConfig)
	}
	if err := c.IPAM.Validate(); err != nil {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "invalid berth-ipam config", err.Error())
	}
	return c, nil
}
