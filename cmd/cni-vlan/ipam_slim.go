//go:build cniplugin

package main

import "github.com/spf13/cobra"

// addIPAMCommands: the slim plugin build (-tags cniplugin) has only the plugin and install.
func addIPAMCommands(*cobra.Command) {}
