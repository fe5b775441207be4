package p2p

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"
	"k8s.io/klog/v2"

	"github.com/berth-dev/berth/pkg/p2p/peers"
)

var (
	errCorruptPiece = errors.New("piece digest mismatch")
	errNoSources    = errors.New("no live peer left for this blob")
	errSizeMismatch = errors.New("blob size mismatch")
)

// pieceWorkers is how many pieces of one blob a node asks the node before it
// for at once, in the seed's order: one arriving, the next ones already
// waiting there, so the link never idles between pieces. More only makes the
// pieces in flight share the link and reach the rest of the chain later (16
// nodes over HTTP/1.1, make bench-p2p: all done 1.40-1.45 times one pull with
// 2, 1.44-1.54 with 4, 1.51-1.57 with 8); 4 keeps a margin for links where a
// piece takes little longer than a round trip.
const pieceWorkers = 4

// relayWorkers fetch only the pieces other nodes are waiting for here, at
// once, beside the ordered workers: the rest of the chain waits on each of
// them, and queued behind this node's own long-polls they held it all back.
const relayWorkers = 4

// blobJob is one request to get a blob into the cache.
type blobJob struct {
	digest digest.Digest
	size   int64
	up     *upstream
	// origin is the registry/repo up reads: the repository this node will
	// hold the blob for (origins.go).
	origin string
	// manifest is the proof shown to peers: a manifest referencing digest
	// that the client fetched from the upstream. Without one, no peer is asked.
	manifest []byte
}

// ensureBlob returns once d is verified in the cache. Concurrent requests for
// the same digest share one download, which runs on the puller's context so
// that a client giving up does not abort what peers are reading.
func (p *Puller) ensureBlob(ctx context.Context, job blobJob) error {
	dl, err := p.startDownload(ctx, job)
	if err != nil || dl == nil {
		return err
	}
	select {
	case <-dl.done:
		return dl.err
	case <-ctx.Done():
		return fmt.Errorf("waiting for blob %s: %w", job.digest, ctx.Err())
	}
}

// startDownload returns the download of job's blob, starting it unless one
// is already running; nil when the blob is cached. A download running for
// another repository is shared only once the upstream confirmed job's
// repository holds the blob too (errUnconfirmed otherwise).
func (p *Puller) startDownload(ctx context.Context, job blobJob) (*download, error) {
	if _, ok := p.cache.Stat(job.digest); ok {
		return nil, nil
	}
	if job.size < 0 || job.size > p.cfg.MaxBlobBytes {
		return nil, fmt.Errorf("blob %s: size %d is outside [0, %d] (--max-blob-size)", job.digest,
			job.size, p.cfg.MaxBlobBytes)
	}
	// The new download is built before taking the lock: its piece tables
	// grow with the (bounded) size, and no other request waits on that.
	f, err := p.cache.TempFile()
	if err != nil {
		return nil, err
	}
	fresh := newDownload(job.digest, job.size, p.cfg.PieceSize, f, p.bufs)
	fresh.origin = job.origin
	p.mu.Lock()
	dl := p.downloads[job.digest]
	_, cached := p.cache.Stat(job.digest) // committed while we prepared
	if dl == nil && !cached {
		dl = fresh
		p.downloads[job.digest] = dl
		go p.runDownload(lifetime(ctx), dl, job)
	}
	p.mu.Unlock()
	if dl != fresh {
		_ = f.Close()
		_ = os.Remove(f.Name()) // unused: another request started the download first
	}
	if dl == nil {
		return nil, nil
	}
	if dl.origin != job.origin && !p.confirmed(job.digest, job.origin) {
		return nil, errUnconfirmed
	}
	return dl, nil
}

