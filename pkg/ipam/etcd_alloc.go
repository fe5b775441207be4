package ipam

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"net/netip"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"k8s.io/klog/v2"
)

func validateHandle(h Handle) error {
	switch {
	case h.ContainerID == "" || h.IfName == "":
		return fmt.Errorf("%w: container ID and interface name are both required (got %q, %q)",
			ErrInvalidHandle, h.ContainerID, h.IfName)
	case strings.ContainsAny(h.ContainerID+h.IfName, "/\x00"):
		return fmt.Errorf("%w: container ID %q and interface name %q must not contain '/'",
			ErrInvalidHandle, h.ContainerID, h.IfName)
	case h.Fixed && (h.PodNamespace == "" || h.PodName == ""):
		return fmt.Errorf("%w: a fixed IP needs the pod namespace and name (K8S_POD_NAMESPACE, "+
			"K8S_POD_NAME)", ErrInvalidHandle)
	}
	return nil
}

// allocState is what one read of etcd tells Allocate.
type allocState struct {
	l       *layout
	poolRev int64
	owned   *Allocation // the handle's existing allocation
	pin     netip.Addr  // the pod's pinned address, if Fixed and pinned
	pinRev  int64       // mod revision of the pinned IP key (0: missing)
	pinRec  *record     // the pinned IP key's record
}

// Allocate gives h an address from pool. The same handle gets the same
// address. After WithMaxAttempts lost races or store errors it returns an
// error wrapping ErrTryAgain; a full pool returns ErrExhausted.
func (a *EtcdAllocator) Allocate(ctx context.Context, pool string, h Handle) (Allocation, error) {
	if err := validateHandle(h); err != nil {
		return Allocation{}, err
	}
	var (
		lastErr error
		used    map[uint64]bool // the pool's used offsets, once read
	)
	for attempt := 0; attempt < a.maxAttempts; attempt++ {
		if attempt > 0 {
			if err := backoff(ctx, attempt); err != nil {
				return Allocation{}, fmt.Errorf("ipam allocate in %q: %w (last error: %w)", pool, err, lastErr)
			}
		}
		alloc, done, err := a.allocateOnce(ctx, pool, h, attempt, &used)
		if done {
			return alloc, err
		}
		lastErr = err
	}
	return Allocation{}, fmt.Errorf("%w: no address from pool %q for %s after %d attempts: %w",
		ErrTryAgain, pool, h.Key(), a.maxAttempts, lastErr)
}

// allocateOnce is one attempt of Allocate, bounded by the per-attempt
// timeout so a request stuck on a dead etcd member is retried elsewhere.
// done=false means "try again" with err saying why.
func (a *EtcdAllocator) allocateOnce(ctx context.Context, pool string, h Handle, attempt int,
	usedp *map[uint64]bool) (Allocation, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, a.attemptTimeout)
	defer cancel()
	if h.Fixed {
		return a.allocateFixedOnce(ctx, pool, h, attempt, usedp)
	}
	l, rev, err := a.cachedLayout(ctx, pool)
	if err != nil {
		return Allocation{}, !errors.Is(err, ErrUnavailable), err
	}
	return a.claimOnce(ctx, l, rev, h, attempt, usedp)
}

// claimOnce picks a candidate and runs the allocation transaction.
func (a *EtcdAllocator) claimOnce(ctx context.Context, l *layout, poolRev int64, h Handle,
	attempt int, usedp *map[uint64]bool) (Allocation, bool, error) {
	cand, ok, used, err := a.pickCandidate(ctx, l, h, attempt, *usedp)
	*usedp = used
	if err != nil {
		return Allocation{}, errors.Is(err, ErrExhausted), err
	}
	if !ok {
		return Allocation{}, false, errors.New("no candidate")
	}
	alloc, outcome, err := a.tryClaim(ctx, l, poolRev, cand, h)
	switch {
	case err != nil:
		klog.FromContext(ctx).V(4).Info("Allocation transaction failed, retrying", "pool", l.pool.Name,
			"handle", h.Key(), "candidate", cand, "err", err)
		return Allocation{}, false, err
	case outcome == claimWon:
		return alloc, true, nil
	case outcome == claimHandleExists:
		return a.existing(ctx, l.pool.Name, h)
	case outcome == claimPoolChanged:
		a.forgetLayout(l.pool.Name)
		return Allocation{}, false, fmt.Errorf("pool %q changed", l.pool.Name)
	}
	a.conflicts.Add(1)
	if used != nil {
		used[l.offset(cand)] = true
	}
	return Allocation{}, false, fmt.Errorf("lost the race for %s", cand)
}

