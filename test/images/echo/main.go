// Command echo is the e2e suite's smallest app: an HTTP server that answers
// with its pod name and logs every request, so tests can tell which pod served
// them. The image also carries busybox for `kubectl exec`. With -lock it instead takes a POSIX
// (fcntl) write lock on a file, as databases do, holds it and exits: the storage tests use it
// across nodes (busybox has no flock).
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	addr := flag.String("addr", ":8080", "listen address")
	lock := flag.String("lock", "", "take a write lock on this file, hold it for -hold, exit")
	hold := flag.Duration("hold", 0, "how long -lock holds the lock")
	nonblock := flag.Bool("nonblock", false, "with -lock: exit 1 at once when another holds it")
	flag.Parse()
	if *lock != "" {
		os.Exit(lockFile(*lock, *hold, *nonblock))
	}
	host, _ := os.Hostname()
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		log.Printf("request %s %s from %s", r.Method, r.URL.Path, r.RemoteAddr)
		fmt.Fprintf(w, "hello from %s\n", host)
	})
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
	log.Printf("echo server %s listening on %s", host, *addr)
	if err := srv.ListenAndServe(); err != nil && err != http.ErrServerClosed {
		log.Fatal(err)
	}
}

// lockFile takes a whole-file fcntl write lock on path, says "locked", holds it for hold.
func lockFile(path string, hold time.Duration, nonblock bool) int {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	defer f.Close()
	cmd := syscall.F_SETLKW
	if nonblock {
		cmd = syscall.F_SETLK
	}
	lk := syscall.Flock_t{Type: syscall.F_WRLCK, Whence: 0}
	if err := syscall.FcntlFlock(f.Fd(), cmd, &lk); err != nil {
		fmt.Fprintf(os.Stderr, "lock %s: %v\n", path, err)
		return 1
	}
	fmt.Println("locked")
	time.Sleep(hold)
	return 0
}
