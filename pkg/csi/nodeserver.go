package csi

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	csi "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"

	"github.com/berth-dev/berth/pkg/csi/iolayer"
)

// NodeStageVolume mounts the GlusterFS volume once per node (shared by every PV on it) and
// bind-mounts the PV's data directory at the staging path.
func (d *Driver) NodeStageVolume(ctx context.Context, req *csi.NodeStageVolumeRequest) (
	*csi.NodeStageVolumeResponse, error) {
	id, staging := req.GetVolumeId(), req.GetStagingTargetPath()
	if id == "" || staging == "" {
		return nil, status.Error(codes.InvalidArgument, "volume ID and staging target path are required")
	}
	if req.GetVolumeCapability() == nil {
		return nil, status.Error(codes.InvalidArgument, "volume capability is required")
	}
	if err := validateCapabilities([]*csi.VolumeCapability{req.GetVolumeCapability()}); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if err := d.lockVolume(ctx, id); err != nil {
		return nil, err
	}
	defer d.locks.Release(id)
	ref, dir, _, err := d.lookupVolume(ctx, id)
	if err != nil {
		return nil, err
	}
	if err := d.bindHealthy(ctx, filepath.Join(dir, dataDir), staging, false); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	if err := d.saveRecord(stagedKind, &mountRecord{VolumeID: ref.ID(), Path: staging}); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &csi.NodeStageVolumeResponse{}, nil
}

// bindHealthy bind-mounts source at target unless a live mount is already there; a dead one
// (FUSE daemon gone) is detached and made again.
func (d *Driver) bindHealthy(ctx context.Context, source, target string, ro bool) error {
	mp, err := d.mounter.IsMountPoint(target)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if mp {
		if _, err := checkMount(target); err == nil || !isDeadMount(err) {
			return nil
		}
		klog.FromContext(ctx).Info("mount is dead, binding again", "path", target)
		if err := d.mounter.Unmount(target); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(target, 0o750); err != nil {
		return err
	}
	return d.mounter.Bind(source, target, ro)
}

// NodeUnstageVolume unmounts the staging path; the shared GlusterFS mount stays.
func (d *Driver) NodeUnstageVolume(ctx context.Context, req *csi.NodeUnstageVolumeRequest) (
	*csi.NodeUnstageVolumeResponse, error) {
	id, staging := req.GetVolumeId(), req.GetStagingTargetPath()
	if id == "" || staging == "" {
		return nil, status.Error(codes.InvalidArgument, "volume ID and staging target path are required")
	}
	if err := d.lockVolume(ctx, id); err != nil {
		return nil, err
	}
	defer d.locks.Release(id)
	if err := d.mounter.Unmount(staging); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, status.Error(codes.Internal, err.Error())
	}
	if err := d.deleteRecord(stagedKind, staging); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	// A dedicated GlusterFS volume serves this PV only: its node mount goes with the stage.
	if ref, err := parseVolumeID(id); err == nil && ref.Dedicated() {
		if err := d.releaseGlusterMount(ref.GlusterVolume); err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
	}
	return &csi.NodeUnstageVolumeResponse{}, nil
}

// NodePublishVolume bind-mounts the staged directory at the target, or, when the volume has
// IO limits or statistics, serves it there through the IO-limited FUSE layer.
func (d *Driver) NodePublishVolume(ctx context.Context, req *csi.NodePublishVolumeRequest) (
	*csi.NodePublishVolumeResponse, error) {
	id, target, staging := req.GetVolumeId(), req.GetTargetPath(), req.GetStagingTargetPath()
	if id == "" || target == "" || staging == "" {
		return nil, status.Error(codes.InvalidArgument,
			"volume ID, target path and staging target path are required")
	}
	if req.GetVolumeCapability() == nil {
		return nil, status.Error(codes.InvalidArgument, "volume capability is required")
	}
	if err := validateCapabilities([]*csi.VolumeCapability{req.GetVolumeCapability()}); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if err := d.lockVolume(ctx, id); err != nil {
		return nil, err
	}
	defer d.locks.Release(id)
	ref, dir, m, err := d.lookupVolume(ctx, id)
	if err != nil {
		return nil, err
	}
	if mp, _ := d.mounter.IsMountPoint(staging); !mp {
		return nil, status.Errorf(codes.FailedPrecondition, "volume %q is not staged at %q", id, staging)
	}
	// After a restart of this plugin the staging bind is dead; the kubelet does not stage
	// again, so bind it again here rather than fail until the next repair pass.
	if err := d.bindHealthy(ctx, filepath.Join(dir, dataDir), staging, false); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	mode := req.GetVolumeCapability().GetAccessMode().GetMode()
	if mode == csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER {
		for _, r := range d.records(publishedKind) {
			if r.VolumeID == ref.ID() && filepath.Clean(r.Path) != filepath.Clean(target) {
				return nil, status.Errorf(codes.FailedPrecondition,
					"volume %q has access mode SINGLE_NODE_SINGLE_WRITER and is already published at %q", id,
					r.Path)
			}
		}
	}
	rec := &mountRecord{VolumeID: ref.ID(), Path: target, Source: staging, ReadOnly: readOnly(req),
		Limited: m.Limits.Limited() || m.Statistics}
	if err := d.publish(ctx, rec, m.Limits); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	if err := d.saveRecord(publishedKind, rec); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	klog.FromContext(ctx).V(2).Info("volume published", "volume", id, "target", target,
		"limits", m.Limits.String())
	return &csi.NodePublishVolumeResponse{}, nil
}

