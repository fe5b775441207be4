//go:build integration

package csi

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	csi "github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
)

// raceResult is what N writers racing one quota'd directory leave behind.
type raceResult struct {
	landed   int64 // bytes in the files afterwards (st_size summed)
	accepted int64 // bytes write(2) accepted
	closeErr int   // writers whose close (or fsync) reported the refusal
	edquot   int   // writers that saw EDQUOT at all
	other    error // an error other than EDQUOT
}

// raceQuota starts n writers, each writing up to perWriter bytes in blocks of block bytes
// (fsync after each when sync) into its own file under dir, and waits for all of them.
func raceQuota(dir string, n int, perWriter int64, block int, sync_ bool) raceResult {
	var mu sync.Mutex
	var res raceResult
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f, err := os.Create(filepath.Join(dir, fmt.Sprintf("w%02d", i)))
			if err != nil { // at the quota already: creating the file is refused too
				mu.Lock()
				if errors.Is(err, syscall.EDQUOT) {
					res.edquot++
				} else {
					res.other = err
				}
				mu.Unlock()
				return
			}
			buf := bytes.Repeat([]byte{byte('a' + i%26)}, block)
			<-start
			var acc int64
			var werr error
			for acc < perWriter {
				if _, werr = f.Write(buf); werr != nil {
					break
				}
				acc += int64(block)
				if sync_ {
					if werr = f.Sync(); werr != nil {
						break
					}
				}
			}
			cerr := f.Close()
			mu.Lock()
			defer mu.Unlock()
			res.accepted += acc
			for _, e := range []error{werr, cerr} {
				if e != nil && !errors.Is(e, syscall.EDQUOT) && !errors.Is(e, syscall.ENOSPC) {
					res.other = e
				}
			}
			if errors.Is(werr, syscall.EDQUOT) || errors.Is(cerr, syscall.EDQUOT) {
				res.edquot++
			}
			if cerr != nil {
				res.closeErr++
			}
		}()
	}
	close(start)
	wg.Wait()
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if fi, err := e.Info(); err == nil {
			res.landed += fi.Size()
		}
	}
	return res
}

// quotaOvershootBound is what docs/csi.md promises: past the size, at most one write in
// flight per writer (n writes of block bytes), and never more than 1 MiB for a lone writer.
func quotaOvershootBound(n, block int) int64 { return max(1<<20, int64(n)*int64(block)) }

// TestQuotaParallelWriters races 1, 4 and 16 writers (1 MiB and 4 KiB writes, with and
// without fsync) across the edge of an 8 MiB quota on a 1-brick and a replica-2 volume. Each time
// the usage past the size stays within the documented bound, a write past the quota fails itself
// (close never reports a refusal the writes did not: nothing write(2) accepted is lost), a
// write after the race is refused,
// NodeGetVolumeStats reports the real usage, and on the replicated volume the two copies of every
// file are identical once heal info is empty. A race GlusterFS refuses nothing of is run once
// more on a new volume, which must hold (raceTrial).
func TestQuotaParallelWriters(t *testing.T) {
	td := startDriver(t)
	const limit = 8 << 20
	type trial struct {
		vol   string
		n     int
		block int
		fsync bool
	}
	var trials []trial
	for _, vol := range []string{plainVol, replicatedVol} {
		for _, n := range []int{1, 4, 16} {
			for _, block := range []int{1 << 20, 4 << 10} {
				for _, s := range []bool{false, true} {
					trials = append(trials, trial{vol, n, block, s})
				}
			}
		}
	}
	// A controller's first volume on a GlusterFS volume re-applies its quota settings, and every
	// brick, client and quotad reloads its volfile: in one CI run the first race right after that
	// went unrefused (docs/csi.md). The races measure the steady state, so each GlusterFS volume
	// first shows a refusal on a small warm-up volume.
	for _, vol := range []string{plainVol, replicatedVol} {
		_, target := td.publishNew(t, "warmup-"+vol, 1<<20, map[string]string{ParamGlusterVolume: vol})
		requireRefusedOnceCounted(t, "warmup-"+vol, target)
	}
	var worst int64
	var repeated []string
	for _, tr := range trials {
		name := fmt.Sprintf("race-%s-%d-%dk-sync-%v", tr.vol, tr.n, tr.block>>10, tr.fsync)
		over, unenforced := raceTrial(t, td, name, tr.vol, limit, tr.n, tr.block, tr.fsync, false)
		if unenforced {
			// GlusterFS let a whole race through unrefused (twice in CI, never in local runs;
			// docs/csi.md): once may be that, twice in a row on a new volume fails.
			repeated = append(repeated, name)
			over, _ = raceTrial(t, td, name+"-again", tr.vol, limit, tr.n, tr.block, tr.fsync, true)
		}
		worst = max(worst, over)
	}
	if len(repeated) > 0 {
		t.Logf("GlusterFS refused nothing during %d race(s), each repeated once on a new volume: %v",
			len(repeated), repeated)
	}
	t.Logf("worst overshoot over %d trials: %.2f MiB", len(trials), float64(worst)/(1<<20))
}

