// Package ipamtest is the conformance suite every ipam.Allocator passes:
// the behaviour the CNI plugins, the CLI and the reconciler rely on.
//
//	func TestConformance(t *testing.T) {
//		ipamtest.Conformance(t, func(t *testing.T) ipam.Allocator { return newAllocator(t) })
//	}
package ipamtest

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/berth-dev/berth/pkg/ipam"
)

// Factory returns a fresh, empty allocator for one subtest.
type Factory func(t *testing.T) ipam.Allocator

// Conformance runs the whole suite; each subtest gets its own allocator.
func Conformance(t *testing.T, newAllocator Factory) {
	tests := []struct {
		name string
		fn   func(t *testing.T, a ipam.Allocator)
	}{
		{"PoolAdmin", testPoolAdmin},
		{"InvalidPools", testInvalidPools},
		{"OverlappingPoolsOnOneVLANRefused", testOverlap},
		{"NeverAllocatesGatewayNetworkBroadcastReserved", testExcluded},
		{"IPv6Pool", testIPv6},
		{"SameHandleSameIP", testIdempotent},
		{"ReleaseComparesHandle", testReleaseComparesHandle},
		{"InvalidHandles", testInvalidHandles},
		{"FixedIPForStatefulSetPod", testFixedIP},
		{"ReleasingAHeldFixedIPDropsThePin", testReleaseHeld},
		{"GCReleasesOnlyThisNodesInvalidAttachments", testGC},
		{"StatusAndStats", testStatus},
		{"ConcurrentAllocationsAreDistinct", testConcurrent},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newAllocator(t)) })
	}
}

// Pool returns a valid test pool.
func Pool(name, subnet string) ipam.Pool {
	return ipam.Pool{Name: name, VLAN: 100, Subnet: netip.MustParsePrefix(subnet)}
}

// H returns a handle for container id on eth0.
func H(id string) ipam.Handle { return ipam.Handle{ContainerID: id, IfName: "eth0"} }

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func wantErr(t *testing.T, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("want error %v, got %v", target, err)
	}
}

func testPoolAdmin(t *testing.T, a ipam.Allocator) {
	ctx := t.Context()
	p := Pool("vlan100", "10.100.0.0/24")
	must(t, a.CreatePool(ctx, p))
	wantErr(t, a.CreatePool(ctx, p), ipam.ErrPoolExists)
	must(t, a.EnsurePool(ctx, p))
	other := p
	other.Subnet = netip.MustParsePrefix("10.101.0.0/24")
	wantErr(t, a.EnsurePool(ctx, other), ipam.ErrInvalidPool)
	got, err := a.GetPool(ctx, "vlan100")
	must(t, err)
	if got.Gateway != netip.MustParseAddr("10.100.0.1") || len(got.Routes) != 1 ||
		got.Routes[0].Dst.String() != "0.0.0.0/0" {
		t.Fatalf("defaults not applied: %+v", got)
	}
	_, err = a.GetPool(ctx, "nope")
	wantErr(t, err, ipam.ErrPoolNotFound)
	v200 := Pool("vlan200", "10.100.0.0/24")
	v200.VLAN = 200
	must(t, a.CreatePool(ctx, v200)) // same subnet on another VLAN is fine
	pools, err := a.ListPools(ctx)
	must(t, err)
	if len(pools) != 2 || pools[0].Name != "vlan100" || pools[1].Name != "vlan200" {
		t.Fatalf("ListPools = %+v", pools)
	}
	_, err = a.Allocate(ctx, "vlan200", H("c1"))
	must(t, err)
	wantErr(t, a.DeletePool(ctx, "vlan200"), ipam.ErrPoolInUse)
	must(t, a.Release(ctx, H("c1")))
	must(t, a.DeletePool(ctx, "vlan200"))
	_, err = a.Allocate(ctx, "vlan200", H("c2"))
	wantErr(t, err, ipam.ErrPoolNotFound)
}

