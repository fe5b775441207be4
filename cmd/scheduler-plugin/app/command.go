package app

import (
	"fmt"

	"github.com/spf13/cobra"
	"k8s.io/kubernetes/cmd/kube-scheduler/app"

	"github.com/berth-dev/berth/internal/version"
	// Registers BerthBalanceArgs into the scheduler's config scheme.
	_ "github.com/berth-dev/berth/pkg/scheduler/apis/config/scheme"
	"github.com/berth-dev/berth/pkg/scheduler/balance"
)

// BinaryName is the name of the binary in the berth image.
const BinaryName = "scheduler-plugin"

// Registry lists the out-of-tree plugins this scheduler adds, for NewCommand and for tests that
// build the scheduler in-process. Each call builds fresh factories: the profiles of the scheduler
// built from it share BerthBalance's bandwidth cache, and nothing is shared with another call's.
func Registry() []app.Option {
	return []app.Option{app.WithPlugin(balance.Name, balance.NewFactory())}
}

// NewCommand returns the kube-scheduler command with the berth plugins. Every kube-scheduler
// flag works (--config, --leader-elect-*, --secure-port, -v ...); --version prints berth's
// version, where the upstream flag would print the Kubernetes version.
func NewCommand() *cobra.Command {
	cmd := app.NewSchedulerCommand(Registry()...)
	cmd.Use = BinaryName
	cmd.Short = "kube-scheduler with the berth BerthBalance plugin (CPU/memory/network balance)"
	upstream := cmd.RunE
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if f := cmd.Flags().Lookup("version"); f != nil && f.Value.String() == "true" {
			_, err := fmt.Fprintln(cmd.OutOrStdout(), version.String(BinaryName))
			return err
		}
		return upstream(cmd, args)
	}
	return cmd
}