// raceTrial runs one race of n writers across the edge of a new volume's quota and checks what a
// user would: the usage past the size within the documented bound, EDQUOT seen by a writer, a
// write after the race refused, no refusal reported only by close, NodeGetVolumeStats reporting
// the real usage, and (replicated) identical copies once heal info is empty. It returns the
// overshoot and, unless strict, reports a race GlusterFS did not refuse at all (no writer saw
// EDQUOT) as unenforced instead of failing.
func raceTrial(t *testing.T, td *testDriver, name, vol string, limit int64, n, block int, fsync,
	strict bool) (over int64, unenforced bool) {
	t.Helper()
	id, target := td.publishNew(t, name, limit, map[string]string{ParamGlusterVolume: vol})
	// A prefill to 2 MiB below the size, then the race writes 8 MiB in all (room to end
	// 6 MiB past the size, beyond the bound): the writes that matter are those at the
	// limit, and 4 KiB writes of a whole volume take long.
	if _, err := writeUntilError(filepath.Join(target, "prefill"), limit-(2<<20)); err != nil {
		t.Fatal(err)
	}
	r := raceQuota(target, n, (8<<20)/int64(n), block, fsync)
	over = r.landed - limit
	t.Logf("%s: %+.2f MiB past the size, EDQUOT seen by %d of %d writers, %d refusals reported "+
		"only by close", name, float64(over)/(1<<20), r.edquot, n, r.closeErr)
	if r.other != nil {
		t.Errorf("%s: a writer failed with %v, want only EDQUOT", name, r.other)
	}
	bound := quotaOvershootBound(n, block)
	// A race no writer saw EDQUOT in is GlusterFS letting a whole race through, wherever it
	// ended (once 14 MiB past with 16 writers, inside their 16 MiB bound): repeated by the
	// caller, not judged here.
	if r.edquot > 0 || strict {
		if over > bound {
			t.Errorf("%s: the volume ended %.2f MiB past its size, the documented bound is %.2f MiB",
				name, float64(over)/(1<<20), float64(bound)/(1<<20))
		}
		if r.edquot == 0 {
			t.Errorf("%s: no writer saw EDQUOT after writing 2 MiB past the size", name)
		}
	} else {
		unenforced = true
	}
	if over > bound || r.edquot == 0 { // what GlusterFS counted, for a failure seen only in CI
		ref, _ := newVolumeRef(vol, name)
		out, _ := gd.CLI(t.Context(), "volume", "quota", vol, "list", "/"+ref.RelData())
		t.Logf("%s: gluster volume quota list:\n%s", name, out)
	}
	requireRefusedOnceCounted(t, name, target)
	if !fsync && r.closeErr > 0 {
		t.Errorf("%s: %d writers learnt of the refusal only at close: write(2) accepted data that "+
			"never landed", name, r.closeErr)
	}
	st, err := td.node().NodeGetVolumeStats(t.Context(), &csi.NodeGetVolumeStatsRequest{VolumeId: id,
		VolumePath: target})
	if err != nil {
		t.Fatal(err)
	}
	if used := st.GetUsage()[0].GetUsed(); used < r.landed-(64<<10) {
		t.Errorf("%s: NodeGetVolumeStats used = %.2f MiB, the files hold %.2f MiB", name,
			float64(used)/(1<<20), float64(r.landed)/(1<<20))
	}
	if vol == replicatedVol {
		compareReplicas(t, td, name)
	}
	return over, unenforced
}

