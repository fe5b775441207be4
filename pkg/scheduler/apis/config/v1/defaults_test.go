package v1_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/api/resource"
	schedscheme "k8s.io/kubernetes/pkg/scheduler/apis/config/scheme"

	"github.com/berth-dev/berth/pkg/scheduler/apis/config"
	_ "github.com/berth-dev/berth/pkg/scheduler/apis/config/scheme"
	configv1 "github.com/berth-dev/berth/pkg/scheduler/apis/config/v1"
)

func i64(v int64) *int64 { return &v }

func q(s string) *resource.Quantity { v := resource.MustParse(s); return &v }

// TestRoundTrip takes versioned args through the scheduler's own scheme the way --config does
// (defaults, then conversion to the internal type) and back to the versioned type, as the
// scheduler does when it prints its effective configuration: the defaults must be applied, the
// internal values must be the written or defaulted ones, and nothing may be lost on the way back.
func TestRoundTrip(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name         string
		in           *configv1.BerthBalanceArgs
		wantDefaults *configv1.BerthBalanceArgs
		wantInternal config.BerthBalanceArgs
	}{
		{
			name: "empty",
			in:   &configv1.BerthBalanceArgs{},
			wantDefaults: &configv1.BerthBalanceArgs{
				CPUWeight: i64(1), MemoryWeight: i64(1), NetworkWeight: i64(1),
				DefaultNodeBandwidth: q("10G"), NetworkHeavyPodBandwidth: q("500M"),
				BandwidthOvercommitPercent: i64(100), PackAboveFillPercent: i64(85),
			},
			wantInternal: config.BerthBalanceArgs{
				CPUWeight: 1, MemoryWeight: 1, NetworkWeight: 1,
				DefaultNodeBandwidth: *q("10G"), NetworkHeavyPodBandwidth: *q("500M"),
				BandwidthOvercommitPercent: 100, PackAboveFillPercent: 85,
			},
		},
		{
			name: "set fields kept, zero is not unset",
			in: &configv1.BerthBalanceArgs{
				NetworkWeight: i64(3), DefaultNodeBandwidth: q("25G"),
				BandwidthOvercommitPercent: i64(0), PackAboveFillPercent: i64(0),
			},
			wantDefaults: &configv1.BerthBalanceArgs{
				CPUWeight: i64(1), MemoryWeight: i64(1), NetworkWeight: i64(3),
				DefaultNodeBandwidth: q("25G"), NetworkHeavyPodBandwidth: q("500M"),
				BandwidthOvercommitPercent: i64(0), PackAboveFillPercent: i64(0),
			},
			wantInternal: config.BerthBalanceArgs{
				CPUWeight: 1, MemoryWeight: 1, NetworkWeight: 3,
				DefaultNodeBandwidth: *q("25G"), NetworkHeavyPodBandwidth: *q("500M"),
			},
		},
		{
			name: "every field set",
			in: &configv1.BerthBalanceArgs{
				CPUWeight: i64(2), MemoryWeight: i64(0), NetworkWeight: i64(7),
				DefaultNodeBandwidth: q("1Gi"), NetworkHeavyPodBandwidth: q("1.5G"),
				BandwidthOvercommitPercent: i64(150), PackAboveFillPercent: i64(100),
			},
			wantDefaults: &configv1.BerthBalanceArgs{
				CPUWeight: i64(2), MemoryWeight: i64(0), NetworkWeight: i64(7),
				DefaultNodeBandwidth: q("1Gi"), NetworkHeavyPodBandwidth: q("1.5G"),
				BandwidthOvercommitPercent: i64(150), PackAboveFillPercent: i64(100),
			},
			wantInternal: config.BerthBalanceArgs{
				CPUWeight: 2, NetworkWeight: 7,
				DefaultNodeBandwidth: *q("1Gi"), NetworkHeavyPodBandwidth: *q("1.5G"),
				BandwidthOvercommitPercent: 150, PackAboveFillPercent: 100,
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			versioned := tc.in.DeepCopy()
			schedscheme.Scheme.Default(versioned)
			if d := cmp.Diff(tc.wantDefaults, versioned); d != "" {
				t.Fatalf("defaults differ (-want +got):\n%s", d)
			}
			var internal config.BerthBalanceArgs
			if err := schedscheme.Scheme.Convert(versioned, &internal, nil); err != nil {
				t.Fatalf("convert to internal: %v", err)
			}
			if d := cmp.Diff(tc.wantInternal, internal); d != "" {
				t.Fatalf("internal args differ (-want +got):\n%s", d)
			}
			back := &configv1.BerthBalanceArgs{}
			if err := schedscheme.Scheme.Convert(&internal, back, nil); err != nil {
				t.Fatalf("convert back to v1: %v", err)
			}
			if d := cmp.Diff(versioned, back); d != "" {
				t.Fatalf("round trip lost something (-defaulted +back):\n%s", d)
			}
		})
	}
}

// TestDeepCopyIsDeep changes every pointer of a copy and expects the original untouched: the
// scheduler keeps the decoded args while plugins may be handed copies.
func TestDeepCopyIsDeep(t *testing.T) {
	t.Parallel()
	orig := &configv1.BerthBalanceArgs{CPUWeight: i64(1), DefaultNodeBandwidth: q("10G")}
	c := orig.DeepCopy()
	*c.CPUWeight = 9
	c.DefaultNodeBandwidth.Add(resource.MustParse("1G"))
	if *orig.CPUWeight != 1 || orig.DefaultNodeBandwidth.String() != "10G" {
		t.Fatalf("changing the copy changed the original: %+v", orig)
	}
}
