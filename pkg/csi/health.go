package csi

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	csi "github.com/container-storage-interface/spec/lib/go/csi"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"
)

// HealthMonitor polls glusterd for the brick status of GlusterFS volumes, exports it as
// metrics and emits Events on the berth PVs of a volume when a brick goes offline or returns,
// or when glusterd cannot report the volume at all. It restarts a self-heal or quota daemon
// that stays down (see restartDaemons); bricks it leaves to the admin.
type HealthMonitor struct {
	Driver   *Driver
	PVs      corelisters.PersistentVolumeLister // nil: metrics only
	Recorder record.EventRecorder
	Volumes  func(context.Context) []string
	Interval time.Duration
	// StuckHealAfter overrides stuckHealAfter (tests).
	StuckHealAfter time.Duration

	health  map[string]volumeHealth
	daemons daemonRepair
	stuck   map[string]*stuckHeal
	changed time.Time // the last option change or start force by this monitor
}

// settleAfterChange is how long after its own option change or `start force` the monitor reads
// a failing heal info (status answering) as heals unknown rather than glusterd unreachable:
// glusterd restarts the self-heal daemons meanwhile.
const settleAfterChange = time.Minute

// volumeHealth is the state of one GlusterFS volume as one poll reads it.
type volumeHealth int

const (
	healthUnknown       volumeHealth = iota // never read
	healthOK                                // every brick online, heal info empty
	healthDegraded                          // a brick offline
	healthDaemonOffline                     // every brick online, a self-heal or quota daemon down
	healthHealing                           // heals pending, every brick and daemon online
	healthSplitBrain                        // GlusterFS reports split-brain entries
	healthUnreachable                       // glusterd status failed
)

// healthReading is one poll of a GlusterFS volume: brick status and heal info.
type healthReading struct {
	state   volumeHealth
	bricks  []BrickStatus
	offline []string // host:path of offline bricks
	daemons []DaemonStatus
	down    []DaemonStatus // daemons not running
	heal    HealInfo
	healErr error // heal info failed while a daemon is down: heal is unknown
	err     error
}

// readHealth asks glusterd for the brick status and heal info of vol. Healthy means both: a
// brick that came back still serves stale copies until the heals are done.
func (d *Driver) readHealth(ctx context.Context, vol string) healthReading {
	cli := d.opts.GlusterCLI
	vs, err := cli.volumeStatus(ctx, vol)
	if err != nil {
		return healthReading{state: healthUnreachable, err: err}
	}
	r := healthReading{state: healthOK, bricks: vs.Bricks, offline: vs.Offline(),
		daemons: vs.Daemons, down: vs.DaemonsDown()}
	if r.heal, err = cli.healInfo(ctx, vol); err != nil {
		if len(r.down) == 0 {
			return healthReading{state: healthUnreachable, bricks: r.bricks, offline: r.offline,
				daemons: r.daemons, err: fmt.Errorf("heal info: %w", err)}
		}
		// Heal info asks the self-heal daemon: with a daemon down the status is what is known.
		r.heal, r.healErr = HealInfo{SplitBrain: -1}, fmt.Errorf("heal info: %w", err)
	}
	switch {
	case r.heal.SplitBrain > 0:
		r.state = healthSplitBrain
	case len(r.offline) > 0 || !vs.Healthy():
		r.state = healthDegraded
	case len(r.down) > 0:
		r.state = healthDaemonOffline
	case r.heal.Pending > 0:
		r.state = healthHealing
	}
	return r
}

// healthNews reports whether a reading deserves an Event: every change, and a first reading
// that is not healthy (a brick already down when the controller starts).
func healthNews(prev, cur volumeHealth) bool {
	if prev == healthUnknown {
		return cur != healthOK
	}
	return prev != cur
}

// healingInterval is the poll interval while a volume has heals pending: each poll starts an
// index heal, so replicas converge within seconds rather than at the self-heal daemon's crawl.
const healingInterval = 5 * time.Second

