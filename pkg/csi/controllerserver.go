package csi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	csi "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"

	"github.com/berth-dev/berth/pkg/csi/iolayer"
)

const (
	defaultCapacity = 1 << 30 // when the CO asks for none
	minCapacity     = 1 << 20 // gluster quota cannot meaningfully hold less
)

// CreateVolume makes <volume>/berth-volumes/<shard>/<name>/data with a gluster directory quota
// of the requested capacity. Repeating it with the same name and capacity returns the same volume.
func (d *Driver) CreateVolume(ctx context.Context, req *csi.CreateVolumeRequest) (
	*csi.CreateVolumeResponse, error) {
	if req.GetName() == "" {
		return nil, status.Error(codes.InvalidArgument, "volume name is required")
	}
	if err := validateCapabilities(req.GetVolumeCapabilities()); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if req.GetVolumeContentSource() != nil {
		return nil, status.Error(codes.InvalidArgument,
			"volume content sources (snapshots, clones) are not supported")
	}
	p, err := parseParams(req.GetParameters(), d.opts.DefaultGlusterVolume)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if err := parseMutableParams(req.GetMutableParameters(), &p.Limits); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	capacity, err := capacityFrom(req.GetCapacityRange())
	if err != nil {
		return nil, status.Error(codes.OutOfRange, err.Error())
	}
	glusterVol := p.GlusterVolume
	if p.Dedicated != nil {
		glusterVol = dedicatedVolumeName(req.GetName())
	}
	ref, err := newVolumeRef(glusterVol, req.GetName())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if err := d.lockVolume(ctx, ref.ID()); err != nil {
		return nil, err
	}
	defer d.locks.Release(ref.ID())
	if p.Dedicated != nil {
		if err := d.opts.GlusterCLI.createVolume(ctx, glusterVol, req.GetName(), p.Dedicated.Replica,
			p.Dedicated.bricks(glusterVol), p.Dedicated.Force); err != nil {
			return nil, status.Errorf(codes.Internal, "failed to create dedicated GlusterFS volume %s: %v",
				glusterVol, err)
		}
	}

	root, err := d.ensureGlusterMount(ctx, ref.GlusterVolume)
	if err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	dir := filepath.Join(root, ref.RelDir())
	resp := &csi.CreateVolumeResponse{Volume: &csi.Volume{
		VolumeId: ref.ID(), CapacityBytes: capacity,
		VolumeContext: map[string]string{ParamGlusterVolume: ref.GlusterVolume},
	}}
	if m, err := readMeta(dir); err == nil {
		if m.CapacityBytes != capacity || m.Limits != p.Limits {
			return nil, status.Errorf(codes.AlreadyExists,
				"volume %q already exists with capacity %d bytes and limits %+v", req.GetName(),
				m.CapacityBytes, m.Limits)
		}
		return resp, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, status.Error(codes.Internal, err.Error())
	}
	if err := os.MkdirAll(filepath.Join(dir, dataDir), 0o777); err != nil {
		return nil, status.Errorf(codes.Internal, "failed to create volume directory %q: %v", dir, err)
	}
	// mkdir honours the umask; pods of any UID share the volume (ReadWriteMany).
	if err := os.Chmod(filepath.Join(dir, dataDir), 0o777); err != nil {
		return nil, status.Errorf(codes.Internal, "failed to chmod %q: %v", dir, err)
	}
	if err := os.Chmod(dir, 0o711); err != nil {
		return nil, status.Errorf(codes.Internal, "failed to chmod %q: %v", dir, err)
	}
	if err := d.opts.GlusterCLI.setQuota(ctx, ref.GlusterVolume, ref.RelData(), capacity); err != nil {
		return nil, status.Errorf(codes.Internal, "failed to set quota on %q: %v", ref.RelData(), err)
	}
	// meta.json last: its presence means the volume is complete.
	m := &volumeMeta{Name: req.GetName(), CapacityBytes: capacity, OnDelete: p.OnDelete,
		Limits: p.Limits, Statistics: p.Statistics}
	if err := writeMeta(dir, m); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	d.metrics.provisioned.WithLabelValues(ref.GlusterVolume).Inc()
	klog.FromContext(ctx).Info("volume created", "volume", ref.ID(), "capacity", capacity,
		"limits", p.Limits)
	return resp, nil
}