// existing returns h's allocation after a transaction found its handle key:
// an earlier or concurrent ADD of the same attachment (or one whose reply was lost).
func (a *EtcdAllocator) existing(ctx context.Context, pool string, h Handle) (Allocation, bool, error) {
	alloc, found, err := a.Lookup(ctx, h)
	if err != nil {
		return Allocation{}, false, err
	}
	if !found {
		// A dangling handle key (never written by this package): drop it and retry.
		return Allocation{}, false, a.Release(ctx, h)
	}
	if alloc.Pool != pool {
		return Allocation{}, true, fmt.Errorf("ipam: %s already has %s from pool %q, not %q: "+
			"DEL it first", h.Key(), alloc.IP, alloc.Pool, pool)
	}
	return alloc, true, nil
}

// allocateFixedOnce is an attempt for a fixed-IP handle: it also reads the pod's pin.
func (a *EtcdAllocator) allocateFixedOnce(ctx context.Context, pool string, h Handle, attempt int,
	usedp *map[uint64]bool) (Allocation, bool, error) {
	st, err := a.readState(ctx, pool, h)
	if err != nil {
		return Allocation{}, !errors.Is(err, ErrUnavailable), err
	}
	if st.owned != nil {
		return *st.owned, true, nil
	}
	if st.pin.IsValid() {
		return a.allocatePinned(ctx, st, h)
	}
	return a.claimOnce(ctx, st.l, st.poolRev, h, attempt, usedp)
}

