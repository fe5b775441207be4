package balance

import (
	"context"
	"maps"
	"math"

	v1 "k8s.io/api/core/v1"
	"k8s.io/klog/v2"
	fwk "k8s.io/kube-scheduler/framework"
)

// costScale turns the float cost into the int64 the framework carries between Score and
// NormalizeScore, keeping six decimal places.
const costScale = 1e6

// maxCost caps the raw cost so absurd inputs (a node with a few bits of capacity) cannot overflow.
const maxCost = 1e12

// ErrReasonBandwidth is the Filter's reason, shown in the pod's FailedScheduling event.
const ErrReasonBandwidth = "node(s) didn't have enough network bandwidth"

// PreFilter computes the pod's demand once per cycle. It skips the Filter when the Filter is off
// or the pod asks for no annotation bandwidth (the extended resource is checked by NodeResourcesFit).
func (pl *Balance) PreFilter(_ context.Context, cs fwk.CycleState, pod *v1.Pod,
	_ []fwk.NodeInfo) (*fwk.PreFilterResult, *fwk.Status) {
	s := pl.demandState(cs, pod)
	if pl.overcommit == 0 || s.cacheBandwidth() == 0 {
		return nil, fwk.NewStatus(fwk.Skip)
	}
	return nil, nil
}

// PreFilterExtensions returns the plugin itself: nominated pods and preemption victims change
// the annotation bandwidth the Filter sees through a per-node delta in the CycleState.
func (pl *Balance) PreFilterExtensions() fwk.PreFilterExtensions { return pl }

// deltaKey is where AddPod and RemovePod keep the per-node change of annotation bandwidth.
const deltaKey fwk.StateKey = "PreFilterDelta" + Name

// nodeDelta is the bandwidth, per node, of pods added (nominated pods) or removed (preemption
// victims) on top of the cache. The framework clones the CycleState per node before calling
// AddPod/RemovePod, so the map stays tiny and is only made on those paths.
type nodeDelta map[string]int64

// Clone implements fwk.StateData.
func (d nodeDelta) Clone() fwk.StateData { return maps.Clone(d) }

// AddPod counts a pod the framework places on the node for this Filter run (a nominated pod
// of higher or equal priority).
func (pl *Balance) AddPod(_ context.Context, cs fwk.CycleState, _ *v1.Pod, pi fwk.PodInfo,
	ni fwk.NodeInfo) *fwk.Status {
	pl.addDelta(cs, pi.GetPod(), ni, 1)
	return nil
}

// RemovePod takes out a pod the framework removes from the node for this Filter run (a
// preemption victim), so preemption can free annotated bandwidth.
func (pl *Balance) RemovePod(_ context.Context, cs fwk.CycleState, _ *v1.Pod, pi fwk.PodInfo,
	ni fwk.NodeInfo) *fwk.Status {
	pl.addDelta(cs, pi.GetPod(), ni, -1)
	return nil
}

func (pl *Balance) addDelta(cs fwk.CycleState, pod *v1.Pod, ni fwk.NodeInfo, sign int64) {
	node := ni.Node()
	if node == nil {
		return
	}
	d, err := podDemand(pod, pl.heavyDefault)
	if err != nil || d.cacheBandwidth() == 0 {
		return
	}
	delta, _ := readDelta(cs)
	if delta == nil {
		delta = nodeDelta{}
		cs.Write(deltaKey, delta)
	}
	delta[node.Name] += sign * d.cacheBandwidth()
}

func readDelta(cs fwk.CycleState) (nodeDelta, bool) {
	v, err := cs.Read(deltaKey)
	if err != nil {
		return nil, false
	}
	d, ok := v.(nodeDelta)
	return d, ok
}

// Filter rejects a node when the pod's bandwidth would push the node beyond
// BandwidthOvercommitPercent of its capacity.
func (pl *Balance) Filter(_ context.Context, cs fwk.CycleState, pod *v1.Pod,
	nodeInfo fwk.NodeInfo) *fwk.Status {
	s := pl.demandState(cs, pod)
	node := nodeInfo.Node()
	if node == nil || s.Network == 0 {
		return nil
	}
	extended := nodeInfo.GetRequested().GetScalarResources()[ResourceBandwidth]
	load := pl.cache.get(node)
	capacity, used := pl.netOf(load, extended)
	if delta, ok := readDelta(cs); ok {
		if dv := delta[node.Name]; dv > 0 {
			used = satAdd(used, dv)
		} else {
			used = max(0, used+dv)
		}
	}
	limit := float64(capacity) * float64(pl.overcommit) / 100
	if float64(satAdd(used, s.Network)) <= limit {
		return nil
	}
	// The cache follows its own informer handler: right after a pod leaves the node it may
	// still count it, while the scheduler's snapshot, and the queueing hint that requeued
	// this pod, already do not. Before rejecting, count the snapshot's pods on the node; the
	// snapshot already holds the nominated pods and preemption victims the delta tracks.
	_, used = pl.netOf(recount(load, nodeInfo), extended)
	if float64(satAdd(used, s.Network)) > limit {
		return fwk.NewStatus(fwk.Unschedulable, ErrReasonBandwidth)
	}
	return nil
}

