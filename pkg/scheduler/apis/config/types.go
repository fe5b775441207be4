package config

import (
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// BerthBalanceArgs are the resolved arguments of the BerthBalance plugin.
//
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
type BerthBalanceArgs struct {
	metav1.TypeMeta

	// CPUWeight, MemoryWeight and NetworkWeight weigh each dimension in the score (0-100, sum > 0).
	CPUWeight     int64
	MemoryWeight  int64
	NetworkWeight int64
	// DefaultNodeBandwidth is the network capacity (bits/s) of a node that declares none.
	DefaultNodeBandwidth resource.Quantity
	// NetworkHeavyPodBandwidth is the demand (bits/s) assumed for a pod annotated
	// berth.dev/profile=network that declares no bandwidth of its own.
	NetworkHeavyPodBandwidth resource.Quantity
	// BandwidthOvercommitPercent bounds the sum of pod bandwidth on a node, in percent of its
	// capacity, in the Filter. 0 turns the Filter off.
	BandwidthOvercommitPercent int64
	// PackAboveFillPercent is the mean fill (percent of capacity) of a dimension above which the
	// score also prefers the node the pod leaves with the least free capacity in that dimension,
	// so that a nearly full cluster keeps room for large pods. 100 never packs.
	PackAboveFillPercent int64
}
