package schedbench

import (
	"math"
	"slices"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"

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
	seq := Sequence(4000, 2) // the first quality run: seed 2, 100 nodes
	got := CapacityBound(seq, 100)
	if got < 1778 || got >= len(seq) {
		t.Errorf("bound on the quality sequence = %d, want in [1778, %d)", got, len(seq))
	}
	t.Logf("per-dimension capacity bound on 100 nodes: %d pods", got)
}

func TestCapacityBoundOfMixedSizes(t *testing.T) {
	t.Parallel()
	shape := Shapes[1] // 16 and 32 cores
	nodes := []*v1.Node{NewNodeOfSize("a", shape.Sizes[0], nil), NewNodeOfSize("b", shape.Sizes[1], nil)}
	half := Kind{"half", resource.MustParse("8"), resource.MustParse("1Gi"), resource.MustParse("1M")}
	// 48 cores in all: six 8-core pods, the seventh exceeds them.
	if got := CapacityBoundOf(slices.Repeat([]Kind{half}, 8), nodes); got != 6 {
		t.Errorf("bound = %d, want 6", got)
	}
}

func TestMatrixTableNamesMissedGoals(t *testing.T) {
	t.Parallel()
	q := func(cvNet float64, placed int) Quality {
		return Quality{CV: [3]float64{0.03, 0.03, cvNet}, Fullest: 0.8, Placed: placed}
	}
	cell := Cell{Shape: "1x/2x", Workload: "documented mix",
		Default: []Quality{q(0.40, 100), q(0.42, 100)}, Berth: []Quality{q(0.05, 101), q(0.07, 99)},
		Bound: []int{120, 121}}
	tab := MatrixTable([]Cell{cell})
	for _, want := range []string{"| 1x/2x | documented mix | default-scheduler |", "0.060 (0.050-0.070)",
		"placed < default on 1/2 seeds", "| 120 (120-121) |"} {
		if !strings.Contains(tab, want) {
			t.Errorf("table lacks %q:\n%s", want, tab)
		}
	}
	if strings.Contains(tab, "net CV") {
		t.Errorf("table reports a network goal missed that is met:\n%s", tab)
	}
}

func TestOfflineNetworkCV(t *testing.T) {
	t.Parallel()
	kind := func(bw string) Kind {
		return Kind{bw, resource.MustParse("1"), resource.MustParse("1Gi"), resource.MustParse(bw)}
	}
	two := []*v1.Node{NewNode("a", nil), NewNode("b", nil)} // 10G each
	// 6G+4G+4G bring the group to 70 %: the fourth pod is not counted. Largest first, each on
	// the emptiest NIC: 6G | 4G+4G, fills 0.6 and 0.8, CV 0.1/0.7 — also the best split there is.
	got, ok := OfflineNetworkCV([]Kind{kind("6G"), kind("4G"), kind("4G"), kind("9G")}, two)
	if !ok || math.Abs(got-0.1/0.7) > 1e-9 {
		t.Errorf("offline network CV = %.4f, %v; want %.4f, true", got, ok, 0.1/0.7)
	}
	// Four 3.5G pods on two 10G NICs: 7G each, perfectly even.
	if got, ok := OfflineNetworkCV([]Kind{kind("3.5G"), kind("3.5G"), kind("3.5G"), kind("3.5G")}, two); !ok || got > 1e-9 {
		t.Errorf("offline network CV = %.4f, %v; want 0, true", got, ok)
	}
	// Two 6G pods on one 10G node: the second fits nowhere.
	if _, ok := OfflineNetworkCV([]Kind{kind("6G"), kind("6G")}, two[:1]); ok {
		t.Error("two 6G pods on one 10G node: want not placed")
	}
}

func TestOfflineBalanceCV(t *testing.T) {
	t.Parallel()
	kind := func(cpu, bw string) Kind {
		return Kind{cpu + "/" + bw, resource.MustParse(cpu), resource.MustParse("1Gi"), resource.MustParse(bw)}
	}
	two := []*v1.Node{NewNode("a", nil), NewNode("b", nil)} // 16 cores, 10G each
	// A CPU-heavy and a network-heavy pair (the second 7G pod brings the group to 70 %, so the
	// last pod is not counted): one of each on each node, CPU 8.5/8.5 and network 7.1G/7.1G.
	seq := []Kind{kind("8", "100M"), kind("8", "100M"), kind("500m", "7G"), kind("500m", "7G"),
		kind("8", "9G")}
	got, ok := OfflineBalanceCV(seq, two)
	if !ok || got[0] > 1e-9 || got[2] > 1e-9 {
		t.Errorf("offline balance CV = %.4f, %v; want CPU and network 0, true", got, ok)
	}
	// Two 9-core pods on one 16-core node: the second fits nowhere.
	if _, ok := OfflineBalanceCV([]Kind{kind("9", "1M"), kind("9", "1M")}, two[:1]); ok {
		t.Error("two 9-core pods on one 16-core node: want not placed")
	}
}
