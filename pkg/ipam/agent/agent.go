// Package agent is cni-vlan's node-local IPAM agent (`cni-vlan agent`, a
// container of the cni-vlan DaemonSet). It holds one etcd session for the
// node and serves the plugin binary over a unix socket (pkg/ipam/agentapi),
// so a pod's ADD costs one etcd transaction and no connection set-up.
//
// It keeps a small buffer of addresses claimed in etcd under the node's name
// (ipam.NewBufferHandle). While etcd is unreachable, ADD hands out a buffered
// address and DEL journals the release; the journal (a file rewritten
// atomically before each answer) is written to etcd when etcd answers again.
// A buffered address belongs to this node in etcd, so nobody else can hand
// it out: nothing is given twice, whatever the outage.
package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/klog/v2"

	"github.com/berth-dev/berth/internal/unixsock"
	"github.com/berth-dev/berth/pkg/ipam"
	"github.com/berth-dev/berth/pkg/ipam/agentapi"
)

// Name is the agent's name in logs.
const Name = "ipam-agent"

// Options configure an Agent. Zero values take the defaults.
type Options struct {
	// Node is this node's name (the DaemonSet's spec.nodeName). Required.
	Node string
	// Socket is the unix socket the plugin calls (default /run/berth/ipam.sock).
	Socket string
	// StateDir holds the journal; on the node's disk, so it survives a reboot
	// (default /var/lib/berth/ipam-agent).
	StateDir string
	// SyncInterval is how often the journal is replayed and the buffers
	// refilled, and an unreachable etcd probed (default 1s).
	SyncInterval time.Duration
	// CallTimeout bounds the etcd work of one ADD or DEL while etcd seems
	// reachable; past it the agent falls back to its buffer or journal (default 3s).
	CallTimeout time.Duration
	// Registry, if set, receives the agent's metrics.
	Registry prometheus.Registerer
	// AttachmentPresent reports whether an attachment's interface exists on
	// this node (cni.AttachmentPresent). When set, the agent frees, every
	// ReclaimInterval, this node's addresses whose attachment is gone.
	AttachmentPresent func(containerID, ifName string) (bool, error)
	// ReclaimInterval is how often the node's addresses are checked (default 30s).
	ReclaimInterval time.Duration
	// ReclaimGrace is how old an allocation must be before it is judged
	// (default 1m, three times an ADD's default 20 s bound): an ADD allocates before it
	// creates the interface.
	ReclaimGrace time.Duration

	// stallAdd, set by a test, is called after an ADD has its address (written to etcd, or
	// journalled) and before the answer: the test kills the agent there to check that a
	// restarted agent gives the retried ADD the same address.
	stallAdd func()
}

// Agent serves a node's IPAM calls. Use New, then Run.
type Agent struct {
	alloc *ipam.EtcdAllocator
	opts  Options
	path  string // the journal

	mu      sync.Mutex // guards st, ensured, and the journal file
	st      *state
	ensured map[string]bool // pools whose inline poolSpec was checked this run
	// inflight are buffered addresses taken out of the buffer for an etcd call
	// (a transfer to a pod, a return to the pool): adoption must not re-add them.
	inflight map[netip.Addr]bool
	// flushing is the handle key of the journalled assignment being written to etcd.
	flushing string
	// uncertain are buffer claims whose etcd call timed out: it may or may not
	// have committed. They are neither handed out nor forgotten until etcd
	// says who holds them (resolveUncertain).
	uncertain []uncertainClaim

	online   atomic.Bool
	lastOK   atomic.Int64 // unix nanoseconds of etcd's last answer
	kick     chan struct{}
	batcher  *allocBatcher
	pressure sync.Map // pool name -> true while some node is short of addresses
	m        metrics
}

// uncertainClaim is a buffer handle whose claim, transfer or return timed out.
type uncertainClaim struct {
	pool, network string
	h             ipam.Handle
	ip            netip.Addr // zero for a claim (refill): the address is not known
}

