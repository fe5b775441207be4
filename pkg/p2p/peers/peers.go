// Package peers finds the other p2p-pullers of the cluster and orders them
// per blob with rendezvous hashing, so every node agrees, without talking,
// on which node tracks (and usually fetches) a given blob.
package peers

import (
	"fmt"
	"hash/fnv"
	"sort"
	"strings"
)

// Peer is one p2p-puller: its node name and the host:port of its peer API.
type Peer struct {
	Name string
	Addr string
}

// Discovery returns the live peers, this node included.
type Discovery interface {
	// Peers returns the current peer set; the caller must not modify it.
	Peers() []Peer
}

// Static is a fixed peer list (the --peers flag, tests).
type Static []Peer

var _ Discovery = Static(nil)

// Peers returns the list itself.
func (s Static) Peers() []Peer { return s }

// ParseStatic parses "name=host:port,name=host:port".
func ParseStatic(s string) (Static, error) {
	var out Static
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		name, addr, ok := strings.Cut(item, "=")
		if !ok || name == "" || addr == "" || !strings.Contains(addr, ":") {
			return nil, fmt.Errorf("invalid peer %q: want name=host:port, e.g. node-a=10.0.0.5:5002", item)
		}
		out = append(out, Peer{Name: name, Addr: addr})
	}
	return out, nil
}

// Rank orders peers by their rendezvous (highest random weight) score for
// key. Adding or removing one peer moves only the keys that peer owned.
func Rank(key string, ps []Peer) []Peer {
	type scored struct {
		p Peer
		s uint64
	}
	out := make([]scored, len(ps))
	for i, p := range ps {
		h := fnv.New64a()
		_, _ = h.Write([]byte(key)) // hash.Hash never fails
		_, _ = h.Write([]byte{0})
		_, _ = h.Write([]byte(p.Name))
		out[i] = scored{p, mix(h.Sum64())}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].s != out[j].s {
			return out[i].s > out[j].s
		}
		return out[i].p.Name < out[j].p.Name
	})
	r := make([]Peer, len(out))
	for i := range out {
		r[i] = out[i].p
	}
	return r
}

// mix is a 64-bit finalizer (splitmix64) that spreads FNV's weak low bits.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
