package p2p

import (
	"context"
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
// repository R grants (C, R) the blobs a pull of it needs (pullRefs), for
// the grant TTL. C is a hash of the Authorization header; the header itself
// is never kept. A grant only says the blob is named by a manifest of R: the
// mirror still checks that R really holds the blob before serving a copy
// that came from another repository (Puller.confirmed).
//
// Peer side: a peer that POSTs a manifest M for repository R (signed with the
// peer key) may read the blobs a pull of M needs, if this node holds them for
// R. Pullers only send manifests their clients fetched from the upstream
// with their own credentials, so a blob reaches another node only for a
// client that proved access at the registry.
//
// Grants expire by time: a sweep every ttl/4 (Puller.Run) drops them, so
// memory stays proportional to what was pulled within one TTL.
type grants struct {
	ttl time.Duration

	mu            sync.Mutex
	manifestBytes int                                // of manifests held, at most maxHeldManifestBytes
	client        map[string]map[digest.Digest]grant // credKey|registry/repo -> blob
	manifests     map[digest.Digest]storedManifest
	peer          map[string]peerGrant // node|manifest
}

type grant struct {
	size     int64         // from the manifest, -1 when unknown or out of bounds: ask the upstream
	manifest digest.Digest // "" when access was checked with a HEAD at the upstream
	expires  time.Time
}

type peerGrant struct {
	repo    string // registry/repo the manifest was fetched from
	blobs   map[digest.Digest]bool
	expires time.Time
}

type storedManifest struct {
	body    []byte
	expires time.Time
}

// Bounds on what a client of the loopback mirror can make a puller hold:
// a pull reads at most a few hundred descriptors per manifest, and the
// manifests kept as proof for peers (at most maxManifest each, the most a
// peer accepts) share one budget; past it the oldest are dropped, which
// only costs their clients the peers (they fetch from the upstream).
const (
	maxRefsPerManifest   = 4096
	maxHeldManifestBytes = 64 << 20
)

func newGrants(ttl time.Duration) *grants {
	return &grants{ttl: ttl, client: map[string]map[digest.Digest]grant{},
		manifests: map[digest.Digest]storedManifest{}, peer: map[string]peerGrant{}}
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

// descriptor is the part of an OCI/Docker descriptor a grant needs.
type descriptor struct {
	MediaType string        `json:"mediaType"`
	Digest    digest.Digest `json:"digest"`
	Size      int64         `json:"size"`
}

// manifestDoc holds the fields of a manifest or index a pull reads. Every
// other field (subject, an artifact's blobs, annotations) is ignored: a
// registry accepts a subject that does not exist and does not check
// fields it does not know, so naming a digest there proves nothing.
type manifestDoc struct {
	MediaType string       `json:"mediaType"`
	Config    *descriptor  `json:"config"`
	Layers    []descriptor `json:"layers"`
	Manifests []descriptor `json:"manifests"`
}

const (
	mtOCIIndex      = "application/vnd.oci.image.index.v1+json"
	mtDockerList    = "application/vnd.docker.distribution.manifest.list.v2+json"
	mtOCIManifest   = "application/vnd.oci.image.manifest.v1+json"
	mtDockerImageV2 = "application/vnd.docker.distribution.manifest.v2+json"
)

// pullRefs returns what a pull of this manifest reads by digest, with the
// sizes it declares: the config and layers of an image manifest, the
// manifests an index lists. Sizes outside [0, maxSize] become -1 (unknown).
// A document that is both or neither grants nothing.
func pullRefs(body []byte, maxSize int64) (map[digest.Digest]int64, error) {
	var m manifestDoc
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, fmt.Errorf("manifest is not JSON: %w", err)
	}
	image := m.Config != nil || m.Layers != nil
	index := m.Manifests != nil
	switch m.MediaType {
	case mtOCIIndex, mtDockerList:
		image = false
	case mtOCIManifest, mtDockerImageV2:
		index = false
	case "":
	default:
		return nil, fmt.Errorf("manifest media type %q is neither an image manifest nor an index",
			m.MediaType)
	}
	if image == index {
		return nil, fmt.Errorf("document is not exactly one of an image manifest (config, layers) and " +
			"an index (manifests)")
	}
	if n := len(m.Layers) + len(m.Manifests); n > maxRefsPerManifest {
		return nil, fmt.Errorf("manifest lists %d descriptors, over the %d a pull is allowed here", n,
			maxRefsPerManifest)
	}
	var refs []descriptor
	if index {
		refs = m.Manifests
	} else {
		refs = m.Layers
		if m.Config != nil {
			refs = append(refs, *m.Config)
		}
	}
	out := map[digest.Digest]int64{}
	for _, d := range refs {
		if d.Digest.Validate() != nil {
			continue
		}
		size := d.Size
		if size < 0 || size > maxSize {
			size = -1
		}
		out[d.Digest] = size
	}
	return out, nil
}

// addManifest grants key the blobs a pull of a manifest fetched from the
// upstream needs, and keeps the manifest as the proof to show peers.
func (g *grants) addManifest(key string, body []byte, maxSize int64) (digest.Digest, error) {
	refs, err := pullRefs(body, maxSize)
	if err != nil {
		return "", err
	}
	md := digest.FromBytes(body)
	exp := time.Now().Add(g.ttl)
	g.mu.Lock()
	defer g.mu.Unlock()
	g.holdManifestLocked(md, body, exp)
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

// holdManifestLocked keeps body as the proof to show peers, within the
// byte budget (a manifest over maxManifest is not kept: no peer takes it).
func (g *grants) holdManifestLocked(md digest.Digest, body []byte, exp time.Time) {
	if len(body) > maxManifest {
		return
	}
	if old, ok := g.manifests[md]; ok {
		g.manifestBytes -= len(old.body)
	}
	for g.manifestBytes+len(body) > maxHeldManifestBytes {
		oldest := digest.Digest("")
		for d, m := range g.manifests {
			if oldest == "" || m.expires.Before(g.manifests[oldest].expires) {
				oldest = d
			}
		}
		g.manifestBytes -= len(g.manifests[oldest].body)
		delete(g.manifests, oldest)
	}
	g.manifests[md] = storedManifest{body: body, expires: exp}
	g.manifestBytes += len(body)
}

// addDirect grants key one blob of the size the upstream answered a HEAD
// with these credentials, keeping the manifest proof of an earlier grant.
func (g *grants) addDirect(key string, d digest.Digest, size int64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	m := g.client[key]
	if m == nil {
		m = map[digest.Digest]grant{}
		g.client[key] = m
	}
	gr := m[d]
	if _, ok := g.manifests[gr.manifest]; !ok {
		gr.manifest = ""
	}
	gr.size, gr.expires = size, time.Now().Add(g.ttl)
	m[d] = gr
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

// addPeer records that node presented manifest body, fetched from repo
// (registry/repo), returning the manifest's digest.
func (g *grants) addPeer(node, repo string, body []byte, maxSize int64) (digest.Digest, error) {
	refs, err := pullRefs(body, maxSize)
	if err != nil {
		return "", err
	}
	md := digest.FromBytes(body)
	blobs := make(map[digest.Digest]bool, len(refs))
	for d := range refs {
		blobs[d] = true
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.peer[node+"|"+md.String()] = peerGrant{repo: repo, blobs: blobs, expires: time.Now().Add(g.ttl)}
	return md, nil
}

// peerAllowed reports whether node presented manifest md referencing d,
// and for which repository.
func (g *grants) peerAllowed(node string, md, d digest.Digest) (string, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	pg, ok := g.peer[node+"|"+md.String()]
	if !ok || !pg.blobs[d] || time.Now().After(pg.expires) {
		return "", false
	}
	return pg.repo, true
}

// run sweeps expired grants every ttl/4 until ctx is done.
func (g *grants) run(ctx context.Context) {
	t := time.NewTicker(max(g.ttl/4, time.Second))
	defer t.Stop()
	for {
		select {
		case <-t.C:
			g.expire()
		case <-ctx.Done():
			return
		}
	}
}

// count returns how many client and peer grants are held.
func (g *grants) count() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := len(g.peer)
	for _, m := range g.client {
		n += len(m)
	}
	return n
}

// expire drops expired grants and manifests.
func (g *grants) expire() {
	now := time.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	for md, m := range g.manifests {
		if now.After(m.expires) {
			g.manifestBytes -= len(m.body)
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
	for k, pg := range g.peer {
		if now.After(pg.expires) {
			delete(g.peer, k)
		}
	}
}
