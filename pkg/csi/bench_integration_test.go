//go:build integration

package csi

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	csi "github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
)

// BenchmarkSharedStorage prints the table of docs/csi.md (hack/bench-csi.sh runs it once):
// sequential and random throughput of the brick's own disk, a plain GlusterFS FUSE mount,
// an unlimited berth volume (bind mount) and a berth volume through the IO layer
// (ioStatistics=true), write-limit accuracy and provisioning latency.
func BenchmarkSharedStorage(b *testing.B) {
	td := startDriver(b)
	brickDisk := filepath.Join(gd.Base, "bench-disk")
	plain := filepath.Join(gd.Base, "bench-plain")
	if err := os.MkdirAll(brickDisk, 0o755); err != nil {
		b.Fatal(err)
	}
	if err := td.d.mounter.MountGluster(b.Context(), gd.Host, plainVol, plain,
		filepath.Join(gd.Base, "bench-plain.log")); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = td.d.mounter.Unmount(plain) }()
	_, bind := td.publishNew(b, "bench-bind", 1<<30, nil)
	_, layer := td.publishNew(b, "bench-layer", 1<<30, map[string]string{ParamIOStatistics: "true"})
	_, limited := td.publishNew(b, "bench-limit", 1<<30, map[string]string{
		ParamWriteBytesPerSecond: "20Mi"})

	// The same plain mount, writing inside a directory with a berth quota: what gluster's
	// quota enforcement (hard/soft-timeout 0) costs, apart from anything berth adds.
	cv, err := td.controller().CreateVolume(b.Context(), &csi.CreateVolumeRequest{
		Name:               "bench-quota-dir",
		CapacityRange:      &csi.CapacityRange{RequiredBytes: 1 << 30},
		VolumeCapabilities: []*csi.VolumeCapability{mountCap()}})
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		_, _ = td.controller().DeleteVolume(b.Context(), &csi.DeleteVolumeRequest{
			VolumeId: cv.GetVolume().GetVolumeId()})
	}()
	quotaVol, err := parseVolumeID(cv.GetVolume().GetVolumeId())
	if err != nil {
		b.Fatal(err)
	}
	rows := []struct{ name, dir, key string }{
		{"brick disk (ext4)", brickDisk, "disk"}, {"GlusterFS FUSE mount", plain, "fuse"},
		{"GlusterFS FUSE mount, in a directory with a 1 GiB quota",
			filepath.Join(plain, quotaVol.RelData()), "fuse-quota"},
		{"berth volume, unlimited", bind, "berth"}, {"berth volume, IO layer", layer, "berth-layer"},
	}
	fmt.Printf("\nratios: × the plain mount / × the plain mount's quota'd directory\n")
	fmt.Printf("\n| target | seq write MiB/s | seq read MiB/s | rand write 4k IOPS | rand read 4k " +
		"IOPS |\n|---|---|---|---|---|\n")
	// Ratios: against the plain mount, and for berth's rows also against the plain mount's
	// quota'd directory (what berth adds on top of gluster's quota).
	var ref, quotaRef [4]float64
	for i, r := range rows {
		m := measureAll(b, r.dir)
		switch i {
		case 1:
			ref = m
		case 2:
			quotaRef = m
		}
		ratio := func(j int) string {
			switch {
			case i < 2:
				return fmt.Sprintf("%.0f", m[j])
			case i == 2:
				return fmt.Sprintf("%.0f (%.2f×)", m[j], m[j]/ref[j])
			}
			return fmt.Sprintf("%.0f (%.2f× / %.2f×)", m[j], m[j]/ref[j], m[j]/quotaRef[j])
		}
		fmt.Printf("| %s | %s | %s | %s | %s |\n", r.name, ratio(0), ratio(1), ratio(2), ratio(3))
		// The table's rows as metrics too, for benchstat.
		for j, unit := range []string{"seqw-MiB/s", "seqr-MiB/s", "randw-IOPS", "randr-IOPS"} {
			b.ReportMetric(m[j], r.key+"-"+unit)
		}
	}
	benchParallelWriters(b, td, bind, plain)
	rate, err := measureWrite(b.Context(), filepath.Join(limited, "l"), 5*time.Second)
	if err != nil {
		b.Fatal(err)
	}
	fmt.Printf("\nwrite limit 20 MiB/s: measured %.2f MiB/s (%.1f%% off)\n", rate, (rate/20-1)*100)
	b.ReportMetric(rate, "limit20-MiB/s")
	var lat []time.Duration
	for i := 0; i < 15; i++ {
		start := time.Now()
		resp, err := td.controller().CreateVolume(b.Context(), &csi.CreateVolumeRequest{Name: fmt.Sprintf(
			"bench-prov-%d", i),
			CapacityRange:      &csi.CapacityRange{RequiredBytes: 1 << 30},
			VolumeCapabilities: []*csi.VolumeCapability{mountCap()}})
		if err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
		_, _ = td.controller().DeleteVolume(b.Context(), &csi.DeleteVolumeRequest{
			VolumeId: resp.GetVolume().GetVolumeId()})
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	fmt.Printf("provisioning latency (CreateVolume with quota): p50 %v, max %v over %d volumes\n",
		lat[len(lat)/2].Round(time.Millisecond), lat[len(lat)-1].Round(time.Millisecond), len(lat))
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1e3, "provision-p50-ms")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1e3, "provision-max-ms")
}

