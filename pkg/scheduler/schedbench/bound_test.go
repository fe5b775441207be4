package schedbench

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/resource"
)

func TestCapacityBound(t *testing.T) {
	t.Parallel()
	half := Kind{"half", resource.MustParse("8"), resource.MustParse("1Gi"), resource.MustParse("1M")}
	net := Kind{"net", resource.MustParse("1"), resource.MustParse("1Gi"), resource.MustParse("6G")}
	// Two nodes hold four half-CPU pods; the fifth exceeds the group's CPU.
	if got := CapacityBound([]Kind{half, half, half, half, half}, 2); got != 4 {
		t.Errorf("bound = %d, want 4", got)
	}
	// 6G+6G+6G = 18G fits 2 x 10G in sum although no node holds two of them: the bound
	// ignores bin packing, so it is 3 where the exact optimum is 2.
	if got := CapacityBound([]Kind{net, net, net, net}, 2); got != 3 {
		t.Errorf("bound = %d, want 3 (per-dimension, not exact)", got)
	}
	// The quality run's sequence: no scheduler can beat the bound; the exact optimum of an
	// offline bin packing (1778 on 100 nodes) lies below it.
	seq := Sequence(qualityPods(100), qualitySeed)
	got := CapacityBound(seq, 100)
	if got < 1778 || got >= len(seq) {
		t.Errorf("bound on the quality sequence = %d, want in [1778, %d)", got, len(seq))
	}
	t.Logf("per-dimension capacity bound on 100 nodes: %d pods", got)
}

func TestTableShowsBound(t *testing.T) {
	t.Parallel()
	r := Report{Params: Params{QualityNodes: 100}, Bound: 2000}
	r.Default.Placed, r.Berth.Placed = 1500, 1800
	if tab := r.Table(); !strings.Contains(tab, "offline upper bound on pods placed: 2000") || !strings.Contains(tab, "| 75.0 % | 90.0 % |") {
		t.Fatalf("table lacks the bound row:\n%s", tab)
	}
}
