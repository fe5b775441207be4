package agent

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	clientv3 "go.etcd.io/etcd/client/v3"
	"k8s.io/klog/v2"

	"github.com/berth-dev/berth/internal/jsonutil"
	"github.com/berth-dev/berth/pkg/ipam"
	"github.com/berth-dev/berth/pkg/ipam/agentapi"
)

// pressureTTL is how long a pool's pressure key lives: other nodes return
// their buffers and do not refill them while it exists (and a little after).
const pressureTTL = 10 // seconds

// pressureHold is how long after a pressure signal a node does not refill.
const pressureHold = 15 * time.Second

// notePool records the buffer size a network config asks for its pool, and
// whether berth-ipam serves it for another main plugin: that is saved before
// the first such ADD is answered, so a restarted agent's reclaim knows it too.
func (a *Agent) notePool(cfg *ipam.Config, req *agentapi.Request) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	p := a.poolLocked(cfg.Pool, req.Network)
	if req.Plugin == agentapi.PluginBerthIPAM && !p.Foreign {
		p.Foreign = true
		if err := a.st.save(a.path); err != nil {
			p.Foreign = false
			return types.NewError(types.ErrTryAgainLater, "IPAM agent state not writable", err.Error())
		}
	}
	if p.Target != cfg.Buffer() {
		p.Target = cfg.Buffer()
		a.poke()
	}
	return nil
}

// poolLocked returns the pool's buffer state, creating it. a.mu is held.
func (a *Agent) poolLocked(pool, network string) *poolState {
	p := a.st.Pools[pool]
	if p == nil {
		p = &poolState{Target: ipam.DefaultNodeBuffer, Network: network}
		a.st.Pools[pool] = p
	}
	if p.Network == "" {
		p.Network = network
	}
	return p
}

// ensurePool creates or checks the config's inline poolSpec, once per pool and run.
func (a *Agent) ensurePool(ctx context.Context, cfg *ipam.Config) error {
	if cfg.PoolSpec == nil {
		return nil
	}
	// Keyed by the spec, not the name: a drifted spec is checked (and refused) again.
	key := cfg.Pool + "|" + mustJSON(cfg.PoolSpec)
	a.mu.Lock()
	done := a.ensured[key]
	a.mu.Unlock()
	if done {
		return nil
	}
	ectx, cancel := a.etcdCtx(ctx)
	defer cancel()
	if err := a.alloc.EnsurePool(ectx, *cfg.PoolSpec); err != nil {
		return err
	}
	a.mu.Lock()
	a.ensured[key] = true
	a.mu.Unlock()
	return nil
}

// takeBuffered removes one free address of pool from the buffer, marked in flight.
func (a *Agent) takeBuffered(pool string) (ipam.Allocation, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	p := a.st.Pools[pool]
	if p == nil || len(p.Free) == 0 {
		return ipam.Allocation{}, false
	}
	b := p.Free[0]
	p.Free = p.Free[1:]
	a.inflight[b.IP.Addr()] = true
	a.saveLocked()
	return b, true
}

// putBuffered returns an address taken with takeBuffered.
func (a *Agent) putBuffered(b ipam.Allocation) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.inflight, b.IP.Addr())
	a.addFreeLocked(a.poolLocked(b.Pool, b.Handle.Network), b)
	a.saveLocked()
}

// addFreeLocked puts al into the buffer unless it is there already. a.mu is held.
func (a *Agent) addFreeLocked(p *poolState, al ipam.Allocation) {
	for _, f := range p.Free {
		if f.IP == al.IP {
			return
		}
	}
	p.Free = append(p.Free, al)
}

// setUncertain parks a buffered address whose etcd call timed out.
func (a *Agent) setUncertain(b ipam.Allocation) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.uncertain = append(a.uncertain, uncertainClaim{pool: b.Pool, network: b.Handle.Network,
		h: b.Handle, ip: b.IP.Addr()})
	a.updateGaugesLocked()
}

