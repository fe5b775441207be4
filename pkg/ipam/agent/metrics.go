package agent

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	buffered      *prometheus.GaugeVec
	pending       prometheus.Gauge
	reachable     prometheus.Gauge
	lastAnswer    prometheus.Gauge
	bufferAssigns prometheus.Counter
	outages       prometheus.Counter
	conflicts     prometheus.Counter
	reclaimed     prometheus.Counter
	calls         *prometheus.HistogramVec
	batchSize     prometheus.Histogram
}

func newMetrics() metrics {
	return metrics{
		buffered: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "berth_ipam_agent_buffer_addresses",
			Help: "Addresses this node holds claimed in etcd, not handed out (per pool)."}, []string{"pool"}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{Name: "berth_ipam_agent_journal_operations",
			Help: "Assignments and releases made while etcd was unreachable, not yet written to it."}),
		reachable: prometheus.NewGauge(prometheus.GaugeOpts{Name: "berth_ipam_agent_etcd_reachable",
			Help: "1 while etcd answers this node's agent, 0 while it runs on its buffer and journal."}),
		lastAnswer: prometheus.NewGauge(prometheus.GaugeOpts{Name: "berth_ipam_agent_etcd_last_answer_timestamp_seconds",
			Help: "Unix time etcd last answered this node's agent (time() minus this: how long it has been " +
				"away)."}),
		bufferAssigns: prometheus.NewCounter(prometheus.CounterOpts{Name: "berth_ipam_agent_buffer_assignments_total",
			Help: "Addresses handed out from the node's buffer while etcd was unreachable."}),
		outages: prometheus.NewCounter(prometheus.CounterOpts{Name: "berth_ipam_agent_etcd_outages_total",
			Help: "Times this node's agent lost etcd and switched to its buffer and journal."}),
		conflicts: prometheus.NewCounter(prometheus.CounterOpts{Name: "berth_ipam_agent_journal_conflicts_total",
			Help: "Journalled operations etcd refused for good (a buffered address no longer this node's)."}),
		reclaimed: prometheus.NewCounter(prometheus.CounterOpts{Name: "berth_ipam_agent_reclaimed_total",
			Help: "This node's addresses freed because their attachment no longer exists on the node."}),
		calls: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "berth_ipam_agent_request_duration_seconds",
			Help:    "Plugin requests served, by verb and CNI code (0: success).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)},
			[]string{"verb", "code"}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "berth_ipam_agent_allocation_batch_size",
			Help:    "ADDs written to etcd together, in one transaction, by this node's agent.",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64}}),
	}
}

func (m metrics) register(r prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{m.buffered, m.pending, m.reachable, m.lastAnswer,
		m.bufferAssigns, m.outages, m.conflicts, m.reclaimed, m.calls, m.batchSize} {
		if err := r.Register(c); err != nil {
			return fmt.Errorf("register metrics: %w", err)
		}
	}
	return nil
}

func (a *Agent) updateGauges() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.updateGaugesLocked()
}

// updateGaugesLocked refreshes the state gauges. a.mu is held.
func (a *Agent) updateGaugesLocked() {
	for name, p := range a.st.Pools {
		a.m.buffered.WithLabelValues(name).Set(float64(len(p.Free)))
	}
	a.m.pending.Set(float64(len(a.st.Pending)))
	if a.online.Load() {
		a.m.reachable.Set(1)
	} else {
		a.m.reachable.Set(0)
	}
	if ns := a.lastOK.Load(); ns > 0 {
		a.m.lastAnswer.Set(float64(time.Unix(0, ns).UnixMilli()) / 1000)
	}
}
