package balance

import (
	"fmt"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	resourcehelper "k8s.io/component-helpers/resource"

	"github.com/berth-dev/berth/pkg/scheduler/apis/config/validation"
	"github.com/berth-dev/berth/pkg/wellknown"
)

// Annotations, labels and resource names the plugin reads.
const (
	// ResourceBandwidth is the extended resource, node annotation, node label and pod annotation
	// carrying a bandwidth in bits per second (a Kubernetes quantity such as 500M or 10G).
	ResourceBandwidth v1.ResourceName = wellknown.NetworkBandwidth
	// AnnotationBandwidth is the pod (or node) annotation with a bandwidth in bits per second.
	AnnotationBandwidth = string(ResourceBandwidth)
	// AnnotationIngressBandwidth and AnnotationEgressBandwidth are the CNI bandwidth plugin's pod
	// annotations.
	AnnotationIngressBandwidth = "kubernetes.io/ingress-bandwidth"
	AnnotationEgressBandwidth  = "kubernetes.io/egress-bandwidth"
	// AnnotationProfile overrides the derived profile class: cpu, memory, network or balanced.
	AnnotationProfile = wellknown.Profile
)

// Class is a pod's resource profile.
type Class string

// Profile classes.
const (
	ClassCPU      Class = "cpu"
	ClassMemory   Class = "memory"
	ClassNetwork  Class = "network"
	ClassBalanced Class = "balanced"
)

// Demand is what one pod asks of a node. Its fields are exported so that it can serve as the
// pod's signature fragment for opportunistic batching.
type Demand struct {
	MilliCPU int64
	Memory   int64
	// Network is in bits per second; the larger of ingress and egress, since each direction of a
	// full-duplex NIC has the whole capacity.
	Network int64
	// NetworkExtended is true when Network came from the extended resource request, which the
	// scheduler's NodeInfo already accounts for (so the plugin's own cache must not).
	NetworkExtended bool
	// NetworkDefaulted is true when Network is networkHeavyPodBandwidth because the pod is
	// annotated berth.dev/profile=network without a bandwidth; the shared cache counts such pods
	// apart so each profile can apply its own default.
	NetworkDefaulted bool
	// Class is the override from berth.dev/profile, empty when derived.
	Class Class
}

// IsZero reports whether the pod asks for nothing the plugin balances.
func (d Demand) IsZero() bool { return d.MilliCPU == 0 && d.Memory == 0 && d.Network == 0 }

// cacheBandwidth is the bandwidth the plugin's own cache must track for this pod.
func (d Demand) cacheBandwidth() int64 {
	if d.NetworkExtended {
		return 0
	}
	return d.Network
}

// podNet is how the cache records the pod: its explicit annotation bandwidth, or that it is a
// network-profile pod whose bandwidth is the profile's default.
func (d Demand) podNet(node string, assumed bool) podNet {
	if d.NetworkDefaulted {
		return podNet{node: node, heavy: true, assumed: assumed}
	}
	return podNet{node: node, bandwidth: d.cacheBandwidth(), assumed: assumed}
}

