package p2p

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/pkg/p2p/peers"
)

// TestPullRefs: a manifest grants what a pull of it reads, nothing that a
// registry does not check (subject, an artifact's blobs), and no size over
// the bound.
func TestPullRefs(t *testing.T) {
	t.Parallel()
	a, b, c := "sha256:"+hex64('a'), "sha256:"+hex64('b'), "sha256:"+hex64('c')
	tests := []struct {
		name    string
		body    string
		want    map[digest.Digest]int64
		wantErr bool
	}{
		{"image manifest", `{"config":{"digest":"` + a + `","size":1},"layers":[{"digest":"` + b + `","size":2}]}`,
			map[digest.Digest]int64{digest.Digest(a): 1, digest.Digest(b): 2}, false},
		{"index", `{"mediaType":"` + mtOCIIndex + `","manifests":[{"digest":"` + c + `","size":3}]}`,
			map[digest.Digest]int64{digest.Digest(c): 3}, false},
		{"subject and blobs grant nothing", `{"config":{"digest":"` + a + `","size":1},` +
			`"subject":{"digest":"` + b + `","size":2},"blobs":[{"digest":"` + c + `","size":3}]}`,
			map[digest.Digest]int64{digest.Digest(a): 1}, false},
		{"image manifest's manifests ignored", `{"mediaType":"` + mtOCIManifest + `",` +
			`"config":{"digest":"` + a + `","size":1},"manifests":[{"digest":"` + c + `","size":3}]}`,
			map[digest.Digest]int64{digest.Digest(a): 1}, false},
		{"index's layers ignored", `{"mediaType":"` + mtDockerList + `",` +
			`"layers":[{"digest":"` + a + `","size":1}],"manifests":[{"digest":"` + c + `","size":3}]}`,
			map[digest.Digest]int64{digest.Digest(c): 3}, false},
		{"both without media type", `{"layers":[{"digest":"` + a + `","size":1}],` +
			`"manifests":[{"digest":"` + c + `","size":3}]}`, nil, true},
		{"artifact media type", `{"mediaType":"application/vnd.example+json",` +
			`"layers":[{"digest":"` + a + `","size":1}]}`, nil, true},
		{"size over the bound is unknown", `{"layers":[{"digest":"` + a + `","size":9000000000000000000},` +
			`{"digest":"` + b + `","size":-5}]}`,
			map[digest.Digest]int64{digest.Digest(a): -1, digest.Digest(b): -1}, false},
		{"bad digest ignored", `{"layers":[{"digest":"md5:x","size":2}]}`, map[digest.Digest]int64{}, false},
		{"not json", `<html>`, nil, true},
	}
	for _, tt := range tests {
		got, err := pullRefs([]byte(tt.body), 1<<30)
		if (err != nil) != tt.wantErr || fmt.Sprint(got) != fmt.Sprint(tt.want) {
			t.Errorf("%s: got %v, %v; want %v, err %v", tt.name, got, err, tt.want, tt.wantErr)
		}
	}
}

func hex64(c byte) string { return string(bytes.Repeat([]byte{c}, 64)) }

