package csi

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	csi "github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/kubernetes-csi/csi-lib-utils/protosanitizer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"

	"github.com/berth-dev/berth/internal/unixsock"
	"github.com/berth-dev/berth/pkg/csi/iolayer"
	"github.com/berth-dev/berth/pkg/csi/mountcgroup"
)

// Name is the CSI driver name, used for registration, the CSIDriver object and logs.
const Name = "sharedfs.csi.berth.dev"

// Options configure a Driver. Zero values get the defaults listed per field.
type Options struct {
	// NodeID is this node's name (required for the node service).
	NodeID string
	// Endpoint is the CSI socket, unix:///path or a plain path.
	Endpoint string
	// StateDir holds the per-node GlusterFS mounts and logs. Default /var/lib/berth/csi-sharedfs.
	StateDir string
	// GlusterServer is the volfile server the FUSE client fetches the volume layout from.
	GlusterServer string
	// DefaultGlusterVolume is used when a StorageClass names none.
	DefaultGlusterVolume string
	// GlusterCLI runs quota and status commands (controller only).
	GlusterCLI *GlusterCLI
	// GlusterfsBinary is the FUSE client. Default "glusterfs".
	GlusterfsBinary string
	// Controller and Node select which services run.
	Controller, Node bool
	// LayerBinary is the csi-sharedfs binary that serves IO-limited layers (`iolayer`).
	// Default: this process's executable.
	LayerBinary string
	// MountCgroupRoot is the host's cgroupfs as this process sees it (e.g. /host/sys/fs/cgroup).
	// When set, the FUSE daemons of the node's mounts move into MountCgroup there, out of
	// the plugin container's cgroup, so they outlive a restart of the plugin. Empty: they stay
	// in the plugin's cgroup.
	MountCgroupRoot string
	// MountCgroup is the cgroup below each hierarchy's root. Default mountcgroup.DefaultName.
	MountCgroup string
	// Metrics receives the driver's metrics; nil means a private registry.
	Metrics *Metrics
}

// Driver serves the CSI Identity, Controller and Node services.
type Driver struct {
	csi.UnimplementedIdentityServer
	csi.UnimplementedControllerServer
	csi.UnimplementedNodeServer

	opts    Options
	mounter Mounter
	locks   *volumeLocks
	metrics *Metrics

	cgroup *mountcgroup.Cgroup // nil: the mounts' daemons stay in this process's cgroup

	mu      sync.Mutex
	mounts  map[string]*sync.Mutex   // per GlusterFS volume: serializes mounting it once per node
	limited map[string]*iolayer.Proc // by target path
	// statsRequests carry a metrics scrape's request for the layers' counters (layers.go).
	statsRequests chan chan []iolayer.Stats
	ready         bool
	serving       chan struct{} // closed once the CSI socket answers
}

var (
	_ csi.IdentityServer   = &Driver{}
	_ csi.ControllerServer = &Driver{}
	_ csi.NodeServer       = &Driver{}
)

// NewDriver validates opts and returns a driver.
func NewDriver(opts Options) (*Driver, error) {
	if opts.StateDir == "" {
		opts.StateDir = "/var/lib/berth/csi-sharedfs"
	}
	if opts.GlusterfsBinary == "" {
		opts.GlusterfsBinary = "glusterfs"
	}
	if opts.LayerBinary == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("failed to find this binary for the IO-limited layer: %w", err)
		}
		opts.LayerBinary = exe
	}
	if err := opts.validate(); err != nil {
		return nil, err
	}
	if opts.Controller && opts.GlusterCLI == nil {
		return nil, errors.New("the controller needs a gluster CLI for quotas")
	}
	if opts.MountCgroup == "" {
		opts.MountCgroup = mountcgroup.DefaultName
	}
	cgroup, err := mountcgroup.New(opts.MountCgroupRoot, opts.MountCgroup)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(opts.StateDir, 0o750); err != nil {
		return nil, fmt.Errorf("failed to create state dir %q: %w", opts.StateDir, err)
	}
	d := &Driver{
		opts: opts, locks: newVolumeLocks(), metrics: opts.Metrics,
		mounter: &realMounter{glusterfsBinary: opts.GlusterfsBinary, cgroup: cgroup},
		mounts:  map[string]*sync.Mutex{}, limited: map[string]*iolayer.Proc{}, cgroup: cgroup,
		statsRequests: make(chan chan []iolayer.Stats),
		serving:       make(chan struct{}),
	}
	if d.metrics == nil {
		d.metrics = NewMetrics(nil)
	}
	d.metrics.layers = d.scrapeLayerStats
	return d, nil
}

