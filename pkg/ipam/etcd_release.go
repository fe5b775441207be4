package ipam

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
	"k8s.io/klog/v2"
)

// owned is an IP key and (if any) the handle key pointing at it, with their revisions.
type owned struct {
	pool    string
	ip      netip.Addr
	rec     record
	ipRev   int64
	hk      string
	hkRev   int64 // 0: no handle key points at this IP
	pinned  bool  // the pod's pin still names this IP
	dropPin bool  // release the pin too (a held address released by hand)
}

// Lookup returns h's allocation; false when h has none.
func (a *EtcdAllocator) Lookup(ctx context.Context, h Handle) (Allocation, bool, error) {
	if err := validateHandle(h); err != nil {
		return Allocation{}, false, err
	}
	o, err := a.readByHandle(ctx, h)
	if err != nil || o == nil {
		return Allocation{}, false, err
	}
	l, err := a.layout(ctx, o.pool)
	if err != nil {
		return Allocation{}, false, err
	}
	return l.allocation(o.ip, o.rec), true, nil
}

// readByHandle follows h's handle key to its IP key; nil when h owns nothing.
func (a *EtcdAllocator) readByHandle(ctx context.Context, h Handle) (*owned, error) {
	hk := a.handleKey(h)
	resp, err := a.cli.Get(ctx, hk)
	if err != nil {
		return nil, storeErr("lookup "+h.Key(), err)
	}
	if len(resp.Kvs) == 0 {
		return nil, nil
	}
	var ref handleRef
	if err := json.Unmarshal(resp.Kvs[0].Value, &ref); err != nil {
		return nil, fmt.Errorf("ipam: corrupt handle key %s: %w", hk, err)
	}
	o, err := a.readByIP(ctx, ref.Pool, ref.IP)
	if err != nil {
		return nil, err
	}
	if o == nil || !o.rec.Handle.Same(h) {
		// A dangling index entry cannot be produced by this package's transactions;
		// report "no allocation" and let Release clean the index.
		return &owned{pool: ref.Pool, ip: ref.IP, hk: hk, hkRev: resp.Kvs[0].ModRevision, ipRev: -1}, nil
	}
	return o, nil
}

// readByIP reads an IP key, the handle key of its owner and the owner's pin.
func (a *EtcdAllocator) readByIP(ctx context.Context, pool string, ip netip.Addr) (*owned, error) {
	ipk := a.ipKey(pool, ip)
	resp, err := a.cli.Get(ctx, ipk)
	if err != nil {
		return nil, storeErr("read "+ipk, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, nil
	}
	o := &owned{pool: pool, ip: ip, ipRev: resp.Kvs[0].ModRevision}
	if err := json.Unmarshal(resp.Kvs[0].Value, &o.rec); err != nil {
		return nil, fmt.Errorf("ipam: corrupt record %s: %w", ipk, err)
	}
	var ops []clientv3.Op
	if o.rec.Handle.ContainerID != "" {
		o.hk = a.handleKey(o.rec.Handle)
		ops = append(ops, clientv3.OpGet(o.hk))
	}
	if o.rec.Fixed {
		ops = append(ops, clientv3.OpGet(a.pinKey(pool, o.rec.Handle.PodNamespace, o.rec.Handle.PodName)))
	}
	if len(ops) == 0 {
		return o, nil
	}
	tr, err := a.cli.Txn(ctx).Then(ops...).Commit()
	if err != nil {
		return nil, storeErr("read owner of "+ipk, err)
	}
	for _, r := range tr.Responses {
		for _, kv := range r.GetResponseRange().Kvs {
			switch {
			case string(kv.Key) == o.hk:
				var ref handleRef
				if json.Unmarshal(kv.Value, &ref) == nil && ref.Pool == pool && ref.IP == ip {
					o.hkRev = kv.ModRevision
				}
			default: // the pin
				o.pinned = string(kv.Value) == ip.String()
			}
		}
	}
	return o, nil
}

// release deletes o's keys in one transaction guarded by their revisions.
// A fixed-IP address whose pin still names it stays held for the pod.
func (a *EtcdAllocator) release(ctx context.Context, o *owned) (bool, error) {
	var cmps []clientv3.Cmp
	var ops []clientv3.Op
	if o.hkRev != 0 {
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(o.hk), "=", o.hkRev))
		ops = append(ops, clientv3.OpDelete(o.hk))
	}
	if o.ipRev > 0 {
		ipk := a.ipKey(o.pool, o.ip)
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(ipk), "=", o.ipRev))
		if o.pinned && o.dropPin {
			pk := a.pinKey(o.pool, o.rec.Handle.PodNamespace, o.rec.Handle.PodName)
			cmps = append(cmps, clientv3.Compare(clientv3.Value(pk), "=", o.ip.String()))
			ops = append(ops, clientv3.OpDelete(ipk), clientv3.OpDelete(pk))
		} else if o.pinned && o.rec.Handle.ContainerID != "" {
			held := record{Handle: Handle{PodNamespace: o.rec.Handle.PodNamespace,
				PodName: o.rec.Handle.PodName, Network: o.rec.Handle.Network}, Fixed: true,
				AllocatedAt: a.now().UTC()}
			ops = append(ops, clientv3.OpPut(ipk, mustJSON(held)))
		} else {
			ops = append(ops, clientv3.OpDelete(ipk))
		}
	}
	if len(ops) == 0 {
		return true, nil
	}
	resp, err := a.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		return false, storeErr("release "+o.ip.String(), err)
	}
	return resp.Succeeded, nil
}

