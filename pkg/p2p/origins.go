package p2p

import (
	"github.com/opencontainers/go-digest"
)

// maxOriginsPerBlob bounds the repositories remembered per blob; past it the
// oldest is forgotten, which only costs its clients one more HEAD upstream.
const maxOriginsPerBlob = 32

// Origins: a blob this node holds (cached or downloading) is only ever
// handed out for a repository the upstream confirmed holds it: the one it was
// downloaded from, or one for which the upstream answered a client's HEAD
// with 200. A manifest of repository R naming digest D does not prove that R
// holds D (a non-distributable layer with urls, or a registry that does not
// check references, takes any digest), and registries decide access per
// repository: so a client, or a peer, whose grant comes from R gets another
// repository's copy of D only after the upstream said R has D.

// confirmed reports whether the upstream confirmed that repo (registry/repo)
// holds d: d was downloaded from it, a HEAD said so, or a download from it
// is running.
func (p *Puller) confirmed(d digest.Digest, repo string) bool {
	p.mu.Lock()
	dl := p.downloads[d]
	p.mu.Unlock()
	if dl != nil && dl.origin == repo {
		return true
	}
	p.originsMu.Lock()
	defer p.originsMu.Unlock()
	for _, o := range p.origins[d] {
		if o == repo {
			return true
		}
	}
	return false
}

// confirm records that the upstream said repo holds d.
func (p *Puller) confirm(d digest.Digest, repo string) {
	p.originsMu.Lock()
	defer p.originsMu.Unlock()
	os := p.origins[d]
	for _, o := range os {
		if o == repo {
			return
		}
	}
	if len(os) >= maxOriginsPerBlob {
		os = os[1:]
	}
	p.origins[d] = append(os, repo)
}

func (p *Puller) forgetOrigins(d digest.Digest) {
	p.originsMu.Lock()
	delete(p.origins, d)
	p.originsMu.Unlock()
}

// held reports whether this node has d cached or downloading.
func (p *Puller) held(d digest.Digest) bool {
	if _, ok := p.cache.Stat(d); ok {
		return true
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.downloads[d] != nil
}
