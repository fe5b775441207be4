package hook

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// Script is a user hook script run through a shell.
type Script struct {
	// Shell runs the script, e.g. /bin/sh.
	Shell string
	// Inline is the script text; File a script file. Exactly one is set.
	Inline, File string
	// Stdout and Stderr receive the script's output live (the container log); nil means
	// os.Stdout for both: the runtime reads a container's stdout and stderr through two
	// pipes and does not keep their lines in order, and kubectl logs shows them mixed
	// anyway, so one stream (shared with berth-hook's own log) keeps the order a reader sees.
	Stdout, Stderr io.Writer
}

// Validate reports a script that cannot run.
func (s *Script) Validate() error {
	switch {
	case s.Shell == "":
		return errors.New("no shell given (--shell)")
	case (s.Inline == "") == (s.File == ""):
		return errors.New("give exactly one of --script and --script-file")
	}
	return nil
}

// Run runs the script once. It returns the tail of its output (for
// termination messages) and an error when it could not start or exited
// non-zero. When ctx ends, the script's whole process group is killed.
func (s *Script) Run(ctx context.Context) (tail string, err error) {
	args := []string{"-c", s.Inline}
	if s.File != "" {
		args = []string{s.File}
	}
	cmd := exec.CommandContext(ctx, s.Shell, args...)
	t := &tailWriter{max: 512}
	cmd.Stdout = io.MultiWriter(orDefault(s.Stdout, os.Stdout), t)
	cmd.Stderr = cmd.Stdout // one writer: the child's stdout and stderr share one pipe, in order
	if s.Stderr != s.Stdout {
		cmd.Stderr = io.MultiWriter(orDefault(s.Stderr, os.Stdout), t)
	}
	// Own process group: a timeout kills the script's children too, not only the shell.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 2 * time.Second
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return t.String(), fmt.Errorf("script stopped at the deadline: %w", ctx.Err())
		}
		return t.String(), fmt.Errorf("script %s: %w", s.describe(), err)
	}
	return t.String(), nil
}

func (s *Script) describe() string {
	if s.File != "" {
		return s.File
	}
	return "(inline)"
}

func orDefault(w, def io.Writer) io.Writer {
	if w == nil {
		return def
	}
	return w
}

// tailWriter keeps the last max bytes written to it.
type tailWriter struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (t *tailWriter) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.max {
		t.buf = append([]byte(nil), t.buf[len(t.buf)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailWriter) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}
