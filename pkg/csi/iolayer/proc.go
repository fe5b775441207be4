package iolayer

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"k8s.io/klog/v2"

	"github.com/berth-dev/berth/pkg/csi/mountcgroup"
)

// Proc is the node plugin's handle on one `csi-sharedfs iolayer` process: started by this
// plugin (Start), or adopted from an earlier run of it through the target's mount record
// (Adopt). The plugin talks to it over its unix socket (layer.go).
type Proc struct {
	volumeID string
	target   string
	socket   string
	pid      int
	exited   chan struct{} // closed when a child of this process exits; nil when adopted
	client   *http.Client
}

func newProc(volumeID, target, socket string, pid int) *Proc {
	return &Proc{volumeID: volumeID, target: target, socket: socket, pid: pid,
		client: &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, "unix", socket)
			},
		}}}
}

// PID is the layer's process ID, recorded so that a later run of the plugin can adopt it.
func (lp *Proc) PID() int { return lp.pid }

// Socket is the layer's control socket, recorded with PID.
func (lp *Proc) Socket() string { return lp.socket }

// VolumeID is the CSI volume the layer serves.
func (lp *Proc) VolumeID() string { return lp.volumeID }

// layerID names a target's socket and log file.
func layerID(target string) string {
	sum := sha256.Sum256([]byte(filepath.Clean(target)))
	return hex.EncodeToString(sum[:12])
}

// StartOptions say how to start one layer process.
type StartOptions struct {
	Layer Options // Socket is ignored: the layer's socket lives in StateDir/layers
	// Binary is the csi-sharedfs executable that serves `iolayer`.
	Binary string
	// StateDir holds the layer's socket (layers/) and log (logs/).
	StateDir string
	// Cgroup receives the process, so it outlives the plugin's container; nil: it does not.
	Cgroup *mountcgroup.Cgroup
	// IsMountPoint tells when the layer serves its target.
	IsMountPoint func(path string) (bool, error)
}

// Start runs the IO-limited layer as its own process outside this plugin's cgroup and
// waits until it serves the target.
func Start(ctx context.Context, so StartOptions) (*Proc, error) {
	o := so.Layer
	id := layerID(o.Target)
	o.Socket = filepath.Join(so.StateDir, "layers", id+".sock")
	logPath := filepath.Join(so.StateDir, "logs", "layer-"+id+".log")
	for _, dir := range []string{filepath.Dir(o.Socket), filepath.Dir(logPath)} {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return nil, fmt.Errorf("failed to create %q: %w", dir, err)
		}
	}
	args, err := o.Args()
	if err != nil {
		return nil, err
	}
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return nil, fmt.Errorf("failed to open layer log: %w", err)
	}
	defer logFile.Close()
	cmd := exec.Command(so.Binary, append([]string{"iolayer"}, args...)...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Its own session: a signal to this plugin's process group does not reach it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("failed to start IO-limited layer %s: %w", so.Binary, err)
	}
	lp := newProc(o.VolumeID, o.Target, o.Socket, cmd.Process.Pid)
	lp.exited = make(chan struct{})
	go func() { _ = cmd.Wait(); close(lp.exited) }()
	if err := so.Cgroup.Adopt(lp.pid); err != nil {
		_ = lp.Stop(ctx)
		return nil, err
	}
	if err := lp.waitServing(ctx, so.IsMountPoint, logPath); err != nil {
		return nil, err
	}
	klog.FromContext(ctx).V(2).Info("IO-limited layer started", "volume", o.VolumeID,
		"target", o.Target, "pid", lp.pid)
	return lp, nil
}

