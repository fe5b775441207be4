// Command berth-ipam is berth's cluster-global etcd IPAM as a CNI IPAM
// plugin ("ipam": {"type": "berth-ipam", ...}) for any main plugin.
// See docs/ipam.md.
package main

import (
	"context"

	"github.com/containernetworking/cni/pkg/skel"

	"github.com/berth-dev/berth/internal/version"
	"github.com/berth-dev/berth/pkg/ipam/plugin"
)

func main() {
	// A plugin run is one short process: its verbs run under the process's context.
	skel.PluginMainFuncs(plugin.Funcs(context.Background()), plugin.Versions,
		version.String("berth-ipam"))
}
