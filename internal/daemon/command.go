package daemon

import (
	goflag "flag"

	"github.com/spf13/cobra"
	"k8s.io/klog/v2"

	"github.com/berth-dev/berth/internal/version"
)

// NewRootCommand is the root command every berth binary starts from (run it with
// k8s.io/component-base/cli.Run): --version with berth's build, errors printed once by
// cli.Run, contextual logging switched back on for every subcommand, and klog's flags
// (--v, --logtostderr, ...) on the command and its subcommands. The caller adds Args, RunE,
// its own flags and subcommands.
func NewRootCommand(use, short string) *cobra.Command {
	cmd := &cobra.Command{
		Use:              use,
		Short:            short,
		Version:          version.Version,
		SilenceUsage:     true,
		SilenceErrors:    true,
		PersistentPreRun: ContextualLogging,
	}
	cmd.SetVersionTemplate(version.String(use) + "\n")
	fs := goflag.NewFlagSet("klog", goflag.ContinueOnError)
	klog.InitFlags(fs)
	cmd.PersistentFlags().AddGoFlagSet(fs)
	return cmd
}
