// Command registry runs the local cluster's OCI registry: the open core of
// Harbor (github.com/distribution/distribution/v3) with filesystem storage on
// a loopback address. hack/cluster/cluster.sh starts it; berth's images and
// the test apps' images are pushed to it, and the kubelet pulls through it.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/filesystem"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:15000", "address to listen on")
	dir := flag.String("root", "", "directory holding the registry's blobs and manifests")
	flag.Parse()
	if *dir == "" {
		fmt.Fprintln(os.Stderr, "registry: --root is required")
		os.Exit(2)
	}
	if err := run(*addr, *dir); err != nil {
		fmt.Fprintf(os.Stderr, "registry: %v\n", err)
		os.Exit(1)
	}
}

func run(addr, dir string) error {
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
	reg, err := registry.NewRegistry(ctx, cfg)
	if err != nil {
		return fmt.Errorf("configure registry: %w", err)
	}
	errc := make(chan error, 1)
	go func() { errc <- reg.ListenAndServe() }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve on %s: %w", addr, err)
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return reg.Shutdown(sctx)
	}
}
