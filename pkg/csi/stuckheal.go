package csi

import (
	"context"
	"fmt"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/klog/v2"
)

// Unsticking entry heals that GlusterFS cannot finish.
//
// A directory removed while one brick of a replica-3 set is down stays on that brick. When the
// brick returns, GlusterFS 10's entry heal (cluster.use-anonymous-inode, on by default) moves
// the stale directory aside with a rename on that brick; with quotas on, the brick's quota
// translator first sizes the directory through quotad, quotad cannot look up a directory that
// only one brick of three holds, and the rename fails with EINVAL, on every retry
// (gluster/glusterfs#3921, closed as won't fix). `heal info` then lists the parent for good.
// Any rm -r in a PV while a node is down does it, not only berth's own removals. Measured here
// (replica 3, one brick killed, a directory removed, the brick started): 3 entries pending
// after 60 s; with the option off the same heal finished in 3 s.
//
// The option cannot stay off: a directory renamed while a brick is down then heals only partly
// (3 of 8 runs stayed pending). So the health loop turns it off only for a heal that has made
// no progress for stuckHealAfter with every brick and daemon online, and back on as soon as
// heal info is empty, or after stuckHealWindow at the latest. The volume option
// user.berth.heal-remedy records when it was turned off, so a controller that restarts in
// between turns it back on.

const (
	// stuckHealAfter is how long heals may stay pending without the count falling, every brick
	// and daemon online, before the remedy. A healthy heal moves within seconds (each poll
	// starts an index heal); a large file's data heal keeps one entry pending longer, and the
	// remedy does it no harm.
	stuckHealAfter = time.Minute
	// stuckHealWindow is the longest the option stays off.
	stuckHealWindow = 2 * time.Minute
	// stuckHealBackoff is the least time between two remedies on one volume.
	stuckHealBackoff = 10 * time.Minute

	optionAnonymousInode = "cluster.use-anonymous-inode"
	optionHealRemedy     = "user.berth.heal-remedy"
	healRemedyNone       = "none" // optionHealRemedy when no remedy is on
)

// stuckHeal is the health loop's memory of one volume's pending heals and remedy.
type stuckHeal struct {
	checked bool      // the volume option of an earlier controller was read
	least   int       // fewest entries pending in this spell, 0: no spell
	since   time.Time // when least was first seen
	remedy  time.Time // when the option was turned off; zero: not off by berth
	last    time.Time // the last remedy
}

// observe records one reading and reports whether the remedy is due.
func (s *stuckHeal) observe(now time.Time, r healthReading, after time.Duration) bool {
	if r.state != healthHealing || r.heal.Pending <= 0 {
		s.least = 0
		return false
	}
	if s.least == 0 || r.heal.Pending < s.least {
		s.least, s.since = r.heal.Pending, now
	}
	return s.remedy.IsZero() && now.Sub(s.since) >= after &&
		(s.last.IsZero() || now.Sub(s.last) >= stuckHealBackoff)
}

// unstickHeal applies and ends the remedy for vol's entry heals (see above).
func (h *HealthMonitor) unstickHeal(ctx context.Context, vol string, r healthReading) {
	if h.stuck == nil {
		h.stuck = map[string]*stuckHeal{}
	}
	s := h.stuck[vol]
	if s == nil {
		s = &stuckHeal{}
		h.stuck[vol] = s
	}
	cli := h.Driver.opts.GlusterCLI
	log := klog.FromContext(ctx).WithValues("volume", vol)
	now := time.Now()
	if !s.checked {
		vi, err := cli.volumeInfo(ctx, vol)
		if err != nil {
			log.Error(err, "failed to read whether an earlier controller left a heal remedy on")
			return
		}
		s.checked, s.remedy = true, vi.HealRemedy
	}
	if !s.remedy.IsZero() {
		if r.state == healthHealing && now.Sub(s.remedy) < stuckHealWindow {
			return
		}
		if r.state != healthOK && r.state != healthHealing {
			return // a brick or daemon down: turning the option on restarts daemons
		}
		h.changed = now
		if err := cli.endHealRemedy(ctx, vol); err != nil {
			log.Error(err, "failed to turn "+optionAnonymousInode+" back on")
			return
		}
		log.Info("turned "+optionAnonymousInode+" back on", "off", now.Sub(s.remedy).Round(time.Second),
			"healPending", r.heal.Pending)
		s.remedy = time.Time{}
		return
	}
	if !s.observe(now, r, h.stuckHealAfter()) {
		return
	}
	s.last = now
	on, err := cli.anonymousInodeOn(ctx, vol)
	if err != nil || !on {
		// Off already (an admin's choice, or an older volume): nothing to turn off or back on.
		log.Info("heals make no progress and "+optionAnonymousInode+" is not on: left to the admin",
			"healPending", r.heal.Pending, "err", err)
		return
	}
	h.Driver.metrics.healRemedies.WithLabelValues(vol).Inc()
	h.changed = now
	err = cli.beginHealRemedy(ctx, vol, now)
	if err != nil {
		log.Error(err, "failed to turn "+optionAnonymousInode+" off for a stuck heal")
		h.eventAll(ctx, vol, v1.EventTypeWarning, "GlusterHealStuck", fmt.Sprintf(
			"GlusterFS volume %s: %d entries pending for %s without progress with every brick and "+
				"daemon online; turning %s off failed: %v", vol, r.heal.Pending,
			now.Sub(s.since).Round(time.Second), optionAnonymousInode, err))
	}
	// Half applied (the record set, the option not) or whole: the end path below puts the
	// option and the record back either way.
	s.remedy = now
	if err != nil {
		return
	}
	if err := cli.heal(ctx, vol); err != nil {
		log.Error(err, "failed to start a heal")
	}
	log.Info("heals made no progress: turned "+optionAnonymousInode+" off until they finish",
		"healPending", r.heal.Pending, "stuckFor", now.Sub(s.since).Round(time.Second))
	h.eventAll(ctx, vol, v1.EventTypeWarning, "GlusterHealStuck", fmt.Sprintf(
		"GlusterFS volume %s: %d entries pending for %s without progress with every brick and daemon "+
			"online (a directory removed while a brick was down; gluster/glusterfs#3921); turned %s "+
			"off until they heal, for %s at most", vol, r.heal.Pending,
		now.Sub(s.since).Round(time.Second), optionAnonymousInode, stuckHealWindow))
}

func (h *HealthMonitor) stuckHealAfter() time.Duration {
	if h.StuckHealAfter > 0 {
		return h.StuckHealAfter
	}
	return stuckHealAfter
}

// eventAll posts one Event on every berth PV of vol.
func (h *HealthMonitor) eventAll(ctx context.Context, vol, eventType, reason, msg string) {
	for _, pv := range h.pvsOf(ctx, vol) {
		h.Recorder.Event(pv, eventType, reason, msg)
	}
}
