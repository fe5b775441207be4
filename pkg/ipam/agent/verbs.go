package agent

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"k8s.io/klog/v2"

	"github.com/berth-dev/berth/pkg/ipam"
	"github.com/berth-dev/berth/pkg/ipam/agentapi"
)

// exhaustedWait is how long an ADD into a full pool waits for other nodes
// to return their buffers (they watch the pool's pressure key).
const exhaustedWait = 5 * time.Second

func (a *Agent) add(ctx context.Context, req *agentapi.Request) *agentapi.Response {
	r, err := a.parse(req, true)
	if err != nil {
		return errResp(err)
	}
	if err := a.notePool(r.cfg, req); err != nil {
		return errResp(err)
	}
	// A retried ADD whose first try was journalled (the agent restarted, or
	// the plugin gave up waiting) gets the same address, not a second one.
	a.mu.Lock()
	if i, ok := a.st.pendingAssign(r.h); ok {
		al := a.st.Pending[i].Alloc
		a.mu.Unlock()
		return a.addAnswer(req, al, false)
	}
	a.mu.Unlock()
	if a.online.Load() {
		al, existed, err := a.addOnline(ctx, r)
		if err == nil {
			return a.addAnswer(req, al, existed)
		}
		if !unreachable(err) {
			return errResp(ipam.CNIError(err))
		}
	}
	al, err := a.addFromBuffer(ctx, r)
	if err != nil {
		return errResp(err)
	}
	return a.addAnswer(req, al, false)
}

func (a *Agent) addAnswer(req *agentapi.Request, al ipam.Allocation, existed bool) *agentapi.Response {
	if a.opts.stallAdd != nil {
		a.opts.stallAdd()
	}
	if req.VLAN != 0 && al.VLAN != req.VLAN {
		return errResp(types.NewError(types.ErrInvalidNetworkConfig, "IPAM pool is for another VLAN",
			fmt.Sprintf("pool %q serves VLAN %d but this network is VLAN %d", al.Pool, al.VLAN, req.VLAN)))
	}
	return &agentapi.Response{Allocation: toWire(al), Existed: existed}
}

// addOnline allocates in etcd. When the pool is full it takes from the
// node's own buffer, then asks the other nodes for theirs.
func (a *Agent) addOnline(ctx context.Context, r *request) (ipam.Allocation, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, a.opts.CallTimeout+exhaustedWait)
	defer cancel()
	if err := a.ensurePool(ctx, r.cfg); err != nil {
		a.answered(ctx, err)
		return ipam.Allocation{}, false, err
	}
	start := time.Now().UTC()
	for {
		var err error
		actx, acancel := a.etcdCtx(ctx)
		var al ipam.Allocation
		if r.h.Fixed {
			al, err = a.alloc.Allocate(actx, r.cfg.Pool, r.h)
		} else {
			al, err = a.batcher.allocate(actx, r.cfg.Pool, r.h)
		}
		acancel()
		a.answered(ctx, err)
		if err == nil {
			// Allocate returns a handle's existing address as is: older than this call means a repeated ADD.
			return al, al.AllocatedAt.Before(start), nil
		}
		if !errors.Is(err, ipam.ErrExhausted) || r.h.Fixed {
			return al, false, err
		}
		if al, ok, err := a.transferOwn(ctx, r); ok || err != nil {
			return al, false, err
		}
		// Other nodes' buffers hold the rest: ask for them and try again.
		if perr := a.signalPressure(ctx, r.cfg.Pool); perr != nil {
			klog.FromContext(ctx).Error(perr, "Could not ask other nodes to return their buffers", "pool",
				r.cfg.Pool)
		}
		if werr := sleepCtx(ctx, 200*time.Millisecond); werr != nil {
			return ipam.Allocation{}, false, err // the pool stayed full: ErrExhausted
		}
	}
}

// transferOwn gives the pod an address of this node's buffer, in etcd.
func (a *Agent) transferOwn(ctx context.Context, r *request) (ipam.Allocation, bool, error) {
	for {
		b, ok := a.takeBuffered(r.cfg.Pool)
		if !ok {
			return ipam.Allocation{}, false, nil
		}
		al, err := a.alloc.Transfer(ctx, b.Pool, b.IP.Addr(), b.Handle, r.h)
		a.answered(ctx, err)
		switch {
		case err == nil:
			return al, true, nil
		case errors.Is(err, ipam.ErrNotFound), errors.Is(err, ipam.ErrOwnerMismatch):
			a.doneBuffered(b)
			klog.FromContext(ctx).Error(err, "A buffered address is no longer this node's; dropped from "+
				"the buffer", "ip", b.IP.Addr())
			continue
		case ambiguous(err):
			// The transfer may have committed: keep the address out of the buffer until etcd says.
			a.setUncertain(b)
			return ipam.Allocation{}, false, err
		default:
			a.putBuffered(b)
			return ipam.Allocation{}, false, err
		}
	}
}