// measureAll returns seq write, seq read (MiB/s), random 4k write and read (IOPS).
func measureAll(b *testing.B, dir string) [4]float64 {
	const size = 128 << 20
	p := filepath.Join(dir, "bench")
	buf := make([]byte, 1<<20)
	f, err := os.Create(p)
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	for off := int64(0); off < size; off += int64(len(buf)) {
		if _, err := f.WriteAt(buf, off); err != nil {
			b.Fatal(err)
		}
	}
	if err := f.Sync(); err != nil {
		b.Fatal(err)
	}
	var out [4]float64
	out[0] = size / (1 << 20) / time.Since(start).Seconds()
	f.Close()
	_ = os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0o200) // cold reads
	f, err = os.Open(p)
	if err != nil {
		b.Fatal(err)
	}
	start = time.Now()
	for off := int64(0); off < size; off += int64(len(buf)) {
		if _, err := f.ReadAt(buf, off); err != nil {
			b.Fatal(err)
		}
	}
	out[1] = size / (1 << 20) / time.Since(start).Seconds()
	f.Close()
	out[2] = randomIOPS(b, p, size, true)
	out[3] = randomIOPS(b, p, size, false)
	_ = os.Remove(p)
	return out
}

// randomIOPS does 4 KiB O_DIRECT IO at random aligned offsets for two seconds.
func randomIOPS(b *testing.B, p string, size int64, write bool) float64 {
	fd, err := unix.Open(p, unix.O_RDWR|unix.O_DIRECT, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Close(fd)
	// aligned
	buf, err := unix.Mmap(-1, 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Munmap(buf)
	var ops int
	start := time.Now()
	for time.Since(start) < 2*time.Second {
		off := rand.Int64N(size/4096) * 4096
		if write {
			_, err = unix.Pwrite(fd, buf, off)
		} else {
			_, err = unix.Pread(fd, buf, off)
		}
		if err != nil {
			b.Fatal(err)
		}
		ops++
	}
	return float64(ops) / time.Since(start).Seconds()
}

// benchParallelWriters prints the row of 4 parallel writers into one quota'd volume: their
// aggregate write rate into a berth volume against the plain mount's, and how far past a 64 MiB
// volume's size they get, with GlusterFS's write-behind off (berth's default for quota'd
// volumes) and on (--quota-write-behind), three rounds each.
func benchParallelWriters(b *testing.B, td *testDriver, bind, plain string) {
	const writers, rounds = 4, 3
	fmt.Printf("\n| %d parallel writers, 1 MiB writes | write-behind | berth volume MiB/s | plain "+
		"mount MiB/s | ratio | past a 64 MiB size | accepted by write(2), then lost "+
		"|\n|---|---|---|---|---|---|---|\n", writers)
	for _, wb := range []string{"off", "on"} {
		if _, err := gd.CLI(b.Context(), "volume", "set", plainVol, "performance.write-behind",
			wb); err != nil {
			b.Fatal(err)
		}
		for round := range rounds {
			berth := parallelRate(b, bind, writers, 32<<20)
			ref := parallelRate(b, plain, writers, 32<<20)
			name := fmt.Sprintf("bench-race-%s-%d", wb, round)
			_, target := td.publishNew(b, name, 64<<20, nil)
			r := raceQuota(target, writers, 32<<20, 1<<20, false)
			lost := max(r.accepted-r.landed, 0)
			fmt.Printf("| round %d | %s | %.0f | %.0f | %.2f× | %+.2f MiB | %.2f MiB (%d writers told only by close) |\n",
				round+1, wb, berth, ref, berth/ref, float64(r.landed-(64<<20))/(1<<20), float64(lost)/(1<<20), r.closeErr)
			key := fmt.Sprintf("par%d-wb-%s-r%d-", writers, wb, round+1)
			b.ReportMetric(berth, key+"berth-MiB/s")
			b.ReportMetric(ref, key+"fuse-MiB/s")
			b.ReportMetric(float64(r.landed-(64<<20))/(1<<20), key+"past-size-MiB")
			b.ReportMetric(float64(lost)/(1<<20), key+"lost-MiB")
		}
	}
	if _, err := gd.CLI(b.Context(), "volume", "set", plainVol, "performance.write-behind",
		"off"); err != nil {
		b.Fatal(err)
	}
}

// parallelRate runs n writers of size bytes each (1 MiB writes, fsync at the end) in dir and
// returns their aggregate MiB/s.
func parallelRate(b *testing.B, dir string, n int, size int64) float64 {
	var wg sync.WaitGroup
	errs := make([]error, n)
	start := time.Now()
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := filepath.Join(dir, fmt.Sprintf("par-%d", i))
			f, err := os.Create(p)
			if err != nil {
				errs[i] = err
				return
			}
			defer os.Remove(p)
			defer f.Close()
			buf := make([]byte, 1<<20)
			for off := int64(0); off < size && err == nil; off += int64(len(buf)) {
				_, err = f.Write(buf)
			}
			if err == nil {
				err = f.Sync()
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	el := time.Since(start)
	for _, err := range errs {
		if err != nil {
			b.Fatal(err)
		}
	}
	return float64(int64(n)*size) / (1 << 20) / el.Seconds()
}
