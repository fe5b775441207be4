package csi

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the driver's Prometheus metrics.
type Metrics struct {
	provisioned  *prometheus.CounterVec
	remounts     *prometheus.CounterVec
	ioBytes      *prometheus.CounterVec
	ioOps        *prometheus.CounterVec
	throttled    *prometheus.CounterVec
	brickOnline  *prometheus.GaugeVec
	volumeHealth *prometheus.GaugeVec
}

// NewMetrics creates the metrics and registers them with reg (nil: not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		provisioned: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_csi_volumes_created_total", Help: "PV directories created, by GlusterFS volume.",
		}, []string{"gluster_volume"}),
		remounts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_csi_remounts_total", Help: "Dead GlusterFS FUSE mounts (transport endpoint is not connected) found and remounted.",
		}, []string{"gluster_volume"}),
		ioBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_csi_volume_io_bytes_total", Help: "Bytes read or written through the IO-limited layer, per CSI volume.",
		}, []string{"volume_id", "op"}),
		ioOps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_csi_volume_io_operations_total", Help: "Read or write operations through the IO-limited layer, per CSI volume.",
		}, []string{"volume_id", "op"}),
		throttled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_csi_volume_throttled_seconds_total", Help: "Time IO waited for the volume's bandwidth or IOPS limit.",
		}, []string{"volume_id", "op"}),
		brickOnline: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "berth_csi_gluster_brick_online", Help: "1 when glusterd reports the brick online, 0 otherwise.",
		}, []string{"gluster_volume", "brick"}),
		volumeHealth: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "berth_csi_gluster_volume_healthy", Help: "1 when every brick of the GlusterFS volume is online.",
		}, []string{"gluster_volume"}),
	}
	if reg != nil {
		reg.MustRegister(m.provisioned, m.remounts, m.ioBytes, m.ioOps, m.throttled, m.brickOnline, m.volumeHealth)
	}
	return m
}