func (p *Puller) runDownload(ctx context.Context, dl *download, job blobJob) {
	log := klog.FromContext(ctx).WithValues("digest", dl.digest, "size", dl.size)
	start := time.Now()
	source, err := p.fetch(ctx, dl, job)
	if err == nil {
		if err = dl.verify(); err != nil {
			// Every piece matched the digest its peer announced, yet the whole is
			// wrong: a peer lied consistently. Start over from the upstream alone.
			p.m.verifyFailures.Inc()
			log.Info("Assembled blob failed verification, fetching it again from the upstream", "err", err)
			dl.reset()
			source = "upstream"
			if err = p.fetchUpstreamRange(ctx, dl, job, 0, dl.n); err == nil {
				err = dl.verify()
			}
		}
	}
	if err == nil {
		// Recorded before the commit so that a peer never hashes a piece the
		// download already verified; an eviction racing the commit removes it.
		p.storeSums(dl)
		p.confirm(dl.digest, dl.origin)
		if err = p.cache.Commit(dl.f.Name(), dl.digest, dl.size); err != nil {
			p.dropSums(dl.digest)
		}
	}
	if err != nil {
		_ = os.Remove(dl.f.Name()) // the download failed: its temp file is garbage
		log.Error(err, "Failed to fetch blob")
	} else {
		p.m.fetchDuration.WithLabelValues(source).Observe(time.Since(start).Seconds())

		log.V(2).Info("Blob cached", "source", source, "duration", time.Since(start))
	}
	p.mu.Lock()
	delete(p.downloads, dl.digest)
	p.mu.Unlock()
	dl.finish(err)
	// Peer handlers that looked the download up just before it ended may still
	// read a piece from it; new ones read from the cache. Close a little later.
	time.AfterFunc(time.Minute, func() { _ = dl.f.Close() })
}

// fetch fills dl from peers when some node registered for the blob before
// us, else from the upstream, and says which it was.
func (p *Puller) fetch(ctx context.Context, dl *download, job blobJob) (string, error) {
	sources := p.track(ctx, dl.digest)
	if len(sources) == 0 || len(job.manifest) == 0 {
		return "upstream", p.fetchUpstreamRange(ctx, dl, job, 0, dl.n)
	}
	ps := &pieceSources{list: sources,
		dead: map[string]bool{}, granted: map[string]bool{}}
	g, gctx := errgroup.WithContext(ctx)
	// Pieces are claimed in the order the seed downloads them, the order in
	// which they come down the chain, so a node waits only for pieces the node
	// before it is about to have. (Starting each node at its own piece left its
	// link idle until the seed got there, then fetched the skipped prefix
	// after: 1.5x one pull for the second of 2 nodes, make bench-p2p.)
	const first = 0
	var ordered sync.WaitGroup
	for range pieceWorkers {
		ordered.Add(1)
		g.Go(func() error {
			defer ordered.Done()
			for gctx.Err() == nil {
				i := dl.claim(first)
				if i < 0 {
					return nil
				}
				if err := p.fetchPiece(gctx, dl, job, ps, i); err != nil {
					return err
				}
			}
			return nil
		})
	}
	// Once the ordered workers are done every piece is claimed: nothing is
	// left for the relay workers.
	allClaimed := make(chan struct{})
	go func() { ordered.Wait(); close(allClaimed) }()
	for range relayWorkers {
		g.Go(func() error {
			for {
				if i := dl.claimWanted(); i >= 0 {
					if err := p.fetchPiece(gctx, dl, job, ps, i); err != nil {
						return err
					}
					continue
				}
				select {
				case <-dl.wantSig:
				case <-allClaimed:
					return nil
				case <-gctx.Done():
					return nil
				}
			}
		})
	}
	err := g.Wait()
	if errors.Is(err, errNoSources) {
		// Every source died or lied: take the rest from the upstream, one
		// ranged request per run of missing pieces rather than one per piece.
		klog.FromContext(ctx).Info("No live peer left, fetching the rest from the upstream", "digest",
			dl.digest)
		err = p.fetchMissingFromUpstream(ctx, dl, job)
	}
	return "peer", err
}

func (p *Puller) fetchMissingFromUpstream(ctx context.Context, dl *download, job blobJob) error {
	missing := dl.missing()
	for start := 0; start < len(missing); {
		end := start + 1
		for end < len(missing) && missing[end] == missing[end-1]+1 {
			end++
		}
		if err := p.fetchUpstreamRange(ctx, dl, job, missing[start], missing[end-1]+1); err != nil {
			return err
		}
		start = end
	}
	return nil
}

