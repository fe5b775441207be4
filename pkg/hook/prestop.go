package hook

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"time"
)

// PreStop is the app container's preStop hook when preOnline is on: it takes
// the pod offline (removes the marker, so readiness fails and load
// balancers watching the marker stop sending traffic), waits the drain
// period, then runs the app's own preStop (if it had one) and returns; the
// kubelet sends SIGTERM to the app only after that.
type PreStop struct {
	Marker string
	Drain  time.Duration
	// ThenSleep and Then are the app's original sleep or exec preStop, chained after the drain.
	ThenSleep time.Duration
	Then      []string
	// Log receives timestamped progress lines; nil means the app's own log (see AppLog).
	Log io.Writer
}

// Run executes the preStop sequence.
func (p *PreStop) Run(ctx context.Context) error {
	if p.Marker == "" {
		return fmt.Errorf("prestop needs --marker")
	}
	w := p.Log
	if w == nil {
		w = AppLog()
	}
	logf := func(format string, args ...any) {
		_, _ = fmt.Fprintf(w, "%s berth-hook prestop: %s\n", time.Now().UTC().Format(time.RFC3339Nano),
			fmt.Sprintf(format, args...))
	}
	if err := os.Remove(p.Marker); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("failed to remove the online marker %q: %w", p.Marker, err)
	}
	logf("marker %s removed, pod offline; draining for %s", p.Marker, p.Drain)
	if !sleep(ctx, p.Drain) {
		return ctx.Err()
	}
	logf("drain done")
	if len(p.Then) > 0 {
		logf("running the container's own preStop: %q", p.Then)
		cmd := exec.CommandContext(ctx, p.Then[0], p.Then[1:]...)
		cmd.Stdout, cmd.Stderr = w, w
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("the container's own preStop %q failed: %w", p.Then, err)
		}
	}
	if p.ThenSleep > 0 {
		logf("sleeping %s (the container's own preStop)", p.ThenSleep)
		sleep(ctx, p.ThenSleep)
	}
	logf("done, the kubelet sends SIGTERM to the app next")
	return nil
}

// AppLog returns a writer into the container's log: a preStop hook's own
// output is otherwise invisible, so it writes to PID 1's stdout (the app in
// its container) and falls back to its own stdout.
func AppLog() io.Writer {
	if f, err := os.OpenFile("/proc/1/fd/1", os.O_WRONLY|os.O_APPEND, 0); err == nil {
		return f
	}
	return os.Stdout
}
