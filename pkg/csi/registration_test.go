package csi

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

// kubeletRegisters does what the kubelet's plugin watcher does with a registration socket:
// GetInfo, then NotifyRegistrationStatus(accepted).
func kubeletRegisters(t *testing.T, sock string) *registerapi.PluginInfo {
	t.Helper()
	return kubeletAnswers(t, sock, true)
}

// kubeletAnswers is kubeletRegisters with the kubelet's verdict.
func kubeletAnswers(t *testing.T, sock string, accepted bool) *registerapi.PluginInfo {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c := registerapi.NewRegistrationClient(conn)
	info, err := c.GetInfo(ctx, &registerapi.InfoRequest{})
	if err != nil {
		t.Fatalf("GetInfo on %s: %v", sock, err)
	}
	status := &registerapi.RegistrationStatus{PluginRegistered: accepted}
	if !accepted {
		status.Error = "connection error: use of closed network connection"
	}
	if _, err := c.NotifyRegistrationStatus(ctx, status); err != nil {
		t.Fatal(err)
	}
	return info
}

func serveRegistrar(t *testing.T, dir, endpoint string) (*Registrar, context.CancelFunc, <-chan error) {
	t.Helper()
	r := NewRegistrar(endpoint)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Serve(ctx, dir) }()
	waitFor(t, "the registration socket", func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.listener != nil && r.listener.Owned()
	})
	return r, cancel, done
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

// The node plugin is ready only once the kubelet accepted it, and a registration socket that
// disappears (so the kubelet dropped the driver) is put back.
func TestRegistrarReadyAndSocketRestored(t *testing.T) {
	old := socketCheckInterval
	socketCheckInterval = 50 * time.Millisecond
	t.Cleanup(func() { socketCheckInterval = old })
	dir := t.TempDir()
	sock := filepath.Join(dir, Name+"-reg.sock")
	r, cancel, done := serveRegistrar(t, dir, "/var/lib/kubelet/plugins/x/csi.sock")
	if err := r.Ready(context.Background()); err == nil {
		t.Fatal("ready before the kubelet registered the plugin")
	}
	if info := kubeletRegisters(t, sock); info.Name != Name || info.Endpoint != "/var/lib/kubelet/plugins/x/csi.sock" {
		t.Fatalf("GetInfo = %+v", info)
	}
	if err := r.Ready(context.Background()); err != nil {
		t.Fatalf("not ready after the kubelet registered the plugin: %v", err)
	}

	if err := os.Remove(sock); err != nil {
		t.Fatal(err)
	}
	if err := r.Ready(context.Background()); err == nil {
		t.Fatal("ready while the registration socket is gone")
	}
	waitFor(t, "the socket to be back", func() bool { _, err := os.Stat(sock); return err == nil })
	waitFor(t, "the new socket to answer", func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.listener != nil && r.listener.Owned()
	})
	if err := r.Ready(context.Background()); err == nil {
		t.Fatal("ready on a new socket the kubelet has not registered yet")
	}
	kubeletRegisters(t, sock)
	if err := r.Ready(context.Background()); err != nil {
		t.Fatalf("not ready after registering again: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Fatalf("socket left behind after shutdown: %v", err)
	}
}

// A container's successor can start before the old instance has stopped: the old one must not
// remove the successor's socket on its way out (the kubelet would drop the driver on that node).
func TestRegistrarShutdownLeavesSuccessorSocket(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, Name+"-reg.sock")
	_, cancelOld, doneOld := serveRegistrar(t, dir, "/old")
	_, cancelNew, doneNew := serveRegistrar(t, dir, "/new")
	defer func() { cancelNew(); <-doneNew }()
	cancelOld()
	if err := <-doneOld; err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(sock); err != nil {
		t.Fatalf("the old instance's shutdown removed its successor's socket: %v", err)
	}
	if info := kubeletRegisters(t, sock); info.Endpoint != "/new" {
		t.Fatalf("the socket answers for %q, want the successor", info.Endpoint)
	}
}

// The kubelet tries a registration socket once: when it refuses the plugin (it could not call
// the CSI socket, as after a node reboot), the registrar offers a new socket after a pause, and
// is ready only once the kubelet accepts it there.
func TestRegistrarRetriesAfterRefusal(t *testing.T) {
	oldMin := retryMin
	retryMin = 50 * time.Millisecond
	t.Cleanup(func() { retryMin = oldMin })
	dir := t.TempDir()
	sock := filepath.Join(dir, Name+"-reg.sock")
	r, cancel, done := serveRegistrar(t, dir, "/csi.sock")
	defer func() { cancel(); <-done }()
	r.mu.Lock()
	before := r.listener
	r.mu.Unlock()
	kubeletAnswers(t, sock, false)
	if err := r.Ready(context.Background()); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("Ready after a refusal = %v, want the kubelet's refusal", err)
	}
	waitFor(t, "a new registration socket", func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.listener != before && r.listener.Owned()
	})
	kubeletRegisters(t, sock)
	if err := r.Ready(context.Background()); err != nil {
		t.Fatalf("not ready after the kubelet accepted the new socket: %v", err)
	}
}