// track registers this node with the blob's tracker and returns the nodes
// that registered before it. Trackers are tried in rendezvous order so a
// dead tracker only moves the burst to the next node; if none answers, the
// node fetches from the upstream on its own.
func (p *Puller) track(ctx context.Context, d digest.Digest) []peers.Peer {
	ranked := peers.Rank(d.String(), p.cfg.Discovery.Peers())
	for i, owner := range ranked {
		if i == 3 {
			break
		}
		if owner.Name == p.cfg.Self.Name {
			return p.tracker.register(d, p.cfg.Self)
		}
		before, err := p.peerTrack(ctx, owner, d)
		if err == nil {
			return before
		}
		klog.FromContext(ctx).V(2).Info("Tracker unreachable, trying the next", "tracker", owner.Name,
			"err", err)
	}
	return nil
}

// pieceSources is the set of peers one download takes pieces from.
type pieceSources struct {
	mu      sync.Mutex
	list    []peers.Peer // registered before this node, in order: list[0] fetches from the upstream
	dead    map[string]bool
	granted map[string]bool
}

// seed returns the earliest live registrant: the node fetching from the upstream.
func (s *pieceSources) seed() (peers.Peer, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.list {
		if !s.dead[p.Name] {
			return p, true
		}
	}
	return peers.Peer{}, false
}

// relay returns the peer to take pieces from: the live node that registered
// just before this one, skipping those in skip. ok is false when only the
// seed is before us: this node then takes them from the seed itself.
//
// The nodes of a burst form a chain in registration order, each taking the
// blob from the one before it and passing it to the one after. Each node
// uploads one copy, the seed's to a single node, and every link carries one
// stream each way, so the burst moves at the speed of one link plus a piece's
// time per hop. (Per-piece relays spread by rendezvous hashing left some nodes
// uploading 1.5-1.9 copies to many askers at once and took 2.1-2.6 times one
// node's pull at N = 16; the chain 1.24-1.39 with 1 layer, make bench-p2p,
// docs/p2p.md.) Everyone only looks back, so there is no loop.
func (s *pieceSources) relay(skip map[string]bool) (peers.Peer, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	seed := slices.IndexFunc(s.list, func(p peers.Peer) bool { return !s.dead[p.Name] })
	if seed < 0 {
		return peers.Peer{}, false
	}
	for j := len(s.list) - 1; j > seed; j-- {
		if p := s.list[j]; !s.dead[p.Name] && !skip[p.Name] {
			return p, true
		}
	}
	return peers.Peer{}, false
}

func (s *pieceSources) kill(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dead[name] = true
}

