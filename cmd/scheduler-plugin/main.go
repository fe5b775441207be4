// Command scheduler-plugin is the kube-scheduler with the berth resource-balance Score plugin.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/internal/version"
)

func main() {
	cmd := &cobra.Command{
		Use:           "scheduler-plugin",
		Short:         "kube-scheduler with the berth resource-balance Score plugin",
		Version:       version.Version,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return fmt.Errorf("not implemented yet")
		},
	}
	cmd.SetVersionTemplate(version.String("scheduler-plugin") + "\n")
	if err := cmd.Execute(); err != nil {
		fmt.Fprintf(os.Stderr, "scheduler-plugin: %v\n", err)
		os.Exit(1)
	}
}
