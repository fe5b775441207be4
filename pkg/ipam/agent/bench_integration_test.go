//go:build integration

package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/berth-dev/berth/internal/ipamtest"
	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/pkg/ipam"
	"github.com/berth-dev/berth/pkg/ipam/agentapi"
)

// BenchmarkAgentFill1000 fills a pool of exactly 1,000 addresses from 10
// nodes, 100 ADDs each all in flight, through each node's agent (one etcd
// session, buffers returned under pressure) and straight to etcd with one
// allocator per node (what the plugin did before the agent), in interleaved
// rounds of the same run. Run it with hack/bench-ipam.sh.
func BenchmarkAgentFill1000(b *testing.B) {
	rounds := 3
	if v, err := strconv.Atoi(os.Getenv("IPAM_BENCH_ROUNDS")); err == nil && v > 0 {
		rounds = v
	}
	e := testenv.StartEtcd(b)
	rates := map[string][]float64{}
	for b.Loop() {
		for r := range rounds {
			for i, path := range []string{"agent", "direct"} {
				if r%2 == 1 {
					path = []string{"direct", "agent"}[i]
				}
				prefix := fmt.Sprintf("/bench-agent/%d/%s", r, path)
				rate := fillRound(b, e, path, prefix)
				rates[path] = append(rates[path], rate)
				fmt.Fprintf(os.Stderr, "round %d %s: %.0f allocations/s\n", r, path, rate)
			}
		}
	}
	med := func(v []float64) float64 { s := append([]float64(nil), v...); sort.Float64s(s); return s[len(s)/2] }
	fmt.Printf("\n| 10 nodes x 100 ADDs into exactly 1,000 free addresses | allocations/s, median of %d "+
		"| min-max | vs direct |\n|---|---|---|---|\n", rounds)
	for _, p := range []string{"agent", "direct"} {
		s := append([]float64(nil), rates[p]...)
		sort.Float64s(s)
		label := map[string]string{
			"agent":  "through each node's agent (buffer 4)",
			"direct": "straight to etcd, one allocator per node",
		}[p]
		fmt.Printf("| %s | %.0f | %.0f-%.0f | %.2fx |\n", label, med(s), s[0], s[len(s)-1], med(s)/med(rates["direct"]))
		b.ReportMetric(med(s), p+"-allocs/s")
	}
}

func fillRound(b *testing.B, e *testenv.Etcd, path, prefix string) float64 {
	b.Helper()
	ctx := context.Background()
	pool := ipamtest.Pool1000("fill")
	var allocs []*ipam.EtcdAllocator
	for range 10 {
		cli, err := clientv3.New(clientv3.Config{Endpoints: []string{e.ClientURL},
			DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			b.Fatal(err)
		}
		defer cli.Close()
		a, err := ipam.NewEtcd(cli, prefix)
		if err != nil {
			b.Fatal(err)
		}
		allocs = append(allocs, a)
	}
	if err := allocs[0].CreatePool(ctx, pool); err != nil {
		b.Fatal(err)
	}
	if path == "direct" {
		nodes := make([]ipam.Allocator, len(allocs))
		for i, a := range allocs {
			nodes[i] = a
		}
		rctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		res := ipamtest.RunNodesLimited(rctx, nodes, 100, 100, pool.Name, true)
		if len(res.Owner) != 1000 {
			b.Fatalf("direct: %d of 1000 allocated", len(res.Owner))
		}
		return float64(len(res.Owner)) / res.Elapsed.Seconds()
	}
	conf, _ := json.Marshal(map[string]any{"pool": pool.Name, "prefix": prefix})
	var socks []string
	for i, a := range allocs {
		dir, err := os.MkdirTemp("", "bench-agent")
		if err != nil {
			b.Fatal(err)
		}
		defer os.RemoveAll(dir)
		ag, err := New(a, Options{Node: fmt.Sprintf("n%d", i), Socket: filepath.Join(dir, "s"), StateDir: dir})
		if err != nil {
			b.Fatal(err)
		}
		actx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { _ = ag.Run(actx); close(done) }()
		defer func() { cancel(); <-done }()
		socks = append(socks, filepath.Join(dir, "s"))
	}
	for _, s := range socks {
		for _, err := os.Stat(s); err != nil; _, err = os.Stat(s) {
			time.Sleep(10 * time.Millisecond) // the agent's listener: no other signal
		}
	}
	var wg sync.WaitGroup
	start := time.Now()
	var failed int
	var mu sync.Mutex
	for n, s := range socks {
		for i := range 100 {
			wg.Go(func() {
				req := &agentapi.Request{Verb: agentapi.VerbAdd, ContainerID: fmt.Sprintf("n%d-c%d", n, i),
					IfName: "eth0", Network: "net", IPAM: conf}
				for time.Since(start) < time.Minute {
					_, err := call(s, req)
					if err == nil {
						return
					}
					if c := cniCode(err); c != types.ErrTryAgainLater && c != ipam.CodeExhausted {
						break
					}
				}
				mu.Lock()
				failed++
				mu.Unlock()
			})
		}
	}
	wg.Wait()
	el := time.Since(start)
	if failed > 0 {
		b.Fatalf("agent: %d of 1000 ADDs failed", failed)
	}
	return 1000 / el.Seconds()
}