func capacityFrom(r *csi.CapacityRange) (int64, error) {
	req, lim := r.GetRequiredBytes(), r.GetLimitBytes()
	if req < 0 || lim < 0 {
		return 0, fmt.Errorf("capacity must not be negative")
	}
	if lim > 0 && req > lim {
		return 0, fmt.Errorf("required bytes %d exceed limit bytes %d", req, lim)
	}
	c := req
	if c == 0 {
		c = defaultCapacity
		if lim > 0 && lim < c {
			c = lim
		}
	}
	if c < minCapacity {
		if lim > 0 && lim < minCapacity {
			return 0, fmt.Errorf("limit bytes %d is below the minimum volume size of %d bytes", lim,
				minCapacity)
		}
		c = minCapacity
	}
	return c, nil
}

func validateCapabilities(caps []*csi.VolumeCapability) error {
	if len(caps) == 0 {
		return errors.New("volume capabilities are required")
	}
	for _, c := range caps {
		if c.GetBlock() != nil {
			return errors.New(
				"block volumes are not supported: GlusterFS SharedStorage is a filesystem (use volumeMode: " +
					"Filesystem)")
		}
		if c.GetMount() == nil {
			return errors.New("access type mount is required")
		}
		if c.GetAccessMode() == nil ||
			c.GetAccessMode().GetMode() == csi.VolumeCapability_AccessMode_UNKNOWN {
			return errors.New("access mode is required")
		}
	}
	return nil
}

// lookupVolume mounts the GlusterFS volume of id and reads the PV's metadata. A malformed or
// unknown ID gives codes.NotFound.
func (d *Driver) lookupVolume(ctx context.Context, id string) (
	volumeRef, string, *volumeMeta, error) {
	ref, err := parseVolumeID(id)
	if err != nil {
		return ref, "", nil, status.Error(codes.NotFound, err.Error())
	}
	root, err := d.ensureGlusterMount(ctx, ref.GlusterVolume)
	if err != nil {
		return ref, "", nil, status.Error(codes.Unavailable, err.Error())
	}
	dir := filepath.Join(root, ref.RelDir())
	m, err := readMeta(dir)
	if errors.Is(err, os.ErrNotExist) {
		return ref, dir, nil, status.Errorf(codes.NotFound, "volume %q does not exist", id)
	} else if err != nil {
		return ref, dir, nil, status.Error(codes.Internal, err.Error())
	}
	return ref, dir, m, nil
}

// DeleteVolume removes (or archives, onDelete=archive) the PV directory and its quota.
// Unknown or malformed IDs succeed: the volume is gone either way.
func (d *Driver) DeleteVolume(ctx context.Context, req *csi.DeleteVolumeRequest) (
	*csi.DeleteVolumeResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, status.Error(codes.InvalidArgument, "volume ID is required")
	}
	if err := d.lockVolume(ctx, req.GetVolumeId()); err != nil {
		return nil, err
	}
	defer d.locks.Release(req.GetVolumeId())
	if ref, err := parseVolumeID(req.GetVolumeId()); err == nil && ref.Dedicated() {
		return d.deleteDedicated(ctx, ref)
	}
	ref, dir, m, err := d.lookupVolume(ctx, req.GetVolumeId())
	if _, serr := os.Lstat(dir); dir != "" && serr == nil { // something to remove or move
		if err := d.requireEveryBrick(ctx, ref.GlusterVolume); err != nil {
			return nil, err
		}
	}
	if status.Code(err) == codes.NotFound {
		if err := refuseUnlessEmpty(ref, dir); err != nil {
			return nil, err
		}
		if dir != "" { // half-created: no meta.json yet
			if err := d.removeVolumeDir(ctx, ref, dir); err != nil {
				return nil, status.Error(codes.Internal, err.Error())
			}
		}
		return &csi.DeleteVolumeResponse{}, nil
	} else if err != nil {
		return nil, err
	}
	if err := d.opts.GlusterCLI.removeQuota(ctx, ref.GlusterVolume, ref.RelData()); err != nil {
		return nil, status.Errorf(codes.Internal, "failed to remove quota of %q: %v", ref.RelData(), err)
	}
	if m.OnDelete == OnDeleteArchive {
		root := d.glusterMountPath(ref.GlusterVolume)
		dst := filepath.Join(root, archiveDir, ref.Name+"-"+strconv.FormatInt(time.Now().Unix(), 10))
		if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
			return nil, status.Errorf(codes.Internal, "failed to create archive dir: %v", err)
		}
		if err := os.Rename(dir, dst); err != nil {
			return nil, status.Errorf(codes.Internal, "failed to archive %q to %q: %v", dir, dst, err)
		}
		removeEmptyShard(dir)
		klog.FromContext(ctx).Info("volume archived", "volume", ref.ID(), "archive", dst)
		return &csi.DeleteVolumeResponse{}, nil
	}
	if err := d.removeVolumeDir(ctx, ref, dir); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	klog.FromContext(ctx).Info("volume deleted", "volume", ref.ID())
	return &csi.DeleteVolumeResponse{}, nil
}