// requireRefusedOnceCounted checks that the quota holds once GlusterFS has counted every
// write of the race (its accounting runs behind the writes): a further write (1 MiB, fsync'ed)
// is refused with EDQUOT within 10 s.
func requireRefusedOnceCounted(t *testing.T, name, dir string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; ; i++ {
		_, err := writeUntilError(filepath.Join(dir, fmt.Sprintf("after-%d", i)), 1)
		switch {
		case errors.Is(err, syscall.EDQUOT):
			return
		case err != nil:
			t.Errorf("%s: a write after the race failed with %v, want EDQUOT", name, err)
			return
		case time.Now().After(deadline):
			t.Errorf("%s: writes past the size still accepted 10 s after the race", name)
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// compareReplicas waits until the health monitor's polls (each starts an index heal while
// heals are pending) find heal info empty, then compares the copies of every file of PV name
// on the two bricks of each replica set of replicatedVol, byte for byte.
func compareReplicas(t *testing.T, td *testDriver, name string) {
	t.Helper()
	for _, d := range replicaDifferences(t, td, name) {
		t.Errorf("%s: %s", name, d)
	}
}

// replicaDiff is a file whose two copies in one replica set differ.
type replicaDiff struct {
	file       string
	pair       int
	a, b       []byte
	errA, errB error
}

func (d replicaDiff) String() string {
	return fmt.Sprintf("%s differs between replica bricks %d (%d bytes, %v) and %d (%d bytes, %v)",
		d.file, d.pair, len(d.a), d.errA, d.pair+1, len(d.b), d.errB)
}

// tailOnly reports whether the copies agree on every byte they both hold: one has a tail the other
// lacks.
func (d replicaDiff) tailOnly() bool {
	n := min(len(d.a), len(d.b))
	return d.errA == nil && d.errB == nil && bytes.Equal(d.a[:n], d.b[:n])
}

// replicaDifferences waits until heal info is empty (60 s at most), then compares the two bricks
// of each replica set of the volume's data byte for byte.
func replicaDifferences(t *testing.T, td *testDriver, name string) []replicaDiff {
	t.Helper()
	ref, _ := newVolumeRef(replicatedVol, name)
	hm := &HealthMonitor{Driver: td.d}
	start := time.Now()
	for hm.check(t.Context(), replicatedVol) != healthOK {
		if time.Since(start) > 60*time.Second {
			t.Fatalf("%s: heal info still not empty after %s: %+v", name, time.Since(start),
				td.d.readHealth(t.Context(), replicatedVol).heal)
		}
		time.Sleep(healingInterval / 5)
	}
	t.Logf("%s: heal info empty after %s", name, time.Since(start).Round(time.Millisecond))
	// A full heal started by that poll (after a client death) runs in the background: give it
	// time before calling copies different.
	for settle := time.Now(); ; time.Sleep(250 * time.Millisecond) {
		diffs := brickDifferences(t, name, ref)
		if len(diffs) == 0 || time.Since(settle) > 20*time.Second {
			if len(diffs) == 0 && time.Since(settle) > time.Second {
				t.Logf("%s: copies converged %s after heal info emptied", name,
					time.Since(settle).Round(time.Millisecond))
			}
			return diffs
		}
	}
}

// brickDifferences compares the copies of every file of PV name on the two bricks of each
// replica pair.
func brickDifferences(t *testing.T, name string, ref volumeRef) []replicaDiff {
	var diffs []replicaDiff
	for pair := 0; pair < 4; pair += 2 {
		a := filepath.Join(gd.Base, "bricks", fmt.Sprintf("%s-%d", replicatedVol, pair), "b",
			ref.RelData())
		b := filepath.Join(gd.Base, "bricks", fmt.Sprintf("%s-%d", replicatedVol, pair+1), "b",
			ref.RelData())
		entries, _ := os.ReadDir(a)
		others, _ := os.ReadDir(b)
		if len(entries) != len(others) {
			t.Errorf("%s: replica bricks %d and %d hold %d and %d files", name, pair, pair+1, len(entries),
				len(others))
		}
		for _, e := range entries {
			ca, erra := os.ReadFile(filepath.Join(a, e.Name()))
			cb, errb := os.ReadFile(filepath.Join(b, e.Name()))
			if erra != nil || errb != nil || !bytes.Equal(ca, cb) {
				diffs = append(diffs, replicaDiff{file: e.Name(), pair: pair, a: ca, b: cb, errA: erra,
					errB: errb})
			}
		}
	}
	return diffs
}

// TestClientKillReplicasConverge: the GlusterFS client of a replicated volume is SIGKILLed while
// 4 writers write into it without fsync (a node's FUSE client dying mid-transaction leaves the
// replicas' changelogs pending). Without a manual step the node's repair pass remounts, heal info
// empties (the health monitor starts index heals while entries are pending), the two bricks of
// each replica set hold the same bytes, and two reads of every file return the same content.
func TestClientKillReplicasConverge(t *testing.T) {
	td := startDriver(t)
	const name = "client-kill"
	_, target := td.publishNew(t, name, 256<<20, map[string]string{ParamGlusterVolume: replicatedVol})
	block := bytes.Repeat([]byte("berth-client-kill "), (1<<20)/18)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	written := make([]int, 4)
	for i := range written {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f, err := os.Create(filepath.Join(target, fmt.Sprintf("w%d", i)))
			if err != nil {
				return
			}
			defer f.Close()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := f.Write(block); err != nil {
					return // the client is gone: ENOTCONN
				}
				written[i]++
			}
		}()
	}
	// Kill once every writer is under way.
	deadline := time.Now().Add(30 * time.Second)
	for {
		n := 0
		for i := range written {
			if st, err := os.Stat(filepath.Join(target, fmt.Sprintf("w%d", i))); err == nil && st.Size() >= 2<<20 {
				n++
			}
		}
		if n == len(written) {
			break
		}
		if time.Now().After(deadline) {
			close(stop)
			wg.Wait()
			t.Fatalf("the 4 writers did not get going in 30 s: %v blocks", written)
		}
		time.Sleep(20 * time.Millisecond)
	}
	pid := glusterClientPID(t, td.d.glusterMountPath(replicatedVol))
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	close(stop)
	// A writer normally returns at once with ENOTCONN. Once in some 40 kills the dying client
	// leaves its FUSE connection open and the writers blocked (docs/csi.md, "Dead mounts"):
	// then only the repair pass, which aborts that connection, lets them return.
	writersDone := make(chan struct{})
	go func() { wg.Wait(); close(writersDone) }()

	// The node's watch loop finds the dead mount at its next 5 s tick, and the controller's
	// health poll starts heals seconds apart: never within milliseconds of the death, when a
	// write of the dead client can still be queued on one brick after its locks were dropped.
	// A heal in that instant copies the file before the write lands, and the replicas then
	// differ with heal info empty (seen once in CI with the heal 0.2 s after the kill).
	time.Sleep(time.Until(killed.Add(2 * time.Second)))
	td.d.repairAll(t.Context()) // what the node's 5 s watch loop does
	select {
	case <-writersDone:
	case <-time.After(30 * time.Second):
		t.Fatal("writers still blocked 30 s after the repair pass")
	}
	t.Logf("killed the GlusterFS client (pid %d) after %v MiB written by the 4 writers", pid, written)
	// GlusterFS 10 can leave the copies of a file that was being written differing by the
	// unacknowledged write in flight at the kill (128 KiB here), with heal info empty (2-3 runs
	// in 8 in one series, docs/csi.md). The remount reports the death and the controller's poll
	// in replicaDifferences starts a full heal, which converges such copies
	// (TestClientDeathStartsFullHeal). A tail still there 20 s later is logged, not failed: too
	// rare here to prove the full heal on the real thing. Copies that differ within the bytes
	// both hold fail.
	diffs := replicaDifferences(t, td, name)
	for _, d := range diffs {
		if !d.tailOnly() {
			t.Errorf("%s: %s, within the bytes both copies hold", name, d)
			continue
		}
		t.Logf("%s: GlusterFS left an unacknowledged tail on one copy only: %s", name, d)
	}
	if len(diffs) == 0 {
		t.Logf("replicas identical %v after the client was killed", time.Since(killed).Round(time.Millisecond))
	}
	for i := range written {
		p := filepath.Join(target, fmt.Sprintf("w%d", i))
		a, err := os.ReadFile(p)
		if err != nil {
			t.Fatalf("reading %s after the remount: %v", p, err)
		}
		b, err := os.ReadFile(p)
		if err != nil || !bytes.Equal(a, b) {
			t.Errorf("two reads of w%d differ (%d and %d bytes, %v)", i, len(a), len(b), err)
		}
		for off := 0; off+len(block) <= len(a); off += len(block) {
			if !bytes.Equal(a[off:off+len(block)], block) {
				t.Errorf("w%d holds other bytes than written at offset %d", i, off)
				break
			}
		}
	}
}

// TestOrphanedFUSEConnectionRepaired: the GlusterFS client of a published volume dies while
// the kernel keeps its FUSE connection open, so that every access to the mount blocks instead
// of failing. A SIGKILLed client left that state once in 38 runs of
// TestClientKillReplicasConverge (one of its threads stuck on a page lock a writer held); here
// the test holds a duplicate of the client's /dev/fuse descriptor (pidfd_getfd) before the
// kill, which leaves the same state every time. The node's repair pass must not block on it: it
// aborts the orphaned connection, remounts, and the pod's path works again.
func TestOrphanedFUSEConnectionRepaired(t *testing.T) {
	td := startDriver(t)
	_, target := td.publishNew(t, "orphaned-fuse", 64<<20, nil)
	if err := os.WriteFile(filepath.Join(target, "before"), []byte("kept"), 0o644); err != nil {
		t.Fatal(err)
	}
	mp := td.d.glusterMountPath(plainVol)
	pid := glusterClientPID(t, mp)
	held := holdFUSEDescriptor(t, pid)
	defer unix.Close(held) // closing it aborts the connection: nothing stays blocked after the test
	killAndReap(t, pid)
	repaired := make(chan struct{})
	go func() { td.d.repairAll(t.Context()); close(repaired) }()
	select {
	case <-repaired:
	case <-time.After(60 * time.Second):
		t.Fatal("the repair pass is still blocked 60 s after the client died: nothing aborted the " +
			"FUSE connection no process serves")
	}
	got, err := os.ReadFile(filepath.Join(target, "before"))
	if err != nil || string(got) != "kept" {
		t.Fatalf("after the repair the pod's path reads %q, %v; want the file written before", got, err)
	}
	if err := os.WriteFile(filepath.Join(target, "after"), []byte("new"), 0o644); err != nil {
		t.Errorf("writing after the repair: %v", err)
	}
	if newPID := glusterClientPID(t, mp); newPID == pid {
		t.Errorf("the GlusterFS volume is still served by the killed client %d", pid)
	}
}

// holdFUSEDescriptor duplicates the /dev/fuse descriptor of process pid into this process.
func holdFUSEDescriptor(t *testing.T, pid int) int {
	t.Helper()
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range fds {
		if link, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name())); link != "/dev/fuse" {
			continue
		}
		n, _ := strconv.Atoi(e.Name())
		pidfd, err := unix.PidfdOpen(pid, 0)
		if err != nil {
			t.Skipf("pidfd_open: %v (needs Linux 5.3)", err)
		}
		defer unix.Close(pidfd)
		fd, err := unix.PidfdGetfd(pidfd, n, 0)
		if err != nil {
			t.Skipf("pidfd_getfd: %v (needs Linux 5.6 and ptrace rights)", err)
		}
		return fd
	}
	t.Fatalf("process %d holds no /dev/fuse descriptor", pid)
	return -1
}

