package p2p

import "github.com/prometheus/client_golang/prometheus"

// metrics are p2p-puller's Prometheus metrics (see docs/p2p.md).
type metrics struct {
	bytes            *prometheus.CounterVec
	upstreamRequests *prometheus.CounterVec
	blobRequests     *prometheus.CounterVec
	fetchDuration    *prometheus.HistogramVec
	uploaded         prometheus.Counter
	piecesSent       *prometheus.CounterVec
	pieceFailures    *prometheus.CounterVec
	verifyFailures   prometheus.Counter
	denied           *prometheus.CounterVec
	cacheBytes       prometheus.GaugeFunc
	evictions        prometheus.Counter
	peers            prometheus.GaugeFunc
}

func newMetrics(reg prometheus.Registerer, cacheSize func() float64,
	peerCount func() float64) *metrics {
	m := &metrics{
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "berth_p2p_bytes_total",
			Help: "Blob bytes by source: upstream and peer (downloaded), cache (served to clients from a " +
				"blob already cached)."}, []string{"source"}),
		upstreamRequests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "berth_p2p_upstream_requests_total",
			Help: "Requests sent to upstream registries, by kind (manifest, blob, blob_range, head, other)."}, []string{"kind"}),
		blobRequests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "berth_p2p_blob_requests_total",
			Help: "Client blob GETs by result: hit (already cached) or miss. " +
				"Hit ratio = hit / (hit + miss)."}, []string{"result"}),
		fetchDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "berth_p2p_blob_fetch_duration_seconds",
			Help:    "Time to get a missing blob into the cache, by how it came (peer, upstream).",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 16)}, []string{"source"}),
		uploaded: prometheus.NewCounter(prometheus.CounterOpts{Name: "berth_p2p_uploaded_bytes_total",
			Help: "Piece bytes served to peers."}),
		piecesSent: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "berth_p2p_pieces_sent_total",
			Help: "Pieces served to peers, by how: whole (this node had the piece) or streamed (passed on " +
				"while it was still arriving here)."}, []string{"how"}),
		pieceFailures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "berth_p2p_piece_failures_total",
			Help: "Piece fetches from peers that failed and were retried elsewhere, by reason " +
				"(unavailable, corrupt, error)."}, []string{"reason"}),
		verifyFailures: prometheus.NewCounter(prometheus.CounterOpts{Name: "berth_p2p_blob_verify_failures_total",
			Help: "Assembled blobs whose digest did not match; each was fetched again from the upstream."}),
		denied: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "berth_p2p_access_denied_total",
			Help: "Blob requests refused for lack of a grant, by side (client, peer)."}, []string{"side"}),
		cacheBytes: prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "berth_p2p_cache_bytes",
			Help: "Bytes of verified blobs in the cache."}, cacheSize),
		evictions: prometheus.NewCounter(prometheus.CounterOpts{Name: "berth_p2p_cache_evictions_total",
			Help: "Blobs removed by cache GC."}),
		peers: prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "berth_p2p_peers",
			Help: "Live peers known to this node, itself included."}, peerCount),
	}
	if reg != nil {
		reg.MustRegister(m.bytes, m.upstreamRequests, m.blobRequests, m.fetchDuration, m.uploaded,
			m.piecesSent, m.pieceFailures, m.verifyFailures, m.denied, m.cacheBytes, m.evictions, m.peers)
	}
	return m
}
