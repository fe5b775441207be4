package v1

import (
	"k8s.io/apimachinery/pkg/conversion"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/berth-dev/berth/pkg/scheduler/apis/config"
)

// Convert_v1_BerthBalanceArgs_To_config_BerthBalanceArgs converts the versioned args to the
// internal type. Call it on defaulted args; nil fields become zero values.
func Convert_v1_BerthBalanceArgs_To_config_BerthBalanceArgs(in *BerthBalanceArgs, out *config.BerthBalanceArgs, _ conversion.Scope) error { //nolint:revive // conversion-gen naming
	out.CPUWeight = deref(in.CPUWeight)
	out.MemoryWeight = deref(in.MemoryWeight)
	out.NetworkWeight = deref(in.NetworkWeight)
	out.BandwidthOvercommitPercent = deref(in.BandwidthOvercommitPercent)
	if in.DefaultNodeBandwidth != nil {
		out.DefaultNodeBandwidth = in.DefaultNodeBandwidth.DeepCopy()
	}
	if in.NetworkHeavyPodBandwidth != nil {
		out.NetworkHeavyPodBandwidth = in.NetworkHeavyPodBandwidth.DeepCopy()
	}
	return nil
}

// Convert_config_BerthBalanceArgs_To_v1_BerthBalanceArgs converts the internal args to the
// versioned type (used when the scheduler prints its effective configuration).
func Convert_config_BerthBalanceArgs_To_v1_BerthBalanceArgs(in *config.BerthBalanceArgs, out *BerthBalanceArgs, _ conversion.Scope) error { //nolint:revive // conversion-gen naming
	out.CPUWeight = ptr(in.CPUWeight)
	out.MemoryWeight = ptr(in.MemoryWeight)
	out.NetworkWeight = ptr(in.NetworkWeight)
	out.BandwidthOvercommitPercent = ptr(in.BandwidthOvercommitPercent)
	d, n := in.DefaultNodeBandwidth.DeepCopy(), in.NetworkHeavyPodBandwidth.DeepCopy()
	out.DefaultNodeBandwidth, out.NetworkHeavyPodBandwidth = &d, &n
	return nil
}

func deref(p *int64) int64 {
	if p == nil {
		return 0
	}
	return *p
}

func ptr(v int64) *int64 { return &v }

// RegisterConversions adds both conversion functions to a scheme.
func RegisterConversions(s *runtime.Scheme) error {
	if err := s.AddConversionFunc((*BerthBalanceArgs)(nil), (*config.BerthBalanceArgs)(nil), func(a, b any, scope conversion.Scope) error {
		return Convert_v1_BerthBalanceArgs_To_config_BerthBalanceArgs(a.(*BerthBalanceArgs), b.(*config.BerthBalanceArgs), scope)
	}); err != nil {
		return err
	}
	return s.AddConversionFunc((*config.BerthBalanceArgs)(nil), (*BerthBalanceArgs)(nil), func(a, b any, scope conversion.Scope) error {
		return Convert_config_BerthBalanceArgs_To_v1_BerthBalanceArgs(a.(*config.BerthBalanceArgs), b.(*BerthBalanceArgs), scope)
	})
}
