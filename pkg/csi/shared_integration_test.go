//go:build integration

package csi

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
)

// sharedByTwoPods creates a volume served through the IO layer and publishes it for two pods of
// this node; it returns both targets and the staging path (the volume without the layer).
func (td *testDriver) sharedByTwoPods(t *testing.T, name string) (podA, podB, staging string) {
	t.Helper()
	id, podA := td.publishNew(t, name, 64<<20, map[string]string{ParamIOStatistics: "true"})
	podB = filepath.Join(td.state, "pods", name+"-b", "mount")
	staging = filepath.Join(td.state, "staging", name)
	if _, err := td.node().NodePublishVolume(t.Context(), &csi.NodePublishVolumeRequest{VolumeId: id,
		StagingTargetPath: staging, TargetPath: podB, VolumeCapability: mountCap()}); err != nil {
		t.Fatalf("NodePublishVolume of the second pod: %v", err)
	}
	t.Cleanup(func() {
		_, _ = td.node().NodeUnpublishVolume(context.Background(),
			&csi.NodeUnpublishVolumeRequest{VolumeId: id, TargetPath: podB})
	})
	return podA, podB, staging
}

// TestAppendsFromTwoPodsLoseNothing: two pods on one node share a volume, each through its own
// IO layer (two FUSE mounts, each with its own kernel cache of the file's size). Appends from
// both, by open-append-close and by a log writer that keeps its file open, must all land:
// none may overwrite another's at the size one layer's kernel last saw.
func TestAppendsFromTwoPodsLoseNothing(t *testing.T) {
	td := startDriver(t)
	podA, podB, staging := td.sharedByTwoPods(t, "appends")

	appendLine := func(dir, line string) {
		t.Helper()
		f, err := os.OpenFile(filepath.Join(dir, "visits.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND,
			0o644)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.WriteString(line + "\n"); err != nil {
			t.Fatal(err)
		}
	}
	var want []string
	// Open-append-close, alternating pods, well within the layers' 1 s attribute cache.
	for i := range 20 {
		dir, who := podA, "a"
		if i%2 == 1 {
			dir, who = podB, "b"
		}
		// lengths differ, like timestamps do
		line := fmt.Sprintf("%s %d %s", who, i, strings.Repeat("x", i))
		appendLine(dir, line)
		want = append(want, line)
	}
	// A log writer in pod A keeps its file open while pod B appends too.
	logA, err := os.OpenFile(filepath.Join(podA, "visits.log"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer logA.Close()
	for i := range 10 {
		line := fmt.Sprintf("log-a %d", i)
		if _, err := logA.WriteString(line + "\n"); err != nil {
			t.Fatal(err)
		}
		want = append(want, line)
		line = fmt.Sprintf("b %d", 100+i)
		appendLine(podB, line)
		want = append(want, line)
	}

	for _, dir := range []string{staging, podA, podB} {
		b, err := os.ReadFile(filepath.Join(dir, "visits.log"))
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(want, "\n") + "\n"; string(b) != got {
			t.Errorf("the shared file as %s sees it:\n%s\nwant every append of both pods, in order:\n%s",
				dir, b, got)
		}
	}
}

// TestLocksHoldAcrossPods: an exclusive lock one pod takes on a file of a shared volume keeps
// another pod on the same node out, when each pod has its own IO layer — as it does when both
// pods use the GlusterFS mount directly. Both lock kinds: flock and (open file description)
// fcntl locks, which is what SQLite, lock files and leader election by file use.
func TestLocksHoldAcrossPods(t *testing.T) {
	td := startDriver(t)
	podA, podB, _ := td.sharedByTwoPods(t, "locks")
	if err := os.WriteFile(filepath.Join(podA, "leader.lock"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	open := func(dir string) *os.File {
		t.Helper()
		f, err := os.OpenFile(filepath.Join(dir, "leader.lock"), os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return f
	}
	for _, c := range []struct {
		kind string
		lock func(*os.File) error
	}{
		{"flock", func(f *os.File) error { return unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) }},
		{"fcntl", func(f *os.File) error { // an exclusive lock of the whole file
			return unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLK, &unix.Flock_t{Type: unix.F_WRLCK})
		}},
	} {
		a, b := open(podA), open(podB)
		if err := c.lock(a); err != nil {
			t.Fatalf("%s: pod A cannot take the free lock: %v", c.kind, err)
		}
		if err := c.lock(b); err == nil {
			t.Errorf("%s: pod B took the lock pod A holds: both pods think they are the leader", c.kind)
		} else if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EAGAIN) &&
			!errors.Is(err, unix.EACCES) {
			t.Errorf("%s: pod B's attempt failed with %v, want EWOULDBLOCK/EAGAIN", c.kind, err)
		}
		a.Close() // closing releases it (FUSE releases a closed file asynchronously)
		start := time.Now()
		err := c.lock(b)
		for err != nil && time.Since(start) < 5*time.Second {
			time.Sleep(10 * time.Millisecond)
			err = c.lock(b)
		}
		if err != nil {
			t.Errorf("%s: pod B cannot take the lock 5 s after pod A closed its file: %v", c.kind, err)
		}
		t.Logf("%s: pod B got the lock %v after pod A closed its file", c.kind, time.Since(start))
		b.Close()
	}
}
