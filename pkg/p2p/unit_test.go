package p2p

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
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

// TestRelaysSpreadSeedUpload: with N nodes knowing each other, following
// each node's relay choice for a piece never loops and ends at exactly one
// node per piece that takes it from the seed, so the seed uploads one copy,
// not N-1; relaying is spread over the nodes.
func TestRelaysSpreadSeedUpload(t *testing.T) {
	t.Parallel()
	const n, pieces = 16, 200
	all := make([]peers.Peer, n)
	for i := range all {
		all[i] = peers.Peer{Name: fmt.Sprintf("node-%d", i), Addr: fmt.Sprintf("10.0.0.%d:5002", i)}
	}
	key := "sha256:" + hex64('a')
	view := func(self int) *pieceSources { // node self knows all others; node-0 is the seed
		var list []peers.Peer
		for i, p := range all {
			if i != self {
				list = append(list, p)
			}
		}
		return &pieceSources{self: all[self].Name, key: key, list: list, dead: map[string]bool{}}
	}
	relays := map[string]int{}
	for piece := range pieces {
		fromSeed := map[string]bool{}
		for start := 1; start < n; start++ {
			at := start
			for hops := 0; ; hops++ {
				if hops > n {
					t.Fatalf("piece %d: the relay chain from %s loops", piece, all[start].Name)
				}
				r, ok := view(at).relay(piece, nil)
				if !ok {
					fromSeed[all[at].Name] = true
					break
				}
				relays[r.Name]++
				fmt.Sscanf(r.Name, "node-%d", &at)
			}
		}
		if len(fromSeed) != 1 {
			t.Fatalf("piece %d: %d nodes take it from the seed (%v), want 1", piece, len(fromSeed), fromSeed)
		}
	}
	if _, ok := relays["node-0"]; ok {
		t.Errorf("the seed was chosen as a relay")
	}
	if len(relays) < n-3 {
		t.Errorf("only %d of %d nodes relay: %v", len(relays), n-1, relays)
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
		src, err := p.readPiece(context.Background(), d, dl.size, pieceSize, i, 0)
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
