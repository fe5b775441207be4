//go:build integration

package csi

import (
	"context"
	"maps"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"

	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/pkg/csi/mountcgroup"
)

// glusterDaemonPID is the pid of this machine's GlusterFS daemon started with --process-name
// name ("glustershd", "quotad"), 0 if none runs.
func glusterDaemonPID(name string) int {
	return findProcess(func(args []string) bool {
		return strings.HasPrefix(args[0], "/usr/sbin/glusterfs") && slices.Contains(args, name) &&
			slices.Contains(args, "--process-name")
	})
}

// TestDaemonsRestartedWhenDown: the self-heal and quota daemons are SIGKILLed (as a quotad
// that lost its bind race at boot is gone). While a brick of the volume is also down the
// controller's health loop reports them and starts nothing (start force would start the brick
// too); once every brick is back it restarts them with `volume start force`, once, no sooner
// than daemonGrace after it first saw them down, with an Event on the volume's PV, and the
// volume reads healthy again without anyone running gluster by hand.
func TestDaemonsRestartedWhenDown(t *testing.T) {
	td := startDriver(t)
	ctx := t.Context()
	const vol = "berthdm"
	if _, err := gd.CreateVolume(ctx, vol, 2, 2); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = gd.CLI(context.Background(), "volume", "stop", vol, "force")
		_, _ = gd.CLI(context.Background(), "volume", "delete", vol)
		// The daemons serve every volume: leave them running for the tests after this one.
		_, _ = gd.CLI(context.Background(), "volume", "start", replicatedVol, "force")
	})
	if err := td.d.opts.GlusterCLI.ensureQuota(ctx, vol); err != nil {
		t.Fatal(err)
	}

	client, hm := monitorWithEvents(t, td, "pv-daemons", mustVolumeID(vol, "pv-daemons"))
	restarts := func() float64 {
		return testutil.ToFloat64(td.d.metrics.daemonRestarts.WithLabelValues(vol))
	}

	shd, quotad := glusterDaemonPID("glustershd"), glusterDaemonPID("quotad")
	if shd == 0 || quotad == 0 {
		t.Fatalf("self-heal daemon pid %d, quota daemon pid %d: want both running", shd, quotad)
	}
	var brickPID int
	var brickArgs []string
	for _, pid := range gd.BrickPIDs(vol) {
		brickPID, brickArgs = pid, mountcgroup.Cmdline(pid)
		break
	}
	for _, pid := range []int{brickPID, shd, quotad} {
		killAndReap(t, pid)
	}

	// A brick down too: the daemons are reported, nothing is started.
	var firstDown time.Time
	var sawDown healthReading
	for start := time.Now(); time.Since(start) < daemonGrace+5*time.Second; time.Sleep(time.Second) {
		st := hm.check(ctx, vol)
		r := td.d.readHealth(ctx, vol)
		if len(r.down) == 2 && firstDown.IsZero() {
			firstDown, sawDown = time.Now(), r
		}
		if st != healthDegraded {
			t.Fatalf("with a brick and the daemons down the volume reads %d, want degraded (%d): %+v", st,
				healthDegraded, r)
		}
	}
	if firstDown.IsZero() {
		t.Fatalf("volume status never showed both daemons down: %+v", td.d.readHealth(ctx, vol))
	}
	var reasons []string
	for _, e := range sawDown.healthEntries(vol) {
		reasons = append(reasons, e.GetReason())
	}
	if !slices.Equal(reasons, []string{"BrickOffline", "DaemonOffline", "DaemonOffline"}) {
		t.Errorf("health entries with a brick and both daemons down: %v", sawDown.healthEntries(vol))
	}
	if n := restarts(); n != 0 || glusterDaemonPID("quotad") != 0 || len(gd.BrickPIDs(vol)) != 1 {
		t.Fatalf("with a brick down the controller restarted daemons %v times (quotad pid %d, bricks %v): "+
			"start force would have started the brick an admin may have stopped", n,
			glusterDaemonPID("quotad"), gd.BrickPIDs(vol))
	}

	// The brick comes back (as its admin starts it): now the daemons are restarted.
	if out, err := exec.Command(brickArgs[0], brickArgs[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("restarting brick: %v: %s", err, out)
	}
	var restartedAt time.Time
	var healthyAt time.Time
	for start := time.Now(); time.Since(start) < 90*time.Second; time.Sleep(time.Second) {
		st := hm.check(ctx, vol)
		if restartedAt.IsZero() && restarts() > 0 {
			restartedAt = time.Now()
		}
		if st == healthOK && !restartedAt.IsZero() {
			healthyAt = time.Now()
			break
		}
	}
	if restartedAt.IsZero() || healthyAt.IsZero() {
		t.Fatalf("daemons not back within 90 s: %v restarts, reading %+v", restarts(),
			td.d.readHealth(ctx, vol))
	}
	if restartedAt.Sub(firstDown) < daemonGrace {
		t.Errorf("restarted %s after the daemons were first seen down, want at least %s",
			restartedAt.Sub(firstDown), daemonGrace)
	}
	if n := restarts(); n != 1 {
		t.Errorf("%v restarts, want 1", n)
	}
	if glusterDaemonPID("glustershd") == 0 || glusterDaemonPID("quotad") == 0 {
		t.Errorf("after the restart: self-heal daemon pid %d, quota daemon pid %d",
			glusterDaemonPID("glustershd"), glusterDaemonPID("quotad"))
	}
	t.Logf("daemons seen down at %s, restarted %s later, volume healthy %s after the restart",
		firstDown.Format(time.TimeOnly), restartedAt.Sub(firstDown).Round(time.Second),
		healthyAt.Sub(restartedAt).Round(time.Second))

	want := map[string]bool{"GlusterBrickOffline": false, "GlusterDaemonOffline": false,
		"GlusterDaemonRestarted": false, "GlusterVolumeHealthy": false}
	for start := time.Now(); time.Since(start) < 10*time.Second; time.Sleep(200 * time.Millisecond) {
		evs, err := client.CoreV1().Events("default").List(ctx, metav1.ListOptions{
			FieldSelector: "involvedObject.name=pv-daemons"})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range evs.Items {
			if _, ok := want[e.Reason]; ok {
				want[e.Reason] = true
			}
			if e.Reason == "GlusterDaemonRestarted" && !strings.Contains(e.Message, "Quota Daemon on") {
				t.Errorf("restart Event does not name the daemon: %q", e.Message)
			}
		}
		if !slices.Contains(slices.Collect(maps.Values(want)), false) {
			break
		}
	}
	for reason, seen := range want {
		if !seen {
			t.Errorf("no %s Event on the volume's PV", reason)
		}
	}
}

// monitorWithEvents starts a kube-apiserver, creates there PV pv of this driver with volume
// handle handle, and returns a client of it and the health monitor of td's driver, its Events
// recorded in that apiserver as the controller's are.
func monitorWithEvents(t *testing.T, td *testDriver, pv, handle string) (kubernetes.Interface,
	*HealthMonitor) {
	t.Helper()
	ctx := t.Context()
	_, cfg := testenv.StartAPIServer(t)
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.CoreV1().PersistentVolumes().Create(ctx, &v1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: pv},
		Spec: v1.PersistentVolumeSpec{
			Capacity:    v1.ResourceList{v1.ResourceStorage: resource.MustParse("16Mi")},
			AccessModes: []v1.PersistentVolumeAccessMode{v1.ReadWriteMany},
			PersistentVolumeSource: v1.PersistentVolumeSource{CSI: &v1.CSIPersistentVolumeSource{
				Driver: Name, VolumeHandle: handle}}}},
		metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")})
	t.Cleanup(broadcaster.Shutdown)
	return client, newHealthMonitor(ctx, td.d, client, broadcaster.NewRecorder(scheme.Scheme,
		v1.EventSource{Component: "csi-sharedfs"}))
}
