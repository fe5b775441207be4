//go:build bench

package schedbench

import (
	"os"
	"strconv"
	"testing"
	"time"

	configv1 "github.com/berth-dev/berth/pkg/scheduler/apis/config/v1"
)

func envInt(t *testing.T, key string, def int) int {
	t.Helper()
	v := os.Getenv(key)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		t.Fatalf("%s=%q: want an integer: %v", key, v, err)
	}
	return n
}

// TestBenchScheduler is the benchmark run by hack/bench-scheduler.sh (build tag bench, never part
// of make test). Sizes: BENCH_NODES (5000), BENCH_PODS (10000), BENCH_QUALITY_NODES (12 per group,
// 0 skips the quality matrix), BENCH_SEEDS (5), BENCH_PARALLEL (4 runs filling at once);
// BENCH_QUALITY_ONLY=1 skips throughput, BENCH_BERTH_FIRST=1 runs the berth throughput phase first.
func TestBenchScheduler(t *testing.T) {
	c, dir, kc := startCluster(t)
	p := Params{
		Nodes:        envInt(t, "BENCH_NODES", 5000),
		Pods:         envInt(t, "BENCH_PODS", 10000),
		QualityNodes: envInt(t, "BENCH_QUALITY_NODES", 12),
		Seeds:        envInt(t, "BENCH_SEEDS", 5),
		Parallel:     envInt(t, "BENCH_PARALLEL", 4),
		QualityOnly:  os.Getenv("BENCH_QUALITY_ONLY") == "1",
		Timeout:      20 * time.Minute,
		BerthFirst:   os.Getenv("BENCH_BERTH_FIRST") == "1",
	}
	r, err := Run(t.Context(), c, dir, kc, p, t.Logf)
	if err != nil {
		t.Fatalf("benchmark: %v", err)
	}
	for _, w := range Workloads {
		t.Logf("workload %q: kinds %v, weights %v, no bandwidth %.0f %%", w.Name, w.Kinds, w.Weights, 100*w.NoBandwidth)
	}
	os.Stdout.WriteString("\n" + r.Table())
}

// TestBenchSimulatedMatrix prints the quality matrix of the offline simulator (SimulateMatrix:
// the same score plugins and weights, no API server) for BENCH_SIM_SEEDS seeds (20), with
// BerthBalance's defaults, with packing from 75 % and with packing off (packAboveFillPercent:
// 100). It takes seconds;
// hack/bench-scheduler.sh runs it with BENCH_SIMULATE=1.
func TestBenchSimulatedMatrix(t *testing.T) {
	mp := MatrixParams{Nodes: envInt(t, "BENCH_QUALITY_NODES", 12), Seeds: envInt(t, "BENCH_SIM_SEEDS", 20),
		Shapes: Shapes, Workloads: Workloads}
	for _, v := range []struct {
		name string
		pack int64
	}{
		{"defaults (packAboveFillPercent: 85)", configv1.DefaultPackAboveFillPercent},
		{"packing from 75 % (packAboveFillPercent: 75)", 75},
		{"packing off (packAboveFillPercent: 100)", 100},
	} {
		start := time.Now()
		cells, err := SimulateMatrix(t.Context(), mp, berthArgs(t, v.pack))
		if err != nil {
			t.Fatalf("simulated matrix: %v", err)
		}
		os.Stdout.WriteString("\nSimulated matrix, BerthBalance " + v.name + ", " + strconv.Itoa(mp.Nodes) +
			" nodes, " + strconv.Itoa(mp.Seeds) + " seeds, " + time.Since(start).Round(time.Millisecond).String() +
			"\n\n" + MatrixTable(cells) + "\n" + MatrixSummary(cells) + "\n")
	}
}
