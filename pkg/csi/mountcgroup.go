package csi

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// DefaultMountCgroup is the cgroup, directly below each hierarchy's root, that the FUSE
// daemons of this node's mounts (GlusterFS clients and IO-limited layers) move into.
//
// Why: the node plugin runs in a container. When the container stops (an upgrade, a crash, a
// deleted pod), runc and the kubelet kill every process in its cgroup, and with it every FUSE
// daemon it started: each pod's volume then answers "transport endpoint is not connected"
// until the next plugin remounts it, and a pod keeps the dead mount until its container
// restarts. Outside the container's cgroup (and, with hostPID, outside its PID namespace) the
// daemons outlive the plugin, and the restarted plugin adopts the live mounts.
const DefaultMountCgroup = "berth-csi-mounts"

// mountCgroup moves processes into one cgroup in every hierarchy of a cgroupfs root
// (cgroup v1: one directory per controller, v2: the unified tree, hybrid: both).
type mountCgroup struct {
	root string // cgroupfs as this process sees the host's, e.g. /host/sys/fs/cgroup
	name string
}

// dirs lists the cgroup directories pid must enter, creating them as needed.
func (c *mountCgroup) dirs() ([]string, error) {
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
		return nil, fmt.Errorf("no cgroup hierarchy under %q (mount the host's /sys/fs/cgroup there)", c.root)
	}
	return c.ensure(hierarchies)
}

func (c *mountCgroup) ensure(hierarchies []string) ([]string, error) {
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

// adopt moves process pid (all its threads) into the mount cgroup of every hierarchy.
func (c *mountCgroup) adopt(pid int) error {
	if c == nil || c.root == "" {
		return nil
	}
	dirs, err := c.dirs()
	if err != nil {
		return err
	}
	for _, dir := range dirs {
		if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644); err != nil {
			return fmt.Errorf("failed to move process %d into cgroup %q: %w", pid, dir, err)
		}
	}
	return nil
}
