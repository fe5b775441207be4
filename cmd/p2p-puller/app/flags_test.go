package app

import (
	"testing"

	"github.com/berth-dev/berth/internal/testenv"
)

// TestManifestFlags: the args manifests/ passes p2p-puller and its subcommands parse, and the
// daemon's validate.
func TestManifestFlags(t *testing.T) {
	t.Setenv("POD_IP", "10.0.0.7") // the DaemonSet sets it from status.podIP
	for _, m := range testenv.ManifestCommands(t, "p2p-puller", nil) {
		o := &options{}
		root := newCommand(o)
		cmd, args, err := root.Find(m.Args)
		if err != nil {
			t.Fatalf("%s: %v", m.File, err)
		}
		if err := cmd.ParseFlags(args); err != nil {
			t.Fatalf("%s: %v", m.File, err)
		}
		if cmd != root {
			continue
		}
		if err := o.Validate(); err != nil {
			t.Fatalf("%s: %v", m.File, err)
		}
	}
}
