// Package app wires the csi-sharedfs command: its flags (Options), the driver command and
// the hidden `iolayer` subcommand the node plugin starts for each IO-limited volume target.
// The logic lives in pkg/csi and pkg/csi/iolayer.
package app

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"k8s.io/klog/v2"

	"github.com/berth-dev/berth/internal/daemon"
	"github.com/berth-dev/berth/pkg/csi"
	"github.com/berth-dev/berth/pkg/csi/iolayer"
)

// NewCommand returns the csi-sharedfs command.
func NewCommand() *cobra.Command {
	o := NewOptions()
	cmd := daemon.NewRootCommand("csi-sharedfs",
		"berth CSI driver for GlusterFS SharedStorage with capacity and IO quotas")
	cmd.Args = cobra.NoArgs
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := o.Validate(); err != nil {
			return err
		}
		ctx, cancel := daemon.SignalContext()
		defer cancel()
		ctx = klog.NewContext(ctx, klog.Background().WithValues("driver", csi.Name))
		return csi.Run(ctx, o.Config)
	}
	o.AddFlags(cmd.Flags())
	cmd.AddCommand(newIOLayerCommand())
	return cmd
}

// ioLayerOptions are the flags of `csi-sharedfs iolayer`; iolayer.Options.Args writes them.
type ioLayerOptions struct {
	iolayer.Options
	limits string // JSON of iolayer.Limits
}

func (o *ioLayerOptions) addFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.VolumeID, "volume-id", "", "CSI volume ID (for logs and counters)")
	fs.StringVar(&o.Source, "source", "", "directory to serve (the volume's staging path)")
	fs.StringVar(&o.Target, "target", "", "mount point (the pod's target path)")
	fs.StringVar(&o.Socket, "socket", "", "unix socket of the control API")
	fs.BoolVar(&o.ReadOnly, "read-only", false, "serve read-only")
	fs.StringVar(&o.limits, "limits", "{}",
		"IO limits as JSON (readBytesPerSecond, writeBytesPerSecond, readIOPS, writeIOPS)")
}

// complete decodes --limits.
func (o *ioLayerOptions) complete() error {
	if err := json.Unmarshal([]byte(o.limits), &o.Limits); err != nil {
		return fmt.Errorf("invalid --limits %q (e.g. {\"writeBytesPerSecond\":20971520}): %w",
			o.limits, err)
	}
	return nil
}

// newIOLayerCommand serves one volume target through the IO-limited FUSE layer until SIGTERM
// or until the target is unmounted.
func newIOLayerCommand() *cobra.Command {
	o := &ioLayerOptions{}
	cmd := &cobra.Command{
		Use:    "iolayer",
		Short:  "serve one volume target through the IO-limited FUSE layer (started by the node plugin)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if err := o.complete(); err != nil {
				return err
			}
			ctx, cancel := daemon.SignalContext()
			defer cancel()
			logger := klog.Background().WithValues("volume", o.VolumeID, "target", o.Target)
			return iolayer.Run(klog.NewContext(ctx, logger), o.Options)
		},
	}
	o.addFlags(cmd.Flags())
	return cmd
}
