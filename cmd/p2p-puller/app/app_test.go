package app

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/testenv"
)

// TestFlagErrors: bad flags fail with a message naming the flag and a fix.
func TestFlagErrors(t *testing.T) {
	t.Parallel()
	key := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(key, []byte("k"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(t.TempDir(), "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	static := []string{"--node-name=a", "--peer-advertise-address=127.0.0.1:1", "--registry=http://r:1",
		"--peers=a=127.0.0.1:1"}
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--node-name=a", "--peer-advertise-address=127.0.0.1:1", "--registry=nope"}, "want host=URL"},
		{[]string{"--node-name=a", "--peer-advertise-address=127.0.0.1:1", "--registry=http://r:1",
			"--cache-max-size=lots"}, "--cache-max-size"},
		{[]string{"--node-name=", "--peer-advertise-address=127.0.0.1:1", "--registry=http://r:1",
			"--peers=a=127.0.0.1:1", "--peer-key-file=" + key}, "node name is required"},
		// No key and no API to get or create the Secret: refuse rather than serve peers unsigned.
		{append(static, "--peer-key-file=/nonexistent/key"), "no peer key: --peer-key-file " +
			"\"/nonexistent/key\" does not exist and the Kubernetes API is not available"},
		{append(static, "--peer-key-file="+empty), "is empty: peer requests must be signed"},
		{[]string{"--node-name=a", "--peer-advertise-address=127.0.0.1:1", "--registry=http://r:1",
			"--peers=bad", "--peer-key-file=" + key}, "want name=host:port"},
		{[]string{"extra-arg"}, "unknown command"},
	}
	for _, tt := range tests {
		cmd := NewCommand()
		cmd.SetArgs(append(tt.args, "--cache-dir="+t.TempDir(), "--containerd-config-dir="+t.TempDir(),
			"--containerd-config="))
		cmd.SetOut(io.Discard)
		cmd.SetErr(io.Discard)
		err := cmd.Execute()
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: err = %v, want it to mention %q", tt.args, err, tt.want)
		}
	}
}

// TestDaemonWritesHostsAndServesMetrics runs the daemon as the DaemonSet
// would (static peers instead of the API): hosts.toml is written, a missing
// config_path is reported by check-hosts, /metrics carries berth_p2p_*.
func TestDaemonWritesHostsAndServesMetrics(t *testing.T) {
	t.Parallel()
	certs := t.TempDir()
	containerdCfg := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(containerdCfg, []byte("version = 2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(key, []byte("0123456789abcdef"), 0o600); err != nil {
		t.Fatal(err)
	}
	mirror, peer, health := loopback(testenv.FreePort(t)), loopback(testenv.FreePort(t)),
		loopback(testenv.FreePort(t))
	args := []string{"--node-name=n1", "--peer-advertise-address=" + peer, "--peer-address=" + peer,
		"--mirror-address=" + mirror, "--health-address=" + health,
		"--registry=ghcr.io=http://127.0.0.1:1", "--cache-dir=" + t.TempDir(),
		"--containerd-config-dir=" + certs, "--containerd-config=" + containerdCfg, "--peers=n1=" + peer,
		"--peer-key-file=" + key, "--pull-secret-file=/nonexistent/secret"}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		cmd := NewCommand()
		cmd.SetArgs(args)
		done <- cmd.ExecuteContext(ctx)
	}()
	var body string
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + health + "/metrics")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			body = string(b)
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("daemon exited with %v after its context ended, want a clean exit", err)
	}
	if !strings.Contains(body, "berth_p2p_cache_bytes") {
		t.Fatalf("/metrics lacks berth_p2p_cache_bytes:\n%.500s", body)
	}
	b, err := os.ReadFile(filepath.Join(certs, "ghcr.io", "hosts.toml"))
	if err != nil || !strings.Contains(string(b), fmt.Sprintf("[host.%q]", "http://"+mirror)) {
		t.Fatalf("hosts.toml = %q, %v; want the mirror listed", b, err)
	}
	check := NewCommand()
	var out bytes.Buffer
	check.SetOut(&out)
	check.SetErr(io.Discard)
	check.SetArgs([]string{"check-hosts", "--registry=ghcr.io=http://127.0.0.1:1", "--mirror-address=" + mirror,
		"--containerd-config-dir=" + certs, "--containerd-config=" + containerdCfg})
	if err := check.Execute(); err == nil || !strings.Contains(out.String(), "config_path is not set") {
		t.Errorf("check-hosts with no config_path: err=%v, output:\n%s", err, out.String())
	}
}

func loopback(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }
