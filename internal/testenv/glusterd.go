package testenv

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Glusterd is a real Debian glusterd (GlusterFS 10) started by an integration test, with its
// state under Base. Only one can run per machine: GlusterFS hard-codes /var/run/gluster and
// port 24007, so a package starts it once in TestMain and stops it (and every brick) after.
type Glusterd struct {
	// Base holds the glusterd state, logs and bricks.
	Base string
	// Host is the brick host: the machine's hostname (the CLI refuses 127.0.0.1).
	Host string
	// Socket is glusterd's management socket, for `gluster --glusterd-sock`.
	Socket string
}

// StartGlusterd starts glusterd with its state in a fresh directory under base (or a temp dir
// when base is empty). It does not use testing.TB because TestMain has none.
func StartGlusterd(base string) (*Glusterd, error) {
	for _, bin := range []string{"glusterd", "gluster", "glusterfs"} {
		if _, err := exec.LookPath(bin); err != nil {
			return nil, fmt.Errorf("%s not found: install Debian's glusterfs-server and "+
				"glusterfs-client (`make deps`): %w", bin, err)
		}
	}
	if base == "" {
		var err error
		if base, err = os.MkdirTemp("", "berth-glusterd-"); err != nil {
			return nil, fmt.Errorf("failed to create glusterd dir: %w", err)
		}
	}
	host, err := os.Hostname()
	if err != nil {
		return nil, fmt.Errorf("failed to read hostname: %w", err)
	}
	g := &Glusterd{Base: base, Host: host, Socket: filepath.Join(base, "state", "glusterd.socket")}
	if pid := runningGlusterd(); pid > 0 {
		return nil, fmt.Errorf("a glusterd (pid %d) already runs on this machine: only one can run at a "+
			"time (it holds port 24007); stop it or wait for the other test suite", pid)
	}
	for _, d := range []string{"state/lib/groups", "state/run", "state/log", "bricks", "mnt"} {
		if err := os.MkdirAll(filepath.Join(base, d), 0o755); err != nil {
			return nil, fmt.Errorf("failed to create %s: %w", d, err)
		}
	}
	// 'volume set VOL group X' reads the group files from the working directory.
	if groups, _ := filepath.Glob("/var/lib/glusterd/groups/*"); len(groups) > 0 {
		for _, f := range groups {
			b, err := os.ReadFile(f)
			if err == nil {
				_ = os.WriteFile(filepath.Join(base, "state/lib/groups", filepath.Base(f)), b, 0o644) // optional
			}
		}
	}
	vol := fmt.Sprintf(`volume management
    type mgmt/glusterd
    option working-directory %[1]s/state/lib
    option run-directory %[1]s/state/run
    option logging-directory %[1]s/state/log
    option glusterd-sockfile %[2]s
    option transport-type socket
    option transport.socket.listen-port 24007
    option ping-timeout 0
    option event-threads 1
    option max-port 60999
end-volume
`, base, g.Socket)
	if err := os.WriteFile(filepath.Join(base, "glusterd.vol"), []byte(vol), 0o644); err != nil {
		return nil, fmt.Errorf("failed to write glusterd.vol: %w", err)
	}
	out, err := exec.Command("glusterd", "-f", filepath.Join(base, "glusterd.vol"),
		"-p", filepath.Join(base, "state/glusterd.pid"), "-l", filepath.Join(base, "state/log/glusterd.log"),
		"--log-level", "INFO").CombinedOutput()
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(base, "state/log/glusterd.log"))
		return nil, fmt.Errorf("glusterd failed to start: %w: %s (log %s/state/log/glusterd.log "+
			"ends: %s)", err, out, base, tail(log, 600))
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := g.CLI(context.Background(), "pool", "list"); err == nil {
			return g, nil
		} else if time.Now().After(deadline) {
			_ = g.Stop() // rollback
			return nil, fmt.Errorf("glusterd did not answer within 20s (log %s/state/log/glusterd.log): %w",
				base, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// CLIArgs returns the gluster command line prefix that talks to this glusterd.
func (g *Glusterd) CLIArgs() []string {
	return []string{"gluster", "--mode=script", "--glusterd-sock=" + g.Socket,
		"--log-file=" + filepath.Join(g.Base, "state/log/cli.log")}
}

// CLI runs one gluster command against this glusterd and returns its output.
func (g *Glusterd) CLI(ctx context.Context, args ...string) ([]byte, error) {
	a := g.CLIArgs()
	cmd := exec.CommandContext(ctx, a[0], append(a[1:], args...)...)
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	if err := cmd.Run(); err != nil {
		return buf.Bytes(), fmt.Errorf("gluster %s: %w: %s", strings.Join(args, " "), err,
			strings.TrimSpace(buf.String()))
	}
	return buf.Bytes(), nil
}

// CreateVolume creates and starts volume name with replica-way replication over bricks
// bricks (replica 1 = plain distribute) and returns the brick directories.
func (g *Glusterd) CreateVolume(ctx context.Context, name string, replica, bricks int) ([]string,
	error) {
	args := []string{"volume", "create", name}
	if replica > 1 {
		args = append(args, "replica", strconv.Itoa(replica))
	}
	var dirs []string
	for i := 0; i < bricks; i++ {
		d := filepath.Join(g.Base, "bricks", fmt.Sprintf("%s-%d", name, i), "b")
		if err := os.MkdirAll(filepath.Dir(d), 0o755); err != nil {
			return nil, fmt.Errorf("failed to create brick dir: %w", err)
		}
		dirs = append(dirs, d)
		args = append(args, g.Host+":"+d)
	}
	// force: bricks on the root filesystem and replicas on one host.
	if _, err := g.CLI(ctx, append(args, "force")...); err != nil {
		return nil, err
	}
	if _, err := g.CLI(ctx, "volume", "start", name); err != nil {
		return nil, err
	}
	return dirs, nil
}

// BrickPIDs returns the pids of the running brick processes of volume name, keyed by brick dir.
func (g *Glusterd) BrickPIDs(name string) map[string]int {
	files, _ := filepath.Glob(filepath.Join(g.Base, "state/run/vols", name, "*.pid"))
	pids := map[string]int{}
	for _, f := range files {
		if pid := g.pidFrom(f); pid > 0 {
			pids[strings.TrimSuffix(filepath.Base(f), ".pid")] = pid
		}
	}
	return pids
}

func (g *Glusterd) pidFrom(file string) int {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0
	}
	if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err != nil ||
		strings.Contains(string(st), ") Z ") {
		return 0
	}
	return pid
}

// Stop unmounts every glusterfs FUSE mount under Base, stops glusterd, bricks, self-heal and
// quota daemons by their pid files (glusterd's SIGTERM does not stop bricks) and removes the
// sockets GlusterFS leaves in /var/run/gluster. Base is removed too, after its logs are copied
// to $BERTH_TEST_GLUSTERD_LOGS when that names a directory (for a failure seen only in CI).
func (g *Glusterd) Stop() error {
	UnmountGlusterUnder(g.Base)
	if keep := os.Getenv("BERTH_TEST_GLUSTERD_LOGS"); keep != "" {
		dst := filepath.Join(keep, filepath.Base(g.Base))
		if err := os.CopyFS(dst, os.DirFS(filepath.Join(g.Base, "state/log"))); err != nil {
			fmt.Fprintf(os.Stderr, "keeping glusterd logs in %s: %v\n", dst, err)
		}
	}
	var pids []int
	files, _ := filepath.Glob(filepath.Join(g.Base, "state/run/*/*/*.pid"))
	more, _ := filepath.Glob(filepath.Join(g.Base, "state/run/*/*.pid"))
	files = append(append(files, more...), filepath.Join(g.Base, "state/glusterd.pid"))
	for _, f := range files {
		if pid := g.pidFrom(f); pid > 0 {
			pids = append(pids, pid)
			_ = syscall.Kill(pid, syscall.SIGTERM) // checked below
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for _, pid := range pids {
		for processAlive(pid) && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if processAlive(pid) {
			_ = syscall.Kill(pid, syscall.SIGKILL) // last resort
		}
	}
	leftovers, _ := filepath.Glob("/var/run/gluster/*.socket")
	quota, _ := filepath.Glob("/var/run/gluster/*_quota_*")
	for _, f := range append(leftovers, quota...) {
		_ = os.RemoveAll(f) // stale sockets are harmless but pile up
	}
	return os.RemoveAll(g.Base)
}

func processAlive(pid int) bool {
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	return err == nil && !strings.Contains(string(st), ") Z ")
}

// UnmountGlusterUnder lazily unmounts every fuse.glusterfs (and berth fuse) mount below dir.
func UnmountGlusterUnder(dir string) {
	b, err := os.ReadFile("/proc/mounts")
	if err != nil {
		return
	}
	var mps []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && strings.HasPrefix(f[1], strings.TrimSuffix(dir, "/")+"/") {
			mps = append(mps, f[1])
		}
	}
	for i := len(mps) - 1; i >= 0; i-- { // deepest first
		if err := syscall.Unmount(mps[i], 0); err != nil {
			_ = syscall.Unmount(mps[i], syscall.MNT_DETACH) // busy: detach
		}
	}
}

// runningGlusterd returns the pid of a glusterd already running on this machine, or 0. The
// pid file is not enough: another suite's glusterd keeps its pid file in its own state dir.
func runningGlusterd() int {
	// glusterd's port and run directory are per network and mount namespace: a glusterd of a
	// simulated node of the local cluster (its own netns) does not stop the test's.
	self, _ := os.Readlink("/proc/self/ns/net")
	comms, _ := filepath.Glob("/proc/[0-9]*/comm")
	for _, c := range comms {
		if b, err := os.ReadFile(c); err == nil && strings.TrimSpace(string(b)) == "glusterd" {
			dir := filepath.Dir(c)
			if ns, err := os.Readlink(filepath.Join(dir, "ns", "net")); err == nil && ns != self {
				continue
			}
			pid, _ := strconv.Atoi(filepath.Base(dir))
			return pid
		}
	}
	return 0
}

// tail returns at most the last n bytes of b, as a string.
func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return strings.TrimSpace(string(b))
}
