package ipam

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// MaxBatch is the most handles AllocateMany claims in one transaction: each is one operation of
// the transaction, and etcd refuses transactions of more than --max-txn-ops (default 128).
const MaxBatch = 64

// AllocResult is what AllocateMany gives one handle: the same as Allocate would.
type AllocResult struct {
	Alloc Allocation
	Err   error
}

// AllocateMany allocates an address of pool to each handle of hs, as Allocate does one at a time
// but in far fewer round trips: each round reads the pool's used set at most once and claims an
// address for every handle still waiting in one transaction, each claim a nested transaction of
// its own, so a handle that loses its address to another node fails alone and tries again in the
// next round. A node agent with many ADDs in flight (a Deployment scaled up, a node filling) pays
// one etcd write for all of them instead of one each.
//
// Fixed-IP handles, and more than MaxBatch handles, are refused: Allocate serves those. Duplicate
// handles get the same result.
func (a *EtcdAllocator) AllocateMany(ctx context.Context, pool string, hs []Handle) []AllocResult {
	res := make([]AllocResult, len(hs))
	if len(hs) > MaxBatch {
		for i := range res {
			res[i].Err = fmt.Errorf("ipam: %d handles in one batch, at most %d", len(hs), MaxBatch)
		}
		return res
	}
	first := map[string]int{} // handle key -> index of its first occurrence
	var todo []int
	for i, h := range hs {
		if err := validateHandle(h); err != nil {
			res[i].Err = err
			continue
		}
		if h.Fixed {
			res[i].Err = fmt.Errorf("%w: %s has a fixed IP: allocate it alone", ErrInvalidHandle, h.Key())
			continue
		}
		if _, dup := first[h.Key()]; dup {
			continue
		}
		first[h.Key()] = i
		todo = append(todo, i)
	}
	var lastErr error
	var used map[uint64]bool
	for attempt := 0; attempt < a.maxAttempts && len(todo) > 0; attempt++ {
		if attempt > 0 {
			if err := backoff(ctx, attempt); err != nil {
				lastErr = fmt.Errorf("%w (last error: %w)", err, lastErr)
				break
			}
		}
		var err error
		todo, used, err = a.claimRound(ctx, pool, hs, todo, attempt, used, res)
		if err != nil {
			lastErr = err
		}
	}
	for _, i := range todo {
		res[i].Err = fmt.Errorf("%w: no address from pool %q for %s after %d attempts: %w",
			ErrTryAgain, pool, hs[i].Key(), a.maxAttempts, lastErr)
	}
	for i, h := range hs {
		if j, ok := first[h.Key()]; ok && j != i {
			res[i] = res[j]
		}
	}
	return res
}

