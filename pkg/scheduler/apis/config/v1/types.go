package v1

import (
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// BerthBalanceArgs are the arguments of the BerthBalance plugin as written in a
// KubeSchedulerConfiguration. Unset fields get defaults (see SetDefaults_BerthBalanceArgs).
//
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
type BerthBalanceArgs struct {
	metav1.TypeMeta `json:",inline"`

	// CPUWeight weighs the CPU dimension (0-100, default 1).
	CPUWeight *int64 `json:"cpuWeight,omitempty"`
	// MemoryWeight weighs the memory dimension (0-100, default 1).
	MemoryWeight *int64 `json:"memoryWeight,omitempty"`
	// NetworkWeight weighs the network dimension (0-100, default 1).
	NetworkWeight *int64 `json:"networkWeight,omitempty"`
	// DefaultNodeBandwidth is the capacity of a node that declares none, in bits/s (default 10G).
	DefaultNodeBandwidth *resource.Quantity `json:"defaultNodeBandwidth,omitempty"`
	// NetworkHeavyPodBandwidth is the demand of a pod annotated berth.dev/profile=network without
	// a bandwidth of its own, in bits/s (default 500M).
	NetworkHeavyPodBandwidth *resource.Quantity `json:"networkHeavyPodBandwidth,omitempty"`
	// BandwidthOvercommitPercent bounds pod bandwidth per node in percent of its capacity
	// (default 100; 0 turns the Filter off).
	BandwidthOvercommitPercent *int64 `json:"bandwidthOvercommitPercent,omitempty"`
	// PackAboveFillPercent is the mean fill of a dimension, in percent of capacity, above which
	// the score turns from balancing to packing in that dimension (best fit), fully at 100 %
	// (0-100, default 85; 100 never packs).
	PackAboveFillPercent *int64 `json:"packAboveFillPercent,omitempty"`
}