// validate checks the options a caller sets; NewDriver fills in the defaults of the others.
func (opts *Options) validate() error {
	if !opts.Controller && !opts.Node {
		return errors.New("neither controller nor node service enabled: " +
			"pass --controller and/or --node")
	}
	if opts.Node && opts.NodeID == "" {
		return errors.New("node ID is required for the node service: " +
			"pass --node-id (usually spec.nodeName)")
	}
	if opts.GlusterServer == "" {
		return errors.New("GlusterFS server is required: " +
			"pass --gluster-server (a host running glusterd)")
	}
	if opts.DefaultGlusterVolume != "" && !glusterVolRe.MatchString(opts.DefaultGlusterVolume) {
		return fmt.Errorf("invalid default GlusterFS volume %q", opts.DefaultGlusterVolume)
	}
	if opts.MountCgroup != "" {
		if _, err := mountcgroup.New("", opts.MountCgroup); err != nil {
			return err
		}
	}
	return nil
}

// Run serves CSI on the endpoint until ctx ends.
func (d *Driver) Run(ctx context.Context) error {
	path := strings.TrimPrefix(d.opts.Endpoint, "unix://")
	if path == "" {
		return errors.New("CSI endpoint is required (unix:///path/csi.sock)")
	}
	l, err := unixsock.Listen(path, 0o750, 0)
	if err != nil {
		return err
	}
	srv := grpc.NewServer(grpc.UnaryInterceptor(logGRPC))
	csi.RegisterIdentityServer(srv, d)
	if d.opts.Controller {
		csi.RegisterControllerServer(srv, d)
	}
	if d.opts.Node {
		csi.RegisterNodeServer(srv, d)
		if d.cgroup != nil {
			if _, err := d.cgroup.Dirs(); err != nil {
				return fmt.Errorf("mount cgroup: %w", err)
			}
		}
		if d.cgroup == nil {
			klog.FromContext(ctx).Info(
				"no --mount-cgroup-root: GlusterFS clients and IO-limited layers stay in this process's " +
					"cgroup and die with its container")
		} else if os.Getpid() == 1 {
			klog.FromContext(ctx).Info(
				"running as PID 1 of a PID namespace: the mounts' FUSE daemons die with it; run the node " +
					"plugin with hostPID: true")
		}
		// Mounts of an earlier run of this plugin: live GlusterFS clients and IO-limited
		// layers are adopted; dead ones are mounted again, staging binds first, then targets.
		d.repairAll(ctx)
		go d.watchMounts(ctx)
		go d.serveLayerStats(ctx)
	}
	d.mu.Lock()
	d.ready = true
	d.mu.Unlock()
	close(d.serving) // Serve starts below; connections queued until then are accepted
	go func() {
		<-ctx.Done()
		srv.GracefulStop()
	}()
	klog.FromContext(ctx).Info("serving CSI", "driver", Name, "endpoint", path,
		"controller", d.opts.Controller, "node", d.opts.Node)
	if err := srv.Serve(l); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("CSI server on %q: %w", path, err)
	}
	// The mounts' daemons keep serving the pods: a later run of this plugin adopts them.
	return nil
}

// Serving is closed once the CSI socket is served (after the node's mounts were repaired):
// the kubelet registration starts then, since the kubelet calls the socket as it registers
// and does not try again by itself when that call fails.
func (d *Driver) Serving() <-chan struct{} { return d.serving }

// Ready reports whether the CSI socket is being served.
func (d *Driver) Ready(context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.ready {
		return errors.New("CSI server not started yet")
	}
	return nil
}

func logGRPC(ctx context.Context, req any, info *grpc.UnaryServerInfo,
	handler grpc.UnaryHandler) (any, error) {
	logger := klog.FromContext(ctx).WithValues("method", info.FullMethod)
	logger.V(4).Info("GRPC call", "request", protosanitizer.StripSecrets(req))
	resp, err := handler(klog.NewContext(ctx, logger), req)
	if err != nil {
		logger.Error(err, "GRPC failed")
	} else {
		logger.V(5).Info("GRPC response", "response", protosanitizer.StripSecrets(resp))
	}
	return resp, err
}

// volumeLocks guards each volume ID against concurrent operations.
type volumeLocks struct {
	mu  sync.Mutex
	ids map[string]chan struct{} // closed on release
}

func newVolumeLocks() *volumeLocks { return &volumeLocks{ids: map[string]chan struct{}{}} }

// TryAcquire takes the lock of id if it is free (the repair pass: a busy volume waits for
// the next pass).
func (l *volumeLocks) TryAcquire(id string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, busy := l.ids[id]; busy {
		return false
	}
	l.ids[id] = make(chan struct{})
	return true
}

