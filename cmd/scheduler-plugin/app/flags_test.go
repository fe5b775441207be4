package app

import (
	"bytes"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/internal/version"
)

// TestManifestFlags: the args manifests/ passes the scheduler parse.
func TestManifestFlags(t *testing.T) {
	for _, m := range testenv.ManifestCommands(t, BinaryName, nil) {
		if err := NewCommand().ParseFlags(m.Args); err != nil {
			t.Fatalf("%s: %v", m.File, err)
		}
	}
}

// TestVersion: --version prints berth's version, not the upstream scheduler's.
func TestVersion(t *testing.T) {
	cmd := NewCommand()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetArgs([]string{"--version"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	if got, want := strings.TrimSpace(out.String()), version.String(BinaryName); got != want {
		t.Fatalf("--version printed %q, want %q", got, want)
	}
}