// resolveUncertain asks etcd about each parked buffer handle: an address it
// still holds goes back into the buffer, anything else is forgotten.
func (a *Agent) resolveUncertain(ctx context.Context) error {
	for {
		a.mu.Lock()
		if len(a.uncertain) == 0 {
			a.mu.Unlock()
			return nil
		}
		u := a.uncertain[0]
		a.mu.Unlock()
		ectx, cancel := a.etcdCtx(ctx)
		al, found, err := a.alloc.Lookup(ectx, u.h)
		cancel()
		a.answered(ctx, err)
		if err != nil {
			return err
		}
		a.mu.Lock()
		a.uncertain = a.uncertain[1:]
		delete(a.inflight, u.ip)
		if found && al.Handle.Same(u.h) {
			a.addFreeLocked(a.poolLocked(u.pool, u.network), al)
			a.saveLocked()
		}
		a.mu.Unlock()
	}
}

// doneBuffered ends the flight of an address that left the buffer for good.
func (a *Agent) doneBuffered(b ipam.Allocation) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.inflight, b.IP.Addr())
	a.updateGaugesLocked()
}

// saveLocked persists the state; a failure is logged: the buffer's truth is
// in etcd, and adoption at the next start re-reads it. a.mu is held.
func (a *Agent) saveLocked() {
	if err := a.st.save(a.path); err != nil {
		klog.Background().Error(err, "Could not write the IPAM journal", "path", a.path)
	}
	a.updateGaugesLocked()
}

// syncLoop replays the journal, adopts the buffer etcd holds for this node
// and refills the buffers, every SyncInterval or when poked.
func (a *Agent) syncLoop(ctx context.Context) {
	t := time.NewTicker(a.opts.SyncInterval)
	defer t.Stop()
	adopted := false
	var reclaimed time.Time
	for {
		a.syncOnce(ctx, &adopted)
		if a.online.Load() && adopted && time.Since(reclaimed) >= a.opts.ReclaimInterval {
			a.reclaim(ctx)
			reclaimed = time.Now()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-a.kick:
		}
	}
}

func (a *Agent) syncOnce(ctx context.Context, adopted *bool) {
	if !a.online.Load() {
		pctx, cancel := context.WithTimeout(ctx, a.opts.CallTimeout)
		err := a.alloc.Status(pctx, "")
		cancel()
		a.answered(ctx, err)
		if err != nil {
			return
		}
	}
	if err := a.flushJournal(ctx); err != nil {
		return
	}
	if err := a.resolveUncertain(ctx); err != nil {
		return
	}
	if !*adopted {
		if err := a.adoptBuffers(ctx); err != nil {
			klog.FromContext(ctx).V(2).Info("Could not read this node's buffer from etcd yet", "err", err)
			return
		}
		*adopted = true
	}
	a.refill(ctx)
}

// flushJournal writes the journalled operations to etcd, in order.
func (a *Agent) flushJournal(ctx context.Context) error {
	for {
		a.mu.Lock()
		if len(a.st.Pending) == 0 {
			a.mu.Unlock()
			return nil
		}
		o := a.st.Pending[0]
		if o.Kind == opAssign {
			a.flushing = o.Alloc.Handle.Key()
		}
		a.mu.Unlock()
		err := a.apply(ctx, o)
		a.mu.Lock()
		a.flushing = ""
		if err == nil {
			a.dropPendingLocked(o)
			a.saveLocked()
		}
		a.mu.Unlock()
		if err != nil {
			return err
		}
	}
}

// dropPendingLocked removes op o (the first with its kind and handle). a.mu is held.
func (a *Agent) dropPendingLocked(o op) {
	for i, p := range a.st.Pending {
		if p.Kind == o.Kind && p.Alloc.Handle.Same(o.Alloc.Handle) && p.Handle.Same(o.Handle) {
			a.st.Pending = append(a.st.Pending[:i], a.st.Pending[i+1:]...)
			return
		}
	}
}

// apply writes one journalled operation to etcd. An operation etcd refuses
// for good (the buffered address is no longer this node's) is logged and
// counted, and dropped: retrying it would block the journal forever.
func (a *Agent) apply(ctx context.Context, o op) error {
	ectx, cancel := a.etcdCtx(ctx)
	defer cancel()
	log := klog.FromContext(ctx)
	var err error
	switch o.Kind {
	case opAssign:
		err = a.applyAssign(ectx, o)
	case opRelease:
		err = a.alloc.Release(ectx, o.Handle)
	}
	a.answered(ctx, err)
	switch {
	case err == nil:
		log.V(2).Info("Journalled operation written to etcd", "op", o.Kind, "ip", o.Alloc.IP.Addr(),
			"handle", o.Handle.Key()+o.Alloc.Handle.Key())
		return nil
	case !permanent(err):
		return err // etcd away, the agent stopping, contention: keep it and retry
	}
	a.m.conflicts.Inc()
	log.Error(err, "etcd refused a journalled operation; dropped it (see `cni-vlan ipam list`)", "op",
		o.Kind,
		"pool", o.Alloc.Pool, "ip", o.Alloc.IP.Addr(), "pod",
		klog.KRef(o.Alloc.Handle.PodNamespace, o.Alloc.Handle.PodName))
	return nil
}

