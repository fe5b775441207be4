package p2p

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	"k8s.io/klog/v2"
)

// routeRe splits /v2/<repo>/(manifests|blobs)/<reference>.
var routeRe = regexp.MustCompile(`^/v2/(.+)/(manifests|blobs)/([^/]+)$`)

const maxManifestBytes = 16 << 20

// ServeHTTP is the client-facing OCI distribution API (pull only).
func (p *Puller) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !strings.HasPrefix(r.URL.Path, "/v2") {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		ociError(w, http.StatusMethodNotAllowed, "UNSUPPORTED", "p2p-puller is a read-only mirror: push to the registry itself")
		return
	}
	reg, err := p.registryFor(r.URL.Query().Get("ns"))
	if err != nil {
		ociError(w, http.StatusNotFound, "NAME_UNKNOWN", err.Error())
		return
	}
	m := routeRe.FindStringSubmatch(r.URL.Path)
	switch {
	case m != nil && m[2] == "blobs":
		p.serveBlob(w, r, reg, m[1], m[3])
	case m != nil && m[2] == "manifests":
		p.proxy(w, r, reg, m[1], "manifest")
	default:
		p.proxy(w, r, reg, "", "other")
	}
}

func (p *Puller) registryFor(ns string) (*Registry, error) {
	if ns == "" {
		return &p.cfg.Registries[0], nil
	}
	for i := range p.cfg.Registries {
		if p.cfg.Registries[i].Host == ns {
			return &p.cfg.Registries[i], nil
		}
	}
	return nil, fmt.Errorf("registry %q is not mirrored by this p2p-puller: add --registry %s=<URL>", ns, ns)
}

func (p *Puller) clientUpstream(reg *Registry, repo string, r *http.Request) *upstream {
	return &upstream{reg: reg, repo: repo, client: p.client, authz: r.Header.Get("Authorization"),
		count: func(kind string) { p.m.upstreamRequests.WithLabelValues(kind).Inc() }}
}

// proxy forwards a request to the upstream with the client's own
// credentials and relays the answer, auth challenges included. A manifest
// fetched this way grants those credentials the blobs it references.
func (p *Puller) proxy(w http.ResponseWriter, r *http.Request, reg *Registry, repo, kind string) {
	q := r.URL.Query()
	q.Del("ns")
	target := *reg.URL
	target.Path = reg.URL.Path + r.URL.Path
	target.RawQuery = q.Encode()
	hdr := http.Header{}
	for _, k := range []string{"Accept", "User-Agent", "If-None-Match"} {
		if v := r.Header.Values(k); len(v) > 0 {
			hdr[k] = v
		}
	}
	up := p.clientUpstream(reg, repo, r)
	resp, err := up.do(r.Context(), kind, r.Method, target.String(), hdr)
	if err != nil {
		ociError(w, http.StatusBadGateway, "UNAVAILABLE", err.Error())
		return
	}
	defer resp.Body.Close()
	var body io.Reader = resp.Body
	if kind == "manifest" && r.Method == http.MethodGet && resp.StatusCode == http.StatusOK {
		b, err := io.ReadAll(io.LimitReader(resp.Body, maxManifestBytes))
		if err != nil {
			ociError(w, http.StatusBadGateway, "UNAVAILABLE", fmt.Sprintf("failed to read manifest from %s: %v", reg.URL.Host, err))
			return
		}
		key := credKey(r) + "|" + reg.Host + "/" + repo
		if _, err := p.grants.addManifest(key, b); err != nil {
			klog.FromContext(r.Context()).V(2).Info("Manifest grants nothing", "repo", repo, "err", err)
		}
		body = strings.NewReader(string(b))
	}
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, body) // the client sees a short body and retries
}

