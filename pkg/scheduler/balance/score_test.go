package balance

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	fwk "k8s.io/kube-scheduler/framework"
	"k8s.io/kubernetes/pkg/scheduler/framework"
)

// TestScorePlacesByProfile checks the behaviour 58.com asked for: a network-heavy pod goes where
// the network idles, a CPU-heavy pod where CPU idles, instead of stacking one kind per node. In
// each case the default profile's score plugins pick the other node, so every case fails without
// BerthBalance.
func TestScorePlacesByProfile(t *testing.T) {
	t.Parallel()
	type busy struct {
		n             int
		milliCPU, mem int64 // mem in MiB
		bw            string
	}
	tests := []struct {
		name string
		pod  *v1.Pod
		a, b []busy // what runs on the 16-core, 64Gi, 10G nodes "a" and "b"
		want string
	}{
		// Same total demand in different shapes: a's NIC is busy, b's CPU and memory. The default
		// plugins see only CPU and memory and pick a.
		{"network-heavy pod avoids the node whose NIC is busy", makePod("net", 250, 256, "2G"),
			[]busy{{4, 250, 512, "1500M"}}, []busy{{3, 3000, 1024, "50M"}, {2, 250, 16 << 10, ""}},
			"b"},
		// a has idle cores but busy memory, b half-busy cores and idle memory. The default
		// plugins weigh memory as much as CPU for a pod that barely uses memory and pick b.
		{"cpu-heavy pod avoids the node whose CPU is busy", makePod("cpu", 4000, 1024, ""),
			[]busy{{4, 250, 13 << 10, ""}}, []busy{{3, 2400, 1024, ""}}, "a"},
		// The mirror image: a has idle memory but busy cores, b half-busy memory and idle cores.
		{"memory-heavy pod avoids the node whose memory is busy", makePod("mem", 250, 16<<10, ""),
			[]busy{{4, 3250, 1024, ""}}, []busy{{3, 250, 9830, ""}}, "a"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			pl := newTestPlugin(t)
			var nodes []fwk.NodeInfo
			for _, n := range []struct {
				name string
				busy []busy
			}{{"a", tc.a}, {"b", tc.b}} {
				var pods []*v1.Pod
				for i, b := range n.busy {
					pods = append(pods, podsN(fmt.Sprintf("%s%d", n.name, i), b.n, b.milliCPU,
						b.mem, b.bw)...)
				}
				nodes = append(nodes, nodeInfo(pl, makeNode(n.name, 16, 64, "10G"), pods...))
			}
			scores := scoreAll(t, pl, tc.pod, nodes)
			if got := best(scores); got != tc.want {
				t.Fatalf("best node = %s (scores %v), want %s", got, scores, tc.want)
			}
			// A case the default scheduler gets right would pass without BerthBalance.
			if d := defaultScores(t, tc.pod, nodes); best(d) == tc.want {
				t.Fatalf("without BerthBalance the default score plugins also pick %s (%v): "+
					"the case does not test the plugin", tc.want, d)
			}
		})
	}
}

// TestScoreSpreadsIdenticalNodes checks that between equally shaped nodes the emptier one wins,
// which keeps the cluster balanced.
func TestScoreSpreadsIdenticalNodes(t *testing.T) {
	t.Parallel()
	pl := newTestPlugin(t)
	full := nodeInfo(pl, makeNode("full", 8, 32, "10G"), podsN("a", 3, 1000, 4096, "1G")...)
	empty := nodeInfo(pl, makeNode("empty", 8, 32, "10G"))
	half := nodeInfo(pl, makeNode("half", 8, 32, "10G"), podsN("b", 1, 1000, 4096, "1G")...)
	scores := scoreAll(t, pl, makePod("p", 1000, 4096, "1G"), []fwk.NodeInfo{full, empty, half})
	if !(scores["empty"] == fwk.MaxNodeScore && scores["half"] > scores["full"] &&
		scores["full"] == fwk.MinNodeScore) {
		t.Fatalf("scores = %v, want empty=100 > half > full=0", scores)
	}
}

