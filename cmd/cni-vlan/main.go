// Command cni-vlan is the berth Bridge+VLAN CNI plugin with a cluster-global etcd IPAM.
//
// Run by a container runtime (CNI_COMMAND set) it is the CNI plugin; run by
// a person or the DaemonSet it has subcommands: install, agent, ipam, reconcile.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/containernetworking/cni/pkg/skel"
	cniversion "github.com/containernetworking/cni/pkg/version"
	"github.com/spf13/cobra"
	"k8s.io/klog/v2"

	"github.com/berth-dev/berth/internal/version"
	"github.com/berth-dev/berth/pkg/cni"
)

func main() {
	if os.Getenv("CNI_COMMAND") != "" {
		skel.PluginMainFuncs(cni.Funcs(), cniversion.All, version.String(cni.Name)+": Bridge+VLAN with a cluster-global etcd IPAM")
		return
	}
	if err := newRootCommand().Execute(); err != nil {
		fmt.Fprintf(os.Stderr, "cni-vlan: %v\n", err)
		os.Exit(1)
	}
}

func newRootCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   cni.Name,
		Short: "berth Bridge+VLAN CNI plugin with a cluster-global etcd IPAM",
		Long: "cni-vlan is a CNI plugin (the container runtime runs it with CNI_COMMAND set)\n" +
			"and the tools around it: install it on a node, administer the IPAM, reconcile leaked addresses.",
		Version:       version.Version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	cmd.SetVersionTemplate(version.String(cni.Name) + "\n")
	klog.InitFlags(nil)
	cmd.PersistentFlags().AddGoFlagSet(flag.CommandLine)
	addIPAMCommands(cmd)
	return cmd
}
