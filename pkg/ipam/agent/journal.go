package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/berth-dev/berth/pkg/ipam"
)

// journalFile is the agent's state in StateDir.
const journalFile = "ipam-journal.json"

// maxJournal bounds the journal read at start: a node's buffer and the
// operations of one outage are a few KiB; anything larger is not ours.
const maxJournal = 16 << 20

// state is what the agent must not forget across a crash or a reboot: the
// addresses its node holds in etcd but has not handed out (the buffer), and
// the assignments and releases etcd has not seen yet (the pending journal).
// It is rewritten atomically on every change, before the change is answered.
type state struct {
	Version int                   `json:"version"`
	Pools   map[string]*poolState `json:"pools"`
	Pending []op                  `json:"pending"`
}

// poolState is the node's buffer of one pool.
type poolState struct {
	// Target is the buffer size the pool's network config asks for.
	Target int `json:"target"`
	// Network is the CNI network whose config named the pool (recorded with buffer claims).
	Network string `json:"network"`
	// Free are addresses claimed in etcd under a buffer handle of this node.
	Free []ipam.Allocation `json:"free"`
	// Foreign: berth-ipam has allocated from this pool for another main plugin, whose
	// attachments have no cni-vlan host veth; reclaim leaves the pool alone.
	Foreign bool `json:"foreign,omitempty"`
}

// Kinds of journalled operations.
const (
	opAssign  = "assign"  // IP moved from a buffer handle to a pod, while etcd was away
	opRelease = "release" // the pod's address was released by DEL, while etcd was away
)

// op is one change etcd has not seen yet, replayed in order when it answers.
type op struct {
	Kind string `json:"kind"`
	// Alloc is the pod's allocation (assign) or, if known, the released one.
	Alloc ipam.Allocation `json:"alloc"`
	// From is the buffer handle that holds Alloc.IP in etcd (assign).
	From ipam.Handle `json:"from,omitzero"`
	// Handle is the pod's handle (release).
	Handle ipam.Handle `json:"handle,omitzero"`
	At     time.Time   `json:"at"`
}

func newState() *state { return &state{Version: 1, Pools: map[string]*poolState{}} }

// loadState reads the journal; a missing file is an empty state (first start).
func loadState(path string) (*state, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return newState(), nil
	}
	if err != nil {
		return nil, fmt.Errorf("failed to open the IPAM journal: %w", err)
	}
	defer f.Close()
	st := newState()
	if err := json.NewDecoder(&limited{f, maxJournal}).Decode(st); err != nil {
		return nil, fmt.Errorf("IPAM journal %s is unreadable (%w): move it away only after checking "+
			"`cni-vlan ipam list` for this node's addresses, or they may be handed out twice", path, err)
	}
	if st.Pools == nil {
		st.Pools = map[string]*poolState{}
	}
	return st, nil
}

// save writes the state atomically and durably: temp file, fsync, rename,
// fsync of the directory. A crash leaves either the old or the new state.
func (st *state) save(path string) error {
	data, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("failed to encode the IPAM journal: %w", err)
	}
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+journalFile+".tmp")
	if err != nil {
		return fmt.Errorf("failed to write the IPAM journal in %s: %w", dir, err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if _, err = tmp.Write(data); err == nil {
		err = tmp.Sync() // a journal entry is an answer given: it must be on disk first
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("failed to write the IPAM journal %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("failed to replace the IPAM journal %s: %w", path, err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("failed to open %s to sync the IPAM journal: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("failed to sync %s: %w", dir, err)
	}
	return nil
}

// pendingAssign returns the journalled assignment of h, if any.
func (st *state) pendingAssign(h ipam.Handle) (int, bool) {
	for i, o := range st.Pending {
		if o.Kind == opAssign && o.Alloc.Handle.Same(h) {
			return i, true
		}
	}
	return 0, false
}

// buffered counts the free addresses of every pool.
func (st *state) buffered() int {
	n := 0
	for _, p := range st.Pools {
		n += len(p.Free)
	}
	return n
}

// holds reports whether ip of pool is in the buffer or journalled.
func (st *state) holds(pool string, ip netip.Addr) bool {
	if p := st.Pools[pool]; p != nil {
		for _, f := range p.Free {
			if f.IP.Addr() == ip {
				return true
			}
		}
	}
	for _, o := range st.Pending {
		if o.Alloc.Pool == pool && o.Alloc.IP.Addr() == ip {
			return true
		}
	}
	return false
}

// limited is io.LimitReader that fails instead of truncating.
type limited struct {
	f interface{ Read([]byte) (int, error) }
	n int64
}

func (l *limited) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, fmt.Errorf("larger than %d bytes", maxJournal)
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.f.Read(p)
	l.n -= int64(n)
	return n, err
}
