package p2p

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/time/rate"
	"k8s.io/klog/v2"

	"github.com/berth-dev/berth/pkg/p2p/peers"
)

// Peer API (on --peer-address, signed with the cluster's peer key):
//
//	POST /p2p/v1/track/{digest}                  register as having/fetching; returns earlier nodes
//	POST /p2p/v1/grants                          present a manifest (body) fetched from the upstream
//	GET  /p2p/v1/blobs/{digest}/pieces/{index}   one piece (?size=&piece=&wait=), X-Berth-Manifest names the grant
//	POST /p2p/v1/preheat                         {"image": "..."}: pull an image's blobs into this node's cache
const (
	hdrNode        = "X-Berth-Node"
	hdrTime        = "X-Berth-Time"
	hdrSig         = "X-Berth-Signature"
	hdrManifest    = "X-Berth-Manifest"
	hdrPieceDigest = "X-Berth-Piece-Digest"
	maxClockSkew   = 5 * time.Minute
	maxManifest    = 4 << 20
)

func (p *Puller) peerHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /p2p/v1/track/{digest}", p.handleTrack)
	mux.HandleFunc("POST /p2p/v1/grants", p.handleGrant)
	mux.HandleFunc("GET /p2p/v1/blobs/{digest}/pieces/{index}", p.handlePiece)
	mux.HandleFunc("POST /p2p/v1/preheat", p.handlePreheat)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := p.verifySignature(r); err != nil {
			p.m.denied.WithLabelValues("peer").Inc()
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// sign computes the request signature: HMAC-SHA256 over node, time, method
// and path with the peer key, so only pullers can use the peer API and a
// captured signature expires after maxClockSkew.
func sign(key []byte, node, ts, method, path string) string {
	m := hmac.New(sha256.New, key)
	fmt.Fprintf(m, "%s\n%s\n%s\n%s", node, ts, method, path)
	return hex.EncodeToString(m.Sum(nil))
}

func (p *Puller) verifySignature(r *http.Request) error {
	node, ts := r.Header.Get(hdrNode), r.Header.Get(hdrTime)
	sec, err := strconv.ParseInt(ts, 10, 64)
	if node == "" || err != nil {
		return fmt.Errorf("unsigned peer request: %s and %s headers are required", hdrNode, hdrTime)
	}
	if d := time.Since(time.Unix(sec, 0)); d > maxClockSkew || d < -maxClockSkew {
		return fmt.Errorf("peer request from %q is %v off this node's clock (max %v)", node, d.Round(time.Second), maxClockSkew)
	}
	want := sign(p.cfg.PeerKey, node, ts, r.Method, r.URL.Path)
	if !hmac.Equal([]byte(want), []byte(r.Header.Get(hdrSig))) {
		return fmt.Errorf("bad signature from %q: is it using the same peer key?", node)
	}
	return nil
}

func (p *Puller) handleTrack(w http.ResponseWriter, r *http.Request) {
	d, err := digest.Parse(r.PathValue("digest"))
	if err != nil {
		http.Error(w, fmt.Sprintf("invalid digest: %v", err), http.StatusBadRequest)
		return
	}
	var who peers.Peer
	if err := json.NewDecoder(io.LimitReader(r.Body, 4096)).Decode(&who); err != nil || who.Name != r.Header.Get(hdrNode) || who.Addr == "" {
		http.Error(w, "body must be {\"Name\": <the signing node>, \"Addr\": host:port}", http.StatusBadRequest)
		return
	}
	writeJSON(w, p.tracker.register(d, who))
}

func (p *Puller) handleGrant(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxManifest))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	md, err := p.grants.addPeer(r.Header.Get(hdrNode), body)
	if err != nil {
		http.Error(w, fmt.Sprintf("not a manifest: %v", err), http.StatusBadRequest)
		return
	}
	writeJSON(w, map[string]string{"digest": md.String()})
}

func (p *Puller) handlePiece(w http.ResponseWriter, r *http.Request) {
	d, err := digest.Parse(r.PathValue("digest"))
	i, ierr := strconv.Atoi(r.PathValue("index"))
	q := r.URL.Query()
	size, serr := strconv.ParseInt(q.Get("size"), 10, 64)
	pieceSize, perr := strconv.ParseInt(q.Get("piece"), 10, 64)
	wait, _ := time.ParseDuration(q.Get("wait"))
	if err != nil || ierr != nil || serr != nil || perr != nil || pieceSize <= 0 || i < 0 || int64(i)*pieceSize >= max(size, 1) {
		http.Error(w, "want /p2p/v1/blobs/<digest>/pieces/<index>?size=<blob bytes>&piece=<piece bytes>&wait=<duration>", http.StatusBadRequest)
		return
	}
	md, _ := digest.Parse(r.Header.Get(hdrManifest))
	if !p.grants.peerAllowed(r.Header.Get(hdrNode), md, d) {
		p.m.denied.WithLabelValues("peer").Inc()
		http.Error(w, fmt.Sprintf("no grant for %s: POST a manifest referencing it to /p2p/v1/grants first", d), http.StatusForbidden)
		return
	}
	src, err := p.readPiece(r.Context(), d, size, pieceSize, i, min(wait, p.cfg.PieceWait))
	switch {
	case err != nil:
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	case src == nil:
		http.Error(w, "piece not available (yet)", http.StatusNotFound)
		return
	}
	defer src.close()
	if p.cfg.FaultCorruptUploads || p.cfg.FaultLyingUploads {
		data := make([]byte, src.n)
		if _, err := io.ReadFull(src.r, data); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		data[len(data)/2] ^= 0xff
		if p.cfg.FaultLyingUploads {
			sum := sha256.Sum256(data)
			src.hash = hex.EncodeToString(sum[:])
		}
		src.r = bytes.NewReader(data)
	}
	w.Header().Set(hdrPieceDigest, src.hash)
	w.Header().Set("Content-Type", "application/octet-stream") // no sniffing: the body goes out untouched
	w.Header().Set("Content-Length", strconv.FormatInt(src.n, 10))
	var out io.Writer = w
	if p.upLim != nil {
		out = &limitedWriter{ctx: r.Context(), w: w, lim: p.upLim}
	}
	// From a cached file without a limiter this is sendfile: the response
	// writer takes the file (behind CopyN's LimitedReader) as it is.
	n, _ := io.CopyN(out, src.r, src.n) // a short copy means the peer went away: it retries
	p.m.uploaded.Add(float64(n))
}

