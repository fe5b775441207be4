// Package validation checks BerthBalanceArgs; the plugin calls it in New so that a bad
// KubeSchedulerConfiguration stops the scheduler at start with a message naming the field.
package validation

import (
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/berth-dev/berth/pkg/scheduler/apis/config"
)

// MaxWeight is the largest weight accepted for one dimension.
const MaxWeight = 100

// MaxOvercommitPercent is the largest BandwidthOvercommitPercent accepted.
const MaxOvercommitPercent = 1000

// MaxBandwidth (1P bit/s) bounds every bandwidth the plugin reads: above it a quantity is a
// typo, and far above it int64 arithmetic would wrap.
const MaxBandwidth = 1_000_000_000_000_000

// ValidateBerthBalanceArgs returns every problem in args as one aggregate error, or nil.
func ValidateBerthBalanceArgs(path *field.Path, args *config.BerthBalanceArgs) error {
	var errs field.ErrorList
	weights := []struct {
		name string
		v    int64
	}{{"cpuWeight", args.CPUWeight}, {"memoryWeight", args.MemoryWeight}, {"networkWeight", args.NetworkWeight}}
	var sum int64
	for _, w := range weights {
		if w.v < 0 || w.v > MaxWeight {
			errs = append(errs, field.Invalid(path.Child(w.name), w.v, "must be between 0 and 100"))
		}
		sum += w.v
	}
	if sum <= 0 {
		errs = append(errs, field.Invalid(path.Child("cpuWeight"), args.CPUWeight,
			"at least one of cpuWeight, memoryWeight, networkWeight must be positive"))
	}
	if q := args.DefaultNodeBandwidth; q.Sign() <= 0 || q.CmpInt64(MaxBandwidth) > 0 {
		errs = append(errs, field.Invalid(path.Child("defaultNodeBandwidth"), q.String(),
			"must be a positive bandwidth in bits per second of at most 1P, e.g. 10G"))
	}
	if q := args.NetworkHeavyPodBandwidth; q.Sign() < 0 || q.CmpInt64(MaxBandwidth) > 0 {
		errs = append(errs, field.Invalid(path.Child("networkHeavyPodBandwidth"), q.String(),
			"must be between 0 and 1P bits per second"))
	}
	if p := args.BandwidthOvercommitPercent; p < 0 || p > MaxOvercommitPercent {
		errs = append(errs, field.Invalid(path.Child("bandwidthOvercommitPercent"), p,
			"must be between 0 (Filter off) and 1000"))
	}
	if p := args.PackAboveFillPercent; p < 0 || p > 100 {
		errs = append(errs, field.Invalid(path.Child("packAboveFillPercent"), p,
			"must be between 0 (always pack) and 100 (never pack)"))
	}
	return errs.ToAggregate()
}