// addFromBuffer assigns a buffered address while etcd is away, journalled
// before the answer. Fixed StatefulSet addresses are refused: only etcd knows
// which address a pod is pinned to.
func (a *Agent) addFromBuffer(ctx context.Context, r *request) (ipam.Allocation, error) {
	if r.h.Fixed {
		return ipam.Allocation{}, types.NewError(types.ErrTryAgainLater,
			"etcd unreachable: fixed IPs need it",
			fmt.Sprintf("pod %s/%s keeps a fixed IP (fixedIPStatefulSets), which only etcd knows; the "+
				"kubelet retries until etcd answers",
				r.h.PodNamespace, r.h.PodName))
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	p := a.st.Pools[r.cfg.Pool]
	if p == nil || len(p.Free) == 0 {
		return ipam.Allocation{}, types.NewError(types.ErrTryAgainLater,
			"etcd unreachable and the node's buffer is empty",
			fmt.Sprintf("no buffered address of pool %q is left on node %s (nodeBuffer %d); the kubelet "+
				"retries until etcd answers",
				r.cfg.Pool, a.opts.Node, r.cfg.Buffer()))
	}
	b := p.Free[0]
	al := b
	al.Handle, al.AllocatedAt = r.h, time.Now().UTC()
	p.Free = p.Free[1:]
	a.st.Pending = append(a.st.Pending, op{Kind: opAssign, Alloc: al, From: b.Handle, At: al.AllocatedAt})
	if err := a.st.save(a.path); err != nil {
		// Not journalled: keep it in the buffer and refuse, rather than answer unrecorded.
		a.st.Pending = a.st.Pending[:len(a.st.Pending)-1]
		p.Free = append([]ipam.Allocation{b}, p.Free...)
		return ipam.Allocation{}, types.NewError(types.ErrTryAgainLater, "IPAM journal not writable",
			err.Error())
	}
	a.updateGaugesLocked()
	a.m.bufferAssigns.Inc()
	klog.FromContext(ctx).Info("etcd unreachable: assigned a buffered address (journalled)", "pool",
		al.Pool, "ip", al.IP.Addr(),
		"pod", klog.KRef(r.h.PodNamespace, r.h.PodName), "container", r.h.ContainerID, "bufferLeft",
		len(p.Free))
	return al, nil
}

// del releases the attachment's address. It never waits on an unreachable
// etcd for longer than CallTimeout: the release is journalled and answered.
func (a *Agent) del(ctx context.Context, req *agentapi.Request) *agentapi.Response {
	r, err := a.parse(req, true)
	if err != nil {
		return errResp(err)
	}
	a.mu.Lock()
	if i, ok := a.st.pendingAssign(r.h); ok {
		// Assigned during this outage and gone again: back into the buffer
		// (etcd still holds it under the node's buffer handle).
		o := a.st.Pending[i]
		var err error
		if a.flushing == o.Alloc.Handle.Key() {
			// Being written to etcd right now: release it after that, in order.
			a.mu.Unlock()
			if err := a.journalRelease(r.h); err != nil {
				return errResp(types.NewError(types.ErrTryAgainLater, "IPAM journal not writable", err.Error()))
			}
			return &agentapi.Response{}
		}
		a.st.Pending = append(a.st.Pending[:i], a.st.Pending[i+1:]...)
		b := o.Alloc
		b.Handle = o.From
		a.addFreeLocked(a.poolLocked(o.Alloc.Pool, req.Network), b)
		// An ADD whose etcd commit timed out before the buffer answered may have left
		// the pod an address in etcd too: release whatever etcd has for it.
		a.st.Pending = append(a.st.Pending, op{Kind: opRelease, Handle: r.h, At: time.Now().UTC()})
		err = a.st.save(a.path)
		a.updateGaugesLocked()
		a.mu.Unlock()
		if err != nil {
			return errResp(types.NewError(types.ErrTryAgainLater, "IPAM journal not writable", err.Error()))
		}
		return &agentapi.Response{}
	}
	a.mu.Unlock()
	if a.online.Load() {
		ectx, cancel := a.etcdCtx(ctx)
		err := a.alloc.Release(ectx, r.h)
		cancel()
		a.answered(ctx, err)
		if err == nil || errors.Is(err, ipam.ErrNotFound) {
			return &agentapi.Response{}
		}
		if !unreachable(err) && !errors.Is(err, ipam.ErrTryAgain) {
			return errResp(ipam.CNIError(err))
		}
	}
	if err := a.journalRelease(r.h); err != nil {
		return errResp(types.NewError(types.ErrTryAgainLater, "IPAM journal not writable", err.Error()))
	}
	klog.FromContext(ctx).V(2).Info("etcd unreachable: release journalled", "container",
		r.h.ContainerID, "ifName", r.h.IfName)
	return &agentapi.Response{}
}

func (a *Agent) journalRelease(h ipam.Handle) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, o := range a.st.Pending {
		if o.Kind == opRelease && o.Handle.Same(h) {
			return nil
		}
	}
	a.st.Pending = append(a.st.Pending, op{Kind: opRelease, Handle: h, At: time.Now().UTC()})
	if err := a.st.save(a.path); err != nil {
		a.st.Pending = a.st.Pending[:len(a.st.Pending)-1]
		return err
	}
	a.updateGaugesLocked()
	a.poke()
	return nil
}

