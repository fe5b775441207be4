package p2p

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"os"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
)

// download is a blob being assembled in a temp file. Pieces arrive in any
// order (from the upstream or from peers); each is verified before it is
// marked present, and present pieces can be served to other peers at once:
// that is what lets N nodes share one upstream copy while it is in flight.
type download struct {
	digest    digest.Digest
	size      int64
	pieceSize int64
	n         int
	f         *os.File
	bufs      *bufPool
	origin    string // registry/repo the blob is fetched for (origins.go)

	// hasher digests the contiguous prefix of present pieces as they arrive,
	// so the whole-blob check is done when the last piece lands.
	hmu    sync.Mutex
	hasher hash.Hash
	hashed int

	mu      sync.Mutex
	resets  int
	have    []bool
	hashes  []string // hex sha256 of each present piece
	count   int
	claimed []bool // a worker of this node is fetching the piece
	// streams are the pieces arriving right now, readable as they land.
	streams []*pieceStream
	wanted  []int // pieces peers are waiting for here: fetched next
	// wantSig wakes a relay worker (cap 1) when a piece joins wanted.
	wantSig chan struct{}
	cursor  int
	changed chan struct{} // closed and replaced whenever a piece arrives or the download ends
	done    chan struct{}
	err     error
}

func newDownload(d digest.Digest, size, pieceSize int64, f *os.File, bufs *bufPool) *download {
	n := int((size + pieceSize - 1) / pieceSize)
	if size == 0 {
		n = 0
	}
	return &download{digest: d, size: size, pieceSize: pieceSize, n: n, f: f, bufs: bufs,
		hasher: sha256.New(),
		have:   make([]bool, n), hashes: make([]string, n), claimed: make([]bool, n),
		streams: make([]*pieceStream, n),
		changed: make(chan struct{}), done: make(chan struct{}), wantSig: make(chan struct{}, 1)}
}

// pieceRange returns piece i's offset and length.
func (dl *download) pieceRange(i int) (int64, int64) {
	off := int64(i) * dl.pieceSize
	return off, min(dl.pieceSize, dl.size-off)
}

// put stores piece i after checking that the data has the piece's length
// and, when wantHash is set, that digest. A piece that came in through
// receive is already in the file; put then ends its stream, either way.
func (dl *download) put(i int, data []byte, wantHash string) error {
	err := dl.store(i, data, wantHash)
	dl.endStream(i, err == nil)
	return err
}

func (dl *download) store(i int, data []byte, wantHash string) error {
	off, n := dl.pieceRange(i)
	if int64(len(data)) != n {
		return fmt.Errorf("piece %d of %s: got %d bytes, want %d", i, dl.digest, len(data), n)
	}
	sum := sha256.Sum256(data)
	h := hex.EncodeToString(sum[:])
	if wantHash != "" && h != wantHash {
		return fmt.Errorf("piece %d of %s: %w (got sha256 %s, want %s)", i, dl.digest, errCorruptPiece, h,
			wantHash)
	}
	dl.mu.Lock()
	s := dl.streams[i]
	dl.mu.Unlock()
	if s == nil || s.written() != n {
		if _, err := dl.f.WriteAt(data, off); err != nil {
			return fmt.Errorf("failed to write piece %d of %s: %w", i, dl.digest, err)
		}
	}
	dl.mu.Lock()
	if !dl.have[i] {
		dl.have[i], dl.hashes[i] = true, h
		dl.count++
		close(dl.changed)
		dl.changed = make(chan struct{})
	}
	dl.mu.Unlock()
	dl.advanceHash(i, data)
	return nil
}

