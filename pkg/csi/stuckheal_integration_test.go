//go:build integration

package csi

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// TestStuckHealUnstuck: on a replica-3 volume with quotas, an app removes a directory tree
// while one brick is down and writes a file. When the brick returns, GlusterFS's entry heal
// cannot move the stale tree aside (gluster/glusterfs#3921) and heal info stays non-empty with
// every brick and daemon online. The health loop waits StuckHealAfter without progress, turns
// cluster.use-anonymous-inode off, the heal finishes, the option is on again, the stale tree
// is gone from every brick and the file written meanwhile is on every brick, byte for byte.
func TestStuckHealUnstuck(t *testing.T) {
	td := startDriver(t)
	ctx := t.Context()
	const vol = "berthsh"
	bricks, err := gd.CreateVolume(ctx, vol, 3, 3)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = gd.CLI(context.Background(), "volume", "stop", vol, "force")
		_, _ = gd.CLI(context.Background(), "volume", "delete", vol)
	})
	id, target := td.publishNew(t, "stuck", 32<<20, map[string]string{ParamGlusterVolume: vol})

	client, hm := monitorWithEvents(t, td, "pv-stuck", id)
	const after = 20 * time.Second
	hm.StuckHealAfter = after

	for i := range 4 {
		sub := filepath.Join(target, "tree", fmt.Sprintf("d%d", i))
		if err := os.MkdirAll(sub, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(sub, "f"), bytes.Repeat([]byte{byte(i)}, 8<<10),
			0o644); err != nil {
			t.Fatal(err)
		}
	}
	_, pid, args := brickHolding(t, vol, filepath.Join(mustRefDir(id), "tree", "d0", "f"))
	killAndReap(t, pid)
	// The app's work while the brick is down: remove a tree, write a file.
	if err := os.RemoveAll(filepath.Join(target, "tree")); err != nil {
		t.Fatal(err)
	}
	written := bytes.Repeat([]byte("berth"), 100<<10)
	if err := os.WriteFile(filepath.Join(target, "written-while-down"), written, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("restarting brick: %v: %s", err, out)
	}

	remedies := func() float64 { return testutil.ToFloat64(td.d.metrics.healRemedies.WithLabelValues(vol)) }
	var healingSince, remedyAt, healthyAt time.Time
	var offDuringRemedy bool
	for start := time.Now(); time.Since(start) < 3*time.Minute; time.Sleep(time.Second) {
		st := hm.check(ctx, vol)
		if st == healthHealing && healingSince.IsZero() {
			healingSince = time.Now()
		}
		if remedyAt.IsZero() && remedies() > 0 {
			remedyAt = time.Now()
			on, err := td.d.opts.GlusterCLI.anonymousInodeOn(ctx, vol)
			offDuringRemedy = err == nil && !on
		}
		if remedyAt.IsZero() && st != healthHealing && st != healthDegraded {
			t.Fatalf("before any remedy the volume reads %d, want healing (%d) or degraded (%d): %+v", st,
				healthHealing, healthDegraded, td.d.readHealth(ctx, vol))
		}
		if st == healthOK && !remedyAt.IsZero() {
			healthyAt = time.Now()
			break
		}
	}
	if remedyAt.IsZero() || healthyAt.IsZero() {
		out, _ := gd.CLI(ctx, "volume", "heal", vol, "info")
		t.Fatalf("heal not unstuck within 3 min: %v remedies, heal info:\n%s", remedies(), out)
	}
	t.Logf("heal pending from %s, remedy %s later, healthy %s after the remedy",
		healingSince.Format(time.TimeOnly), remedyAt.Sub(healingSince).Round(time.Second),
		healthyAt.Sub(remedyAt).Round(time.Second))
	if remedyAt.Sub(healingSince) < after {
		t.Errorf("remedy %s after heals were first seen pending, want at least %s",
			remedyAt.Sub(healingSince), after)
	}
	if !offDuringRemedy {
		t.Errorf("%s was not off right after the remedy", optionAnonymousInode)
	}
	if n := remedies(); n != 1 {
		t.Errorf("%v remedies, want 1", n)
	}
	if on, err := td.d.opts.GlusterCLI.anonymousInodeOn(ctx, vol); err != nil || !on {
		t.Errorf("after the heal %s on = %v (err %v), want on again", optionAnonymousInode, on, err)
	}
	if vi, err := td.d.opts.GlusterCLI.volumeInfo(ctx, vol); err != nil || !vi.HealRemedy.IsZero() {
		t.Errorf("after the heal the remedy record reads %v (err %v), want it removed", vi.HealRemedy, err)
	}
	for _, b := range bricks {
		dir := filepath.Join(b, mustRefDir(id))
		if _, err := os.Stat(filepath.Join(dir, "tree")); !os.IsNotExist(err) {
			t.Errorf("brick %s still holds the removed tree (stat: %v)", b, err)
		}
		if got, err := os.ReadFile(filepath.Join(dir, "written-while-down")); err != nil ||
			!bytes.Equal(got, written) {
			t.Errorf("brick %s has %d bytes of the file written while a brick was down (err %v), want "+
				"%d, the same", b, len(got), err, len(written))
		}
	}
	seen := wantEvents(t, client, "pv-stuck", "GlusterHealPending", "GlusterHealStuck", "GlusterVolumeHealthy")
	// The option change restarts the self-heal daemons and heal info fails meanwhile: that is
	// the remedy at work, not glusterd unreachable.
	if slices.Contains(seen, "GlusterdUnreachable") {
		t.Errorf("Events on the PV: %v; want no GlusterdUnreachable from the remedy's own option change", seen)
	}
}

