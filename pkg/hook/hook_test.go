package hook

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	t.Parallel()
	o := PreStartOptions{Backoff: time.Second, MaxBackoff: 5 * time.Second}
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second, 5 * time.Second}
	for i, w := range want {
		if got := o.backoff(i + 1); got != w {
			t.Errorf("backoff after failure %d: got %s, want %s", i+1, got, w)
		}
	}
}

func TestScriptValidate(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		s    Script
		want string
	}{
		{"ok inline", Script{Shell: "/bin/sh", Inline: "true"}, ""},
		{"no shell", Script{Inline: "true"}, "no shell"},
		{"both", Script{Shell: "/bin/sh", Inline: "true", File: "/x"}, "exactly one"},
		{"neither", Script{Shell: "/bin/sh"}, "exactly one"},
	}
	for _, tc := range cases {
		err := tc.s.Validate()
		if (err == nil) != (tc.want == "") || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: got %v, want %q", tc.name, err, tc.want)
		}
	}
}

func TestTailWriter(t *testing.T) {
	t.Parallel()
	w := &tailWriter{max: 4}
	_, _ = w.Write([]byte("abc"))
	_, _ = w.Write([]byte("defg"))
	if got := w.String(); got != "defg" {
		t.Errorf("got %q", got)
	}
}

func TestInstallCopiesExecutable(t *testing.T) {
	t.Parallel()
	dst := filepath.Join(t.TempDir(), "berth-hook")
	if err := Install(dst); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(dst)
	if err != nil || fi.Mode().Perm() != 0o755 || fi.Size() == 0 {
		t.Fatalf("installed binary: %v %v", fi, err)
	}
	if err := Install(filepath.Join(t.TempDir(), "missing", "x")); err == nil {
		t.Error("install into a missing directory succeeded")
	}
}
