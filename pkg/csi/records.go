package csi

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"
)

const (
	stagedKind    = "staged"
	publishedKind = "published"
)

// mountRecord remembers a staged or published path on disk so a restarted node plugin can
// repair mounts whose FUSE daemon died with the old process.
type mountRecord struct {
	VolumeID string `json:"volumeID"`
	Path     string `json:"path"`
	Source   string `json:"source,omitempty"`
	ReadOnly bool   `json:"readOnly,omitempty"`
	Limited  bool   `json:"limited,omitempty"`
	// LayerPID and LayerSocket find the IO-limited layer process serving a limited target.
	LayerPID    int    `json:"layerPID,omitempty"`
	LayerSocket string `json:"layerSocket,omitempty"`
}

func (d *Driver) recordFile(kind, path string) string {
	sum := sha256.Sum256([]byte(filepath.Clean(path)))
	return filepath.Join(d.opts.StateDir, kind, hex.EncodeToString(sum[:12])+".json")
}

func (d *Driver) saveRecord(kind string, r *mountRecord) error {
	f := d.recordFile(kind, r.Path)
	if err := os.MkdirAll(filepath.Dir(f), 0o700); err != nil {
		return fmt.Errorf("failed to create record dir: %w", err)
	}
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if err := os.WriteFile(f+".tmp", b, 0o600); err != nil {
		return fmt.Errorf("failed to write mount record: %w", err)
	}
	return os.Rename(f+".tmp", f)
}

func (d *Driver) deleteRecord(kind, path string) error {
	if err := os.Remove(d.recordFile(kind, path)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("failed to remove mount record: %w", err)
	}
	return nil
}

// loadRecord returns the record of path, or nil.
func (d *Driver) loadRecord(kind, path string) *mountRecord {
	return readRecord(d.recordFile(kind, path))
}

func (d *Driver) records(kind string) []*mountRecord {
	files, _ := filepath.Glob(filepath.Join(d.opts.StateDir, kind, "*.json"))
	var out []*mountRecord
	for _, f := range files {
		if r := readRecord(f); r != nil {
			out = append(out, r)
		}
	}
	return out
}

// readRecord reads one record file; nil when it is missing or unreadable.
func readRecord(file string) *mountRecord {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil
	}
	r := &mountRecord{}
	if json.Unmarshal(b, r) != nil {
		return nil
	}
	return r
}

func (d *Driver) repairPublished(ctx context.Context, r *mountRecord) error {
	_, _, m, err := d.lookupVolume(ctx, r.VolumeID)
	if err != nil {
		return err
	}
	if !r.Limited {
		return d.bindHealthy(ctx, r.Source, r.Path, r.ReadOnly)
	}
	if lp := d.layerOf(ctx, r); lp != nil {
		st, err := lp.Stats(ctx)
		if err == nil && st.SourceAlive {
			if st.Limits != m.Limits { // a VolumeAttributesClass change
				return lp.SetLimits(ctx, m.Limits)
			}
			return nil
		}
		klog.FromContext(ctx).Info("IO-limited layer is gone or serves a dead source, serving it again",
			"volume", r.VolumeID, "target", r.Path, "err", err)
		d.mu.Lock()
		delete(d.limited, r.Path)
		d.mu.Unlock()
		if err := lp.Stop(ctx); err != nil {
			return err
		}
	}
	if err := d.publish(ctx, r, m.Limits); err != nil {
		return err
	}
	return d.saveRecord(publishedKind, r)
}

// watchMounts repairs dead mounts and applies changed IO limits every few seconds.
func (d *Driver) watchMounts(ctx context.Context) {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		d.repairAll(ctx)
	}
}

// repairAll remounts dead GlusterFS mounts, binds dead staging and target paths again and
// refreshes IO limits from meta.json.
func (d *Driver) repairAll(ctx context.Context) {
	logger := klog.FromContext(ctx)
	for _, r := range d.records(stagedKind) {
		if !d.locks.TryAcquire(r.VolumeID) {
			continue
		}
		// An unstage may have run between the listing and the lock: repairing its stale
		// record would bind the staging path again behind the kubelet's back.
		if d.loadRecord(stagedKind, r.Path) == nil {
			d.locks.Release(r.VolumeID)
			continue
		}
		_, dir, _, err := d.lookupVolume(ctx, r.VolumeID) // remounts a dead GlusterFS mount
		if err == nil {
			err = d.bindHealthy(ctx, filepath.Join(dir, dataDir), r.Path, false)
		} else if status.Code(err) == codes.NotFound {
			err = d.deleteRecord(stagedKind, r.Path)
		}
		d.locks.Release(r.VolumeID)
		if err != nil {
			logger.Error(err, "failed to repair staged volume", "volume", r.VolumeID, "path", r.Path)
		}
	}
	for _, r := range d.records(publishedKind) {
		if !d.locks.TryAcquire(r.VolumeID) {
			continue
		}
		if d.loadRecord(publishedKind, r.Path) == nil { // unpublished meanwhile, as above
			d.locks.Release(r.VolumeID)
			continue
		}
		err := d.repairPublished(ctx, r)
		if status.Code(err) == codes.NotFound { // volume deleted under a stale record
			err = d.deleteRecord(publishedKind, r.Path)
		}
		d.locks.Release(r.VolumeID)
		if err != nil {
			logger.Error(err, "failed to repair published volume", "volume", r.VolumeID, "path", r.Path)
		}
	}
}