// Acquire waits until the lock of id is free or ctx ends.
func (l *volumeLocks) Acquire(ctx context.Context, id string) bool {
	for {
		l.mu.Lock()
		held, busy := l.ids[id]
		if !busy {
			l.ids[id] = make(chan struct{})
			l.mu.Unlock()
			return true
		}
		l.mu.Unlock()
		select {
		case <-held:
		case <-ctx.Done():
			return false
		}
	}
}

func (l *volumeLocks) Release(id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if held, ok := l.ids[id]; ok {
		close(held)
		delete(l.ids, id)
	}
}

// lockWait bounds how long a CSI call waits for another operation on its volume (the node's
// repair pass, a remount) before it answers Aborted.
const lockWait = 30 * time.Second

// lockVolume takes the lock of volume id for one CSI call. A sequential caller (the kubelet)
// must not see Aborted because the repair pass holds the volume for a moment: the call waits,
// bounded by lockWait and its own deadline.
func (d *Driver) lockVolume(ctx context.Context, id string) error {
	wctx, cancel := context.WithTimeout(ctx, lockWait)
	defer cancel()
	if !d.locks.Acquire(wctx, id) {
		return status.Errorf(codes.Aborted, "an operation on volume %q is still in progress after %s", id,
			lockWait)
	}
	return nil
}

// glusterMountPath is where this process mounts GlusterFS volume vol, once.
func (d *Driver) glusterMountPath(vol string) string {
	return filepath.Join(d.opts.StateDir, "mounts", vol)
}

// ensureGlusterMount mounts vol once per node (and per controller) and remounts it when its
// FUSE daemon died ("transport endpoint is not connected").
func (d *Driver) ensureGlusterMount(ctx context.Context, vol string) (string, error) {
	d.mu.Lock()
	m, ok := d.mounts[vol]
	if !ok {
		m = &sync.Mutex{}
		d.mounts[vol] = m
	}
	d.mu.Unlock()
	m.Lock()
	defer m.Unlock()
	target := d.glusterMountPath(vol)
	// Before anything touches the mount: on an orphaned connection it would block for ever.
	if aborted, err := abortOrphanedFUSE(target); err != nil {
		klog.FromContext(ctx).Error(err, "Failed to check the GlusterFS client of a mount", "volume", vol,
			"path", target)
	} else if aborted {
		klog.FromContext(ctx).Info("GlusterFS client is gone but its FUSE connection was still open: "+
			"aborted it", "volume", vol, "path", target)
	}
	mp, err := d.mounter.IsMountPoint(target)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	died := false
	if mp {
		_, err := checkMount(target)
		if err == nil {
			return target, nil
		}
		if !isDeadMount(err) {
			return "", fmt.Errorf("GlusterFS mount %q is unusable: %w", target, err)
		}
		klog.FromContext(ctx).Info("GlusterFS mount is dead, remounting", "volume", vol, "path", target,
			"err", err)
		d.metrics.remounts.WithLabelValues(vol).Inc()
		if err := d.mounter.Unmount(target); err != nil {
			return "", fmt.Errorf("failed to unmount dead GlusterFS mount %q: %w", target, err)
		}
		died = true
	}
	logFile := filepath.Join(d.opts.StateDir, "logs", vol+".log")
	if err := os.MkdirAll(filepath.Dir(logFile), 0o750); err != nil {
		return "", fmt.Errorf("failed to create log dir: %w", err)
	}
	if err := d.mounter.MountGluster(ctx, d.opts.GlusterServer, vol, target, logFile); err != nil {
		return "", err
	}
	if died {
		d.reportClientDeath(ctx, vol, target)
	}
	return target, nil
}

// releaseGlusterMount unmounts this process's mount of vol (a dedicated volume going away),
// so no dead FUSE mount is left behind once glusterd stops it.
func (d *Driver) releaseGlusterMount(vol string) error {
	d.mu.Lock()
	m, ok := d.mounts[vol]
	if !ok {
		m = &sync.Mutex{}
	}
	d.mu.Unlock()
	m.Lock()
	defer m.Unlock()
	target := d.glusterMountPath(vol)
	if mp, _ := d.mounter.IsMountPoint(target); mp {
		if err := d.mounter.Unmount(target); err != nil {
			return fmt.Errorf("failed to unmount GlusterFS volume %s at %q: %w", vol, target, err)
		}
	}
	if err := os.Remove(target); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("failed to remove mount point %q: %w", target, err)
	}
	d.mu.Lock()
	delete(d.mounts, vol)
	d.mu.Unlock()
	return nil
}
