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

	"github.com/berth-dev/berth/internal/httpjson"
	"github.com/berth-dev/berth/pkg/p2p/peers"
)

// Peer API (on --peer-address, signed with the cluster's peer key):
//
//	POST /p2p/v1/track/{digest}                  register as having/fetching; returns earlier nodes
//	POST /p2p/v1/grants?repo=<registry/repo>     present a manifest (body) fetched from that repository
//
// GET /p2p/v1/blobs/{digest}/pieces/{index} one piece (?size=&piece=&wait=[&stream=1]),
// X-Berth-Manifest names the grant; with stream=1 (over HTTP/2) a piece still arriving is sent as
// it lands, its digest in a trailer
//
// POST /p2p/v1/preheat {"image": "..."}: pull an image's blobs into this node's cache
const (
	hdrNode        = "X-Berth-Node"
	hdrTime        = "X-Berth-Time"
	hdrNonce       = "X-Berth-Nonce"
	hdrSig         = "X-Berth-Signature"
	hdrManifest    = "X-Berth-Manifest"
	hdrPieceDigest = "X-Berth-Piece-Digest"
	// maxClockSkew is how far a request's time may be from this node's
	// clock; within it, each nonce is accepted once.
	maxClockSkew = time.Minute
	maxManifest  = 4 << 20
	maxPeerBody  = 64 << 10 // every request but a grant's manifest
)