// TestGrants: a manifest grants its blobs to the credentials that fetched
// it (in that repository) and to the peer that shows it, and to nobody else.
func TestGrants(t *testing.T) {
	t.Parallel()
	g := newGrants(time.Hour)
	layer := digest.Digest("sha256:" + hex64('b'))
	body := []byte(`{"layers":[{"digest":"` + layer.String() + `","size":7}]}`)
	md, err := g.addManifest("alice|reg/app", body, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	if gr, proof, ok := g.lookup("alice|reg/app", layer); !ok || gr.size != 7 ||
		!bytes.Equal(proof, body) {
		t.Errorf("lookup for the fetching credentials = %v %q %v", gr, proof, ok)
	}
	for _, key := range []string{"bob|reg/app", "alice|reg/other"} {
		if _, _, ok := g.lookup(key, layer); ok {
			t.Errorf("%s got a grant it never earned", key)
		}
	}
	if _, err := g.addPeer("node-b", "reg/app", body, 1<<30); err != nil {
		t.Fatal(err)
	}
	repo, ok := g.peerAllowed("node-b", md, layer)
	_, other := g.peerAllowed("node-c", md, layer)
	_, notLayer := g.peerAllowed("node-b", md, digest.Digest("sha256:"+hex64('c')))
	if !ok || repo != "reg/app" || other || notLayer {
		t.Errorf("peer grants are not limited to the presenting node, the manifest's blobs and its " +
			"repository")
	}
}

// TestDownloadPieces: pieces verify, waiters wake, and the whole verifies.
func TestDownloadPieces(t *testing.T) {
	t.Parallel()
	data := bytes.Repeat([]byte("berth"), 1000) // 5000 bytes, 3 pieces of 2048
	d := digest.FromBytes(data)
	f, err := os.Create(filepath.Join(t.TempDir(), "blob"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dl := newDownload(d, int64(len(data)), 2048, f, newBufPool(2048))
	if dl.n != 3 {
		t.Fatalf("pieces = %d, want 3", dl.n)
	}
	piece := func(i int) []byte { off, n := dl.pieceRange(i); return data[off : off+n] }
	got := make(chan []byte, 1)
	go func() {
		b, _, _, _ := dl.waitPiece(context.Background(), 2, 5*time.Second, make([]byte, 2048))
		got <- b
	}()
	if err := dl.put(2, piece(2), sha(piece(2))); err != nil {
		t.Fatal(err)
	}
	if b := <-got; !bytes.Equal(b, piece(2)) {
		t.Errorf("waiter got %d bytes, want the last piece", len(b))
	}
	if err := dl.put(0, piece(1)[:2048], sha(piece(0))); !errors.Is(err, errCorruptPiece) {
		t.Errorf("put of wrong bytes: %v, want errCorruptPiece", err)
	}
	if err := dl.put(1, piece(1)[:10], ""); err == nil {
		t.Errorf("put of a short piece succeeded")
	}
	_ = dl.put(0, piece(0), "")
	_ = dl.put(1, piece(1), "")
	if !dl.complete() || dl.verify() != nil {
		t.Errorf("complete download does not verify: %v", dl.verify())
	}
}

// TestWantedPiecesWakeRelayWorkers: a piece other nodes wait for here is
// handed to a relay worker at once, even while every ordered worker holds a
// claim, and a piece already claimed is never handed out twice.
func TestWantedPiecesWakeRelayWorkers(t *testing.T) {
	t.Parallel()
	f, err := os.Create(filepath.Join(t.TempDir(), "blob"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dl := newDownload(digest.FromString("x"), 10*1024, 1024, f, newBufPool(1024))
	for want := range 3 { // the ordered workers hold pieces 0-2 (their long-polls hang)
		if got := dl.claim(0); got != want {
			t.Fatalf("ordered claim = %d, want %d", got, want)
		}
	}
	if i := dl.claimWanted(); i != -1 {
		t.Fatalf("claimWanted with nothing wanted = %d, want -1", i)
	}
	dl.want(1) // claimed already: this node is fetching it, peers wait for that
	dl.want(7)
	dl.want(8)
	select {
	case <-dl.wantSig:
	default:
		t.Fatal("want did not wake a relay worker")
	}
	if i := dl.claimWanted(); i != 7 {
		t.Fatalf("first wanted piece = %d, want 7", i)
	}
	select {
	case <-dl.wantSig: // piece 8 is still waiting: a second worker is woken
	default:
		t.Fatal("a second wanted piece did not wake another relay worker")
	}
	if i := dl.claimWanted(); i != 8 {
		t.Fatalf("second wanted piece = %d, want 8", i)
	}
	if i := dl.claimWanted(); i != -1 {
		t.Fatalf("claimWanted after both = %d, want -1", i)
	}
	// The ordered workers skip what the relay workers took.
	var order []int
	for i := dl.claim(0); i >= 0; i = dl.claim(0) {
		order = append(order, i)
	}
	if want := []int{3, 4, 5, 6, 9}; !slices.Equal(order, want) {
		t.Errorf("ordered claims after the relay workers' = %v, want %v", order, want)
	}
}

func sha(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

func TestParseRegistry(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{"docker.io=https://registry-1.docker.io": "docker.io",
		"http://10.0.0.1:5000": "10.0.0.1:5000"} {
		r, err := ParseRegistry(in)
		if err != nil || r.Host != want {
			t.Errorf("ParseRegistry(%q) = %v, %v; want host %s", in, r, err, want)
		}
	}
	for _, bad := range []string{"docker.io", "x=ftp://a", "x="} {
		if _, err := ParseRegistry(bad); err == nil {
			t.Errorf("ParseRegistry(%q) succeeded", bad)
		}
	}
}

// TestRelayChain: the nodes of a burst take a blob each from the one that
// registered just before it, so following relays never loops, exactly one
// node takes it from the seed, and every node uploads to at most one other.
// A dead node is routed around: its successor takes from the node before it.
func TestRelayChain(t *testing.T) {
	t.Parallel()
	const n = 16
	all := make([]peers.Peer, n)
	for i := range all {
		all[i] = peers.Peer{Name: fmt.Sprintf("node-%d", i), Addr: fmt.Sprintf("10.0.0.%d:5002", i)}
	}
	// Node i registered i-th: the tracker told it about nodes 0..i-1; node-0 is the seed.
	view := func(self int, dead ...int) *pieceSources {
		ps := &pieceSources{list: slices.Clone(all[:self]), dead: map[string]bool{}}
		for _, d := range dead {
			ps.kill(all[d].Name)
		}
		return ps
	}
	follow := func(dead ...int) (uploads map[string]int, fromSeed []string) {
		uploads = map[string]int{}
		for start := 1; start < n; start++ {
			if slices.Contains(dead, start) {
				continue
			}
			r, ok := view(start, dead...).relay(nil)
			if !ok {
				fromSeed = append(fromSeed, all[start].Name)
				continue
			}
			var at int
			fmt.Sscanf(r.Name, "node-%d", &at)
			if at >= start || slices.Contains(dead, at) {
				t.Fatalf("node-%d relays through %s, dead or not before it", start, r.Name)
			}
			uploads[r.Name]++
		}
		return uploads, fromSeed
	}
	uploads, fromSeed := follow()
	if !slices.Equal(fromSeed, []string{"node-1"}) {
		t.Errorf("nodes taking the blob from the seed: %v, want [node-1]", fromSeed)
	}
	for name, k := range uploads {
		if k != 1 {
			t.Errorf("%s uploads to %d nodes, want 1", name, k)
		}
	}
	if len(uploads) != n-2 {
		t.Errorf("%d nodes relay, want %d (all but the seed and the last)", len(uploads), n-2)
	}

	uploads, fromSeed = follow(5, 1)
	if !slices.Equal(fromSeed, []string{"node-2"}) || uploads["node-4"] != 1 || uploads["node-3"] != 1 {
		t.Errorf("with node-1 and node-5 dead: from the seed %v, uploads %v; want node-2 from the "+
			"seed and node-4 relaying for node-6 only", fromSeed, uploads)
	}
	if r, ok := view(6, 5).relay(map[string]bool{"node-4": true}); !ok || r.Name != "node-3" {
		t.Errorf("node-6 skipping node-4 with node-5 dead: relay %v, %v; want node-3", r, ok)
	}
	if r, ok := view(2, 0).relay(nil); ok { // node-1 fetches from the upstream now
		t.Errorf("node-2 with the seed dead relays through %v, want none: node-1 is its seed", r)
	}
	if r, ok := view(3, 0).relay(nil); !ok || r.Name != "node-2" {
		t.Errorf("node-3 with the seed dead: relay %v, %v; want node-2", r, ok)
	}
}

// TestTrackerOrder: the tracker answers each node with the nodes that
// registered before it, also when it registers again, so that nodes only
// ever take a blob from earlier ones and never wait on each other.
func TestTrackerOrder(t *testing.T) {
	t.Parallel()
	tr := newTracker()
	d := digest.FromString("layer")
	names := func(ps []peers.Peer) []string {
		var out []string
		for _, p := range ps {
			out = append(out, p.Name)
		}
		return out
	}
	node := func(n string) peers.Peer { return peers.Peer{Name: n, Addr: n + ":5002"} }
	for i, want := range [][]string{nil, {"a"}, {"a", "b"}} {
		n := string(rune('a' + i))
		if got := names(tr.register(d, node(n))); !slices.Equal(got, want) {
			t.Errorf("first registration of %s: got %v, want %v", n, got, want)
		}
	}
	if got := names(tr.register(d, node("b"))); !slices.Equal(got, []string{"a"}) {
		t.Errorf("b registering again: got %v, want [a] (c, after it, may be taking the blob from b)", got)
	}
	if got := names(tr.register(d, node("a"))); len(got) != 0 {
		t.Errorf("the seed registering again: got %v, want none", got)
	}
	if got := names(tr.register(d, node("d"))); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Errorf("a new node: got %v, want [a b c]", got)
	}
}

// TestCachedPieceDigestFromVerification: a committed blob's pieces are served
// with the digests verified when it was downloaded, not re-hashed per upload:
// a cached file that rots on disk afterwards is announced with its true
// digest, so the receiving peer rejects the bad piece and retries elsewhere.
func TestCachedPieceDigestFromVerification(t *testing.T) {
	t.Parallel()
	const pieceSize = 64 << 10
	p, err := New(Config{Self: peers.Peer{Name: "a", Addr: "127.0.0.1:1"},
		Registries: []Registry{{Host: "r"}},
		CacheDir:   t.TempDir(), PeerKey: []byte("k"), PieceSize: pieceSize})
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("0123456789abcdef"), 3*pieceSize/16+100) // 4 pieces, the last one short
	d := digest.FromBytes(data)
	f, err := p.cache.TempFile()
	if err != nil {
		t.Fatal(err)
	}
	dl := newDownload(d, int64(len(data)), pieceSize, f, p.bufs)
	for i := range dl.n {
		off, n := dl.pieceRange(i)
		if err := dl.put(i, data[off:off+n], ""); err != nil {
			t.Fatal(err)
		}
	}
	p.storeSums(dl)
	if err := p.cache.Commit(f.Name(), d, dl.size); err != nil {
		t.Fatal(err)
	}
	_ = f.Close()
	cached, _, err := p.cache.Open(d)
	if err != nil {
		t.Fatal(err)
	}
	path := cached.Name()
	_ = cached.Close()
	rot, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rot.WriteAt([]byte{'X'}, pieceSize+5); err != nil { // piece 1 rots
		t.Fatal(err)
	}
	_ = rot.Close()
	for i := range dl.n {
		src, err := p.readPiece(context.Background(), d, dl.size, pieceSize, i, 0, false)
		if err != nil || src == nil {
			t.Fatalf("piece %d: %v, %v", i, src, err)
		}
		got, _ := io.ReadAll(io.LimitReader(src.r, src.n))
		src.close()
		off, n := dl.pieceRange(i)
		if src.hash != sha(data[off:off+n]) {
			t.Errorf("piece %d announced with %s, want the digest verified at download", i, src.hash)
		}
		if (sha(got) == src.hash) != (i != 1) {
			t.Errorf("piece %d: served bytes match the announced digest = %v, want only the rotten piece 1 "+
				"to mismatch", i, sha(got) == src.hash)
		}
	}
}

// TestGrantsExpireByTime: client and peer grants are dropped once their TTL
// has passed, with no new grant needed to trigger the sweep.
func TestGrantsExpireByTime(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		g := newGrants(time.Hour)
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		go g.run(ctx)
		body := []byte(`{"layers":[{"digest":"sha256:` + hex64('b') + `","size":7}]}`)
		if _, err := g.addPeer("node-b", "reg/app", body, 1<<30); err != nil {
			t.Fatal(err)
		}
		if _, err := g.addManifest("alice|reg/app", body, 1<<30); err != nil {
			t.Fatal(err)
		}
		time.Sleep(59 * time.Minute)
		synctest.Wait()
		if n := g.count(); n != 2 {
			t.Fatalf("%d grants held within the TTL, want 2", n)
		}
		time.Sleep(30 * time.Minute)
		synctest.Wait()
		if n := g.count(); n != 0 {
			t.Errorf("%d grants still held 89 minutes after a 1h grant, want 0", n)
		}
	})
}

// TestNonceCache: a nonce is accepted once, forgotten after the window.
func TestNonceCache(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c := newNonceCache()
		if err := c.use("node|n1", time.Now()); err != nil {
			t.Fatal(err)
		}
		if err := c.use("node|n1", time.Now()); !errors.Is(err, errReplay) {
			t.Errorf("second use of a nonce: err = %v, want %v", err, errReplay)
		}
		time.Sleep(3 * maxClockSkew)
		_ = c.use("node|n2", time.Now())
		c.mu.Lock()
		n := len(c.seen)
		c.mu.Unlock()
		if n != 1 {
			t.Errorf("%d nonces held after the window passed, want 1 (the new one)", n)
		}
	})
}