// fetchPiece gets piece i from the node before us (waiting there while it is
// still getting it), the one before that if it fails, then the seed, and
// finally the upstream.
func (p *Puller) fetchPiece(ctx context.Context, dl *download, job blobJob, ps *pieceSources,
	i int) error {
	if _, ok := ps.seed(); !ok {
		return errNoSources
	}
	tried := map[string]bool{}
	for range 2 {
		src, ok := ps.relay(tried)
		if !ok {
			break
		}
		tried[src.Name] = true
		if p.pieceFromPeer(ctx, dl, job, ps, src, i, p.cfg.PieceWait) {
			return nil
		}
	}
	if seed, ok := ps.seed(); ok && !tried[seed.Name] {
		if p.pieceFromPeer(ctx, dl, job, ps, seed, i, p.cfg.PieceWait) {
			return nil
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return p.fetchUpstreamRange(ctx, dl, job, i, i+1)
}

// pieceFromPeer asks src for piece i, waiting up to wait if src is still
// downloading it. A transport error or a corrupt piece retires src for this blob.
func (p *Puller) pieceFromPeer(ctx context.Context, dl *download, job blobJob, ps *pieceSources,
	src peers.Peer, i int, wait time.Duration) bool {
	log := klog.FromContext(ctx).WithValues("digest", dl.digest, "piece", i, "peer", src.Name)
	if err := p.ensurePeerGrant(ctx, ps, src, job); err != nil {
		log.V(2).Info("Peer refused our manifest", "err", err)
		p.m.pieceFailures.WithLabelValues("error").Inc()
		ps.kill(src.Name)
		return false
	}
	data, hash, err := p.peerPiece(ctx, src, dl, digest.FromBytes(job.manifest), i, wait)
	defer p.bufs.put(data)
	if err == nil && data == nil {
		p.m.pieceFailures.WithLabelValues("unavailable").Inc()
		return false
	}
	if err == nil {
		err = dl.put(i, data, hash)
	}
	if err != nil {
		reason := "error"
		if errors.Is(err, errCorruptPiece) {
			reason = "corrupt"
		}
		if ctx.Err() == nil {
			log.Info("Piece from peer failed, retrying elsewhere", "reason", reason, "err", err)
			p.m.pieceFailures.WithLabelValues(reason).Inc()
			ps.kill(src.Name)
		}
		return false
	}
	p.m.bytes.WithLabelValues("peer").Add(float64(len(data)))
	return true
}

func (p *Puller) ensurePeerGrant(ctx context.Context, ps *pieceSources, src peers.Peer,
	job blobJob) error {
	ps.mu.Lock()
	done := ps.granted[src.Name]
	ps.mu.Unlock()
	if done {
		return nil
	}
	if err := p.peerGrant(ctx, src, job.origin, job.manifest); err != nil {
		return err
	}
	ps.mu.Lock()
	ps.granted[src.Name] = true
	ps.mu.Unlock()
	return nil
}

// fetchUpstreamRange downloads pieces [from, to) from the upstream with the
// client's credentials, one ranged request, and stores each piece as it
// completes so that peers can read it while the rest is still coming.
func (p *Puller) fetchUpstreamRange(ctx context.Context, dl *download, job blobJob, from,
	to int) error {
	if from >= to {
		return nil
	}
	start, _ := dl.pieceRange(from)
	lastOff, lastLen := dl.pieceRange(to - 1)
	hdr := http.Header{}
	kind := "blob"
	if from != 0 || to != dl.n {
		hdr.Set("Range", fmt.Sprintf("bytes=%d-%d", start, lastOff+lastLen-1))
		kind = "blob_range"
	}
	resp, err := job.up.do(ctx, kind, http.MethodGet, job.up.url("blobs", dl.digest.String()), hdr)
	if err != nil {
		return err
	}
	defer closeBody(resp) // an error answer read to EOF keeps the connection
	var body io.Reader = &limitedReader{ctx: ctx, r: resp.Body, lim: p.down}
	if err := checkUpstreamSize(resp, dl, job.up.reg.URL.Host); err != nil {
		return fmt.Errorf("blob %s: %w", dl.digest, err)
	}
	if resp.StatusCode == http.StatusOK {
		if _, err := io.CopyN(io.Discard, body, start); err != nil {
			return fmt.Errorf("failed to skip to byte %d of %s: %w", start, dl.digest, err)
		}
	}
	buf := p.bufs.get(dl.pieceSize)
	defer p.bufs.put(buf)
	for i := from; i < to; i++ {
		_, n := dl.pieceRange(i)
		data, err := dl.receive(i, body, buf)
		if err != nil {
			return fmt.Errorf("failed to read blob %s from upstream %s at piece %d: %w", dl.digest,
				job.up.reg.URL.Host, i, err)
		}
		p.m.bytes.WithLabelValues("upstream").Add(float64(n))
		if err := dl.put(i, data, ""); err != nil {
			return err
		}
	}
	return nil
}

// checkUpstreamSize checks an upstream answer against the size the
// download was planned with (from a manifest or a HEAD): a blob of another
// size can never match its digest, so the download stops at once.
func checkUpstreamSize(resp *http.Response, dl *download, host string) error {
	switch resp.StatusCode {
	case http.StatusOK:
		if resp.ContentLength >= 0 && resp.ContentLength != dl.size {
			return fmt.Errorf("%w: upstream %s sends %d bytes, the manifest said %d", errSizeMismatch, host,
				resp.ContentLength, dl.size)
		}
	case http.StatusPartialContent:
		// Content-Range: bytes first-last/total
		_, total, ok := strings.Cut(resp.Header.Get("Content-Range"), "/")
		if n, err := strconv.ParseInt(total, 10, 64); ok && err == nil && n != dl.size {
			return fmt.Errorf("%w: upstream %s has %d bytes, the manifest said %d", errSizeMismatch, host, n,
				dl.size)
		}
	default:
		return &upstreamStatusError{host: host, status: resp.StatusCode, header: resp.Header}
	}
	return nil
}