// TestHealRemedyEndedAfterRestart: a controller that turned cluster.use-anonymous-inode off
// and died leaves the option off and its record; the next controller's first poll of the
// healthy volume turns it on and removes the record, and one that never saw a remedy leaves an
// admin's own "off" alone.
func TestHealRemedyEndedAfterRestart(t *testing.T) {
	td := startDriver(t)
	ctx := t.Context()
	cli := td.d.opts.GlusterCLI
	t.Cleanup(func() {
		_, _ = gd.CLI(context.Background(), "volume", "set", replicatedVol, optionAnonymousInode, "on")
		_, _ = gd.CLI(context.Background(), "volume", "set", replicatedVol, optionHealRemedy, healRemedyNone)
	})
	if err := cli.beginHealRemedy(ctx, replicatedVol, time.Now().Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}
	if on, err := cli.anonymousInodeOn(ctx, replicatedVol); err != nil || on {
		t.Fatalf("after beginHealRemedy %s on = %v (err %v), want off", optionAnonymousInode, on, err)
	}
	hm := &HealthMonitor{Driver: td.d}
	for start := time.Now(); hm.check(ctx, replicatedVol) != healthOK; time.Sleep(time.Second) {
		if time.Since(start) > time.Minute {
			t.Fatalf("volume %s not healthy: %+v", replicatedVol, td.d.readHealth(ctx, replicatedVol))
		}
	}
	if on, err := cli.anonymousInodeOn(ctx, replicatedVol); err != nil || !on {
		t.Errorf("after a healthy poll %s on = %v (err %v), want on", optionAnonymousInode, on, err)
	}
	if vi, err := cli.volumeInfo(ctx, replicatedVol); err != nil || !vi.HealRemedy.IsZero() {
		t.Errorf("remedy record after a healthy poll: %v (err %v), want none", vi.HealRemedy, err)
	}

	// An admin's own setting, with no record: left as it is.
	if _, err := gd.CLI(ctx, "volume", "set", replicatedVol, optionAnonymousInode, "off"); err != nil {
		t.Fatal(err)
	}
	hm = &HealthMonitor{Driver: td.d}
	if st := hm.check(ctx, replicatedVol); st != healthOK {
		t.Fatalf("volume %s reads %d: %+v", replicatedVol, st, td.d.readHealth(ctx, replicatedVol))
	}
	if on, err := cli.anonymousInodeOn(ctx, replicatedVol); err != nil || on {
		t.Errorf("an admin's %s off, no remedy record: on = %v (err %v) after a poll, want left off",
			optionAnonymousInode, on, err)
	}
}

// wantEvents waits up to 10 s for Events with each of reasons on PV pv and returns the reasons
// of every Event on it.
func wantEvents(t *testing.T, client kubernetes.Interface, pv string, reasons ...string) []string {
	t.Helper()
	var seen []string
	for start := time.Now(); time.Since(start) < 10*time.Second; time.Sleep(200 * time.Millisecond) {
		evs, err := client.CoreV1().Events("default").List(t.Context(), metav1.ListOptions{
			FieldSelector: "involvedObject.name=" + pv})
		if err != nil {
			t.Fatal(err)
		}
		seen = seen[:0]
		for _, e := range evs.Items {
			seen = append(seen, e.Reason)
		}
		if !slices.ContainsFunc(reasons, func(r string) bool { return !slices.Contains(seen, r) }) {
			return seen
		}
	}
	t.Errorf("Events on %s: %v, want %v among them", pv, seen, reasons)
	return seen
}
