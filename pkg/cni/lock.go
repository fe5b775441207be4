package cni

import (
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// DefaultLockDir holds the node lock files (Plugin.LockDir).
const DefaultLockDir = "/run/berth"

// nodeLock serialises the plumbing work (bridge, trunk, tc programs, pod
// veth) of concurrent plugin runs in one host network namespace: without it
// two first pods of a VLAN race to create the same bridge, or a rollback
// deletes a bridge another run just attached a pod to. IPAM work runs
// outside the lock. The lock file is per network namespace (by inode) so
// simulated hosts in tests do not serialise each other.
func nodeLock(dir string) (unlock func(), err error) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
		return nil, fmt.Errorf("failed to stat the network namespace: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("failed to create lock directory %s: %w", dir, err)
	}
	path := filepath.Join(dir, fmt.Sprintf("cni-vlan-%d.lock", st.Ino))
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("failed to open lock %s: %w", path, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("failed to lock %s: %w", path, err)
	}
	return func() { _ = f.Close() }, nil // closing releases the flock
}