// permanent reports whether etcd answered a journalled operation with a
// refusal that no retry changes: only these drop it from the journal.
func permanent(err error) bool {
	return errors.Is(err, ipam.ErrOwnerMismatch) || errors.Is(err, ipam.ErrInvalidHandle) ||
		errors.Is(err, ipam.ErrPoolNotFound) || errors.Is(err, ipam.ErrHandleHasAddress)
}

// applyAssign records in etcd that the pod got o.Alloc from the buffer. The
// pod uses that address, whatever else etcd says: an address etcd gave the
// pod meanwhile (an ADD whose commit timed out, then answered from the
// buffer) was never handed to anyone and is released; a buffered address
// etcd no longer held for the node is claimed for the pod if still free.
func (a *Agent) applyAssign(ctx context.Context, o op) error {
	pool, ip, h := o.Alloc.Pool, o.Alloc.IP.Addr(), o.Alloc.Handle
	_, err := a.alloc.Transfer(ctx, pool, ip, o.From, h)
	if errors.Is(err, ipam.ErrHandleHasAddress) {
		if err := a.alloc.Release(ctx, h); err != nil {
			return err
		}
		_, err = a.alloc.Transfer(ctx, pool, ip, o.From, h)
	}
	if errors.Is(err, ipam.ErrNotFound) {
		_, err = a.alloc.ClaimIP(ctx, pool, ip, h)
	}
	return err
}

