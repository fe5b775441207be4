package hook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/klog/v2"
)

// PreStartOptions configure RunPreStart.
type PreStartOptions struct {
	Script Script
	// Attempts is the total number of script runs allowed, across container restarts.
	Attempts int
	// Backoff is the wait after the first failure; it doubles after each failure, up to MaxBackoff.
	Backoff, MaxBackoff time.Duration
	// Deadline bounds the whole preStart, from its first attempt, across container restarts.
	Deadline time.Duration
	// StatePath records attempts in a volume that outlives the container (an emptyDir).
	StatePath string
	// TerminationLog receives the reason of a final failure (the kubelet shows it as the container's
	// message).
	TerminationLog string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// preStartState survives restarts of the init container, so a pod whose
// preStart keeps failing cannot hammer a downstream service: the kubelet may
// restart the container, but the budget is spent.
type preStartState struct {
	First     time.Time `json:"first"`
	Attempts  int       `json:"attempts"`
	LastError string    `json:"lastError,omitempty"`
}

// ErrGaveUp is returned when the attempt or time budget is spent.
var ErrGaveUp = errors.New("preStart gave up")

func (o *PreStartOptions) validate() error {
	if err := o.Script.Validate(); err != nil {
		return err
	}
	if o.Attempts < 1 || o.Backoff <= 0 || o.Deadline <= 0 || o.StatePath == "" {
		return fmt.Errorf("need --attempts >= 1, --backoff > 0, --deadline > 0 and --state, got %d, %s, "+
			"%s, %q", o.Attempts, o.Backoff, o.Deadline, o.StatePath)
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = time.Minute
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return nil
}

// RunPreStart runs the preStart script until it succeeds, the attempts are
// used up or the deadline passes. Backoff between attempts is exponential.
// On final failure it writes the reason to the termination log and returns
// an error wrapping ErrGaveUp.
func RunPreStart(ctx context.Context, o PreStartOptions) error {
	if err := o.validate(); err != nil {
		return err
	}
	log := klog.FromContext(ctx)
	st, err := loadState(o.StatePath)
	if err != nil {
		return err
	}
	if st.First.IsZero() {
		st.First = o.Now()
	}
	end := st.First.Add(o.Deadline)
	for {
		if st.Attempts >= o.Attempts || !o.Now().Before(end) {
			return o.giveUp(st)
		}
		st.Attempts++
		if err := saveState(o.StatePath, st); err != nil {
			return err
		}
		log.Info("preStart: running script", "attempt", st.Attempts, "of", o.Attempts, "deadline",
			end.Format(time.RFC3339))
		actx, cancel := context.WithDeadline(ctx, end)
		tail, runErr := o.Script.Run(actx)
		cancel()
		if runErr == nil {
			log.Info("preStart: script succeeded", "attempt", st.Attempts)
			if err := os.Remove(o.StatePath); err != nil && !os.IsNotExist(err) {
				return fmt.Errorf("failed to clear preStart state %q: %w", o.StatePath, err)
			}
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("preStart interrupted: %w", ctx.Err())
		}
		st.LastError = strings.TrimSpace(runErr.Error() + lastLine(tail))
		if err := saveState(o.StatePath, st); err != nil {
			return err
		}
		wait := o.backoff(st.Attempts)
		if st.Attempts >= o.Attempts || !o.Now().Add(wait).Before(end) {
			return o.giveUp(st)
		}
		log.Info("preStart: script failed, retrying", "attempt", st.Attempts, "err", st.LastError,
			"backoff", wait)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return fmt.Errorf("preStart interrupted: %w", ctx.Err())
		}
	}
}

// backoff is the wait after the n-th failure: Backoff, 2*Backoff, 4*Backoff... capped at MaxBackoff.
func (o *PreStartOptions) backoff(n int) time.Duration {
	d := o.Backoff
	for i := 1; i < n && d < o.MaxBackoff; i++ {
		d *= 2
	}
	return min(d, o.MaxBackoff)
}

func (o *PreStartOptions) giveUp(st *preStartState) error {
	msg := fmt.Sprintf("preStart gave up after %d attempt(s) in %s (limits: %d attempts, deadline "+
		"%s): %s. Fix the script or what it calls, then delete the pod to start over.",
		st.Attempts, o.Now().Sub(st.First).Round(time.Millisecond), o.Attempts, o.Deadline,
		orNone(st.LastError))
	if o.TerminationLog != "" {
		// Best effort: the message is also returned and logged.
		_ = os.WriteFile(o.TerminationLog, []byte(msg), 0o644)
	}
	return fmt.Errorf("%w: %s", ErrGaveUp, msg)
}

func orNone(s string) string {
	if s == "" {
		return "no attempt ran"
	}
	return "last error: " + s
}

func lastLine(tail string) string {
	lines := strings.Split(strings.TrimSpace(tail), "\n")
	if l := strings.TrimSpace(lines[len(lines)-1]); l != "" {
		return " (last output: " + l + ")"
	}
	return ""
}

func loadState(p string) (*preStartState, error) {
	st := &preStartState{}
	b, err := os.ReadFile(p)
	if os.IsNotExist(err) {
		return st, nil
	}
	if err != nil {
		return nil, fmt.Errorf("failed to read preStart state %q: %w", p, err)
	}
	if err := json.Unmarshal(b, st); err != nil {
		return nil, fmt.Errorf("corrupt preStart state %q (delete the pod to reset it): %w", p, err)
	}
	return st, nil
}

func saveState(p string, st *preStartState) error {
	b, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("failed to encode preStart state: %w", err)
	}
	tmp := filepath.Join(filepath.Dir(p), "."+filepath.Base(p)+".tmp")
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return fmt.Errorf("failed to write preStart state %q: %w", tmp, err)
	}
	if err := os.Rename(tmp, p); err != nil {
		return fmt.Errorf("failed to write preStart state %q: %w", p, err)
	}
	return nil
}
