package p2p

import (
	"slices"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/pkg/p2p/peers"
)

// trackerTTL bounds how long a node stays listed for a blob after it
// registered: long enough for a rollout, short enough that evicted blobs and
// departed nodes fade out (a stale entry only costs a 404 and a retry).
const trackerTTL = 30 * time.Minute

// tracker is the per-blob list of nodes that have or are fetching a blob. Each
// node runs one, and is the tracker for the digests it ranks first for.
// Registering is atomic: exactly one node of a simultaneous burst learns it is
// first (and fetches from the upstream); everyone else gets the earlier ones.
type tracker struct {
	mu      sync.Mutex
	entries map[digest.Digest]*trackEntry
}

type trackEntry struct {
	peers   []peers.Peer
	touched time.Time
}

func newTracker() *tracker { return &tracker{entries: map[digest.Digest]*trackEntry{}} }

// register adds who to d's list and returns the nodes listed before it.
func (t *tracker) register(d digest.Digest, who peers.Peer) []peers.Peer {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := time.Now()
	if len(t.entries) > 1024 {
		for k, e := range t.entries {
			if now.Sub(e.touched) > trackerTTL {
				delete(t.entries, k)
			}
		}
	}
	e := t.entries[d]
	if e == nil || now.Sub(e.touched) > trackerTTL {
		e = &trackEntry{}
		t.entries[d] = e
	}
	e.touched = now
	// A node that registers again (a retry, a restart) keeps its place and
	// learns only the nodes before it: those after it may be taking the blob
	// from it, and a node that looked forward could wait on its own successor.
	for i, p := range e.peers {
		if p.Name == who.Name {
			return slices.Clone(e.peers[:i])
		}
	}
	before := slices.Clone(e.peers)
	e.peers = append(e.peers, who)
	return before
}
