//go:build integration

package csi

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	csi "github.com/container-storage-interface/spec/lib/go/csi"
)

// TestDedicatedVolume provisions a PV with its own GlusterFS volume (isolation: dedicated):
// glusterd gets a started berth-<hash> volume, the pod's writes stop at the quota, DeleteVolume
// stops and deletes the GlusterFS volume; with onDelete=archive it stays, stopped and marked.
func TestDedicatedVolume(t *testing.T) {
	td := startDriver(t)
	params := map[string]string{ParamIsolation: IsolationDedicated, ParamBrickHosts: gd.Host,
		ParamBrickRoot: filepath.Join(gd.Base, "bricks"), ParamBrickForce: "true"}
	const limit = 10 << 20
	id, target := td.publishNew(t, "dedicated-vol", limit, params)
	ref, err := parseVolumeID(id)
	if err != nil || !ref.Dedicated() {
		t.Fatalf("volume ID %q does not name a dedicated GlusterFS volume (%v)", id, err)
	}
	info, err := gd.CLI(t.Context(), "volume", "info", ref.GlusterVolume)
	if err != nil || !strings.Contains(string(info), "Status: Started") || !strings.Contains(string(info), "user.berth.pv: dedicated-vol") {
		t.Fatalf("GlusterFS volume %s not created and started for the PV: %s %v", ref.GlusterVolume, info, err)
	}
	n, err := writeUntilError(filepath.Join(target, "big"), 40<<20)
	if !errors.Is(err, syscall.EDQUOT) || n < limit-(1<<20) || n > limit+(1<<20) {
		t.Fatalf("writer got %v after %.2f MiB, want EDQUOT within 1 MiB of 10 MiB", err, float64(n)/(1<<20))
	}
	t.Logf("dedicated volume %s: EDQUOT after %.2f MiB", ref.GlusterVolume, float64(n)/(1<<20))

	ctx := t.Context()
	staging := filepath.Join(td.state, "staging", "dedicated-vol")
	if _, err := td.node().NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: id, TargetPath: target}); err != nil {
		t.Fatal(err)
	}
	if _, err := td.node().NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: id, StagingTargetPath: staging}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ { // idempotent
		if _, err := td.controller().DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: id}); err != nil {
			t.Fatalf("DeleteVolume #%d: %v", i+1, err)
		}
	}
	if out, err := gd.CLI(ctx, "volume", "info", ref.GlusterVolume); err == nil || !strings.Contains(string(out), "does not exist") {
		t.Fatalf("GlusterFS volume %s still exists after DeleteVolume: %s", ref.GlusterVolume, out)
	}

	params[ParamOnDelete] = OnDeleteArchive
	cv, err := td.controller().CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "dedicated-archived", Parameters: params,
		CapacityRange: &csi.CapacityRange{RequiredBytes: limit}, VolumeCapabilities: []*csi.VolumeCapability{mountCap()}})
	if err != nil {
		t.Fatal(err)
	}
	aref, _ := parseVolumeID(cv.GetVolume().GetVolumeId())
	t.Cleanup(func() { _ = td.d.opts.GlusterCLI.deleteVolume(context.Background(), aref.GlusterVolume) })
	for i := 0; i < 2; i++ {
		if _, err := td.controller().DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: cv.GetVolume().GetVolumeId()}); err != nil {
			t.Fatalf("DeleteVolume (archive) #%d: %v", i+1, err)
		}
	}
	info, err = gd.CLI(ctx, "volume", "info", aref.GlusterVolume)
	if err != nil || !strings.Contains(string(info), "Status: Stopped") || !strings.Contains(string(info), "user.berth.archived:") {
		t.Fatalf("archived GlusterFS volume %s should stay, stopped and marked: %s %v", aref.GlusterVolume, info, err)
	}
}
