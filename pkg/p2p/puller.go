package p2p

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"
	"golang.org/x/time/rate"
	"k8s.io/klog/v2"

	"github.com/berth-dev/berth/pkg/p2p/cache"
)

// Puller is one node's p2p-puller: the loopback mirror and the peer API.
type Puller struct {
	cfg        Config
	cache      *cache.Cache
	grants     *grants
	tracker    *tracker
	m          *metrics
	client     *http.Client // upstream, with the client's credentials
	peerClient *http.Client
	upLim      *rate.Limiter
	down       *rate.Limiter
	bufs       *bufPool

	// sums holds the verified piece digests of committed blobs, so that
	// serving a cached piece to a peer costs no hashing (own lock: the
	// cache's eviction callback takes it).
	sumsMu sync.Mutex
	sums   map[digest.Digest]*pieceSums

	// origins are the repositories (registry/repo) the upstream confirmed
	// hold each blob of this node (origins.go).
	originsMu sync.Mutex
	origins   map[digest.Digest][]string

	nonces *nonceCache // peer requests seen within the signature window

	mu        sync.Mutex
	downloads map[digest.Digest]*download
}

// lifetimeKey carries, in every request's context, the context of the Run serving it: a
// download outlives the request that started it, but not the puller.
type lifetimeKey struct{}

// lifetime returns the context downloads started by a request with ctx run on: Run's, or,
// for a handler served without Run, ctx without its cancellation.
func lifetime(ctx context.Context) context.Context {
	if life, ok := ctx.Value(lifetimeKey{}).(context.Context); ok {
		return life
	}
	return context.WithoutCancel(ctx)
}

// New validates cfg, opens the cache and returns a Puller; Run serves it.
func New(cfg Config) (*Puller, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	c, err := cache.Open(cfg.CacheDir, cfg.CacheMaxBytes, cfg.GCHigh, cfg.GCLow)
	if err != nil {
		return nil, err
	}
	peerClient, err := newPeerClient(cfg.PeerKey, cfg.Transport)
	if err != nil {
		return nil, err
	}
	p := &Puller{cfg: cfg, cache: c, grants: newGrants(cfg.GrantTTL), tracker: newTracker(),
		client:     &http.Client{Transport: cfg.Transport},
		peerClient: peerClient,
		upLim:      newLimiter(cfg.UploadBytesPerSec), down: newLimiter(cfg.DownloadBytesPerSec),
		bufs: newBufPool(cfg.PieceSize), sums: map[digest.Digest]*pieceSums{},
		origins: map[digest.Digest][]string{}, nonces: newNonceCache(),
		downloads: map[digest.Digest]*download{}}
	p.m = newMetrics(cfg.Registerer, func() float64 { return float64(c.Size()) },
		func() float64 { return float64(len(cfg.Discovery.Peers())) })
	c.OnEvict = func(d digest.Digest, _ int64) {
		p.m.evictions.Inc()
		p.sumsMu.Lock()
		delete(p.sums, d)
		p.sumsMu.Unlock()
		p.forgetOrigins(d)
	}
	return p, nil
}

// Handler returns the client-facing mirror handler.
func (p *Puller) Handler() http.Handler { return p }

// PeerHandler returns the peer API handler.
func (p *Puller) PeerHandler() http.Handler { return p.peerHandler() }

// Run serves the mirror and the peer API until ctx is done. When it returns,
// downloads in progress are aborted (their temp files removed).
func (p *Puller) Run(ctx context.Context) error {
	life, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	life = klog.NewContext(life, klog.FromContext(ctx).WithValues("node", p.cfg.Self.Name))
	life = context.WithValue(life, lifetimeKey{}, life)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { p.grants.run(gctx); return nil })
	serverTLS, _, err := PeerTLS(p.cfg.PeerKey)
	if err != nil {
		return err
	}
	for _, s := range []struct {
		name, addr string
		h          http.Handler
		tls        *tls.Config
	}{{"mirror", p.cfg.MirrorAddr, p, nil}, {"peer API", p.cfg.PeerAddr, p.peerHandler(), serverTLS}} {
		ln, err := net.Listen("tcp", s.addr)
		if err != nil {
			return fmt.Errorf("failed to listen on %q for the %s: %w", s.addr, s.name, err)
		}
		if s.tls != nil {
			ln = tls.NewListener(ln, s.tls)
		}
		srv := &http.Server{Handler: s.h, ReadHeaderTimeout: 10 * time.Second,
			BaseContext: func(net.Listener) context.Context { return life }}
		klog.FromContext(ctx).Info("Serving", "what", s.name, "address", ln.Addr().String())
		g.Go(func() error {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("%s on %q: %w", s.name, s.addr, err)
			}
			return nil
		})
		g.Go(func() error {
			<-gctx.Done()
			// Abort downloads and long-polls first: requests waiting on them end
			// at once. Serves from the cache get a short grace; containerd
			// falls back to the registry for anything cut.
			cancel()
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			defer cancel()
			_ = srv.Shutdown(sctx) // best effort: then Close cuts what is left
			return srv.Close()
		})
	}
	return g.Wait()
}

// CacheSize returns the bytes held by the blob cache.
func (p *Puller) CacheSize() int64 { return p.cache.Size() }