// backoff sleeps a little, growing with the attempt, jittered so losers don't retry in lockstep.
func backoff(ctx context.Context, attempt int) error {
	d := time.Duration(rand.Int64N(int64(time.Millisecond)*int64(min(attempt, 20)))) + 100*time.Microsecond
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// readState reads, in one read-only transaction, the pool, the handle's
// current allocation and (for a fixed-IP handle) the pod's pin.
func (a *EtcdAllocator) readState(ctx context.Context, pool string, h Handle) (*allocState, error) {
	ops := []clientv3.Op{clientv3.OpGet(a.poolKey(pool)), clientv3.OpGet(a.handleKey(h))}
	if h.Fixed {
		ops = append(ops, clientv3.OpGet(a.pinKey(pool, h.PodNamespace, h.PodName)))
	}
	resp, err := a.cli.Txn(ctx).Then(ops...).Commit()
	if err != nil {
		return nil, storeErr("read state", err)
	}
	poolKvs := resp.Responses[0].GetResponseRange().Kvs
	if len(poolKvs) == 0 {
		return nil, fmt.Errorf("%w: %q (create it with `cni-vlan ipam create-pool` or an "+
			"inline poolSpec)", ErrPoolNotFound, pool)
	}
	st := &allocState{poolRev: poolKvs[0].ModRevision}
	if st.l, err = decodePool(poolKvs[0].Value); err != nil {
		return nil, err
	}
	if kvs := resp.Responses[1].GetResponseRange().Kvs; len(kvs) > 0 {
		alloc, found, err := a.Lookup(ctx, h)
		if err != nil {
			return nil, err
		}
		if found {
			if alloc.Pool != pool {
				return nil, fmt.Errorf("ipam: %s already has %s from pool %q, not %q: DEL it first", h.Key(),
					alloc.IP, alloc.Pool, pool)
			}
			st.owned = &alloc
			return st, nil
		}
	}
	if h.Fixed {
		if kvs := resp.Responses[2].GetResponseRange().Kvs; len(kvs) > 0 {
			if st.pin, err = netip.ParseAddr(string(kvs[0].Value)); err != nil {
				return nil, fmt.Errorf("ipam: corrupt pin %s: %w", kvs[0].Key, err)
			}
			if err := a.readPinnedIP(ctx, st); err != nil {
				return nil, err
			}
		}
	}
	return st, nil
}

func (a *EtcdAllocator) readPinnedIP(ctx context.Context, st *allocState) error {
	resp, err := a.cli.Get(ctx, a.ipKey(st.l.pool.Name, st.pin))
	if err != nil {
		return storeErr("read pinned address", err)
	}
	if len(resp.Kvs) > 0 {
		var rec record
		if err := json.Unmarshal(resp.Kvs[0].Value, &rec); err != nil {
			return fmt.Errorf("ipam: corrupt record %s: %w", resp.Kvs[0].Key, err)
		}
		st.pinRev, st.pinRec = resp.Kvs[0].ModRevision, &rec
	}
	return nil
}

// allocatePinned claims the pod's pinned address. done=false means "retry".
func (a *EtcdAllocator) allocatePinned(ctx context.Context, st *allocState, h Handle) (Allocation,
	bool, error) {
	if st.pinRec != nil && st.pinRec.Handle.ContainerID != "" {
		// The previous container of this pod still holds it (its DEL has not run yet).
		return Allocation{}, true, fmt.Errorf("%w: fixed IP %s of pod %s/%s is still held by container "+
			"%s; it is freed by that container's DEL or the reconciler",
			ErrTryAgain, st.pin, h.PodNamespace, h.PodName, st.pinRec.Handle.ContainerID)
	}
	ipk, hk := a.ipKey(st.l.pool.Name, st.pin), a.handleKey(h)
	rec := record{Handle: h, Fixed: true, AllocatedAt: a.now().UTC()}
	a.txns.Add(1)
	resp, err := a.cli.Txn(ctx).If(
		clientv3.Compare(clientv3.ModRevision(ipk), "=", st.pinRev),
		clientv3.Compare(clientv3.CreateRevision(hk), "=", 0),
	).Then(
		clientv3.OpPut(ipk, mustJSON(rec)),
		clientv3.OpPut(hk, mustJSON(handleRef{Pool: st.l.pool.Name, IP: st.pin})),
	).Commit()
	if err != nil {
		return Allocation{}, false, storeErr("claim fixed address", err)
	}
	if !resp.Succeeded {
		a.conflicts.Add(1)
		return Allocation{}, false, fmt.Errorf("fixed address %s changed while claiming it", st.pin)
	}
	a.allocs.Add(1)
	return st.l.allocation(st.pin, rec), true, nil
}

type claimOutcome int

const (
	claimLost         claimOutcome = iota // the IP key exists: another handle took it
	claimWon                              // both keys created
	claimHandleExists                     // the handle already owns an address
	claimPoolChanged                      // the pool was deleted or recreated since it was read
)

// tryClaim runs the allocation transaction: create the IP key and the handle
// key if neither exists and the pool is the one that was read (and, for a
// fixed-IP handle, create the pin). One round trip: the Else branch tells
// why it failed.
func (a *EtcdAllocator) tryClaim(ctx context.Context, l *layout, poolRev int64, ip netip.Addr,
	h Handle) (Allocation, claimOutcome, error) {
	ipk, hk, pk := a.ipKey(l.pool.Name, ip), a.handleKey(h), a.poolKey(l.pool.Name)
	rec := record{Handle: h, Fixed: h.Fixed, AllocatedAt: a.now().UTC()}
	cmps := []clientv3.Cmp{
		clientv3.Compare(clientv3.CreateRevision(ipk), "=", 0),
		clientv3.Compare(clientv3.CreateRevision(hk), "=", 0),
		clientv3.Compare(clientv3.ModRevision(pk), "=", poolRev),
	}
	ops := []clientv3.Op{
		clientv3.OpPut(ipk, mustJSON(rec)),
		clientv3.OpPut(hk, mustJSON(handleRef{Pool: l.pool.Name, IP: ip})),
	}
	if h.Fixed {
		pin := a.pinKey(l.pool.Name, h.PodNamespace, h.PodName)
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(pin), "=", 0))
		ops = append(ops, clientv3.OpPut(pin, ip.String()))
	}
	a.txns.Add(1)
	resp, err := a.cli.Txn(ctx).If(cmps...).Then(ops...).
		Else(clientv3.OpGet(hk, clientv3.WithKeysOnly()),
			clientv3.OpGet(pk, clientv3.WithKeysOnly())).Commit()
	if err != nil {
		return Allocation{}, claimLost, storeErr("allocate", err)
	}
	if resp.Succeeded {
		a.allocs.Add(1)
		return l.allocation(ip, rec), claimWon, nil
	}
	if len(resp.Responses[0].GetResponseRange().Kvs) > 0 {
		return Allocation{}, claimHandleExists, nil
	}
	if kvs := resp.Responses[1].GetResponseRange().Kvs; len(kvs) == 0 || kvs[0].ModRevision != poolRev {
		return Allocation{}, claimPoolChanged, nil
	}
	return Allocation{}, claimLost, nil // the IP was taken, or (fixed) the pod got pinned meanwhile
}