// readOnly: a pod gets a read-only mount when it asks (readOnly: true) and whenever the claim's
// access mode is a reader-only one (ReadOnlyMany): the pod spec need not repeat it.
func readOnly(req *csi.NodePublishVolumeRequest) bool {
	switch req.GetVolumeCapability().GetAccessMode().GetMode() {
	case csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY,
		csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY:
		return true
	}
	return req.GetReadonly()
}

func (d *Driver) publish(ctx context.Context, rec *mountRecord, l iolayer.Limits) error {
	if !rec.Limited {
		return d.bindHealthy(ctx, rec.Source, rec.Path, rec.ReadOnly)
	}
	old := d.loadRecord(publishedKind, rec.Path) // published by this or an earlier run?
	if old == nil {
		old = rec
	}
	if lp := d.layerOf(ctx, old); lp != nil {
		rec.LayerPID, rec.LayerSocket = lp.PID(), lp.Socket()
		return lp.SetLimits(ctx, l)
	}
	if err := os.MkdirAll(rec.Path, 0o750); err != nil {
		return err
	}
	if mp, _ := d.mounter.IsMountPoint(rec.Path); mp { // a dead layer of an earlier run
		if err := d.mounter.Unmount(rec.Path); err != nil {
			return err
		}
	}
	lp, err := d.startLayer(ctx, rec, l)
	if err != nil {
		return err
	}
	rec.LayerPID, rec.LayerSocket = lp.PID(), lp.Socket()
	d.mu.Lock()
	d.limited[rec.Path] = lp
	d.mu.Unlock()
	return nil
}

// NodeUnpublishVolume unmounts the target and removes it; an absent target is success.
func (d *Driver) NodeUnpublishVolume(ctx context.Context, req *csi.NodeUnpublishVolumeRequest) (
	*csi.NodeUnpublishVolumeResponse, error) {
	id, target := req.GetVolumeId(), req.GetTargetPath()
	if id == "" || target == "" {
		return nil, status.Error(codes.InvalidArgument, "volume ID and target path are required")
	}
	if err := d.lockVolume(ctx, id); err != nil {
		return nil, err
	}
	defer d.locks.Release(id)
	rec := d.loadRecord(publishedKind, target)
	if rec == nil { // no record (never saved): a layer of this run is still found by its path
		rec = &mountRecord{Path: target, Limited: true}
	}
	lp := d.layerOf(ctx, rec)
	d.mu.Lock()
	delete(d.limited, target)
	d.mu.Unlock()
	if lp != nil {
		if err := lp.Stop(ctx); err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
	}
	if err := d.mounter.Unmount(target); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, status.Error(codes.Internal, err.Error())
	}
	if err := os.Remove(target); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, status.Errorf(codes.Internal, "failed to remove target %q: %v", target, err)
	}
	if err := d.deleteRecord(publishedKind, target); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &csi.NodeUnpublishVolumeResponse{}, nil
}

// NodeGetVolumeStats reports bytes and inodes (the quota, via gluster's quota-deem-statfs) and
// an abnormal condition when the mount is dead.
func (d *Driver) NodeGetVolumeStats(_ context.Context, req *csi.NodeGetVolumeStatsRequest) (
	*csi.NodeGetVolumeStatsResponse, error) {
	id, path := req.GetVolumeId(), req.GetVolumePath()
	if id == "" || path == "" {
		return nil, status.Error(codes.InvalidArgument, "volume ID and volume path are required")
	}
	if _, err := parseVolumeID(id); err != nil {
		return nil, status.Error(codes.NotFound, err.Error())
	}
	if _, err := os.Lstat(path); errors.Is(err, os.ErrNotExist) {
		return nil, status.Errorf(codes.NotFound, "volume path %q does not exist", path)
	}
	st, err := checkMount(path)
	if err != nil {
		if isDeadMount(err) {
			return nil, status.Errorf(codes.Unavailable,
				"GlusterFS mount is dead (%v); the node plugin remounts it within seconds", err)
		}
		return nil, status.Error(codes.Internal, err.Error())
	}
	bs := st.Bsize
	used := int64(st.Blocks-st.Bfree) * bs
	if st.Bavail == 0 {
		// At or past its quota, quota-deem-statfs says used = size and hides what parallel
		// writers put past it (docs/csi.md, "Capacity quota"): sum the files instead.
		if u, ok := allocatedBytes(path, maxStatsWalk); ok && u > used {
			used = u
		}
	}
	return &csi.NodeGetVolumeStatsResponse{
		Usage: []*csi.VolumeUsage{
			{Unit: csi.VolumeUsage_BYTES, Total: int64(st.Blocks) * bs, Available: int64(st.Bavail) * bs,
				Used: used},
			{Unit: csi.VolumeUsage_INODES, Total: int64(st.Files), Available: int64(st.Ffree),
				Used: int64(st.Files - st.Ffree)},
		},
	}, nil
}

