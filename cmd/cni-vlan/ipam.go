//go:build !cniplugin

package main

import (
	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/pkg/cni"
	"github.com/berth-dev/berth/pkg/ipam/agent"
	"github.com/berth-dev/berth/pkg/ipam/cli"
	"github.com/berth-dev/berth/pkg/ipam/reconcile"
)

// addIPAMCommands wires the installer, the node's IPAM agent (`cni-vlan
// agent`), the IPAM admin CLI (`cni-vlan ipam ...`) and the leak reconciler
// daemon (`cni-vlan reconcile`). They link the etcd client and client-go,
// whose package initialisation costs milliseconds at every start, so the
// binary the runtime runs per pod is built without them (-tags cniplugin,
// see cni.PluginBinaryName): it only talks to the agent.
func addIPAMCommands(root *cobra.Command) {
	root.AddCommand(newInstallCommand(), agent.NewCommand(cni.AttachmentPresent), cli.NewCommand(), reconcile.NewCommand())
}
