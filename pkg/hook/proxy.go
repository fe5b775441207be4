package hook

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/klog/v2"
)

// DebugProxy forwards TCP connections from the pod's loopback to the app's debug
// port on loopback (JDWP listens on 127.0.0.1 only), so a developer can
// `kubectl port-forward` to it without socat in the app image.
//
// It also tells the liveness endpoint whether a debug session is attached
// and the app process is alive. The upstream connection is the process
// signal: the debug port's socket belongs to the app process, and when that
// process dies the kernel closes the socket, so the proxy's read from it
// ends at once. A process paused at a breakpoint keeps the socket open. This
// needs no shareProcessNamespace (which would expose every container's
// processes, environment and files to the others).
type DebugProxy struct {
	// Target is the app's debug address, e.g. 127.0.0.1:5005.
	Target string
	// DialTimeout bounds connecting to Target.
	DialTimeout time.Duration

	sessions atomic.Int64
	wg       sync.WaitGroup
}

// Attached reports whether at least one debugger is connected to a live app process.
func (p *DebugProxy) Attached() bool { return p.sessions.Load() > 0 }

// Serve accepts debugger connections on ln until ctx is done.
func (p *DebugProxy) Serve(ctx context.Context, ln net.Listener) error {
	log := klog.FromContext(ctx).WithValues("proxy", ln.Addr().String(), "target", p.Target)
	go func() {
		<-ctx.Done()
		_ = ln.Close() // unblocks Accept; the error is the expected net.ErrClosed
	}()
	log.Info("Debug proxy listening")
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				p.wg.Wait()
				return nil
			}
			return fmt.Errorf("debug proxy accept on %s: %w", ln.Addr(), err)
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.session(ctx, conn)
		}()
	}
}

// session pipes one debugger connection to the app until either side closes.
func (p *DebugProxy) session(ctx context.Context, client net.Conn) {
	log := klog.FromContext(ctx).WithValues("client", client.RemoteAddr().String(), "target", p.Target)
	defer client.Close()
	d := net.Dialer{Timeout: p.DialTimeout}
	if d.Timeout == 0 {
		d.Timeout = 3 * time.Second
	}
	up, err := d.DialContext(ctx, "tcp", p.Target)
	if err != nil {
		log.Info("Debug session refused: the app's debug port does not answer", "err", err)
		return
	}
	defer up.Close()
	p.sessions.Add(1)
	defer p.sessions.Add(-1)
	log.Info("Debug session attached")
	done := make(chan string, 2)
	go func() { _, _ = io.Copy(up, client); done <- "debugger closed the connection" }()
	go func() { _, _ = io.Copy(client, up); done <- "app closed the debug connection (process exited?)" }()
	select {
	case why := <-done:
		log.Info("Debug session ended", "why", why)
	case <-ctx.Done():
		log.Info("Debug session ended: sidecar stopping")
	}
	// Closing both ends (deferred) unblocks the other copy; the session no longer counts as attached.
}
