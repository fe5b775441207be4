package iolayer

import (
	"context"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/time/rate"
)

// maxIOSize is the largest single FUSE read/write; token buckets must hold at least that much.
const maxIOSize = 1 << 20

// Limits are per-volume IO limits; zero means unlimited. Enforced on every node that
// publishes the volume, separately per node.
type Limits struct {
	ReadBytesPerSecond  int64 `json:"readBytesPerSecond,omitempty"`
	WriteBytesPerSecond int64 `json:"writeBytesPerSecond,omitempty"`
	ReadIOPS            int64 `json:"readIOPS,omitempty"`
	WriteIOPS           int64 `json:"writeIOPS,omitempty"`
}

// Limited reports whether any limit is set.
func (l Limits) Limited() bool {
	return l.ReadBytesPerSecond > 0 || l.WriteBytesPerSecond > 0 || l.ReadIOPS > 0 ||
		l.WriteIOPS > 0
}

// String formats limits for logs: "unlimited" or "read 20.0MiB/s 0 IOPS, write ...".
func (l Limits) String() string {
	if !l.Limited() {
		return "unlimited"
	}
	mib := func(v int64) string { return fmt.Sprintf("%.1fMiB/s", float64(v)/math.Pow(2, 20)) }
	return fmt.Sprintf("read %s %d IOPS, write %s %d IOPS",
		mib(l.ReadBytesPerSecond), l.ReadIOPS, mib(l.WriteBytesPerSecond), l.WriteIOPS)
}

// ioLimiter holds the token buckets and counters of one published volume.
type ioLimiter struct {
	readBytes, writeBytes, readOps, writeOps *rate.Limiter
	counters                                 ioCounters
	mu                                       sync.Mutex
	limits                                   Limits
	applied                                  bool
}

// ioCounters count the IO that passed the layer since it started.
type ioCounters struct {
	readBytes, writeBytes, readOps, writeOps atomic.Uint64
	readThrottledNs, writeThrottledNs        atomic.Int64
}

func newIOLimiter(l Limits) *ioLimiter {
	il := &ioLimiter{
		readBytes: rate.NewLimiter(rate.Inf, 0), writeBytes: rate.NewLimiter(rate.Inf, 0),
		readOps: rate.NewLimiter(rate.Inf, 0), writeOps: rate.NewLimiter(rate.Inf, 0)}
	il.set(l)
	return il
}

// set applies new limits live. Buckets start empty so a fresh limit is not exceeded by a
// full-bucket burst. Burst is half a second of rate (at least one maximal request): a writer
// stalled by CPU contention catches up, and an idle volume may exceed its limit by at most
// half a second's worth of IO.
func (il *ioLimiter) set(l Limits) {
	il.mu.Lock()
	defer il.mu.Unlock()
	if il.applied && il.limits == l {
		return
	}
	il.limits, il.applied = l, true
	now := time.Now()
	apply := func(lim *rate.Limiter, perSec int64, minBurst int) {
		if perSec <= 0 {
			lim.SetLimitAt(now, rate.Inf)
			return
		}
		burst := max(int(perSec/2), minBurst)
		lim.SetLimitAt(now, rate.Limit(perSec))
		lim.SetBurstAt(now, burst)
		lim.AllowN(now, int(lim.TokensAt(now))) // drain: start empty
	}
	apply(il.readBytes, l.ReadBytesPerSecond, maxIOSize)
	apply(il.writeBytes, l.WriteBytesPerSecond, maxIOSize)
	apply(il.readOps, l.ReadIOPS, 1)
	apply(il.writeOps, l.WriteIOPS, 1)
}

