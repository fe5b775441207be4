package hook

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	"k8s.io/klog/v2"
)

// Sidecar is the berth-sidecar native sidecar: preOnline, the online marker,
// the readiness and debug-aware liveness endpoints and the debug proxy.
type Sidecar struct {
	// Listen is the address of /healthz /readyz /online /livez.
	Listen string
	// CheckURL is the app's check URL (must answer 2xx when the app is healthy).
	CheckURL string
	// LiveURL is what /livez checks, the app's own liveness URL; empty means CheckURL.
	LiveURL string
	// CheckHeaders and LiveHeaders ("Name: value") are sent with CheckURL and LiveURL: the
	// httpHeaders of the app's probes (a "Host" entry sets the request's Host).
	CheckHeaders, LiveHeaders []string
	// CheckTimeout bounds one request to CheckURL.
	CheckTimeout time.Duration
	// PollInterval is how often CheckURL is polled.
	PollInterval time.Duration
	// OfflineAfter consecutive check failures of an online app take it offline (marker removed) until
	// it recovers.
	OfflineAfter int
	// Marker is the online marker file; empty disables preOnline.
	Marker string
	// PreOnline is the warm-up script; nil means none.
	PreOnline *Script
	// DebugListen and DebugTarget enable the debug proxy when both are set.
	DebugListen, DebugTarget string

	client            *http.Client
	checkHdr, liveHdr http.Header
	proxy             *DebugProxy
	online            atomic.Bool
}

func (s *Sidecar) defaults() error {
	if s.Listen == "" || s.CheckURL == "" {
		return errors.New("sidecar needs --listen and --check-url")
	}
	if (s.DebugListen == "") != (s.DebugTarget == "") {
		return errors.New("give both --debug-listen and --debug-target, or neither")
	}
	if s.PreOnline != nil {
		if err := s.PreOnline.Validate(); err != nil {
			return fmt.Errorf("preOnline script: %w", err)
		}
		if s.Marker == "" {
			return errors.New("a preOnline script needs --marker")
		}
	}
	if s.LiveURL == "" {
		s.LiveURL, s.LiveHeaders = s.CheckURL, s.CheckHeaders
	}
	var err error
	if s.checkHdr, err = parseHeaders(s.CheckHeaders); err != nil {
		return fmt.Errorf("--check-header: %w", err)
	}
	if s.liveHdr, err = parseHeaders(s.LiveHeaders); err != nil {
		return fmt.Errorf("--live-header: %w", err)
	}
	if s.CheckTimeout <= 0 {
		s.CheckTimeout = 900 * time.Millisecond
	}
	if s.PollInterval <= 0 {
		s.PollInterval = time.Second
	}
	if s.OfflineAfter <= 0 {
		s.OfflineAfter = 3
	}
	// The check URL is the app's own, on loopback, often with a self-signed certificate.
	s.client = &http.Client{Timeout: s.CheckTimeout, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true},
		//nolint:gosec // loopback health check of the pod's own app
		DisableKeepAlives: true,
	}}
	return nil
}

// Run serves until ctx is done. On the way out it removes the marker.
func (s *Sidecar) Run(ctx context.Context) error {
	if err := s.defaults(); err != nil {
		return err
	}
	g, ctx := errgroup.WithContext(ctx)
	// The proxy is set before the HTTP server starts: /livez reads s.proxy with no lock.
	var dln net.Listener
	if s.DebugTarget != "" {
		var err error
		if dln, err = net.Listen("tcp", s.DebugListen); err != nil {
			return fmt.Errorf("failed to listen for the debug proxy on %q: %w", s.DebugListen, err)
		}
		s.proxy = &DebugProxy{Target: s.DebugTarget}
	}
	ln, err := net.Listen("tcp", s.Listen)
	if err != nil {
		if dln != nil {
			_ = dln.Close()
		}
		return fmt.Errorf("failed to listen on %q: %w", s.Listen, err)
	}
	klog.FromContext(ctx).Info("Sidecar serving /healthz /readyz /online /livez", "address",
		ln.Addr().String(), "checkURL", s.CheckURL, "liveURL", s.LiveURL, "marker", s.Marker,
		"debugProxy", s.DebugListen)
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 5 * time.Second}
	g.Go(func() error {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("sidecar HTTP server: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-ctx.Done()
		return srv.Shutdown(context.WithoutCancel(ctx))
	})
	if s.proxy != nil {
		g.Go(func() error { return s.proxy.Serve(ctx, dln) })
	}
	if s.Marker != "" {
		g.Go(func() error { return s.preOnlineLoop(ctx) })
	}
	err = g.Wait()
	if s.Marker != "" {
		s.takeOffline(ctx, "sidecar stopping")
	}
	return err
}

// Handler serves the sidecar's endpoints:
//
//	/healthz  the sidecar itself is alive
//	/readyz   always 200 (readiness of a debug-only sidecar)
//	/online   200 only once preOnline is done and the marker exists
//	/livez    200 when the liveness URL answers 2xx, or a debug session is attached to a live app
func (s *Sidecar) Handler() http.Handler {
	mux := http.NewServeMux()
	ok := func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") }
	mux.HandleFunc("/healthz", ok)
	mux.HandleFunc("/readyz", ok)
	mux.HandleFunc("/online", func(w http.ResponseWriter, _ *http.Request) {
		if s.online.Load() && exists(s.Marker) {
			_, _ = io.WriteString(w, "online\n")
			return
		}
		http.Error(w, "offline: preOnline not done or marker removed", http.StatusServiceUnavailable)
	})
	mux.HandleFunc("/livez", func(w http.ResponseWriter, r *http.Request) {
		if s.proxy != nil && s.proxy.Attached() {
			_, _ = io.WriteString(w, "ok: debug session attached to a live app\n")
			return
		}
		if err := s.get(r.Context(), s.LiveURL, s.liveHdr); err != nil {
			http.Error(w, "liveness URL failed and no debug session: "+err.Error(),
				http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok: liveness URL answered\n")
	})
	return mux
}

// check GETs the check URL once and wants a 2xx.
func (s *Sidecar) check(ctx context.Context) error { return s.get(ctx, s.CheckURL, s.checkHdr) }

// parseHeaders reads "Name: value" entries.
func parseHeaders(entries []string) (http.Header, error) {
	h := http.Header{}
	for _, e := range entries {
		name, value, ok := strings.Cut(e, ":")
		if !ok || strings.TrimSpace(name) == "" {
			return nil, fmt.Errorf("header %q: want \"Name: value\", e.g. \"X-Probe: berth\"", e)
		}
		h.Add(strings.TrimSpace(name), strings.TrimSpace(value))
	}
	return h, nil
}

// get GETs u once with the headers hdr and wants a 2xx.
func (s *Sidecar) get(ctx context.Context, u string, hdr http.Header) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fmt.Errorf("bad URL %q: %w", u, err)
	}
	for name, values := range hdr {
		req.Header[name] = values
	}
	if host := hdr.Get("Host"); host != "" {
		req.Host = host // net/http sends req.Host, not a Host entry of the header map
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // drain for a clean close
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("%s answered %d", u, resp.StatusCode)
	}
	return nil
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
