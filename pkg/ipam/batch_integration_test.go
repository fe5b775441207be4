//go:build integration

package ipam_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/ipamtest"
	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/pkg/ipam"
)

// TestAllocateManyFillsPoolExactly: ten nodes write their ADDs in batches into a pool of exactly
// 1,000 addresses and ask for 1,100: 1,000 get distinct addresses, etcd holds exactly those, the
// 100 others are told the pool is full, and a batch repeated after the fact gets the same
// addresses back (a retried ADD), not new ones.
func TestAllocateManyFillsPoolExactly(t *testing.T) {
	e := testenv.StartEtcd(t)
	var allocs []*ipam.EtcdAllocator
	for _, a := range nodeAllocators(t, []*testenv.Etcd{e}, "/batch") {
		allocs = append(allocs, a.(*ipam.EtcdAllocator))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := allocs[0].CreatePool(ctx, ipamtest.Pool1000("p")); err != nil {
		t.Fatal(err)
	}
	batches := make([][]ipam.Handle, len(allocs)) // the last batch of each node, asked again below
	res := ipamtest.LoadResult{Owner: map[netip.Addr]string{}}
	var mu sync.Mutex
	var exhausted int
	var wg sync.WaitGroup
	for n, a := range allocs {
		wg.Go(func() {
			for b := range 2 { // 2 batches of 55 per node: 1,100 handles
				hs := make([]ipam.Handle, 55)
				for i := range hs {
					hs[i] = ipam.Handle{ContainerID: fmt.Sprintf("n%d-b%d-c%d", n, b, i), IfName: "eth0",
						Node: fmt.Sprintf("node-%d", n)}
				}
				batches[n] = hs
				for i, r := range a.AllocateMany(ctx, "p", hs) {
					mu.Lock()
					switch {
					case errors.Is(r.Err, ipam.ErrExhausted):
						exhausted++
					case r.Err != nil:
						res.Failures = append(res.Failures, fmt.Errorf("%s: %w", hs[i].Key(), r.Err))
					default:
						if prev, dup := res.Owner[r.Alloc.IP.Addr()]; dup {
							res.Duplicates = append(res.Duplicates, fmt.Sprintf("%s given to %s and %s",
								r.Alloc.IP, prev, hs[i].Key()))
						}
						res.Owner[r.Alloc.IP.Addr()] = hs[i].Key()
					}
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	for _, f := range res.Failures {
		t.Error(f)
	}
	for _, d := range res.Duplicates {
		t.Error("DUPLICATE:", d)
	}
	if len(res.Owner) != 1000 || exhausted != 100 {
		t.Fatalf("%d distinct addresses and %d told the pool is full, want 1000 and 100", len(res.Owner),
			exhausted)
	}
	checkStore(t, allocs[0], res)

	// A retried batch (the same handles, one twice) gets what etcd holds for each handle.
	again := append(batches[0][:10:10], batches[0][0])
	got := allocs[1].AllocateMany(ctx, "p", again)
	for i, h := range again {
		al, found, err := allocs[1].Lookup(ctx, h)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case found && (got[i].Err != nil || got[i].Alloc.IP != al.IP):
			t.Errorf("%s holds %s; its repeated ADD got %v (%v)", h.Key(), al.IP, got[i].Alloc.IP, got[i].Err)
		case !found && !errors.Is(got[i].Err, ipam.ErrExhausted):
			t.Errorf("%s holds nothing in a full pool; its repeated ADD got %v (%v), want ErrExhausted",
				h.Key(), got[i].Alloc.IP, got[i].Err)
		}
	}
}

// TestAllocateManyRefusesWhatItCannotBatch: a fixed-IP handle, a malformed one and an oversized
// batch get clear errors, and the valid handles of the same batch their addresses.
func TestAllocateManyRefusesWhatItCannotBatch(t *testing.T) {
	e := testenv.StartEtcd(t)
	a, err := ipam.NewEtcd(testenv.NewEtcdClient(t, e), "/batch-bad")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := a.CreatePool(ctx, ipamtest.Pool1000("p")); err != nil {
		t.Fatal(err)
	}
	fixed := ipam.Handle{ContainerID: "f", IfName: "eth0", Fixed: true, PodNamespace: "ns", PodName: "db-0"}
	res := a.AllocateMany(ctx, "p", []ipam.Handle{ipamtest.H("ok"), fixed, {ContainerID: "a/b", IfName: "eth0"}})
	if res[0].Err != nil || !res[0].Alloc.IP.IsValid() {
		t.Errorf("the valid handle: %v (%v)", res[0].Alloc.IP, res[0].Err)
	}
	for i, want := range []string{"fixed IP", "must not contain"} {
		if r := res[i+1]; !errors.Is(r.Err, ipam.ErrInvalidHandle) || !strings.Contains(r.Err.Error(), want) {
			t.Errorf("handle %d: want ErrInvalidHandle saying %q, got %v", i+1, want, r.Err)
		}
	}
	big := make([]ipam.Handle, ipam.MaxBatch+1)
	for i := range big {
		big[i] = ipamtest.H(fmt.Sprintf("big-%d", i))
	}
	for _, r := range a.AllocateMany(ctx, "p", big) {
		if r.Err == nil || !strings.Contains(r.Err.Error(), "at most") {
			t.Fatalf("a batch of %d: want refused, got %v", len(big), r.Err)
		}
	}
	all, err := a.ListAllocations(ctx, "p")
	if err != nil || len(all) != 1 {
		t.Fatalf("etcd holds %d allocations (%v), want only the valid handle's", len(all), err)
	}
	if res := a.AllocateMany(ctx, "nope", []ipam.Handle{ipamtest.H("x")}); !errors.Is(res[0].Err,
		ipam.ErrPoolNotFound) {
		t.Errorf("unknown pool: want ErrPoolNotFound, got %v", res[0].Err)
	}
}
