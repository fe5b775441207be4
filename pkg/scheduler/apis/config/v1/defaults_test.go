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

func TestDefaultsThroughScheme(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   *configv1.BerthBalanceArgs
		want *configv1.BerthBalanceArgs
	}{
		{
			name: "empty",
			in:   &configv1.BerthBalanceArgs{},
			want: &configv1.BerthBalanceArgs{CPUWeight: i64(1), MemoryWeight: i64(1), NetworkWeight: i64(1),
				DefaultNodeBandwidth: q("10G"), NetworkHeavyPodBandwidth: q("500M"), BandwidthOvercommitPercent: i64(100)},
		},
		{
			name: "set fields kept",
			in:   &configv1.BerthBalanceArgs{NetworkWeight: i64(3), DefaultNodeBandwidth: q("25G"), BandwidthOvercommitPercent: i64(0)},
			want: &configv1.BerthBalanceArgs{CPUWeight: i64(1), MemoryWeight: i64(1), NetworkWeight: i64(3),
				DefaultNodeBandwidth: q("25G"), NetworkHeavyPodBandwidth: q("500M"), BandwidthOvercommitPercent: i64(0)},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := tc.in.DeepCopy()
			schedscheme.Scheme.Default(got)
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Fatalf("defaults differ (-want +got):\n%s", d)
			}
			var internal config.BerthBalanceArgs
			if err := schedscheme.Scheme.Convert(got, &internal, nil); err != nil {
				t.Fatalf("convert: %v", err)
			}
			if internal.NetworkWeight != *got.NetworkWeight || internal.DefaultNodeBandwidth.Cmp(*got.DefaultNodeBandwidth) != 0 {
				t.Fatalf("converted %+v from %+v", internal, got)
			}
		})
	}
}