// wait blocks until n bytes and one op may pass; it counts the time spent throttled.
//
// A FUSE interrupt cancels ctx whenever the calling thread gets any signal (Go's preemption
// SIGURG, a JVM's signals), and an EINTR from a read or write of a regular file breaks
// applications that, rightly, do not expect one. So the wait ignores cancellation: it is
// bounded by the limit (the time the request's bytes take at the volume's rate).
func (il *ioLimiter) wait(ctx context.Context, bytes, ops *rate.Limiter, n int,
	throttled *atomic.Int64) syscall.Errno {
	ctx = context.WithoutCancel(ctx)
	start := time.Now()
	if err := ops.WaitN(ctx, 1); err != nil {
		return syscall.EINTR
	}
	if n > 0 && bytes.Limit() != rate.Inf {
		if err := bytes.WaitN(ctx, min(n, bytes.Burst())); err != nil {
			return syscall.EINTR
		}
	}
	if d := time.Since(start); d > time.Millisecond {
		throttled.Add(int64(d))
	}
	return 0
}

// limitedFile is a loopback file whose reads and writes pass the volume's token buckets.
// Kernel passthrough is off: with it the kernel would serve IO without asking this process.
type limitedFile struct {
	*fs.LoopbackFile
	lim *ioLimiter
}

var (
	_ fs.FileReader          = &limitedFile{}
	_ fs.FileWriter          = &limitedFile{}
	_ fs.FilePassthroughFder = &limitedFile{}
)

// PassthroughFd refuses passthrough so every read and write reaches Read/Write below.
func (f *limitedFile) PassthroughFd() (int, bool) { return 0, false }

func (f *limitedFile) Read(ctx context.Context, buf []byte, off int64) (
	fuse.ReadResult, syscall.Errno) {
	c := &f.lim.counters
	if errno := f.lim.wait(ctx, f.lim.readBytes, f.lim.readOps, len(buf),
		&c.readThrottledNs); errno != 0 {
		return nil, errno
	}
	fd, ok := f.LoopbackFile.PassthroughFd() // the fd stays open until Release
	if !ok {
		return nil, syscall.EBADF
	}
	n, err := syscall.Pread(fd, buf, off)
	if err != nil {
		return nil, fs.ToErrno(err)
	}
	c.readBytes.Add(uint64(n))
	c.readOps.Add(1)
	return fuse.ReadResultData(buf[:n]), 0
}

func (f *limitedFile) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	c := &f.lim.counters
	if errno := f.lim.wait(ctx, f.lim.writeBytes, f.lim.writeOps, len(data),
		&c.writeThrottledNs); errno != 0 {
		return 0, errno
	}
	n, errno := f.LoopbackFile.Write(ctx, data, off)
	if errno != 0 {
		n = 0 // a failed pwrite's -1, as uint32: it counted 4 GiB per refused write (EDQUOT)
	}
	c.writeBytes.Add(uint64(n))
	c.writeOps.Add(1)
	return n, errno
}

// limitedNode is a loopback node whose open files are limitedFiles and whose path
// operations stay inside the volume (confine.go).
type limitedNode struct {
	fs.LoopbackNode
	lim   *ioLimiter
	croot *confinedRoot
}

var (
	_ fs.NodeOpener  = &limitedNode{}
	_ fs.NodeCreater = &limitedNode{}
)

func (n *limitedNode) wrap(fh fs.FileHandle) fs.FileHandle {
	if lf, ok := fh.(*fs.LoopbackFile); ok {
		return &limitedFile{LoopbackFile: lf, lim: n.lim}
	}
	return fh
}

func (n *limitedNode) Open(ctx context.Context, flags uint32) (
	fs.FileHandle, uint32, syscall.Errno) {
	fh, fl, errno := n.LoopbackNode.Open(ctx, flags) // drops O_APPEND, see appendFlags
	if errno != 0 {
		return nil, 0, errno
	}
	if flags&syscall.O_APPEND != 0 {
		lf, ok := fh.(*fs.LoopbackFile)
		if !ok {
			return nil, 0, syscall.EIO
		}
		fd, ok := lf.PassthroughFd()
		if !ok {
			return nil, 0, syscall.EBADF
		}
		if err := setAppend(fd); err != nil {
			_ = lf.Release(ctx)
			return nil, 0, fs.ToErrno(err)
		}
	}
	return n.wrap(fh), fl | appendFlags(flags), 0
}

