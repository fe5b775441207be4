//go:build integration

package schedbench

import (
	"testing"
	"time"
)

// TestBenchHarnessSmoke runs the benchmark harness at a tiny size so that `make bench-scheduler`
// cannot rot unnoticed. It checks that both schedulers bind every pod and fill the node groups of
// every shape; the figures themselves belong to the benchmark, not to this test.
func TestBenchHarnessSmoke(t *testing.T) {
	c, dir, kc := startCluster(t)
	r, err := Run(t.Context(), c, dir, kc, Params{Nodes: 20, Pods: 60, QualityNodes: 6, Seeds: 1,
		Parallel: 3, Timeout: 2 * time.Minute}, t.Logf)
	if err != nil {
		t.Fatalf("harness: %v", err)
	}
	t.Logf("\n%s", r.Table())
	if r.DefaultRate <= 0 || r.BerthRate <= 0 {
		t.Fatalf("throughput default=%.1f berth=%.1f, want both > 0", r.DefaultRate, r.BerthRate)
	}
	if len(r.Cells) != len(Shapes)*len(Workloads) {
		t.Fatalf("matrix has %d cells, want %d", len(r.Cells), len(Shapes)*len(Workloads))
	}
	// 6 identical nodes hold about 18 pods of the coarsest mix; below 10 means pods were not placed.
	for _, cell := range r.Cells {
		if cell.Default[0].Placed < 10 || cell.Berth[0].Placed < 10 {
			t.Fatalf("%s / %s: pods placed before the first unschedulable: default=%d berth=%d, want >= 10 each",
				cell.Shape, cell.Workload, cell.Default[0].Placed, cell.Berth[0].Placed)
		}
	}
}
