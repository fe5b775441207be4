// Command webhook is the berth mutating admission webhook: lifecycle hooks, shared volumes and debug-aware probes.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/internal/version"
)

func main() {
	cmd := &cobra.Command{
		Use:           "webhook",
		Short:         "berth mutating admission webhook: lifecycle hooks, shared volumes and debug-aware probes",
		Version:       version.Version,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return fmt.Errorf("not implemented yet")
		},
	}
	cmd.SetVersionTemplate(version.String("webhook") + "\n")
	if err := cmd.Execute(); err != nil {
		fmt.Fprintf(os.Stderr, "webhook: %v\n", err)
		os.Exit(1)
	}
}
