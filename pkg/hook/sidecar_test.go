package hook

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

// TestSidecarLivez runs the sidecar in-process (so `go test -race` sees /livez
// and the debug proxy together): /livez follows the liveness URL, not the
// check URL, and a debugger attached through the proxy keeps it healthy.
func TestSidecarLivez(t *testing.T) {
	t.Parallel()
	var alive atomic.Bool
	alive.Store(true)
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/ready":
			http.Error(w, "not ready", http.StatusServiceUnavailable) // readiness failing must not matter to /livez
		case r.URL.Path == "/alive" && alive.Load():
			_, _ = io.WriteString(w, "ok")
		default:
			http.Error(w, "hung", http.StatusServiceUnavailable)
		}
	}))
	defer app.Close()
	debugTarget := listen(t) // the app's debug port: accepts and holds connections
	go func() {
		for {
			c, err := debugTarget.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	s := &Sidecar{
		Listen: freeAddr(t), CheckURL: app.URL + "/ready", LiveURL: app.URL + "/alive",
		DebugListen: freeAddr(t), DebugTarget: debugTarget.Addr().String(),
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() { cancel(); <-done }()

	livez := func() int {
		resp, err := http.Get("http://" + s.Listen + "/livez")
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	waitFor(t, "the sidecar to serve", func() bool { return livez() != 0 })
	if code := livez(); code != http.StatusOK {
		t.Fatalf("/livez with the liveness URL answering 200 (readiness 503): got %d, want 200", code)
	}
	alive.Store(false)
	if code := livez(); code != http.StatusServiceUnavailable {
		t.Fatalf("/livez with the app hung and no debugger: got %d, want 503", code)
	}
	dbg, err := net.Dial("tcp", s.DebugListen)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "/livez healthy with a debugger attached", func() bool { return livez() == http.StatusOK })
	dbg.Close()
	waitFor(t, "/livez failing once the debugger left",
		func() bool { return livez() == http.StatusServiceUnavailable })
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	return ln
}

// freeAddr returns a loopback address nothing listens on (the sidecar takes addresses, not listeners).
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

// TestSidecarSendsProbeHeaders: the check and liveness requests carry the probe's httpHeaders
// (a Host entry as the request's Host) and its query, as the kubelet's probe would.
func TestSidecarSendsProbeHeaders(t *testing.T) {
	t.Parallel()
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Probe") != "berth" || r.Host != "shop.internal" || r.URL.Query().Get("deep") != "1" {
			http.Error(w, "wrong request", http.StatusForbidden)
			return
		}
		_, _ = io.WriteString(w, "ok")
	}))
	defer app.Close()
	s := &Sidecar{Listen: freeAddr(t), CheckURL: app.URL + "/check?deep=1",
		CheckHeaders: []string{"X-Probe: berth", "Host: shop.internal"}}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() { cancel(); <-done }()
	waitFor(t, "/livez to pass with the probe's headers", func() bool {
		resp, err := http.Get("http://" + s.Listen + "/livez")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	if _, err := parseHeaders([]string{"no colon"}); err == nil {
		t.Error("a header without a colon is accepted")
	}
}
