package validation

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/berth-dev/berth/pkg/scheduler/apis/config"
)

func TestValidateBerthBalanceArgs(t *testing.T) {
	t.Parallel()
	valid := func() *config.BerthBalanceArgs {
		return &config.BerthBalanceArgs{CPUWeight: 1, MemoryWeight: 1, NetworkWeight: 1,
			DefaultNodeBandwidth: resource.MustParse("10G"), NetworkHeavyPodBandwidth: resource.MustParse("500M"),
			BandwidthOvercommitPercent: 100, PackAboveFillPercent: 75}
	}
	tests := []struct {
		name    string
		mutate  func(*config.BerthBalanceArgs)
		wantErr []string
	}{
		{name: "valid", mutate: func(*config.BerthBalanceArgs) {}},
		{name: "filter off", mutate: func(a *config.BerthBalanceArgs) { a.BandwidthOvercommitPercent = 0 }},
		{name: "negative weight", mutate: func(a *config.BerthBalanceArgs) { a.NetworkWeight = -1 },
			wantErr: []string{"args.networkWeight: Invalid value: -1: must be between 0 and 100"}},
		{name: "all weights zero", mutate: func(a *config.BerthBalanceArgs) {
			a.CPUWeight, a.MemoryWeight, a.NetworkWeight = 0, 0, 0
		},
			wantErr: []string{"at least one of cpuWeight, memoryWeight, networkWeight must be positive"}},
		{name: "zero default bandwidth", mutate: func(a *config.BerthBalanceArgs) {
			a.DefaultNodeBandwidth = resource.MustParse("0")
		},
			wantErr: []string{"args.defaultNodeBandwidth", "must be a positive bandwidth"}},
		{name: "default bandwidth that wraps int64", mutate: func(a *config.BerthBalanceArgs) {
			a.DefaultNodeBandwidth = resource.MustParse("20E")
		},
			wantErr: []string{"args.defaultNodeBandwidth", "of at most 1P"}},
		{name: "network-heavy pod bandwidth that wraps int64", mutate: func(a *config.BerthBalanceArgs) {
			a.NetworkHeavyPodBandwidth = resource.MustParse("1e19")
		},
			wantErr: []string{"args.networkHeavyPodBandwidth", "between 0 and 1P"}},
		{name: "overcommit out of range", mutate: func(a *config.BerthBalanceArgs) { a.BandwidthOvercommitPercent = 5000 },
			wantErr: []string{"args.bandwidthOvercommitPercent", "between 0 (Filter off) and 1000"}},
		{name: "packing from empty", mutate: func(a *config.BerthBalanceArgs) { a.PackAboveFillPercent = 0 }},
		{name: "packing off", mutate: func(a *config.BerthBalanceArgs) { a.PackAboveFillPercent = 100 }},
		{name: "packing threshold out of range", mutate: func(a *config.BerthBalanceArgs) { a.PackAboveFillPercent = 101 },
			wantErr: []string{"args.packAboveFillPercent", "between 0 (always pack) and 100 (never pack)"}},
		{name: "negative packing threshold", mutate: func(a *config.BerthBalanceArgs) { a.PackAboveFillPercent = -5 },
			wantErr: []string{"args.packAboveFillPercent: Invalid value: -5"}},
		{name: "every error reported", mutate: func(a *config.BerthBalanceArgs) {
			a.CPUWeight = 200
			a.NetworkHeavyPodBandwidth = resource.MustParse("-1")
		},
			wantErr: []string{"args.cpuWeight", "args.networkHeavyPodBandwidth"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			a := valid()
			tc.mutate(a)
			err := ValidateBerthBalanceArgs(field.NewPath("args"), a)
			if len(tc.wantErr) == 0 {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error, want %q", tc.wantErr)
			}
			for _, w := range tc.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}
