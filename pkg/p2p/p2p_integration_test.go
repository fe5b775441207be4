//go:build integration

package p2p_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/pkg/p2p"
)

const user, password = "alice", "s3cret"

// TestConcurrentPullsCostOneCopy: N nodes pulling the same image at the
// same moment get correct layers and cost the upstream about one copy.
func TestConcurrentPullsCostOneCopy(t *testing.T) {
	up := testenv.StartRegistry(t, testenv.WithRegistryAuth(user, password), testenv.WithEgressLimit(32<<20))
	_, img := up.PushRandomImage(t, "app:v1", 4, 4<<20)
	size := imageSize(t, img)
	nodes := startNodes(t, 5, up)
	up.ResetCounters()

	auth := &authn.Basic{Username: user, Password: password}
	var wg sync.WaitGroup
	errs := make([]error, len(nodes))
	for i, nd := range nodes {
		wg.Go(func() { errs[i] = pull(t.Context(), nd.ref(t, "app:v1"), auth) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("pull on %s: %v", nodes[i].name, err)
		}
	}
	ratio := float64(up.BlobBytes()) / float64(size)
	t.Logf("upstream sent %d blob bytes for a %d-byte image pulled by %d nodes: %.2f copies",
		up.BlobBytes(), size, len(nodes), ratio)
	if ratio > 1.3 {
		t.Errorf("upstream sent %.2f copies of the image for %d simultaneous pulls, want about 1", ratio,
			len(nodes))
	}
	peerBytes := 0.0
	for _, nd := range nodes {
		peerBytes += nd.metric(t, "berth_p2p_bytes_total", map[string]string{"source": "peer"})
	}
	if peerBytes < float64(size) {
		t.Errorf("nodes got %.0f bytes from peers, want at least one image (%d)", peerBytes, size)
	}
	// Pieces go down the chain while they arrive: a node asking ahead gets a
	// piece as it lands at the node before it, not once it is whole there.
	streamed := 0.0
	for _, nd := range nodes {
		streamed += nd.metric(t, "berth_p2p_pieces_sent_total", map[string]string{"how": "streamed"})
	}
	if streamed == 0 {
		t.Error("no piece was passed on while it was arriving (berth_p2p_pieces_sent_total{how=\"streamed\"} = 0)")
	}
	// Down a chain, each node passes the image on once: no node uploads much more.
	for _, nd := range nodes {
		if up := nd.metric(t, "berth_p2p_uploaded_bytes_total", nil); up > 1.3*float64(size) {
			t.Errorf("%s uploaded %.2f copies of the image to peers, want at most about one", nd.name,
				up/float64(size))
		}
	}
}

// TestChainRoutesAroundKilledNode: nodes that start one after another take a
// layer down a chain, each from the one before it. The second is killed
// mid-transfer: the third, which was taking the layer from it, finishes from
// the node before it, the fourth keeps taking it from the third, and the
// registry still sends about one copy.
func TestChainRoutesAroundKilledNode(t *testing.T) {
	up := testenv.StartRegistry(t, testenv.WithEgressLimit(4<<20))
	_, img := up.PushRandomImage(t, "chain:v1", 1, 16<<20)
	size := imageSize(t, img)
	layers, _ := img.Layers()
	ld, _ := layers[0].Digest()
	// Keep the layer's tracker out of the chain, so that killing a node leaves it alive.
	chain := nonTrackers(startNodes(t, 5, up), ld.String())
	up.ResetCounters()
	errs := make([]chan error, len(chain))
	start := func(i int) {
		errs[i] = make(chan error, 1)
		go func() { errs[i] <- pull(t.Context(), chain[i].ref(t, "chain:v1"), authn.Anonymous) }()
	}
	fromPeers := func(nd *node) float64 {
		return nd.metric(t, "berth_p2p_bytes_total", map[string]string{"source": "peer"})
	}
	start(0)
	waitFor(t, "the seed to have 2 MiB", func() bool { return up.BlobBytes() > 2<<20 })
	start(1)
	waitFor(t, "the second node to get pieces", func() bool { return fromPeers(chain[1]) > 1<<20 })
	start(2)
	waitFor(t, "the third node to get pieces", func() bool { return fromPeers(chain[2]) > 1<<20 })
	if up := chain[1].metric(t, "berth_p2p_uploaded_bytes_total", nil); up == 0 {
		t.Errorf("the third node took nothing from the second: not a chain")
	}
	start(3)
	chain[1].kill()
	for _, i := range []int{0, 2, 3} {
		if err := <-errs[i]; err != nil {
			t.Errorf("pull on %s after %s died: %v", chain[i].name, chain[1].name, err)
		}
	}
	<-errs[1] // the killed node's client fails: that node is gone
	if f := chain[2].metric(t, "berth_p2p_piece_failures_total", nil); f == 0 {
		t.Errorf("%s reports no failed piece after the node before it died", chain[2].name)
	}
	if ratio := float64(up.BlobBytes()) / float64(size); ratio > 1.3 {
		t.Errorf("upstream sent %.2f copies with one node of the chain killed, want about 1", ratio)
	}
}

// TestPrivateImageDoesNotLeak: a client without credentials gets the
// registry's 401 even for blobs the node has cached, and the peer API
// refuses unsigned requests and peers that show no manifest.
func TestPrivateImageDoesNotLeak(t *testing.T) {
	up := testenv.StartRegistry(t, testenv.WithRegistryAuth(user, password))
	_, img := up.PushRandomImage(t, "private:v1", 2, 1<<20)
	nodes := startNodes(t, 2, up)
	if err := pull(t.Context(), nodes[0].ref(t, "private:v1"),
		&authn.Basic{Username: user, Password: password}); err != nil {
		t.Fatalf("authorized pull: %v", err)
	}
	layers, _ := img.Layers()
	ld, _ := layers[0].Digest()

	for _, auth := range []authn.Authenticator{authn.Anonymous,
		&authn.Basic{Username: user, Password: "wrong"}} {
		for _, nd := range nodes {
			err := pull(t.Context(), nd.ref(t, "private:v1"), auth)
			if err == nil || !strings.Contains(err.Error(), "401") && !strings.Contains(err.Error(), "UNAUTHORIZED") {
				t.Errorf("pull through %s without valid credentials: err = %v, want 401 from the registry", nd.name, err)
			}
		}
		req, _ := http.NewRequest(http.MethodGet,
			fmt.Sprintf("http://%s/v2/private/blobs/%s", nodes[0].mirror, ld), nil)
		if a, _ := auth.Authorization(); a != nil && a.Password != "" {
			req.SetBasicAuth(a.Username, a.Password)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("WWW-Authenticate") == "" {
			t.Errorf("cached blob GET without valid credentials: %s (WWW-Authenticate %q), want 401 with "+
				"the registry's challenge",
				resp.Status, resp.Header.Get("WWW-Authenticate"))
		}
	}

	piecePath := fmt.Sprintf("/p2p/v1/blobs/%s/pieces/0", ld)
	q := "size=1000&piece=262144&wait=0s"
	tests := []struct {
		name string
		key  []byte
		want int
	}{
		{"wrong key: no TLS connection", []byte("not the cluster key"), 0},
		{"signed, no manifest shown", nodes[1].key, http.StatusForbidden},
	}
	for _, tt := range tests {
		client, err := p2p.PeerClient(tt.key)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := p2p.SignedRequest(t.Context(), client, tt.key, "intruder", http.MethodGet,
			nodes[0].peer.Addr, piecePath, q, nil, nil)
		if tt.want == 0 {
			if err == nil {
				resp.Body.Close()
				t.Errorf("%s: peer API answered %s, want the TLS handshake refused", tt.name, resp.Status)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tt.want {
			t.Errorf("%s: peer API answered %s, want %d", tt.name, resp.Status, tt.want)
		}
	}
	// With the cluster's TLS identity but no signature: refused too.
	client, _ := p2p.PeerClient(nodes[1].key)
	resp, err := client.Get("https://" + nodes[0].peer.Addr + piecePath + "?" + q)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("unsigned request over the peer TLS: %s, want 401", resp.Status)
	}
	if got := nodes[0].metric(t, "berth_p2p_access_denied_total", nil); got < 3 {
		t.Errorf("berth_p2p_access_denied_total = %v, want at least 3", got)
	}
}

// TestFetchingPeerKilledMidTransfer: the node a peer is streaming a layer
// from dies; the pull still completes with the right bytes.
func TestFetchingPeerKilledMidTransfer(t *testing.T) {
	up := testenv.StartRegistry(t, testenv.WithEgressLimit(4<<20))
	_, img := up.PushRandomImage(t, "big:v1", 1, 16<<20)
	layers, _ := img.Layers()
	ld, _ := layers[0].Digest()
	// Pick the seed and the leecher among the nodes that do not track the
	// layer, so that killing the seed leaves the tracker alive.
	others := nonTrackers(startNodes(t, 3, up), ld.String())
	seed, leech := others[0], others[1]
	seedErr := make(chan error, 1)
	go func() { seedErr <- pull(t.Context(), seed.ref(t, "big:v1"), authn.Anonymous) }()
	waitFor(t, "the seed to have 3 MiB", func() bool { return up.BlobBytes() > 3<<20 })
	leechErr := make(chan error, 1)
	go func() { leechErr <- pull(t.Context(), leech.ref(t, "big:v1"), authn.Anonymous) }()
	waitFor(t, "the leecher to get pieces from the seed", func() bool {
		return leech.metric(t, "berth_p2p_bytes_total", map[string]string{"source": "peer"}) > 1<<20
	})
	seed.kill()
	if err := <-leechErr; err != nil {
		t.Fatalf("pull on %s after its source died: %v", leech.name, err)
	}
	<-seedErr // the killed node's client fails: that node is gone
	if f := leech.metric(t, "berth_p2p_piece_failures_total", nil) + leech.metric(t,
		"berth_p2p_upstream_requests_total", map[string]string{"kind": "blob_range"}); f == 0 {
		t.Errorf("the leecher reports no retry after its source died")
	}
}

// TestCorruptPeer: a peer serving corrupt pieces costs retries, never a
// corrupt layer or a failed pull.
func TestCorruptPeer(t *testing.T) {
	up := testenv.StartRegistry(t)
	up.PushRandomImage(t, "app:v1", 2, 2<<20)
	nodes := startNodes(t, 2, up, func(i int, c *p2p.Config) {
		if i == 0 {
			p2p.FaultCorruptUploads(c)
		}
	})
	if err := pull(t.Context(), nodes[0].ref(t, "app:v1"), authn.Anonymous); err != nil {
		t.Fatalf("pull on the first node: %v", err)
	}
	if err := pull(t.Context(), nodes[1].ref(t, "app:v1"), authn.Anonymous); err != nil {
		t.Fatalf("pull next to a corrupt peer: %v", err)
	}
	if got := nodes[1].metric(t, "berth_p2p_piece_failures_total",
		map[string]string{"reason": "corrupt"}); got == 0 {
		t.Errorf("no corrupt piece detected, but the peer flips a byte in every piece")
	}
}

// TestUpstreamDownAfterFirstNode: once one node has the image, a node that
// got the manifest can finish its pull with the registry down.
func TestUpstreamDownAfterFirstNode(t *testing.T) {
	up := testenv.StartRegistry(t, testenv.WithRegistryAuth(user, password))
	up.PushRandomImage(t, "app:v1", 3, 1<<20)
	nodes := startNodes(t, 3, up)
	auth := &authn.Basic{Username: user, Password: password}
	if err := pull(t.Context(), nodes[0].ref(t, "app:v1"), auth); err != nil {
		t.Fatalf("first pull: %v", err)
	}
	for _, nd := range nodes[1:] {
		img, err := remote.Image(nd.ref(t, "app:v1"), remote.WithAuth(auth))
		if err != nil {
			t.Fatalf("manifest through %s: %v", nd.name, err)
		}
		up.Stop()
		if err := readImage(img); err != nil {
			t.Errorf("blobs through %s with the registry down: %v", nd.name, err)
		}
		if err := up.Start(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestPreheat: after a preheat of two nodes, a client pull there is all
// cache hits and costs the upstream no blob bytes.
func TestPreheat(t *testing.T) {
	up := testenv.StartRegistry(t, testenv.WithRegistryAuth(user, password))
	ref, _ := up.PushRandomImage(t, "app:v2", 2, 1<<20)
	secrets := map[string]authn.AuthConfig{up.Host: {Username: user, Password: password}}
	nodes := startNodes(t, 3, up, func(_ int, c *p2p.Config) { c.PullSecrets = secrets })
	for _, nd := range nodes[:2] {
		body := fmt.Sprintf(`{"image": %q}`, ref)
		client, _ := p2p.PeerClient(nd.key)
		resp, err := p2p.SignedRequest(t.Context(), client, nd.key, "preheat-cli", http.MethodPost,
			nd.peer.Addr, "/p2p/v1/preheat", "", []byte(body), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("preheat on %s: %s", nd.name, resp.Status)
		}
	}
	client0, _ := p2p.PeerClient(nodes[0].key)
	bad, err := p2p.SignedRequest(t.Context(), client0, nodes[0].key, "preheat-cli", http.MethodPost,
		nodes[0].peer.Addr, "/p2p/v1/preheat", "", []byte(`{"image": "elsewhere.example/x:1"}`), nil)
	if err != nil {
		t.Fatal(err)
	}
	bad.Body.Close()
	if bad.StatusCode == http.StatusOK {
		t.Errorf("preheat of an image from a registry that is not mirrored succeeded")
	}
	before := up.BlobBytes()
	if err := pull(t.Context(), nodes[1].ref(t, "app:v2"),
		&authn.Basic{Username: user, Password: password}); err != nil {
		t.Fatal(err)
	}
	if got := up.BlobBytes() - before; got != 0 {
		t.Errorf("pull after preheat cost the upstream %d blob bytes, want 0", got)
	}
	if hits := nodes[1].metric(t, "berth_p2p_blob_requests_total",
		map[string]string{"result": "hit"}); hits < 3 {
		t.Errorf("cache hits after preheat = %v, want 3 (config + 2 layers)", hits)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// TestLyingPeer: a peer that corrupts pieces and announces digests of the
// corrupted bytes passes every piece check; the whole-blob check catches it,
// the blob is fetched again from the upstream, and no client ever completes
// a corrupt layer: a client reading while it happens has its transfer cut
// and its retry gets the verified blob.
func TestLyingPeer(t *testing.T) {
	up := testenv.StartRegistry(t)
	up.PushRandomImage(t, "app:v1", 1, 2<<20)
	nodes := startNodes(t, 2, up, func(i int, c *p2p.Config) {
		if i == 0 {
			p2p.FaultLyingUploads(c)
		}
	})
	if err := pull(t.Context(), nodes[0].ref(t, "app:v1"), authn.Anonymous); err != nil {
		t.Fatalf("pull on the first node: %v", err)
	}
	// pull() checks every layer against its digest: success means correct bytes.
	if err := pull(t.Context(), nodes[1].ref(t, "app:v1"), authn.Anonymous); err != nil {
		t.Logf("first pull next to a lying peer was cut (expected, the client retries): %v", err)
		if err := pull(t.Context(), nodes[1].ref(t, "app:v1"), authn.Anonymous); err != nil {
			t.Fatalf("retry next to a lying peer: %v", err)
		}
	}
	if got := nodes[1].metric(t, "berth_p2p_blob_verify_failures_total", nil); got == 0 {
		t.Errorf("the lying peer was not caught by the whole-blob check")
	}
}
