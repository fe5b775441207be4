//go:build !cniplugin

package main

import (
	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/pkg/ipam/cli"
	"github.com/berth-dev/berth/pkg/ipam/reconcile"
)

// addIPAMCommands wires the IPAM admin CLI (`cni-vlan ipam ...`) and the
// leak reconciler daemon (`cni-vlan reconcile`), both from pkg/ipam. They
// link client-go, whose package initialisation costs tens of milliseconds
// at every start, so the binary the runtime runs per pod is built without
// them (-tags cniplugin, see cni.PluginBinaryName).
func addIPAMCommands(root *cobra.Command) {
	root.AddCommand(cli.NewCommand(), reconcile.NewCommand())
}