// Release frees h's address if h still owns it. A handle with no allocation
// is success (CNI DEL is idempotent). Only the owner's keys are touched: the
// IP key is deleted only if its record names h.
func (a *EtcdAllocator) Release(ctx context.Context, h Handle) error {
	if err := validateHandle(h); err != nil {
		return err
	}
	var lastErr error
	for attempt := 0; attempt < 8; attempt++ {
		if attempt > 0 {
			if err := backoff(ctx, attempt); err != nil {
				return fmt.Errorf("ipam release %s: %w", h.Key(), err)
			}
		}
		done, err := a.releaseOnce(ctx, h)
		if done {
			return nil
		}
		if err != nil && !errors.Is(err, ErrUnavailable) {
			return err
		}
		lastErr = err
	}
	return fmt.Errorf("%w: releasing %s: %w", ErrTryAgain, h.Key(), lastErr)
}

// releaseOnce is one attempt of Release, bounded by the per-attempt timeout
// (WithAttemptTimeout): a request stuck on an etcd member that lost its
// leader is abandoned and retried, instead of holding the DEL for seconds.
func (a *EtcdAllocator) releaseOnce(ctx context.Context, h Handle) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, a.attemptTimeout)
	defer cancel()
	o, err := a.readByHandle(ctx, h)
	if err != nil {
		return false, err
	}
	if o == nil {
		return true, nil
	}
	ok, err := a.release(ctx, o)
	if ok {
		klog.FromContext(ctx).V(4).Info("Released address", "pool", o.pool, "ip", o.ip, "handle", h.Key())
	}
	return ok, err
}

// ReleaseIP frees ip in pool only if its owner is still owner (ContainerID,
// and IfName when set): an address that was meanwhile released and handed to
// another pod is never taken from it. Returns what was released.
func (a *EtcdAllocator) ReleaseIP(ctx context.Context, pool string, ip netip.Addr,
	owner Handle) (Allocation, error) {
	l, err := a.layout(ctx, pool)
	if err != nil {
		return Allocation{}, err
	}
	o, err := a.readByIP(ctx, pool, ip)
	if err != nil {
		return Allocation{}, err
	}
	if o == nil {
		return Allocation{}, fmt.Errorf("%w: %s in pool %q is not allocated", ErrNotFound, ip, pool)
	}
	if o.rec.Handle.ContainerID != owner.ContainerID ||
		(owner.IfName != "" && owner.IfName != o.rec.Handle.IfName) {
		return Allocation{}, fmt.Errorf("%w: %s in pool %q belongs to %q, not %q", ErrOwnerMismatch, ip,
			pool, o.rec.Handle.Key(), owner.Key())
	}
	if o.rec.Handle.ContainerID == "" {
		// releasing a held address by hand drops the hold and the pin: the pod gets a new address
		o.dropPin = true
	}
	ok, err := a.release(ctx, o)
	if err != nil {
		return Allocation{}, err
	}
	if !ok {
		return Allocation{}, fmt.Errorf("%w: %s in pool %q changed while releasing it; look again",
			ErrOwnerMismatch, ip, pool)
	}
	return l.allocation(ip, o.rec), nil
}