// maxStatsWalk bounds the entries NodeGetVolumeStats visits to sum a full volume's files.
const maxStatsWalk = 100000

// allocatedBytes sums the allocated bytes of everything under dir; ok is false when it holds
// more than limit entries or cannot be read (the caller keeps statfs's figure).
func allocatedBytes(dir string, limit int) (total int64, ok bool) {
	n := 0
	err := filepath.WalkDir(dir, func(_ string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if n++; n > limit {
			return errWalkLimit
		}
		fi, err := e.Info()
		if err != nil {
			return nil // removed meanwhile
		}
		if st, isStat := fi.Sys().(*syscall.Stat_t); isStat {
			total += st.Blocks * 512
		}
		return nil
	})
	return total, err == nil
}

var errWalkLimit = errors.New("too many entries")

// NodeGetCapabilities lists the node features.
func (d *Driver) NodeGetCapabilities(context.Context, *csi.NodeGetCapabilitiesRequest) (
	*csi.NodeGetCapabilitiesResponse, error) {
	var caps []*csi.NodeServiceCapability
	for _, c := range []csi.NodeServiceCapability_RPC_Type{
		csi.NodeServiceCapability_RPC_STAGE_UNSTAGE_VOLUME,
		csi.NodeServiceCapability_RPC_GET_VOLUME_STATS,
		csi.NodeServiceCapability_RPC_GET_VOLUME_HEALTH,
		csi.NodeServiceCapability_RPC_SINGLE_NODE_MULTI_WRITER,
	} {
		caps = append(caps, &csi.NodeServiceCapability{Type: &csi.NodeServiceCapability_Rpc{
			Rpc: &csi.NodeServiceCapability_RPC{Type: c},
		}})
	}
	return &csi.NodeGetCapabilitiesResponse{Capabilities: caps}, nil
}

// NodeGetInfo returns the node ID; GlusterFS volumes are reachable from every node.
func (d *Driver) NodeGetInfo(context.Context, *csi.NodeGetInfoRequest) (
	*csi.NodeGetInfoResponse, error) {
	return &csi.NodeGetInfoResponse{NodeId: d.opts.NodeID}, nil
}

// NodeGetVolumeHealth reports INACCESSIBLE when the volume's mount on this node is dead
// ("transport endpoint is not connected") or its directory is gone.
func (d *Driver) NodeGetVolumeHealth(ctx context.Context, req *csi.NodeGetVolumeHealthRequest) (
	*csi.NodeGetVolumeHealthResponse, error) {
	id := req.GetVolumeId()
	if id == "" {
		return nil, status.Error(codes.InvalidArgument, "volume ID is required")
	}
	ref, err := parseVolumeID(id)
	if err != nil {
		return nil, status.Error(codes.NotFound, err.Error())
	}
	health := &csi.VolumeHealth{VolumeId: id}
	bad := func(reason, msg string) {
		health.HealthStatuses = append(health.HealthStatuses, &csi.VolumeHealth_VolumeHealthEntry{
			Status: csi.VolumeHealthErrorType_INACCESSIBLE, Reason: reason, Message: msg})
	}
	paths := []string{filepath.Join(d.glusterMountPath(ref.GlusterVolume), ref.RelData())}
	for _, p := range []string{req.GetVolumePublishPath(), req.GetStagingTargetPath()} {
		if p != "" {
			paths = append(paths, p)
		}
	}
	for _, p := range paths {
		if _, err := checkMount(p); err != nil {
			if isDeadMount(err) {
				bad("MountDead", err.Error())
			} else if errors.Is(err, os.ErrNotExist) {
				bad("NotFound", err.Error())
			}
		}
	}
	return &csi.NodeGetVolumeHealthResponse{VolumeHealth: health}, nil
}
