package csi

import (
	"context"
	"fmt"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"
)

// HealthMonitor polls glusterd for the brick status of GlusterFS volumes, exports it as
// metrics and emits Events on the berth PVs of a volume when a brick goes offline or returns,
// or when glusterd cannot report the volume at all.
type HealthMonitor struct {
	Driver   *Driver
	PVs      corelisters.PersistentVolumeLister // nil: metrics only
	Recorder record.EventRecorder
	Volumes  func(context.Context) []string
	Interval time.Duration

	health map[string]volumeHealth
}

// volumeHealth is the last reading of one GlusterFS volume.
type volumeHealth int

const (
	healthUnknown     volumeHealth = iota // never read
	healthOK                              // every brick online
	healthDegraded                        // a brick offline
	healthUnreachable                     // glusterd status failed
)

// healthNews reports whether a reading deserves an Event: every change, and a first reading
// that is not healthy (a brick already down when the controller starts).
func healthNews(prev, cur volumeHealth) bool {
	if prev == healthUnknown {
		return cur != healthOK
	}
	return prev != cur
}

// Run polls until ctx ends.
func (h *HealthMonitor) Run(ctx context.Context) error {
	if h.Interval == 0 {
		h.Interval = 30 * time.Second
	}
	t := time.NewTicker(h.Interval)
	defer t.Stop()
	for {
		for _, vol := range h.Volumes(ctx) {
			h.check(ctx, vol)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (h *HealthMonitor) check(ctx context.Context, vol string) {
	m := h.Driver.metrics
	cur := healthOK
	var offline []string
	vs, err := h.Driver.opts.GlusterCLI.volumeStatus(ctx, vol)
	if err != nil {
		if ctx.Err() != nil {
			return // shutting down, not a glusterd fault
		}
		klog.FromContext(ctx).Error(err, "failed to read GlusterFS volume status", "volume", vol)
		cur = healthUnreachable
	} else {
		for _, b := range vs.Bricks {
			v := 0.0
			if b.Online {
				v = 1
			} else {
				offline = append(offline, b.Host+":"+b.Path)
			}
			m.brickOnline.WithLabelValues(vol, b.Host+":"+b.Path).Set(v)
		}
		if !vs.Healthy() {
			cur = healthDegraded
		}
	}
	if cur == healthOK {
		m.volumeHealth.WithLabelValues(vol).Set(1)
	} else {
		m.volumeHealth.WithLabelValues(vol).Set(0)
	}
	if h.health == nil {
		h.health = map[string]volumeHealth{}
	}
	prev := h.health[vol]
	h.health[vol] = cur
	if !healthNews(prev, cur) {
		return
	}
	klog.FromContext(ctx).Info("GlusterFS volume health changed", "volume", vol, "healthy", cur == healthOK, "offline", offline, "err", err)
	h.emit(ctx, vol, cur, offline, err)
}

func (h *HealthMonitor) emit(ctx context.Context, vol string, cur volumeHealth, offline []string, statusErr error) {
	if h.PVs == nil || h.Recorder == nil {
		return
	}
	pvs, err := h.PVs.List(labels.Everything())
	if err != nil {
		klog.FromContext(ctx).Error(err, "failed to list PVs for health events")
		return
	}
	for _, pv := range pvs {
		if pv.Spec.CSI == nil || pv.Spec.CSI.Driver != Name || glusterVolumeOfID(pv.Spec.CSI.VolumeHandle) != vol {
			continue
		}
		switch cur {
		case healthOK:
			h.Recorder.Eventf(pv, v1.EventTypeNormal, "GlusterVolumeHealthy", "every brick of GlusterFS volume %s is online", vol)
		case healthDegraded:
			h.Recorder.Eventf(pv, v1.EventTypeWarning, "GlusterBrickOffline", "GlusterFS volume %s bricks offline: %s (replicas keep serving)", vol, strings.Join(offline, ", "))
		case healthUnreachable:
			h.Recorder.Eventf(pv, v1.EventTypeWarning, "GlusterdUnreachable", "%s", fmt.Sprintf("glusterd cannot report the status of GlusterFS volume %s: %v", vol, statusErr))
		}
	}
}

// glusterVolumeOfID is the GlusterFS volume a volume ID lives on, "" for a malformed ID.
func glusterVolumeOfID(id string) string {
	ref, err := parseVolumeID(id)
	if err != nil {
		return ""
	}
	return ref.GlusterVolume
}