// GC releases every attachment of req.Network made on req.Node that is not
// in req.Valid (CNI GC, cni.dev/valid-attachments). Held fixed IPs and other
// nodes' attachments are never touched.
func (a *EtcdAllocator) GC(ctx context.Context, req GCRequest) ([]Allocation, error) {
	if req.Node == "" {
		return nil, errors.New("ipam GC: the node name is required, so that only this node's " +
			"attachments are collected")
	}
	valid := make(map[string]bool, len(req.Valid))
	for _, h := range req.Valid {
		valid[h.Key()] = true
	}
	all, err := a.ListAllocations(ctx, req.Pool)
	if err != nil {
		return nil, err
	}
	var released []Allocation
	var errs []error
	for _, al := range all {
		h := al.Handle
		if al.Held() || h.IsBuffer() || h.Node != req.Node ||
			(req.Network != "" && h.Network != req.Network) || valid[h.Key()] {
			continue
		}
		r, err := a.ReleaseIP(ctx, al.Pool, al.IP.Addr(), h)
		if errors.Is(err, ErrNotFound) || errors.Is(err, ErrOwnerMismatch) {
			continue // released or reused meanwhile: not ours any more
		}
		if err != nil {
			// The spec: GC goes on and reports every failure at the end.
			errs = append(errs, fmt.Errorf("ipam GC: release %s (%s): %w", al.IP.Addr(), h.Key(), err))
			continue
		}
		released = append(released, r)
	}
	return released, errors.Join(errs...)
}

// ListAllocations returns the allocations of pool ("" = every pool), sorted by pool and address.
func (a *EtcdAllocator) ListAllocations(ctx context.Context, pool string) ([]Allocation, error) {
	pools, err := a.ListPools(ctx)
	if err != nil {
		return nil, err
	}
	layouts := map[string]*layout{}
	for i := range pools {
		l, err := newLayout(&pools[i])
		if err != nil {
			return nil, err
		}
		layouts[pools[i].Name] = l
	}
	if pool != "" && layouts[pool] == nil {
		return nil, fmt.Errorf("%w: %q", ErrPoolNotFound, pool)
	}
	resp, err := a.cli.Get(ctx, a.ipsPrefix(pool), clientv3.WithPrefix())
	if err != nil {
		return nil, storeErr("list allocations", err)
	}
	var out []Allocation
	for _, kv := range resp.Kvs {
		poolName, ipStr, _ := strings.Cut(strings.TrimPrefix(string(kv.Key), a.ipsPrefix("")), "/")
		ip, err := netip.ParseAddr(ipStr)
		l := layouts[poolName]
		if err != nil || l == nil {
			klog.FromContext(ctx).Info("Ignoring a stray key in the IPAM prefix", "key", string(kv.Key))
			continue
		}
		var rec record
		if err := json.Unmarshal(kv.Value, &rec); err != nil {
			return nil, fmt.Errorf("ipam: corrupt record %s: %w", kv.Key, err)
		}
		out = append(out, l.allocation(ip, rec))
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Pool != out[j].Pool {
			return out[i].Pool < out[j].Pool
		}
		return out[i].IP.Addr().Less(out[j].IP.Addr())
	})
	return out, nil
}

// Stats counts the addresses of pool.
func (a *EtcdAllocator) Stats(ctx context.Context, pool string) (PoolStats, error) {
	l, err := a.layout(ctx, pool)
	if err != nil {
		return PoolStats{}, err
	}
	all, err := a.ListAllocations(ctx, pool)
	if err != nil {
		return PoolStats{}, err
	}
	st := PoolStats{Pool: pool, Size: l.size}
	for _, al := range all {
		if !l.allocatable(al.IP.Addr()) {
			continue
		}
		if al.Held() {
			st.Held++
		} else {
			st.Used++
		}
	}
	st.Free = st.Size - st.Used - st.Held
	return st, nil
}

// Status returns nil when etcd answers and pool (if not "") has a free address.
func (a *EtcdAllocator) Status(ctx context.Context, pool string) error {
	if pool == "" {
		_, err := a.cli.Get(ctx, a.prefix+"/pools/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		return storeErr("status", err)
	}
	st, err := a.Stats(ctx, pool)
	if err != nil {
		return err
	}
	if st.Free == 0 {
		return fmt.Errorf("%w: %q has %d addresses, %d used, %d held for fixed-IP pods", ErrExhausted,
			pool, st.Size, st.Used, st.Held)
	}
	return nil
}
