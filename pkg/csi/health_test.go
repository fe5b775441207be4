package csi

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestHealthNews(t *testing.T) {
	for _, tc := range []struct {
		name     string
		readings []volumeHealth
		want     []bool // per reading: is it an Event
	}{
		{"healthy at start is quiet", []volumeHealth{healthOK, healthOK}, []bool{false, false}},
		{"brick already down at start", []volumeHealth{healthDegraded, healthDegraded, healthOK}, []bool{true, false, true}},
		{"glusterd unreachable at start", []volumeHealth{healthUnreachable, healthUnreachable}, []bool{true, false}},
		{"brick dies and returns", []volumeHealth{healthOK, healthDegraded, healthDegraded, healthOK}, []bool{false, true, false, true}},
		{"glusterd fails then brick down", []volumeHealth{healthOK, healthUnreachable, healthDegraded, healthOK}, []bool{false, true, true, true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			prev := healthUnknown
			for i, cur := range tc.readings {
				if got := healthNews(prev, cur); got != tc.want[i] {
					t.Errorf("reading %d (%d after %d): event = %v, want %v", i, cur, prev, got, tc.want[i])
				}
				prev = cur
			}
		})
	}
}

func TestLimitsNeedRemount(t *testing.T) {
	for _, tc := range []struct {
		name   string
		before volumeMeta
		params map[string]string
		want   bool
	}{
		{"plain bind mount gets a limit", volumeMeta{}, map[string]string{ParamWriteBytesPerSecond: "20Mi"}, true},
		{"plain bind mount stays unlimited", volumeMeta{}, map[string]string{ParamWriteBytesPerSecond: "0"}, false},
		{"limited layer changes live", volumeMeta{Limits: IOLimits{ReadIOPS: 10}}, map[string]string{ParamReadIOPS: "20"}, false},
		{"statistics layer takes limits live", volumeMeta{Statistics: true}, map[string]string{ParamReadIOPS: "20"}, false},
	} {
		if got := limitsNeedRemount(&tc.before, tc.params); got != tc.want {
			t.Errorf("%s: limitsNeedRemount = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestLayerCountersSummedPerVolume(t *testing.T) {
	m := NewMetrics(nil)
	m.layers = func() []layerStats {
		return []layerStats{
			{VolumeID: "a", Target: "/pods/1", WriteBytes: 10, WriteOps: 1, WriteThrottledSeconds: 0.5},
			{VolumeID: "a", Target: "/pods/2", WriteBytes: 5, ReadBytes: 7, WriteOps: 2},
			{VolumeID: "b", Target: "/pods/3", ReadBytes: 3, ReadOps: 3},
		}
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(m.io)
	want := `
# HELP berth_csi_volume_io_bytes_total Bytes read or written through the IO-limited layers of this node, per CSI volume.
# TYPE berth_csi_volume_io_bytes_total counter
berth_csi_volume_io_bytes_total{op="read",volume_id="a"} 7
berth_csi_volume_io_bytes_total{op="read",volume_id="b"} 3
berth_csi_volume_io_bytes_total{op="write",volume_id="a"} 15
berth_csi_volume_io_bytes_total{op="write",volume_id="b"} 0
# HELP berth_csi_volume_throttled_seconds_total Time IO waited for the volume's bandwidth or IOPS limit.
# TYPE berth_csi_volume_throttled_seconds_total counter
berth_csi_volume_throttled_seconds_total{op="read",volume_id="a"} 0
berth_csi_volume_throttled_seconds_total{op="read",volume_id="b"} 0
berth_csi_volume_throttled_seconds_total{op="write",volume_id="a"} 0.5
berth_csi_volume_throttled_seconds_total{op="write",volume_id="b"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"berth_csi_volume_io_bytes_total", "berth_csi_volume_throttled_seconds_total"); err != nil {
		t.Error(err)
	}
	m.layers = func() []layerStats { return nil } // every layer unpublished
	if n, err := testutil.GatherAndCount(reg); err != nil || n != 0 {
		t.Errorf("%d series after the last layer went away (%v), want none", n, err)
	}
}
