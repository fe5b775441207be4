//go:build integration

// These tests run the real berth-hook binary and the real hookapp test app as
// processes on loopback ports, as the kubelet would run them in a pod: no
// container runtime, the same binaries. They need /bin/sh (every Debian has it).
package hook_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/testenv"
)

var bin struct{ hook, app string }

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "berth-hook-test-")
	if err != nil {
		panic(err)
	}
	bin.hook, bin.app = filepath.Join(dir, "berth-hook"), filepath.Join(dir, "hookapp")
	for out, pkg := range map[string]string{bin.hook: "../../cmd/berth-hook",
		bin.app: "../../test/images/hookapp"} {
		if b, err := exec.Command("go", "build", "-o", out, pkg).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "building %s: %v\n%s", pkg, err, b)
			os.Exit(1)
		}
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// proc is a started process whose combined output is kept.
type proc struct {
	cmd *exec.Cmd
	out *syncBuffer
}

func start(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(name, args...), out: &syncBuffer{}}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill() // may already have exited
		_ = p.cmd.Wait()
		if t.Failed() {
			t.Logf("output of %s %v:\n%s", filepath.Base(name), args, p.out.String())
		}
	})
	return p
}

// waitLog waits until the process has printed want.
func waitLog(t *testing.T, p *proc, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(p.out.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("%s never printed %q", filepath.Base(p.cmd.Path), want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func run(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	b, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return string(b), err
}

func TestPreStartBoundedRetries(t *testing.T) {
	dir := t.TempDir()
	runs := filepath.Join(dir, "runs")
	state, term := filepath.Join(dir, "state.json"), filepath.Join(dir, "termination-log")
	script := fmt.Sprintf(`date +%%s.%%N >> %s; echo "authorisation service said 503"; exit 7`, runs)
	args := []string{"prestart", "--script=" + script, "--attempts=3", "--backoff=300ms",
		"--deadline=1m", "--state=" + state, "--termination-log=" + term}
	out, err := run(t, bin.hook, args...)
	if err == nil {
		t.Fatalf("a failing preStart exited 0:\n%s", out)
	}
	times := readTimes(t, runs)
	if len(times) != 3 {
		t.Fatalf("want 3 attempts, got %d:\n%s", len(times), out)
	}
	// Exponential backoff: the waits are at least 300ms, then 600ms.
	if g1, g2 := times[1]-times[0], times[2]-times[1]; g1 < 0.3 || g2 < 0.6 {
		t.Errorf("backoff not exponential: gaps %.3fs, %.3fs", g1, g2)
	}
	msg, _ := os.ReadFile(term)
	for _, w := range []string{"gave up after 3 attempt(s)", "exit status 7",
		"authorisation service said 503", "delete the pod"} {
		if !strings.Contains(string(msg), w) {
			t.Errorf("termination message %q lacks %q", msg, w)
		}
	}
	if !strings.Contains(out, "authorisation service said 503") {
		t.Errorf("script output is not in the container log:\n%s", out)
	}
	// The kubelet restarts the init container: the budget is spent, the script must not run again.
	if out, err := run(t, bin.hook, args...); err == nil ||
		!strings.Contains(out, "gave up after 3 attempt(s)") {
		t.Errorf("restarted preStart did not give up at once: err=%v\n%s", err, out)
	}
	if n := len(readTimes(t, runs)); n != 3 {
		t.Errorf("restarted preStart ran the script again: %d runs", n)
	}
}

func TestPreStartDeadline(t *testing.T) {
	dir := t.TempDir()
	term := filepath.Join(dir, "termination-log")
	start := time.Now()
	out, err := run(t, bin.hook, "prestart", "--script=echo started; sleep 30", "--attempts=5",
		"--backoff=100ms",
		"--deadline=1500ms", "--state="+filepath.Join(dir, "s.json"), "--termination-log="+term)
	if err == nil {
		t.Fatalf("preStart past its deadline exited 0:\n%s", out)
	}
	if took := time.Since(start); took > 20*time.Second {
		t.Errorf("the deadline did not stop the script (took %s)", took)
	}
	msg, _ := os.ReadFile(term)
	if !strings.Contains(string(msg), "deadline 1.5s") ||
		!strings.Contains(string(msg), "stopped at the deadline") {
		t.Errorf("termination message %q does not say the deadline stopped it", msg)
	}
}

func TestPreStartSucceedsAfterRetry(t *testing.T) {
	dir := t.TempDir()
	count, state := filepath.Join(dir, "count"), filepath.Join(dir, "s.json")
	script := fmt.Sprintf(`echo x >> %[1]s; n=$(wc -l < %[1]s); echo "attempt $n"; [ "$n" -ge 2 ]`, count)
	out, err := run(t, bin.hook, "prestart", "--script="+script, "--attempts=3", "--backoff=100ms",
		"--deadline=30s", "--state="+state)
	if err != nil {
		t.Fatalf("preStart failed although attempt 2 succeeds: %v\n%s", err, out)
	}
	if !strings.Contains(out, "attempt 1") || !strings.Contains(out, "attempt 2") ||
		strings.Contains(out, "attempt 3") {
		t.Errorf("unexpected attempts:\n%s", out)
	}
	if _, err := os.Stat(state); !os.IsNotExist(err) {
		t.Errorf("state kept after success: %v", err)
	}
}

func TestPreStartBadFlags(t *testing.T) {
	out, err := run(t, bin.hook, "prestart", "--attempts=3")
	if err == nil || !strings.Contains(out, "give exactly one of --script and --script-file") {
		t.Errorf("want a clear error for a missing script, got %v:\n%s", err, out)
	}
}

// TestPreOnlineOrdering: no marker and no readiness until the check URL
// answers and the preOnline script is done; preStop removes the marker
// first and returns (SIGTERM) only after the drain period.
func TestPreOnlineOrdering(t *testing.T) {
	dir := t.TempDir()
	marker, warm := filepath.Join(dir, "online", "healthcheck.html"), filepath.Join(dir, "warmed")
	if err := os.Mkdir(filepath.Dir(marker), 0o755); err != nil {
		t.Fatal(err)
	}
	appPort, health := testenv.FreePort(t), testenv.FreePort(t)
	sidecar := start(t, bin.hook, "sidecar", fmt.Sprintf("--listen=127.0.0.1:%d", health),
		fmt.Sprintf("--check-url=http://127.0.0.1:%d/check", appPort), "--marker="+marker, "--poll-interval=100ms",
		fmt.Sprintf("--script=echo warming; sleep 0.5; date +%%s.%%N > %s", warm))
	online := fmt.Sprintf("http://127.0.0.1:%d/online", health)
	waitStatus(t, online, http.StatusServiceUnavailable)
	time.Sleep(500 * time.Millisecond) // the app is not up yet: nothing may happen
	if exists(marker) || exists(warm) {
		t.Fatal("marker or warm-up before the app answered its check URL")
	}
	app := start(t, bin.app, fmt.Sprintf("--addr=127.0.0.1:%d", appPort), "--watch-marker="+marker,
		"--start-delay=300ms")
	waitStatus(t, online, http.StatusOK)
	if !exists(warm) {
		t.Fatal("online before the preOnline script finished")
	}
	// The marker records when it was written; it must be after the warm-up's last step.
	content, err := os.ReadFile(marker)
	if err != nil {
		t.Fatal(err)
	}
	written, err := time.Parse(time.RFC3339Nano,
		strings.TrimSpace(strings.TrimPrefix(string(content), "online ")))
	if err != nil || float64(written.UnixNano())/1e9 < readTimes(t, warm)[0] {
		t.Fatalf("marker %q written before the warm-up ended (%v)", content, err)
	}
	// The app sees the marker before shutdown begins (it polls every 50ms).
	waitLog(t, app, "MARKER appeared")
	// Shutdown: preStop removes the marker, drains 1.5s, then returns.
	begin := time.Now()
	pre := start(t, bin.hook, "prestop", "--marker="+marker, "--drain=1500ms")
	waitStatus(t, online, http.StatusServiceUnavailable)
	if exists(marker) {
		t.Fatal("marker still there after preStop began")
	}
	gone := time.Since(begin)
	if err := pre.cmd.Wait(); err != nil {
		t.Fatalf("prestop failed: %v\n%s", err, pre.out.String())
	}
	if took := time.Since(begin); took < 1500*time.Millisecond || gone >= took {
		t.Errorf("preStop returned after %s, marker gone after %s: want marker first, then the full drain", took, gone)
	}
	// The kubelet now sends SIGTERM; the app logs it after the marker disappeared.
	_ = app.cmd.Process.Signal(syscall.SIGTERM)
	_ = app.cmd.Wait()
	logs := app.out.String()
	iOn, iOff, iTerm := strings.Index(logs, "MARKER appeared"), strings.Index(logs, "MARKER removed"),
		strings.Index(logs, "SIGTERM received")
	if iOn < 0 || iOff < iOn || iTerm < iOff {
		t.Errorf("app log does not show appeared < removed < SIGTERM:\n%s", logs)
	}
	// The sidecar stays offline while draining although the app still answers.
	waitStatus(t, online, http.StatusServiceUnavailable)
	_ = sidecar.cmd.Process.Signal(syscall.SIGTERM)
	if err := sidecar.cmd.Wait(); err != nil {
		t.Errorf("sidecar did not stop cleanly on SIGTERM: %v", err)
	}
}

// TestDebugAwareLiveness: /livez follows (check URL 2xx) || (debugger attached && app alive).
func TestDebugAwareLiveness(t *testing.T) {
	appPort, dbgPort, proxyPort, health := testenv.FreePort(t), testenv.FreePort(t),
		testenv.FreePort(t), testenv.FreePort(t)
	app := start(t, bin.app, fmt.Sprintf("--addr=127.0.0.1:%d", appPort),
		fmt.Sprintf("--debug-addr=127.0.0.1:%d", dbgPort))
	start(t, bin.hook, "sidecar", fmt.Sprintf("--listen=127.0.0.1:%d", health),
		fmt.Sprintf("--check-url=http://127.0.0.1:%d/check", appPort), "--check-timeout=300ms",
		fmt.Sprintf("--debug-listen=127.0.0.1:%d", proxyPort), fmt.Sprintf("--debug-target=127.0.0.1:%d", dbgPort))
	livez := fmt.Sprintf("http://127.0.0.1:%d/livez", health)
	appURL := fmt.Sprintf("http://127.0.0.1:%d", appPort)
	waitStatus(t, livez, http.StatusOK)

	post(t, appURL+"/hang") // a paused JVM, no debugger: Kubernetes should restart it
	waitStatus(t, livez, http.StatusServiceUnavailable)

	conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", proxyPort))
	if err != nil {
		t.Fatalf("debugger cannot reach the proxy: %v", err)
	}
	defer conn.Close()
	echo(t, conn, "JDWP-Handshake") // the proxy really carries the session
	waitStatus(t, livez, http.StatusOK)
	for range 3 { // stays healthy while the app hangs and the debugger is attached
		time.Sleep(300 * time.Millisecond)
		if code := status(t, livez); code != http.StatusOK {
			t.Fatalf("liveness failed with a debugger attached to a live app: %d", code)
		}
	}
	// The app process dies while the debugger is attached: unhealthy.
	if err := app.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = app.cmd.Wait()
	waitStatus(t, livez, http.StatusServiceUnavailable)
}

func echo(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(msg))
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != msg {
		t.Fatalf("debug session through the proxy: got %q, %v", buf, err)
	}
}

func post(t *testing.T, url string) {
	t.Helper()
	resp, err := http.Post(url, "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
}

func status(t *testing.T, url string) int {
	t.Helper()
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// waitStatus polls url until it answers code (30s at most: a correctness bound, not a timing assertion).
func waitStatus(t *testing.T, url string, code int) {
	t.Helper()
	last := 0
	for end := time.Now().Add(30 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if last = status(t, url); last == code {
			return
		}
	}
	t.Fatalf("%s: want %d, still %d after 30s", url, code, last)
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

func readTimes(t *testing.T, p string) []float64 {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var out []float64
	for _, l := range strings.Fields(string(b)) {
		var f float64
		if _, err := fmt.Sscan(l, &f); err != nil {
			t.Fatalf("bad time %q: %v", l, err)
		}
		out = append(out, f)
	}
	return out
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}
func (b *syncBuffer) String() string { b.mu.Lock(); defer b.mu.Unlock(); return b.buf.String() }
