//go:build integration

package p2p_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"

	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/pkg/p2p/hosts"
)

// containerd is a real containerd (Debian's) with its own root, state and
// socket in a temp dir: nothing of the machine's containerd is touched.
type containerd struct {
	sock, dir string
}

func startContainerd(t *testing.T) *containerd {
	t.Helper()
	bin, err := exec.LookPath("containerd")
	if err != nil {
		t.Fatalf("containerd not found: install Debian's containerd (`make deps`, apt-get install containerd)")
	}
	if _, err := exec.LookPath("ctr"); err != nil {
		t.Fatalf("ctr not found: it comes with Debian's containerd package (`make deps`)")
	}
	dir, err := os.MkdirTemp("", "berth-containerd-")
	if err != nil {
		t.Fatal(err)
	}
	c := &containerd{sock: filepath.Join(dir, "containerd.sock"), dir: dir}
	cfg := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = %q
[ttrpc]
  address = %q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), c.sock, c.sock+".ttrpc")
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "containerd.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--config", filepath.Join(dir, "config.toml"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("failed to start containerd: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill() // test teardown
		_ = cmd.Wait()
		_ = logf.Close()
		_ = exec.Command("umount", "-R", filepath.Join(dir, "root")).Run() // leftover snapshot mounts, if any
		_ = os.RemoveAll(dir)
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := c.ctr(t.Context(), "version"); err == nil {
			return c
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "containerd.log"))
			t.Fatalf("containerd did not come up in 20s; its log:\n%s", log)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (c *containerd) ctr(ctx context.Context, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, "ctr",
		append([]string{"--address", c.sock, "--namespace", "berth-test"}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ctr %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// TestContainerdPullsThroughMirror: containerd, configured only through the
// hosts.toml p2p-puller writes, pulls a private image through the mirror; the
// layers come from the node that pulled first, not from the registry again.
func TestContainerdPullsThroughMirror(t *testing.T) {
	up := testenv.StartRegistry(t, testenv.WithRegistryAuth(user, password))
	ref, img := up.PushRandomImage(t, "app:v1", 3, 2<<20)
	size := imageSize(t, img)
	nodes := startNodes(t, 2, up)
	if err := pull(t.Context(), nodes[0].ref(t, "app:v1"),
		&authn.Basic{Username: user, Password: password}); err != nil {
		t.Fatalf("first pull (go-containerregistry on %s): %v", nodes[0].name, err)
	}
	before := up.BlobBytes()

	c := startContainerd(t)
	hostsDir := filepath.Join(c.dir, "certs.d")
	entries := []hosts.Entry{{Host: up.Host, Server: up.URL}}
	if err := hosts.Write(hostsDir, "http://"+nodes[1].mirror, "200ms", entries); err != nil {
		t.Fatal(err)
	}
	if p := hosts.Check(hostsDir, "http://"+nodes[1].mirror, "", entries); len(p) != 0 {
		t.Fatalf("hosts.toml check: %v", p)
	}
	if _, err := c.ctr(t.Context(), "images", "pull", "--hosts-dir", hostsDir, "--snapshotter",
		"native", "--user", "wrong:creds", ref); err == nil {
		t.Errorf("containerd pulled the private image through the mirror with wrong credentials")
	}
	_, err := c.ctr(t.Context(), "images", "pull", "--hosts-dir", hostsDir, "--snapshotter", "native",
		"--user", user+":"+password, ref)
	if err != nil {
		t.Fatalf("containerd pull through the mirror: %v", err)
	}
	if _, err := c.ctr(t.Context(), "images", "check"); err != nil {
		t.Fatalf("ctr images check: %v", err)
	}
	if got := nodes[1].metric(t, "berth_p2p_blob_requests_total", nil); got < 4 {
		t.Errorf("the mirror saw %v blob requests from containerd, want 4 (config + 3 layers)", got)
	}
	if got := nodes[1].metric(t, "berth_p2p_bytes_total",
		map[string]string{"source": "peer"}); got < float64(size)*0.9 {
		t.Errorf("containerd's node got %v bytes from its peer, want about the image (%d)", got, size)
	}
	if got := up.BlobBytes() - before; got > size/10 {
		t.Errorf("containerd's pull cost the registry %d blob bytes, want about 0 (the peer had them)", got)
	}
}