// testOverlap: two pools on one VLAN with overlapping subnets would hand out
// the same address twice; refused, also when both are created at once.
func testOverlap(t *testing.T, a ipam.Allocator) {
	ctx := t.Context()
	must(t, a.CreatePool(ctx, Pool("a", "10.1.0.0/24")))
	for _, subnet := range []string{"10.1.0.0/24", "10.1.0.128/25", "10.0.0.0/15"} {
		err := a.CreatePool(ctx, Pool("b", subnet))
		wantErr(t, err, ipam.ErrPoolOverlap)
		if !strings.Contains(err.Error(), `"a"`) {
			t.Errorf("overlap error %q does not name the pool it overlaps", err)
		}
	}
	must(t, a.CreatePool(ctx, Pool("b", "10.1.1.0/24"))) // adjacent, disjoint
	// Concurrent creators of overlapping pools: exactly one wins.
	const n = 8
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = a.CreatePool(ctx, Pool(fmt.Sprintf("race%d", i), fmt.Sprintf("10.2.0.0/%d", 16+i)))
		}()
	}
	wg.Wait()
	won := 0
	for i, err := range errs {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, ipam.ErrPoolOverlap):
			t.Errorf("race%d: want ErrPoolOverlap or success, got %v", i, err)
		}
	}
	if won != 1 {
		t.Fatalf("%d of %d overlapping pools were created at once, want exactly 1", won, n)
	}
}

func testInvalidPools(t *testing.T, a ipam.Allocator) {
	ip := netip.MustParseAddr
	cases := []struct {
		name string
		pool ipam.Pool
	}{
		{"bad name", ipam.Pool{Name: "VLAN_100", Subnet: netip.MustParsePrefix("10.0.0.0/24")}},
		{"no subnet", ipam.Pool{Name: "p"}},
		{"host bits", ipam.Pool{Name: "p", Subnet: netip.MustParsePrefix("10.0.0.5/24")}},
		{"vlan 4095", ipam.Pool{Name: "p", VLAN: 4095, Subnet: netip.MustParsePrefix("10.0.0.0/24")}},
		{"too big", ipam.Pool{Name: "p", Subnet: netip.MustParsePrefix("10.0.0.0/8")}},
		{"too small", ipam.Pool{Name: "p", Subnet: netip.MustParsePrefix("10.0.0.0/31")}},
		{"gateway outside", ipam.Pool{Name: "p", Subnet: netip.MustParsePrefix("10.0.0.0/24"),
			Gateway: ip("10.0.1.1")}},
		{"gateway is broadcast", ipam.Pool{Name: "p", Subnet: netip.MustParsePrefix("10.0.0.0/24"),
			Gateway: ip("10.0.0.255")}},
		{"reserved outside", ipam.Pool{Name: "p", Subnet: netip.MustParsePrefix("10.0.0.0/24"),
			Reserved: []ipam.IPRange{{Start: ip("10.0.0.250"), End: ip("10.0.1.5")}}}},
		{"reserved backwards", ipam.Pool{Name: "p", Subnet: netip.MustParsePrefix("10.0.0.0/24"),
			Reserved: []ipam.IPRange{{Start: ip("10.0.0.9"), End: ip("10.0.0.5")}}}},
		{"everything reserved", ipam.Pool{Name: "p", Subnet: netip.MustParsePrefix("10.0.0.0/29"),
			Reserved: []ipam.IPRange{{Start: ip("10.0.0.2"), End: ip("10.0.0.6")}}}},
		{"route family", ipam.Pool{Name: "p", Subnet: netip.MustParsePrefix("10.0.0.0/24"),
			Routes: []ipam.Route{{Dst: netip.MustParsePrefix("::/0")}}}},
	}
	for _, tc := range cases {
		err := a.CreatePool(t.Context(), tc.pool)
		if !errors.Is(err, ipam.ErrInvalidPool) {
			t.Errorf("%s: want ErrInvalidPool, got %v", tc.name, err)
			continue
		}
		t.Logf("%s: %v", tc.name, err) // the message an admin reads
	}
}

// fill allocates until the pool is exhausted and returns the addresses.
func fill(t *testing.T, a ipam.Allocator, pool, idPrefix string, max int) map[netip.Addr]string {
	t.Helper()
	got := map[netip.Addr]string{}
	for i := 0; ; i++ {
		id := fmt.Sprintf("%s%d", idPrefix, i)
		al, err := a.Allocate(t.Context(), pool, H(id))
		if errors.Is(err, ipam.ErrExhausted) {
			return got
		}
		must(t, err)
		if prev, dup := got[al.IP.Addr()]; dup {
			t.Fatalf("%s given to %s and %s", al.IP, prev, id)
		}
		got[al.IP.Addr()] = id
		if i > max {
			t.Fatalf("more than %d allocations from a pool of %d", i, max)
		}
	}
}

