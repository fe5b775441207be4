//go:build cniplugin

package plugin

import (
	"context"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
)

// The slim build talks only to the node agent: a config without "agentSocket"
// is refused with what to do, rather than linking the etcd client here.
func directUnsupported(context.Context, *skel.CmdArgs) error {
	return types.NewError(types.ErrInvalidNetworkConfig, "this berth-ipam build needs the node agent",
		`set "ipam": {"agentSocket": "/run/berth/ipam.sock", ...} (the cni-vlan DaemonSet runs the agent), `+
			"or install the full berth-ipam, which dials etcd itself")
}

var cmdAdd, cmdDel, cmdCheck, cmdStatus, cmdGC = directUnsupported, directUnsupported,
	directUnsupported, directUnsupported, directUnsupported
