package mountcgroup

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// DefaultName is the cgroup, directly below each hierarchy's root, that the FUSE
// daemons of this node's mounts (GlusterFS clients and IO-limited layers) move into.
//
// Why: the node plugin runs in a container. When the container stops (an upgrade, a crash, a
// deleted pod), runc and the kubelet kill every process in its cgroup, and with it every FUSE
// daemon it started: each pod's volume then answers "transport endpoint is not connected"
// until the next plugin remounts it, and a pod keeps the dead mount until its container
// restarts. Outside the container's cgroup (and, with hostPID, outside its PID namespace) the
// daemons outlive the plugin, and the restarted plugin adopts the live mounts.
const DefaultName = "berth-csi-mounts"

// Cgroup moves processes into one cgroup in every hierarchy of a cgroupfs root
// (cgroup v1: one directory per controller, v2: the unified tree, hybrid: both).
// A nil *Cgroup leaves processes where they are.
type Cgroup struct {
	root string // cgroupfs as this process sees the host's, e.g. /host/sys/fs/cgroup
	name string
}

// New returns the cgroup name below each hierarchy of the cgroupfs mounted at root, or nil
// when root is empty (the daemons then stay in the caller's cgroup). name must be a relative
// path without "..", e.g. DefaultName.
func New(root, name string) (*Cgroup, error) {
	if strings.Contains(name, "..") || filepath.IsAbs(name) || name == "" {
		return nil, fmt.Errorf("invalid mount cgroup %q: want a name below the cgroup root, e.g. %s",
			name, DefaultName)
	}
	if root == "" {
		return nil, nil
	}
	return &Cgroup{root: root, name: name}, nil
}

// Dirs lists the cgroup directories a process must enter, creating them as needed.
func (c *Cgroup) Dirs() ([]string, error) {
	if _, err := os.Stat(filepath.Join(c.root, "cgroup.procs")); err == nil {
		// cgroup v2 mounted at root: a single tree.
		return c.ensure([]string{c.root})
	}
	entries, err := os.ReadDir(c.root)
	if err != nil {
		return nil, fmt.Errorf("failed to read cgroup root %q: %w", c.root, err)
	}
	var hierarchies []string
	seen := map[string]bool{}
	for _, e := range entries {
		h := filepath.Join(c.root, e.Name())
		real, err := filepath.EvalSymlinks(h) // cpu and cpuacct are links to cpu,cpuacct
		if err != nil || seen[real] {
			continue
		}
		if _, err := os.Stat(filepath.Join(real, "cgroup.procs")); err != nil {
			continue
		}
		seen[real] = true
		hierarchies = append(hierarchies, real)
	}
	if len(hierarchies) == 0 {
		return nil, fmt.Errorf("no cgroup hierarchy under %q (mount the host's /sys/fs/cgroup there)",
			c.root)
	}
	return c.ensure(hierarchies)
}

func (c *Cgroup) ensure(hierarchies []string) ([]string, error) {
	var dirs []string
	for _, h := range hierarchies {
		dir := filepath.Join(h, c.name)
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("failed to create cgroup %q: %w", dir, err)
		}
		// cgroup v1 cpuset refuses tasks until the group has CPUs and memory nodes.
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			own := filepath.Join(dir, f)
			if b, err := os.ReadFile(own); err != nil || strings.TrimSpace(string(b)) != "" {
				continue
			}
			parent, err := os.ReadFile(filepath.Join(h, f))
			if err != nil {
				return nil, fmt.Errorf("failed to read %s of %q: %w", f, h, err)
			}
			if err := os.WriteFile(own, parent, 0o644); err != nil {
				return nil, fmt.Errorf("failed to set %q: %w", own, err)
			}
		}
		dirs = append(dirs, dir)
	}
	return dirs, nil
}

// Adopt moves process pid (all its threads) into the mount cgroup of every hierarchy; a nil
// c leaves it where it is.
func (c *Cgroup) Adopt(pid int) error {
	if c == nil || c.root == "" {
		return nil
	}
	dirs, err := c.Dirs()
	if err != nil {
		return err
	}
	for _, dir := range dirs {
		err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644)
		if err != nil {
			return fmt.Errorf("failed to move process %d into cgroup %q: %w", pid, dir, err)
		}
	}
	return nil
}

// Cmdline returns the arguments of process pid; nil when it is gone (or a zombie). Callers
// that adopt a daemon by a recorded PID check it with this: PIDs get reused.
func Cmdline(pid int) []string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil || len(b) == 0 {
		return nil
	}
	return strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
}