// New returns an agent allocating through alloc. It reads the journal, so a
// restarted agent resumes with its buffer and its pending operations.
func New(alloc *ipam.EtcdAllocator, opts Options) (*Agent, error) {
	if alloc == nil {
		return nil, errors.New("ipam agent: an allocator is required")
	}
	if opts.Node == "" {
		return nil, errors.New("ipam agent: the node name is required (--node-name, default $NODE_NAME)")
	}
	if opts.Socket == "" {
		opts.Socket = agentapi.DefaultSocket
	}
	if opts.StateDir == "" {
		opts.StateDir = "/var/lib/berth/ipam-agent"
	}
	if opts.SyncInterval <= 0 {
		opts.SyncInterval = time.Second
	}
	if opts.CallTimeout <= 0 {
		opts.CallTimeout = 3 * time.Second
	}
	if opts.ReclaimInterval <= 0 {
		opts.ReclaimInterval = 30 * time.Second
	}
	if opts.ReclaimGrace <= 0 {
		opts.ReclaimGrace = time.Minute
	}
	if err := os.MkdirAll(opts.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("ipam agent: state dir: %w", err)
	}
	a := &Agent{alloc: alloc, opts: opts, path: filepath.Join(opts.StateDir, journalFile),
		ensured: map[string]bool{}, inflight: map[netip.Addr]bool{}, kick: make(chan struct{}, 1),
		m: newMetrics()}
	a.batcher = newAllocBatcher(alloc, func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.Background(), opts.CallTimeout)
	}, func(n int) { a.m.batchSize.Observe(float64(n)) })
	st, err := loadState(a.path)
	if err != nil {
		return nil, fmt.Errorf("ipam agent: %w", err)
	}
	a.st = st
	a.online.Store(true) // until etcd says otherwise
	if opts.Registry != nil {
		if err := a.m.register(opts.Registry); err != nil {
			return nil, fmt.Errorf("ipam agent: %w", err)
		}
	}
	a.updateGauges()
	return a, nil
}

// Run serves the socket and keeps the journal and buffers in sync with etcd until ctx ends.
func (a *Agent) Run(ctx context.Context) error {
	log := klog.FromContext(ctx).WithValues("agent", Name, "node", a.opts.Node)
	ctx = klog.NewContext(ctx, log)
	ln, err := listen(a.opts.Socket)
	if err != nil {
		return err
	}
	log.Info("Serving the cni-vlan plugin", "socket", a.opts.Socket, "journal", a.path,
		"buffered", a.snapshotBuffered(), "pending", a.snapshotPending())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); a.syncLoop(ctx) }()
	go func() { defer wg.Done(); a.watchPressure(ctx) }()
	go func() { <-ctx.Done(); ln.Close() }()
	for {
		conn, err := ln.Accept()
		if err != nil {
			wg.Wait()
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("ipam agent: accept on %s: %w", a.opts.Socket, err)
		}
		go a.serveConn(ctx, conn)
	}
}

// listen binds the socket, replacing a stale one left by a killed agent. Only root (the runtime
// that runs the plugin) may talk to the IPAM.
func listen(path string) (net.Listener, error) {
	ln, err := unixsock.Listen(path, 0o755, 0o600)
	if err != nil {
		return nil, fmt.Errorf("ipam agent: %w", err)
	}
	return ln, nil
}

func (a *Agent) serveConn(ctx context.Context, conn net.Conn) {
	defer conn.Close()
	// a stuck client only holds its own goroutine
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	req, err := agentapi.ReadRequest(conn)
	var resp *agentapi.Response
	if err != nil {
		resp = errResp(types.NewError(types.ErrDecodingFailure, "bad request to the IPAM agent", err.Error()))
	} else {
		resp = a.Handle(ctx, req)
	}
	_ = conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if err := jsonEncode(conn, resp); err != nil {
		klog.FromContext(ctx).V(2).Info("Could not answer the plugin (it gave up?)", "err", err)
	}
}