// claimRound is one round of AllocateMany: it settles what it can in res and returns the
// indexes of the handles to try again, the used set as it now knows it, and why they wait.
func (a *EtcdAllocator) claimRound(ctx context.Context, pool string, hs []Handle, todo []int,
	attempt int, used map[uint64]bool, res []AllocResult) ([]int, map[uint64]bool, error) {
	ctx, cancel := context.WithTimeout(ctx, a.attemptTimeout)
	defer cancel()
	l, poolRev, err := a.cachedLayout(ctx, pool)
	if err != nil {
		if !errors.Is(err, ErrUnavailable) { // the pool is gone or malformed: final
			for _, i := range todo {
				res[i].Err = err
			}
			return nil, used, err
		}
		return todo, used, err
	}
	cands, full, used, err := a.pickCandidates(ctx, l, hs, todo, attempt, used)
	if err != nil {
		return todo, used, err
	}
	var claiming, retry []int
	for _, i := range todo {
		switch _, ok := cands[i]; {
		case ok:
			claiming = append(claiming, i)
		case full:
			res[i].Err = l.exhausted()
		default: // its blind pick collided with another handle's
			retry = append(retry, i)
		}
	}
	if len(claiming) == 0 {
		return retry, used, nil
	}
	recs := make(map[int]record, len(claiming))
	ops := make([]clientv3.Op, 0, len(claiming))
	for _, i := range claiming {
		h, ip := hs[i], cands[i]
		ipk, hk := a.ipKey(pool, ip), a.handleKey(h)
		recs[i] = record{Handle: h, AllocatedAt: a.now().UTC()}
		ops = append(ops, clientv3.OpTxn(
			[]clientv3.Cmp{
				clientv3.Compare(clientv3.CreateRevision(ipk), "=", 0),
				clientv3.Compare(clientv3.CreateRevision(hk), "=", 0),
			},
			[]clientv3.Op{
				clientv3.OpPut(ipk, mustJSON(recs[i])),
				clientv3.OpPut(hk, mustJSON(handleRef{Pool: pool, IP: ip})),
			},
			[]clientv3.Op{clientv3.OpGet(hk, clientv3.WithKeysOnly())}))
	}
	a.txns.Add(1)
	pk := a.poolKey(pool)
	resp, err := a.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(pk), "=", poolRev)).
		Then(ops...).Commit()
	if err != nil {
		return todo, used, storeErr("allocate", err)
	}
	if !resp.Succeeded {
		a.forgetLayout(pool)
		return todo, used, fmt.Errorf("pool %q changed", pool)
	}
	for k, i := range claiming {
		tr := resp.Responses[k].GetResponseTxn()
		switch {
		case tr.GetSucceeded():
			a.allocs.Add(1)
			res[i].Alloc = l.allocation(cands[i], recs[i])
			if used != nil {
				used[l.offset(cands[i])] = true
			}
		case len(tr.GetResponses()) > 0 && len(tr.GetResponses()[0].GetResponseRange().GetKvs()) > 0:
			// The handle already holds an address: a repeated ADD.
			al, done, err := a.existing(ctx, pool, hs[i])
			if !done {
				retry = append(retry, i)
				continue
			}
			res[i] = AllocResult{Alloc: al, Err: err}
		default:
			a.conflicts.Add(1)
			if used != nil {
				used[l.offset(cands[i])] = true
			}
			retry = append(retry, i)
		}
	}
	if len(retry) > 0 {
		return retry, used, fmt.Errorf("lost the race for %d of %d addresses", len(retry), len(claiming))
	}
	return nil, used, nil
}

// pickCandidates chooses a distinct address for each handle of todo. The first round is blind
// (a hash of each handle; handles whose hashes collide wait for the next round); later rounds
// read the used set (again every few rounds) and take free addresses from random starting
// points. full means the handles left without an address found the pool full, confirmed by a
// linearizable read.
func (a *EtcdAllocator) pickCandidates(ctx context.Context, l *layout, hs []Handle, todo []int,
	attempt int, used map[uint64]bool) (cands map[int]netip.Addr, full bool, _ map[uint64]bool,
	_ error) {
	cands = make(map[int]netip.Addr, len(todo))
	taken := map[uint64]bool{}
	if a.strategy == strategySpread && attempt == 0 {
		for _, i := range todo {
			ip := l.nth(hashHandle(hs[i]) % l.size)
			if off := l.offset(ip); !taken[off] {
				taken[off] = true
				cands[i] = ip
			}
		}
		return cands, false, used, nil
	}
	if used == nil || attempt%4 == 0 || a.strategy == strategyFirstFree {
		var err error
		if used, err = a.usedOffsets(ctx, l, true); err != nil {
			return nil, false, nil, err
		}
	}
	pick := func(used map[uint64]bool) {
		busy := maps.Clone(used) // plus the addresses picked for the other handles
		for off := range taken {
			busy[off] = true
		}
		for _, i := range todo {
			if _, ok := cands[i]; ok {
				continue
			}
			start := uint64(0)
			if a.strategy == strategySpread {
				start = rand.Uint64N(l.size)
			}
			ip, ok := firstFree(l, busy, start)
			if !ok {
				return
			}
			busy[l.offset(ip)], taken[l.offset(ip)] = true, true
			cands[i] = ip
		}
	}
	pick(used)
	if len(cands) < len(todo) {
		// A serializable read may be stale: confirm with a linearizable one.
		fresh, err := a.usedOffsets(ctx, l, false)
		if err != nil {
			return nil, false, nil, err
		}
		used = fresh
		pick(used)
	}
	return cands, len(cands) < len(todo), used, nil
}
