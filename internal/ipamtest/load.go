package ipamtest

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/berth-dev/berth/pkg/ipam"
)

// LoadResult is the outcome of RunNodes.
type LoadResult struct {
	// Owner maps each allocated address to the handle key that got it.
	Owner map[netip.Addr]string
	// ByHandle maps each handle key to the address Allocate returned (last success).
	ByHandle map[string]netip.Addr
	// Duplicates lists addresses returned to two different handles.
	Duplicates []string
	// Failures are errors that were not retried (or all errors when retryTryAgain is false).
	Failures []error
	// TryAgains counts ErrTryAgain answers (retried when retryTryAgain is set, like kubelet does).
	TryAgains int
	Elapsed   time.Duration
}

// RunNodes simulates len(nodes) nodes each running perNode concurrent ADDs
// into pool (handle "n<node>-c<i>/eth0"). With retryTryAgain an ErrTryAgain
// answer is retried after a short pause, as the kubelet retries a CNI ADD.
func RunNodes(ctx context.Context, nodes []ipam.Allocator, perNode int, pool string,
	retryTryAgain bool) LoadResult {
	return RunNodesLimited(ctx, nodes, perNode, perNode, pool, retryTryAgain)
}

// RunNodesLimited is RunNodes with at most concurrency ADDs in flight per node.
func RunNodesLimited(ctx context.Context, nodes []ipam.Allocator, perNode, concurrency int,
	pool string, retryTryAgain bool) LoadResult {
	res := LoadResult{Owner: map[netip.Addr]string{}, ByHandle: map[string]netip.Addr{}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := time.Now()
	for n, a := range nodes {
		slots := make(chan struct{}, concurrency)
		for i := range perNode {
			h := ipam.Handle{ContainerID: fmt.Sprintf("n%d-c%d", n, i), IfName: "eth0",
				Node: fmt.Sprintf("node-%d", n)}
			wg.Go(func() {
				slots <- struct{}{}
				defer func() { <-slots }()
				for {
					al, err := a.Allocate(ctx, pool, h)
					mu.Lock()
					if errors.Is(err, ipam.ErrTryAgain) {
						res.TryAgains++
						if retryTryAgain && ctx.Err() == nil {
							mu.Unlock()
							time.Sleep(50 * time.Millisecond)
							continue
						}
					}
					if err != nil {
						res.Failures = append(res.Failures, fmt.Errorf("%s: %w", h.Key(), err))
					} else {
						ip := al.IP.Addr()
						if prev, dup := res.Owner[ip]; dup && prev != h.Key() {
							res.Duplicates = append(res.Duplicates, fmt.Sprintf("%s given to %s and %s", ip, prev, h.Key()))
						}
						res.Owner[ip] = h.Key()
						res.ByHandle[h.Key()] = ip
					}
					mu.Unlock()
					return
				}
			})
		}
	}
	wg.Wait()
	res.Elapsed = time.Since(start)
	return res
}

// Pool1000 is a pool of exactly 1,000 allocatable addresses: a /22 minus
// network, broadcast, gateway and a reserved range of 21.
func Pool1000(name string) ipam.Pool {
	return ipam.Pool{Name: name, VLAN: 100, Subnet: netip.MustParsePrefix("10.20.0.0/22"),
		Reserved: []ipam.IPRange{{Start: netip.MustParseAddr("10.20.3.234"),
			End: netip.MustParseAddr("10.20.3.254")}}}
}
