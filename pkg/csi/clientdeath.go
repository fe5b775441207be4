package csi

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/klog/v2"
)

// clientDeathsDir, at the root of a GlusterFS volume, holds one file per node whose GlusterFS
// client of the volume died and was remounted since the controller last healed the volume.
//
// Why: a client that dies in the middle of a write can leave the replicas of the file it was
// writing different in length by that unacknowledged write, with nothing pending in heal info
// (GlusterFS 10: 2 of 8 client kills in one series, docs/csi.md). Index heals never look at such
// a file; a full heal compares the copies' sizes and converges them (to the longer, within 2 s
// here). The node that remounts sees the death, but only the controller runs the gluster CLI:
// the file, written through the fresh mount, tells it in the volume itself, without RBAC or an
// API round trip.
const clientDeathsDir = ".berth-client-deaths"

// reportClientDeath records, in the volume mounted at root, that this node's GlusterFS client
// of vol died. Best effort: a failure is logged and costs only the full heal.
func (d *Driver) reportClientDeath(ctx context.Context, vol, root string) {
	node := d.opts.NodeID
	if node == "" {
		node = "controller"
	}
	// Never into the bare mount point: the report would land on the node's own disk.
	if _, mounted, err := fuseMinor(root); err != nil || !mounted {
		klog.FromContext(ctx).Error(err, "Not reporting a dead GlusterFS client: the volume is not mounted",
			"volume", vol, "path", root)
		return
	}
	dir := filepath.Join(root, clientDeathsDir)
	err := os.MkdirAll(dir, 0o755)
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, node), []byte(time.Now().UTC().Format(time.RFC3339)+"\n"),
			0o644)
	}
	if err != nil {
		klog.FromContext(ctx).Error(err, "Failed to report a dead GlusterFS client to the controller",
			"volume", vol)
	}
}

// healAfterClientDeaths starts a full heal of vol when a node reported a dead client of it,
// and clears the reports once glusterd accepted the heal. It reads the reports through this
// process's own mount of vol and mounts nothing for it: a volume being deleted must not be
// mounted again. Reports wait in the volume until the controller has it mounted (it mounts a
// volume at its first provisioning, deletion or expansion there).
func (h *HealthMonitor) healAfterClientDeaths(ctx context.Context, vol string) error {
	// mountinfo only: a stat of a wedged mount would block (abortOrphanedFUSE).
	if _, mounted, _ := fuseMinor(h.Driver.glusterMountPath(vol)); !mounted {
		return nil
	}
	root, err := h.Driver.ensureGlusterMount(ctx, vol) // repairs a dead mount first
	if err != nil {
		return err
	}
	dir := filepath.Join(root, clientDeathsDir)
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) || (err == nil && len(entries) == 0) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading %s: %w", dir, err)
	}
	nodes := make([]string, 0, len(entries))
	seen := map[string]string{}
	for _, e := range entries {
		b, _ := os.ReadFile(filepath.Join(dir, e.Name())) // best effort: compared before removal
		nodes, seen[e.Name()] = append(nodes, e.Name()), string(b)
	}
	if _, err := h.Driver.opts.GlusterCLI.run(ctx, "volume", "heal", vol, "full"); err != nil {
		return err
	}
	h.Driver.metrics.fullHeals.WithLabelValues(vol).Inc()
	klog.FromContext(ctx).Info("A GlusterFS client of the volume died: started a full heal, so copies "+
		"a write in flight left unequal converge", "volume", vol, "nodes", strings.Join(nodes, ","))
	for _, n := range nodes {
		// A node that reported again meanwhile (a new time) gets its heal at the next poll.
		if b, err := os.ReadFile(filepath.Join(dir, n)); err == nil && string(b) == seen[n] {
			_ = os.Remove(filepath.Join(dir, n))
		}
	}
	return nil
}
