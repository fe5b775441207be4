//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/berth-dev/berth/e2e/framework"
)

// The local cluster's GlusterFS volume behind the StorageClasses (hack/cluster/env): replica 3,
// one brick on each of the first three nodes.
func glusterVolume() string {
	if v := os.Getenv("BERTH_GLUSTER_VOLUME"); v != "" {
		return v
	}
	return "berth"
}

// gluster runs the gluster CLI inside the control-plane node, against its glusterd (any member
// of the trusted pool answers for the whole pool).
func gluster(t *testing.T, args ...string) string {
	t.Helper()
	out, err := glusterErr(t, args...)
	if err != nil {
		t.Fatalf("gluster %v: %v", args, err)
	}
	return out
}

func glusterErr(t *testing.T, args ...string) (string, error) {
	return framework.NodeExec(controlPlaneNode(t), append([]string{"gluster", "--mode=script"}, args...)...)
}

var healEntriesRe = regexp.MustCompile(`Number of entries: (\d+|-)`)

// healPending sums "Number of entries" over the bricks of `gluster volume heal VOL info`; a
// brick that does not answer ("-"), or glusterd not answering yet, counts as pending. The error
// carries the CLI's output while anything is pending, so a wait that times out shows it.
func healPending(t *testing.T) (int, error) {
	t.Helper()
	out, err := glusterErr(t, "volume", "heal", glusterVolume(), "info")
	m := healEntriesRe.FindAllStringSubmatch(out, -1)
	if err != nil || len(m) == 0 {
		return 1 << 30, fmt.Errorf("heal info: %v: %s", err, out)
	}
	n := 0
	for _, e := range m {
		if e[1] == "-" {
			n += 1 << 20
			continue
		}
		v, _ := strconv.Atoi(e[1])
		n += v
	}
	if n > 0 {
		status, _ := glusterErr(t, "volume", "status", glusterVolume())
		return n, fmt.Errorf("heal info:\n%s\nvolume status:\n%s", out, status)
	}
	return n, nil
}

// volumeSettled waits until every brick of the volume answers heal info (a node stopped by an
// earlier test may still be booting) and returns the entries pending then (heals an earlier
// test left may still be running).
func volumeSettled(t *testing.T, f *framework.Framework) int {
	t.Helper()
	var pending int
	f.WaitFor("every brick of volume "+glusterVolume()+" to answer", 5*time.Minute, func(context.Context) (bool, error) {
		var err error
		if pending, err = healPending(t); pending < 1<<20 {
			return true, nil
		}
		return false, err
	})
	return pending
}

// storagePodOn is a busybox pod on node with claim mounted at /data.
func storagePodOn(f *framework.Framework, name, claim, node string) {
	f.T.Helper()
	spec := claimPodSpec(claim)
	spec.NodeSelector = map[string]string{"kubernetes.io/hostname": node}
	_, err := f.Client.CoreV1().Pods(f.Namespace).Create(f.Context(), &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"e2e": "storage"}},
		Spec:       spec,
	}, metav1.CreateOptions{})
	if err != nil {
		f.T.Fatalf("create pod %s on %s: %v", name, node, err)
	}
}

// twoWorkers returns two Ready nodes that are not the control-plane node when the cluster has
// them (stopping one of them then leaves the API server up).
func twoWorkers(t *testing.T, f *framework.Framework) (string, string) {
	t.Helper()
	var w []string
	for _, n := range f.ReadyNodes(3) {
		if n != controlPlaneNode(t) {
			w = append(w, n)
		}
	}
	return w[0], w[1]
}

