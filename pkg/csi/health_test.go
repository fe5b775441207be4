package csi

import (
	"testing"

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

func TestForgetVolumeMetricsKeepsServedVolumes(t *testing.T) {
	d := &Driver{metrics: NewMetrics(nil), limited: map[string]*limitedMount{"/pods/b": {volumeID: "b"}}}
	for _, id := range []string{"a", "b"} {
		d.metrics.ioBytes.WithLabelValues(id, "write").Add(1)
		d.metrics.ioOps.WithLabelValues(id, "write").Inc()
		d.metrics.throttled.WithLabelValues(id, "write").Add(1)
	}
	d.forgetVolumeMetrics("a")
	d.forgetVolumeMetrics("b") // still served at /pods/b
	for name, c := range map[string]int{
		"io bytes":  testutil.CollectAndCount(d.metrics.ioBytes),
		"io ops":    testutil.CollectAndCount(d.metrics.ioOps),
		"throttled": testutil.CollectAndCount(d.metrics.throttled),
	} {
		if c != 1 {
			t.Errorf("%s: %d series left, want 1 (volume b only)", name, c)
		}
	}
	if testutil.ToFloat64(d.metrics.ioBytes.WithLabelValues("b", "write")) != 1 {
		t.Error("series of the still-published volume b was reset")
	}
}
