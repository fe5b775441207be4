//go:build integration && cgo

// Integration test of the libgfapi binding against a real glusterd (Debian glusterfs-server,
// libglusterfs-dev; root). TestMain owns the machine's only glusterd for this package.
package gfapi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/testenv"
)

var (
	gd  *testenv.Glusterd
	vol *Volume
)

func TestMain(m *testing.M) { os.Exit(runMain(m)) }

func runMain(m *testing.M) int {
	var err error
	if gd, err = testenv.StartGlusterd(""); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() { _ = gd.Stop() }() // best effort; logged by the next start if it fails
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := gd.CreateVolume(ctx, "gfapivol", 1, 1); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	for _, args := range [][]string{{"enable"}, {"hard-timeout", "0"}, {"soft-timeout", "0"}} {
		if _, err := gd.CLI(ctx, append([]string{"volume", "quota", "gfapivol"}, args...)...); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	if vol, err = New("gfapivol", gd.Host, gd.Base+"/gfapi.log"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// No vol.Close(): glfs_fini takes ~10 s and the process exits right after.
	return m.Run()
}

func TestWriteReadStat(t *testing.T) {
	if err := vol.Mkdir("/d", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := vol.Mkdir("/d", 0o755); !errors.Is(err, syscall.EEXIST) {
		t.Fatalf("second mkdir = %v, want EEXIST", err)
	}
	f, err := vol.Create("/d/f", 0o644)
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("berth"), 1<<18)
	if n, err := f.WriteAt(data, 0); err != nil || n != len(data) {
		t.Fatalf("WriteAt = %d, %v", n, err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	r, err := vol.Open("/d/f", os.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(data)+10)
	n, err := r.ReadAt(got, 0)
	if err != nil || !bytes.Equal(got[:n], data) {
		t.Fatalf("ReadAt = %d bytes, %v; want the %d written", n, err, len(data))
	}
	_ = r.Close()
	total, avail, err := vol.Statvfs("/")
	if err != nil || total == 0 || avail > total {
		t.Fatalf("Statvfs = %d/%d, %v", avail, total, err)
	}
	if _, err := vol.Open("/nope", os.O_RDONLY); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("open of a missing file = %v, want ENOENT", err)
	}
	if err := vol.Unlink("/d/f"); err != nil {
		t.Fatal(err)
	}
	if err := vol.Rmdir("/d"); err != nil {
		t.Fatal(err)
	}
}

func TestQuotaGivesEDQUOT(t *testing.T) {
	if err := vol.Mkdir("/q", 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := gd.CLI(t.Context(), "volume", "quota", "gfapivol", "limit-usage", "/q", "4MB"); err != nil {
		t.Fatal(err)
	}
	f, err := vol.Create("/q/f", 0o644)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	var werr error
	for i := 0; i < 20 && werr == nil; i++ {
		_, werr = f.WriteAt(buf, int64(i)<<20)
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if !errors.Is(werr, syscall.EDQUOT) {
		t.Fatalf("writing 20 MiB into a 4 MB quota gave %v, want EDQUOT", werr)
	}
}
