package csi

import (
	"encoding/xml"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/berth-dev/berth/pkg/csi/iolayer"
)

func TestHealthNews(t *testing.T) {
	for _, tc := range []struct {
		name     string
		readings []volumeHealth
		want     []bool // per reading: is it an Event
	}{
		{"healthy at start is quiet", []volumeHealth{healthOK, healthOK}, []bool{false, false}},
		{"brick already down at start", []volumeHealth{healthDegraded, healthDegraded, healthOK},
			[]bool{true, false, true}},
		{"glusterd unreachable at start", []volumeHealth{healthUnreachable, healthUnreachable},
			[]bool{true, false}},
		{"brick dies and returns", []volumeHealth{healthOK, healthDegraded, healthDegraded, healthOK},
			[]bool{false, true, false, true}},
		{"glusterd fails then brick down", []volumeHealth{healthOK, healthUnreachable, healthDegraded,
			healthOK}, []bool{false, true, true, true}},
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
		{"plain bind mount gets a limit", volumeMeta{}, map[string]string{
			ParamWriteBytesPerSecond: "20Mi"}, true},
		{"plain bind mount stays unlimited", volumeMeta{}, map[string]string{
			ParamWriteBytesPerSecond: "0"}, false},
		{"limited layer changes live", volumeMeta{Limits: iolayer.Limits{ReadIOPS: 10}},
			map[string]string{ParamReadIOPS: "20"}, false},
		{"statistics layer takes limits live", volumeMeta{Statistics: true},
			map[string]string{ParamReadIOPS: "20"}, false},
	} {
		if got := limitsNeedRemount(&tc.before, tc.params); got != tc.want {
			t.Errorf("%s: limitsNeedRemount = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestLayerCountersSummedPerVolume(t *testing.T) {
	m := NewMetrics(nil)
	m.layers = func() []iolayer.Stats {
		return []iolayer.Stats{
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
	m.layers = func() []iolayer.Stats { return nil } // every layer unpublished
	if n, err := testutil.GatherAndCount(reg); err != nil || n != 0 {
		t.Errorf("%d series after the last layer went away (%v), want none", n, err)
	}
}

// TestParseHealInfo: the two sources of heal info. The summary XML is a fixture in the format
// glfsheal writes (its element names; glfsheal cannot run against the tests' glusterd, whose
// socket is not /var/run/glusterd.socket); the heal-count text is what the tests' glusterd printed.
func TestParseHealInfo(t *testing.T) {
	summary := []byte(`<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<cliOutput><healInfo><bricks>
 <brick hostUuid="a"><name>gl-1:/b/r0</name><status>Connected</status>
  <totalNumberOfEntries>3</totalNumberOfEntries>
  <numberOfEntriesInHealPending>2</numberOfEntriesInHealPending>
  <numberOfEntriesInSplitBrain>1</numberOfEntriesInSplitBrain>
  <numberOfEntriesPossiblyHealing>0</numberOfEntriesPossiblyHealing></brick>
 <brick hostUuid="b"><name>gl-2:/b/r1</name><status>Transport endpoint is not connected</status>
  <totalNumberOfEntries>-</totalNumberOfEntries>
  <numberOfEntriesInHealPending>-</numberOfEntriesInHealPending>
  <numberOfEntriesInSplitBrain>-</numberOfEntriesInSplitBrain>
  <numberOfEntriesPossiblyHealing>-</numberOfEntriesPossiblyHealing></brick>
</bricks></healInfo><opRet>0</opRet><opErrno>0</opErrno><opErrstr/></cliOutput>`)
	h, err := parseHealSummary(summary)
	if err != nil || h != (HealInfo{Replicated: true, Pending: 3, SplitBrain: 1}) || h.Clean() {
		t.Errorf("parseHealSummary = %+v, %v; want 3 pending, 1 in split-brain", h, err)
	}
	failed := []byte(
		`<cliOutput><healInfo><bricks/></healInfo><opRet>-1</opRet><opErrno>107</opErrno>` +
			`<opErrstr>berthdr: Not able to fetch volfile from glusterd</opErrstr></cliOutput>`)
	if _, err := parseHealSummary(failed); err == nil || !strings.Contains(err.Error(),
		"fetch volfile") {
		t.Errorf("parseHealSummary of a failed run = %v, want its error", err)
	}
	count := []byte(
		"Gathering count of entries to be healed on volume berthdr has been successful \n\n" +
			"Brick vm:/b/berthdr-0/b\nNumber of entries: 2\n\nBrick vm:/b/berthdr-1/b\nNumber of entries: " +
			"0\n\n" +
			"Brick vm:/b/berthdr-2/b\nNumber of entries: 1\n")
	if h := parseHealCount(count); h != (HealInfo{Replicated: true, Pending: 3, SplitBrain: -1}) ||
		h.Clean() {
		t.Errorf("parseHealCount = %+v, want 3 pending, split-brain unknown", h)
	}
	if h := parseHealCount([]byte("Brick vm:/b/0\nNumber of entries: 0\n")); !h.Clean() {
		t.Errorf("parseHealCount of zero entries = %+v, want clean", h)
	}
}

func TestValidAuthAllow(t *testing.T) {
	for _, ok := range []string{"", "10.0.0.11", "10.0.0.*,10.0.1.5", "10.0.0.0/24",
		"gluster-1.example.com,fe80::1"} {
		if err := validAuthAllow(ok); err != nil {
			t.Errorf("validAuthAllow(%q) = %v, want nil", ok, err)
		}
	}
	for _, bad := range []string{"*", "10.0.0.1,*", "10.0.0.1 10.0.0.2", "a;rm", ",",
		strings.Repeat("1", 5000)} {
		if err := validAuthAllow(bad); err == nil {
			t.Errorf("validAuthAllow(%q) = nil, want an error", bad)
		}
	}
}

// TestBrickOfNodeDownIsOffline: with a node powered off, `volume status` leaves its brick out
// (glusterd reports only connected peers); the brick must still be listed, offline.
func TestBrickOfNodeDownIsOffline(t *testing.T) {
	// Trimmed from GlusterFS 10.3 on the local cluster with berth-node-2 (10.216.0.12) stopped.
	info := []byte(`<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<cliOutput><opRet>0</opRet><opErrno>0</opErrno><opErrstr/><volInfo><volumes><volume><name>berth</name>
<bricks>
 <brick uuid="70f9">10.216.0.11:/b/berth<name>10.216.0.11:/b/berth</name>
  <hostUuid>70f9</hostUuid><isArbiter>0</isArbiter></brick>
 <brick uuid="1974">10.216.0.12:/b/berth<name>10.216.0.12:/b/berth</name>
  <hostUuid>1974</hostUuid><isArbiter>0</isArbiter></brick>
 <brick uuid="0f4d">10.216.0.13:/b/berth<name>10.216.0.13:/b/berth</name>
  <hostUuid>0f4d</hostUuid><isArbiter>0</isArbiter></brick>
</bricks></volume><count>1</count></volumes></volInfo></cliOutput>`)
	status := []byte(`<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<cliOutput><opRet>0</opRet><opErrno>0</opErrno><opErrstr/><volStatus><volumes><volume>
<volName>berth</volName><nodeCount>6</nodeCount>
 <node><hostname>10.216.0.11</hostname><path>/b/berth</path><status>1</status><pid>555</pid></node>
 <node><hostname>10.216.0.13</hostname><path>/b/berth</path><status>1</status><pid>310</pid></node>
 <node><hostname>Self-heal Daemon</hostname><path>localhost</path><status>1</status><pid>572</pid></node>
 <node><hostname>Quota Daemon</hostname><path>10.216.0.13</path><status>1</status><pid>1486</pid></node>
</volume></volumes></volStatus></cliOutput>`)
	var i infoXML
	var s statusXML
	if err := xml.Unmarshal(info, &i); err != nil {
		t.Fatal(err)
	}
	if err := xml.Unmarshal(status, &s); err != nil {
		t.Fatal(err)
	}
	vs := mergeBrickStatus("berth", i.Bricks, s)
	want := []BrickStatus{{Host: "10.216.0.11", Path: "/b/berth", Online: true, PID: 555},
		{Host: "10.216.0.12", Path: "/b/berth"}, {Host: "10.216.0.13", Path: "/b/berth", Online: true, PID: 310}}
	if !slices.Equal(vs.Bricks, want) || vs.Healthy() {
		t.Errorf("bricks = %+v (healthy %v), want %+v: the stopped node's brick offline", vs.Bricks,
			vs.Healthy(), want)
	}
	s.Volume[0].Nodes = s.Volume[0].Nodes[:1] // every brick of the status but one also missing
	if vs := mergeBrickStatus("berth", i.Bricks, s); len(vs.Bricks) != 3 || vs.Bricks[2].Online {
		t.Errorf("bricks = %+v, want 3 with the third offline", vs.Bricks)
	}
}

// TestDaemonsOfVolumeStatus: the self-heal and quota daemons are read from volume status
// (the quota daemon of the node back from a stop, as CI saw it, is down); others are ignored.
func TestDaemonsOfVolumeStatus(t *testing.T) {
	status := []byte(`<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<cliOutput><opRet>0</opRet><opErrno>0</opErrno><opErrstr/><volStatus><volumes><volume>
<volName>berth</volName><nodeCount>5</nodeCount>
 <node><hostname>10.216.0.12</hostname><path>/b/berth</path><peerid>1f81d390</peerid><status>1</status><pid>555</pid></node>
 <node><hostname>Self-heal Daemon</hostname><path>localhost</path><peerid>88cb2636</peerid><status>1</status><pid>572</pid></node>
 <node><hostname>Quota Daemon</hostname><path>localhost</path><peerid>88cb2636</peerid><status>1</status><pid>580</pid></node>
 <node><hostname>Quota Daemon</hostname><path>10.216.0.12</path><peerid>1f81d390</peerid><status>0</status><pid>-1</pid></node>
 <node><hostname>Bitrot Daemon</hostname><path>localhost</path><peerid>88cb2636</peerid><status>0</status><pid>-1</pid></node>
</volume></volumes></volStatus></cliOutput>`)
	var s statusXML
	if err := xml.Unmarshal(status, &s); err != nil {
		t.Fatal(err)
	}
	vs := mergeBrickStatus("berth", []string{"10.216.0.12:/b/berth"}, s)
	if !vs.Healthy() || len(vs.Daemons) != 3 {
		t.Errorf("status = %+v, want the brick online and 3 daemons", vs)
	}
	down := vs.DaemonsDown()
	if len(down) != 1 || down[0].String() != "Quota Daemon on 10.216.0.12" {
		t.Errorf("daemons down = %v, want the quota daemon on 10.216.0.12 alone", down)
	}
	r := healthReading{state: healthDaemonOffline, bricks: vs.Bricks, daemons: vs.Daemons, down: down}
	if e := r.healthEntries("berth"); len(e) != 1 || e[0].GetReason() != "DaemonOffline" ||
		!strings.Contains(e[0].GetMessage(), "Quota Daemon on 10.216.0.12") {
		t.Errorf("health entries = %v, want one DaemonOffline naming the daemon", e)
	}

	// Asked on 10.216.0.12 itself (CI, 2026-12-04): glusterd calls its own node "localhost"; the
	// daemon is named as that node's brick is, so an Event names the node whoever asks.
	status = []byte(`<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<cliOutput><opRet>0</opRet><opErrno>0</opErrno><opErrstr/><volStatus><volumes><volume>
<volName>berth</volName><nodeCount>4</nodeCount>
 <node><hostname>10.216.0.11</hostname><path>/b/berth</path><peerid>88cb2636</peerid><status>1</status><pid>431</pid></node>
 <node><hostname>10.216.0.12</hostname><path>/b/berth</path><peerid>1f81d390</peerid><status>1</status><pid>143</pid></node>
 <node><hostname>Quota Daemon</hostname><path>localhost</path><peerid>1f81d390</peerid><status>0</status><pid>-1</pid></node>
 <node><hostname>Quota Daemon</hostname><path>10.216.0.11</path><peerid>88cb2636</peerid><status>1</status><pid>77</pid></node>
 <node><hostname>Self-heal Daemon</hostname><path>localhost</path><peerid>0000aaaa</peerid><status>1</status><pid>78</pid></node>
</volume></volumes></volStatus></cliOutput>`)
	s = statusXML{}
	if err := xml.Unmarshal(status, &s); err != nil {
		t.Fatal(err)
	}
	vs = mergeBrickStatus("berth", []string{"10.216.0.11:/b/berth", "10.216.0.12:/b/berth"}, s)
	var names []string
	for _, d := range vs.Daemons {
		names = append(names, d.String())
	}
	if want := []string{"Quota Daemon on 10.216.0.12", "Quota Daemon on 10.216.0.11",
		"Self-heal Daemon on localhost"}; !slices.Equal(names, want) {
		t.Errorf("daemons = %q, want %q (a peer without bricks stays localhost)", names, want)
	}
}

// TestDaemonRepairWaitsAndBacksOff: a daemon is restarted only after daemonGrace down, and
// restarts that keep coming back off up to daemonRestartBackoffMax; after a long quiet the
// backoff starts over.
func TestDaemonRepairWaitsAndBacksOff(t *testing.T) {
	var d daemonRepair
	t0 := time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC)
	quotad := DaemonStatus{Name: "Quota Daemon", Host: "10.0.0.2"}
	shd := DaemonStatus{Name: "Self-heal Daemon", Host: "localhost", Online: true}
	if due := d.observe(t0, []DaemonStatus{quotad, shd}); len(due) != 0 {
		t.Fatalf("due at first sight: %v", due)
	}
	if due := d.observe(t0.Add(daemonGrace-time.Second), []DaemonStatus{quotad}); len(due) != 0 {
		t.Fatalf("due before the grace: %v", due)
	}
	due := d.observe(t0.Add(daemonGrace), []DaemonStatus{quotad, shd})
	if len(due) != 1 || due[0] != quotad || !d.mayRestart(t0.Add(daemonGrace)) {
		t.Fatalf("after the grace: due %v, may restart %v; want the quota daemon, yes", due,
			d.mayRestart(t0.Add(daemonGrace)))
	}
	// Unseen for longer than daemonForget (its node left the pool), then down again as the
	// returning node's glusterd starts it: the grace starts over.
	gone := t0.Add(daemonGrace + daemonForget + time.Second)
	if due := d.observe(gone, []DaemonStatus{quotad}); len(due) != 0 {
		t.Errorf("due at once after %s unseen: %v", daemonForget+time.Second, due)
	}
	if due := d.observe(gone.Add(daemonGrace), []DaemonStatus{quotad}); len(due) != 1 {
		t.Errorf("not due after a new grace: %v", due)
	}
	// Back online, then down again: the grace starts over.
	d.observe(gone.Add(daemonGrace+time.Second), []DaemonStatus{{Name: quotad.Name, Host: quotad.Host,
		Online: true}})
	if due := d.observe(gone.Add(daemonGrace+2*time.Second), []DaemonStatus{quotad}); len(due) != 0 {
		t.Errorf("due right after it was seen running: %v", due)
	}

	now := t0
	var waits []time.Duration
	for range 7 { // restarts that do not help, each as soon as allowed
		d.restarted(now)
		wait := time.Duration(0)
		for !d.mayRestart(now.Add(wait)) {
			wait += time.Second
		}
		waits = append(waits, wait)
		now = now.Add(wait)
	}
	want := []time.Duration{30 * time.Second, time.Minute, 2 * time.Minute, 4 * time.Minute,
		8 * time.Minute, 10 * time.Minute, 10 * time.Minute}
	if !slices.Equal(waits, want) {
		t.Errorf("waits between restarts %v, want %v", waits, want)
	}
	d.restarted(now.Add(21 * time.Minute)) // the first restart after a long quiet
	if d.backoff != daemonRestartBackoff {
		t.Errorf("backoff after a long quiet = %s, want %s", d.backoff, daemonRestartBackoff)
	}
}
