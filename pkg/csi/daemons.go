package csi

import (
	"context"
	"fmt"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/klog/v2"
)

// Restarting GlusterFS's own daemons.
//
// glusterd starts a node's self-heal daemon and quota daemon (quotad) when it boots and when a
// volume's options change, and never restarts one that dies. Seen in CI on the local 3-node
// cluster: a node back from a stop had its quotad restarted twice by glusterd within 2 s of
// boot; the third quotad lost the bind race ("Address already in use") and stayed down, that
// brick's quota enforcer failed every call, and the entry heal into the brick never finished.
// GlusterFS's remedy is `gluster volume start VOL force`, which starts the volume's daemons
// (and bricks) that are not running; the health loop runs it when a daemon stays down and
// every brick of the volume is online, so it never starts a brick an admin stopped.

const (
	// daemonGrace is how long a daemon must be seen down before the controller restarts it.
	// glusterd restarts daemons itself when options change, and `volume status` shows them
	// down meanwhile; a restart on top of glusterd's own is how the bind race above begins.
	daemonGrace = 10 * time.Second
	// daemonRestartBackoff is the least time between two restarts (on any volume: the daemons
	// serve every volume of their node). It doubles for each restart that follows within
	// daemonRestartBackoffMax of the one before, so a daemon that keeps dying is not restarted
	// in a loop, and the quota daemons of healthy nodes (which start force restarts too) are
	// not either.
	daemonRestartBackoff    = 30 * time.Second
	daemonRestartBackoffMax = 10 * time.Minute
	// daemonRestartTimeout bounds one `volume start force`: glusterd runs it on every peer.
	daemonRestartTimeout = 2 * time.Minute
)

// daemonForget is how long a daemon may go unseen before its down time starts over: a node
// that left the pool takes its daemons out of volume status, and when it returns, glusterd is
// starting them; that must get the full grace, not count from before the node left.
const daemonForget = 30 * time.Second

// daemonRepair is the health loop's memory of the daemons it saw down and of its restarts.
type daemonRepair struct {
	down    map[string]downSpell // by DaemonStatus.String()
	last    time.Time            // the last restart
	backoff time.Duration        // the least wait after last
}

// downSpell is when a daemon was first and last seen down, without a gap of daemonForget.
type downSpell struct{ since, seen time.Time }

// observe records the daemons of one reading and returns those down for daemonGrace or more.
func (d *daemonRepair) observe(now time.Time, daemons []DaemonStatus) (due []DaemonStatus) {
	if d.down == nil {
		d.down = map[string]downSpell{}
	}
	for _, dm := range daemons {
		name := dm.String()
		if dm.Online {
			delete(d.down, name)
			continue
		}
		spell, ok := d.down[name]
		if !ok || now.Sub(spell.seen) > daemonForget {
			spell.since = now
		}
		spell.seen = now
		d.down[name] = spell
		if now.Sub(spell.since) >= daemonGrace {
			due = append(due, dm)
		}
	}
	return due
}

// mayRestart reports whether the backoff after the last restart has passed.
func (d *daemonRepair) mayRestart(now time.Time) bool {
	return d.last.IsZero() || now.Sub(d.last) >= d.backoff
}

// restarted records a restart at now and sets the backoff before the next one.
func (d *daemonRepair) restarted(now time.Time) {
	if d.last.IsZero() || now.Sub(d.last) > d.backoff+daemonRestartBackoffMax {
		d.backoff = daemonRestartBackoff
	} else {
		d.backoff = min(2*d.backoff, daemonRestartBackoffMax)
	}
	d.last = now
}

// restartDaemons runs `gluster volume start VOL force` when a self-heal or quota daemon of
// vol's nodes has been down for daemonGrace, every brick of vol is online, and the backoff
// allows it. It records the restart in berth_csi_gluster_daemon_restarts_total and as an
// Event on vol's PVs.
func (h *HealthMonitor) restartDaemons(ctx context.Context, vol string, r healthReading) {
	now := time.Now()
	due := h.daemons.observe(now, r.daemons)
	if len(due) == 0 || len(r.bricks) == 0 || len(r.offline) > 0 || !h.daemons.mayRestart(now) {
		return
	}
	h.daemons.restarted(now)
	h.changed = now
	h.Driver.metrics.daemonRestarts.WithLabelValues(vol).Inc()
	rctx, cancel := context.WithTimeout(ctx, daemonRestartTimeout)
	defer cancel()
	err := h.Driver.opts.GlusterCLI.startForce(rctx, vol)
	log := klog.FromContext(ctx)
	if err != nil {
		log.Error(err, "failed to restart GlusterFS daemons", "volume", vol, "down", daemonNames(due),
			"nextAttemptIn", h.daemons.backoff)
		h.eventAll(ctx, vol, v1.EventTypeWarning, "GlusterDaemonRestartFailed", fmt.Sprintf(
			"gluster volume start %s force (to restart %s): %v; next attempt in %s", vol,
			daemonNames(due), err, h.daemons.backoff))
		return
	}
	log.Info("restarted GlusterFS daemons that stayed down", "volume", vol, "down",
		daemonNames(due), "nextAttemptIn", h.daemons.backoff)
	h.eventAll(ctx, vol, v1.EventTypeNormal, "GlusterDaemonRestarted", fmt.Sprintf(
		"%s stayed down for %s or more; ran gluster volume start %s force", daemonNames(due),
		daemonGrace, vol))
}

// daemonNames joins daemons as `gluster volume status` names them.
func daemonNames(daemons []DaemonStatus) string {
	names := make([]string, len(daemons))
	for i, dm := range daemons {
		names[i] = dm.String()
	}
	return strings.Join(names, ", ")
}