// TestClientDeathStartsFullHeal: a GlusterFS client dies, and one copy of files it was writing
// holds a tail the other lacks, with nothing pending in heal info: what a write in flight at
// the death left in 2 of 8 runs of TestClientKillReplicasConverge. The tail is made here by
// appending to one brick's copies after the kill (a named fault: the real one comes too rarely
// to test on). The node's repair pass remounts and reports the death in the volume; the
// controller's next health poll starts a full heal, and the copies converge without a manual
// step. Index heals and lookups through a fresh client leave them different (tried: 30 s).
func TestClientDeathStartsFullHeal(t *testing.T) {
	td := startDriver(t)
	const name = "death-heal"
	_, target := td.publishNew(t, name, 64<<20, map[string]string{ParamGlusterVolume: replicatedVol})
	body := bytes.Repeat([]byte("acknowledged "), (256<<10)/13)
	for i := range 4 {
		if err := os.WriteFile(filepath.Join(target, fmt.Sprintf("f%d", i)), body, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mp := td.d.glusterMountPath(replicatedVol)
	pid := glusterClientPID(t, mp)
	killAndReap(t, pid)
	ref, _ := newVolumeRef(replicatedVol, name)
	brickDir := func(b int) string {
		return filepath.Join(gd.Base, "bricks", fmt.Sprintf("%s-%d", replicatedVol, b), "b", ref.RelData())
	}
	tails := 0
	for pair := 0; pair < 4; pair += 2 {
		entries, _ := os.ReadDir(brickDir(pair))
		for _, e := range entries {
			f, err := os.OpenFile(filepath.Join(brickDir(pair), e.Name()), os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			_, err = f.Write(bytes.Repeat([]byte("unacknowledged "), (128<<10)/15))
			_ = f.Close()
			if err != nil {
				t.Fatal(err)
			}
			tails++
		}
	}
	if tails != 4 {
		t.Fatalf("gave %d files a tail on one brick, want all 4", tails)
	}
	td.d.repairAll(t.Context()) // the node: remounts and reports the death
	reports, _ := os.ReadDir(filepath.Join(mp, clientDeathsDir))
	if len(reports) != 1 {
		t.Fatalf("the remount left %d death reports in %s, want 1", len(reports), clientDeathsDir)
	}
	hm := &HealthMonitor{Driver: td.d}
	hm.check(t.Context(), replicatedVol) // the controller's poll
	if reports, _ := os.ReadDir(filepath.Join(mp, clientDeathsDir)); len(reports) != 0 {
		t.Errorf("%d death reports left after the controller's poll, want them cleared", len(reports))
	}
	start := time.Now()
	for {
		differ := 0
		for pair := 0; pair < 4; pair += 2 {
			entries, _ := os.ReadDir(brickDir(pair))
			for _, e := range entries {
				a, _ := os.ReadFile(filepath.Join(brickDir(pair), e.Name()))
				b, _ := os.ReadFile(filepath.Join(brickDir(pair+1), e.Name()))
				if !bytes.Equal(a, b) {
					differ++
				}
			}
		}
		if differ == 0 {
			t.Logf("copies identical %v after the controller's poll", time.Since(start).Round(time.Millisecond))
			break
		}
		if time.Since(start) > 30*time.Second {
			t.Fatalf("%d files still differ between their copies 30 s after the poll", differ)
		}
		time.Sleep(250 * time.Millisecond)
	}
	for i := range 4 {
		a, err := os.ReadFile(filepath.Join(target, fmt.Sprintf("f%d", i)))
		if err != nil || !bytes.HasPrefix(a, body) {
			t.Errorf("f%d after the heal: %d bytes, %v; want what was written first", i, len(a), err)
		}
	}
}

// killAndReap SIGKILLs process pid and waits until it is gone.
func killAndReap(t *testing.T, pid int) {
	t.Helper()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for start := time.Now(); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); errors.Is(err, os.ErrNotExist) {
			return
		}
		if time.Since(start) > 10*time.Second {
			t.Fatalf("the killed client %d is still there after 10 s", pid)
		}
	}
}
