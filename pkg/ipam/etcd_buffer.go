package ipam

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Node buffers: a node's IPAM agent keeps a few addresses claimed in etcd
// under its own name, so that it can hand one to a pod while etcd is
// unreachable. A buffered address is an ordinary allocation whose handle is
// a buffer handle: the allocator never hands it to anyone else, GC and the
// reconciler leave it alone (it has no pod), and Transfer moves it to a pod.

// BufferIfName is the interface name of every buffer handle.
const BufferIfName = "node-buffer"

const bufferPrefix = "buffer."

// NewBufferHandle returns a fresh buffer handle of node on network.
func NewBufferHandle(node, network string) Handle {
	b := make([]byte, 6)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return Handle{ContainerID: bufferPrefix + node + "." + hex.EncodeToString(b), IfName: BufferIfName,
		Node: node, Network: network}
}

// IsBuffer reports whether h is a node buffer's handle, not a pod's.
func (h Handle) IsBuffer() bool {
	return h.IfName == BufferIfName && strings.HasPrefix(h.ContainerID, bufferPrefix)
}

// ErrHandleHasAddress means the pod handle a buffered address was to go to
// already owns an address in etcd (an ADD whose etcd commit outcome was lost
// before the buffer answered it).
var ErrHandleHasAddress = errors.New("ipam handle already has an address")

// Prefix returns the allocator's etcd key prefix.
func (a *EtcdAllocator) Prefix() string { return a.prefix }

// Client returns the allocator's etcd client.
func (a *EtcdAllocator) Client() *clientv3.Client { return a.cli }

// Transfer moves ip in pool from the buffer handle from to the pod handle to,
// in one transaction guarded by the IP key's revision: it succeeds only while
// from still owns ip (or to already does: a replayed transfer). An address
// another handle owns is never taken: ErrOwnerMismatch.
func (a *EtcdAllocator) Transfer(ctx context.Context, pool string, ip netip.Addr, from,
	to Handle) (Allocation, error) {
	if err := validateHandle(to); err != nil {
		return Allocation{}, err
	}
	l, err := a.layout(ctx, pool)
	if err != nil {
		return Allocation{}, err
	}
	for attempt := 0; attempt < 4; attempt++ {
		o, err := a.readByIP(ctx, pool, ip)
		if err != nil {
			return Allocation{}, err
		}
		switch {
		case o == nil:
			return Allocation{}, fmt.Errorf("%w: %s in pool %q is not allocated (the buffer of %s lost it)",
				ErrNotFound, ip, pool, from.Node)
		case o.rec.Handle.Same(to):
			return l.allocation(ip, o.rec), nil
		case !o.rec.Handle.Same(from):
			return Allocation{}, fmt.Errorf("%w: %s in pool %q belongs to %q, not the buffer %q",
				ErrOwnerMismatch, ip, pool, o.rec.Handle.Key(), from.Key())
		}
		ipk, hk := a.ipKey(pool, ip), a.handleKey(to)
		rec := record{Handle: to, AllocatedAt: a.now().UTC()}
		cmps := []clientv3.Cmp{
			clientv3.Compare(clientv3.ModRevision(ipk), "=", o.ipRev),
			clientv3.Compare(clientv3.CreateRevision(hk), "=", 0),
		}
		ops := []clientv3.Op{clientv3.OpPut(ipk, mustJSON(rec)),
			clientv3.OpPut(hk, mustJSON(handleRef{Pool: pool, IP: ip}))}
		if o.hkRev != 0 {
			ops = append(ops, clientv3.OpDelete(o.hk))
		}
		a.txns.Add(1)
		resp, err := a.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
		if err != nil {
			return Allocation{}, storeErr("transfer "+ip.String(), err)
		}
		if resp.Succeeded {
			a.allocs.Add(1)
			return l.allocation(ip, rec), nil
		}
		if _, found, err := a.Lookup(ctx, to); err == nil && found {
			return Allocation{}, fmt.Errorf("%w: %s", ErrHandleHasAddress, to.Key())
		}
	}
	return Allocation{}, fmt.Errorf("%w: transfer of %s to %s kept conflicting", ErrTryAgain, ip, to.Key())
}

// ClaimIP gives h the free address ip of pool, in one transaction that
// succeeds only if nobody holds ip and h holds nothing. It records, after
// an etcd outage, an address the node handed out from its buffer that etcd
// no longer held for it. ErrOwnerMismatch when ip is taken.
func (a *EtcdAllocator) ClaimIP(ctx context.Context, pool string, ip netip.Addr,
	h Handle) (Allocation, error) {
	if err := validateHandle(h); err != nil {
		return Allocation{}, err
	}
	l, rev, err := a.cachedLayout(ctx, pool)
	if err != nil {
		return Allocation{}, err
	}
	al, outcome, err := a.tryClaim(ctx, l, rev, ip, h)
	switch {
	case err != nil:
		return Allocation{}, err
	case outcome == claimWon:
		return al, nil
	case outcome == claimHandleExists:
		return Allocation{}, fmt.Errorf("%w: %s", ErrHandleHasAddress, h.Key())
	case outcome == claimPoolChanged:
		a.forgetLayout(pool)
		return Allocation{}, fmt.Errorf("%w: pool %q changed", ErrTryAgain, pool)
	}
	return Allocation{}, fmt.Errorf("%w: %s in pool %q is held by another handle", ErrOwnerMismatch,
		ip, pool)
}