// pieceSource is one piece ready to send: exactly n bytes from r, with its digest.
type pieceSource struct {
	r     io.Reader
	n     int64
	hash  string
	close func()
}

// readPiece returns piece i from a download in progress (waiting for it) or
// from the cache; nil means this node does not have it.
func (p *Puller) readPiece(ctx context.Context, d digest.Digest, size, pieceSize int64, i int, wait time.Duration) (*pieceSource, error) {
	p.mu.Lock()
	dl := p.downloads[d]
	p.mu.Unlock()
	if dl != nil && dl.size == size && dl.pieceSize == pieceSize {
		if wait > 0 {
			dl.want(i)
		}
		hash, ok, err := dl.awaitPiece(ctx, i, wait)
		if err != nil {
			return nil, err
		}
		if ok {
			off, n := dl.pieceRange(i)
			return &pieceSource{r: io.NewSectionReader(dl.f, off, n), n: n, hash: hash, close: func() {}}, nil
		}
	}
	f, csize, err := p.cache.Open(d)
	if err != nil {
		return nil, nil
	}
	if csize != size {
		_ = f.Close()
		return nil, nil
	}
	off := int64(i) * pieceSize
	n := min(pieceSize, size-off)
	hash, err := p.cachedPieceSum(f, d, size, pieceSize, i)
	if err == nil {
		_, err = f.Seek(off, io.SeekStart)
	}
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("failed to read piece %d of cached %s: %w", i, d, err)
	}
	return &pieceSource{r: f, n: n, hash: hash, close: func() { _ = f.Close() }}, nil
}

// pieceSums are the piece digests of one committed blob at one piece size.
type pieceSums struct {
	pieceSize int64
	sums      []string // "" until known
}

func (p *Puller) storeSums(dl *download) {
	dl.mu.Lock()
	sums := append([]string(nil), dl.hashes...)
	dl.mu.Unlock()
	p.sumsMu.Lock()
	p.sums[dl.digest] = &pieceSums{pieceSize: dl.pieceSize, sums: sums}
	p.sumsMu.Unlock()
}

func (p *Puller) dropSums(d digest.Digest) {
	p.sumsMu.Lock()
	delete(p.sums, d)
	p.sumsMu.Unlock()
}

// cachedPieceSum returns piece i's digest: recorded when the blob was
// verified, else (a blob cached before a restart) hashed once from the
// cached file and remembered; a peer asking with another piece size gets
// each piece hashed as it asks.
func (p *Puller) cachedPieceSum(f *os.File, d digest.Digest, size, pieceSize int64, i int) (string, error) {
	p.sumsMu.Lock()
	ps := p.sums[d]
	if ps != nil && ps.pieceSize == pieceSize && ps.sums[i] != "" {
		h := ps.sums[i]
		p.sumsMu.Unlock()
		return h, nil
	}
	p.sumsMu.Unlock()
	off := int64(i) * pieceSize
	buf := p.bufs.get(min(pieceSize, size-off))
	defer p.bufs.put(buf)
	if _, err := f.ReadAt(buf, off); err != nil && err != io.EOF {
		return "", err
	}
	sum := sha256.Sum256(buf)
	h := hex.EncodeToString(sum[:])
	if pieceSize != p.cfg.PieceSize {
		return h, nil // only the cluster's own piece size is worth a table
	}
	p.sumsMu.Lock()
	defer p.sumsMu.Unlock()
	if ps = p.sums[d]; ps == nil || ps.pieceSize != pieceSize {
		ps = &pieceSums{pieceSize: pieceSize, sums: make([]string, (size+pieceSize-1)/pieceSize)}
		p.sums[d] = ps
	}
	ps.sums[i] = h
	return h, nil
}

func (p *Puller) handlePreheat(w http.ResponseWriter, r *http.Request) {
	var req PreheatRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 4096)).Decode(&req); err != nil || req.Image == "" {
		http.Error(w, "body must be {\"image\": \"registry/repo:tag\"}", http.StatusBadRequest)
		return
	}
	res, err := p.Preheat(r.Context(), req.Image)
	if err != nil {
		klog.FromContext(r.Context()).Error(err, "Preheat failed", "image", req.Image)
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	writeJSON(w, res)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v) // the peer sees a short body and retries
}

// limitedWriter throttles writes through the node's upload limiter.
type limitedWriter struct {
	ctx context.Context
	w   io.Writer
	lim *rate.Limiter
}

func (l *limitedWriter) Write(b []byte) (int, error) {
	if l.lim == nil {
		return l.w.Write(b)
	}
	written := 0
	for len(b) > 0 {
		n := min(len(b), l.lim.Burst())
		if err := l.lim.WaitN(l.ctx, n); err != nil {
			return written, fmt.Errorf("rate limiter: %w", err)
		}
		m, err := l.w.Write(b[:n])
		written += m
		if err != nil {
			return written, err
		}
		b = b[n:]
	}
	return written, nil
}