// TestMalformedAnnotationIsNeutral checks that a bad annotation neither panics nor fails the
// cycle: PreScore skips the plugin and Score gives every node the same score.
func TestMalformedAnnotationIsNeutral(t *testing.T) {
	t.Parallel()
	pl := newTestPlugin(t)
	pod := makePod("bad", 500, 512, "")
	pod.Annotations[AnnotationIngressBandwidth] = "lots"
	nodes := []fwk.NodeInfo{
		nodeInfo(pl, makeNode("a", 8, 32, "10G"), podsN("a", 3, 1000, 4096, "1G")...),
		nodeInfo(pl, makeNode("b", 8, 32, "10G")),
	}
	ctx := context.Background()
	cs := framework.NewCycleState()
	if _, st := pl.PreFilter(ctx, cs, pod, nodes); !st.IsSkip() {
		t.Fatalf("PreFilter = %v, want Skip (no bandwidth accounted)", st)
	}
	if st := pl.PreScore(ctx, cs, pod, nodes); !st.IsSkip() {
		t.Fatalf("PreScore = %v, want Skip", st)
	}
	for _, ni := range nodes {
		if s, st := pl.Score(ctx, cs, pod, ni); s != 0 || !st.IsSuccess() {
			t.Fatalf("Score = %d, %v; want 0, success", s, st)
		}
	}
	if _, st := pl.SignPod(ctx, pod); st.Code() != fwk.Unschedulable {
		t.Fatalf("SignPod = %v, want Unschedulable (pod not eligible for batching)", st)
	}
}

func TestFilterBandwidth(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		overcommit int64
		pod        *v1.Pod
		wantOK     bool
	}{
		{"fits", 100, makePod("p", 100, 100, "1G"), true},
		{"exceeds capacity", 100, makePod("p", 100, 100, "3G"), false},
		{"fits with 150% overcommit", 150, makePod("p", 100, 100, "3G"), true},
		{"filter off", 0, makePod("p", 100, 100, "30G"), true},
		{"no bandwidth", 100, makePod("p", 100, 100, ""), true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			pl := newTestPlugin(t)
			pl.overcommit = tc.overcommit
			ni := nodeInfo(
				pl,
				makeNode("n", 8, 32, "10G"),
				podsN("x", 4, 100, 100, "2G")...) // 8G of 10G used
			ctx := context.Background()
			cs := framework.NewCycleState()
			_, st := pl.PreFilter(ctx, cs, tc.pod, nil)
			if !st.IsSkip() {
				st = pl.Filter(ctx, cs, tc.pod, ni)
			}
			if ok := st.IsSuccess() || st.IsSkip(); ok != tc.wantOK {
				t.Fatalf("Filter = %v, want ok=%v", st, tc.wantOK)
			}
			if !tc.wantOK && st.Message() != ErrReasonBandwidth {
				t.Fatalf("reason = %q, want %q", st.Message(), ErrReasonBandwidth)
			}
		})
	}
}

// TestReserveSpreadsBurst checks the assume cache: once a pod is reserved on a node, the next
// identical pod sees that node's bandwidth as used even though NodeInfo has not changed, and
// Unreserve gives it back.
func TestReserveSpreadsBurst(t *testing.T) {
	t.Parallel()
	pl := newTestPlugin(t)
	a, b := makeNode("a", 8, 32, "10G"), makeNode("b", 8, 32, "10G")
	// CPU and memory are identical and unchanged; only the cache knows about reserved bandwidth.
	nodes := []fwk.NodeInfo{nodeInfo(pl, a), nodeInfo(pl, b)}
	ctx := context.Background()
	first := makePod("first", 0, 0, "4G")
	if st := pl.Reserve(ctx, framework.NewCycleState(), first, "a"); !st.IsSuccess() {
		t.Fatalf("Reserve: %v", st)
	}
	if got := best(scoreAll(t, pl, makePod("second", 0, 0, "4G"), nodes)); got != "b" {
		t.Fatalf("second pod of the burst went to %s, want b (a holds the reserved 4G)", got)
	}
	pl.Unreserve(ctx, framework.NewCycleState(), first, "a")
	if used := pl.cache.get(a).annotated; used != 0 {
		t.Fatalf("after Unreserve node a still accounts %d bit/s", used)
	}
}

