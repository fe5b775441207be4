package csi

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/berth-dev/berth/pkg/csi/iolayer"
)

// Metrics are the driver's Prometheus metrics.
type Metrics struct {
	provisioned    *prometheus.CounterVec
	remounts       *prometheus.CounterVec
	fullHeals      *prometheus.CounterVec
	daemonRestarts *prometheus.CounterVec
	healRemedies   *prometheus.CounterVec
	daemonOnline   *prometheus.GaugeVec
	brickOnline    *prometheus.GaugeVec
	volumeHealth   *prometheus.GaugeVec
	healPending    *prometheus.GaugeVec
	splitBrain     *prometheus.GaugeVec
	io             *layerCollector
	// layers returns the counters of the node's IO-limited layers (set by NewDriver).
	layers func() []iolayer.Stats
}

// layerCollector reports the IO counters of the IO-limited layers, asked at each scrape: the
// layers run in their own processes (iolayer.go), so a restart of the plugin loses no count.
type layerCollector struct {
	m                         *Metrics
	ioBytes, ioOps, throttled *prometheus.Desc
}

func (c *layerCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.ioBytes
	ch <- c.ioOps
	ch <- c.throttled
}

// Collect sums the layers of each volume (a volume published at several targets of the node).
func (c *layerCollector) Collect(ch chan<- prometheus.Metric) {
	if c.m.layers == nil {
		return
	}
	type sums struct{ rb, wb, ro, wo, rt, wt float64 }
	byVolume := map[string]*sums{}
	for _, st := range c.m.layers() {
		s := byVolume[st.VolumeID]
		if s == nil {
			s = &sums{}
			byVolume[st.VolumeID] = s
		}
		s.rb += float64(st.ReadBytes)
		s.wb += float64(st.WriteBytes)
		s.ro += float64(st.ReadOps)
		s.wo += float64(st.WriteOps)
		s.rt += st.ReadThrottledSeconds
		s.wt += st.WriteThrottledSeconds
	}
	for id, s := range byVolume {
		for _, v := range []struct {
			desc  *prometheus.Desc
			value float64
			op    string
		}{{c.ioBytes, s.rb, "read"}, {c.ioBytes, s.wb, "write"}, {c.ioOps, s.ro, "read"},
			{c.ioOps, s.wo, "write"},
			{c.throttled, s.rt, "read"}, {c.throttled, s.wt, "write"}} {
			ch <- prometheus.MustNewConstMetric(v.desc, prometheus.CounterValue, v.value, id, v.op)
		}
	}
}

// NewMetrics creates the metrics and registers them with reg (nil: not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		provisioned: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_csi_volumes_created_total", Help: "PV directories created, by GlusterFS volume.",
		}, []string{"gluster_volume"}),
		remounts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_csi_remounts_total",
			Help: "Dead GlusterFS FUSE mounts (transport endpoint is not connected) found and remounted.",
		}, []string{"gluster_volume"}),
		healRemedies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_csi_gluster_stuck_heal_remedies_total",
			Help: "Times the controller turned cluster.use-anonymous-inode off for a while because " +
				"heals of the volume made no progress with every brick and daemon online.",
		}, []string{"gluster_volume"}),
		brickOnline: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "berth_csi_gluster_brick_online",
			Help: "1 when glusterd reports the brick online, 0 otherwise.",
		}, []string{"gluster_volume", "brick"}),
		volumeHealth: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "berth_csi_gluster_volume_healthy",
			Help: "1 when every brick and daemon of the GlusterFS volume is online and its heal info is " +
				"empty.",
		}, []string{"gluster_volume"}),
		fullHeals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_csi_gluster_full_heals_total",
			Help: "Full self-heals the controller started because a node reported a GlusterFS client " +
				"of the volume died.",
		}, []string{"gluster_volume"}),
		daemonRestarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_csi_gluster_daemon_restarts_total",
			Help: "Times the controller ran 'gluster volume start VOL force' because a self-heal or " +
				"quota daemon serving the volume stayed down.",
		}, []string{"gluster_volume"}),
		daemonOnline: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "berth_csi_gluster_daemon_online",
			Help: "1 when glusterd reports the daemon (e.g. \"Quota Daemon on 10.0.0.2\") serving the " +
				"volume running, 0 otherwise.",
		}, []string{"gluster_volume", "daemon"}),
		healPending: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "berth_csi_gluster_heal_pending_entries",
			Help: "Entries of the GlusterFS volume waiting for self-heal, summed over its bricks.",
		}, []string{"gluster_volume"}),
		splitBrain: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "berth_csi_gluster_split_brain_entries",
			Help: "Entries of the GlusterFS volume in split-brain (absent when glfsheal cannot tell).",
		}, []string{"gluster_volume"}),
	}
	labels := []string{"volume_id", "op"}
	m.io = &layerCollector{m: m,
		ioBytes: prometheus.NewDesc("berth_csi_volume_io_bytes_total",
			"Bytes read or written through the IO-limited layers of this node, per CSI volume.", labels,
			nil),
		ioOps: prometheus.NewDesc("berth_csi_volume_io_operations_total",
			"Read or write operations through the IO-limited layers of this node, per CSI volume.", labels,
			nil),
		throttled: prometheus.NewDesc("berth_csi_volume_throttled_seconds_total",
			"Time IO waited for the volume's bandwidth or IOPS limit.", labels, nil),
	}
	if reg != nil {
		reg.MustRegister(m.provisioned, m.remounts, m.fullHeals, m.daemonRestarts, m.healRemedies,
			m.brickOnline, m.daemonOnline, m.volumeHealth, m.healPending, m.splitBrain, m.io)
	}
	return m
}
