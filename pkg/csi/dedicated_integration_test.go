//go:build integration

package csi

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	csi "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
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
	if err != nil || !strings.Contains(string(info), "Status: Started") ||
		!strings.Contains(string(info), "user.berth.pv: dedicated-vol") {
		t.Fatalf("GlusterFS volume %s not created and started for the PV: %s %v", ref.GlusterVolume, info,
			err)
	}
	n, err := writeUntilError(filepath.Join(target, "big"), 40<<20)
	if !errors.Is(err, syscall.EDQUOT) || n < limit-(1<<20) || n > limit+(1<<20) {
		t.Fatalf("writer got %v after %.2f MiB, want EDQUOT within 1 MiB of 10 MiB", err,
			float64(n)/(1<<20))
	}
	t.Logf("dedicated volume %s: EDQUOT after %.2f MiB", ref.GlusterVolume, float64(n)/(1<<20))

	ctx := t.Context()
	// A node reported a dead client of the volume (clientdeath.go): the report goes with it.
	td.d.reportClientDeath(ctx, ref.GlusterVolume, td.d.glusterMountPath(ref.GlusterVolume))
	if _, err := os.Stat(filepath.Join(td.d.glusterMountPath(ref.GlusterVolume), clientDeathsDir)); err != nil {
		t.Fatalf("no dead-client report in the mounted volume: %v", err)
	}
	staging := filepath.Join(td.state, "staging", "dedicated-vol")
	if _, err := td.node().NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: id,
		TargetPath: target}); err != nil {
		t.Fatal(err)
	}
	if _, err := td.node().NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: id,
		StagingTargetPath: staging}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ { // idempotent
		if _, err := td.controller().DeleteVolume(ctx, &csi.DeleteVolumeRequest{
			VolumeId: id}); err != nil {
			t.Fatalf("DeleteVolume #%d: %v", i+1, err)
		}
	}
	if out, err := gd.CLI(ctx, "volume", "info", ref.GlusterVolume); err == nil ||
		!strings.Contains(string(out), "does not exist") {
		t.Fatalf("GlusterFS volume %s still exists after DeleteVolume: %s", ref.GlusterVolume, out)
	}
	_ = filepath.WalkDir(filepath.Join(gd.Base, "bricks"), func(p string, e fs.DirEntry, err error) error {
		if err == nil && e.Name() == clientDeathsDir && strings.Contains(p, ref.GlusterVolume) {
			t.Errorf("a dead-client report stayed in a brick of the deleted volume: %s", p)
		}
		return nil
	})

	params[ParamOnDelete] = OnDeleteArchive
	cv, err := td.controller().CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "dedicated-archived",
		Parameters:         params,
		CapacityRange:      &csi.CapacityRange{RequiredBytes: limit},
		VolumeCapabilities: []*csi.VolumeCapability{mountCap()}})
	if err != nil {
		t.Fatal(err)
	}
	aref, _ := parseVolumeID(cv.GetVolume().GetVolumeId())
	t.Cleanup(func() {
		_ = td.d.opts.GlusterCLI.deleteVolume(context.Background(),
			aref.GlusterVolume)
	})
	for i := 0; i < 2; i++ {
		if _, err := td.controller().DeleteVolume(ctx, &csi.DeleteVolumeRequest{
			VolumeId: cv.GetVolume().GetVolumeId()}); err != nil {
			t.Fatalf("DeleteVolume (archive) #%d: %v", i+1, err)
		}
	}
	info, err = gd.CLI(ctx, "volume", "info", aref.GlusterVolume)
	if err != nil || !strings.Contains(string(info), "Status: Stopped") ||
		!strings.Contains(string(info), "user.berth.archived:") {
		t.Fatalf("archived GlusterFS volume %s should stay, stopped and marked: %s %v",
			aref.GlusterVolume, info, err)
	}
}

// TestArchiveNeverFallsBackToDelete: a dedicated onDelete=archive volume whose brick is down
// cannot be mounted, so its policy cannot be read. DeleteVolume must fail (and be retried),
// not stop and delete the GlusterFS volume; once the brick is back it archives.
func TestArchiveNeverFallsBackToDelete(t *testing.T) {
	td := startDriver(t)
	ctx := t.Context()
	params := map[string]string{ParamIsolation: IsolationDedicated, ParamBrickHosts: gd.Host,
		ParamBrickRoot: filepath.Join(gd.Base, "bricks"), ParamBrickForce: "true",
		ParamOnDelete: OnDeleteArchive}
	cv, err := td.controller().CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "archive-unreadable",
		Parameters:         params,
		CapacityRange:      &csi.CapacityRange{RequiredBytes: 10 << 20},
		VolumeCapabilities: []*csi.VolumeCapability{mountCap()}})
	if err != nil {
		t.Fatal(err)
	}
	id := cv.GetVolume().GetVolumeId()
	ref, _ := parseVolumeID(id)
	t.Cleanup(func() {
		_ = td.d.opts.GlusterCLI.deleteVolume(context.Background(),
			ref.GlusterVolume)
	})
	keep := filepath.Join(td.d.glusterMountPath(ref.GlusterVolume), ref.RelData(), "keep")
	if err := os.WriteFile(keep, []byte("the owner asked to keep this"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, pid := range gd.BrickPIDs(ref.GlusterVolume) {
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
	}
	_, err = td.controller().DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: id})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("DeleteVolume with the policy unreadable (brick down) = %v, want Unavailable (retried)",
			err)
	}
	info, err := gd.CLI(ctx, "volume", "info", ref.GlusterVolume)
	if err != nil || !strings.Contains(string(info), "Status: Started") ||
		strings.Contains(string(info), "user.berth.archived") {
		t.Fatalf("after a failed DeleteVolume the GlusterFS volume must stay as it was: %s %v", info, err)
	}
	if _, err := gd.CLI(ctx, "volume", "start", ref.GlusterVolume, "force"); err != nil { // brick back
		t.Fatal(err)
	}
	if _, err := td.controller().DeleteVolume(ctx, &csi.DeleteVolumeRequest{
		VolumeId: id}); err != nil {
		t.Fatalf("DeleteVolume (retry, brick back): %v", err)
	}
	info, err = gd.CLI(ctx, "volume", "info", ref.GlusterVolume)
	if err != nil || !strings.Contains(string(info), "Status: Stopped") ||
		!strings.Contains(string(info), "user.berth.archived:") {
		t.Fatalf("the retried DeleteVolume should archive the volume: %s %v", info, err)
	}
}