func testExcluded(t *testing.T, a ipam.Allocator) {
	ip := netip.MustParseAddr
	p := ipam.Pool{Name: "p", VLAN: 7, Subnet: netip.MustParsePrefix("10.0.0.0/28"),
		Gateway: ip("10.0.0.14"),
		Reserved: []ipam.IPRange{{Start: ip("10.0.0.1"), End: ip("10.0.0.4")},
			{Start: ip("10.0.0.9"), End: ip("10.0.0.9")}}}
	must(t, a.CreatePool(t.Context(), p))
	got := fill(t, a, "p", "c", 16)
	// 16 - network - broadcast - gateway - 4 - 1 = 8
	if len(got) != 8 {
		t.Fatalf("got %d addresses, want 8: %v", len(got), got)
	}
	for _, bad := range []string{"10.0.0.0", "10.0.0.15", "10.0.0.14", "10.0.0.1", "10.0.0.4",
		"10.0.0.9"} {
		if _, ok := got[ip(bad)]; ok {
			t.Errorf("%s must never be allocated", bad)
		}
	}
	al, found, err := a.Lookup(t.Context(), H("c0"))
	must(t, err)
	if !found || al.VLAN != 7 || al.Gateway != ip("10.0.0.14") || al.IP.Bits() != 28 {
		t.Fatalf("Lookup = %+v, %v", al, found)
	}
}

func testIdempotent(t *testing.T, a ipam.Allocator) {
	ctx := t.Context()
	must(t, a.CreatePool(ctx, Pool("p", "10.0.0.0/24")))
	first, err := a.Allocate(ctx, "p", H("c1"))
	must(t, err)
	again, err := a.Allocate(ctx, "p", H("c1"))
	must(t, err)
	if first.IP != again.IP {
		t.Fatalf("same handle got %s then %s", first.IP, again.IP)
	}
	other, err := a.Allocate(ctx, "p", ipam.Handle{ContainerID: "c1", IfName: "net1"})
	must(t, err)
	if other.IP == first.IP {
		t.Fatalf("second interface of the same container got the same address %s", other.IP)
	}
	must(t, a.Release(ctx, H("c1")))
	must(t, a.Release(ctx, H("c1"))) // DEL twice
	must(t, a.Release(ctx, H("never-allocated")))
	if _, found, err := a.Lookup(ctx, H("c1")); err != nil || found {
		t.Fatalf("after release: found=%v err=%v", found, err)
	}
}

func testReleaseComparesHandle(t *testing.T, a ipam.Allocator) {
	ctx := t.Context()
	must(t, a.CreatePool(ctx, Pool("p", "10.0.0.0/24")))
	al, err := a.Allocate(ctx, "p", H("owner"))
	must(t, err)
	must(t, a.Release(ctx, ipam.Handle{ContainerID: "owner",
		IfName: "eth1"})) // other attachment: nothing to do
	must(t, a.Release(ctx, H("intruder")))
	_, err = a.ReleaseIP(ctx, "p", al.IP.Addr(), H("intruder"))
	wantErr(t, err, ipam.ErrOwnerMismatch)
	if got, found, err := a.Lookup(ctx, H("owner")); err != nil || !found || got.IP != al.IP {
		t.Fatalf("owner lost its address: %+v %v %v", got, found, err)
	}
	free := netip.MustParseAddr("10.0.0.200")
	if free == al.IP.Addr() { // the owner's address is picked at random
		free = free.Next()
	}
	_, err = a.ReleaseIP(ctx, "p", free, H("owner"))
	wantErr(t, err, ipam.ErrNotFound)
	rel, err := a.ReleaseIP(ctx, "p", al.IP.Addr(), H("owner"))
	must(t, err)
	if rel.Handle.ContainerID != "owner" {
		t.Fatalf("ReleaseIP returned %+v", rel)
	}
	if _, found, _ := a.Lookup(ctx, H("owner")); found {
		t.Fatal("ReleaseIP left the handle index behind")
	}
}