// appendFlags is what an open of this layer answers for flags. Pods on one node that share a
// volume each have a layer, and the kernel of each computes an append's offset from the file
// size it has cached (up to AttrTimeout old, and never refreshed for a file held open). A write
// at that offset overwrites what another pod appended since. So the descriptor below keeps
// O_APPEND, and pwrite on it appends at the end the volume has; direct IO keeps such a write
// out of this layer's page cache, where it would sit at the stale offset. (go-fuse's loopback
// drops O_APPEND because a single mount's kernel knows the size; here it does not.)
func appendFlags(flags uint32) uint32 {
	if flags&syscall.O_APPEND != 0 {
		return fuse.FOPEN_DIRECT_IO
	}
	return 0
}

// setAppend turns O_APPEND on for an open descriptor.
func setAppend(fd int) error {
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		return fmt.Errorf("F_GETFL: %w", err)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFL, fl|unix.O_APPEND); err != nil {
		return fmt.Errorf("F_SETFL O_APPEND: %w", err)
	}
	return nil
}

// limitedMount is one volume published through the limiting FUSE layer (in the process of
// `csi-sharedfs iolayer`, layer.go).
type limitedMount struct {
	source string
	target string
	server *fuse.Server
	lim    *ioLimiter
	croot  *confinedRoot
}

// mountLimited serves source at target through a user-space FUSE layer that enforces l.
func mountLimited(source, target string, readOnly bool, l Limits) (*limitedMount, error) {
	croot, err := openConfinedRoot(source)
	if err != nil {
		return nil, err
	}
	lim := newIOLimiter(l)
	// Path is only used by the loopback's Open (symlink-safe); every other path operation
	// and every child node is made by limitedNode itself.
	root := &fs.LoopbackRoot{Path: source, Dev: croot.dev}
	rootNode := &limitedNode{LoopbackNode: fs.LoopbackNode{RootData: root}, lim: lim, croot: croot}
	root.RootNode = rootNode
	opts := []string{"default_permissions"} // the kernel checks modes; this daemon runs as root
	if readOnly {
		opts = append(opts, "ro")
	}
	sec := time.Second
	server, err := fs.Mount(target, rootNode, &fs.Options{
		EntryTimeout: &sec, AttrTimeout: &sec,
		MountOptions: fuse.MountOptions{
			DirectMount: true, AllowOther: true, MaxWrite: maxIOSize, MaxReadAhead: maxIOSize,
			// Locks go down to GlusterFS: without it they were local to this layer's mount, and
			// two pods (each with its own layer) could hold the same exclusive lock.
			EnableLocks: true,
			FsName:      "berth-csi", Name: "berth", Options: opts, DisableXAttrs: false,
		},
	})
	if err != nil {
		croot.close()
		return nil, fmt.Errorf("failed to mount IO-limited layer of %q at %q: %w", source, target, err)
	}
	return &limitedMount{source: source, target: target, server: server, lim: lim, croot: croot}, nil
}

// sourceAlive reports whether the directory the layer serves still answers. The layer holds a
// descriptor of it: when the staging bind under it died (its GlusterFS client gone), binding
// staging again does not revive the layer; it has to be served again.
func (lm *limitedMount) sourceAlive() bool {
	if lm.croot == nil {
		return true
	}
	var st unix.Stat_t
	return unix.Fstat(lm.croot.fd, &st) == nil
}

// unmount stops the FUSE server; a lazy detach follows if the target is busy.
func (lm *limitedMount) unmount() error {
	if err := lm.server.Unmount(); err != nil {
		if derr := syscall.Unmount(lm.target, syscall.MNT_DETACH); derr != nil {
			return fmt.Errorf("failed to unmount IO-limited layer at %q: %w", lm.target, err)
		}
	}
	return nil
}