// TestDeleteRefusesDataWithoutPolicy: a shared volume whose meta.json is gone but whose data
// directory holds files is not deleted (its policy might have been archive).
func TestDeleteRefusesDataWithoutPolicy(t *testing.T) {
	td := startDriver(t)
	id, target := td.publishNew(t, "policy-lost", 10<<20, map[string]string{
		ParamOnDelete: OnDeleteArchive})
	if err := os.WriteFile(filepath.Join(target, "precious"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	ref, _ := parseVolumeID(id)
	dir := filepath.Join(td.d.glusterMountPath(ref.GlusterVolume), ref.RelDir())
	meta, err := os.ReadFile(filepath.Join(dir, metaFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, metaFile)); err != nil {
		t.Fatal(err)
	}
	_, err = td.controller().DeleteVolume(t.Context(), &csi.DeleteVolumeRequest{VolumeId: id})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(),
		"refusing to delete") {
		t.Fatalf("DeleteVolume of a PV with data and no %s = %v, want FailedPrecondition refusing to "+
			"delete", metaFile, err)
	}
	if _, err := os.Stat(filepath.Join(target, "precious")); err != nil {
		t.Fatalf("the data is gone after a refused DeleteVolume: %v", err)
	}
	// let cleanup archive it
	if err := os.WriteFile(filepath.Join(dir, metaFile), meta, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestAuthAllowRestrictsClients: with --gluster-auth-allow the dedicated volumes berth creates
// carry the client list as auth.allow, set before the first start, and this host (listed) still
// mounts them. (That glusterd refuses other clients is GlusterFS's part; a client on a host of
// the trusted pool, as every client here is, passes with the pool's credentials: docs/install.md.)
func TestAuthAllowRestrictsClients(t *testing.T) {
	td := startDriver(t)
	ctx := t.Context()
	params := map[string]string{ParamIsolation: IsolationDedicated, ParamBrickHosts: gd.Host,
		ParamBrickRoot: filepath.Join(gd.Base, "bricks"), ParamBrickForce: "true"}
	addrs, err := net.LookupHost(gd.Host) // the address the bricks see this host's clients come from
	if err != nil {
		t.Fatal(err)
	}
	allow := "192.0.2.*," + strings.Join(addrs, ",")
	td.d.opts.GlusterCLI.AuthAllow = allow
	t.Cleanup(func() {
		_ = td.d.opts.GlusterCLI.deleteVolume(context.Background(), dedicatedVolumeName("auth-listed"))
	})
	if _, err := td.controller().CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "auth-listed",
		Parameters:         params,
		CapacityRange:      &csi.CapacityRange{RequiredBytes: 10 << 20},
		VolumeCapabilities: []*csi.VolumeCapability{mountCap()}}); err != nil {
		t.Fatalf("CreateVolume with this host (%v) in auth.allow: %v", addrs, err)
	}
	out, err := gd.CLI(ctx, "volume", "info", dedicatedVolumeName("auth-listed"))
	if err != nil || !strings.Contains(string(out), "auth.allow: "+allow) {
		t.Fatalf("the dedicated volume's options lack auth.allow: %s: %s %v", allow, out, err)
	}
}

// TestDeleteRemovesEmptyShard: deleting the last PV of a shard directory removes the shard
// too; a shard that still holds another PV stays.
func TestDeleteRemovesEmptyShard(t *testing.T) {
	td := startDriver(t)
	ctx := t.Context()
	create := func(name string) volumeRef {
		cv, err := td.controller().CreateVolume(ctx, &csi.CreateVolumeRequest{Name: name,
			CapacityRange:      &csi.CapacityRange{RequiredBytes: 1 << 20},
			VolumeCapabilities: []*csi.VolumeCapability{mountCap()}})
		if err != nil {
			t.Fatal(err)
		}
		ref, _ := parseVolumeID(cv.GetVolume().GetVolumeId())
		return ref
	}
	// Two names in one shard (the first byte of sha256 of the name).
	a := create("shard-mate-0")
	var b volumeRef
	for i := 1; ; i++ {
		if r, _ := newVolumeRef(plainVol, fmt.Sprintf("shard-mate-%d", i)); r.Shard == a.Shard {
			b = create(r.Name)
			break
		}
	}
	shard := filepath.Join(td.d.glusterMountPath(plainVol), volumesDir, a.Shard)
	for i, ref := range []volumeRef{a, b} {
		if _, err := td.controller().DeleteVolume(ctx, &csi.DeleteVolumeRequest{
			VolumeId: ref.ID()}); err != nil {
			t.Fatal(err)
		}
		_, err := os.Stat(shard)
		if i == 0 && err != nil {
			t.Fatalf("shard %s removed while it still holds %s: %v", shard, b.Name, err)
		}
		if i == 1 && !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("empty shard %s left after its last PV was deleted: %v", shard, err)
		}
	}
}
