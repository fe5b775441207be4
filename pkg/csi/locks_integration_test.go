//go:build integration

package csi

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"

	csi "github.com/container-storage-interface/spec/lib/go/csi"
)

// TestSequentialCallsNeverAbortedByRepair: the kubelet calls stage, publish, unpublish and
// unstage one after another and does not expect Aborted. The node's repair pass (every 5 s in
// production, back to back here) takes the same per-volume lock; each call must wait for it
// rather than fail, and no bind mount may stay behind.
func TestSequentialCallsNeverAbortedByRepair(t *testing.T) {
	td := startDriver(t)
	ctx := t.Context()
	cv, err := td.controller().CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "repair-race",
		CapacityRange:      &csi.CapacityRange{RequiredBytes: 64 << 20},
		VolumeCapabilities: []*csi.VolumeCapability{mountCap()}})
	if err != nil {
		t.Fatal(err)
	}
	id := cv.GetVolume().GetVolumeId()
	t.Cleanup(func() {
		_, _ = td.controller().DeleteVolume(context.Background(), &csi.DeleteVolumeRequest{VolumeId: id})
	})
	staging := filepath.Join(td.state, "staging", "repair-race")
	target := filepath.Join(td.state, "pods", "repair-race", "mount")

	rctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for rctx.Err() == nil {
			td.d.repairAll(rctx)
		}
	}()
	const rounds = 30
	var failures []error
	for range rounds {
		if err := os.MkdirAll(staging, 0o750); err != nil {
			t.Fatal(err)
		}
		_, err1 := td.node().NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: id,
			StagingTargetPath: staging, VolumeCapability: mountCap()})
		_, err2 := td.node().NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: id,
			StagingTargetPath: staging,
			TargetPath:        target, VolumeCapability: mountCap()})
		_, err3 := td.node().NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: id,
			TargetPath: target})
		_, err4 := td.node().NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: id,
			StagingTargetPath: staging})
		for _, err := range []error{err1, err2, err3, err4} {
			if err != nil {
				failures = append(failures, err)
			}
		}
	}
	stop()
	wg.Wait()
	if len(failures) > 0 {
		t.Errorf("%d of %d sequential node calls failed while the repair pass ran, want 0; first: %v",
			len(failures), 4*rounds, failures[0])
	}
	for _, p := range []string{target, staging} {
		if mp, _ := td.d.mounter.IsMountPoint(p); mp {
			t.Errorf("%s is still mounted after the last unpublish/unstage", p)
		}
	}
}

// TestReadOnlyManyMountedReadOnly: a ReadOnlyMany claim (MULTI_NODE_READER_ONLY) is mounted
// read-only even when the pod does not say readOnly, as a bind and through the IO layer.
func TestReadOnlyManyMountedReadOnly(t *testing.T) {
	td := startDriver(t)
	ctx := t.Context()
	rox := &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
		AccessMode: &csi.VolumeCapability_AccessMode{
			Mode: csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY},
	}
	for _, c := range []struct {
		name   string
		params map[string]string
	}{{"rox-bind", nil}, {"rox-layer", map[string]string{ParamIOStatistics: "true"}}} {
		id, rw := td.publishNew(t, c.name, 16<<20, c.params)
		if err := os.WriteFile(filepath.Join(rw, "content"), []byte("published"), 0o644); err != nil {
			t.Fatal(err)
		}
		target := filepath.Join(td.state, "pods", c.name+"-reader", "mount")
		staging := filepath.Join(td.state, "staging", c.name)
		if _, err := td.node().NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: id,
			StagingTargetPath: staging,
			TargetPath:        target, VolumeCapability: rox}); err != nil {
			t.Fatalf("%s: NodePublishVolume: %v", c.name, err)
		}
		t.Cleanup(func() {
			_, _ = td.node().NodeUnpublishVolume(context.Background(),
				&csi.NodeUnpublishVolumeRequest{VolumeId: id, TargetPath: target})
		})
		if b, err := os.ReadFile(filepath.Join(target, "content")); err != nil ||
			string(b) != "published" {
			t.Errorf("%s: the reader reads %q, %v", c.name, b, err)
		}
		err := os.WriteFile(filepath.Join(target, "tamper"), []byte("x"), 0o644)
		if !errors.Is(err, syscall.EROFS) {
			t.Errorf("%s: a write through a ReadOnlyMany publish (readonly not set) = %v, want EROFS",
				c.name, err)
		}
	}
}
