//go:build integration

package iolayer

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// serve runs the layer over a new directory (standing for a volume's staging path, root and
// /dev/fuse needed) until the test ends, and returns that directory and the layer's target.
func serve(t *testing.T, l Limits) (source, target string) {
	t.Helper()
	dir := t.TempDir()
	source, target = filepath.Join(dir, "source"), filepath.Join(dir, "target")
	for _, d := range []string{source, target} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	o := Options{VolumeID: "v1#test", Source: source, Target: target,
		Socket: filepath.Join(dir, "layer.sock"), Limits: l}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, o) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("layer stopped with %v", err)
		}
	})
	lp := newProc(o.VolumeID, target, o.Socket, os.Getpid())
	deadline := time.Now().Add(15 * time.Second)
	for {
		// Run answers on its socket only once the target is mounted.
		_, err := lp.Stats(t.Context())
		if err == nil {
			return source, target
		}
		select {
		case err := <-done:
			t.Fatalf("layer exited before serving: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("layer does not serve after 15s: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestIOLayerStaysInsideVolume swaps a directory of a volume served through the IO layer for
// a symlink to a host directory, behind the layer's back (as a pod on another node can), and
// then creates, chmods and mkdirs through the directory the kernel still has cached: the
// layer must not follow the symlink to the host.
func TestIOLayerStaysInsideVolume(t *testing.T) {
	staging, target := serve(t, Limits{}) // staging: the volume without the layer
	outside := t.TempDir()                // stands for /etc
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
	st, err := os.Stat(filepath.Join(staging, "d", "g"))
	if err != nil || st.Mode().Perm() != 0o600 || st.Size() != 3 {
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
		t.Errorf("the IO layer followed the tenant's symlink: host file mode is now %v (%v), "+
			"want 0644", st.Mode().Perm(), err)
	}
}
