// Command hookapp is the test app of the berth webhook's tests: an HTTP
// server with a check URL that logs timestamped lines for everything the
// hooks must order (start, marker appearing and disappearing, SIGTERM), and
// that can be told to hang its check URL (a JVM paused at a breakpoint) or to
// exit (a dead process). It can also open a plain TCP debug port that echoes.
//
//	GET  /check   200 "ok", or blocks while hung
//	POST /hang    /check blocks from now on      POST /unhang  answers again
//	POST /exit    the process exits with status 3
//	GET  /        "hello from <host>"
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

type app struct {
	mu   sync.Mutex
	hung chan struct{} // non-nil while /check hangs
}

func main() {
	addr := flag.String("addr", ":8080", "HTTP listen address")
	debugAddr := flag.String("debug-addr", "", "plain TCP debug port that echoes (e.g. 127.0.0.1:5005); empty: none")
	marker := flag.String("watch-marker", "", "log when this file appears and disappears")
	startDelay := flag.Duration("start-delay", 0, "wait before listening (a slow start)")
	flag.Parse()
	log.SetFlags(0)
	log.SetOutput(&stamped{w: os.Stdout})
	host, _ := os.Hostname()
	log.Printf("hookapp START host=%s JAVA_TOOL_OPTIONS=%q", host, os.Getenv("JAVA_TOOL_OPTIONS"))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if *marker != "" {
		go watchMarker(ctx, *marker)
	}
	if *debugAddr != "" {
		go serveDebug(*debugAddr)
	}
	time.Sleep(*startDelay)
	a := &app{}
	srv := &http.Server{Addr: *addr, Handler: a.mux(host), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		log.Printf("hookapp SIGTERM received, shutting down")
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	log.Printf("hookapp LISTENING on %s", *addr)
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Fatalf("hookapp: %v", err)
	}
	log.Printf("hookapp EXIT")
}

func (a *app) mux(host string) *http.ServeMux {
	m := http.NewServeMux()
	m.HandleFunc("GET /check", func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		hung := a.hung
		a.mu.Unlock()
		if hung != nil {
			select { // a paused JVM: the request never gets an answer
			case <-hung:
			case <-r.Context().Done():
				return
			}
		}
		_, _ = io.WriteString(w, "ok\n")
	})
	m.HandleFunc("POST /hang", func(w http.ResponseWriter, _ *http.Request) {
		a.mu.Lock()
		if a.hung == nil {
			a.hung = make(chan struct{})
		}
		a.mu.Unlock()
		log.Printf("hookapp HANG: /check stops answering")
		_, _ = io.WriteString(w, "hung\n")
	})
	m.HandleFunc("POST /unhang", func(w http.ResponseWriter, _ *http.Request) {
		a.mu.Lock()
		if a.hung != nil {
			close(a.hung)
			a.hung = nil
		}
		a.mu.Unlock()
		log.Printf("hookapp UNHANG: /check answers again")
		_, _ = io.WriteString(w, "ok\n")
	})
	m.HandleFunc("POST /exit", func(w http.ResponseWriter, _ *http.Request) {
		log.Printf("hookapp EXIT requested")
		_, _ = io.WriteString(w, "bye\n")
		go func() { time.Sleep(100 * time.Millisecond); os.Exit(3) }()
	})
	m.HandleFunc("GET /", func(w http.ResponseWriter, r *http.Request) {
		log.Printf("hookapp request %s %s from %s", r.Method, r.URL.Path, r.RemoteAddr)
		_, _ = fmt.Fprintf(w, "hello from %s\n", host)
	})
	return m
}

// serveDebug is a stand-in for a debugger port: it echoes what it reads.
func serveDebug(addr string) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		log.Fatalf("hookapp: debug port: %v", err)
	}
	log.Printf("hookapp DEBUG port on %s", addr)
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		log.Printf("hookapp DEBUGGER attached from %s", c.RemoteAddr())
		go func() {
			defer c.Close()
			_, _ = io.Copy(c, c)
			log.Printf("hookapp DEBUGGER detached")
		}()
	}
}

func watchMarker(ctx context.Context, p string) {
	present := false
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		_, err := os.Stat(p)
		if now := err == nil; now != present {
			present = now
			if now {
				log.Printf("hookapp MARKER appeared %s", p)
			} else {
				log.Printf("hookapp MARKER removed %s", p)
			}
		}
	}
}

// stamped prefixes each log line with an RFC 3339 UTC timestamp (ms).
type stamped struct{ w io.Writer }

func (s *stamped) Write(p []byte) (int, error) {
	_, err := fmt.Fprintf(s.w, "%s %s", time.Now().UTC().Format("2006-01-02T15:04:05.000Z07:00"), p)
	return len(p), err
}
