package csi

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/pkg/csi/mountcgroup"
)

// Mounter does the node's mount work. The implementation is realMounter; Driver holds it
// in a field, so an in-package test of a fault that cannot be caused for real may wrap it.
type Mounter interface {
	// MountGluster FUSE-mounts GlusterFS volume vol from server at target.
	MountGluster(ctx context.Context, server, vol, target, logFile string) error
	// Bind bind-mounts source at target, read-only if ro.
	Bind(source, target string, ro bool) error
	// Unmount unmounts target; a target that is not mounted is not an error.
	Unmount(target string) error
	// IsMountPoint reports whether target is a mount point.
	IsMountPoint(target string) (bool, error)
}

type realMounter struct {
	glusterfsBinary string
	cgroup          *mountcgroup.Cgroup // nil: the client stays in this process's cgroup
}

var _ Mounter = &realMounter{}

// MountGluster starts the glusterfs FUSE client directly (no mount.glusterfs shell helper,
// so the image needs only the client binary and its libraries) and waits for the mount.
func (m *realMounter) MountGluster(ctx context.Context, server, vol, target, logFile string) error {
	if err := os.MkdirAll(target, 0o750); err != nil {
		return fmt.Errorf("failed to create mount point %q: %w", target, err)
	}
	pidFile := clientPIDFile(target)
	_ = os.Remove(pidFile) // an earlier client's
	args := []string{"--volfile-server=" + server, "--volfile-id=" + vol, "--process-name=fuse",
		"--pid-file=" + pidFile}
	if logFile != "" {
		args = append(args, "--log-file="+logFile)
	}
	out, err := exec.CommandContext(ctx, m.glusterfsBinary, append(args, target)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("glusterfs mount of %s:/%s at %q failed: %w: %s", server, vol, target, err,
			bytes.TrimSpace(out))
	}
	// glusterfs daemonizes once the FUSE mount exists; wait until it answers.
	deadline := time.Now().Add(15 * time.Second)
	for {
		var st unix.Statfs_t
		mp, _ := m.IsMountPoint(target)
		if mp && unix.Statfs(target, &st) == nil {
			if err := m.adoptClient(pidFile); err != nil {
				_ = m.Unmount(target)
				return fmt.Errorf("glusterfs mount of %s:/%s at %q: %w", server, vol, target, err)
			}
			return nil
		}
		if time.Now().After(deadline) {
			_ = m.Unmount(target) // rollback of a half-made mount
			return fmt.Errorf("glusterfs mount of %s:/%s at %q did not come up within 15s (log %s)", server,
				vol, target, logFile)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// adoptClient moves the daemonised client into the mount cgroup so it outlives this plugin.
func (m *realMounter) adoptClient(pidFile string) error {
	if m.cgroup == nil {
		return nil
	}
	var pid int
	for i := 0; i < 100; i++ { // the daemon writes its pid file right after forking
		b, err := os.ReadFile(pidFile)
		if err == nil {
			if pid, err = strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 0 {
				break
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	if pid <= 0 {
		return fmt.Errorf("no pid in the client's pid file %q", pidFile)
	}
	return m.cgroup.Adopt(pid)
}

func (m *realMounter) Bind(source, target string, ro bool) error {
	if err := unix.Mount(source, target, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("failed to bind-mount %q at %q: %w", source, target, err)
	}
	if ro {
		if err := unix.Mount("", target, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY,
			""); err != nil {
			_ = unix.Unmount(target, 0) // rollback
			return fmt.Errorf("failed to make %q read-only: %w", target, err)
		}
	}
	return nil
}

func (m *realMounter) Unmount(target string) error {
	mp, err := m.IsMountPoint(target)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if !mp {
		return nil
	}
	if err := unix.Unmount(target, 0); err != nil {
		if errors.Is(err, unix.EBUSY) || isDeadMount(err) {
			// A dead FUSE mount or a busy bind: detach so the path is usable again.
			return unix.Unmount(target, unix.MNT_DETACH)
		}
		return fmt.Errorf("failed to unmount %q: %w", target, err)
	}
	return nil
}

// clientPIDFile is where the GlusterFS client of the mount at target writes its PID.
func clientPIDFile(target string) string {
	return filepath.Join(filepath.Dir(target), "."+filepath.Base(target)+".pid")
}

// fuseConnections is where the kernel's fusectl file system lists the FUSE connections, one
// directory per connection named by the minor device number of its mounts.
var fuseConnections = "/sys/fs/fuse/connections"

// abortOrphanedFUSE aborts the FUSE connection of the GlusterFS mount at target when the
// client that served it (the PID in its pid file) is gone while the kernel still holds the
// connection open. A client SIGKILLed in the middle of writes can end that way: a thread of
// the dying client waits for a page lock that a writer holds while the writer waits for the
// client's answer (seen once in 38 kills of TestClientKillReplicasConverge, GlusterFS 10.3,
// Linux 6.1). Every access to the mount then blocks for ever, a statfs included, so the repair
// pass could never find it dead. After the abort each access fails with "transport endpoint is
// not connected", as after an ordinary crash, and the mount is repaired the usual way. It
// reports whether it aborted; a mount without a pid file (made by something else) is left alone.
func abortOrphanedFUSE(target string) (bool, error) {
	minor, ok, err := fuseMinor(target)
	if err != nil || !ok {
		return false, err
	}
	b, err := os.ReadFile(clientPIDFile(target))
	if err != nil {
		return false, nil // no pid file: not a client we started, nothing to judge
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 || clientServes(pid, target) {
		return false, nil // an unreadable pid file proves nothing either
	}
	// Usually the kernel ended the connection with the client and the mount already fails
	// fast: then there is nothing to abort.
	if !statfsBlocks(target, orphanProbe) {
		return false, nil
	}
	conn := filepath.Join(fuseConnections, strconv.Itoa(minor))
	if _, err := os.Stat(conn); errors.Is(err, os.ErrNotExist) {
		// Not mounted in this mount namespace yet (a container's /sys): mount it.
		if err := unix.Mount("fusectl", fuseConnections, "fusectl", 0, ""); err != nil &&
			!errors.Is(err, unix.EBUSY) {
			return false, fmt.Errorf("failed to mount fusectl at %s: %w", fuseConnections, err)
		}
	}
	if err := os.WriteFile(filepath.Join(conn, "abort"), []byte("1"), 0); err != nil {
		return false, fmt.Errorf("failed to abort FUSE connection %d of %q: %w", minor, target, err)
	}
	return true, nil
}

// orphanProbe is how long a statfs on a mount whose client is gone may take before the
// connection counts as orphaned: a dead client's mount fails at once.
const orphanProbe = 2 * time.Second

// statfsBlocks reports whether a statfs of target is still unanswered after wait. The probe
// returns once the connection is aborted.
func statfsBlocks(target string, wait time.Duration) bool {
	done := make(chan struct{})
	go func() {
		var st unix.Statfs_t
		_ = unix.Statfs(target, &st) // only whether it returns matters
		close(done)
	}()
	select {
	case <-done:
		return false
	case <-time.After(wait):
		return true
	}
}

// fuseMinor returns the minor device number of the FUSE mount at target, from mountinfo.
func fuseMinor(target string) (int, bool, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return 0, false, fmt.Errorf("failed to read mountinfo: %w", err)
	}
	defer f.Close()
	target = filepath.Clean(target)
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		// 36 35 0:40 / /mnt rw,relatime shared:1 - fuse.glusterfs vm:vol rw,...
		fields := strings.Fields(sc.Text())
		sep := slices.Index(fields, "-")
		if sep < 0 || sep+1 >= len(fields) || len(fields) < 5 || unescapeMountPath(fields[4]) != target ||
			!strings.HasPrefix(fields[sep+1], "fuse") {
			continue
		}
		_, minor, ok := strings.Cut(fields[2], ":")
		n, err := strconv.Atoi(minor)
		if !ok || err != nil {
			return 0, false, fmt.Errorf("mountinfo: bad device %q for %q", fields[2], target)
		}
		return n, true, nil
	}
	return 0, false, sc.Err()
}

// clientServes reports whether process pid is alive (not a zombie) and is the GlusterFS
// client of target (its last argument), not a process that reused the PID.
func clientServes(pid int, target string) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// pid (comm) S ...: the state follows the last ')'.
	if i := bytes.LastIndexByte(stat, ')'); i < 0 || i+2 >= len(stat) || stat[i+2] == 'Z' ||
		stat[i+2] == 'X' {
		return false
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
	return len(args) > 0 && filepath.Clean(args[len(args)-1]) == filepath.Clean(target)
}

// IsMountPoint reads /proc/self/mountinfo (stat would hang or fail on a dead FUSE mount).
func (m *realMounter) IsMountPoint(target string) (bool, error) {
	target = filepath.Clean(target)
	if _, err := os.Lstat(target); err != nil && errors.Is(err, os.ErrNotExist) {
		return false, err
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false, fmt.Errorf("failed to read mountinfo: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && unescapeMountPath(fields[4]) == target {
			return true, nil
		}
	}
	return false, sc.Err()
}

func unescapeMountPath(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	r := strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`)
	return r.Replace(s)
}

// isDeadMount reports the errors of a FUSE mount whose daemon is gone
// ("transport endpoint is not connected") or a stale handle.
func isDeadMount(err error) bool {
	return errors.Is(err, unix.ENOTCONN) || errors.Is(err, unix.ESTALE) ||
		errors.Is(err, unix.ECONNABORTED)
}

// checkMount statfs's path; it returns an error satisfying isDeadMount when the FUSE daemon behind
// it is gone.
func checkMount(path string) (*unix.Statfs_t, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return nil, &os.PathError{Op: "statfs", Path: path, Err: err}
	}
	return &st, nil
}

// brickConnections reads the client's view of its bricks from the mount's .meta directory
// (GlusterFS's meta translator): one protocol/client translator per brick, its private state
// says "connected = 1" while the brick answers (Online).
func brickConnections(root string) ([]BrickStatus, error) {
	graph := filepath.Join(root, ".meta", "graphs", "active")
	entries, err := os.ReadDir(graph)
	if err != nil {
		return nil, fmt.Errorf("reading the client graph of %s: %w", root, err)
	}
	var conns []BrickStatus
	for _, e := range entries {
		x := filepath.Join(graph, e.Name())
		if t, err := os.ReadFile(filepath.Join(x, "type")); err != nil ||
			strings.TrimSpace(string(t)) != "protocol/client" {
			continue
		}
		host, _ := os.ReadFile(filepath.Join(x, "options", "remote-host"))
		path, _ := os.ReadFile(filepath.Join(x, "options", "remote-subvolume"))
		priv, err := os.ReadFile(filepath.Join(x, "private"))
		if err != nil {
			return nil, fmt.Errorf("reading the state of %s: %w", x, err)
		}
		conns = append(conns, BrickStatus{
			Host: strings.TrimSpace(string(host)), Path: strings.TrimSpace(string(path)),
			Online: slices.ContainsFunc(strings.Split(string(priv), "\n"), func(l string) bool {
				k, v, _ := strings.Cut(l, "=")
				return strings.TrimSpace(k) == "connected" && strings.TrimSpace(v) == "1"
			})})
	}
	if len(conns) == 0 {
		return nil, fmt.Errorf("no protocol/client translator in %s", graph)
	}
	return conns, nil
}
