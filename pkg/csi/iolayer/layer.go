package iolayer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/klog/v2"

	"github.com/berth-dev/berth/internal/httpjson"
	"github.com/berth-dev/berth/internal/unixsock"
)

// Stats is what GET /stats of a layer answers.
type Stats struct {
	VolumeID              string  `json:"volumeID"`
	Target                string  `json:"target"`
	ReadBytes             uint64  `json:"readBytes"`
	WriteBytes            uint64  `json:"writeBytes"`
	ReadOps               uint64  `json:"readOps"`
	WriteOps              uint64  `json:"writeOps"`
	ReadThrottledSeconds  float64 `json:"readThrottledSeconds"`
	WriteThrottledSeconds float64 `json:"writeThrottledSeconds"`
	SourceAlive           bool    `json:"sourceAlive"`
	Limits                Limits  `json:"limits"`
}

// Options are the flags of `csi-sharedfs iolayer`.
type Options struct {
	VolumeID string // for logs and counters
	Source   string // directory to serve (the volume's staging path)
	Target   string // mount point (the pod's target path)
	Socket   string // unix socket of the control API
	ReadOnly bool
	Limits   Limits
}

// Args is the command line of `csi-sharedfs iolayer` for o, after the subcommand's name.
func (o Options) Args() ([]string, error) {
	limits, err := json.Marshal(o.Limits)
	if err != nil {
		return nil, fmt.Errorf("failed to encode IO limits: %w", err)
	}
	args := []string{"--volume-id=" + o.VolumeID, "--source=" + o.Source,
		"--target=" + o.Target, "--socket=" + o.Socket, "--limits=" + string(limits)}
	if o.ReadOnly {
		args = append(args, "--read-only")
	}
	return args, nil
}

// Run serves o.Source at o.Target through the IO-limited FUSE layer and the control API on
// o.Socket until ctx ends (then it unmounts) or the target is unmounted from outside.
func Run(ctx context.Context, o Options) error {
	if o.Source == "" || o.Target == "" || o.Socket == "" {
		return errors.New("--source, --target and --socket are required")
	}
	logger := klog.FromContext(ctx)
	l, err := unixsock.Listen(o.Socket, 0o700, 0)
	if err != nil {
		return err
	}
	defer l.Close()
	lm, err := mountLimited(o.Source, o.Target, o.ReadOnly, o.Limits)
	if err != nil {
		l.Close()
		return err
	}
	defer lm.croot.close()
	srv := &http.Server{Handler: layerAPI(logger, o, lm), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(l) }()
	defer srv.Close()
	logger.Info("IO-limited layer serving", "source", o.Source, "limits", o.Limits.String(),
		"pid", os.Getpid())

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

// layerAPI is the control API the node plugin talks to (proc.go).
func layerAPI(logger logr.Logger, o Options, lm *limitedMount) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, _ *http.Request) {
		c := &lm.lim.counters
		lm.lim.mu.Lock()
		limits := lm.lim.limits
		lm.lim.mu.Unlock()
		httpjson.Write(w, Stats{
			VolumeID: o.VolumeID, Target: o.Target,
			ReadBytes: c.readBytes.Load(), WriteBytes: c.writeBytes.Load(),
			ReadOps: c.readOps.Load(), WriteOps: c.writeOps.Load(),
			ReadThrottledSeconds:  time.Duration(c.readThrottledNs.Load()).Seconds(),
			WriteThrottledSeconds: time.Duration(c.writeThrottledNs.Load()).Seconds(),
			SourceAlive:           lm.sourceAlive(), Limits: limits,
		})
	})
	mux.HandleFunc("PUT /limits", func(w http.ResponseWriter, r *http.Request) {
		var l Limits
		body := http.MaxBytesReader(w, r.Body, 4096)
		if err := json.NewDecoder(body).Decode(&l); err != nil {
			http.Error(w, "invalid limits: "+err.Error(), http.StatusBadRequest)
			return
		}
		if l.ReadBytesPerSecond < 0 || l.WriteBytesPerSecond < 0 || l.ReadIOPS < 0 ||
			l.WriteIOPS < 0 {
			http.Error(w, "invalid limits: negative value", http.StatusBadRequest)
			return
		}
		lm.lim.set(l)
		logger.Info("IO limits changed", "limits", l.String())
		w.WriteHeader(http.StatusNoContent)
	})
	return mux
}