// requireEveryBrick refuses (Unavailable, so the provisioner retries) to remove or move a PV
// directory unless this controller's GlusterFS client of vol is connected to every brick. The
// brick that misses the removal keeps its copy, and self-heal cannot take it away while quotas
// are on: GlusterFS 10 heals a removed directory by moving it aside, a rename its quota
// translator refuses when quotad cannot size a directory only the stale brick has
// (gluster/glusterfs#3921), so heal info would list the parent until the health loop's remedy
// for stuck heals (stuckheal.go), minutes later.
// The client's own view counts, not glusterd's: a brick back online is written to only once
// the client has reconnected to it.
func (d *Driver) requireEveryBrick(ctx context.Context, vol string) error {
	vs := VolumeStatus{Name: vol}
	var err error
	if vs.Bricks, err = brickConnections(d.glusterMountPath(vol)); err != nil {
		// no .meta (not a GlusterFS FUSE mount, an old client): ask glusterd
		if vs, err = d.opts.GlusterCLI.volumeStatus(ctx, vol); err != nil {
			return status.Errorf(codes.Unavailable, "cannot tell whether every brick of GlusterFS "+
				"volume %s is online, so the PV directory is kept for now: %v", vol, err)
		}
	}
	if !vs.Healthy() {
		return status.Errorf(codes.Unavailable, "GlusterFS volume %s has bricks offline (%s): the PV "+
			"directory is removed once every brick is back, so none keeps a copy self-heal cannot "+
			"remove", vol, strings.Join(vs.Offline(), ", "))
	}
	return nil
}

// deleteDedicated removes the PV's data, then stops and deletes its GlusterFS volume, or with
// onDelete=archive stops the volume and records the time (user.berth.archived).
func (d *Driver) deleteDedicated(ctx context.Context, ref volumeRef) (
	*csi.DeleteVolumeResponse, error) {
	cli := d.opts.GlusterCLI
	exists, archived, err := cli.volumeExists(ctx, ref.GlusterVolume)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "failed to look up GlusterFS volume %s: %v",
			ref.GlusterVolume, err)
	}
	if !exists || archived { // deleted, or archived by an earlier call
		return &csi.DeleteVolumeResponse{}, nil
	}
	archive, err := d.deletePolicyDedicated(ctx, ref)
	if err != nil {
		return nil, err
	}
	if err := d.releaseGlusterMount(ref.GlusterVolume); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	if archive {
		if err := cli.archiveVolume(ctx, ref.GlusterVolume, time.Now()); err != nil {
			return nil, status.Errorf(codes.Internal, "failed to archive GlusterFS volume %s: %v",
				ref.GlusterVolume, err)
		}
		klog.FromContext(ctx).Info("dedicated volume archived (stopped)", "volume", ref.ID(),
			"glusterVolume", ref.GlusterVolume)
		return &csi.DeleteVolumeResponse{}, nil
	}
	if err := cli.deleteVolume(ctx, ref.GlusterVolume); err != nil {
		return nil, status.Errorf(codes.Internal, "failed to delete GlusterFS volume %s: %v",
			ref.GlusterVolume, err)
	}
	klog.FromContext(ctx).Info("dedicated volume deleted", "volume", ref.ID(),
		"glusterVolume", ref.GlusterVolume)
	return &csi.DeleteVolumeResponse{}, nil
}

// deletePolicyDedicated reads the onDelete policy of a dedicated volume and, unless it says
// archive, removes the PV's data. A policy that cannot be read fails the call (the provisioner
// retries): falling back to delete would destroy what the owner asked to keep.
func (d *Driver) deletePolicyDedicated(ctx context.Context, ref volumeRef) (
	archive bool, err error) {
	_, dir, m, err := d.lookupVolume(ctx, ref.ID())
	switch {
	case err == nil:
		if m.OnDelete == OnDeleteArchive {
			return true, nil
		}
		if err := d.removeVolumeDir(ctx, ref, dir); err != nil {
			return false, status.Error(codes.Internal, err.Error())
		}
		// The volume goes away with its PV: so do reports of its dead clients, which would
		// otherwise stay in the bricks' directories.
		if err := os.RemoveAll(filepath.Join(d.glusterMountPath(ref.GlusterVolume),
			clientDeathsDir)); err != nil {
			return false, status.Error(codes.Internal, err.Error())
		}
		return false, nil
	case status.Code(err) == codes.NotFound: // half-created: no meta.json (yet)
		return false, refuseUnlessEmpty(ref, dir)
	case status.Code(err) == codes.Unavailable:
		vi, ierr := d.opts.GlusterCLI.volumeInfo(ctx, ref.GlusterVolume)
		if ierr == nil && vi.NeverStarted { // CreateVolume failed before the start: no data
			return false, nil
		}
		return false, status.Errorf(codes.Unavailable, "cannot read the onDelete policy of volume %q, "+
			"so it is neither deleted nor archived (retried): %v", ref.ID(), err)
	}
	return false, err
}

