package app

import (
	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/internal/daemon"
	"github.com/berth-dev/berth/pkg/cni"
)

// NewCommand returns the cni-vlan command with its subcommands.
func NewCommand() *cobra.Command {
	cmd := daemon.NewRootCommand(cni.Name, "berth Bridge+VLAN CNI plugin with a cluster-global etcd IPAM")
	cmd.Long = "cni-vlan is a CNI plugin (the container runtime runs it with CNI_COMMAND set)\n" +
		"and the tools around it: install it on a node, administer the IPAM, " +
		"reconcile leaked addresses."
	// The agent, the reconciler and the admin tool link the etcd client and client-go, whose
	// package initialisation costs milliseconds at every start; the binary the runtime runs
	// per pod is built without this package (-tags cniplugin, see cni.PluginBinaryName) and
	// only talks to the agent.
	cmd.AddCommand(newInstallCommand(), newAgentCommand(), newIPAMCommand(),
		newReconcileCommand())
	return cmd
}
