package csi

import (
	"strings"
	"testing"

	csi "github.com/container-storage-interface/spec/lib/go/csi"

	"github.com/berth-dev/berth/pkg/csi/iolayer"
)

func TestParseVolumeID(t *testing.T) {
	t.Parallel()
	good, err := newVolumeRef("gv0", "pvc-2d7c6a4e")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		id      string
		wantErr string
	}{
		{good.ID(), ""},
		{"", "malformed volume ID"},
		{"v1#gv0#00#pvc-2d7c6a4e", "does not match the name"},
		{"v1#gv0#" + good.Shard + "#..", "invalid volume name"},
		{"v1#gv0#" + good.Shard + "#a/../../b", "invalid volume name"},
		{"v1#../x#" + good.Shard + "#pvc-2d7c6a4e", "invalid GlusterFS volume name"},
		{"v2#gv0#" + good.Shard + "#pvc-2d7c6a4e", "want v1#"},
		{good.ID() + "#extra", "want v1#"},
	}
	for _, c := range cases {
		ref, err := parseVolumeID(c.id)
		if c.wantErr == "" {
			if err != nil || ref != good {
				t.Errorf("parseVolumeID(%q) = %+v, %v; want %+v", c.id, ref, err, good)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), c.wantErr) {
			t.Errorf("parseVolumeID(%q) error = %v, want it to contain %q", c.id, err, c.wantErr)
		}
	}
	if !strings.HasPrefix(good.RelData(), "berth-volumes/"+good.Shard+"/pvc-2d7c6a4e/data") {
		t.Errorf("RelData = %q", good.RelData())
	}
}

func TestParseParams(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		params  map[string]string
		want    volumeParams
		wantErr string
	}{
		{"defaults", nil, volumeParams{GlusterVolume: "gv0", OnDelete: "delete"}, ""},
		{"all", map[string]string{"GlusterVolume": "dr", "onDelete": "archive",
			"readBytesPerSecond":  "20Mi",
			"writeBytesPerSecond": "10Mi", "readIOPS": "500", "writeiops": "1k", "ioStatistics": "true",
			"csi.storage.k8s.io/pvc/name": "ignored"},
			volumeParams{GlusterVolume: "dr", OnDelete: "archive", Statistics: true, Limits: iolayer.Limits{
				ReadBytesPerSecond: 20 << 20, WriteBytesPerSecond: 10 << 20, ReadIOPS: 500, WriteIOPS: 1000}},
			""},
		{"unknown", map[string]string{"replicas": "3"}, volumeParams{},
			`invalid parameter "replicas" in storage class`},
		{"negative", map[string]string{"readIOPS": "-1"}, volumeParams{}, "non-negative"},
		{"fraction", map[string]string{"readIOPS": "0.5"}, volumeParams{}, "integer"},
		{"bad onDelete", map[string]string{"onDelete": "keep"}, volumeParams{},
			`want "delete" or "archive"`},
		{"bad volume", map[string]string{"glusterVolume": "a/b"}, volumeParams{},
			"want a GlusterFS volume name"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			got, err := parseParams(c.params, "gv0")
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("error = %v, want it to contain %q", err, c.wantErr)
				}
				return
			}
			if err != nil || got != c.want {
				t.Fatalf("parseParams = %+v, %v; want %+v", got, err, c.want)
			}
		})
	}
}

func TestParseMutableParamsRefusesNonLimits(t *testing.T) {
	t.Parallel()
	var l iolayer.Limits
	if err := parseMutableParams(map[string]string{"onDelete": "archive"}, &l); err == nil ||
		!strings.Contains(err.Error(), "only readBytesPerSecond") {
		t.Fatalf("error = %v", err)
	}
	if err := parseMutableParams(map[string]string{"writeBytesPerSecond": "5Mi"}, &l); err != nil ||
		l.WriteBytesPerSecond != 5<<20 {
		t.Fatalf("limits = %+v, %v", l, err)
	}
}

func TestWithinBase(t *testing.T) {
	t.Parallel()
	for p, ok := range map[string]bool{"/b/v/x": true, "/b/v": true, "/b/v/../w": false, "/b": false,
		"/b/v/x/../../..": false} {
		if err := withinBase("/b/v", p); (err == nil) != ok {
			t.Errorf("withinBase(/b/v, %q) = %v, want ok=%v", p, err, ok)
		}
	}
}