// TestStorageAcrossNodes: one RWX claim of the replicated volume, mounted by pods on two
// nodes. Each sees the other's writes; appends from both to one file lose nothing; an
// exclusive lock taken on one node refuses the other; the capacity quota holds for the two
// nodes' writes together; each pod's IO limit holds on its own node.
func TestStorageAcrossNodes(t *testing.T) {
	f := framework.New(t, nil)
	f.RequireBerth("csi")
	a, b := twoWorkers(t, f)
	volumeSettled(t, f)
	shared := createPVC(f, "shared", "berth-shared", "24Mi")
	limited := createPVC(f, "limited", slowClass(f, "512Ki"), "64Mi")
	storagePodOn(f, "a", shared, a)
	storagePodOn(f, "b", shared, b)
	storagePodOn(f, "la", limited, a)
	storagePodOn(f, "lb", limited, b)
	f.WaitPodsReady("e2e=storage", 4, 3*time.Minute)

	// Each sees the other's writes.
	{
		for _, w := range [][2]string{{"a", "b"}, {"b", "a"}} {
			want := "written-on-" + w[0]
			mustExec(f, w[0], "sh", "-c", "echo "+want+" > /data/from-"+w[0])
			// A FUSE client caches what it has looked up for about a second: another node's
			// new file shows within that.
			var got string
			f.WaitFor(w[1]+" to see "+w[0]+"'s file", 10*time.Second, func(context.Context) (bool, error) {
				out, _, err := f.Exec(w[1], "app", "cat", "/data/from-"+w[0])
				got = strings.TrimSpace(out)
				return err == nil && got == want, nil
			})
		}
	}

	// Appends from two nodes lose nothing.
	{
		const lines = 300
		var wg sync.WaitGroup
		for _, p := range []string{"a", "b"} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				script := fmt.Sprintf("i=0; while [ $i -lt %d ]; do echo %s-$i >> /data/log; i=$((i+1)); done", lines, p)
				if _, stderr, err := f.Exec(p, "app", "sh", "-c", script); err != nil {
					t.Errorf("appending from %s: %v %s", p, err, stderr)
				}
			}()
		}
		wg.Wait()
		var out string
		f.WaitFor("both nodes' appends in the file", 10*time.Second, func(context.Context) (bool, error) {
			out, _, _ = f.Exec("a", "app", "cat", "/data/log")
			return strings.Count(out, "\n") >= 2*lines, nil
		})
		seen := map[string]int{}
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			seen[l]++
		}
		for _, p := range []string{"a", "b"} {
			for i := 0; i < lines; i++ {
				if l := fmt.Sprintf("%s-%d", p, i); seen[l] != 1 {
					t.Errorf("line %q is in the file %d times, want once (lost or torn appends)", l, seen[l])
				}
			}
		}
		if len(seen) != 2*lines {
			t.Errorf("the file has %d distinct lines, want %d: %q", len(seen), 2*lines, firstLines(out, 5))
		}
	}

	// An exclusive lock: a holds a POSIX write lock for 20 s (test/images/echo -lock, as a
	// database takes one); b, on another node, is refused while it is held, then waits for it
	// and gets it once a lets go.
	held := make(chan error, 1)
	go func() {
		_, stderr, err := f.Exec("a", "app", "/app", "-lock", "/data/lock", "-hold", "20s")
		if err != nil {
			err = fmt.Errorf("%w: %s", err, stderr)
		}
		held <- err
	}()
	f.WaitFor("a to hold the lock", 20*time.Second, func(context.Context) (bool, error) {
		_, _, err := f.Exec("a", "app", "/app", "-lock", "/data/lock", "-nonblock")
		return err != nil, nil // refused: a's holder has it (a second open in one node is refused too)
	})
	if out, _, err := f.Exec("b", "app", "/app", "-lock", "/data/lock", "-nonblock"); err == nil {
		t.Errorf("b took an exclusive lock on another node while a held it (%q)", out)
	}
	begin := time.Now()
	if _, stderr, err := f.Exec("b", "app", "/app", "-lock", "/data/lock"); err != nil {
		t.Errorf("b waiting for the lock: %v %s", err, stderr)
	}
	t.Logf("b got the lock %.1fs after asking, when a released it", time.Since(begin).Seconds())
	if err := <-held; err != nil {
		t.Errorf("a holding the lock: %v", err)
	}

	// Each pod's IO limit holds on its own node: 512 KiB/s each, while the same pods write
	// unlimited several times faster (measured first, so the check can tell).
	{
		const limit = 512 << 10
		begin := time.Now()
		mustExec(f, "a", "sh", "-c", "dd if=/dev/zero of=/data/base bs=1M count=8 conv=fsync 2>/dev/null; rm /data/base")
		base := 8 / time.Since(begin).Seconds()
		t.Logf("unlimited: 8 MiB written from %s at %.1f MiB/s", a, base)
		if base < 2*limit/(1<<20) {
			t.Logf("unlimited writes run at %.1f MiB/s, under twice the %d KiB/s limit: "+
				"this run cannot tell whether the limit holds", base, limit>>10)
		}
		rates := map[string]float64{}
		var mu sync.Mutex
		var wg sync.WaitGroup
		for _, p := range []string{"la", "lb"} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				begin := time.Now()
				_, stderr, err := f.Exec(p, "app", "sh", "-c",
					"dd if=/dev/zero of=/data/x-"+p+" bs=256k count=24 conv=fsync 2>/dev/null")
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					t.Errorf("writing from %s: %v %s", p, err, stderr)
				}
				rates[p] = 6 * (1 << 20) / time.Since(begin).Seconds()
			}()
		}
		wg.Wait()
		for p, r := range rates {
			t.Logf("%s wrote 6 MiB at %.0f KiB/s under a %d KiB/s limit, while a pod on another node wrote too",
				p, r/1024, limit>>10)
			if r > limit*1.3 { // an idle volume may burst half a second's worth
				t.Errorf("%s: write rate %.0f KiB/s exceeds its %d KiB/s limit", p, r/1024, limit>>10)
			}
		}
	}

	// The quota holds for both nodes together.
	{
		mustExec(f, "a", "sh", "-c", "rm -f /data/log /data/from-* /data/lock")
		// 256 KiB writes: at most one write per writer past the size (docs/csi.md), 0.5 MiB.
		var wg sync.WaitGroup
		refused := map[string]string{}
		var mu sync.Mutex
		for _, p := range []string{"a", "b"} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, stderr, err := f.Exec(p, "app", "sh", "-c",
					"dd if=/dev/zero of=/data/fill-"+p+" bs=256k count=200 conv=fsync")
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					refused[p] = stderr
				}
			}()
		}
		wg.Wait()
		for _, p := range []string{"a", "b"} {
			if !strings.Contains(refused[p], "quota") {
				t.Errorf("writer on %s's node: want \"Disk quota exceeded\", got %q", p, refused[p])
			}
		}
		var used int64
		for _, p := range []string{"a", "b"} {
			out := mustExec(f, "a", "stat", "-c", "%s", "/data/fill-"+p)
			n, _ := strconv.ParseInt(strings.TrimSpace(out), 10, 64)
			used += n
		}
		const size, slack = 24 << 20, 1 << 20
		t.Logf("two nodes wrote %.2f MiB together into a %d MiB volume", float64(used)/(1<<20), size>>20)
		if used > size+slack || used < size-slack {
			t.Errorf("two nodes wrote %d bytes into a %d-byte volume: want within 1 MiB of the size", used, size)
		}
	}
}

