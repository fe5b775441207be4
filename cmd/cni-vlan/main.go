// Command cni-vlan is the berth Bridge+VLAN CNI plugin with a cluster-global etcd IPAM.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/internal/version"
)

func main() {
	cmd := &cobra.Command{
		Use:           "cni-vlan",
		Short:         "berth Bridge+VLAN CNI plugin with a cluster-global etcd IPAM",
		Version:       version.Version,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return fmt.Errorf("not implemented yet")
		},
	}
	cmd.SetVersionTemplate(version.String("cni-vlan") + "\n")
	if err := cmd.Execute(); err != nil {
		fmt.Fprintf(os.Stderr, "cni-vlan: %v\n", err)
		os.Exit(1)
	}
}