// check returns the attachment's address (journalled, or from etcd).
func (a *Agent) check(ctx context.Context, req *agentapi.Request) *agentapi.Response {
	r, err := a.parse(req, true)
	if err != nil {
		return errResp(err)
	}
	a.mu.Lock()
	if i, ok := a.st.pendingAssign(r.h); ok {
		al := a.st.Pending[i].Alloc
		a.mu.Unlock()
		return &agentapi.Response{Allocation: toWire(al)}
	}
	a.mu.Unlock()
	ectx, cancel := a.etcdCtx(ctx)
	defer cancel()
	al, found, err := a.alloc.Lookup(ectx, r.h)
	a.answered(ctx, err)
	if err != nil {
		return errResp(ipam.CNIError(err))
	}
	if !found {
		return errResp(types.NewError(CodeNoReservation, "IPAM has no reservation for this attachment",
			fmt.Sprintf("%s: the address may have been released or given to another pod", r.h.Key())))
	}
	return &agentapi.Response{Allocation: toWire(al)}
}

// CodeNoReservation is CHECK's code when the IPAM holds no address for the attachment.
const CodeNoReservation uint = 102

// status: the node can take a pod when etcd answers and the pool has room,
// or etcd is away and the buffer still has an address.
func (a *Agent) status(ctx context.Context, req *agentapi.Request) *agentapi.Response {
	r, err := a.parse(req, false)
	if err != nil {
		return errResp(err)
	}
	if err := a.notePool(r.cfg, req); err != nil {
		return errResp(err)
	}
	ectx, cancel := a.etcdCtx(ctx)
	defer cancel()
	err = a.alloc.Status(ectx, r.cfg.Pool)
	if r.cfg.InlinePoolMissing(err) {
		err = a.alloc.Status(ectx, "")
	}
	a.answered(ctx, err)
	if err != nil && unreachable(err) {
		a.mu.Lock()
		n := 0
		if p := a.st.Pools[r.cfg.Pool]; p != nil {
			n = len(p.Free)
		}
		a.mu.Unlock()
		if n > 0 {
			return &agentapi.Response{} // pods still start, from the buffer
		}
	}
	if err == nil || (errors.Is(err, ipam.ErrExhausted) && a.snapshotBufferedPool(r.cfg.Pool) > 0) {
		return &agentapi.Response{}
	}
	return errResp(ipam.CNIStatusError(err))
}

// gc releases this node's attachments of the network that the runtime no
// longer has. It needs etcd (code 11 otherwise); journalled assignments are
// not in etcd under their pod yet and buffered addresses are never collected.
func (a *Agent) gc(ctx context.Context, req *agentapi.Request) *agentapi.Response {
	r, err := a.parse(req, false)
	if err != nil {
		return errResp(err)
	}
	valid := make([]ipam.Handle, 0, len(req.Valid))
	for _, v := range req.Valid {
		valid = append(valid, ipam.Handle{ContainerID: v.ContainerID, IfName: v.IfName})
	}
	gctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout())
	defer cancel()
	_, err = a.alloc.GC(gctx, ipam.GCRequest{Network: req.Network, Node: a.opts.Node, Pool: r.cfg.Pool,
		Valid: valid})
	a.answered(ctx, err)
	if err != nil && !r.cfg.InlinePoolMissing(err) {
		return errResp(ipam.CNIError(err))
	}
	return &agentapi.Response{}
}

func toWire(al ipam.Allocation) *agentapi.Allocation {
	w := &agentapi.Allocation{Pool: al.Pool, VLAN: al.VLAN, IP: al.IP, Gateway: al.Gateway}
	for _, rt := range al.Routes {
		w.Routes = append(w.Routes, agentapi.Route{Dst: rt.Dst, GW: rt.GW})
	}
	return w
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
