// Package daemon holds what every long-running berth binary shares: a root
// context cancelled by SIGINT/SIGTERM, and one HTTP server for /healthz,
// /readyz and /metrics that shuts down gracefully with that context.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"k8s.io/klog/v2"
)

// ContextualLogging turns klog's contextual logging back on, as a cobra PersistentPreRun:
// k8s.io/component-base/cli.Run turns it off before it runs the command, and berth's
// components hand their loggers, with their key/value pairs, down in contexts. Once per
// process: klog's switch is a plain global, and a second command in the same process (tests
// run several) would write it while the first one's goroutines read it.
func ContextualLogging(*cobra.Command, []string) {
	contextualLoggingOnce.Do(func() { klog.EnableContextualLogging(true) })
}

var contextualLoggingOnce sync.Once

// SignalContext returns a context cancelled on SIGINT or SIGTERM.
func SignalContext() (context.Context, context.CancelFunc) {
	return SignalContextFrom(context.Background())
}

// SignalContextFrom is SignalContext below parent, so that whoever runs a command (a test, with
// cobra's ExecuteContext) can stop it too.
func SignalContextFrom(parent context.Context) (context.Context, context.CancelFunc) {
	return signal.NotifyContext(parent, os.Interrupt, syscall.SIGTERM)
}

// Check reports nil when the daemon is healthy (or ready), an error saying why not otherwise.
type Check func(ctx context.Context) error

// Probes serves /healthz, /readyz and /metrics. The zero value is not usable: use NewProbes.
type Probes struct {
	Registry *prometheus.Registry

	mu      sync.RWMutex
	healthz map[string]Check
	readyz  map[string]Check
}

// NewProbes returns probes with a fresh registry that already holds the Go and process collectors.
func NewProbes() *Probes {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return &Probes{Registry: reg, healthz: map[string]Check{}, readyz: map[string]Check{}}
}

// AddHealthz registers a liveness check: failing means "restart me".
func (p *Probes) AddHealthz(name string, c Check) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.healthz[name] = c
}

// AddReadyz registers a readiness check: failing means "send me no work yet".
func (p *Probes) AddReadyz(name string, c Check) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.readyz[name] = c
}

// Handler returns the mux with /healthz, /readyz and /metrics.
func (p *Probes) Handler() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", p.serveChecks(func() map[string]Check { return p.healthz }))
	mux.HandleFunc("/readyz", p.serveChecks(func() map[string]Check { return p.readyz }))
	mux.Handle("/metrics", promhttp.HandlerFor(p.Registry, promhttp.HandlerOpts{Registry: p.Registry}))
	return mux
}

func (p *Probes) serveChecks(checks func() map[string]Check) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		p.mu.RLock()
		defer p.mu.RUnlock()
		failed := false
		body := ""
		for name, check := range checks() {
			if err := check(ctx); err != nil {
				failed = true
				body += fmt.Sprintf("[-]%s failed: %v\n", name, err)
				continue
			}
			body += fmt.Sprintf("[+]%s ok\n", name)
		}
		if failed {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_, _ = fmt.Fprint(w, body+map[bool]string{true: "not ok\n", false: "ok\n"}[failed])
	}
}

// Serve listens on addr and serves h until ctx is done, then shuts down
// gracefully. An empty addr disables the server and returns when ctx is done.
func Serve(ctx context.Context, addr string, h http.Handler) error {
	if addr == "" || addr == "0" {
		<-ctx.Done()
		return nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("failed to listen on %q for health and metrics: %w", addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx) // best effort: the process is exiting anyway
	}()
	klog.FromContext(ctx).Info("Serving health and metrics", "address", ln.Addr().String())
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("health and metrics server on %q: %w", addr, err)
	}
	return nil
}