// waitServing waits until the layer answers on its socket and its target is mounted.
func (lp *Proc) waitServing(ctx context.Context, isMountPoint func(string) (bool, error),
	logPath string) error {
	deadline := time.Now().Add(15 * time.Second)
	for {
		select {
		case <-lp.exited:
			return fmt.Errorf("IO-limited layer for %q exited: %s", lp.target, logTail(logPath))
		default:
		}
		if _, err := lp.Stats(ctx); err == nil {
			if mp, _ := isMountPoint(lp.target); mp {
				return nil
			}
		}
		if time.Now().After(deadline) {
			_ = lp.Stop(ctx)
			return fmt.Errorf("IO-limited layer for %q did not serve within 15s: %s",
				lp.target, logTail(logPath))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Adopt returns the live layer process an earlier run of this plugin recorded (pid and
// socket) for target, or nil when there is none (never started, exited, or the PID now
// belongs to another process).
func Adopt(ctx context.Context, volumeID, target, socket string, pid int) *Proc {
	if pid <= 0 || socket == "" || !isLayerProcess(pid, target) {
		return nil
	}
	lp := newProc(volumeID, target, socket, pid)
	if _, err := lp.Stats(ctx); err != nil {
		klog.FromContext(ctx).Info("recorded IO-limited layer does not answer", "target", target,
			"pid", pid, "err", err)
		return nil
	}
	return lp
}

// isLayerProcess reports whether pid is an iolayer process serving target (PIDs get reused).
func isLayerProcess(pid int, target string) bool {
	return IsLayerArgs(mountcgroup.Cmdline(pid), target)
}

// IsLayerArgs reports whether a command line is `csi-sharedfs iolayer ... --target=<target>`.
func IsLayerArgs(args []string, target string) bool {
	return len(args) > 2 && args[1] == "iolayer" && slices.Contains(args, "--target="+target)
}

// Stats asks the layer for its counters, limits and the state of its source.
func (lp *Proc) Stats(ctx context.Context) (Stats, error) {
	var st Stats
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://layer/stats", nil)
	if err != nil {
		return st, err
	}
	resp, err := lp.client.Do(req)
	if err != nil {
		return st, fmt.Errorf("IO-limited layer of %q: %w", lp.target, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("IO-limited layer of %q answered %s", lp.target, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return st, fmt.Errorf("IO-limited layer of %q sent bad stats: %w", lp.target, err)
	}
	return st, nil
}

// SetLimits changes the layer's limits live.
func (lp *Proc) SetLimits(ctx context.Context, l Limits) error {
	b, err := json.Marshal(l)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, "http://layer/limits",
		bytes.NewReader(b))
	if err != nil {
		return err
	}
	resp, err := lp.client.Do(req)
	if err != nil {
		return fmt.Errorf("failed to change IO limits of %q: %w", lp.target, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return fmt.Errorf("IO-limited layer of %q refused limits: %s: %s",
			lp.target, resp.Status, bytes.TrimSpace(msg))
	}
	return nil
}

// Stop ends the layer (SIGTERM: it unmounts the target) and waits for it; SIGKILL after 10s.
func (lp *Proc) Stop(ctx context.Context) error {
	if lp.exited == nil && !isLayerProcess(lp.pid, lp.target) {
		return nil // gone already, and the PID may be another process's now
	}
	_ = syscall.Kill(lp.pid, syscall.SIGTERM)
	if lp.wait(10 * time.Second) {
		return nil
	}
	klog.FromContext(ctx).Info("IO-limited layer ignored SIGTERM, killing it",
		"target", lp.target, "pid", lp.pid)
	_ = syscall.Kill(lp.pid, syscall.SIGKILL)
	if !lp.wait(5 * time.Second) {
		return fmt.Errorf("IO-limited layer of %q (pid %d) did not exit", lp.target, lp.pid)
	}
	return nil
}

// wait reports whether the process exited within d.
func (lp *Proc) wait(d time.Duration) bool {
	if lp.exited != nil {
		select {
		case <-lp.exited:
			return true
		case <-time.After(d):
			return false
		}
	}
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if !isLayerProcess(lp.pid, lp.target) {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// logTail returns the last lines of a log file for an error message.
func logTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	b = bytes.TrimSpace(b)
	if len(b) > 800 {
		b = b[len(b)-800:]
	}
	if len(b) == 0 {
		return "(empty log " + path + ")"
	}
	return string(b)
}