// TestGrantsBounded: a client of the mirror fetching many or huge
// manifests cannot make the puller hold more than the budget.
func TestGrantsBounded(t *testing.T) {
	t.Parallel()
	g := newGrants(time.Hour)
	layers := strings.Repeat(`{"digest":"sha256:`+hex64('a')+`","size":1},`, maxRefsPerManifest)
	if _, err := g.addManifest("k|reg/app",
		[]byte(`{"layers":[`+layers+`{"digest":"sha256:`+hex64('b')+`","size":1}]}`), 1<<30); err == nil {
		t.Errorf("a manifest listing %d layers was granted", maxRefsPerManifest+1)
	}
	pad := strings.Repeat(" ", 3<<20) // 24 different manifests of 3 MiB: 72 MiB offered
	for i := range 24 {
		body := fmt.Sprintf(`{"layers":[{"digest":"sha256:%s","size":%d}]}%s`, hex64('c'), i, pad)
		if _, err := g.addManifest("k|reg/app", []byte(body), 1<<30); err != nil {
			t.Fatal(err)
		}
	}
	held := 0
	for _, m := range g.manifests {
		held += len(m.body)
	}
	if held > maxHeldManifestBytes || held != g.manifestBytes {
		t.Errorf("grants hold %d manifest bytes (counted %d), want at most %d", held, g.manifestBytes,
			maxHeldManifestBytes)
	}
}

