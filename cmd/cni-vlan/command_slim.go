//go:build cniplugin

package main

import (
	"fmt"
	"os"

	"github.com/berth-dev/berth/internal/version"
	"github.com/berth-dev/berth/pkg/cni"
)

// runCommand: the slim plugin build (-tags cniplugin) is only the plugin; the full binary next
// to it installs it and runs the agent. It links neither cobra's app nor component-base, whose
// package initialisation every pod's ADD would pay.
func runCommand() int {
	if len(os.Args) == 2 && os.Args[1] == "--version" {
		fmt.Println(version.String(cni.Name))
		return 0
	}
	fmt.Fprintf(os.Stderr, "%s: this build is only the CNI plugin (CNI_COMMAND unset); "+
		"run the full cni-vlan binary for install, agent, ipam and reconcile\n", cni.Name)
	return 1
}