func (p *Puller) peerHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /p2p/v1/track/{digest}", p.handleTrack)
	mux.HandleFunc("POST /p2p/v1/grants", p.handleGrant)
	mux.HandleFunc("GET /p2p/v1/blobs/{digest}/pieces/{index}", p.handlePiece)
	mux.HandleFunc("POST /p2p/v1/preheat", p.handlePreheat)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		status, err := p.verifySignature(r)
		if err != nil {
			p.m.denied.WithLabelValues("peer").Inc()
			http.Error(w, err.Error(), status)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// sign computes a request's signature: HMAC-SHA256 with the peer key over
// everything that decides what the request does (node, time, nonce, method,
// path, query, the X-Berth-Manifest grant and a hash of the body), so a
// captured request can neither be replayed (the nonce is single-use within
// the clock window) nor altered (another piece size, manifest or image).
func sign(key []byte, node, ts, nonce, method, path, query, manifest string, body []byte) string {
	bodySum := sha256.Sum256(body)
	m := hmac.New(sha256.New, key)
	fmt.Fprintf(m, "berth-p2p-v2\n%s\n%s\n%s\n%s\n%s\n%s\n%s\n%x", node, ts, nonce, method, path,
		query, manifest, bodySum)
	return hex.EncodeToString(m.Sum(nil))
}

// verifySignature checks a peer request's signature and nonce; it reads the
// body (bounded) to hash it and puts it back for the handler.
func (p *Puller) verifySignature(r *http.Request) (int, error) {
	node, ts, nonce := r.Header.Get(hdrNode), r.Header.Get(hdrTime), r.Header.Get(hdrNonce)
	sec, err := strconv.ParseInt(ts, 10, 64)
	if node == "" || err != nil || len(nonce) < 16 || len(nonce) > 64 {
		return http.StatusUnauthorized, fmt.Errorf("unsigned peer request: %s, %s and %s (16 to 64 "+
			"characters) headers are required", hdrNode, hdrTime, hdrNonce)
	}
	if d := time.Since(time.Unix(sec, 0)); d > maxClockSkew || d < -maxClockSkew {
		return http.StatusUnauthorized, fmt.Errorf("peer request from %q is %v off this node's clock "+
			"(max %v)", node, d.Round(time.Second), maxClockSkew)
	}
	limit := int64(maxPeerBody)
	if r.URL.Path == "/p2p/v1/grants" {
		limit = maxManifest
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		return http.StatusBadRequest, fmt.Errorf("failed to read peer request body: %w", err)
	}
	if int64(len(body)) > limit {
		return http.StatusRequestEntityTooLarge, fmt.Errorf("peer request body is over %d bytes", limit)
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	want := sign(p.cfg.PeerKey, node, ts, nonce, r.Method, r.URL.Path, r.URL.RawQuery,
		r.Header.Get(hdrManifest), body)
	if !hmac.Equal([]byte(want), []byte(r.Header.Get(hdrSig))) {
		return http.StatusUnauthorized, fmt.Errorf("bad signature from %q: is it using the same peer key?", node)
	}
	if err := p.nonces.use(node+"|"+nonce, time.Unix(sec, 0)); err != nil {
		return http.StatusUnauthorized, fmt.Errorf("peer request from %q: %w", node, err)
	}
	return http.StatusOK, nil
}

func (p *Puller) handleTrack(w http.ResponseWriter, r *http.Request) {
	d, err := digest.Parse(r.PathValue("digest"))
	if err != nil {
		http.Error(w, fmt.Sprintf("invalid digest: %v", err), http.StatusBadRequest)
		return
	}
	var who peers.Peer
	if err := json.NewDecoder(io.LimitReader(r.Body, 4096)).Decode(&who); err != nil ||
		who.Name != r.Header.Get(hdrNode) || who.Addr == "" {
		http.Error(w, "body must be {\"Name\": <the signing node>, \"Addr\": host:port}",
			http.StatusBadRequest)
		return
	}
	httpjson.Write(w, p.tracker.register(d, who))
}

func (p *Puller) handleGrant(w http.ResponseWriter, r *http.Request) {
	repo := r.URL.Query().Get("repo")
	if repo == "" {
		http.Error(w, "want /p2p/v1/grants?repo=<registry/repo the manifest was fetched from>",
			http.StatusBadRequest)
		return
	}
	body, err := io.ReadAll(r.Body) // bounded by verifySignature
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	md, err := p.grants.addPeer(r.Header.Get(hdrNode), repo, body, p.cfg.MaxBlobBytes)
	if err != nil {
		http.Error(w, fmt.Sprintf("not a manifest: %v", err), http.StatusBadRequest)
		return
	}
	httpjson.Write(w, map[string]string{"digest": md.String()})
}

// pieceRequest is a parsed, bounded piece request.
type pieceRequest struct {
	digest          digest.Digest
	index           int
	size, pieceSize int64
	wait            time.Duration
	// stream: the asker reads a piece's digest from a trailer, so a piece
	// still arriving here may be sent as it lands. Pullers before it did not.
	stream bool
}

// parsePieceRequest checks every number a peer sends: sizes within the
// node's bounds and the piece inside the blob.
func (p *Puller) parsePieceRequest(r *http.Request) (pieceRequest, error) {
	var pr pieceRequest
	var err error
	q := r.URL.Query()
	if pr.digest, err = digest.Parse(r.PathValue("digest")); err != nil {
		return pr, fmt.Errorf("invalid digest: %w", err)
	}
	i, ierr := strconv.Atoi(r.PathValue("index"))
	size, serr := strconv.ParseInt(q.Get("size"), 10, 64)
	pieceSize, perr := strconv.ParseInt(q.Get("piece"), 10, 64)
	wait, werr := time.ParseDuration(q.Get("wait"))
	switch {
	case ierr != nil || serr != nil || perr != nil || werr != nil:
		return pr, fmt.Errorf("want /p2p/v1/blobs/<digest>/pieces/<index>?size=<blob " +
			"bytes>&piece=<piece bytes>&wait=<duration>, e.g. ?size=5000000&piece=1048576&wait=15s")
	case pieceSize < minPieceSize || pieceSize > maxPieceSize:
		return pr, fmt.Errorf("piece=%d is out of range: want %d to %d", pieceSize, minPieceSize,
			maxPieceSize)
	case size < 1 || size > p.cfg.MaxBlobBytes:
		return pr, fmt.Errorf("size=%d is out of range: want 1 to %d", size, p.cfg.MaxBlobBytes)
	case i < 0 || int64(i) >= (size+pieceSize-1)/pieceSize:
		return pr, fmt.Errorf("piece %d is outside a %d-byte blob of %d-byte pieces", i, size, pieceSize)
	}
	pr.index, pr.size, pr.pieceSize, pr.wait = i, size, pieceSize, min(max(wait, 0), p.cfg.PieceWait)
	pr.stream = q.Get("stream") == "1"
	return pr, nil
}

func (p *Puller) handlePiece(w http.ResponseWriter, r *http.Request) {
	pr, err := p.parsePieceRequest(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	d, i := pr.digest, pr.index
	md, _ := digest.Parse(r.Header.Get(hdrManifest))
	repo, ok := p.grants.peerAllowed(r.Header.Get(hdrNode), md, d)
	if !ok {
		p.m.denied.WithLabelValues("peer").Inc()
		http.Error(w, fmt.Sprintf("no grant for %s: POST a manifest referencing it to /p2p/v1/grants "+
			"first", d), http.StatusForbidden)
		return
	}
	if !p.confirmed(d, repo) {
		p.m.denied.WithLabelValues("peer").Inc()
		http.Error(w, fmt.Sprintf("this node holds %s for other repositories than %s only", d, repo),
			http.StatusForbidden)
		return
	}
	// Over HTTP/2 a piece still arriving here is passed on as it lands, its
	// digest in a trailer, to an asker that reads trailers. (A test fault
	// rewrites whole pieces: it waits.)
	stream := pr.stream && r.ProtoMajor >= 2 && p.cfg.uploadFault == nil
	src, err := p.readPiece(r.Context(), d, pr.size, pr.pieceSize, i, pr.wait, stream)
	switch {
	case err != nil:
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	case src == nil:
		http.Error(w, "piece not available (yet)", http.StatusNotFound)
		return
	}
	defer src.close()
	var out io.Writer = w
	if p.upLim != nil {
		out = &limitedWriter{ctx: r.Context(), w: w, lim: p.upLim}
	}
	if src.stream != nil {
		p.sendStream(r.Context(), w, out, src)
		return
	}
	if p.cfg.uploadFault != nil {
		data := make([]byte, src.n)
		if _, err := io.ReadFull(src.r, data); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		if h := p.cfg.uploadFault(data); h != "" {
			src.hash = h
		}
		src.r = bytes.NewReader(data)
	}
	w.Header().Set(hdrPieceDigest, src.hash)
	w.Header().Set("Content-Type", "application/octet-stream") // no sniffing: the body goes out untouched
	w.Header().Set("Content-Length", strconv.FormatInt(src.n, 10))
	// From a cached file without a limiter this is sendfile: the response
	// writer takes the file (behind CopyN's LimitedReader) as it is.
	n, _ := io.CopyN(out, src.r, src.n) // a short copy means the peer went away: it retries
	p.m.uploaded.Add(float64(n))
	if n == src.n {
		p.m.piecesSent.WithLabelValues("whole").Inc()
	}
}

// sendStream passes on a piece while it arrives here: each chunk as it
// lands in the download's file, then the piece's digest in a trailer once
// this node verified it. If the piece fails here, the stream is reset and the
// peer drops what it got.
func (p *Puller) sendStream(ctx context.Context, w http.ResponseWriter, out io.Writer,
	src *pieceSource) {
	w.Header().Set("Trailer", hdrPieceDigest)
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(src.n, 10))
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	_ = rc.Flush() // the headers now: the peer knows the piece is coming
	var sent int64
	defer func() { p.m.uploaded.Add(float64(sent)) }()
	for {
		filled, state, moved := src.stream.snapshot()
		if sent < filled {
			n, err := io.Copy(out, io.NewSectionReader(src.dl.f, src.off+sent, filled-sent))
			sent += n
			if err != nil {
				return // the peer went away: it retries
			}
			_ = rc.Flush() // best effort: a failed flush shows as a failed write next
			continue
		}
		switch state {
		case streamDone:
			if h := src.dl.pieceHash(src.index); h != "" {
				w.Header().Set(hdrPieceDigest, h)
				p.m.piecesSent.WithLabelValues("streamed").Inc()
				return
			}
			panic(http.ErrAbortHandler) // the download restarted meanwhile: the peer asks again
		case streamFailed:
			panic(http.ErrAbortHandler) // reset the stream: the peer drops the piece
		}
		select {
		case <-moved:
		case <-ctx.Done():
			return
		}
	}
}

// pieceSource is one piece ready to send: exactly n bytes from r, with its
// digest; or, when stream is set, piece index of dl still arriving here.
type pieceSource struct {
	r     io.Reader
	n     int64
	hash  string
	close func()

	stream *pieceStream
	dl     *download
	index  int
	off    int64
}

// readPiece returns piece i from a download in progress (waiting for it,
// with streams only until it starts arriving) or from the cache; nil means
// this node does not have it.
func (p *Puller) readPiece(ctx context.Context, d digest.Digest, size, pieceSize int64, i int,
	wait time.Duration, streams bool) (*pieceSource, error) {
	p.mu.Lock()
	dl := p.downloads[d]
	p.mu.Unlock()
	if dl != nil && dl.size == size && dl.pieceSize == pieceSize {
		if wait > 0 {
			dl.want(i)
		}
		hash, st, ok, err := dl.awaitPieceOrStream(ctx, i, wait, streams)
		if err != nil {
			return nil, err
		}
		if ok {
			off, n := dl.pieceRange(i)
			return &pieceSource{r: io.NewSectionReader(dl.f, off, n), n: n, hash: hash, close: func() {},
				stream: st, dl: dl, index: i, off: off}, nil
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
func (p *Puller) cachedPieceSum(f *os.File, d digest.Digest, size, pieceSize int64, i int) (string,
	error) {
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
	httpjson.Write(w, res)
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