func TestNormalizeScore(t *testing.T) {
	t.Parallel()
	pl := newTestPlugin(t)
	list := fwk.NodeScoreList{
		{Name: "a", Score: 10},
		{Name: "b", Score: 30},
		{Name: "c", Score: 20},
	}
	if st := pl.NormalizeScore(context.Background(), nil, nil, list); !st.IsSuccess() {
		t.Fatal(st)
	}
	if list[0].Score != 100 || list[1].Score != 0 || list[2].Score != 50 {
		t.Fatalf("normalized = %v, want a=100 b=0 c=50", list)
	}
	same := fwk.NodeScoreList{{Name: "a", Score: 7}, {Name: "b", Score: 7}}
	_ = pl.NormalizeScore(context.Background(), nil, nil, same)
	if same[0].Score != 0 || same[1].Score != 0 {
		t.Fatalf("equal costs normalized to %v, want all 0 (no say)", same)
	}
	// Nodes Score marked (the pod would end their room for a recent shape) rank below every other node,
	// whatever their cost; the others share the range.
	marked := fwk.NodeScoreList{{Name: "a", Score: -5 + lastResort}, {Name: "b", Score: 30},
		{Name: "c", Score: 20}, {Name: "d", Score: 10}}
	_ = pl.NormalizeScore(context.Background(), nil, nil, marked)
	if marked[0].Score != 0 || marked[1].Score != 0 || marked[2].Score != 50 || marked[3].Score != 100 {
		t.Fatalf("with a marked node normalized = %v, want a=0 b=0 c=50 d=100", marked)
	}
	oneLeft := fwk.NodeScoreList{{Name: "a", Score: 3 + lastResort}, {Name: "b", Score: 30}}
	_ = pl.NormalizeScore(context.Background(), nil, nil, oneLeft)
	if oneLeft[0].Score != 0 || oneLeft[1].Score != 100 {
		t.Fatalf("one unmarked node normalized = %v, want a=0 b=100", oneLeft)
	}
	allMarked := fwk.NodeScoreList{{Name: "a", Score: 10 + lastResort}, {Name: "b", Score: 30 + lastResort}}
	_ = pl.NormalizeScore(context.Background(), nil, nil, allMarked)
	if allMarked[0].Score != 100 || allMarked[1].Score != 0 {
		t.Fatalf("all marked normalized = %v, want ranked by cost a=100 b=0", allMarked)
	}
}

func TestSignPodDependsOnDemand(t *testing.T) {
	t.Parallel()
	pl := newTestPlugin(t)
	ctx := context.Background()
	sign := func(p *v1.Pod) any {
		f, st := pl.SignPod(ctx, p)
		if !st.IsSuccess() || len(f) != 1 {
			t.Fatalf("SignPod = %v, %v", f, st)
		}
		return f[0].Value
	}
	if sign(makePod("a", 100, 100, "1G")) != sign(makePod("b", 100, 100, "1G")) {
		t.Fatal("identical pods got different signatures")
	}
	if sign(makePod("a", 100, 100, "1G")) == sign(makePod("b", 100, 100, "2G")) {
		t.Fatal("pods with different bandwidth got the same signature")
	}
}