// serveBlob serves a blob to a client that may read it: its credentials
// fetched a manifest referencing the blob, or the upstream says so to a HEAD
// with those credentials (any other answer, e.g. 401 with its challenge, is
// relayed). A cached blob is never handed to a client on the mere fact that
// this node has it: that is what keeps private images private.
func (p *Puller) serveBlob(w http.ResponseWriter, r *http.Request, reg *Registry, repo, ref string) {
	d, err := digest.Parse(ref)
	if err != nil {
		ociError(w, http.StatusBadRequest, "DIGEST_INVALID", fmt.Sprintf("invalid blob digest %q: %v", ref, err))
		return
	}
	ctx := r.Context()
	key := credKey(r) + "|" + reg.Host + "/" + repo
	up := p.clientUpstream(reg, repo, r)
	gr, manifest, ok := p.grants.lookup(key, d)
	if !ok || gr.size < 0 {
		resp, err := up.headBlob(ctx, d)
		if err != nil {
			ociError(w, http.StatusBadGateway, "UNAVAILABLE", fmt.Sprintf("%v (and no manifest fetched with these credentials references %s)", err, d))
			return
		}
		if resp.StatusCode != http.StatusOK || resp.ContentLength < 0 {
			p.m.denied.WithLabelValues("client").Inc()
			for k, v := range resp.Header {
				w.Header()[k] = v
			}
			w.WriteHeader(resp.StatusCode)
			return
		}
		p.grants.addDirect(key, d, resp.ContentLength)
		gr = grant{size: resp.ContentLength}
	}
	w.Header().Set("Docker-Content-Digest", d.String())
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Accept-Ranges", "bytes")
	if r.Method == http.MethodHead {
		w.Header().Set("Content-Length", strconv.FormatInt(gr.size, 10))
		return
	}
	_, hit := p.cache.Stat(d)
	p.m.blobRequests.WithLabelValues(map[bool]string{true: "hit", false: "miss"}[hit]).Inc()
	job := blobJob{digest: d, size: gr.size, up: up, manifest: manifest}
	if !hit && gr.size > 0 && r.Header.Get("Range") == "" {
		dl, err := p.startDownload(job)
		if err != nil {
			ociError(w, http.StatusBadGateway, "UNAVAILABLE", fmt.Sprintf("failed to fetch blob %s: %v", d, err))
			return
		}
		if dl != nil {
			p.streamDownload(w, r, dl)
			return
		}
	}
	if err := p.ensureBlob(ctx, job); err != nil {
		ociError(w, http.StatusBadGateway, "UNAVAILABLE", fmt.Sprintf("failed to fetch blob %s: %v", d, err))
		return
	}
	f, size, err := p.cache.Open(d)
	if err != nil {
		ociError(w, http.StatusInternalServerError, "UNKNOWN", err.Error())
		return
	}
	defer f.Close()
	if hit {
		p.m.bytes.WithLabelValues("cache").Add(float64(size))
	}
	http.ServeContent(w, r, "", time.Time{}, f)
}

// streamDownload sends a blob to the client while it is being assembled,
// piece by piece in order; each piece was verified when it arrived. The
// last piece is held back until the whole blob has matched its digest: if
// it does not, the connection is cut, so the client can never complete (and
// store) a blob that does not verify; its retry gets the refetched blob.
// Streaming overlaps the client's own reading and hashing with the download.
func (p *Puller) streamDownload(w http.ResponseWriter, r *http.Request, dl *download) {
	dl.mu.Lock()
	resets := dl.resets
	dl.mu.Unlock()
	w.Header().Set("Content-Length", strconv.FormatInt(dl.size, 10))
	w.WriteHeader(http.StatusOK)
	buf := p.bufs.get(dl.pieceSize)
	defer p.bufs.put(buf)
	for i := range dl.n {
		if i == dl.n-1 {
			<-dl.done
			dl.mu.Lock()
			ok := dl.err == nil && dl.resets == resets
			dl.mu.Unlock()
			if !ok {
				panic(http.ErrAbortHandler) // cut the connection: the client retries
			}
		}
		var data []byte
		for data == nil {
			b, _, have, err := dl.waitPiece(r.Context(), i, time.Minute, buf)
			if err != nil || (!have && isDone(dl.done)) {
				if b, have = p.cachedPiece(dl, i, buf); !have {
					panic(http.ErrAbortHandler)
				}
			}
			data = b
		}
		if _, err := w.Write(data); err != nil {
			return // the client went away
		}
	}
}

// cachedPiece reads piece i of a finished download from the cache into buf.
func (p *Puller) cachedPiece(dl *download, i int, buf []byte) ([]byte, bool) {
	if !isDone(dl.done) || dl.err != nil {
		return nil, false
	}
	f, size, err := p.cache.Open(dl.digest)
	if err != nil || size != dl.size {
		return nil, false
	}
	defer f.Close()
	off, n := dl.pieceRange(i)
	if _, err := f.ReadAt(buf[:n], off); err != nil {
		return nil, false
	}
	return buf[:n], true
}

func isDone(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// ociError writes an error body in the distribution-spec format.
func ociError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"errors": []map[string]string{{"code": code, "message": msg}}}) // client gone
}