// Run polls until ctx ends.
func (h *HealthMonitor) Run(ctx context.Context) error {
	if h.Interval == 0 {
		h.Interval = 30 * time.Second
	}
	for {
		next := h.Interval
		for _, vol := range h.Volumes(ctx) {
			if st := h.check(ctx, vol); st == healthHealing || st == healthDaemonOffline {
				next = min(next, healingInterval)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(next):
		}
	}
}

func (h *HealthMonitor) check(ctx context.Context, vol string) volumeHealth {
	m := h.Driver.metrics
	if err := h.healAfterClientDeaths(ctx, vol); err != nil && ctx.Err() == nil {
		klog.FromContext(ctx).Error(err, "failed to heal after a dead GlusterFS client", "volume", vol)
	}
	r := h.Driver.readHealth(ctx, vol)
	if r.state == healthUnreachable && len(r.bricks) > 0 && time.Since(h.changed) < settleAfterChange {
		// Status answered, heal info did not: the self-heal daemons are still restarting after
		// this controller's own option change or start force. Heals are unknown, not glusterd.
		r.state, r.healErr, r.err = healthHealing, r.err, nil
	}
	if r.err != nil {
		if ctx.Err() != nil {
			return healthUnknown // shutting down, not a glusterd fault
		}
		klog.FromContext(ctx).Error(r.err, "failed to read GlusterFS volume status", "volume", vol)
	}
	if r.state != healthUnreachable && r.healErr == nil {
		m.healPending.WithLabelValues(vol).Set(float64(r.heal.Pending))
		if r.heal.SplitBrain >= 0 {
			m.splitBrain.WithLabelValues(vol).Set(float64(r.heal.SplitBrain))
		}
	}
	if r.state == healthHealing {
		if err := h.Driver.opts.GlusterCLI.heal(ctx, vol); err != nil {
			klog.FromContext(ctx).Error(err, "failed to start a heal", "volume", vol,
				"pending", r.heal.Pending)
		}
	}
	if r.state != healthUnreachable {
		h.restartDaemons(ctx, vol, r)
		h.unstickHeal(ctx, vol, r)
	}
	h.brickMetrics(vol, r)
	if h.health == nil {
		h.health = map[string]volumeHealth{}
	}
	prev := h.health[vol]
	h.health[vol] = r.state
	if healthNews(prev, r.state) {
		klog.FromContext(ctx).Info("GlusterFS volume health changed", "volume", vol,
			"healthy", r.state == healthOK,
			"offline", r.offline, "daemonsDown", daemonNames(r.down), "healPending", r.heal.Pending,
			"splitBrain", r.heal.SplitBrain, "err", errors.Join(r.err, r.healErr))
		h.emit(ctx, vol, r)
	}
	return r.state
}

func (h *HealthMonitor) brickMetrics(vol string, r healthReading) {
	m := h.Driver.metrics
	for _, b := range r.bricks {
		v := 0.0
		if b.Online {
			v = 1
		}
		m.brickOnline.WithLabelValues(vol, b.Name()).Set(v)
	}
	for _, dm := range r.daemons {
		v := 0.0
		if dm.Online {
			v = 1
		}
		m.daemonOnline.WithLabelValues(vol, dm.String()).Set(v)
	}
	if r.state == healthOK {
		m.volumeHealth.WithLabelValues(vol).Set(1)
	} else {
		m.volumeHealth.WithLabelValues(vol).Set(0)
	}
}

// pvsOf lists the berth PVs on GlusterFS volume vol (none without a PV lister).
func (h *HealthMonitor) pvsOf(ctx context.Context, vol string) []*v1.PersistentVolume {
	if h.PVs == nil || h.Recorder == nil {
		return nil
	}
	pvs, err := h.PVs.List(labels.Everything())
	if err != nil {
		klog.FromContext(ctx).Error(err, "failed to list PVs for health events")
		return nil
	}
	var out []*v1.PersistentVolume
	for _, pv := range pvs {
		if pv.Spec.CSI != nil && pv.Spec.CSI.Driver == Name && glusterVolumeOfID(
			pv.Spec.CSI.VolumeHandle) == vol {
			out = append(out, pv)
		}
	}
	return out
}

func (h *HealthMonitor) emit(ctx context.Context, vol string, r healthReading) {
	for _, pv := range h.pvsOf(ctx, vol) {
		switch r.state {
		case healthOK:
			h.Recorder.Eventf(pv, v1.EventTypeNormal, "GlusterVolumeHealthy",
				"every brick of GlusterFS volume %s is online and no heal is pending", vol)
		case healthDegraded:
			h.Recorder.Eventf(pv, v1.EventTypeWarning, "GlusterBrickOffline",
				"GlusterFS volume %s bricks offline: %s (replicas keep serving)", vol,
				strings.Join(r.offline, ", "))
		case healthDaemonOffline:
			h.Recorder.Eventf(pv, v1.EventTypeWarning, "GlusterDaemonOffline",
				"GlusterFS volume %s: %s not running (without the self-heal daemon replicas stop "+
					"converging, without the quota daemon writes into quota'd directories fail); the "+
					"controller restarts it if it stays down", vol, daemonNames(r.down))
		case healthHealing:
			h.Recorder.Eventf(pv, v1.EventTypeWarning, "GlusterHealPending",
				"GlusterFS volume %s: %d entries wait for self-heal (replicas differ until healed; heal "+
					"started)", vol, r.heal.Pending)
		case healthSplitBrain:
			h.Recorder.Eventf(pv, v1.EventTypeWarning, "GlusterSplitBrain",
				"GlusterFS volume %s: %d entries in split-brain, they need a manual resolution (gluster "+
					"volume heal %s info split-brain)", vol, r.heal.SplitBrain, vol)
		case healthUnreachable:
			h.Recorder.Eventf(pv, v1.EventTypeWarning, "GlusterdUnreachable", "%s",
				fmt.Sprintf("glusterd cannot report the status of GlusterFS volume %s: %v", vol, r.err))
		}
	}
}

// healthEntries are the VolumeHealth entries of a reading (none: healthy).
func (r healthReading) healthEntries(vol string) []*csi.VolumeHealth_VolumeHealthEntry {
	var out []*csi.VolumeHealth_VolumeHealthEntry
	add := func(t csi.VolumeHealthErrorType, reason, msg string) {
		out = append(out, &csi.VolumeHealth_VolumeHealthEntry{Status: t, Reason: reason, Message: msg})
	}
	if r.state == healthUnreachable {
		add(csi.VolumeHealthErrorType_INACCESSIBLE, "GlusterdUnreachable", r.err.Error())
		return out
	}
	for _, b := range r.offline {
		add(csi.VolumeHealthErrorType_DEGRADED, "BrickOffline", fmt.Sprintf(
			"brick %s of GlusterFS volume %s is offline", b, vol))
	}
	for _, dm := range r.down {
		add(csi.VolumeHealthErrorType_DEGRADED, "DaemonOffline", fmt.Sprintf(
			"%s, serving GlusterFS volume %s, is not running", dm, vol))
	}
	if r.heal.SplitBrain > 0 {
		add(csi.VolumeHealthErrorType_DEGRADED, "SplitBrain", fmt.Sprintf(
			"%d entries of GlusterFS volume %s are in split-brain", r.heal.SplitBrain, vol))
	}
	if r.heal.Pending > 0 {
		add(csi.VolumeHealthErrorType_DEGRADED, "HealPending", fmt.Sprintf(
			"%d entries of GlusterFS volume %s wait for self-heal", r.heal.Pending, vol))
	}
	return out
}

// glusterVolumeOfID is the GlusterFS volume a volume ID lives on, "" for a malformed ID.
func glusterVolumeOfID(id string) string {
	ref, err := parseVolumeID(id)
	if err != nil {
		return ""
	}
	return ref.GlusterVolume
}
