package schedbench

import (
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
// bandwidth each fit within the nodes' total capacity, and that has at most 110 pods per node.
// It ignores that a pod cannot be split across nodes, so the exact optimum (an offline bin
// packing) can be lower; it is never higher.
func CapacityBoundOf(seq []Kind, nodes []*v1.Node) int {
	var limit [3]int64
	for _, n := range nodes {
		a := n.Status.Allocatable
		limit[0] += a.Cpu().MilliValue()
		limit[1] += a.Memory().Value()
		limit[2] += a.Name(balance.ResourceBandwidth, resource.DecimalSI).Value()
	}
	return capacityBound(seq, limit, 110*int64(len(nodes)))
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