// scoredCluster is the benchmarks' cluster: n 16-core nodes with 0-4 small pods each, and a
// pod whose PreScore already ran against them.
func scoredCluster(b testing.TB, n int) (*Balance, []fwk.NodeInfo, *v1.Pod, fwk.CycleState) {
	b.Helper()
	pl := newTestPlugin(b)
	nodes := make([]fwk.NodeInfo, n)
	for i := range nodes {
		nodes[i] = nodeInfo(pl, makeNode(fmt.Sprintf("n%d", i), 16, 64, "10G"),
			podsN(fmt.Sprintf("p%d", i), i%5, 500, 1024, "200M")...)
	}
	pod := makePod("p", 1000, 2048, "500M")
	cs := framework.NewCycleState()
	if st := pl.PreScore(context.Background(), cs, pod, nodes); !st.IsSuccess() {
		b.Fatal(st)
	}
	return pl, nodes, pod, cs
}

// TestPreScoreKeepsNoMemoryPerNode: PreScore's snapshot is reused from one scheduling cycle to
// the next. A map per pod was 70 KB at 680 nodes, hundreds of times a second, and slowed the
// whole scheduler through the garbage collector.
func TestPreScoreKeepsNoMemoryPerNode(t *testing.T) {
	pl, nodes, pod, _ := scoredCluster(t, 1000)
	ctx := context.Background()
	const runs = 50
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range runs {
		if st := pl.PreScore(ctx, framework.NewCycleState(), pod, nodes); !st.IsSuccess() {
			t.Fatal(st)
		}
	}
	runtime.ReadMemStats(&after)
	if perPod := (after.TotalAlloc - before.TotalAlloc) / runs; perPod > 8<<10 {
		t.Errorf("PreScore allocates %d bytes per pod on 1000 nodes, want at most 8 KiB", perPod)
	}
}

// TestPreScoreSnapshotIsPerCycle: the snapshot reused across cycles holds each cycle's loads:
// a pod reserved in the cycle before counts in the next, a pod unreserved no longer does, and
// a node PreScore did not see this cycle is read from the cache, not from an older snapshot.
func TestPreScoreSnapshotIsPerCycle(t *testing.T) {
	pl := newTestPlugin(t)
	a := nodeInfo(pl, makeNode("a", 16, 64, "10G"))
	b := nodeInfo(pl, makeNode("b", 16, 64, "10G"))
	ctx := context.Background()
	costs := func(pod *v1.Pod, scored []fwk.NodeInfo) (fwk.CycleState, int64, int64) {
		t.Helper()
		cs := framework.NewCycleState()
		if st := pl.PreScore(ctx, cs, pod, scored); !st.IsSuccess() {
			t.Fatal(st)
		}
		ca, _ := pl.Score(ctx, cs, pod, a)
		cb, _ := pl.Score(ctx, cs, pod, b)
		return cs, ca, cb
	}
	first := makePod("first", 1000, 1024, "2G")
	cs, ca, cb := costs(first, []fwk.NodeInfo{a, b})
	if ca != cb {
		t.Fatalf("empty identical nodes cost %d and %d", ca, cb)
	}
	if st := pl.Reserve(ctx, cs, first, "a"); !st.IsSuccess() {
		t.Fatal(st)
	}
	second := makePod("second", 1000, 1024, "2G")
	_, ca, cb = costs(second, []fwk.NodeInfo{a, b})
	if ca <= cb {
		t.Errorf("after a 2G pod was reserved on a, a costs %d and b %d: the snapshot missed it", ca, cb)
	}
	pl.Unreserve(ctx, cs, first, "a")
	_, ca, cb = costs(makePod("third", 1000, 1024, "2G"), []fwk.NodeInfo{b})
	if ca != cb {
		t.Errorf("after the reservation on a was undone, a (not scored by PreScore) costs %d and b %d: "+
			"an older snapshot was read", ca, cb)
	}
}

