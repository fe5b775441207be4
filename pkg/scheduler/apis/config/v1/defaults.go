package v1

import "k8s.io/apimachinery/pkg/api/resource"

// Defaults of BerthBalanceArgs.
var (
	DefaultWeight                     int64 = 1
	DefaultNodeBandwidth                    = resource.MustParse("10G")
	DefaultNetworkHeavyPodBandwidth         = resource.MustParse("500M")
	DefaultBandwidthOvercommitPercent int64 = 100
	DefaultPackAboveFillPercent       int64 = 85
)

// SetDefaults_BerthBalanceArgs fills unset fields of args; defaulter-gen's RegisterDefaults
// calls it.
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
	if args.PackAboveFillPercent == nil {
		v := DefaultPackAboveFillPercent
		args.PackAboveFillPercent = &v
	}
}
