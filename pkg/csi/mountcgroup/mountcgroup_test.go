package mountcgroup

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The layouts are plain directories here: what is checked is which cgroup directories the
// daemons are moved into. TestMountsSurviveNodePluginRestart moves them for real (cgroup v1).
func TestMountCgroupLayouts(t *testing.T) {
	write := func(p, s string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("v1 with linked controllers and cpuset", func(t *testing.T) {
		root := t.TempDir()
		for _, h := range []string{"cpu,cpuacct", "memory", "cpuset", "systemd"} {
			write(filepath.Join(root, h, "cgroup.procs"), "")
		}
		write(filepath.Join(root, "cpuset", "cpuset.cpus"), "0-1\n")
		write(filepath.Join(root, "cpuset", "cpuset.mems"), "0\n")
		// the kernel creates a new cpuset group with empty cpus and mems
		write(filepath.Join(root, "cpuset", "m", "cpuset.cpus"), "\n")
		write(filepath.Join(root, "cpuset", "m", "cpuset.mems"), "\n")
		for _, l := range []string{"cpu", "cpuacct"} {
			if err := os.Symlink("cpu,cpuacct", filepath.Join(root, l)); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Mkdir(filepath.Join(root, "not-a-hierarchy"), 0o755); err != nil {
			t.Fatal(err)
		}
		c := &Cgroup{root: root, name: "m"}
		if err := c.Adopt(4242); err != nil {
			t.Fatal(err)
		}
		for _, h := range []string{"cpu,cpuacct", "memory", "cpuset", "systemd"} {
			b, err := os.ReadFile(filepath.Join(root, h, "m", "cgroup.procs"))
			if err != nil || string(b) != "4242" {
				t.Errorf("%s: cgroup.procs = %q, %v; want the pid", h, b, err)
			}
		}
		if b, _ := os.ReadFile(filepath.Join(root, "cpuset", "m", "cpuset.cpus")); strings.TrimSpace(
			string(b)) != "0-1" {
			t.Errorf("cpuset.cpus of the new group = %q, want the parent's 0-1", b)
		}
		if _, err := os.Stat(filepath.Join(root, "not-a-hierarchy", "m")); err == nil {
			t.Error("a directory without cgroup.procs was treated as a hierarchy")
		}
	})
	t.Run("v2 unified", func(t *testing.T) {
		root := t.TempDir()
		write(filepath.Join(root, "cgroup.procs"), "")
		write(filepath.Join(root, "kubepods", "cgroup.procs"), "")
		c := &Cgroup{root: root, name: "m"}
		if err := c.Adopt(7); err != nil {
			t.Fatal(err)
		}
		if b, err := os.ReadFile(filepath.Join(root, "m", "cgroup.procs")); err != nil ||
			string(b) != "7" {
			t.Errorf("cgroup.procs = %q, %v; want the pid", b, err)
		}
		if _, err := os.Stat(filepath.Join(root, "kubepods", "m")); err == nil {
			t.Error("v2: a group was made below a child cgroup")
		}
	})
	t.Run("no cgroupfs", func(t *testing.T) {
		c := &Cgroup{root: t.TempDir(), name: "m"}
		if err := c.Adopt(7); err == nil || !strings.Contains(err.Error(), "no cgroup hierarchy") {
			t.Errorf("adopt on an empty root: %v, want a clear error", err)
		}
	})
}