// BenchmarkScore measures Score per node at three cluster sizes; it must not allocate.
func BenchmarkScore(b *testing.B) {
	for _, n := range []int{100, 1000, 5000} {
		b.Run(fmt.Sprintf("%dNodes", n), func(b *testing.B) {
			pl, nodes, pod, cs := scoredCluster(b, n)
			ctx := context.Background()
			for _, ni := range nodes { // warm the node capacity cache
				_, _ = pl.Score(ctx, cs, pod, ni)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				for _, ni := range nodes {
					_, _ = pl.Score(ctx, cs, pod, ni)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/node")
		})
	}
}

// BenchmarkPreScore measures the per-pod cost of PreScore (cache snapshot and mean fill) at three
// cluster sizes; its bytes per op are what each scheduling cycle leaves to the garbage collector.
func BenchmarkPreScore(b *testing.B) {
	for _, n := range []int{100, 1000, 5000} {
		b.Run(fmt.Sprintf("%dNodes", n), func(b *testing.B) {
			pl, nodes, pod, _ := scoredCluster(b, n)
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				cs := framework.NewCycleState()
				if st := pl.PreScore(ctx, cs, pod, nodes); !st.IsSuccess() {
					b.Fatal(st)
				}
			}
		})
	}
}

// TestScoreDoesNotAllocate holds Score to its budget: no allocation per node.
func TestScoreDoesNotAllocate(t *testing.T) {
	pl := newTestPlugin(t)
	nodes := []fwk.NodeInfo{
		nodeInfo(pl, makeNode("a", 16, 64, "10G"), podsN("a", 3, 500, 1024, "200M")...),
		nodeInfo(pl, makeNode("b", 16, 64, "")),
	}
	pod := makePod("p", 1000, 2048, "500M")
	ctx := context.Background()
	cs := framework.NewCycleState()
	if st := pl.PreScore(ctx, cs, pod, nodes); !st.IsSuccess() {
		t.Fatal(st)
	}
	if n := testing.AllocsPerRun(100, func() {
		for _, ni := range nodes {
			_, _ = pl.Score(ctx, cs, pod, ni)
		}
	}); n != 0 {
		t.Fatalf("Score allocates %v times per run, want 0", n)
	}
}

// BenchmarkScoreParallel runs Score from all cores at once, as the framework does (16 workers).
func BenchmarkScoreParallel(b *testing.B) {
	pl, nodes, pod, cs := scoredCluster(b, 5000)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(p *testing.PB) {
		i := 0
		for p.Next() {
			_, _ = pl.Score(ctx, cs, pod, nodes[i%len(nodes)])
			i++
		}
	})
}

// TestScoreBalancesTwoNodeSizes fills a cluster of 1x and 2x nodes (CPU, memory and NIC all
// doubled) with the documented mix, each pod on the node the plugin scores best, and checks
// that at 70 % fill the small nodes are as full, as a share of their own capacity, as the big
// ones. A cost in fractions of each node's capacity alone made a big node cheaper at the same
// fill, and left the small nodes near half the big nodes' fill (issue 19).
func TestScoreBalancesTwoNodeSizes(t *testing.T) {
	t.Parallel()
	pl := newTestPlugin(t)
	var nodes []fwk.NodeInfo
	for i := range 4 {
		nodes = append(nodes, nodeInfo(pl, makeNode(fmt.Sprintf("small-%d", i), 16, 64, "10G")),
			nodeInfo(pl, makeNode(fmt.Sprintf("big-%d", i), 32, 128, "20G")))
	}
	mix := []*v1.Pod{makePod("cpu", 2000, 2<<10, "100M"), makePod("mem", 250, 7<<10, "100M"),
		makePod("net", 250, 1<<10, "1300M")}
	for i := 0; maxFill(pl, nodes) < 0.7; i++ {
		pod := mix[(i*7+i/3)%len(mix)].DeepCopy()
		pod.Name, pod.UID = fmt.Sprintf("p-%d", i), types.UID(fmt.Sprintf("p-%d", i))
		placeOnBest(t, pl, pod, nodes)
	}
	for d, name := range []string{"cpu", "memory", "network"} {
		var small, big float64
		for _, ni := range nodes {
			if f := fillOf(pl, ni)[d]; strings.HasPrefix(ni.Node().Name, "small") {
				small += f / 4
			} else {
				big += f / 4
			}
		}
		if small < 0.9*big || big < 0.9*small {
			t.Errorf(
				"%s fill at 70 %%: small nodes %.2f, big nodes %.2f; want within 10 %% of each other",
				name,
				small,
				big,
			)
		}
	}
}

