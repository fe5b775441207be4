package csi

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
	"strconv"
	"strings"
	"syscall"
	"time"

	"k8s.io/klog/v2"
)

// layerProc is the node plugin's handle on one `csi-sharedfs iolayer` process: started by
// this plugin, or adopted from an earlier run of it through the target's mount record.
type layerProc struct {
	volumeID string
	target   string
	socket   string
	pid      int
	exited   chan struct{} // closed when a child of this process exits; nil when adopted
	client   *http.Client
}

func newLayerProc(volumeID, target, socket string, pid int) *layerProc {
	return &layerProc{volumeID: volumeID, target: target, socket: socket, pid: pid,
		client: &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, "unix", socket)
			},
		}}}
}

// layerID names a target's socket and log file.
func layerID(target string) string {
	sum := sha256.Sum256([]byte(filepath.Clean(target)))
	return hex.EncodeToString(sum[:12])
}

// startLayer runs the IO-limited layer of rec as its own process outside this plugin's
// cgroup and waits until it serves the target.
func (d *Driver) startLayer(ctx context.Context, rec *mountRecord, l IOLimits) (*layerProc, error) {
	id := layerID(rec.Path)
	socket := filepath.Join(d.opts.StateDir, "layers", id+".sock")
	logPath := filepath.Join(d.opts.StateDir, "logs", "layer-"+id+".log")
	for _, dir := range []string{filepath.Dir(socket), filepath.Dir(logPath)} {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return nil, fmt.Errorf("failed to create %q: %w", dir, err)
		}
	}
	limits, err := json.Marshal(l)
	if err != nil {
		return nil, err
	}
	args := []string{"iolayer", "--volume-id=" + rec.VolumeID, "--source=" + rec.Source,
		"--target=" + rec.Path, "--socket=" + socket, "--limits=" + string(limits)}
	if rec.ReadOnly {
		args = append(args, "--read-only")
	}
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return nil, fmt.Errorf("failed to open layer log: %w", err)
	}
	defer logFile.Close()
	cmd := exec.Command(d.opts.LayerBinary, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Its own session: a signal to this plugin's process group does not reach it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("failed to start IO-limited layer %s: %w", d.opts.LayerBinary, err)
	}
	lp := newLayerProc(rec.VolumeID, rec.Path, socket, cmd.Process.Pid)
	lp.exited = make(chan struct{})
	go func() { _ = cmd.Wait(); close(lp.exited) }()
	if err := d.cgroup.adopt(lp.pid); err != nil {
		_ = lp.stop(ctx)
		return nil, err
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		select {
		case <-lp.exited:
			return nil, fmt.Errorf("IO-limited layer for %q exited: %s", rec.Path, logTail(logPath))
		default:
		}
		if _, err := lp.stats(ctx); err == nil {
			if mp, _ := d.mounter.IsMountPoint(rec.Path); mp {
				klog.FromContext(ctx).V(2).Info("IO-limited layer started", "volume", rec.VolumeID, "target", rec.Path, "pid", lp.pid)
				return lp, nil
			}
		}
		if time.Now().After(deadline) {
			_ = lp.stop(ctx)
			return nil, fmt.Errorf("IO-limited layer for %q did not serve within 15s: %s", rec.Path, logTail(logPath))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// layerOf returns the layer serving rec's target: the one this process knows, or the live
// one an earlier run of this plugin recorded in rec, which it adopts; nil when there is none.
func (d *Driver) layerOf(ctx context.Context, rec *mountRecord) *layerProc {
	d.mu.Lock()
	lp := d.limited[rec.Path]
	d.mu.Unlock()
	if lp != nil || !rec.Limited {
		return lp
	}
	if lp = d.adoptLayer(ctx, rec); lp != nil {
		klog.FromContext(ctx).Info("adopted the IO-limited layer of an earlier run", "volume", rec.VolumeID, "target", rec.Path, "pid", lp.pid)
		d.mu.Lock()
		d.limited[rec.Path] = lp
		d.mu.Unlock()
	}
	return lp
}

// adoptLayer returns the live layer process recorded for rec by an earlier run of this
// plugin, or nil when there is none (never started, exited, or the PID now belongs to
// another process).
func (d *Driver) adoptLayer(ctx context.Context, rec *mountRecord) *layerProc {
	if rec.LayerPID <= 0 || rec.LayerSocket == "" || !isLayerProcess(rec.LayerPID, rec.Path) {
		return nil
	}
	lp := newLayerProc(rec.VolumeID, rec.Path, rec.LayerSocket, rec.LayerPID)
	if _, err := lp.stats(ctx); err != nil {
		klog.FromContext(ctx).Info("recorded IO-limited layer does not answer", "target", rec.Path, "pid", rec.LayerPID, "err", err)
		return nil
	}
	return lp
}

// isLayerProcess reports whether pid is an iolayer process serving target (PIDs get reused).
func isLayerProcess(pid int, target string) bool { return isLayerArgs(cmdline(pid), target) }

// isLayerArgs reports whether a command line is `csi-sharedfs iolayer ... --target=<target>`.
func isLayerArgs(args []string, target string) bool {
	return len(args) > 2 && args[1] == "iolayer" && slices.Contains(args, "--target="+target)
}

// cmdline returns the arguments of process pid; nil when it is gone (or a zombie).
func cmdline(pid int) []string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil || len(b) == 0 {
		return nil
	}
	return strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
}

// findProcess returns the pid of the first process whose arguments match, 0 if none.
func findProcess(match func(args []string) bool) int {
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		pid, err := strconv.Atoi(filepath.Base(d))
		if err != nil {
			continue
		}
		if args := cmdline(pid); len(args) > 0 && match(args) {
			return pid
		}
	}
	return 0
}

func (lp *layerProc) stats(ctx context.Context) (layerStats, error) {
	var st layerStats
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

func (lp *layerProc) setLimits(ctx context.Context, l IOLimits) error {
	b, err := json.Marshal(l)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, "http://layer/limits", bytes.NewReader(b))
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
		return fmt.Errorf("IO-limited layer of %q refused limits: %s: %s", lp.target, resp.Status, bytes.TrimSpace(msg))
	}
	return nil
}

// stop ends the layer (SIGTERM: it unmounts the target) and waits for it; SIGKILL after 10s.
func (lp *layerProc) stop(ctx context.Context) error {
	if lp.exited == nil && !isLayerProcess(lp.pid, lp.target) {
		return nil // gone already, and the PID may be another process's now
	}
	_ = syscall.Kill(lp.pid, syscall.SIGTERM)
	if lp.wait(10 * time.Second) {
		return nil
	}
	klog.FromContext(ctx).Info("IO-limited layer ignored SIGTERM, killing it", "target", lp.target, "pid", lp.pid)
	_ = syscall.Kill(lp.pid, syscall.SIGKILL)
	if !lp.wait(5 * time.Second) {
		return fmt.Errorf("IO-limited layer of %q (pid %d) did not exit", lp.target, lp.pid)
	}
	return nil
}

// wait reports whether the process exited within d.
func (lp *layerProc) wait(d time.Duration) bool {
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