// TestPieceStreamsWhileArriving: over HTTP/2 a node passes a piece on while
// it is still receiving it, ending with the piece's digest in a trailer once
// it verified it; a piece that fails here resets the stream, so the peer
// never takes the bytes it got for the piece.
func TestPieceStreamsWhileArriving(t *testing.T) {
	t.Parallel()
	const pieceSize = 256 << 10
	p, err := New(Config{Self: peers.Peer{Name: "a", Addr: "127.0.0.1:1"},
		Registries: []Registry{{Host: "r"}},
		CacheDir:   t.TempDir(), PeerKey: []byte("k"), PieceSize: pieceSize})
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 2*pieceSize)
	for i := range data {
		data[i] = byte(i * 7 / 5)
	}
	d := digest.FromBytes(data)
	f, err := p.cache.TempFile()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dl := newDownload(d, int64(len(data)), pieceSize, f, p.bufs)
	p.mu.Lock()
	p.downloads[d] = dl
	p.mu.Unlock()

	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		i, _ := strconv.Atoi(r.URL.Query().Get("i"))
		stream := r.URL.Query().Get("stream") == "1" && r.ProtoMajor >= 2
		src, err := p.readPiece(r.Context(), d, dl.size, pieceSize, i, 5*time.Second, stream)
		if err != nil || src == nil || src.stream == nil {
			http.Error(w, fmt.Sprintf("want a stream, got %+v, %v", src, err), http.StatusInternalServerError)
			return
		}
		p.sendStream(r.Context(), w, w, src)
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()

	// receiveFrom feeds piece i into dl through a pipe the test writes.
	receiveFrom := func(i int) (*io.PipeWriter, chan error) {
		pr, pw := io.Pipe()
		done := make(chan error, 1)
		go func() {
			b, err := dl.receive(i, pr, make([]byte, pieceSize))
			if err == nil {
				err = dl.put(i, b, "")
			}
			done <- err
		}()
		return pw, done
	}
	// A node that held pieces back until whole would stall the reads below:
	// fail then instead of hanging.
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	get := func(i int) *http.Response {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/?stream=1&i="+strconv.Itoa(i), nil)
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.ProtoMajor != 2 || resp.StatusCode != http.StatusOK {
			t.Fatalf("piece %d: %s over %s, want 200 over HTTP/2", i, resp.Status, resp.Proto)
		}
		return resp
	}

	// Piece 0: the first 100 KiB reach the peer before the rest exists here.
	pw, done := receiveFrom(0)
	resp := get(0) // waits for the piece to start arriving
	if _, err := pw.Write(data[:100<<10]); err != nil {
		t.Fatal(err)
	}
	head := make([]byte, streamChunk)
	if _, err := io.ReadFull(resp.Body, head); err != nil || !bytes.Equal(head, data[:streamChunk]) {
		t.Fatalf("first %d bytes of a piece still arriving: %v", streamChunk, err)
	}
	if _, err := pw.Write(data[100<<10 : pieceSize]); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil || !bytes.Equal(append(head, rest...), data[:pieceSize]) {
		t.Fatalf("whole streamed piece: %d bytes, %v; want piece 0", len(head)+len(rest), err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := resp.Trailer.Get(hdrPieceDigest); got != sha(data[:pieceSize]) {
		t.Errorf("trailer digest %q, want the piece's %s", got, sha(data[:pieceSize]))
	}

	// Piece 1: the source dies half-way; the peer's stream is reset.
	pw, done = receiveFrom(1)
	resp = get(1)
	if _, err := pw.Write(data[pieceSize : pieceSize+100<<10]); err != nil {
		t.Fatal(err)
	}
	pw.CloseWithError(errors.New("source died"))
	got, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err == nil {
		t.Errorf("peer read %d bytes of a failed piece without an error", len(got))
	}
	if h := resp.Trailer.Get(hdrPieceDigest); h != "" {
		t.Errorf("failed piece announced with digest %s", h)
	}
	if err := <-done; err == nil {
		t.Error("receive of a piece whose source died succeeded")
	}
	if dl.have[1] {
		t.Error("a failed piece is marked present")
	}
}