// placeOnBest binds pod to the best-scored node that fits it, as the scheduler would with this
// plugin alone, and records it in the NodeInfo and the plugin's cache.
func placeOnBest(t *testing.T, pl *Balance, pod *v1.Pod, nodes []fwk.NodeInfo) {
	t.Helper()
	var fit []fwk.NodeInfo
	d, _ := podDemand(pod, 0)
	for _, ni := range nodes {
		f, capacity := fillOf(pl, ni), ni.GetAllocatable()
		if f[0]+float64(d.MilliCPU)/float64(capacity.GetMilliCPU()) <= 1 &&
			f[1]+float64(d.Memory)/float64(capacity.GetMemory()) <= 1 {
			fit = append(fit, ni)
		}
	}
	name := best(scoreAll(t, pl, pod, fit))
	for _, ni := range fit {
		if ni.Node().Name == name {
			pod.Spec.NodeName = name
			ni.(*framework.NodeInfo).AddPod(pod)
			pl.cache.podHandler().OnAdd(pod, false)
			return
		}
	}
	t.Fatalf("pod %s fits no node", pod.Name)
}

// fillOf is the node's requested share of its own CPU, memory and network capacity.
func fillOf(pl *Balance, ni fwk.NodeInfo) [3]float64 {
	a, r := ni.GetAllocatable(), ni.GetRequested()
	capacity, used := pl.netOf(pl.cache.get(ni.Node()), 0)
	return [3]float64{float64(r.GetMilliCPU()) / float64(a.GetMilliCPU()),
		float64(r.GetMemory()) / float64(a.GetMemory()), float64(used) / float64(capacity)}
}

// maxFill is the cluster's fill in its fullest dimension (requests over capacity, summed).
func maxFill(pl *Balance, nodes []fwk.NodeInfo) float64 {
	var used, capacity [3]float64
	for _, ni := range nodes {
		a, r := ni.GetAllocatable(), ni.GetRequested()
		nc, nu := pl.netOf(pl.cache.get(ni.Node()), 0)
		used = [3]float64{
			used[0] + float64(r.GetMilliCPU()),
			used[1] + float64(r.GetMemory()),
			used[2] + float64(nu),
		}
		capacity = [3]float64{
			capacity[0] + float64(a.GetMilliCPU()),
			capacity[1] + float64(a.GetMemory()),
			capacity[2] + float64(nc),
		}
	}
	return max(used[0]/capacity[0], used[1]/capacity[1], used[2]/capacity[2])
}

// TestScorePacksNearlyFullCluster: once a dimension's mean fill passes packAboveFillPercent,
// a pod goes to the node it leaves with the least free capacity (best fit), so that the free
// bandwidth stays in one piece for the next large pod; balancing alone, and any cluster below
// the threshold, sends it to the emptiest node. With the Filter off, a node already past its
// capacity is no fit at all.
func TestScorePacksNearlyFullCluster(t *testing.T) {
	t.Parallel()
	pod := makePod("next", 100, 128, "900M")
	for _, tc := range []struct {
		name string
		used []string // bandwidth already used on each of four 10G nodes
		pack int64
		want string
		// filterOff sets bandwidthOvercommitPercent to 0: nothing stops a node's bandwidth
		// going past its capacity.
		filterOff bool
	}{
		{"nearly full, packing", []string{"8G", "9G", "8.5G", "8.5G"}, 75, "n1", false},
		{"nearly full, packing off", []string{"8G", "9G", "8.5G", "8.5G"}, 100, "n0", false},
		{"half full, packing", []string{"4G", "5G", "4.5G", "4.5G"}, 75, "n0", false},
		{"nearly full, packing from empty", []string{"8G", "9G", "8.5G", "8.5G"}, 0, "n1", false},
		{"one node overcommitted, Filter off", []string{"12G", "9G", "8.5G", "8.5G"}, 75, "n1", true},
		// Mean fill past 100 % (Filter off): packing off must still balance, not divide by zero.
		{"overcommitted cluster, packing off", []string{"14G", "14G", "9.5G", "3G"}, 100, "n3", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			args := defaultArgs(t)
			args.PackAboveFillPercent = tc.pack
			if tc.filterOff {
				args.BandwidthOvercommitPercent = 0
			}
			p, err := New(context.Background(), args, nil)
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			pl := p.(*Balance)
			var nodes []fwk.NodeInfo
			for i, used := range tc.used {
				name := fmt.Sprintf("n%d", i)
				nodes = append(nodes, nodeInfo(pl, makeNode(name, 16, 64, "10G"),
					makePod(name+"-load", 1000, 1<<10, used)))
			}
			if got := best(scoreAll(t, pl, pod, nodes)); got != tc.want {
				t.Errorf("pod placed on %s, want %s (nodes use %v of 10G)", got, tc.want, tc.used)
			}
		})
	}
}

