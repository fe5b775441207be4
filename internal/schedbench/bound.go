package schedbench

import (
	"cmp"
	"slices"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/berth-dev/berth/pkg/scheduler/balance"
)

// CapacityBound is a proven upper bound on the pods any scheduler can place from seq on nodes
// identical nodes of the default size before the first pod that fits nowhere; see
// CapacityBoundOf.
func CapacityBound(seq []Kind, nodes int) int {
	n := int64(nodes)
	return capacityBound(seq, [3]int64{n * NodeCPU.MilliValue(), n * NodeMemory.Value(), n * NodeBandwidth.Value()}, 110*n)
}

// CapacityBoundOf is a proven upper bound on the pods any scheduler can place from seq on nodes
// before the first pod that fits nowhere: the longest prefix of seq whose summed CPU, memory and
// bandwidth each fit within the nodes' total capacity, and whose length fits the nodes' total
// allocatable pods. It ignores that a pod cannot be split across nodes, so the exact optimum (an
// offline bin packing) can be lower; it is never higher.
func CapacityBoundOf(seq []Kind, nodes []*v1.Node) int {
	var limit [3]int64
	var pods int64
	for _, n := range nodes {
		a := n.Status.Allocatable
		limit[0] += a.Cpu().MilliValue()
		limit[1] += a.Memory().Value()
		limit[2] += a.Name(balance.ResourceBandwidth, resource.DecimalSI).Value()
		pods += a.Pods().Value()
	}
	return capacityBound(seq, limit, pods)
}

func capacityBound(seq []Kind, limit [3]int64, maxPods int64) int {
	var sum [3]int64
	for i, k := range seq {
		sum[0] += k.CPU.MilliValue()
		sum[1] += k.Memory.Value()
		sum[2] += k.Bandwidth.Value()
		if sum[0] > limit[0] || sum[1] > limit[1] || sum[2] > limit[2] || int64(i+1) > maxPods {
			return i
		}
	}
	return len(seq)
}

// OfflineNetworkCV is what an offline placement reaches on network balance where the matrix
// measures it: the pods of seq up to the one that first brings the group to FillTarget in its
// fullest dimension (the same pods whatever the scheduler, as long as it placed them all), placed
// largest bandwidth first, each on the node that fits it (CPU, memory, bandwidth, 110 pods) and
// has the lowest network fill after it, as a share of its own capacity. It returns the CV of
// network fill across nodes, and false if some pod fitted nowhere. Knowing every pod in advance
// and ignoring CPU and memory balance, it is not a bound on what an online scheduler can do, but
// a point that shows whether a cell's network goal is reachable at all: no placement of those
// pods is more even than the optimum, and this one is an upper bound on the optimum.
func OfflineNetworkCV(seq []Kind, nodes []*v1.Node) (float64, bool) {
	m := newFillMeter(nodes)
	pods, _ := measuredPods(seq, m)
	slices.SortStableFunc(pods, func(a, b Kind) int { return b.Bandwidth.Cmp(a.Bandwidth) })
	var q Quality
	for _, k := range pods {
		best, bestFill := -1, 0.0
		for i := range nodes {
			if !m.fits(i, k) {
				continue
			}
			if f := (m.used[i][2] + float64(k.Bandwidth.Value())) / m.capacity[i][2]; best < 0 || f < bestFill {
				best, bestFill = i, f
			}
		}
		if best < 0 {
			return 0, false
		}
		m.place(&q, best, k)
	}
	return cv(m.used, m.capacity)[2], true
}

// measuredPods is the prefix of seq the matrix measures at: up to the pod that first brings
// the group to FillTarget in its fullest dimension, and the group's total capacity.
func measuredPods(seq []Kind, m *fillMeter) ([]Kind, [3]float64) {
	var sum, capacity [3]float64
	for _, c := range m.capacity {
		for d := range 3 {
			capacity[d] += c[d]
		}
	}
	n := 0
	for n < len(seq) {
		k := seq[n]
		sum[0] += float64(k.CPU.MilliValue())
		sum[1] += float64(k.Memory.Value())
		sum[2] += float64(k.Bandwidth.Value())
		n++
		if max(sum[0]/capacity[0], sum[1]/capacity[1], sum[2]/capacity[2]) >= FillTarget {
			break
		}
	}
	return slices.Clone(seq[:n]), capacity
}

// OfflineBalanceCV is the CPU, memory and network CV an offline placement reaches where the
// matrix measures them, balancing the three dimensions together: the same pods as
// OfflineNetworkCV, largest first (by their largest share of the group's capacity in any
// dimension), each on the node that fits it where it raises the imbalance BerthBalance
// minimises (J, equal weights: the sum over dimensions of the squared deviations of each node's
// fill from the group's mean fill) the least. It knows every pod in advance, which no online
// scheduler does, so it shows whether a cell's CPU and memory goals can be met together with
// an even network, and how far berth is from a placement that does; it is not an optimum. It
// returns false if some pod fitted nowhere.
func OfflineBalanceCV(seq []Kind, nodes []*v1.Node) ([3]float64, bool) {
	m := newFillMeter(nodes)
	pods, capacity := measuredPods(seq, m)
	share := func(k Kind) float64 {
		return max(float64(k.CPU.MilliValue())/capacity[0], float64(k.Memory.Value())/capacity[1],
			float64(k.Bandwidth.Value())/capacity[2])
	}
	slices.SortStableFunc(pods, func(a, b Kind) int { return cmp.Compare(share(b), share(a)) })
	n := float64(len(nodes))
	var q Quality
	for _, k := range pods {
		demand := [3]float64{float64(k.CPU.MilliValue()), float64(k.Memory.Value()),
			float64(k.Bandwidth.Value())}
		var mean [3]float64
		for i := range nodes {
			for d := range 3 {
				mean[d] += m.used[i][d] / m.capacity[i][d] / n
			}
		}
		best, bestCost := -1, 0.0
		for i := range nodes {
			if !m.fits(i, k) {
				continue
			}
			cost := 0.0
			for d := range 3 {
				p := demand[d] / m.capacity[i][d]
				cost += p * (2*(m.used[i][d]/m.capacity[i][d]-mean[d]) + p*(1-1/n))
			}
			if best < 0 || cost < bestCost {
				best, bestCost = i, cost
			}
		}
		if best < 0 {
			return [3]float64{}, false
		}
		m.place(&q, best, k)
	}
	return cv(m.used, m.capacity), true
}
