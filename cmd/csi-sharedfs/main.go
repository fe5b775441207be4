// Command csi-sharedfs is the berth CSI driver for GlusterFS SharedStorage with capacity and IO quotas.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/internal/version"
)

func main() {
	cmd := &cobra.Command{
		Use:           "csi-sharedfs",
		Short:         "berth CSI driver for GlusterFS SharedStorage with capacity and IO quotas",
		Version:       version.Version,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return fmt.Errorf("not implemented yet")
		},
	}
	cmd.SetVersionTemplate(version.String("csi-sharedfs") + "\n")
	if err := cmd.Execute(); err != nil {
		fmt.Fprintf(os.Stderr, "csi-sharedfs: %v\n", err)
		os.Exit(1)
	}
}
