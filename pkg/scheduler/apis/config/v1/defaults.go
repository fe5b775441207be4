package v1

import (
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/runtime"
)

// Defaults of BerthBalanceArgs.
var (
	DefaultWeight                     int64 = 1
	DefaultNodeBandwidth                    = resource.MustParse("10G")
	DefaultNetworkHeavyPodBandwidth         = resource.MustParse("500M")
	DefaultBandwidthOvercommitPercent int64 = 100
)

// SetDefaults_BerthBalanceArgs fills unset fields of args.
func SetDefaults_BerthBalanceArgs(args *BerthBalanceArgs) { //nolint:revive // defaulter-gen naming
	for _, w := range []**int64{&args.CPUWeight, &args.MemoryWeight, &args.NetworkWeight} {
		if *w == nil {
			v := DefaultWeight
			*w = &v
		}
	}
	if args.DefaultNodeBandwidth == nil {
		q := DefaultNodeBandwidth.DeepCopy()
		args.DefaultNodeBandwidth = &q
	}
	if args.NetworkHeavyPodBandwidth == nil {
		q := DefaultNetworkHeavyPodBandwidth.DeepCopy()
		args.NetworkHeavyPodBandwidth = &q
	}
	if args.BandwidthOvercommitPercent == nil {
		v := DefaultBandwidthOvercommitPercent
		args.BandwidthOvercommitPercent = &v
	}
}

// RegisterDefaults adds the defaulting function to a scheme.
func RegisterDefaults(s *runtime.Scheme) error {
	s.AddTypeDefaultingFunc(&BerthBalanceArgs{}, func(obj any) {
		SetDefaults_BerthBalanceArgs(obj.(*BerthBalanceArgs))
	})
	return nil
}