// recount returns l with the annotation bandwidth summed over the pods of the scheduler's
// snapshot of the node (bound, assumed and, during preemption, nominated pods). It parses every
// pod on the node, so Filter calls it only on the way to a rejection.
func recount(l nodeLoad, nodeInfo fwk.NodeInfo) nodeLoad {
	l.annotated, l.heavy = 0, 0
	for _, pi := range nodeInfo.GetPods() {
		if rec, ok := podRecord(pi.GetPod()); ok {
			l.annotated = satAdd(l.annotated, rec.bandwidth)
			if rec.heavy {
				l.heavy++
			}
		}
	}
	return l
}

// PreScore makes sure the demand is in the CycleState and skips scoring for pods that ask for
// nothing (like BalancedAllocation does for best-effort pods) or carry a malformed annotation.
// It snapshots the cache for the nodes to score and takes their mean fill per dimension (see
// Score), so that Score neither locks nor sums over nodes.
func (pl *Balance) PreScore(_ context.Context, cs fwk.CycleState, pod *v1.Pod,
	nodes []fwk.NodeInfo) *fwk.Status {
	s := pl.demandState(cs, pod)
	if s.malformed || s.IsZero() {
		return fwk.NewStatus(fwk.Skip)
	}
	if pl.snapshot == nil {
		pl.snapshot = make(map[string]nodeLoad, len(nodes))
	}
	clear(pl.snapshot)
	s.nodes = pl.snapshot
	if cap(pl.loads) < len(nodes) {
		pl.loads = make([]nodeLoad, len(nodes))
	}
	loads := pl.loads[:len(nodes)]
	pl.cache.snapshot(nodes, s.nodes, loads)
	var fill, capacity [3]float64
	n := 0
	for i, ni := range nodes {
		if ni.Node() == nil {
			continue
		}
		a, r := ni.GetAllocatable(), ni.GetRequested()
		netCap, netUsed := pl.netOf(loads[i], r.GetScalarResources()[ResourceBandwidth])
		fill[0] += frac(r.GetMilliCPU(), float64(a.GetMilliCPU()))
		fill[1] += frac(r.GetMemory(), float64(a.GetMemory()))
		fill[2] += frac(netUsed, float64(netCap))
		capacity[0] += float64(a.GetMilliCPU())
		capacity[1] += float64(a.GetMemory())
		capacity[2] += float64(netCap)
		n++
	}
	s.meanFill, s.keep, s.pack = [3]float64{}, 1, [3]float64{}
	if n > 0 {
		s.keep = 1 - 1/float64(n)
		for d := range s.meanFill {
			s.meanFill[d] = fill[d] / float64(n)
			// packAbove 1 never packs, even when annotated bandwidth has taken the mean past 1.
			if pl.packAbove < 1 && s.meanFill[d] > pl.packAbove && capacity[d] > 0 {
				ramp := min(1, (s.meanFill[d]-pl.packAbove)/(1-pl.packAbove))
				s.pack[d] = ramp * float64(n) / capacity[d]
			}
		}
	}
	// Once a dimension is nearly full, a pod goes first where it takes no room from the other
	// shapes of pod seen lately: into the crumbs they cannot use.
	var recent [shapeSlots]shape
	nRecent := pl.recent.observe(s.shape(), &recent)
	s.guarded = 0
	if s.pack != [3]float64{} {
		for _, sh := range recent[:nRecent] {
			if sh != s.shape() {
				s.guard[s.guarded] = sh
				s.guarded++
			}
		}
	}
	if logger := pl.logger.V(5); logger.Enabled() && n > 0 {
		logger.Info("Scoring pod", "pod", klog.KObj(pod), "class", deriveClass(s.Demand,
			capacity[0]/float64(n), capacity[1]/float64(n), capacity[2]/float64(n)),
			"milliCPU", s.MilliCPU, "memory", s.Memory, "bandwidth", s.Network, "meanFill", s.meanFill,
			"packing", [3]bool{s.pack[0] > 0, s.pack[1] > 0, s.pack[2] > 0}, "protectedShapes", s.guarded)
	}
	return nil
}

