//go:build integration

package ipam_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/berth-dev/berth/internal/ipamtest"
	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/pkg/ipam"
)

const nodes, perNode = 10, 100

// nodeAllocators returns one allocator per simulated node, each with its own etcd connection.
func nodeAllocators(t *testing.T, members []*testenv.Etcd, prefix string) []ipam.Allocator {
	t.Helper()
	var out []ipam.Allocator
	for range nodes {
		cli, err := clientv3.New(clientv3.Config{Endpoints: testenv.Endpoints(members...),
			DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cli.Close() })
		a, err := ipam.NewEtcd(cli, prefix, ipam.WithAttemptTimeout(2*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, a)
	}
	return out
}

// checkStore verifies what etcd holds: exactly the addresses handed out, each owned by its handle.
func checkStore(t *testing.T, a ipam.Allocator, res ipamtest.LoadResult) {
	t.Helper()
	all, err := a.ListAllocations(context.Background(), "p")
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != len(res.Owner) {
		t.Errorf("etcd holds %d allocations, callers got %d", len(all), len(res.Owner))
	}
	for _, al := range all {
		if got := res.Owner[al.IP.Addr()]; got != al.Handle.Key() {
			t.Errorf("etcd says %s belongs to %s, the caller that got it was %q", al.IP, al.Handle.Key(), got)
		}
	}
}

func TestConcurrentNodesFillPoolExactly(t *testing.T) {
	e := testenv.StartEtcd(t)
	allocs := nodeAllocators(t, []*testenv.Etcd{e}, "/conc")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := allocs[0].CreatePool(ctx, ipamtest.Pool1000("p")); err != nil {
		t.Fatal(err)
	}
	res := ipamtest.RunNodes(ctx, allocs, perNode, "p", false)
	t.Logf("%d allocations in %v (%d try-again)", len(res.Owner), res.Elapsed, res.TryAgains)
	for _, f := range res.Failures {
		t.Error(f)
	}
	for _, d := range res.Duplicates {
		t.Error("DUPLICATE:", d)
	}
	if len(res.Owner) != 1000 {
		t.Fatalf("%d distinct addresses, want 1000", len(res.Owner))
	}
	checkStore(t, allocs[0], res)
	_, err := allocs[3].Allocate(ctx, "p", ipamtest.H("one-too-many"))
	if !errors.Is(err, ipam.ErrExhausted) {
		t.Fatalf("the 1,001st allocation: want ErrExhausted, got %v", err)
	}
}

func TestConcurrentNodesWithEtcdMemberKilled(t *testing.T) {
	members := testenv.StartEtcdCluster(t, 3)
	allocs := nodeAllocators(t, members, "/conc-kill")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if err := allocs[0].CreatePool(ctx, ipamtest.Pool1000("p")); err != nil {
		t.Fatal(err)
	}
	// Kill the leader once a quarter of the pool is allocated: in-flight
	// transactions then fail ambiguously, which is where double allocation hides.
	leader := leaderOf(t, members)
	watcher := testenv.NewEtcdClient(t, members...)
	var killedAt atomic.Int64
	go func() {
		for ctx.Err() == nil {
			r, err := watcher.Get(ctx, "/conc-kill/ips/p/", clientv3.WithPrefix(), clientv3.WithCountOnly())
			if err == nil && r.Count >= 250 {
				t.Logf("killing etcd leader %s at %d allocations", leader.Name, r.Count)
				leader.Kill()
				killedAt.Store(r.Count)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	res := ipamtest.RunNodes(ctx, allocs, perNode, "p", true)
	t.Logf("%d allocations in %v, %d try-again answers retried", len(res.Owner), res.Elapsed, res.TryAgains)
	if n := killedAt.Load(); n == 0 || n >= 1000 {
		t.Errorf("the leader was not killed mid-run (at %d allocations)", n)
	}
	for _, d := range res.Duplicates {
		t.Error("DUPLICATE:", d)
	}
	for _, f := range res.Failures {
		t.Error(f)
	}
	if len(res.Owner) != 1000 {
		t.Fatalf("%d distinct addresses, want 1000", len(res.Owner))
	}
	checkStore(t, allocs[0], res)
}

func leaderOf(t *testing.T, members []*testenv.Etcd) *testenv.Etcd {
	t.Helper()
	cli := testenv.NewEtcdClient(t, members...)
	for _, m := range members {
		st, err := cli.Status(context.Background(), m.ClientURL)
		if err == nil && st.Leader == st.Header.MemberId {
			return m
		}
	}
	t.Fatal("no etcd leader found")
	return nil
}