// TestStorageDaemonRestarted: a node's quota daemon dies (as a quotad that lost its bind race
// at boot did in CI). glusterd never restarts it; berth's controller sees it down in volume
// status, restarts it with `gluster volume start force` (an Event on the volume's PVs says
// so) and writes under the quota work again.
func TestStorageDaemonRestarted(t *testing.T) {
	f := framework.New(t, nil)
	f.RequireBerth("csi")
	victim, _ := twoWorkers(t, f)
	claim := createPVC(f, "q", "berth-shared", "64Mi")
	storagePodOn(f, "q", claim, victim)
	f.WaitPodsReady("e2e=storage", 1, 3*time.Minute)
	pvc, err := f.Client.CoreV1().PersistentVolumeClaims(f.Namespace).Get(f.Context(), claim, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	daemon := "Quota Daemon on " + nodeIP(t, f, victim)
	quotadRe := regexp.MustCompile(regexp.QuoteMeta(daemon) + `\s+\S+\s+\S+\s+([YN])`)
	quotadOnline := func() (bool, string) {
		out, _ := glusterErr(t, "volume", "status", glusterVolume())
		m := quotadRe.FindStringSubmatch(out)
		return len(m) == 2 && m[1] == "Y", out
	}
	if ok, out := quotadOnline(); !ok {
		t.Fatalf("%s is not running before the test:\n%s", daemon, out)
	}
	killed := time.Now()
	if out, err := framework.NodeExec(victim, "sh", "-c", "pkill -9 -f 'process-name [q]uotad'"); err != nil {
		t.Fatalf("killing quotad on %s: %v: %s", victim, err, out)
	}
	waitPVEvent(f, pvc.Spec.VolumeName, "GlusterDaemonRestarted", daemon, 3*time.Minute, killed)
	f.WaitFor(daemon+" to run again", time.Minute, func(context.Context) (bool, error) {
		ok, _ := quotadOnline()
		return ok, nil
	})
	t.Logf("%s running again %v after it was killed", daemon, time.Since(killed).Round(time.Second))
	mustExec(f, "q", "dd", "if=/dev/zero", "of=/data/after-restart", "bs=1M", "count=4", "conv=fsync")
}

// slowClass creates a StorageClass of the shared volume whose volumes are written at most
// writeRate per node, deleted with the test.
func slowClass(f *framework.Framework, writeRate string) string {
	f.T.Helper()
	name := "e2e-slow-" + f.Namespace
	sc := &storagev1.StorageClass{
		ObjectMeta:  metav1.ObjectMeta{Name: name},
		Provisioner: "sharedfs.csi.berth.dev",
		Parameters:  map[string]string{"glusterVolume": glusterVolume(), "writeBytesPerSecond": writeRate},
	}
	if _, err := f.Client.StorageV1().StorageClasses().Create(f.Context(), sc, metav1.CreateOptions{}); err != nil {
		f.T.Fatalf("create StorageClass %s: %v", name, err)
	}
	f.T.Cleanup(func() {
		_ = f.Client.StorageV1().StorageClasses().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
	return name
}

func firstLines(s string, n int) string {
	l := strings.SplitN(s, "\n", n+1)
	if len(l) > n {
		l = l[:n]
	}
	return strings.Join(l, "\n")
}

// writeLog is one writer's record of what it wrote: file name to sha256.
type writeLog map[string]string

// writeFiles writes n files of 1 MiB random data, each fsynced, from pod, and returns what it
// wrote (from sha256sum in the pod) and the longest time one file took (whole seconds).
func writeFiles(f *framework.Framework, pod string, n int) (writeLog, time.Duration, error) {
	script := fmt.Sprintf(`i=0; while [ $i -lt %d ]; do
  s=$(date +%%s); dd if=/dev/urandom of=/data/%s-$i bs=1M count=1 conv=fsync 2>/dev/null || exit 1
  e=$(date +%%s); echo "took $((e - s))"; sha256sum /data/%s-$i; i=$((i+1)); done`,
		n, pod, pod)
	out, stderr, err := f.Exec(pod, "app", "sh", "-c", script)
	if err != nil {
		return nil, 0, fmt.Errorf("%v: %s (wrote: %q)", err, stderr, firstLines(out, 3))
	}
	got := writeLog{}
	var worst time.Duration
	for _, l := range strings.Split(out, "\n") {
		fs := strings.Fields(l)
		switch {
		case len(fs) == 2 && fs[0] == "took":
			sec, _ := strconv.Atoi(fs[1]) // busybox date has no sub-second format
			worst = max(worst, time.Duration(sec)*time.Second)
		case len(fs) == 2:
			got[fs[1]] = fs[0]
		}
	}
	if len(got) != n {
		return nil, 0, fmt.Errorf("%s reported %d files written, want %d", pod, len(got), n)
	}
	return got, worst, nil
}

// TestStorageBrickNodeStop: a node holding a brick loses power while pods on the two other
// nodes write, remove a directory tree, and another claim is deleted. The writers keep going
// (after at most the volume's ping-timeout), every byte they wrote reads back with its
// checksum; the node is started again, self-heal completes (the removed tree's heal needs the
// controller's stuck-heal remedy), and afterwards the node's brick holds the same bytes as the
// others and nothing of the removed tree or of the deleted claim.
func TestStorageBrickNodeStop(t *testing.T) {
	f := framework.New(t, nil)
	f.RequireBerth("csi")
	// The victim is a worker (stopping the control-plane node stops the cluster); the writers
	// run on the two other nodes.
	victimNode, other := twoWorkers(t, f)
	writers := []string{controlPlaneNode(t), other}
	if !strings.Contains(gluster(t, "volume", "info", glusterVolume()), nodeIP(t, f, victimNode)+":") {
		t.Fatalf("node %s holds no brick of volume %s", victimNode, glusterVolume())
	}
	baseline := volumeSettled(t, f)
	claim := createPVC(f, "data", "berth-shared", "512Mi")
	storagePodOn(f, "w1", claim, writers[0])
	storagePodOn(f, "w2", claim, writers[1])
	// A claim with data, deleted while the node is down: its directory must go from the node's
	// brick by self-heal (GlusterFS 10's anonymous-inode heal left it pending for good).
	gone := createPVC(f, "gone", "berth-shared", "64Mi")
	storagePodOn(f, "g", gone, writers[0])
	f.WaitPodsReady("e2e=storage", 3, 3*time.Minute)
	marker := "gone-marker-" + f.Namespace
	mustExec(f, "g", "sh", "-c", "mkdir -p /data/sub && echo x >/data/sub/"+marker)
	gonePV := deletePodGetPV(f, "g", gone)
	// A tree the app removes while the node is down: its removal cannot be healed onto the node's
	// brick by GlusterFS alone (gluster/glusterfs#3921); the controller's stuck-heal remedy must.
	treeMarker := "tree-marker-" + f.Namespace
	mustExec(f, "w1", "sh", "-c", "for d in 0 1 2 3; do mkdir -p /data/tree/d$d && echo x >/data/tree/d$d/"+
		treeMarker+"; done")

	const files = 40
	type result struct {
		log   writeLog
		worst time.Duration
		err   error
	}
	results := make([]result, 2)
	var wg sync.WaitGroup
	done := make(chan struct{})
	for i, p := range []string{"w1", "w2"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i].log, results[i].worst, results[i].err = writeFiles(f, p, files)
		}()
	}
	go func() { wg.Wait(); close(done) }()
	// Stop the brick's node once both writers are under way (or report why they are not).
	f.WaitFor("both writers to have written 5 files", 2*time.Minute, func(context.Context) (bool, error) {
		select {
		case <-done:
			t.Fatalf("the writers ended before the node was stopped: %v, %v", results[0].err, results[1].err)
		default:
		}
		out, _, err := f.Exec("w1", "app", "sh", "-c", "ls /data | grep -c '^w[12]-'")
		n, _ := strconv.Atoi(strings.TrimSpace(out))
		return err == nil && n >= 10, nil
	})
	stopped := time.Now()
	f.FailNode(t, victimNode, "stop")
	wg.Wait()
	for i, r := range results {
		if r.err != nil {
			t.Fatalf("writer w%d on %s, with %s stopped: %v", i+1, writers[i], victimNode, r.err)
		}
		t.Logf("writer w%d on %s: %d files of 1 MiB, the slowest took %v; all written %v after %s stopped",
			i+1, writers[i], files, r.worst, time.Since(stopped).Round(time.Second), victimNode)
	}
	// Read everything back, each writer's files from the other node.
	verify := func(reader string, want writeLog) {
		t.Helper()
		names := make([]string, 0, len(want))
		for n := range want {
			names = append(names, n)
		}
		sort.Strings(names)
		out := mustExec(f, reader, append([]string{"sha256sum"}, names...)...)
		got := writeLog{}
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			if fs := strings.Fields(l); len(fs) == 2 {
				got[fs[1]] = fs[0]
			}
		}
		for n, sum := range want {
			if got[n] != sum {
				t.Errorf("%s reads %s with sha256 %q, the writer wrote %q", reader, n, got[n], sum)
			}
		}
	}
	verify("w2", results[0].log)
	verify("w1", results[1].log)
	mustExec(f, "w2", "rm", "-r", "/data/tree")
	// The deleted claim's PV waits for the node: the driver removes a PV directory only when
	// every brick can remove its copy, and says why in the PV's events.
	if err := f.Client.CoreV1().PersistentVolumeClaims(f.Namespace).Delete(f.Context(), gone,
		metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	victimBrick := nodeIP(t, f, victimNode) + ":"
	waitPVEvent(f, gonePV, "VolumeFailedDelete", victimBrick, 2*time.Minute, stopped)
	if _, err := f.Client.CoreV1().PersistentVolumes().Get(f.Context(), gonePV, metav1.GetOptions{}); err != nil {
		t.Fatalf("PV %s of the deleted claim, with %s down: %v; want it kept until the brick is back",
			gonePV, victimNode, err)
	}
	// The health monitor names the powered-off node's brick (glusterd's volume status leaves
	// it out; the driver lists it from volume info). It polls every 30 s.
	pvc, err := f.Client.CoreV1().PersistentVolumeClaims(f.Namespace).Get(f.Context(), claim, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	waitPVEvent(f, pvc.Spec.VolumeName, "GlusterBrickOffline", victimBrick, 90*time.Second, stopped)

	f.RestoreNode(t, victimNode, "start")
	restarted := time.Now()
	// Retries back off to at most 5 min; after a minute down the next comes within about 2.
	f.WaitFor("PV "+gonePV+" of the deleted claim to be deleted once "+victimNode+" is back", 5*time.Minute,
		func(ctx context.Context) (bool, error) {
			_, err := f.Client.CoreV1().PersistentVolumes().Get(ctx, gonePV, metav1.GetOptions{})
			return apierrors.IsNotFound(err), nil
		})
	t.Logf("PV %s deleted %v after %s was started again", gonePV, time.Since(restarted).Round(time.Second),
		victimNode)
	var pending int
	f.WaitFor("self-heal of volume "+glusterVolume()+" to finish", 5*time.Minute, func(context.Context) (bool, error) {
		var err error
		if pending, err = healPending(t); pending == 0 {
			return true, nil
		}
		return false, err
	})
	t.Logf("gluster volume heal %s info empty (%d entries before the stop) %v after %s was started again",
		glusterVolume(), baseline, time.Since(restarted).Round(time.Second), victimNode)
	if evs, err := pvEvents(f.Context(), f, pvc.Spec.VolumeName); err == nil {
		for _, e := range evs {
			if e.Reason == "GlusterHealStuck" {
				t.Logf("stuck heal remedied: %s", e.Message)
			}
		}
	}
	// The healed brick holds the same bytes: read its copy straight from the node's disk.
	brick := os.Getenv("BERTH_STATE") + "/glusterd/bricks/" + glusterVolume()
	out, err := framework.NodeExec(victimNode, "sh", "-c",
		"cd "+brick+" && find . -path ./.glusterfs -prune -o -type f -name 'w[12]-*' -exec sha256sum {} +")
	if err != nil {
		t.Fatalf("reading the healed brick on %s: %v", victimNode, err)
	}
	onBrick := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if fs := strings.Fields(l); len(fs) == 2 {
			onBrick["/data/"+fs[1][strings.LastIndex(fs[1], "/")+1:]] = fs[0]
		}
	}
	for _, r := range results {
		for n, sum := range r.log {
			if onBrick[n] != sum {
				t.Errorf("after heal, %s's brick has %s with sha256 %q, want %q", victimNode, n, onBrick[n], sum)
			}
		}
	}
	if out, err := framework.NodeExec(victimNode, "sh", "-c", "cd "+brick+
		" && find . -path ./.glusterfs -prune -o -name "+marker+" -print"); err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("after heal, %s's brick still holds the deleted claim's data: %q (err %v)", victimNode, out, err)
	}
	if out, err := framework.NodeExec(victimNode, "sh", "-c", "cd "+brick+
		" && find . -path ./.glusterfs -prune -o -name "+treeMarker+" -print"); err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("after heal, %s's brick still holds the tree removed while it was down: %q (err %v)",
			victimNode, out, err)
	}
}