// adoptBuffers makes the local buffer match what etcd holds for this node:
// addresses claimed but not recorded (a crash between the two) are added,
// addresses etcd no longer gives this node are dropped, never handed out.
func (a *Agent) adoptBuffers(ctx context.Context) error {
	ectx, cancel := context.WithTimeout(ctx, 4*a.opts.CallTimeout)
	defer cancel()
	all, err := a.alloc.ListAllocations(ectx, "")
	a.answered(ctx, err)
	if err != nil {
		return err
	}
	inEtcd := map[string]ipam.Allocation{}
	for _, al := range all {
		if al.Handle.IsBuffer() && al.Handle.Node == a.opts.Node {
			inEtcd[al.Pool+"/"+al.IP.Addr().String()] = al
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for name, p := range a.st.Pools {
		kept := p.Free[:0]
		for _, f := range p.Free {
			k := name + "/" + f.IP.Addr().String()
			if e, ok := inEtcd[k]; ok && e.Handle.Same(f.Handle) {
				kept = append(kept, f)
				delete(inEtcd, k)
				continue
			}
			klog.FromContext(ctx).Info("A buffered address is no longer this node's in etcd; dropped",
				"pool", name, "ip", f.IP.Addr())
		}
		p.Free = kept
	}
	for _, o := range a.st.Pending {
		delete(inEtcd, o.Alloc.Pool+"/"+o.Alloc.IP.Addr().String())
	}
	for _, e := range inEtcd {
		if a.inflight[e.IP.Addr()] {
			continue
		}
		a.addFreeLocked(a.poolLocked(e.Pool, e.Handle.Network), e)
	}
	a.saveLocked()
	return nil
}

// refill claims addresses until each pool's buffer has its target, unless
// some node is short of addresses in that pool.
func (a *Agent) refill(ctx context.Context) {
	a.mu.Lock()
	type need struct {
		pool, network string
		n             int
	}
	var needs []need
	for name, p := range a.st.Pools {
		if n := p.Target - len(p.Free); n > 0 && !a.underPressure(name) {
			needs = append(needs, need{name, p.Network, n})
		}
	}
	a.mu.Unlock()
	for _, nd := range needs {
		for range nd.n {
			h := ipam.NewBufferHandle(a.opts.Node, nd.network)
			ectx, cancel := a.etcdCtx(ctx)
			al, err := a.alloc.Allocate(ectx, nd.pool, h)
			cancel()
			a.answered(ctx, err)
			if err != nil && ambiguous(err) {
				a.mu.Lock() // the claim may have committed: ask etcd later
				a.uncertain = append(a.uncertain, uncertainClaim{pool: nd.pool, network: nd.network, h: h})
				a.mu.Unlock()
			}
			if err != nil {
				if !errors.Is(err, ipam.ErrExhausted) && !errors.Is(err, ipam.ErrPoolNotFound) {
					klog.FromContext(ctx).V(2).Info("Could not refill the node's buffer", "pool", nd.pool, "err", err)
				}
				break
			}
			a.mu.Lock()
			a.addFreeLocked(a.poolLocked(nd.pool, nd.network), al)
			a.saveLocked()
			a.mu.Unlock()
		}
	}
}

func (a *Agent) underPressure(pool string) bool {
	v, ok := a.pressure.Load(pool)
	return ok && time.Now().Before(v.(time.Time))
}

func (a *Agent) pressureKey(pool string) string { return a.alloc.Prefix() + "/pressure/" + pool }

// signalPressure asks every node to return its buffer of pool (a key with a
// short lease, which the agents watch).
func (a *Agent) signalPressure(ctx context.Context, pool string) error {
	if v, ok := a.pressure.Load(pool + "/sent"); ok && time.Since(v.(time.Time)) < time.Second {
		return nil
	}
	a.pressure.Store(pool+"/sent", time.Now())
	cli := a.alloc.Client()
	lease, err := cli.Grant(ctx, pressureTTL)
	if err != nil {
		return err
	}
	_, err = cli.Put(ctx, a.pressureKey(pool), a.opts.Node, clientv3.WithLease(lease.ID))
	return err
}

// watchPressure returns this node's buffer of a pool when another node
// finds the pool full, and holds off refilling it for a while.
func (a *Agent) watchPressure(ctx context.Context) {
	pfx := a.alloc.Prefix() + "/pressure/"
	for ctx.Err() == nil {
		wch := a.alloc.Client().Watch(clientv3.WithRequireLeader(ctx), pfx, clientv3.WithPrefix())
		for resp := range wch {
			for _, ev := range resp.Events {
				if ev.Type != clientv3.EventTypePut {
					continue
				}
				pool := strings.TrimPrefix(string(ev.Kv.Key), pfx)
				a.pressure.Store(pool, time.Now().Add(pressureHold))
				a.returnBuffer(ctx, pool, string(ev.Kv.Value))
			}
		}
		_ = sleepCtx(ctx, a.opts.SyncInterval) // the watch ends when etcd is away; watch again
	}
}

// returnBuffer releases this node's free buffered addresses of pool.
func (a *Agent) returnBuffer(ctx context.Context, pool, askedBy string) {
	n := 0
	for {
		b, ok := a.takeBuffered(pool)
		if !ok {
			break
		}
		ectx, cancel := a.etcdCtx(ctx)
		_, err := a.alloc.ReleaseIP(ectx, pool, b.IP.Addr(), b.Handle)
		cancel()
		a.answered(ctx, err)
		if err != nil && ambiguous(err) {
			a.setUncertain(b) // the release may have committed
			break
		}
		if err != nil && !errors.Is(err, ipam.ErrNotFound) && !errors.Is(err, ipam.ErrOwnerMismatch) {
			a.putBuffered(b)
			klog.FromContext(ctx).V(2).Info("Could not return a buffered address", "pool", pool, "ip",
				b.IP.Addr(), "err", err)
			break
		}
		a.doneBuffered(b)
		n++
	}
	if n > 0 {
		klog.FromContext(ctx).Info("Pool nearly full: returned this node's buffered addresses", "pool",
			pool, "returned", n, "askedBy", askedBy)
	}
}

func (a *Agent) snapshotBuffered() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.st.buffered()
}

func (a *Agent) snapshotBufferedPool(pool string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	if p := a.st.Pools[pool]; p != nil {
		return len(p.Free)
	}
	return 0
}

func (a *Agent) snapshotPending() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.st.Pending)
}

func mustJSON(v any) string { return string(jsonutil.MustMarshal(v)) }

func jsonEncode(w io.Writer, v any) error { return json.NewEncoder(w).Encode(v) }
