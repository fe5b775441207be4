package p2p

import (
	"encoding/json"
	"errors"
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
		ociError(w, http.StatusNotFound, "UNSUPPORTED",
			fmt.Sprintf("%s is not part of the OCI distribution API (/v2/...)", r.URL.Path))
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		ociError(w, http.StatusMethodNotAllowed, "UNSUPPORTED",
			"p2p-puller is a read-only mirror: push to the registry itself")
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
	return nil, fmt.Errorf("registry %q is not mirrored by this p2p-puller: add --registry %s=<URL>",
		ns, ns)
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
		b, err := io.ReadAll(io.LimitReader(resp.Body, maxManifestBytes+1))
		if err == nil && len(b) > maxManifestBytes {
			err = fmt.Errorf("manifest is over %d bytes", maxManifestBytes)
		}
		if err != nil {
			ociError(w, http.StatusBadGateway, "UNAVAILABLE",
				fmt.Sprintf("failed to read manifest from %s: %v", reg.URL.Host, err))
			return
		}
		key := credKey(r) + "|" + reg.Host + "/" + repo
		if _, err := p.grants.addManifest(key, b, p.cfg.MaxBlobBytes); err != nil {
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
// fetched a manifest of this repository naming the blob, or the upstream
// says so to a HEAD with those credentials (any other answer, e.g. 401 with
// its challenge, is relayed). A copy this node holds for another repository
// is served only once the upstream confirmed this one holds the blob too
// (origins.go): a cached blob is never handed to a client on the mere fact
// that this node has it, nor on a manifest that merely names it.
func (p *Puller) serveBlob(w http.ResponseWriter, r *http.Request, reg *Registry, repo, ref string) {
	d, err := digest.Parse(ref)
	if err != nil {
		ociError(w, http.StatusBadRequest, "DIGEST_INVALID",
			fmt.Sprintf("invalid blob digest %q: %v", ref, err))
		return
	}
	key := credKey(r) + "|" + reg.Host + "/" + repo
	job := blobJob{digest: d, up: p.clientUpstream(reg, repo, r), origin: reg.Host + "/" + repo}
	gr, manifest, ok := p.grants.lookup(key, d)
	job.size, job.manifest = gr.size, manifest
	// A HEAD is answered from what this node holds for this repository, else
	// by the upstream: a grant alone only says a manifest named the blob.
	held := p.held(d)
	if !ok || gr.size < 0 || (held && !p.confirmed(d, job.origin)) ||
		(r.Method == http.MethodHead && !held) {
		if job.size, ok = p.confirmUpstream(w, r, job, key); !ok {
			return
		}
	}
	w.Header().Set("Docker-Content-Digest", d.String())
	w.Header().Set("Accept-Ranges", "bytes")
	if r.Method == http.MethodHead {
		if size, hit := p.cache.Stat(d); hit {
			job.size = size
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.FormatInt(job.size, 10))
		return
	}
	for attempt := 0; ; attempt++ {
		err := p.sendBlob(w, r, job)
		if errors.Is(err, errUnconfirmed) && attempt == 0 {
			// Another repository's copy appeared meanwhile: ask the upstream.
			if job.size, ok = p.confirmUpstream(w, r, job, key); !ok {
				return
			}
			continue
		}
		if err != nil {
			blobError(w, d, err)
		}
		return
	}
}

// errUnconfirmed: the blob is here for another repository only.
var errUnconfirmed = errors.New("blob held for another repository only")

// confirmUpstream asks the upstream, with the client's credentials, whether
// job's repository holds the blob, and its size. Any answer but 200 is
// relayed to the client as a complete OCI error response (false).
func (p *Puller) confirmUpstream(w http.ResponseWriter, r *http.Request, job blobJob,
	key string) (int64, bool) {
	d := job.digest
	resp, err := job.up.headBlob(r.Context(), d)
	if err != nil {
		ociError(w, http.StatusBadGateway, "UNAVAILABLE",
			fmt.Sprintf("%v (and no manifest fetched with these credentials names %s)", err, d))
		return 0, false
	}
	if resp.StatusCode != http.StatusOK {
		p.m.denied.WithLabelValues("client").Inc()
		blobError(w, d, &upstreamStatusError{host: job.up.reg.URL.Host, status: resp.StatusCode,
			header: resp.Header})
		return 0, false
	}
	size := resp.ContentLength
	switch {
	case size < 0:
		ociError(w, http.StatusBadGateway, "UNAVAILABLE",
			fmt.Sprintf("upstream %s answered a HEAD of %s without a Content-Length", job.up.reg.URL.Host, d))
		return 0, false
	case size > p.cfg.MaxBlobBytes:
		ociError(w, http.StatusBadGateway, "SIZE_INVALID",
			fmt.Sprintf("blob %s is %d bytes, over this mirror's limit of %d (--max-blob-size): pull it "+
				"from %s directly",
				d, size, p.cfg.MaxBlobBytes, job.up.reg.URL.Host))
		return 0, false
	}
	p.grants.addDirect(key, d, size)
	if p.held(d) {
		p.confirm(d, job.origin)
	}
	return size, true
}

// sendBlob sends job's blob: from the cache, or streamed while it downloads.
// It returns an error only when it has written nothing.
func (p *Puller) sendBlob(w http.ResponseWriter, r *http.Request, job blobJob) error {
	d := job.digest
	_, hit := p.cache.Stat(d)
	p.m.blobRequests.WithLabelValues(map[bool]string{true: "hit", false: "miss"}[hit]).Inc()
	if !hit && job.size > 0 && r.Header.Get("Range") == "" {
		dl, err := p.startDownload(r.Context(), job)
		if err != nil {
			return err
		}
		if dl != nil {
			return p.streamDownload(w, r, dl)
		}
	}
	if err := p.ensureBlob(r.Context(), job); err != nil {
		return err
	}
	if !p.confirmed(d, job.origin) {
		return errUnconfirmed
	}
	f, size, err := p.cache.Open(d)
	if err != nil {
		return err
	}
	defer f.Close()
	if hit {
		p.m.bytes.WithLabelValues("cache").Add(float64(size))
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	http.ServeContent(w, r, "", time.Time{}, f)
	return nil
}

// upstreamStatusError is an upstream's refusal (401, 404, ...) of a blob.
type upstreamStatusError struct {
	host   string
	status int
	header http.Header
}

func (e *upstreamStatusError) Error() string {
	return fmt.Sprintf("upstream %s answered %d %s", e.host, e.status, http.StatusText(e.status))
}

// blobError answers a failed blob request with a complete OCI error
// response: an upstream's refusal keeps its status (and a 401 its
// challenge), anything else is a 502.
func blobError(w http.ResponseWriter, d digest.Digest, err error) {
	var ue *upstreamStatusError
	if !errors.As(err, &ue) {
		ociError(w, http.StatusBadGateway, "UNAVAILABLE", fmt.Sprintf("failed to fetch blob %s: %v", d, err))
		return
	}
	code := "UNKNOWN"
	switch ue.status {
	case http.StatusUnauthorized:
		code = "UNAUTHORIZED"
		if v := ue.header.Values("WWW-Authenticate"); len(v) > 0 {
			w.Header()["WWW-Authenticate"] = v
		}
	case http.StatusForbidden:
		code = "DENIED"
	case http.StatusNotFound:
		code = "BLOB_UNKNOWN"
	case http.StatusTooManyRequests:
		code = "TOOMANYREQUESTS"
		if v := ue.header.Get("Retry-After"); v != "" {
			w.Header().Set("Retry-After", v)
		}
	}
	status := ue.status
	if status < 400 {
		status = http.StatusBadGateway // a redirect or other answer a mirror cannot relay as is
	}
	ociError(w, status, code, fmt.Sprintf("blob %s: %v", d, err))
}

// streamDownload sends a blob to the client while it is being assembled,
// piece by piece in order; each piece was verified when it arrived. It
// commits to 200 only once the first piece is here: a download that fails
// before (the upstream 404s the blob, say) is returned as an error with
// nothing written. The last piece is held back until the whole blob has
// matched its digest: if it does not, the connection is cut, so the client
// can never complete (and store) a blob that does not verify; its retry gets
// the refetched blob. Streaming overlaps the client's own reading and
// hashing with the download.
func (p *Puller) streamDownload(w http.ResponseWriter, r *http.Request, dl *download) error {
	dl.mu.Lock()
	resets := dl.resets
	dl.mu.Unlock()
	if err := p.awaitFirstPiece(r, dl); err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/octet-stream")
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
			return nil // the client went away
		}
	}
	return nil
}

// awaitFirstPiece waits until piece 0 of dl is here or dl ended; it returns
// dl's error when dl failed first, or the client's when it went away.
func (p *Puller) awaitFirstPiece(r *http.Request, dl *download) error {
	for {
		_, have, err := dl.awaitPiece(r.Context(), 0, time.Minute)
		switch {
		case err != nil:
			return err
		case have:
			return nil
		case isDone(dl.done):
			dl.mu.Lock()
			defer dl.mu.Unlock()
			return dl.err // nil: the blob is cached, pieces come from there
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
	_ = json.NewEncoder(w).Encode(map[string]any{"errors": []map[string]string{{"code": code,
		"message": msg}}}) // client gone
}