// refuseUnlessEmpty fails when the data directory of a PV without meta.json holds files: such a
// PV was complete once and lost its policy, and only a half-created PV may be removed unread.
func refuseUnlessEmpty(ref volumeRef, dir string) error {
	if dir == "" {
		return nil
	}
	f, err := os.Open(filepath.Join(dir, dataDir))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return status.Errorf(codes.Unavailable, "failed to read %q: %v", filepath.Join(dir, dataDir), err)
	}
	defer f.Close()
	names, err := f.Readdirnames(1)
	if len(names) == 0 && errors.Is(err, io.EOF) {
		return nil
	}
	return status.Errorf(codes.FailedPrecondition, "volume %q holds data but its %s is missing, "+
		"so its onDelete policy is unknown: refusing to delete it (restore %s, e.g. "+
		`{"name":%q,"capacityBytes":1073741824,"onDelete":"delete"}, or remove %s by hand)`,
		ref.ID(), metaFile, filepath.Join(dir, metaFile), ref.Name, dir)
}

func (d *Driver) removeVolumeDir(_ context.Context, ref volumeRef, dir string) error {
	base := filepath.Join(d.glusterMountPath(ref.GlusterVolume), volumesDir)
	if err := withinBase(base, dir); err != nil || dir == base {
		return fmt.Errorf("refusing to delete %q: %w", dir, err)
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("failed to delete volume directory %q: %w", dir, err)
	}
	removeEmptyShard(dir)
	return nil
}

// removeEmptyShard removes the shard directory of PV directory dir once its last PV is gone, so
// empty shards do not pile up under berth-volumes/. A shard still in use is left (ENOTEMPTY); a
// CreateVolume racing into the removed shard fails its mkdir and is retried.
func removeEmptyShard(dir string) {
	_ = os.Remove(filepath.Dir(dir))
}

// ControllerExpandVolume raises the gluster quota live; no node step is needed.
func (d *Driver) ControllerExpandVolume(ctx context.Context,
	req *csi.ControllerExpandVolumeRequest) (*csi.ControllerExpandVolumeResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, status.Error(codes.InvalidArgument, "volume ID is required")
	}
	if req.GetCapacityRange() == nil {
		return nil, status.Error(codes.InvalidArgument, "capacity range is required")
	}
	capacity, err := capacityFrom(req.GetCapacityRange())
	if err != nil {
		return nil, status.Error(codes.OutOfRange, err.Error())
	}
	if err := d.lockVolume(ctx, req.GetVolumeId()); err != nil {
		return nil, err
	}
	defer d.locks.Release(req.GetVolumeId())
	ref, dir, m, err := d.lookupVolume(ctx, req.GetVolumeId())
	if err != nil {
		return nil, err
	}
	if capacity > m.CapacityBytes {
		if err := d.opts.GlusterCLI.setQuota(ctx, ref.GlusterVolume, ref.RelData(),
			capacity); err != nil {
			return nil, status.Errorf(codes.Internal, "failed to raise quota of %q: %v", ref.RelData(), err)
		}
		m.CapacityBytes = capacity
		if err := writeMeta(dir, m); err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
		klog.FromContext(ctx).Info("volume expanded", "volume", ref.ID(), "capacity", capacity)
	}
	return &csi.ControllerExpandVolumeResponse{CapacityBytes: m.CapacityBytes,
		NodeExpansionRequired: false}, nil
}

// ControllerModifyVolume changes IO limits (VolumeAttributesClass); nodes pick them up live.
func (d *Driver) ControllerModifyVolume(ctx context.Context,
	req *csi.ControllerModifyVolumeRequest) (*csi.ControllerModifyVolumeResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, status.Error(codes.InvalidArgument, "volume ID is required")
	}
	var probe iolayer.Limits
	if err := parseMutableParams(req.GetMutableParameters(), &probe); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if err := d.lockVolume(ctx, req.GetVolumeId()); err != nil {
		return nil, err
	}
	defer d.locks.Release(req.GetVolumeId())
	_, dir, m, err := d.lookupVolume(ctx, req.GetVolumeId())
	if err != nil {
		return nil, err
	}
	if err := parseMutableParams(req.GetMutableParameters(), &m.Limits); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if err := writeMeta(dir, m); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	klog.FromContext(ctx).Info("volume IO limits modified", "volume", req.GetVolumeId(),
		"limits", m.Limits)
	return &csi.ControllerModifyVolumeResponse{}, nil
}