// Handle answers one request. Exported for in-process callers and tests.
func (a *Agent) Handle(ctx context.Context, req *agentapi.Request) *agentapi.Response {
	start := time.Now()
	var resp *agentapi.Response
	switch req.Verb {
	case agentapi.VerbAdd:
		resp = a.add(ctx, req)
	case agentapi.VerbDel:
		resp = a.del(ctx, req)
	case agentapi.VerbCheck:
		resp = a.check(ctx, req)
	case agentapi.VerbStatus:
		resp = a.status(ctx, req)
	case agentapi.VerbGC:
		resp = a.gc(ctx, req)
	default:
		resp = errResp(types.NewError(types.ErrInvalidEnvironmentVariables, "unknown verb",
			fmt.Sprintf("verb %q: want ADD, DEL, CHECK, STATUS or GC", req.Verb)))
	}
	code := "0"
	if resp.Error != nil {
		code = fmt.Sprint(resp.Error.Code)
	}
	a.m.calls.WithLabelValues(req.Verb, code).Observe(time.Since(start).Seconds())
	return resp
}

// errResp answers with err as a CNI error (code 999 unless it carries one).
func errResp(err error) *agentapi.Response {
	if err == nil {
		return &agentapi.Response{}
	}
	var te *types.Error
	if !errors.As(err, &te) {
		te = types.NewError(types.ErrInternal, "ipam agent", err.Error())
	}
	return &agentapi.Response{Error: te}
}

// request is a request's validated IPAM config and handle.
type request struct {
	cfg *ipam.Config
	h   ipam.Handle
}

// parse validates the request's config and identity: a config naming another
// node (one file copied to every node) is refused, as its GC would collect
// the other node's live addresses.
func (a *Agent) parse(req *agentapi.Request, needHandle bool) (*request, error) {
	cfg, err := ipam.LoadAgentConfig(req.IPAM)
	if err != nil {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "invalid IPAM config", err.Error())
	}
	if cfg.NodeName != "" && cfg.NodeName != a.opts.Node {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "ipam nodeName is another node",
			fmt.Sprintf("ipam \"nodeName\" is %q but this node is %q: leave \"nodeName\" out (the agent "+
				"knows its node), "+
				"or GC here would collect %q's live addresses", cfg.NodeName, a.opts.Node, cfg.NodeName))
	}
	if cfg.Prefix != "" && cfg.Prefix != a.alloc.Prefix() {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "ipam prefix differs from the agent's",
			fmt.Sprintf("ipam \"prefix\" is %q but the node agent serves %q (cni-vlan agent --etcd-prefix)",
				cfg.Prefix, a.alloc.Prefix()))
	}
	r := &request{cfg: cfg}
	if needHandle {
		h, err := ipam.HandleFromCNI(req.ContainerID, req.IfName, req.Args, req.Network, a.opts.Node)
		if err != nil {
			return nil, types.NewError(types.ErrInvalidEnvironmentVariables, "invalid CNI arguments",
				err.Error())
		}
		r.h = cfg.WithFixed(h)
	}
	return r, nil
}

// etcdCtx bounds the etcd work of one call on the ADD/DEL path.
func (a *Agent) etcdCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, a.opts.CallTimeout)
}

// answered records that etcd answered (or not) and tells the sync loop.
func (a *Agent) answered(ctx context.Context, err error) {
	if errors.Is(err, context.Canceled) {
		return // our own call was cancelled (the agent is stopping): says nothing about etcd
	}
	if err == nil || !unreachable(err) {
		now := time.Now()
		a.lastOK.Store(now.UnixNano())
		a.m.lastAnswer.Set(float64(now.UnixMilli()) / 1000)
		if !a.online.Swap(true) {
			klog.FromContext(ctx).Info("etcd answers again; writing the journal to it", "pending",
				a.snapshotPending())
			a.m.reachable.Set(1)
			a.poke()
		}
		return
	}
	if a.online.Swap(false) {
		klog.FromContext(ctx).Error(err, "etcd unreachable: this node assigns addresses from its buffer "+
			"and journals releases until it answers",
			"buffered", a.snapshotBuffered())
		a.m.reachable.Set(0)
		a.m.outages.Inc()
	}
}

// unreachable reports whether err says etcd did not answer (rather than answered "no").
func unreachable(err error) bool {
	return errors.Is(err, ipam.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded)
}

// ambiguous reports whether a failed etcd write may have committed all the
// same: it timed out or was cancelled mid-flight.
func ambiguous(err error) bool {
	return unreachable(err) || errors.Is(err, context.Canceled)
}

func (a *Agent) poke() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}
