// Command registry runs the local cluster's OCI registry: the open core of
// Harbor (github.com/distribution/distribution/v3) with filesystem storage on
// a loopback address. hack/cluster/cluster.sh starts it; berth's images and
// the test apps' images are pushed to it, and the kubelet pulls through it.
//
// It counts what it serves, per repository, on /metrics
// (berth_registry_blob_bytes_served_total): the e2e tests check from it that
// a rollout over many nodes through p2p-puller took about one copy of an image
// from the registry, as Harbor's own traffic graphs would show.
//
// With --private-prefix and --private-credentials, the repositories under the
// prefix are private, as a Harbor project is: every request for them needs HTTP
// basic auth with those credentials, and is answered 401 with the registry's own
// error format otherwise. The rest stays anonymous.
package main

import (
	"context"
	"crypto/subtle"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry/handlers"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/filesystem"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

var (
	servedBytes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "berth_registry_blob_bytes_served_total",
		Help: "Bytes of blob bodies sent, by repository.",
	}, []string{"repository"})
	blobGets = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "berth_registry_blob_requests_total",
		Help: "Blob GET requests answered, by repository and status code.",
	}, []string{"repository", "code"})
)

// blobRepository is the repository of a blob GET (/v2/<name>/blobs/<digest>), or "".
func blobRepository(r *http.Request) string {
	if r.Method != http.MethodGet || !strings.HasPrefix(r.URL.Path, "/v2/") {
		return ""
	}
	name, _, ok := strings.Cut(strings.TrimPrefix(r.URL.Path, "/v2/"), "/blobs/")
	if !ok {
		return ""
	}
	return name
}

// countingWriter counts the body bytes of one response.
type countingWriter struct {
	http.ResponseWriter
	code int
	n    int64
}

func (w *countingWriter) WriteHeader(code int) { w.code = code; w.ResponseWriter.WriteHeader(code) }
func (w *countingWriter) Write(b []byte) (int, error) {
	n, err := w.ResponseWriter.Write(b)
	w.n += int64(n)
	return n, err
}

// counting serves next and counts the blob bytes it sends.
func counting(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		repo := blobRepository(r)
		if repo == "" {
			next.ServeHTTP(w, r)
			return
		}
		cw := &countingWriter{ResponseWriter: w, code: http.StatusOK}
		next.ServeHTTP(cw, r)
		servedBytes.WithLabelValues(repo).Add(float64(cw.n))
		blobGets.WithLabelValues(repo, fmt.Sprint(cw.code)).Inc()
	})
}

// private answers 401 to requests for repositories under prefix without the credentials
// (user:password). Compared in constant time; the realm is what clients show.
func private(prefix, credentials string, next http.Handler) http.Handler {
	user, password, _ := strings.Cut(credentials, ":")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/v2/"+prefix) {
			next.ServeHTTP(w, r)
			return
		}
		u, p, ok := r.BasicAuth()
		if ok && subtle.ConstantTimeCompare([]byte(u), []byte(user)) == 1 &&
			subtle.ConstantTimeCompare([]byte(p), []byte(password)) == 1 {
			next.ServeHTTP(w, r)
			return
		}
		w.Header().Set("WWW-Authenticate", `Basic realm="berth local registry"`)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = io.WriteString(
			w,
			`{"errors":[{"code":"UNAUTHORIZED","message":"authentication required","detail":null}]}`,
		)
	})
}

func main() {
	addr := flag.String("addr", "127.0.0.1:15000", "address to listen on")
	dir := flag.String("root", "", "directory holding the registry's blobs and manifests")
	prefix := flag.String(
		"private-prefix",
		"",
		"repositories under this prefix (e.g. berth-dev/private/) need --private-credentials",
	)
	creds := flag.String("private-credentials", "", "user:password for the private repositories")
	flag.Parse()
	if *dir == "" {
		fmt.Fprintln(os.Stderr, "registry: --root is required")
		os.Exit(2)
	}
	if (*prefix == "") != (*creds == "") || (*creds != "" && !strings.Contains(*creds, ":")) {
		fmt.Fprintln(
			os.Stderr,
			"registry: --private-prefix and --private-credentials (user:password) go together",
		)
		os.Exit(2)
	}
	if err := run(*addr, *dir, *prefix, *creds); err != nil {
		fmt.Fprintf(os.Stderr, "registry: %v\n", err)
		os.Exit(1)
	}
}

func run(addr, dir, privatePrefix, privateCredentials string) error {
	cfg := &configuration.Configuration{
		Storage: configuration.Storage{
			"filesystem": configuration.Parameters{"rootdirectory": dir},
			"delete":     configuration.Parameters{"enabled": true},
		},
	}
	cfg.HTTP.Addr = addr
	cfg.HTTP.Secret = fmt.Sprintf("berth-local-%d", time.Now().UnixNano()) // one instance: any secret will do
	cfg.Log.Level = "warn"
	cfg.Log.AccessLog.Disabled = true
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	reg := prometheus.NewRegistry()
	reg.MustRegister(servedBytes, blobGets)
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	var app http.Handler = handlers.NewApp(ctx, cfg)
	if privatePrefix != "" {
		app = private(privatePrefix, privateCredentials, app)
	}
	mux.Handle("/", counting(app))
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve on %s: %w", addr, err)
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return srv.Shutdown(sctx)
	}
}