// receive reads piece i from r into buf (at least a piece long), writing
// it through to the file as it arrives, where peers waiting for the piece
// read it at once: a chain of nodes then passes a piece on in the time of
// a chunk per hop, not of a whole piece (make bench-p2p, docs/p2p.md). The
// caller ends the stream with put, or abandon when it gives up on the piece.
func (dl *download) receive(i int, r io.Reader, buf []byte) ([]byte, error) {
	off, n := dl.pieceRange(i)
	buf = buf[:n]
	s := &pieceStream{moved: make(chan struct{})}
	dl.mu.Lock()
	if old := dl.streams[i]; old != nil {
		old.end(streamFailed)
	}
	dl.streams[i] = s
	close(dl.changed) // wake the peers waiting for the piece
	dl.changed = make(chan struct{})
	dl.mu.Unlock()
	var got, flushed int64
	for got < n {
		m, err := r.Read(buf[got:])
		got += int64(m)
		if got-flushed >= streamChunk || got == n || (err != nil && got > flushed) {
			if _, werr := dl.f.WriteAt(buf[flushed:got], off+flushed); werr != nil {
				dl.abandon(i)
				return nil, fmt.Errorf("failed to write piece %d of %s: %w", i, dl.digest, werr)
			}
			flushed = got
			s.advance(got)
		}
		if err != nil && got < n {
			dl.abandon(i)
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
	return buf, nil
}

// streamChunk is how much of a piece arrives before peers reading it are
// woken: small next to a piece, large next to a TLS record.
const streamChunk = 64 << 10

// abandon ends piece i's stream, if any, as failed: peers reading it drop
// what they got.
func (dl *download) abandon(i int) { dl.endStream(i, false) }

func (dl *download) endStream(i int, ok bool) {
	dl.mu.Lock()
	s := dl.streams[i]
	dl.streams[i] = nil
	dl.mu.Unlock()
	if s == nil {
		return
	}
	if ok {
		s.end(streamDone)
	} else {
		s.end(streamFailed)
	}
}

// pieceStream is a piece arriving at this node: the first filled bytes of
// it are in the download's file.
type pieceStream struct {
	mu     sync.Mutex
	filled int64
	state  streamState
	moved  chan struct{} // closed and replaced when filled or state change
}

type streamState int

const (
	streamRunning streamState = iota
	streamDone                // verified and stored: the digest is in the download's hashes
	streamFailed              // the bytes sent so far are worthless
)

func (s *pieceStream) advance(filled int64) {
	s.mu.Lock()
	s.filled = filled
	close(s.moved)
	s.moved = make(chan struct{})
	s.mu.Unlock()
}

func (s *pieceStream) end(st streamState) {
	s.mu.Lock()
	if s.state == streamRunning {
		s.state = st
		close(s.moved)
		s.moved = make(chan struct{})
	}
	s.mu.Unlock()
}

func (s *pieceStream) written() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.filled
}

// snapshot returns how much of the piece is in the file, whether it ended,
// and a channel closed when either changes.
func (s *pieceStream) snapshot() (int64, streamState, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.filled, s.state, s.moved
}

// advanceHash feeds the whole-blob hasher every piece of the contiguous
// prefix that is now present (usually just the one that arrived).
func (dl *download) advanceHash(i int, data []byte) {
	dl.hmu.Lock()
	defer dl.hmu.Unlock()
	for {
		dl.mu.Lock()
		next := dl.hashed
		ok := next < dl.n && dl.have[next]
		dl.mu.Unlock()
		if !ok {
			return
		}
		if next == i {
			_, _ = dl.hasher.Write(data) // hash.Hash never fails
		} else {
			buf, err := dl.readPiece(next, dl.bufs.get(dl.pieceSize))
			if err != nil {
				dl.bufs.put(buf)
				return // verify falls back to reading the whole file
			}
			_, _ = dl.hasher.Write(buf)
			dl.bufs.put(buf)
		}
		dl.hashed++
	}
}

func (dl *download) missing() []int {
	dl.mu.Lock()
	defer dl.mu.Unlock()
	var out []int
	for i, ok := range dl.have {
		if !ok {
			out = append(out, i)
		}
	}
	return out
}

// claim returns the next piece for a worker of this node to fetch: one a
// peer is waiting for here first, else the next in this node's order
// (starting at piece first); -1 when every piece is taken.
func (dl *download) claim(first int) int {
	dl.mu.Lock()
	defer dl.mu.Unlock()
	if i := dl.claimWantedLocked(); i >= 0 {
		return i
	}
	for dl.cursor < dl.n {
		i := (first + dl.cursor) % dl.n
		dl.cursor++
		if !dl.have[i] && !dl.claimed[i] {
			dl.claimed[i] = true
			return i
		}
	}
	return -1
}

// want moves piece i to the front of this node's queue: a peer relaying
// through us is waiting for it.
func (dl *download) want(i int) {
	dl.mu.Lock()
	defer dl.mu.Unlock()
	if i >= 0 && i < dl.n && !dl.have[i] && !dl.claimed[i] && len(dl.wanted) < dl.n {
		dl.wanted = append(dl.wanted, i)
		dl.wakeRelayWorker()
	}
}

// claimWanted returns a piece a peer is waiting for here, for a relay
// worker to fetch; -1 when there is none.
func (dl *download) claimWanted() int {
	dl.mu.Lock()
	defer dl.mu.Unlock()
	i := dl.claimWantedLocked()
	if i >= 0 && len(dl.wanted) > 0 { // more waiting: wake another relay worker
		dl.wakeRelayWorker()
	}
	return i
}

// claimWantedLocked claims the first wanted piece no worker holds yet; -1
// when there is none. dl.mu is held.
func (dl *download) claimWantedLocked() int {
	for len(dl.wanted) > 0 {
		i := dl.wanted[0]
		dl.wanted = dl.wanted[1:]
		if !dl.have[i] && !dl.claimed[i] {
			dl.claimed[i] = true
			return i
		}
	}
	return -1
}

// wakeRelayWorker wakes one relay worker, unless one is already due to wake.
func (dl *download) wakeRelayWorker() {
	select {
	case dl.wantSig <- struct{}{}:
	default:
	}
}

func (dl *download) complete() bool {
	dl.mu.Lock()
	defer dl.mu.Unlock()
	return dl.count == dl.n
}

// reset forgets every piece (after the assembled blob failed verification).
func (dl *download) reset() {
	dl.mu.Lock()
	defer dl.mu.Unlock()
	for i := range dl.have {
		dl.have[i], dl.hashes[i], dl.claimed[i] = false, "", false
		if s := dl.streams[i]; s != nil {
			s.end(streamFailed)
			dl.streams[i] = nil
		}
	}
	dl.count, dl.cursor, dl.wanted = 0, 0, nil
	dl.resets++
	dl.hmu.Lock()
	dl.hasher.Reset()
	dl.hashed = 0
	dl.hmu.Unlock()
}

// awaitPiece waits up to wait for piece i and returns its digest. ok is
// false when the piece did not arrive in time or the download ended without it.
func (dl *download) awaitPiece(ctx context.Context, i int, wait time.Duration) (hash string,
	ok bool, err error) {
	hash, _, ok, err = dl.awaitPieceOrStream(ctx, i, wait, false)
	return hash, ok, err
}

// awaitPieceOrStream is awaitPiece that, with streams, also returns as soon
// as the piece starts arriving: s is then its stream and hash is empty.
func (dl *download) awaitPieceOrStream(ctx context.Context, i int, wait time.Duration,
	streams bool) (hash string, s *pieceStream, ok bool, err error) {
	if i < 0 || i >= dl.n {
		return "", nil, false, fmt.Errorf("piece %d out of range [0,%d)", i, dl.n)
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		dl.mu.Lock()
		have, h, st, ch := dl.have[i], dl.hashes[i], dl.streams[i], dl.changed
		dl.mu.Unlock()
		if have {
			return h, nil, true, nil
		}
		if streams && st != nil {
			return "", st, true, nil
		}
		select {
		case <-ch:
		case <-dl.done:
			return "", nil, false, nil
		case <-timer.C:
			return "", nil, false, nil
		case <-ctx.Done():
			return "", nil, false, ctx.Err()
		}
	}
}

// pieceHash returns present piece i's digest, "" if it is not present.
func (dl *download) pieceHash(i int) string {
	dl.mu.Lock()
	defer dl.mu.Unlock()
	return dl.hashes[i]
}

// waitPiece is awaitPiece that also reads the piece into buf (at least a piece long).
func (dl *download) waitPiece(ctx context.Context, i int, wait time.Duration,
	buf []byte) (data []byte, hash string, ok bool, err error) {
	hash, ok, err = dl.awaitPiece(ctx, i, wait)
	if !ok || err != nil {
		return nil, "", ok, err
	}
	data, err = dl.readPiece(i, buf)
	if err != nil {
		return nil, "", false, err
	}
	return data, hash, true, nil
}

// readPiece reads present piece i into buf (at least a piece long).
func (dl *download) readPiece(i int, buf []byte) ([]byte, error) {
	off, n := dl.pieceRange(i)
	buf = buf[:n]
	if _, err := dl.f.ReadAt(buf, off); err != nil && err != io.EOF {
		return buf, fmt.Errorf("failed to read piece %d of %s: %w", i, dl.digest, err)
	}
	return buf, nil
}

// verify hashes the assembled file against the blob digest.
func (dl *download) verify() error {
	dl.hmu.Lock()
	done := dl.hashed == dl.n && dl.digest.Algorithm() == digest.SHA256
	sum := hex.EncodeToString(dl.hasher.Sum(nil))
	dl.hmu.Unlock()
	if done {
		if sum != dl.digest.Encoded() {
			return fmt.Errorf("assembled blob does not match %s", dl.digest)
		}
		return nil
	}
	v := dl.digest.Verifier()
	if _, err := io.Copy(v, io.NewSectionReader(dl.f, 0, dl.size)); err != nil {
		return fmt.Errorf("failed to read assembled blob %s: %w", dl.digest, err)
	}
	if !v.Verified() {
		return fmt.Errorf("assembled blob does not match %s", dl.digest)
	}
	return nil
}

func (dl *download) finish(err error) {
	dl.mu.Lock()
	dl.err = err
	close(dl.changed)
	dl.changed = make(chan struct{})
	dl.mu.Unlock()
	close(dl.done)
}
