//go:build integration

package ipam_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/berth-dev/berth/internal/ipamtest"
	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/pkg/ipam"
)

type benchScenario struct {
	name        string
	pool        ipam.Pool
	concurrency int // ADDs in flight per node
	total       int // allocations per round, over 10 nodes
}

// roundCap bounds one round: the naive strategy may not finish a round in
// reasonable time, and then its rate is what it achieved within the cap.
const roundCap = 30 * time.Second

type benchRow struct {
	rounds                         int
	allocs, failures, dups, tryAgs int
	elapsed                        time.Duration
	txns, conflicts, scans         uint64
}

// BenchmarkIPAM10Nodes compares the spread strategy with a naive scan from
// the start of the pool, in interleaved rounds of the same run, from 10
// simulated nodes (each with its own etcd connection). Run it with
// hack/bench-ipam.sh; IPAM_BENCH_ROUNDS sets the rounds (default 3).
func BenchmarkIPAM10Nodes(b *testing.B) {
	rounds := 3
	if v, err := strconv.Atoi(os.Getenv("IPAM_BENCH_ROUNDS")); err == nil && v > 0 {
		rounds = v
	}
	e := testenv.StartEtcd(b)
	scenarios := []benchScenario{
		{"10 nodes x 10 in flight, 1,000 ADDs into 4,093 IPs",
			ipam.Pool{Name: "big", Subnet: netip.MustParsePrefix("10.30.0.0/20")}, 10, 1000},
		{"10 nodes x 100 ADDs, fill exactly 1,000 IPs", ipamtest.Pool1000("fill"), 100, 1000},
	}
	strategies := []struct {
		name string
		s    ipam.Strategy
	}{
		{"berth (hashed start, random after conflict)", ipam.StrategySpread},
		{"naive (first free from the start)", ipam.StrategyFirstFree},
	}
	results := map[string]*benchRow{}
	for b.Loop() {
		for r := range rounds {
			for _, sc := range scenarios {
				for i := range strategies {
					st := strategies[(i+r)%len(strategies)] // alternate who goes first
					row := results[sc.name+"|"+st.name]
					if row == nil {
						row = &benchRow{}
						results[sc.name+"|"+st.name] = row
					}
					benchRound(b, e, sc, st.s, fmt.Sprintf("/bench/%d/%s/%d", r, sc.pool.Name, st.s), row)
				}
			}
		}
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\nscenario\tstrategy\tdone\tallocs/s\tvs naive\tduplicates\ttry-again (retried)"+
		"\ttxns/alloc\tscans/alloc")
	for _, sc := range scenarios {
		naive := results[sc.name+"|"+strategies[1].name]
		for _, st := range strategies {
			row := results[sc.name+"|"+st.name]
			rate := float64(row.allocs) / row.elapsed.Seconds()
			naiveRate := float64(naive.allocs) / naive.elapsed.Seconds()
			fmt.Fprintf(tw, "%s\t%s\t%d/%d\t%.0f\t%.2fx\t%d\t%d\t%.2f\t%.2f\n", sc.name, st.name,
				row.allocs, sc.total*row.rounds, rate, rate/naiveRate, row.dups, row.tryAgs,
				float64(row.txns)/float64(row.allocs), float64(row.scans)/float64(row.allocs))
			// One unit per row and scenario, for benchstat: a unit reported twice keeps only the
			// last value (it was the naive rate of the last scenario, read as berth's).
			who := strings.Fields(st.name)[0]
			b.ReportMetric(rate, sc.pool.Name+"-"+who+"-allocs/s")
			if st.s == ipam.StrategySpread {
				b.ReportMetric(rate/naiveRate, sc.pool.Name+"-berth-vs-naive-x")
			}
		}
	}
	_ = tw.Flush()
	fmt.Printf("(%d interleaved rounds per row, one etcd %s on loopback, GOMAXPROCS=%d)\n", rounds,
		e.ClientURL, runtime.GOMAXPROCS(0))
}

