// Package cache is p2p-puller's on-disk blob store: verified blobs by digest
// under <dir>/blobs/<algo>/<hex>, a size limit, and garbage collection that
// evicts the least recently used blobs once the cache passes the high
// watermark, down to the low watermark.
package cache

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
)

// Cache holds verified blobs. It is safe for concurrent use.
type Cache struct {
	dir       string
	maxBytes  int64
	high, low float64

	mu      sync.Mutex
	entries map[digest.Digest]*entry
	size    int64
	// OnEvict, when set, is called for every blob GC removes (for metrics).
	OnEvict func(d digest.Digest, size int64)
}

type entry struct {
	size     int64
	lastUsed time.Time
}

// Open opens (creating when missing) the cache in dir. maxBytes <= 0 means no
// limit; high and low are fractions of maxBytes with 0 < low < high <= 1.
// Leftover temporary files of a previous run are removed.
func Open(dir string, maxBytes int64, high, low float64) (*Cache, error) {
	if maxBytes > 0 && (low <= 0 || high > 1 || low >= high) {
		return nil, fmt.Errorf("invalid GC watermarks high=%v low=%v: want 0 < low < high <= 1", high, low)
	}
	if err := os.RemoveAll(filepath.Join(dir, "tmp")); err != nil {
		return nil, fmt.Errorf("failed to clean temporary files in %q: %w", dir, err)
	}
	for _, sub := range []string{"tmp", "blobs"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			return nil, fmt.Errorf("failed to create cache directory %q: %w", dir, err)
		}
	}
	c := &Cache{dir: dir, maxBytes: maxBytes, high: high, low: low, entries: map[digest.Digest]*entry{}}
	root := filepath.Join(dir, "blobs")
	err := filepath.WalkDir(root, func(path string, de fs.DirEntry, err error) error {
		if err != nil || de.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		algo, hex := filepath.Split(rel)
		d := digest.NewDigestFromEncoded(digest.Algorithm(filepath.Clean(algo)), hex)
		if d.Validate() != nil {
			return nil // not ours: leave it alone
		}
		info, err := de.Info()
		if err != nil {
			return err
		}
		c.entries[d] = &entry{size: info.Size(), lastUsed: info.ModTime()}
		c.size += info.Size()
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("failed to scan cache %q: %w", dir, err)
	}
	return c, nil
}

func (c *Cache) path(d digest.Digest) string {
	return filepath.Join(c.dir, "blobs", string(d.Algorithm()), d.Encoded())
}

// Stat reports the size of a cached blob.
func (c *Cache) Stat(d digest.Digest) (int64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[d]
	if !ok {
		return 0, false
	}
	return e.size, true
}

// Open opens a cached blob for reading and marks it used. An evicted blob
// stays readable through an already open file.
func (c *Cache) Open(d digest.Digest) (*os.File, int64, error) {
	c.mu.Lock()
	e, ok := c.entries[d]
	if ok {
		e.lastUsed = time.Now()
	}
	c.mu.Unlock()
	if !ok {
		return nil, 0, fmt.Errorf("blob %s: %w", d, os.ErrNotExist)
	}
	f, err := os.Open(c.path(d))
	if err != nil {
		return nil, 0, fmt.Errorf("failed to open cached blob %s: %w", d, err)
	}
	return f, e.size, nil
}

// TempFile creates a file for a blob being downloaded; Commit moves it in.
func (c *Cache) TempFile() (*os.File, error) {
	f, err := os.CreateTemp(filepath.Join(c.dir, "tmp"), "blob-*")
	if err != nil {
		return nil, fmt.Errorf("failed to create a temporary blob file in %q: %w", c.dir, err)
	}
	return f, nil
}

// Commit moves a fully downloaded and verified temp file into the cache
// under d, then runs GC if the cache passed its high watermark.
func (c *Cache) Commit(tmpPath string, d digest.Digest, size int64) error {
	dst := c.path(d)
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return fmt.Errorf("failed to create %q: %w", filepath.Dir(dst), err)
	}
	if err := os.Rename(tmpPath, dst); err != nil {
		return fmt.Errorf("failed to store blob %s: %w", d, err)
	}
	c.mu.Lock()
	if old, ok := c.entries[d]; ok {
		c.size -= old.size
	}
	c.entries[d] = &entry{size: size, lastUsed: time.Now()}
	c.size += size
	c.mu.Unlock()
	c.GC()
	return nil
}

// Size returns the bytes held by cached blobs.
func (c *Cache) Size() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.size
}

// Len returns the number of cached blobs.
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}

// GC evicts least recently used blobs once the cache holds more than
// high*maxBytes, until it holds at most low*maxBytes. Evicting in one batch
// down to a lower mark avoids running GC on every new blob.
func (c *Cache) GC() {
	if c.maxBytes <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if float64(c.size) <= c.high*float64(c.maxBytes) {
		return
	}
	type kv struct {
		d digest.Digest
		e *entry
	}
	all := make([]kv, 0, len(c.entries))
	for d, e := range c.entries {
		all = append(all, kv{d, e})
	}
	sort.Slice(all, func(i, j int) bool { return all[i].e.lastUsed.Before(all[j].e.lastUsed) })
	target := int64(c.low * float64(c.maxBytes))
	for _, x := range all {
		if c.size <= target {
			break
		}
		if err := os.Remove(c.path(x.d)); err != nil && !os.IsNotExist(err) {
			continue // keep accounting honest: the file is still there
		}
		delete(c.entries, x.d)
		c.size -= x.e.size
		if c.OnEvict != nil {
			c.OnEvict(x.d, x.e.size)
		}
	}
}
