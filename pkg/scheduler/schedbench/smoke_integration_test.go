//go:build integration

package schedbench

import (
	"testing"
	"time"
)

// TestBenchHarnessSmoke runs the benchmark harness at a tiny size so that `make bench-scheduler`
// cannot rot unnoticed. It checks that both schedulers bind every pod and fill the node groups;
// the figures themselves belong to the benchmark, not to this test.
func TestBenchHarnessSmoke(t *testing.T) {
	c, dir, kc := startCluster(t)
	r, err := Run(t.Context(), c, dir, kc, Params{Nodes: 20, Pods: 60, QualityNodes: 4, Timeout: 2 * time.Minute}, t.Logf)
	if err != nil {
		t.Fatalf("harness: %v", err)
	}
	t.Logf("\n%s", r.Table())
	if r.DefaultRate <= 0 || r.BerthRate <= 0 {
		t.Fatalf("throughput default=%.1f berth=%.1f, want both > 0", r.DefaultRate, r.BerthRate)
	}
	// 4 nodes hold about 12 mixed pods; anything below 8 means pods were not placed.
	if r.Default.Placed < 8 || r.Berth.Placed < 8 {
		t.Fatalf("pods placed before the first unschedulable: default=%d berth=%d, want >= 8 each", r.Default.Placed, r.Berth.Placed)
	}
}
