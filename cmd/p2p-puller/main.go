// Command p2p-puller is the berth node-local registry mirror that fetches image layers from peers.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/internal/version"
)

func main() {
	cmd := &cobra.Command{
		Use:           "p2p-puller",
		Short:         "berth node-local registry mirror that fetches image layers from peers",
		Version:       version.Version,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return fmt.Errorf("not implemented yet")
		},
	}
	cmd.SetVersionTemplate(version.String("p2p-puller") + "\n")
	if err := cmd.Execute(); err != nil {
		fmt.Fprintf(os.Stderr, "p2p-puller: %v\n", err)
		os.Exit(1)
	}
}