// Score returns the raw cost of placing the pod on the node (lower is better; NormalizeScore
// turns it into 0-100). It allocates nothing, takes no lock (it reads PreScore's snapshot) and
// calls no API. The cost is the increase of the variance across nodes of each dimension's fill
// fraction (share of the node's own capacity), weighted over dimensions, plus a packing term
// in the dimensions the cluster has nearly filled:
//
// cost = Σ_d w_d · (p_d · (2 (f_d − F_d) + p_d (1 − 1/N)) + k_d · free_d / C_d) / Σ_d w_d,
// d ∈ {cpu, memory, network}
//
// where f_d is the node's requested fraction before, p_d the pod's demand over the node's
// capacity, F_d the mean fill of the N nodes scored. A pod moves a small node's fill more than a
// big node's, so below the mean a small node gains more and above it loses more. On identical
// nodes p_d is the same everywhere and the ranking is that of the increase of Σ_d w_d f_d².
// free_d is what the node has left after the pod (its magnitude, should the pod overcommit the
// node's bandwidth), C_d the mean capacity of the scored nodes and
// k_d rises from 0 to 1 as F_d goes from PackAboveFillPercent to 100 %: best fit, which leaves
// the free capacity in few nodes, large enough for the next large pod. While packing, a node
// where the pod would end the room for another recent pod shape (headroom.go) is marked with
// lastResort, which NormalizeScore ranks last.
// See docs/scheduler.md for the derivation.
func (pl *Balance) Score(_ context.Context, cs fwk.CycleState, pod *v1.Pod,
	nodeInfo fwk.NodeInfo) (int64, *fwk.Status) {
	s := pl.demandState(cs, pod)
	node := nodeInfo.Node()
	if node == nil || s.malformed {
		return 0, nil
	}
	alloc, req := nodeInfo.GetAllocatable(), nodeInfo.GetRequested()
	l, ok := s.nodes[node.Name]
	if !ok { // a node PreScore did not see
		l = pl.cache.get(node)
	}
	capacity, netUsed := pl.netOf(l, req.GetScalarResources()[ResourceBandwidth])
	cost := pl.wCPU*s.cost(0, req.GetMilliCPU(), s.MilliCPU, alloc.GetMilliCPU()) +
		pl.wMem*s.cost(1, req.GetMemory(), s.Memory, alloc.GetMemory()) +
		pl.wNet*s.cost(2, netUsed, s.Network, capacity)
	cost /= pl.wCPU + pl.wMem + pl.wNet
	score := int64(max(-maxCost, min(cost*costScale, maxCost)))
	if s.guarded > 0 {
		free, p := freeRoom(alloc, req, capacity, netUsed), s.shape()
		for _, sh := range s.guard[:s.guarded] {
			if sh.takesRoom(free, p) {
				return score + lastResort, nil
			}
		}
	}
	return score, nil
}

// lastResort marks the raw score of a node where the pod would end the room for another pod shape
// seen recently; NormalizeScore ranks such nodes below all others. It lies beyond any clamped
// cost, so the mark and the cost can both be read back.
const lastResort = 4 * maxCost

// freeRoom is a node's unrequested CPU, memory and bandwidth.
func freeRoom(alloc, req fwk.Resource, netCap, netUsed int64) shape {
	return shape{alloc.GetMilliCPU() - req.GetMilliCPU(), alloc.GetMemory() - req.GetMemory(), netCap - netUsed}
}

// cost is dimension d's part of Score's cost when the node's used grows by demand: the increase
// of Σ_n (f_n − F)², p(2(f − F) + p(1 − 1/N)) with f = used/capacity and p = demand/capacity,
// plus the packing term, the capacity left free (or overcommitted) in units of a mean node's,
// weighted by PreScore. 0 without capacity or demand.
func (s *state) cost(d int, used, demand, capacity int64) float64 {
	if capacity <= 0 || demand == 0 {
		return 0
	}
	c := float64(capacity)
	f, p := float64(used)/c, float64(demand)/c
	// |free|: where the Filter lets a pod overcommit the network, a node the pod would take past
	// its capacity must not look like the tightest fit.
	return p*(2*(f-s.meanFill[d])+p*s.keep) + s.pack[d]*math.Abs(c-float64(used)-float64(demand))
}

// ScoreExtensions returns the plugin itself, which normalizes its scores.
func (pl *Balance) ScoreExtensions() fwk.ScoreExtensions { return pl }

// NormalizeScore maps the lowest cost to MaxNodeScore and the highest to MinNodeScore, linearly.
// When all nodes cost the same every node gets MinNodeScore, so the plugin has no say. Nodes
// Score marked (the pod would end their room for a recent shape) get MinNodeScore, and the others share the
// range among themselves; when every node is marked, they are ranked by cost alone.
func (pl *Balance) NormalizeScore(_ context.Context, _ fwk.CycleState, _ *v1.Pod,
	scores fwk.NodeScoreList) *fwk.Status {
	marked := 0
	for _, s := range scores {
		if s.Score > maxCost {
			marked++
		}
	}
	if marked == len(scores) {
		for i := range scores {
			scores[i].Score -= lastResort
		}
		marked = 0
	}
	lo, hi := int64(math.MaxInt64), int64(math.MinInt64)
	for _, s := range scores {
		if s.Score <= maxCost {
			lo, hi = min(lo, s.Score), max(hi, s.Score)
		}
	}
	for i := range scores {
		switch {
		case scores[i].Score > maxCost:
			scores[i].Score = fwk.MinNodeScore
		case hi == lo && marked == 0:
			scores[i].Score = fwk.MinNodeScore
		case hi == lo:
			scores[i].Score = fwk.MaxNodeScore
		default:
			scores[i].Score = fwk.MaxNodeScore * (hi - scores[i].Score) / (hi - lo)
		}
	}
	return nil
}
