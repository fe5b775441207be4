package p2pbench

import (
	"errors"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"time"
)

// Front is the registry's host: a reverse proxy listening inside the
// registry namespace in front of a registry served elsewhere (loopback),
// counting the blob bytes it sends: what a pull cost the registry.
type Front struct {
	blobBytes atomic.Int64
	srv       *http.Server
}

// NewFront serves ln by proxying to upstream (e.g. "http://127.0.0.1:5000").
func NewFront(ln net.Listener, upstream string) (*Front, error) {
	u, err := url.Parse(upstream)
	if err != nil {
		return nil, err
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.Transport = &http.Transport{MaxIdleConnsPerHost: 256, DisableCompression: true}
	f := &Front{}
	f.srv = &http.Server{ReadHeaderTimeout: 10 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") {
				w = &counting{ResponseWriter: w, n: &f.blobBytes}
			}
			rp.ServeHTTP(w, r)
		})}
	go func() {
		if err := f.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			panic("registry front: " + err.Error()) // a benchmark without its registry measures nothing
		}
	}()
	return f, nil
}

// BlobBytes returns the blob bytes sent since the last Reset.
func (f *Front) BlobBytes() int64 { return f.blobBytes.Load() }

// Reset zeroes BlobBytes.
func (f *Front) Reset() { f.blobBytes.Store(0) }

// Close stops serving.
func (f *Front) Close() error { return f.srv.Close() }

type counting struct {
	http.ResponseWriter
	n *atomic.Int64
}

func (c *counting) Write(b []byte) (int, error) {
	m, err := c.ResponseWriter.Write(b)
	c.n.Add(int64(m))
	return m, err
}

// Flush lets the proxy stream through the wrapper.
func (c *counting) Flush() {
	if f, ok := c.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}
