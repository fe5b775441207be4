// Command demo is the sample app of `make demo`: a small "shop" web server
// that uses every berth feature at once. It answers its check URL only after
// a start delay (like a JVM that takes time to boot), exposes /warm for the
// preOnline warm-up, records every visit in the shared volume (so pods on the
// same PVC see each other's visits), and opens a plain debug port on loopback
// for berth's debug proxy.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	addr := flag.String("addr", ":8080", "listen address")
	startDelay := flag.Duration("start-delay", 2*time.Second, "time before /check answers 200 (boot time)")
	data := flag.String("data", "/data", "shared volume: visits are appended to <data>/visits.log")
	debugAddr := flag.String("debug-addr", "127.0.0.1:5005", "plain TCP debug port on loopback (\"\" = none)")
	flag.Parse()
	host, _ := os.Hostname()
	log.SetFlags(log.LstdFlags | log.LUTC)
	log.Printf("demo shop %s starting (boot takes %s)", host, *startDelay)

	var warmed atomic.Bool
	booted := time.Now().Add(*startDelay)
	var mu sync.Mutex // serialises this pod's appends; other pods append to the same file
	visits := filepath.Join(*data, "visits.log")

	mux := http.NewServeMux()
	mux.HandleFunc("/check", func(w http.ResponseWriter, _ *http.Request) {
		if time.Now().Before(booted) {
			http.Error(w, "booting", http.StatusServiceUnavailable)
			return
		}
		// The shop is only healthy with its data: a dead volume (e.g. "transport endpoint is
		// not connected" after the node's storage client died) fails the check, the kubelet
		// restarts the container, and the restarted container gets the repaired mount.
		if _, err := os.Stat(filepath.Join(*data, ".")); err != nil {
			log.Printf("check: data volume unusable: %v", err)
			http.Error(w, "data volume unusable: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/warm", func(w http.ResponseWriter, _ *http.Request) {
		time.Sleep(500 * time.Millisecond) // loading caches
		warmed.Store(true)
		log.Printf("caches warmed")
		fmt.Fprintln(w, "warmed")
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		n, err := visit(visits, host)
		mu.Unlock()
		if err != nil {
			log.Printf("visit %s: %v", r.URL.Path, err)
			http.Error(w, err.Error(), http.StatusInsufficientStorage)
			return
		}
		log.Printf("visit #%d from %s", n, r.RemoteAddr)
		fmt.Fprintf(w, "shop %s: visit #%d (shared by every pod of the volume), warmed=%v\n", host, n, warmed.Load())
	})

	if *debugAddr != "" {
		ln, err := net.Listen("tcp", *debugAddr)
		if err != nil {
			log.Fatalf("debug port: %v", err)
		}
		go serveDebug(ln)
	}
	srv := &http.Server{Addr: *addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		log.Printf("SIGTERM received, shutting down")
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	log.Printf("listening on %s, debug port %s", *addr, *debugAddr)
	if err := srv.ListenAndServe(); err != nil && err != http.ErrServerClosed {
		log.Fatal(err)
	}
}

// visit appends one line to the shared log and returns the number of lines.
func visit(path, host string) (int, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR|os.O_APPEND, 0o644)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	if _, err := fmt.Fprintf(f, "%s %s\n", time.Now().UTC().Format(time.RFC3339Nano), host); err != nil {
		return 0, err
	}
	if _, err := f.Seek(0, 0); err != nil {
		return 0, err
	}
	n, s := 0, bufio.NewScanner(f)
	for s.Scan() {
		n++
	}
	return n, s.Err()
}

// serveDebug is a stand-in debugger endpoint: it greets and echoes lines, so a
// session through berth's debug proxy can be seen end to end.
func serveDebug(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			log.Printf("debugger attached from %s", c.RemoteAddr())
			fmt.Fprintln(c, "demo-debugger ready")
			s := bufio.NewScanner(c)
			for s.Scan() {
				fmt.Fprintln(c, "ack "+strings.TrimSpace(s.Text()))
			}
			log.Printf("debugger detached")
		}()
	}
}