func TestCapacityFrom(t *testing.T) {
	t.Parallel()
	if c, err := capacityFrom(nil); err != nil || c != defaultCapacity {
		t.Errorf("no range: %d, %v", c, err)
	}
	if _, err := capacityFrom(&csi.CapacityRange{RequiredBytes: 2 << 20,
		LimitBytes: 1 << 20}); err == nil {
		t.Errorf("required > limit accepted")
	}
	if c, err := capacityFrom(&csi.CapacityRange{RequiredBytes: 1}); err != nil || c != minCapacity {
		t.Errorf("tiny request: %d, %v; want the 1 MiB minimum", c, err)
	}
}

func TestParseParamsDedicated(t *testing.T) {
	ok := map[string]string{ParamIsolation: IsolationDedicated, ParamBrickHosts: "gl-1, gl-2",
		ParamBrickRoot: "/data/bricks", ParamReplica: "2"}
	p, err := parseParams(ok, "berth")
	if err != nil {
		t.Fatal(err)
	}
	if p.Dedicated == nil || p.GlusterVolume != "" || p.Dedicated.Replica != 2 {
		t.Fatalf("dedicated params = %+v, want a dedicated spec with replica 2", p)
	}
	vol := dedicatedVolumeName("pvc-1")
	want := []string{"gl-1:/data/bricks/" + vol + "-brick0", "gl-2:/data/bricks/" + vol + "-brick1"}
	if got := p.Dedicated.bricks(vol); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("bricks = %v, want %v", got, want)
	}
	ref, err := newVolumeRef(vol, "pvc-1")
	if err != nil || !ref.Dedicated() {
		t.Fatalf("ref %+v (err %v) of %s is not dedicated", ref, err, vol)
	}
	if back, err := parseVolumeID(ref.ID()); err != nil || !back.Dedicated() {
		t.Fatalf("ID %s does not parse back as dedicated: %+v %v", ref.ID(), back, err)
	}
	if shared, _ := newVolumeRef("berth", "pvc-1"); shared.Dedicated() {
		t.Fatal("a shared volume ref reports dedicated")
	}
	for name, tc := range map[string]struct {
		params map[string]string
		want   string
	}{
		"unknown isolation": {map[string]string{ParamIsolation: "private"},
			`invalid value "private" of parameter "isolation"`},
		"no hosts": {map[string]string{ParamIsolation: IsolationDedicated,
			ParamBrickRoot: "/b"}, "needs parameters"},
		"loopback host": {map[string]string{ParamIsolation: IsolationDedicated,
			ParamBrickHosts: "localhost", ParamBrickRoot: "/b"}, "loopback"},
		"relative root": {map[string]string{ParamIsolation: IsolationDedicated, ParamBrickHosts: "h",
			ParamBrickRoot: "b/../c"}, "absolute, clean"},
		"traversing root": {map[string]string{ParamIsolation: IsolationDedicated, ParamBrickHosts: "h",
			ParamBrickRoot: "/b/../etc"}, "absolute, clean"},
		"odd replica": {map[string]string{ParamIsolation: IsolationDedicated,
			ParamBrickHosts: "h1,h2,h3", ParamBrickRoot: "/b", ParamReplica: "2"}, "whole replica sets"},
		"bad replica": {map[string]string{ParamIsolation: IsolationDedicated,
			ParamBrickHosts: "h1", ParamBrickRoot: "/b", ParamReplica: "zero"}, "replica count"},
		"with glusterVolume": {map[string]string{ParamIsolation: IsolationDedicated,
			ParamBrickHosts: "h1", ParamBrickRoot: "/b", ParamGlusterVolume: "gv"}, "cannot be used with"},
		"bricks when shared": {map[string]string{ParamBrickHosts: "h1"}, "needs isolation: dedicated"},
		"reserved name":      {map[string]string{ParamGlusterVolume: vol}, "reserved for dedicated"},
	} {
		if _, err := parseParams(tc.params, "berth"); err == nil ||
			!strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want it to mention %q", name, err, tc.want)
		}
	}
}
