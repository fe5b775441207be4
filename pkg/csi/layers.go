package csi

import (
	"context"
	"time"

	"k8s.io/klog/v2"

	"github.com/berth-dev/berth/pkg/csi/iolayer"
)

// The node plugin's bookkeeping of the IO-limited layers (package iolayer) that serve its
// published targets: each runs as its own process, found by target path in d.limited or, after
// a restart of the plugin, adopted through the target's mount record.

// startLayer starts the IO-limited layer of rec with limits l and waits until it serves.
func (d *Driver) startLayer(ctx context.Context, rec *mountRecord, l iolayer.Limits) (
	*iolayer.Proc, error) {
	return iolayer.Start(ctx, iolayer.StartOptions{
		Layer: iolayer.Options{VolumeID: rec.VolumeID, Source: rec.Source, Target: rec.Path,
			ReadOnly: rec.ReadOnly, Limits: l},
		Binary: d.opts.LayerBinary, StateDir: d.opts.StateDir, Cgroup: d.cgroup,
		IsMountPoint: d.mounter.IsMountPoint,
	})
}

// layerOf returns the layer serving rec's target: the one this process knows, or the live
// one an earlier run of this plugin recorded in rec, which it adopts; nil when there is none.
func (d *Driver) layerOf(ctx context.Context, rec *mountRecord) *iolayer.Proc {
	d.mu.Lock()
	lp := d.limited[rec.Path]
	d.mu.Unlock()
	if lp != nil || !rec.Limited {
		return lp
	}
	if lp = iolayer.Adopt(ctx, rec.VolumeID, rec.Path, rec.LayerSocket, rec.LayerPID); lp != nil {
		klog.FromContext(ctx).Info("adopted the IO-limited layer of an earlier run",
			"volume", rec.VolumeID, "target", rec.Path, "pid", lp.PID())
		d.mu.Lock()
		d.limited[rec.Path] = lp
		d.mu.Unlock()
	}
	return lp
}

// scrapeWait bounds how long a metrics scrape waits for the layers' counters.
const scrapeWait = 5 * time.Second

// serveLayerStats answers the metrics collector's requests for the layers' counters until
// ctx ends: a scrape has no context of its own, so the node service's run lends it this one.
func (d *Driver) serveLayerStats(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case reply := <-d.statsRequests:
			sctx, cancel := context.WithTimeout(ctx, scrapeWait)
			reply <- d.layerStats(sctx)
			cancel()
		}
	}
}

// scrapeLayerStats is the metrics collector's view of the layers: nil when there are none or
// the node service does not run.
func (d *Driver) scrapeLayerStats() []iolayer.Stats {
	d.mu.Lock()
	n := len(d.limited)
	d.mu.Unlock()
	if n == 0 {
		return nil
	}
	reply := make(chan []iolayer.Stats, 1)
	select {
	case d.statsRequests <- reply:
	case <-time.After(scrapeWait):
		return nil
	}
	return <-reply
}

// layerStats collects the counters of every IO-limited layer this plugin serves or adopted.
func (d *Driver) layerStats(ctx context.Context) []iolayer.Stats {
	d.mu.Lock()
	lps := make([]*iolayer.Proc, 0, len(d.limited))
	for _, lp := range d.limited {
		lps = append(lps, lp)
	}
	d.mu.Unlock()
	var out []iolayer.Stats
	for _, lp := range lps {
		if st, err := lp.Stats(ctx); err == nil {
			st.VolumeID = lp.VolumeID()
			out = append(out, st)
		}
	}
	return out
}
