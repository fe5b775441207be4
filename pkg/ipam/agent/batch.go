package agent

import (
	"context"
	"sync"

	"github.com/berth-dev/berth/pkg/ipam"
)

// allocBatcher gathers the node's concurrent ADDs of a pool into one etcd transaction
// (ipam.AllocateMany): while one batch is being written, the ADDs that arrive wait and go
// together in the next. One ADD alone costs what it did before (a batch of one); a node starting
// fifty pods at once pays a handful of transactions instead of fifty, which is what lets ten nodes
// fill the last free addresses of a pool at the rate of one.
type allocBatcher struct {
	alloc   *ipam.EtcdAllocator
	timeout func() (context.Context, context.CancelFunc) // bounds one batch's etcd work
	sizes   func(n int)                                  // observes each batch's size

	mu      sync.Mutex
	waiting map[string][]*allocCall // by pool
	running map[string]bool         // pools with a batch in flight
}

type allocCall struct {
	h    ipam.Handle
	res  ipam.AllocResult
	done chan struct{}
}

func newAllocBatcher(alloc *ipam.EtcdAllocator, timeout func() (context.Context, context.CancelFunc),
	sizes func(int)) *allocBatcher {
	return &allocBatcher{alloc: alloc, timeout: timeout, sizes: sizes,
		waiting: map[string][]*allocCall{}, running: map[string]bool{}}
}

// allocate gives h an address of pool through the next batch. A caller that gives up (ctx) leaves
// its handle in the batch: a later ADD of the same handle finds the address, a DEL releases it.
func (b *allocBatcher) allocate(ctx context.Context, pool string, h ipam.Handle) (ipam.Allocation, error) {
	c := &allocCall{h: h, done: make(chan struct{})}
	b.mu.Lock()
	b.waiting[pool] = append(b.waiting[pool], c)
	if !b.running[pool] {
		b.running[pool] = true
		go b.run(pool)
	}
	b.mu.Unlock()
	select {
	case <-c.done:
		return c.res.Alloc, c.res.Err
	case <-ctx.Done():
		return ipam.Allocation{}, ctx.Err()
	}
}

// run writes the pool's batches until nobody waits.
func (b *allocBatcher) run(pool string) {
	for {
		b.mu.Lock()
		calls := b.waiting[pool]
		if len(calls) == 0 {
			delete(b.waiting, pool)
			delete(b.running, pool)
			b.mu.Unlock()
			return
		}
		if len(calls) > ipam.MaxBatch {
			calls = calls[:ipam.MaxBatch]
		}
		b.waiting[pool] = b.waiting[pool][len(calls):]
		b.mu.Unlock()

		hs := make([]ipam.Handle, len(calls))
		for i, c := range calls {
			hs[i] = c.h
		}
		b.sizes(len(hs))
		ctx, cancel := b.timeout()
		res := b.alloc.AllocateMany(ctx, pool, hs)
		cancel()
		for i, c := range calls {
			c.res = res[i]
			close(c.done)
		}
	}
}
