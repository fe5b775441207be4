//go:build integration

// Integration tests of p2p-puller against real components: a distribution/v3
// registry (internal/testenv) with images made by go-containerregistry, N
// pullers on loopback ports in this process, pulls by go-containerregistry
// and by Debian's containerd (apt: containerd, runc; `make deps`).
package p2p_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/pkg/p2p"
	"github.com/berth-dev/berth/pkg/p2p/peers"
)

// node is one in-process p2p-puller.
type node struct {
	name   string
	puller *p2p.Puller
	mirror string // host:port of the mirror
	peer   peers.Peer
	reg    *prometheus.Registry
	key    []byte
	cache  string
	stop   context.CancelFunc
	done   chan error
}

// startNodes starts n pullers that know each other (static peer list) and
// mirror the registry; they stop when the test ends.
func startNodes(t testing.TB, n int, upstream *testenv.Registry, opts ...func(i int, c *p2p.Config)) []*node {
	t.Helper()
	return startNodesURL(t, n, upstream.URL, opts...)
}

// startNodesURL is startNodes for an upstream at url (e.g. a front in
// front of a registry).
func startNodesURL(t testing.TB, n int, url string, opts ...func(i int, c *p2p.Config)) []*node {
	t.Helper()
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	reg, err := p2p.ParseRegistry(url)
	if err != nil {
		t.Fatal(err)
	}
	var all peers.Static
	nodes := make([]*node, n)
	for i := range nodes {
		nd := &node{name: fmt.Sprintf("node-%d", i), key: key, reg: prometheus.NewRegistry(),
			done: make(chan error, 1)}
		nd.mirror = fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
		nd.peer = peers.Peer{Name: nd.name, Addr: fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))}
		all = append(all, nd.peer)
		nodes[i] = nd
	}
	for i, nd := range nodes {
		nd.cache = t.TempDir()
		cfg := p2p.Config{Self: nd.peer, MirrorAddr: nd.mirror, PeerAddr: nd.peer.Addr,
			Registries: []p2p.Registry{reg},
			Discovery:  all, CacheDir: nd.cache, PeerKey: key, Registerer: nd.reg, PieceSize: 256 << 10,
			PieceWait: 10 * time.Second}
		for _, o := range opts {
			o(i, &cfg)
		}
		p, err := p2p.New(cfg)
		if err != nil {
			t.Fatalf("p2p.New(%s): %v", nd.name, err)
		}
		nd.puller = p
		ctx, cancel := context.WithCancel(context.Background())
		nd.stop = cancel
		go func() { nd.done <- p.Run(ctx) }()
		t.Cleanup(nd.kill)
	}
	for _, nd := range nodes {
		for _, addr := range []string{nd.mirror, nd.peer.Addr} {
			if err := nd.waitListening(addr); err != nil {
				t.Fatal(err)
			}
		}
	}
	return nodes
}

// waitListening waits until addr accepts connections, or fails with the puller's own error when it
// stopped (a port taken, for example).
func (nd *node) waitListening(addr string) error {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-nd.done:
			nd.done <- err // for kill
			return fmt.Errorf("puller %s stopped before it listened on %s: %v", nd.name, addr, err)
		default:
		}
		// A TCP connect: the peer API speaks TLS, the mirror plain HTTP.
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("nothing listens on %s after 10s (puller %s)", addr, nd.name)
}

// kill stops a node at once: listeners closed, downloads aborted.
func (nd *node) kill() {
	nd.stop()
	<-nd.done
	nd.done <- nil // let a second kill return
}

// ref returns repoTag's reference on this node's mirror.
func (nd *node) ref(t testing.TB, repoTag string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(nd.mirror+"/"+repoTag, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// metric sums the samples of a metric whose labels include want.
func (nd *node) metric(t testing.TB, metric string, want map[string]string) float64 {
	t.Helper()
	mfs, err := nd.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != metric {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for k, v := range want {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == k && lp.GetValue() == v {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			case m.Gauge != nil:
				sum += m.Gauge.GetValue()
			case m.Histogram != nil:
				sum += float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return sum
}

// pull pulls ref through a mirror with go-containerregistry, reads every blob
// and checks each against its digest, like a container runtime would.
func pull(ctx context.Context, ref name.Reference, auth authn.Authenticator) error {
	img, err := remote.Image(ref, remote.WithAuth(auth), remote.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("manifest of %s: %w", ref, err)
	}
	return readImage(img)
}

func readImage(img v1.Image) error {
	if _, err := img.RawConfigFile(); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	errs := make(chan error, len(layers))
	for _, l := range layers {
		go func() { errs <- readLayer(l) }()
	}
	var all []error
	for range layers {
		all = append(all, <-errs)
	}
	return errors.Join(all...)
}

func readLayer(l v1.Layer) error {
	want, err := l.Digest()
	if err != nil {
		return err
	}
	rc, err := l.Compressed()
	if err != nil {
		return fmt.Errorf("layer %s: %w", want, err)
	}
	defer rc.Close()
	// go-containerregistry's remote layer reader checks the digest as the
	// bytes arrive and fails the read at EOF on a mismatch: hashing here too
	// would only double every client's CPU in the benchmark.
	if _, err := io.Copy(io.Discard, rc); err != nil {
		return fmt.Errorf("layer %s: %w", want, err)
	}
	return nil
}

func imageSize(t testing.TB, img v1.Image) int64 {
	t.Helper()
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	size := m.Config.Size
	for _, l := range m.Layers {
		size += l.Size
	}
	return size
}

// nonTrackers returns the nodes other than the tracker of digest d (the live
// peer ranked first for it), in their order.
func nonTrackers(nodes []*node, d string) []*node {
	var list []peers.Peer
	for _, nd := range nodes {
		list = append(list, nd.peer)
	}
	tracker := peers.Rank(d, list)[0].Name
	var out []*node
	for _, nd := range nodes {
		if nd.name != tracker {
			out = append(out, nd)
		}
	}
	return out
}
