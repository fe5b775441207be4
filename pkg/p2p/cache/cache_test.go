package cache

import (
	"bytes"
	"io"
	"os"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

func put(t *testing.T, c *Cache, data []byte) digest.Digest {
	t.Helper()
	f, err := c.TempFile()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	f.Close()
	d := digest.FromBytes(data)
	if err := c.Commit(f.Name(), d, int64(len(data))); err != nil {
		t.Fatal(err)
	}
	return d
}

// TestGCWatermarks: past the high watermark the least recently used blobs
// go, down to the low watermark; a reopened cache finds what is left.
func TestGCWatermarks(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	c, err := Open(dir, 1000, 0.9, 0.5)
	if err != nil {
		t.Fatal(err)
	}
	var ds []digest.Digest
	for i := range 4 {
		ds = append(ds, put(t, c, bytes.Repeat([]byte{byte(i)}, 200)))
		time.Sleep(5 * time.Millisecond)
	}
	// Touch the oldest: it becomes the most recently used.
	f, _, err := c.Open(ds[0])
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if c.Size() != 800 {
		t.Fatalf("size before GC = %d, want 800 (below the high watermark)", c.Size())
	}
	put(t, c, bytes.Repeat([]byte{9}, 200)) // 1000 > 900: GC down to <= 500
	if c.Size() > 500 {
		t.Errorf("size after GC = %d, want <= 500", c.Size())
	}
	if _, ok := c.Stat(ds[0]); !ok {
		t.Errorf("the most recently used old blob was evicted")
	}
	if _, ok := c.Stat(ds[1]); ok {
		t.Errorf("the least recently used blob survived GC")
	}
	c2, err := Open(dir, 1000, 0.9, 0.5)
	if err != nil {
		t.Fatal(err)
	}
	if c2.Size() != c.Size() || c2.Len() != c.Len() {
		t.Errorf("reopened cache holds %d bytes in %d blobs, want %d in %d", c2.Size(), c2.Len(), c.Size(), c.Len())
	}
	f, _, err = c2.Open(ds[0])
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, _ := io.ReadAll(f)
	if digest.FromBytes(b) != ds[0] {
		t.Errorf("reopened blob does not match its digest")
	}
	if _, _, err := c2.Open(ds[1]); !os.IsNotExist(errUnwrap(err)) {
		t.Errorf("Open of an evicted blob: %v, want not-exist", err)
	}
}

func errUnwrap(err error) error {
	for {
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return err
		}
		err = u.Unwrap()
	}
}

func TestOpenRejectsBadWatermarks(t *testing.T) {
	t.Parallel()
	for _, w := range [][2]float64{{0.5, 0.9}, {1.5, 0.5}, {0.9, 0}} {
		if _, err := Open(t.TempDir(), 100, w[0], w[1]); err == nil {
			t.Errorf("Open with high=%v low=%v succeeded", w[0], w[1])
		}
	}
}
