package app

import (
	"testing"

	"github.com/berth-dev/berth/internal/testenv"
)

// TestManifestFlags: the args manifests/ passes the webhook parse and validate.
func TestManifestFlags(t *testing.T) {
	for _, m := range testenv.ManifestCommands(t, "webhook", nil) {
		o := NewOptions()
		cmd := newCommand(o)
		if err := cmd.ParseFlags(m.Args); err != nil {
			t.Fatalf("%s: %v", m.File, err)
		}
		if err := o.Validate(); err != nil {
			t.Fatalf("%s: %v", m.File, err)
		}
	}
}
