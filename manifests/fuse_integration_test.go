//go:build integration

package manifests

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestUnprivilegedFUSE is the reason the CSI controller stays privileged: in a container with
// CAP_SYS_ADMIN and /dev/fuse bind-mounted, but the device cgroup rules a runtime gives an
// unprivileged container (deny all, then the standard devices), opening /dev/fuse fails; with
// the one rule a privileged container or a device plugin adds, the FUSE mount works. If the
// first case ever mounts, the controller can drop privileged for SYS_ADMIN (docs/operations.md).
func TestUnprivilegedFUSE(t *testing.T) {
	runc, err := exec.LookPath("runc")
	if err != nil || os.Geteuid() != 0 {
		t.Skip("needs root and runc (the container runtime's low-level runtime)")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("no /dev/fuse on this host: %v", err)
	}
	dir := t.TempDir()
	rootfs := filepath.Join(dir, "rootfs")
	for _, d := range []string{"mnt", "proc", "dev"} {
		if err := os.MkdirAll(filepath.Join(rootfs, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(rootfs, "fusecheck")
	build := exec.Command("go", "build", "-o", bin, "./testdata/fusecheck")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build testdata/fusecheck: %v\n%s", err, out)
	}
	tests := []struct {
		name      string
		fuseRule  bool
		wantMount bool
	}{
		{name: "SYS_ADMIN only", fuseRule: false, wantMount: false},
		{name: "SYS_ADMIN and the /dev/fuse device rule", fuseRule: true, wantMount: true},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := runFusecheck(t, runc, dir, fmt.Sprintf("berth-fusecheck-%d-%d", os.Getpid(), i),
				tt.fuseRule)
			t.Logf("fusecheck in the container: %s", out)
			if mounted := strings.Contains(out, "mounted"); mounted != tt.wantMount {
				t.Errorf("FUSE mount in the container: got %q, want mounted=%v", out, tt.wantMount)
			}
		})
	}
}

// runFusecheck runs /fusecheck in a runc container of bundle dir with CAP_SYS_ADMIN and
// /dev/fuse bind-mounted, and returns its output.
func runFusecheck(t *testing.T, runc, dir, id string, fuseRule bool) string {
	t.Helper()
	state := filepath.Join(dir, "runc-state") // not the runtime's own state dir
	path := filepath.Join(dir, "config.json")
	if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	if out, err := exec.Command(runc, "spec", "--bundle", dir).CombinedOutput(); err != nil {
		t.Fatalf("runc spec: %v\n%s", err, out)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var spec map[string]any
	if err := json.Unmarshal(b, &spec); err != nil {
		t.Fatal(err)
	}
	proc := spec["process"].(map[string]any)
	proc["terminal"], proc["args"] = false, []string{"/fusecheck"}
	caps := proc["capabilities"].(map[string]any)
	for _, set := range []string{"bounding", "effective", "permitted"} {
		caps[set] = append(caps[set].([]any), "CAP_SYS_ADMIN")
	}
	spec["mounts"] = append(spec["mounts"].([]any), map[string]any{
		"destination": "/dev/fuse", "type": "bind", "source": "/dev/fuse",
		"options": []string{"bind", "rw"}})
	res := spec["linux"].(map[string]any)["resources"].(map[string]any)
	if fuseRule {
		res["devices"] = append(res["devices"].([]any), map[string]any{
			"allow": true, "type": "c", "major": 10, "minor": 229, "access": "rwm"})
	}
	if b, err = json.Marshal(spec); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(runc, "--root", state, "run", "--bundle", dir, id)
	out, _ := cmd.CombinedOutput() // fusecheck's exit status is in its output
	_ = exec.Command(runc, "--root", state, "delete", "--force", id).Run()
	return strings.TrimSpace(string(out))
}
