//go:build integration

package csi

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestIOLayerStaysInsideVolume swaps a directory of a volume served through the IO layer for
// a symlink to a host directory, behind the layer's back (as a pod on another node can), and
// then creates, chmods and mkdirs through the directory the kernel still has cached: the
// layer must not follow the symlink to the host.
func TestIOLayerStaysInsideVolume(t *testing.T) {
	td := startDriver(t)
	_, target := td.publishNew(t, "confined", 64<<20, map[string]string{ParamIOStatistics: "true"})
	staging := filepath.Join(td.state, "staging", "confined") // the volume without the layer
	outside := t.TempDir()                                    // stands for /etc
	if err := os.WriteFile(filepath.Join(outside, "f"), []byte("host"), 0o644); err != nil {
		t.Fatal(err)
	}

	// Ordinary operations work through the layer.
	d := filepath.Join(target, "d")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Mkdir(d, 0o755))
	must(os.WriteFile(filepath.Join(d, "f"), []byte("tenant"), 0o644))
	must(os.Chmod(filepath.Join(d, "f"), 0o600))
	must(os.Truncate(filepath.Join(d, "f"), 3))
	must(os.Rename(filepath.Join(d, "f"), filepath.Join(d, "g")))
	must(os.Link(filepath.Join(d, "g"), filepath.Join(d, "h")))
	must(os.Symlink("g", filepath.Join(d, "s")))
	if l, err := os.Readlink(filepath.Join(d, "s")); err != nil || l != "g" {
		t.Fatalf("readlink through the layer = %q, %v; want g", l, err)
	}
	if b, err := os.ReadFile(filepath.Join(d, "s")); err != nil || string(b) != "ten" {
		t.Fatalf("read through a symlink = %q, %v; want the truncated content", b, err)
	}
	ents, err := os.ReadDir(d)
	must(err)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if !slices.Equal(names, []string{"g", "h", "s"}) {
		t.Fatalf("readdir through the layer = %v, want [g h s]", names)
	}
	if st, err := os.Stat(filepath.Join(staging, "d", "g")); err != nil || st.Mode().Perm() != 0o600 || st.Size() != 3 {
		t.Fatalf("chmod/truncate did not reach the volume: %v %v", st, err)
	}
	for _, n := range []string{"g", "h", "s"} {
		must(os.Remove(filepath.Join(d, n)))
	}
	must(os.WriteFile(filepath.Join(d, "f"), []byte("tenant"), 0o644))

	// The swap, behind the layer: d becomes a symlink to the host directory.
	must(os.Rename(filepath.Join(staging, "d"), filepath.Join(staging, "d-old")))
	must(os.Symlink(outside, filepath.Join(staging, "d")))
	// At once, while the kernel still has d (and d/f) cached (entry timeout 1 s).
	_ = os.WriteFile(filepath.Join(d, "x"), []byte("escaped"), 0o644)
	_ = os.Chmod(filepath.Join(d, "f"), 0o777)
	_ = os.Mkdir(filepath.Join(d, "y"), 0o755)

	for _, n := range []string{"x", "y"} {
		if _, err := os.Lstat(filepath.Join(outside, n)); err == nil {
			t.Errorf("the IO layer followed the tenant's symlink: %s was made in the host directory", n)
		}
	}
	if st, err := os.Stat(filepath.Join(outside, "f")); err != nil || st.Mode().Perm() != 0o644 {
		t.Errorf("the IO layer followed the tenant's symlink: host file mode is now %v (%v), want 0644", st.Mode().Perm(), err)
	}
}