func benchRound(b *testing.B, e *testenv.Etcd, sc benchScenario, s ipam.Strategy, prefix string, row *benchRow) {
	b.Helper()
	var nodes []ipam.Allocator
	var eas []*ipam.EtcdAllocator
	for range 10 {
		cli, err := clientv3.New(clientv3.Config{Endpoints: []string{e.ClientURL},
			DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			b.Fatal(err)
		}
		defer cli.Close()
		a, err := ipam.NewEtcd(cli, prefix, ipam.WithStrategy(s))
		if err != nil {
			b.Fatal(err)
		}
		nodes, eas = append(nodes, a), append(eas, a)
	}
	ctx, cancel := context.WithTimeout(context.Background(), roundCap)
	defer cancel()
	if err := eas[0].CreatePool(context.Background(), sc.pool); err != nil {
		b.Fatal(err)
	}
	res := ipamtest.RunNodesLimited(ctx, nodes, sc.total/10, sc.concurrency, sc.pool.Name, true)
	var c ipam.Counters
	for _, a := range eas {
		x := a.Counters()
		c.Txns, c.Scans, c.Conflicts = c.Txns+x.Txns, c.Scans+x.Scans, c.Conflicts+x.Conflicts
	}
	fmt.Fprintf(os.Stderr, "round %s strategy=%d: %d allocs in %v, %d try-again, txns=%d scans=%d conflicts=%d\n",
		prefix, s, len(res.Owner), res.Elapsed.Round(time.Millisecond), res.TryAgains, c.Txns, c.Scans, c.Conflicts)
	row.rounds++
	row.allocs += len(res.Owner)
	row.failures += len(res.Failures)
	row.dups += len(res.Duplicates)
	row.tryAgs += res.TryAgains
	row.elapsed += res.Elapsed
	row.txns += c.Txns
	row.conflicts += c.Conflicts
	row.scans += c.Scans
	// Wipe the round's keys so etcd's size stays flat between rounds.
	if _, err := testenv.NewEtcdClient(b, e).Delete(context.Background(), prefix+"/", clientv3.WithPrefix()); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkAllocateRelease is one ADD + DEL of the IPAM at a time, the way the
// CNI plugin runs it: "shared client" reuses one etcd connection, "client per
// call" dials etcd for every ADD and DEL like a plugin process does.
func BenchmarkAllocateRelease(b *testing.B) {
	e := testenv.StartEtcd(b)
	newClient := func() *clientv3.Client {
		cli, err := clientv3.New(clientv3.Config{Endpoints: []string{e.ClientURL},
			DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			b.Fatal(err)
		}
		return cli
	}
	shared := newClient()
	defer shared.Close()
	admin, err := ipam.NewEtcd(shared, "/bench-serial")
	if err != nil {
		b.Fatal(err)
	}
	if err := admin.CreatePool(context.Background(),
		ipam.Pool{Name: "p", Subnet: netip.MustParsePrefix("10.40.0.0/20")}); err != nil {
		b.Fatal(err)
	}
	run := func(b *testing.B, perCall bool) {
		ctx := context.Background()
		for i := 0; b.Loop(); i++ {
			h := ipam.Handle{ContainerID: fmt.Sprintf("c%d-%v", i, perCall), IfName: "eth0"}
			for _, del := range []bool{false, true} {
				a, cli := admin, shared
				if perCall {
					cli = newClient()
					a, _ = ipam.NewEtcd(cli, "/bench-serial")
				}
				var err error
				if del {
					err = a.Release(ctx, h)
				} else {
					_, err = a.Allocate(ctx, "p", h)
				}
				if err != nil {
					b.Fatal(err)
				}
				if perCall {
					cli.Close()
				}
			}
		}
	}
	b.Run("shared client", func(b *testing.B) { run(b, false) })
	b.Run("client per call", func(b *testing.B) { run(b, true) })
}