// TestScoreLeavesRoomForRecentShapes: once a dimension is nearly full, a pod goes to a node
// whose free room another shape seen lately cannot use (crumbs), not to the node it would make
// too small for that shape, although balance alone prefers that node.
func TestScoreLeavesRoomForRecentShapes(t *testing.T) {
	t.Parallel()
	large := makePod("large", 6000, 1<<10, "100M") // recent shape: 6 cores
	small := makePod("small", 1000, 128, "100M")
	for _, tc := range []struct {
		name    string
		netUsed string // bandwidth used on each node of 10G
		pack    int64
		want    string
	}{
		// room still takes the large pod (6.5 cores free), crumbs does not (5 free); the
		// network is the same on both, so only the CPU fill tells them apart.
		{"network nearly full", "9G", 85, "crumbs"},
		{"network half full: balance only", "5G", 85, "room"},
		{"packing off: balance only", "9G", 100, "room"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			args := defaultArgs(t)
			args.PackAboveFillPercent = tc.pack
			p, err := New(context.Background(), args, nil)
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			pl := p.(*Balance)
			nodes := []fwk.NodeInfo{
				nodeInfo(pl, makeNode("room", 16, 64, "10G"), makePod("room-load", 9500, 8<<10, tc.netUsed)),
				nodeInfo(pl, makeNode("crumbs", 16, 64, "10G"), makePod("crumbs-load", 11000, 8<<10, tc.netUsed)),
			}
			scoreAll(t, pl, large, nodes) // the scheduler has seen a pod of the large shape
			if got := best(scoreAll(t, pl, small, nodes)); got != tc.want {
				t.Errorf("small pod placed on %s, want %s", got, tc.want)
			}
		})
	}
}

// TestScoreWithGuardDoesNotAllocate: Score's check of the recent shapes allocates nothing.
func TestScoreWithGuardDoesNotAllocate(t *testing.T) {
	pl := newTestPlugin(t)
	nodes := []fwk.NodeInfo{
		nodeInfo(pl, makeNode("a", 16, 64, "10G"), makePod("a-load", 9500, 8<<10, "9G")),
		nodeInfo(pl, makeNode("b", 16, 64, "10G"), makePod("b-load", 11000, 8<<10, "9G")),
	}
	scoreAll(t, pl, makePod("large", 6000, 1<<10, "100M"), nodes)
	pod := makePod("small", 1000, 128, "100M")
	ctx := context.Background()
	cs := framework.NewCycleState()
	if st := pl.PreScore(ctx, cs, pod, nodes); !st.IsSuccess() {
		t.Fatal(st)
	}
	if s := pl.demandState(cs, pod); s.guarded == 0 {
		t.Fatal("no shape guarded: the test does not exercise the guard")
	}
	if n := testing.AllocsPerRun(100, func() {
		for _, ni := range nodes {
			_, _ = pl.Score(ctx, cs, pod, ni)
		}
	}); n != 0 {
		t.Fatalf("Score allocates %v times per run, want 0", n)
	}
}