func testInvalidHandles(t *testing.T, a ipam.Allocator) {
	ctx := t.Context()
	must(t, a.CreatePool(ctx, Pool("p", "10.0.0.0/24")))
	for _, h := range []ipam.Handle{{IfName: "eth0"}, {ContainerID: "c"},
		{ContainerID: "a/b", IfName: "eth0"},
		{ContainerID: "c", IfName: "eth0", Fixed: true}} {
		_, err := a.Allocate(ctx, "p", h)
		wantErr(t, err, ipam.ErrInvalidHandle)
	}
}

func testFixedIP(t *testing.T, a ipam.Allocator) {
	ctx := t.Context()
	must(t, a.CreatePool(ctx, Pool("p", "10.0.0.0/29"))) // 5 usable addresses
	pod := func(id, node string) ipam.Handle {
		return ipam.Handle{ContainerID: id, IfName: "eth0", PodNamespace: "db", PodName: "pg-0",
			Node: node, Fixed: true}
	}
	first, err := a.Allocate(ctx, "p", pod("c1", "node-a"))
	must(t, err)
	_, err = a.Allocate(ctx, "p", pod("c2", "node-b"))
	wantErr(t, err, ipam.ErrTryAgain) // the old container still holds it
	must(t, a.Release(ctx, pod("c1", "node-a")))
	// Held: other pods cannot take it, even when the pool fills up.
	others := fill(t, a, "p", "other", 8)
	if _, taken := others[first.IP.Addr()]; taken || len(others) != 4 {
		t.Fatalf("held fixed IP %s handed out (%d others: %v)", first.IP, len(others), others)
	}
	st, err := a.Stats(ctx, "p")
	must(t, err)
	if st.Size != 5 || st.Used != 4 || st.Held != 1 || st.Free != 0 {
		t.Fatalf("Stats = %+v", st)
	}
	again, err := a.Allocate(ctx, "p", pod("c2", "node-b"))
	must(t, err)
	if again.IP != first.IP || !again.Fixed {
		t.Fatalf("restarted StatefulSet pod got %s, want %s", again.IP, first.IP)
	}
	pins, err := a.ListPins(ctx, "p")
	must(t, err)
	if len(pins) != 1 || pins[0].IP != first.IP.Addr() || pins[0].Name != "pg-0" {
		t.Fatalf("ListPins = %+v", pins)
	}
	must(t, a.Unpin(ctx, "p", "db", "pg-0"))
	must(t, a.Release(ctx, pod("c2", "node-b")))
	if st, _ := a.Stats(ctx, "p"); st.Held != 0 || st.Free != 1 {
		t.Fatalf("after unpin and release: %+v", st)
	}
	wantErr(t, a.Unpin(ctx, "p", "db", "pg-0"), ipam.ErrNotFound)
}

func testGC(t *testing.T, a ipam.Allocator) {
	ctx := t.Context()
	must(t, a.CreatePool(ctx, Pool("p", "10.0.0.0/24")))
	on := func(id, node, network string) ipam.Handle {
		return ipam.Handle{ContainerID: id, IfName: "eth0", Node: node, Network: network}
	}
	for _, h := range []ipam.Handle{on("keep", "a", "net"), on("leak", "a", "net"),
		on("other-net", "a", "net2"), on("b1", "b", "net")} {
		_, err := a.Allocate(ctx, "p", h)
		must(t, err)
	}
	_, err := a.GC(ctx, ipam.GCRequest{Network: "net"})
	if err == nil {
		t.Fatal("GC without a node name must be refused")
	}
	rel, err := a.GC(ctx, ipam.GCRequest{Network: "net", Node: "a", Valid: []ipam.Handle{H("keep")}})
	must(t, err)
	if len(rel) != 1 || rel[0].Handle.ContainerID != "leak" {
		t.Fatalf("GC released %+v, want only \"leak\"", rel)
	}
	for id, want := range map[string]bool{"keep": true, "leak": false, "other-net": true, "b1": true} {
		if _, found, _ := a.Lookup(ctx, H(id)); found != want {
			t.Errorf("after GC %s found=%v, want %v", id, found, want)
		}
	}
}