// pickCandidate chooses the next address to try. The first try of the
// spread strategy is blind (a hash of the handle, no read); later tries read
// the pool's used keys once and then pick random free addresses.
func (a *EtcdAllocator) pickCandidate(ctx context.Context, l *layout, h Handle, attempt int,
	used map[uint64]bool) (netip.Addr, bool, map[uint64]bool, error) {
	if a.strategy == strategySpread && attempt == 0 {
		return l.nth(hashHandle(h) % l.size), true, nil, nil
	}
	// Re-read the used set on the first informed try, then every few conflicts.
	if used == nil || attempt%4 == 0 || a.strategy == strategyFirstFree {
		var err error
		if used, err = a.usedOffsets(ctx, l, true); err != nil {
			return netip.Addr{}, false, nil, err
		}
	}
	start := uint64(0)
	if a.strategy == strategySpread {
		start = rand.Uint64N(l.size)
	}
	if ip, ok := firstFree(l, used, start); ok {
		return ip, true, used, nil
	}
	// A serializable read may be stale: confirm exhaustion with a linearizable one.
	fresh, err := a.usedOffsets(ctx, l, false)
	if err != nil {
		return netip.Addr{}, false, nil, err
	}
	if ip, ok := firstFree(l, fresh, start); ok {
		return ip, true, fresh, nil
	}
	return netip.Addr{}, false, nil, l.exhausted()
}

// exhausted is the error of an ADD that found every address of the pool in use.
func (l *layout) exhausted() error {
	return fmt.Errorf("%w: all %d addresses of %q (%s) are in use", ErrExhausted, l.size, l.pool.Name,
		l.pool.Subnet)
}

func hashHandle(h Handle) uint64 {
	f := fnv.New64a()
	_, _ = f.Write([]byte(h.Key())) // hash.Hash never fails
	return f.Sum64()
}

// firstFree returns the first allocatable address at or after index start (wrapping).
func firstFree(l *layout, used map[uint64]bool, start uint64) (netip.Addr, bool) {
	for i := uint64(0); i < l.size; i++ {
		ip := l.nth((start + i) % l.size)
		if !used[l.offset(ip)] {
			return ip, true
		}
	}
	return netip.Addr{}, false
}

// usedOffsets reads the keys of the pool's IP keys (no values).
func (a *EtcdAllocator) usedOffsets(ctx context.Context, l *layout,
	serializable bool) (map[uint64]bool, error) {
	a.scans.Add(1)
	opts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithKeysOnly()}
	if serializable {
		opts = append(opts, clientv3.WithSerializable())
	}
	pfx := a.ipsPrefix(l.pool.Name)
	resp, err := a.cli.Get(ctx, pfx, opts...)
	if err != nil {
		return nil, storeErr("scan pool "+l.pool.Name, err)
	}
	used := make(map[uint64]bool, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		ip, err := netip.ParseAddr(strings.TrimPrefix(string(kv.Key), pfx))
		if err != nil || !l.pool.Subnet.Contains(ip) {
			continue // not ours to judge; never allocatable anyway
		}
		used[l.offset(ip)] = true
	}
	return used, nil
}