// ValidateVolumeCapabilities confirms mount volumes of every access mode (GlusterFS is RWX).
func (d *Driver) ValidateVolumeCapabilities(ctx context.Context,
	req *csi.ValidateVolumeCapabilitiesRequest) (*csi.ValidateVolumeCapabilitiesResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, status.Error(codes.InvalidArgument, "volume ID is required")
	}
	if len(req.GetVolumeCapabilities()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "volume capabilities are required")
	}
	if _, _, _, err := d.lookupVolume(ctx, req.GetVolumeId()); err != nil {
		return nil, err
	}
	if err := validateCapabilities(req.GetVolumeCapabilities()); err != nil {
		return &csi.ValidateVolumeCapabilitiesResponse{Message: err.Error()}, nil
	}
	return &csi.ValidateVolumeCapabilitiesResponse{
		Confirmed: &csi.ValidateVolumeCapabilitiesResponse_Confirmed{
			VolumeContext: req.GetVolumeContext(), VolumeCapabilities: req.GetVolumeCapabilities(),
			Parameters: req.GetParameters(), MutableParameters: req.GetMutableParameters(),
		}}, nil
}

// GetCapacity reports the free space of the GlusterFS volume a StorageClass uses.
func (d *Driver) GetCapacity(ctx context.Context, req *csi.GetCapacityRequest) (
	*csi.GetCapacityResponse, error) {
	p, err := parseParams(req.GetParameters(), d.opts.DefaultGlusterVolume)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if p.Dedicated != nil {
		return nil, status.Errorf(codes.InvalidArgument,
			"%s: %s has no capacity to report before a volume exists: its bricks are made per PV on %s",
			ParamIsolation, IsolationDedicated, strings.Join(p.Dedicated.Hosts, ", "))
	}
	root, err := d.ensureGlusterMount(ctx, p.GlusterVolume)
	if err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	st, err := checkMount(root)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &csi.GetCapacityResponse{AvailableCapacity: int64(st.Bavail) * st.Bsize}, nil
}

// ControllerGetCapabilities lists what the controller implements.
func (d *Driver) ControllerGetCapabilities(context.Context, *csi.ControllerGetCapabilitiesRequest) (
	*csi.ControllerGetCapabilitiesResponse, error) {
	var caps []*csi.ControllerServiceCapability
	for _, c := range []csi.ControllerServiceCapability_RPC_Type{
		csi.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME,
		csi.ControllerServiceCapability_RPC_EXPAND_VOLUME,
		csi.ControllerServiceCapability_RPC_GET_CAPACITY,
		csi.ControllerServiceCapability_RPC_MODIFY_VOLUME,
		csi.ControllerServiceCapability_RPC_SINGLE_NODE_MULTI_WRITER,
		csi.ControllerServiceCapability_RPC_GET_VOLUME_HEALTH,
	} {
		caps = append(caps, &csi.ControllerServiceCapability{Type: &csi.ControllerServiceCapability_Rpc{
			Rpc: &csi.ControllerServiceCapability_RPC{Type: c},
		}})
	}
	return &csi.ControllerGetCapabilitiesResponse{Capabilities: caps}, nil
}

// ControllerGetVolumeHealth reports DEGRADED while a brick of the volume's GlusterFS volume
// is offline (replicas keep serving), while a node's self-heal or quota daemon is down, while
// heals are pending (with the count) and for split-brain entries, and INACCESSIBLE when
// glusterd cannot be asked.
func (d *Driver) ControllerGetVolumeHealth(ctx context.Context,
	req *csi.ControllerGetVolumeHealthRequest) (*csi.ControllerGetVolumeHealthResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, status.Error(codes.InvalidArgument, "volume ID is required")
	}
	ref, _, _, err := d.lookupVolume(ctx, req.GetVolumeId())
	if err != nil {
		return nil, err
	}
	health := &csi.VolumeHealth{VolumeId: req.GetVolumeId(),
		HealthStatuses: d.readHealth(ctx, ref.GlusterVolume).healthEntries(ref.GlusterVolume)}
	return &csi.ControllerGetVolumeHealthResponse{VolumeHealth: health}, nil
}
