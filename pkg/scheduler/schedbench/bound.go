package schedbench

// CapacityBound is a proven upper bound on the pods any scheduler can place from seq on nodes
// identical nodes before the first pod that fits nowhere: the longest prefix of seq whose summed
// CPU, memory and bandwidth each fit within the group's total capacity, and that has at most 110
// pods per node. It ignores that a pod cannot be split across nodes, so the exact optimum (an
// offline bin packing) can be lower; it is never higher.
func CapacityBound(seq []Kind, nodes int) int {
	n := int64(nodes)
	limit := [3]int64{n * NodeCPU.MilliValue(), n * NodeMemory.Value(), n * NodeBandwidth.Value()}
	var sum [3]int64
	for i, k := range seq {
		sum[0] += k.CPU.MilliValue()
		sum[1] += k.Memory.Value()
		sum[2] += k.Bandwidth.Value()
		if sum[0] > limit[0] || sum[1] > limit[1] || sum[2] > limit[2] || int64(i+1) > 110*n {
			return i
		}
	}
	return len(seq)
}