// podDemand reads a pod's demand. heavyDefault is used for berth.dev/profile=network pods without
// a bandwidth. A malformed annotation returns an error; the caller scores the pod neutrally.
func podDemand(pod *v1.Pod, heavyDefault int64) (Demand, error) {
	reqs := resourcehelper.PodRequests(pod, resourcehelper.PodResourcesOptions{})
	d := Demand{MilliCPU: reqs.Cpu().MilliValue(), Memory: reqs.Memory().Value()}
	if q, ok := reqs[ResourceBandwidth]; ok && q.Sign() > 0 {
		if q.CmpInt64(validation.MaxBandwidth) > 0 {
			return d, fmt.Errorf("resource request %s=%s: bandwidth above the maximum of 1P bit/s",
				ResourceBandwidth, q.String())
		}
		d.Network, d.NetworkExtended = q.Value(), true
	}
	if c, ok := pod.Annotations[AnnotationProfile]; ok {
		switch Class(c) {
		case ClassCPU, ClassMemory, ClassNetwork, ClassBalanced:
			d.Class = Class(c)
		default:
			return d, fmt.Errorf("annotation %s=%q: want one of cpu, memory, network, balanced",
				AnnotationProfile, c)
		}
	}
	if d.NetworkExtended {
		return d, nil
	}
	if v, ok := pod.Annotations[AnnotationBandwidth]; ok {
		bw, err := parseBandwidth(AnnotationBandwidth, v)
		d.Network = bw
		return d, err
	}
	for _, key := range []string{AnnotationIngressBandwidth, AnnotationEgressBandwidth} {
		if v, ok := pod.Annotations[key]; ok {
			bw, err := parseBandwidth(key, v)
			if err != nil {
				return d, err
			}
			d.Network = max(d.Network, bw)
		}
	}
	if d.Network == 0 && d.Class == ClassNetwork {
		d.Network, d.NetworkDefaulted = heavyDefault, true
	}
	return d, nil
}

func parseBandwidth(key, v string) (int64, error) {
	q, err := resource.ParseQuantity(v)
	if err != nil {
		return 0, fmt.Errorf("annotation %s=%q is not a bandwidth in bits per second (e.g. 100M): %w",
			key, v, err)
	}
	if q.Sign() < 0 {
		return 0, fmt.Errorf("annotation %s=%q: bandwidth must not be negative", key, v)
	}
	// Value() wraps silently past int64 (20E reads as 0), so compare before converting.
	if q.CmpInt64(validation.MaxBandwidth) > 0 {
		return 0, fmt.Errorf("annotation %s=%q: bandwidth above the maximum of 1P bit/s", key, v)
	}
	return q.Value(), nil
}

// nodeCapacity returns the network capacity a node declares in bits per second: the allocatable
// extended resource, else the annotation, else the label; 0 when it declares none. raw is the
// declared text, so the caller logs a malformed value once rather than on every node update. A
// malformed or out-of-range value returns 0 and an error; the caller then uses the default.
func nodeCapacity(node *v1.Node) (capacity int64, raw string, err error) {
	if q, ok := node.Status.Allocatable[ResourceBandwidth]; ok && q.Sign() > 0 {
		if q.CmpInt64(validation.MaxBandwidth) > 0 {
			return 0, q.String(), fmt.Errorf("node %s: allocatable %s=%s is above the maximum of 1P bit/s, "+
				"using defaultNodeBandwidth",
				node.Name, ResourceBandwidth, q.String())
		}
		return q.Value(), "", nil
	}
	v, ok := node.Annotations[AnnotationBandwidth]
	if !ok {
		v, ok = node.Labels[AnnotationBandwidth]
	}
	if !ok {
		return 0, "", nil
	}
	q, err := resource.ParseQuantity(v)
	if err != nil || q.Sign() <= 0 || q.CmpInt64(validation.MaxBandwidth) > 0 {
		return 0, v, fmt.Errorf("node %s: %s=%q is not a positive bandwidth of at most 1P bit/s, using "+
			"defaultNodeBandwidth",
			node.Name, AnnotationBandwidth, v)
	}
	return q.Value(), v, nil
}

// deriveClass names the dimension in which d is largest relative to the given capacities.
func deriveClass(d Demand, cpuCap, memCap, netCap float64) Class {
	if d.Class != "" {
		return d.Class
	}
	fc, fm, fn := frac(d.MilliCPU, cpuCap), frac(d.Memory, memCap), frac(d.Network, netCap)
	switch hi, lo := max(fc, fm, fn), min(fc, fm, fn); {
	case hi == 0 || hi < 1.5*lo:
		return ClassBalanced
	case hi == fn:
		return ClassNetwork
	case hi == fm:
		return ClassMemory
	default:
		return ClassCPU
	}
}

func frac(v int64, c float64) float64 {
	if c <= 0 {
		return 0
	}
	return float64(v) / c
}