func testStatus(t *testing.T, a ipam.Allocator) {
	ctx := t.Context()
	must(t, a.Status(ctx, ""))
	wantErr(t, a.Status(ctx, "missing"), ipam.ErrPoolNotFound)
	must(t, a.CreatePool(ctx, Pool("p", "10.0.0.0/30"))) // 1 usable address (.2), gateway .1
	must(t, a.Status(ctx, "p"))
	_, err := a.Allocate(ctx, "p", H("only"))
	must(t, err)
	wantErr(t, a.Status(ctx, "p"), ipam.ErrExhausted)
	_, err = a.Allocate(ctx, "p", H("one-too-many"))
	wantErr(t, err, ipam.ErrExhausted)
	all, err := a.ListAllocations(ctx, "")
	must(t, err)
	if len(all) != 1 || all[0].IP.String() != "10.0.0.2/30" {
		t.Fatalf("ListAllocations = %+v", all)
	}
}

func testConcurrent(t *testing.T, a ipam.Allocator) {
	ctx := context.WithoutCancel(t.Context())
	must(t, a.CreatePool(ctx, Pool("p", "10.0.0.0/26"))) // 61 usable
	var mu sync.Mutex
	seen := map[netip.Addr]string{}
	var wg sync.WaitGroup
	errs := make(chan error, 61)
	for i := range 61 {
		wg.Go(func() {
			id := fmt.Sprintf("c%d", i)
			al, err := a.Allocate(ctx, "p", H(id))
			if err != nil {
				errs <- err
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if prev, dup := seen[al.IP.Addr()]; dup {
				errs <- fmt.Errorf("%s given to %s and %s", al.IP, prev, id)
			}
			seen[al.IP.Addr()] = id
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if len(seen) != 61 {
		t.Fatalf("%d distinct addresses, want 61", len(seen))
	}
}

func testReleaseHeld(t *testing.T, a ipam.Allocator) {
	ctx := t.Context()
	must(t, a.CreatePool(ctx, Pool("p", "10.0.0.0/24")))
	h := ipam.Handle{ContainerID: "c1", IfName: "eth0", PodNamespace: "db", PodName: "pg-0", Fixed: true}
	first, err := a.Allocate(ctx, "p", h)
	must(t, err)
	must(t, a.Release(ctx, h))
	all, err := a.ListAllocations(ctx, "p")
	must(t, err)
	if len(all) != 1 || !all[0].Held() || all[0].Handle.PodName != "pg-0" {
		t.Fatalf("after release of a fixed IP: %+v", all)
	}
	_, err = a.ReleaseIP(ctx, "p", first.IP.Addr(), H("c1"))
	wantErr(t, err, ipam.ErrOwnerMismatch) // held: owned by no container
	_, err = a.ReleaseIP(ctx, "p", first.IP.Addr(), ipam.Handle{})
	must(t, err)
	if pins, err := a.ListPins(ctx, "p"); err != nil || len(pins) != 0 {
		t.Fatalf("pins after releasing the held address: %+v %v", pins, err)
	}
	if st, err := a.Stats(ctx, "p"); err != nil || st.Held != 0 || st.Used != 0 {
		t.Fatalf("stats after releasing the held address: %+v %v", st, err)
	}
	h.ContainerID = "c2"
	if _, err := a.Allocate(ctx, "p", h); err != nil {
		t.Fatalf("the pod must get a (new) address after its pin was dropped: %v", err)
	}
}

func testIPv6(t *testing.T, a ipam.Allocator) {
	ctx := t.Context()
	must(t, a.CreatePool(ctx, ipam.Pool{Name: "v6", VLAN: 300,
		Subnet: netip.MustParsePrefix("fd00:300::/124")}))
	got := fill(t, a, "v6", "c", 16)
	if len(got) != 14 { // 16 - subnet-router anycast (::0) - gateway (::1); IPv6 has no broadcast
		t.Fatalf("got %d IPv6 addresses, want 14", len(got))
	}
	al, found, err := a.Lookup(ctx, H("c0"))
	must(t, err)
	if !found || !al.IP.Addr().Is6() || al.IP.Bits() != 124 ||
		al.Gateway != netip.MustParseAddr("fd00:300::1") || al.Routes[0].Dst.String() != "::/0" {
		t.Fatalf("IPv6 allocation %+v", al)
	}
}
