package p2p

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
)

// grants records who may read which blob.
//
// Client side: a manifest fetched from the upstream with credentials C for
// repository R grants (C, R) every blob it references, for the grant TTL.
// C is a hash of the Authorization header; the header itself is never kept.
//
// Peer side: a peer that POSTs a manifest M (signed with the peer key) may
// read the blobs M references. Pullers only send manifests their clients
// fetched from the upstream with their own credentials, so a blob reaches
// another node only for a client that proved access at the registry.
type grants struct {
	ttl time.Duration

	mu        sync.Mutex
	client    map[string]map[digest.Digest]grant // credKey|registry/repo -> blob
	manifests map[digest.Digest]storedManifest
	peer      map[string]map[digest.Digest]time.Time // node|manifest -> blob -> expiry
}

type grant struct {
	size     int64
	manifest digest.Digest // "" when access was checked with a HEAD at the upstream
	expires  time.Time
}

type storedManifest struct {
	body    []byte
	expires time.Time
}

func newGrants(ttl time.Duration) *grants {
	return &grants{ttl: ttl, client: map[string]map[digest.Digest]grant{},
		manifests: map[digest.Digest]storedManifest{}, peer: map[string]map[digest.Digest]time.Time{}}
}

// credKey identifies a client's credentials without keeping them.
func credKey(r *http.Request) string {
	a := r.Header.Get("Authorization")
	if a == "" {
		return "anonymous"
	}
	sum := sha256.Sum256([]byte(a))
	return hex.EncodeToString(sum[:16])
}

// descriptor is the part of an OCI/Docker manifest or index that names blobs.
type descriptor struct {
	Digest digest.Digest `json:"digest"`
	Size   int64         `json:"size"`
}

type manifestRefs struct {
	Config    *descriptor  `json:"config"`
	Layers    []descriptor `json:"layers"`
	Blobs     []descriptor `json:"blobs"`
	Manifests []descriptor `json:"manifests"`
	Subject   *descriptor  `json:"subject"`
}

// referencedBlobs returns the digests (and sizes) a manifest or index references.
func referencedBlobs(body []byte) (map[digest.Digest]int64, error) {
	var m manifestRefs
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, fmt.Errorf("manifest is not JSON: %w", err)
	}
	out := map[digest.Digest]int64{}
	add := func(d descriptor) {
		if d.Digest.Validate() == nil {
			out[d.Digest] = d.Size
		}
	}
	for _, l := range [][]descriptor{m.Layers, m.Blobs, m.Manifests} {
		for _, d := range l {
			add(d)
		}
	}
	for _, d := range []*descriptor{m.Config, m.Subject} {
		if d != nil {
			add(*d)
		}
	}
	return out, nil
}

// addManifest grants key the blobs of a manifest fetched from the upstream
// and keeps the manifest as the proof to show peers.
func (g *grants) addManifest(key string, body []byte) (digest.Digest, error) {
	refs, err := referencedBlobs(body)
	if err != nil {
		return "", err
	}
	md := digest.FromBytes(body)
	exp := time.Now().Add(g.ttl)
	g.mu.Lock()
	defer g.mu.Unlock()
	g.expireLocked()
	g.manifests[md] = storedManifest{body: body, expires: exp}
	m := g.client[key]
	if m == nil {
		m = map[digest.Digest]grant{}
		g.client[key] = m
	}
	for d, size := range refs {
		m[d] = grant{size: size, manifest: md, expires: exp}
	}
	return md, nil
}

// addDirect grants key one blob after the upstream answered a HEAD with the
// client's credentials (a blob requested without a manifest first).
func (g *grants) addDirect(key string, d digest.Digest, size int64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	m := g.client[key]
	if m == nil {
		m = map[digest.Digest]grant{}
		g.client[key] = m
	}
	m[d] = grant{size: size, expires: time.Now().Add(g.ttl)}
}

// lookup returns key's grant for d, if any, and the manifest body behind it.
func (g *grants) lookup(key string, d digest.Digest) (grant, []byte, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	gr, ok := g.client[key][d]
	if !ok || time.Now().After(gr.expires) {
		return grant{}, nil, false
	}
	return gr, g.manifests[gr.manifest].body, true
}

// addPeer records that node presented manifest body, returning its digest.
func (g *grants) addPeer(node string, body []byte) (digest.Digest, error) {
	refs, err := referencedBlobs(body)
	if err != nil {
		return "", err
	}
	md := digest.FromBytes(body)
	exp := time.Now().Add(g.ttl)
	g.mu.Lock()
	defer g.mu.Unlock()
	m := map[digest.Digest]time.Time{}
	for d := range refs {
		m[d] = exp
	}
	g.peer[node+"|"+md.String()] = m
	return md, nil
}

// peerAllowed reports whether node presented manifest md referencing d.
func (g *grants) peerAllowed(node string, md, d digest.Digest) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	exp, ok := g.peer[node+"|"+md.String()][d]
	return ok && time.Now().Before(exp)
}

// expireLocked drops expired grants; called on insert, so memory stays
// proportional to what was pulled within one TTL.
func (g *grants) expireLocked() {
	now := time.Now()
	for md, m := range g.manifests {
		if now.After(m.expires) {
			delete(g.manifests, md)
		}
	}
	for k, m := range g.client {
		for d, gr := range m {
			if now.After(gr.expires) {
				delete(m, d)
			}
		}
		if len(m) == 0 {
			delete(g.client, k)
		}
	}
	for k, m := range g.peer {
		for d, exp := range m {
			if now.After(exp) {
				delete(m, d)
			}
		}
		if len(m) == 0 {
			delete(g.peer, k)
		}
	}
}
