//go:build cniplugin

package main

import "github.com/spf13/cobra"

// addIPAMCommands: the slim plugin build (-tags cniplugin) is only the
// plugin; the full binary next to it installs it and runs the agent.
func addIPAMCommands(*cobra.Command) {}
