// Command cni-vlan is the berth Bridge+VLAN CNI plugin with a cluster-global etcd IPAM.
//
// Run by a container runtime (CNI_COMMAND set) it is the CNI plugin; run by
// a person or the DaemonSet it has subcommands: install, agent, ipam, reconcile.
package main

import (
	"context"
	"os"

	"github.com/containernetworking/cni/pkg/skel"
	cniversion "github.com/containernetworking/cni/pkg/version"

	"github.com/berth-dev/berth/internal/version"
	"github.com/berth-dev/berth/pkg/cni"
)

func main() {
	if os.Getenv("CNI_COMMAND") != "" {
		skel.PluginMainFuncs(cni.Funcs(context.Background()), cniversion.All,
			version.String(cni.Name)+": Bridge+VLAN with a cluster-global etcd IPAM")
		return
	}
	os.Exit(runCommand())
}
