//go:build integration

package csi

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
)

// TestAppendsFromTwoPodsLoseNothing: two pods on one node share a volume, each through its own
// IO layer (two FUSE mounts, each with its own kernel cache of the file's size). Appends from
// both, by open-append-close and by a log writer that keeps its file open, must all land:
// none may overwrite another's at the size one layer's kernel last saw.
func TestAppendsFromTwoPodsLoseNothing(t *testing.T) {
	td := startDriver(t)
	id, podA := td.publishNew(t, "appends", 64<<20, map[string]string{ParamIOStatistics: "true"})
	podB := filepath.Join(td.state, "pods", "appends-b", "mount")
	staging := filepath.Join(td.state, "staging", "appends")
	if _, err := td.node().NodePublishVolume(t.Context(), &csi.NodePublishVolumeRequest{VolumeId: id,
		StagingTargetPath: staging, TargetPath: podB, VolumeCapability: mountCap()}); err != nil {
		t.Fatalf("NodePublishVolume of the second pod: %v", err)
	}
	t.Cleanup(func() {
		_, _ = td.node().NodeUnpublishVolume(context.Background(), &csi.NodeUnpublishVolumeRequest{VolumeId: id, TargetPath: podB})
	})

	appendLine := func(dir, line string) {
		t.Helper()
		f, err := os.OpenFile(filepath.Join(dir, "visits.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
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
		line := fmt.Sprintf("%s %d %s", who, i, strings.Repeat("x", i)) // lengths differ, like timestamps do
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
			t.Errorf("the shared file as %s sees it:\n%s\nwant every append of both pods, in order:\n%s", dir, b, got)
		}
	}
}
