package csi

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"k8s.io/klog/v2"

	"github.com/berth-dev/berth/internal/daemon"
)

// The IO-limited layer of one published target runs as its own process, `csi-sharedfs
// iolayer`, started by the node plugin (layerproc.go) and moved out of the plugin's cgroup
// (mountcgroup.go). A restart of the plugin therefore does not kill the FUSE server under a
// running pod: the new plugin finds the layer through its mount record and adopts it. The
// plugin talks to the layer over a unix socket: GET /stats for the counters, PUT /limits to
// change the limits live (VolumeAttributesClass). SIGTERM, or an unmount of the target,
// stops the layer.

// layerStats is what GET /stats of a layer answers.
type layerStats struct {
	VolumeID              string   `json:"volumeID"`
	Target                string   `json:"target"`
	ReadBytes             uint64   `json:"readBytes"`
	WriteBytes            uint64   `json:"writeBytes"`
	ReadOps               uint64   `json:"readOps"`
	WriteOps              uint64   `json:"writeOps"`
	ReadThrottledSeconds  float64  `json:"readThrottledSeconds"`
	WriteThrottledSeconds float64  `json:"writeThrottledSeconds"`
	SourceAlive           bool     `json:"sourceAlive"`
	Limits                IOLimits `json:"limits"`
}

// IOLayerOptions are the flags of `csi-sharedfs iolayer`.
type IOLayerOptions struct {
	VolumeID string
	Source   string
	Target   string
	Socket   string
	ReadOnly bool
	Limits   IOLimits
}

// IOLayerMain parses the arguments of `csi-sharedfs iolayer` and runs the layer until
// SIGTERM or until its target is unmounted.
func IOLayerMain(args []string) error {
	fs := flag.NewFlagSet("iolayer", flag.ContinueOnError)
	var o IOLayerOptions
	var limits string
	fs.StringVar(&o.VolumeID, "volume-id", "", "CSI volume ID (for logs and counters)")
	fs.StringVar(&o.Source, "source", "", "directory to serve (the volume's staging path)")
	fs.StringVar(&o.Target, "target", "", "mount point (the pod's target path)")
	fs.StringVar(&o.Socket, "socket", "", "unix socket of the control API")
	fs.BoolVar(&o.ReadOnly, "read-only", false, "serve read-only")
	fs.StringVar(&limits, "limits", "{}", "IO limits as JSON (readBytesPerSecond, writeBytesPerSecond, readIOPS, writeIOPS)")
	klogFlags := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(klogFlags)
	fs.Func("v", "log verbosity", func(s string) error { return klogFlags.Set("v", s) })
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if err := json.Unmarshal([]byte(limits), &o.Limits); err != nil {
		return fmt.Errorf("invalid --limits %q: %w", limits, err)
	}
	ctx, cancel := daemon.SignalContext()
	defer cancel()
	return RunIOLayer(klog.NewContext(ctx, klog.Background().WithValues("volume", o.VolumeID, "target", o.Target)), o)
}

// RunIOLayer serves o.Source at o.Target through the IO-limited FUSE layer and the control
// API on o.Socket until ctx ends (then it unmounts) or the target is unmounted from outside.
func RunIOLayer(ctx context.Context, o IOLayerOptions) error {
	if o.Source == "" || o.Target == "" || o.Socket == "" {
		return errors.New("--source, --target and --socket are required")
	}
	logger := klog.FromContext(ctx)
	if err := os.MkdirAll(filepath.Dir(o.Socket), 0o700); err != nil {
		return fmt.Errorf("failed to create socket dir: %w", err)
	}
	if err := os.Remove(o.Socket); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("failed to remove stale socket %q: %w", o.Socket, err)
	}
	l, err := net.Listen("unix", o.Socket)
	if err != nil {
		return fmt.Errorf("failed to listen on %q: %w", o.Socket, err)
	}
	defer os.Remove(o.Socket)
	lm, err := mountLimited(o.Source, o.Target, o.ReadOnly, o.Limits)
	if err != nil {
		l.Close()
		return err
	}
	defer lm.croot.close()
	srv := &http.Server{Handler: layerAPI(o, lm), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(l) }()
	defer srv.Close()
	logger.Info("IO-limited layer serving", "source", o.Source, "limits", limitsString(o.Limits), "pid", os.Getpid())

	served := make(chan struct{})
	go func() { lm.server.Wait(); close(served) }()
	select {
	case <-served:
		logger.Info("target unmounted, IO-limited layer exits")
		return nil
	case <-ctx.Done():
	}
	if err := lm.unmount(); err != nil {
		return err
	}
	logger.Info("IO-limited layer stopped")
	return nil
}

func layerAPI(o IOLayerOptions, lm *limitedMount) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, _ *http.Request) {
		c := &lm.lim.counters
		lm.lim.mu.Lock()
		limits := lm.lim.limits
		lm.lim.mu.Unlock()
		writeJSON(w, layerStats{
			VolumeID: o.VolumeID, Target: o.Target,
			ReadBytes: c.readBytes.Load(), WriteBytes: c.writeBytes.Load(),
			ReadOps: c.readOps.Load(), WriteOps: c.writeOps.Load(),
			ReadThrottledSeconds:  time.Duration(c.readThrottledNs.Load()).Seconds(),
			WriteThrottledSeconds: time.Duration(c.writeThrottledNs.Load()).Seconds(),
			SourceAlive:           lm.sourceAlive(), Limits: limits,
		})
	})
	mux.HandleFunc("PUT /limits", func(w http.ResponseWriter, r *http.Request) {
		var l IOLimits
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&l); err != nil {
			http.Error(w, "invalid limits: "+err.Error(), http.StatusBadRequest)
			return
		}
		if l.ReadBytesPerSecond < 0 || l.WriteBytesPerSecond < 0 || l.ReadIOPS < 0 || l.WriteIOPS < 0 {
			http.Error(w, "invalid limits: negative value", http.StatusBadRequest)
			return
		}
		lm.lim.set(l)
		klog.Background().Info("IO limits changed", "volume", o.VolumeID, "target", o.Target, "limits", limitsString(l))
		w.WriteHeader(http.StatusNoContent)
	})
	return mux
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}
