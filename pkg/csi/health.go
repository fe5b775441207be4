package csi

import (
	"context"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"
)

// HealthMonitor polls glusterd for the brick status of GlusterFS volumes, exports it as
// metrics and emits Events on the berth PVs of a volume when a brick goes offline or returns.
type HealthMonitor struct {
	Driver   *Driver
	Client   kubernetes.Interface // nil: metrics only
	Recorder record.EventRecorder
	Volumes  func() []string
	Interval time.Duration

	healthy map[string]bool
}

// Run polls until ctx ends.
func (h *HealthMonitor) Run(ctx context.Context) error {
	if h.Interval == 0 {
		h.Interval = 30 * time.Second
	}
	t := time.NewTicker(h.Interval)
	defer t.Stop()
	for {
		for _, vol := range h.Volumes() {
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
	vs, err := h.Driver.opts.GlusterCLI.volumeStatus(ctx, vol)
	if err != nil {
		klog.FromContext(ctx).Error(err, "failed to read GlusterFS volume status", "volume", vol)
		m.volumeHealth.WithLabelValues(vol).Set(0)
		return
	}
	for _, b := range vs.Bricks {
		v := 0.0
		if b.Online {
			v = 1
		}
		m.brickOnline.WithLabelValues(vol, b.Host+":"+b.Path).Set(v)
	}
	ok := vs.Healthy()
	if ok {
		m.volumeHealth.WithLabelValues(vol).Set(1)
	} else {
		m.volumeHealth.WithLabelValues(vol).Set(0)
	}
	if h.healthy == nil {
		h.healthy = map[string]bool{}
	}
	was, seen := h.healthy[vol]
	h.healthy[vol] = ok
	if !seen && ok || was == ok {
		return
	}
	var offline []string
	for _, b := range vs.Bricks {
		if !b.Online {
			offline = append(offline, b.Host+":"+b.Path)
		}
	}
	klog.FromContext(ctx).Info("GlusterFS volume health changed", "volume", vol, "healthy", ok, "offline", offline)
	h.emit(ctx, vol, ok, offline)
}

func (h *HealthMonitor) emit(ctx context.Context, vol string, ok bool, offline []string) {
	if h.Client == nil || h.Recorder == nil {
		return
	}
	pvs, err := h.Client.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{})
	if err != nil {
		klog.FromContext(ctx).Error(err, "failed to list PVs for health events")
		return
	}
	for i := range pvs.Items {
		pv := &pvs.Items[i]
		if pv.Spec.CSI == nil || pv.Spec.CSI.Driver != Name || !strings.HasPrefix(pv.Spec.CSI.VolumeHandle, idPrefix+"#"+vol+"#") {
			continue
		}
		if ok {
			h.Recorder.Eventf(pv, v1.EventTypeNormal, "GlusterVolumeHealthy", "every brick of GlusterFS volume %s is online again", vol)
		} else {
			h.Recorder.Eventf(pv, v1.EventTypeWarning, "GlusterBrickOffline", "GlusterFS volume %s bricks offline: %s (replicas keep serving)", vol, strings.Join(offline, ", "))
		}
	}
}
