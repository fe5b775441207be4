package testenv

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry/handlers"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/sirupsen/logrus"
	"golang.org/x/crypto/bcrypt"
	"golang.org/x/time/rate"

	// The registry's auth and storage drivers register themselves.
	_ "github.com/distribution/distribution/v3/registry/auth/htpasswd"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/filesystem"
)

// Registry is a real distribution/v3 registry served in-process on a free
// loopback port, with filesystem storage in a temp dir. It counts the blob
// bytes it sends and can shape its egress, so tests and benchmarks can see
// what a pull cost the upstream.
type Registry struct {
	// Host is "127.0.0.1:<port>", as in image references.
	Host string
	// URL is "http://127.0.0.1:<port>".
	URL string
	// User and Password are set when the registry requires basic auth.
	User, Password string

	handler   http.Handler
	limiter   *rate.Limiter
	blobBytes atomic.Int64
	blobGets  atomic.Int64

	mu  sync.Mutex
	srv *http.Server
}

// RegistryOption configures StartRegistry.
type RegistryOption func(*registryOptions)

type registryOptions struct {
	user, password string
	bytesPerSec    int64
}

// WithRegistryAuth makes the registry require HTTP basic auth (htpasswd).
func WithRegistryAuth(user, password string) RegistryOption {
	return func(o *registryOptions) { o.user, o.password = user, password }
}

// WithEgressLimit shapes everything the registry sends, over all
// connections together, to bytesPerSec (like a registry's uplink).
func WithEgressLimit(bytesPerSec int64) RegistryOption {
	return func(o *registryOptions) { o.bytesPerSec = bytesPerSec }
}

// StartRegistry starts a registry and stops it when the test ends.
func StartRegistry(t testing.TB, opts ...RegistryOption) *Registry {
	t.Helper()
	var o registryOptions
	for _, opt := range opts {
		opt(&o)
	}
	dir := t.TempDir()
	cfg := &configuration.Configuration{}
	cfg.Storage = configuration.Storage{
		"filesystem":  configuration.Parameters{"rootdirectory": filepath.Join(dir, "storage")},
		"maintenance": configuration.Parameters{"uploadpurging": map[any]any{"enabled": false}},
	}
	cfg.HTTP.Secret = "berth-test-registry"
	cfg.Log.AccessLog.Disabled = true
	if o.user != "" {
		hash, err := bcrypt.GenerateFromPassword([]byte(o.password), bcrypt.MinCost)
		if err != nil {
			t.Fatalf("failed to hash registry password: %v", err)
		}
		htpasswd := filepath.Join(dir, "htpasswd")
		if err := os.WriteFile(htpasswd, []byte(o.user+":"+string(hash)+"\n"), 0o600); err != nil {
			t.Fatalf("failed to write htpasswd: %v", err)
		}
		cfg.Auth = configuration.Auth{"htpasswd": configuration.Parameters{"realm": "berth-test",
			"path": htpasswd}}
	}
	// The registry logs every 404 of a push at error level; BERTH_REGISTRY_LOG=1 shows them.
	if os.Getenv("BERTH_REGISTRY_LOG") == "" {
		logrus.SetOutput(io.Discard)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &Registry{User: o.user, Password: o.password, handler: handlers.NewApp(ctx, cfg)}
	if o.bytesPerSec > 0 {
		r.limiter = rate.NewLimiter(rate.Limit(o.bytesPerSec), 64<<10)
	}
	port := FreePort(t)
	r.Host = fmt.Sprintf("127.0.0.1:%d", port)
	r.URL = "http://" + r.Host
	if err := r.Start(); err != nil {
		t.Fatalf("failed to start registry: %v", err)
	}
	t.Cleanup(func() {
		r.Stop()
		cancel()
	})
	return r
}

// Start (re)starts serving on the registry's port, e.g. after Stop.
func (r *Registry) Start() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.srv != nil {
		return nil
	}
	var ln net.Listener
	var err error
	for range 50 { // the port of a just-closed listener can take a moment to come back
		if ln, err = net.Listen("tcp", r.Host); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("failed to listen on %s: %w", r.Host, err)
	}
	r.srv = &http.Server{Handler: http.HandlerFunc(r.serve), ReadHeaderTimeout: 10 * time.Second}
	srv := r.srv
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fmt.Fprintf(os.Stderr, "test registry %s: %v\n", r.Host, err)
		}
	}()
	return nil
}

// Stop closes the listener and every connection at once: the registry is
// "down" (connection refused) until Start.
func (r *Registry) Stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.srv != nil {
		_ = r.srv.Close() // closing a test server: nothing to report
		r.srv = nil
	}
}

// BlobBytes returns the blob bytes sent since start (or ResetCounters).
func (r *Registry) BlobBytes() int64 { return r.blobBytes.Load() }

// BlobGets returns the blob GET requests answered since start (or ResetCounters).
func (r *Registry) BlobGets() int64 { return r.blobGets.Load() }

// ResetCounters zeroes BlobBytes and BlobGets.
func (r *Registry) ResetCounters() {
	r.blobBytes.Store(0)
	r.blobGets.Store(0)
}

func (r *Registry) serve(w http.ResponseWriter, req *http.Request) {
	cw := &countingWriter{ResponseWriter: w, ctx: req.Context(), limiter: r.limiter}
	if req.Method == http.MethodGet && strings.Contains(req.URL.Path, "/blobs/") {
		cw.counter = &r.blobBytes
		r.blobGets.Add(1)
	}
	r.handler.ServeHTTP(cw, req)
}

// countingWriter counts and shapes a response body.
type countingWriter struct {
	http.ResponseWriter
	ctx     context.Context
	counter *atomic.Int64
	limiter *rate.Limiter
}

func (c *countingWriter) Write(b []byte) (int, error) {
	written := 0
	for len(b) > 0 {
		n := len(b)
		if c.limiter != nil {
			n = min(n, c.limiter.Burst())
			if err := c.limiter.WaitN(c.ctx, n); err != nil {
				return written, err
			}
		}
		m, err := c.ResponseWriter.Write(b[:n])
		written += m
		if c.counter != nil {
			c.counter.Add(int64(m))
		}
		if err != nil {
			return written, err
		}
		b = b[n:]
	}
	return written, nil
}

// Flush lets streaming handlers flush through the wrapper.
func (c *countingWriter) Flush() {
	if f, ok := c.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// PushRandomImage pushes an image of `layers` layers of about layerBytes
// random (incompressible) bytes each to repo:tag and returns its reference
// ("127.0.0.1:<port>/repo:tag") and the image.
func (r *Registry) PushRandomImage(t testing.TB, repoTag string, layers int,
	layerBytes int64) (string, v1.Image) {
	t.Helper()
	img, err := random.Image(layerBytes, int64(layers))
	if err != nil {
		t.Fatalf("failed to make a random image: %v", err)
	}
	ref := r.Host + "/" + repoTag
	tag, err := name.NewTag(ref, name.Insecure)
	if err != nil {
		t.Fatalf("invalid reference %q: %v", ref, err)
	}
	auth := authn.Anonymous
	if r.User != "" {
		auth = &authn.Basic{Username: r.User, Password: r.Password}
	}
	if err := remote.Write(tag, img, remote.WithAuth(auth)); err != nil {
		t.Fatalf("failed to push %s: %v", ref, err)
	}
	return ref, img
}
