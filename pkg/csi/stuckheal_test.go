package csi

import (
	"testing"
	"time"
)

// TestStuckHealWaitsForNoProgress: the remedy is due only after heals stayed pending for the
// wait without the count falling, every brick and daemon online; a falling count starts the
// wait over, any other state ends the spell, and after one remedy the next waits the backoff.
func TestStuckHealWaitsForNoProgress(t *testing.T) {
	const after = 2 * time.Minute
	healing := func(n int) healthReading {
		return healthReading{state: healthHealing, heal: HealInfo{Replicated: true, Pending: n}}
	}
	t0 := time.Date(2026, 12, 4, 20, 0, 0, 0, time.UTC)
	var s stuckHeal
	steps := []struct {
		at   time.Duration
		r    healthReading
		want bool
	}{
		{0, healing(5), false},
		{time.Minute, healing(7), false},                                       // more pending: no progress
		{after - time.Second, healing(5), false},                               // not yet
		{after, healing(5), true},                                              // stuck
		{after + time.Second, healing(3), false},                               // progress: the wait starts over
		{after + time.Minute, healing(3), false},                               //
		{2*after + time.Second, healing(3), true},                              // stuck again
		{2*after + 2*time.Second, healthReading{state: healthDegraded}, false}, // a brick down: spell over
		{3 * after, healing(3), false},                                         // a new spell
		{4*after + time.Second, healing(3), true},
	}
	for _, st := range steps {
		if got := s.observe(t0.Add(st.at), st.r, after); got != st.want {
			t.Fatalf("at %s with %+v: due = %v, want %v", st.at, st.r.heal, got, st.want)
		}
	}

	// After a remedy the next one waits for the backoff, whatever the readings.
	s = stuckHeal{}
	s.observe(t0, healing(1), after)
	s.last = t0.Add(after)
	if s.observe(t0.Add(after+stuckHealBackoff-time.Second), healing(1), after) {
		t.Error("due again within the backoff after a remedy")
	}
	if !s.observe(t0.Add(after+stuckHealBackoff), healing(1), after) {
		t.Error("not due after the backoff with heals still stuck")
	}
	// While the option is off (a remedy on), never due.
	s.remedy = t0
	if s.observe(t0.Add(time.Hour), healing(1), after) {
		t.Error("due while a remedy is on")
	}
}

func TestHealRemedyOfVolumeInfo(t *testing.T) {
	at := time.Date(2026, 12, 4, 22, 0, 32, 0, time.UTC)
	for _, c := range []struct {
		info string
		want time.Time
	}{
		{"Volume Name: berth\nOptions Reconfigured:\nuser.berth.pv: x\n", time.Time{}},
		{"Options Reconfigured:\nuser.berth.heal-remedy: none\n", time.Time{}},
		{"Options Reconfigured:\nuser.berth.heal-remedy: 2026-12-04T22:00:32Z\n", at},
		{"Options Reconfigured:\nuser.berth.heal-remedy: yesterday\n", time.Unix(1, 0)},
	} {
		if got := healRemedyOf([]byte(c.info)); !got.Equal(c.want) {
			t.Errorf("healRemedyOf(%q) = %v, want %v", c.info, got, c.want)
		}
	}
}