// waitPVEvent waits for an Event on PV pv with reason whose message contains want, and logs
// it with the time since since.
func waitPVEvent(f *framework.Framework, pv, reason, want string, timeout time.Duration, since time.Time) {
	f.T.Helper()
	f.WaitFor("a "+reason+" event on PV "+pv+" naming "+want, timeout, func(ctx context.Context) (bool, error) {
		evs, err := pvEvents(ctx, f, pv)
		if err != nil {
			return false, err
		}
		for _, e := range evs {
			if e.Reason == reason && strings.Contains(e.Message, want) {
				f.T.Logf("%v after the stop, PV %s: %s: %s", time.Since(since).Round(time.Second), pv, e.Reason,
					e.Message)
				return true, nil
			}
		}
		return false, nil
	})
}

// pvEvents lists the Events about PV pv (cluster-scoped: they land in the default namespace).
func pvEvents(ctx context.Context, f *framework.Framework, pv string) ([]corev1.Event, error) {
	evs, err := f.Client.CoreV1().Events("").List(ctx, metav1.ListOptions{
		FieldSelector: "involvedObject.name=" + pv})
	if err != nil {
		return nil, err
	}
	return evs.Items, nil
}

// deletePodGetPV deletes pod, waits until it is gone (the claim is no longer in use) and
// returns the name of claim's PV.
func deletePodGetPV(f *framework.Framework, pod, claim string) string {
	f.T.Helper()
	pvc, err := f.Client.CoreV1().PersistentVolumeClaims(f.Namespace).Get(f.Context(), claim, metav1.GetOptions{})
	if err != nil {
		f.T.Fatal(err)
	}
	if err := f.Client.CoreV1().Pods(f.Namespace).Delete(f.Context(), pod, metav1.DeleteOptions{}); err != nil {
		f.T.Fatal(err)
	}
	f.WaitFor("pod "+pod+" to be gone", 2*time.Minute, func(ctx context.Context) (bool, error) {
		_, err := f.Client.CoreV1().Pods(f.Namespace).Get(ctx, pod, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
	return pvc.Spec.VolumeName
}

func nodeIP(t *testing.T, f *framework.Framework, node string) string {
	t.Helper()
	n, err := f.Client.CoreV1().Nodes().Get(f.Context(), node, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			return a.Address
		}
	}
	t.Fatalf("node %s has no InternalIP", node)
	return ""
}

// TestStorageNodeLoss: the node of a pod with a volume loses power. The replacement pod, on
// another node, mounts the same data; when the node comes back, its kubelet and csi-sharedfs
// node plugin clean up the old pod's mount and nothing stays stuck.
func TestStorageNodeLoss(t *testing.T) {
	f := framework.New(t, nil)
	f.RequireBerth("csi")
	a, _ := twoWorkers(t, f)
	volumeSettled(t, f)
	claim := createPVC(f, "data", "berth-shared", "64Mi")
	labels := map[string]string{"app": "keeper"}
	spec := claimPodSpec(claim)
	// first on a, then anywhere but the control-plane node
	spec.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{
		RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
			MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "kubernetes.io/hostname",
				Operator: corev1.NodeSelectorOpNotIn, Values: []string{controlPlaneNode(t)}}}}}},
		PreferredDuringSchedulingIgnoredDuringExecution: []corev1.PreferredSchedulingTerm{{Weight: 100,
			Preference: corev1.NodeSelectorTerm{MatchExpressions: []corev1.NodeSelectorRequirement{{
				Key: "kubernetes.io/hostname", Operator: corev1.NodeSelectorOpIn, Values: []string{a}}}}}},
	}}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "keeper"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(int32(1)),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: spec},
		},
	}
	if _, err := f.Client.AppsV1().Deployments(f.Namespace).Create(f.Context(), dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	first := f.WaitPodsReady("app=keeper", 1, 5*time.Minute)[0]
	node := first.Spec.NodeName
	mustExec(f, first.Name, "sh", "-c", "dd if=/dev/urandom of=/data/blob bs=1M count=4 conv=fsync 2>/dev/null")
	sum := strings.Fields(mustExec(f, first.Name, "sha256sum", "/data/blob"))[0]
	pvc, err := f.Client.CoreV1().PersistentVolumeClaims(f.Namespace).Get(f.Context(), claim, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pv := pvc.Spec.VolumeName

	f.FailNode(t, node, "stop")
	lost := time.Now()
	var replacement corev1.Pod
	f.WaitFor("a replacement pod on another node", 4*time.Minute, func(ctx context.Context) (bool, error) {
		ps, err := f.Client.CoreV1().Pods(f.Namespace).List(ctx, metav1.ListOptions{LabelSelector: "app=keeper"})
		if err != nil {
			return false, err
		}
		for _, p := range ps.Items {
			if p.Name != first.Name && p.Spec.NodeName != "" && p.Spec.NodeName != node && framework.PodReady(&p) {
				replacement = p
				return true, nil
			}
		}
		return false, nil
	})
	t.Logf("replacement %s Ready on %s %v after %s lost power", replacement.Name, replacement.Spec.NodeName,
		time.Since(lost).Round(time.Second), node)
	if got := strings.Fields(mustExec(f, replacement.Name, "sha256sum", "/data/blob"))[0]; got != sum {
		t.Errorf("the replacement reads sha256 %s, the lost pod wrote %s", got, sum)
	}

	f.RestoreNode(t, node, "start")
	// A claim made in the seconds after the node came back: glusterd on that node misses its
	// limit (quota.conf is not resynced to a restarted peer), yet deleting it must work.
	afterBoot := createPVC(f, "after-boot", "berth-shared", "16Mi")
	// Back on power, the node's kubelet learns the old pod is gone and unpublishes its volume:
	// no pod object, no GlusterFS mount of the PV left on the node.
	f.WaitFor("the lost pod to be gone", 3*time.Minute, func(ctx context.Context) (bool, error) {
		_, err := f.Client.CoreV1().Pods(f.Namespace).Get(ctx, first.Name, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
	var mounts string
	f.WaitFor("no mount of "+pv+" left on "+node, 2*time.Minute, func(context.Context) (bool, error) {
		out, err := framework.NodeExec(node, "cat", "/proc/mounts")
		mounts = out
		return err == nil && !strings.Contains(out, pv) && !strings.Contains(out, string(first.UID)), nil
	})
	vas, err := f.Client.StorageV1().VolumeAttachments().List(f.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, va := range vas.Items {
		if va.Spec.Source.PersistentVolumeName != nil && *va.Spec.Source.PersistentVolumeName == pv {
			t.Errorf("VolumeAttachment %s of %s stays (attached %v)", va.Name, pv, va.Status.Attached)
		}
	}
	if t.Failed() {
		t.Logf("mounts on %s:\n%s", node, mounts)
	}
	deleteClaimWaitPV(f, afterBoot, 2*time.Minute)
}

// deleteClaimWaitPV deletes claim and waits until its PV is gone; on a timeout it logs the PV's
// events (the driver's VolumeFailedDelete says why).
func deleteClaimWaitPV(f *framework.Framework, claim string, timeout time.Duration) {
	f.T.Helper()
	pvc, err := f.Client.CoreV1().PersistentVolumeClaims(f.Namespace).Get(f.Context(), claim, metav1.GetOptions{})
	if err != nil {
		f.T.Fatal(err)
	}
	pv := pvc.Spec.VolumeName
	if err := f.Client.CoreV1().PersistentVolumeClaims(f.Namespace).Delete(f.Context(), claim,
		metav1.DeleteOptions{}); err != nil {
		f.T.Fatal(err)
	}
	deleted := time.Now()
	defer func() {
		if !f.T.Failed() {
			f.T.Logf("PV %s of claim %s deleted %v after the claim", pv, claim, time.Since(deleted).Round(time.Second))
			return
		}
		evs, _ := pvEvents(context.Background(), f, pv)
		for _, e := range evs {
			f.T.Logf("PV %s event %s %s (x%d, last %s): %s", pv, e.Type, e.Reason, e.Count,
				e.LastTimestamp.Format(time.TimeOnly), e.Message)
		}
	}()
	f.WaitFor("PV "+pv+" to be deleted", timeout, func(ctx context.Context) (bool, error) {
		_, err := f.Client.CoreV1().PersistentVolumes().Get(ctx, pv, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
}
