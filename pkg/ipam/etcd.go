package ipam

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/berth-dev/berth/internal/jsonutil"
)

// DefaultPrefix is the etcd key prefix of the IPAM's data.
const DefaultPrefix = "/berth/ipam"

// strategy chooses where an allocator looks for a free address first. Production always
// spreads; the benchmark compares it with the naive first-free scan (export_test.go).
type strategy int

const (
	// strategySpread starts at a hash of the handle and, after a lost race,
	// at a random free address: nodes rarely pick the same candidate.
	strategySpread strategy = iota
	// strategyFirstFree always takes the lowest free address, like a naive
	// scan from the start of the pool: concurrent allocators all fight for
	// the same address.
	strategyFirstFree
)

// Option configures an EtcdAllocator.
type Option func(*EtcdAllocator) error

// WithMaxAttempts bounds the transactions one Allocate may try before ErrTryAgain (default 32).
func WithMaxAttempts(n int) Option {
	return func(a *EtcdAllocator) error {
		if n < 1 {
			return fmt.Errorf("max attempts must be at least 1, got %d", n)
		}
		a.maxAttempts = n
		return nil
	}
}

// WithAttemptTimeout bounds one allocation attempt (default 5s), so a request
// stuck on a dead etcd member is retried instead of eating the whole CNI timeout.
func WithAttemptTimeout(d time.Duration) Option {
	return func(a *EtcdAllocator) error {
		if d <= 0 {
			return fmt.Errorf("attempt timeout must be positive, got %v", d)
		}
		a.attemptTimeout = d
		return nil
	}
}

// withStrategy sets the candidate strategy (default strategySpread).
func withStrategy(s strategy) Option {
	return func(a *EtcdAllocator) error { a.strategy = s; return nil }
}

// WithClock sets the clock used for AllocatedAt (tests).
func WithClock(now func() time.Time) Option {
	return func(a *EtcdAllocator) error { a.now = now; return nil }
}

// Counters are cumulative figures of one allocator, for benchmarks and metrics.
type Counters struct {
	Allocations uint64 // successful new allocations
	Txns        uint64 // write transactions tried by Allocate
	Conflicts   uint64 // transactions lost to another allocator
	Scans       uint64 // reads of a pool's used addresses
}

// EtcdAllocator is the Allocator on etcd. It is safe for concurrent use.
type EtcdAllocator struct {
	cli            *clientv3.Client
	prefix         string
	maxAttempts    int
	attemptTimeout time.Duration
	strategy       strategy
	now            func() time.Time

	allocs, txns, conflicts, scans atomic.Uint64

	mu      sync.Mutex
	layouts map[string]cachedLayout // pools are immutable: cache them, keyed by name
}

type cachedLayout struct {
	l   *layout
	rev int64 // mod revision of the pool key; the allocation txn compares it
}

// cachedLayout returns the pool's layout and key revision, reading it once.
func (a *EtcdAllocator) cachedLayout(ctx context.Context, name string) (*layout, int64, error) {
	a.mu.Lock()
	c, ok := a.layouts[name]
	a.mu.Unlock()
	if ok {
		return c.l, c.rev, nil
	}
	resp, err := a.cli.Get(ctx, a.poolKey(name))
	if err != nil {
		return nil, 0, storeErr("get pool "+name, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, 0, fmt.Errorf("%w: %q (create it with `cni-vlan ipam create-pool` or an "+
			"inline poolSpec)", ErrPoolNotFound, name)
	}
	l, err := decodePool(resp.Kvs[0].Value)
	if err != nil {
		return nil, 0, err
	}
	a.mu.Lock()
	a.layouts[name] = cachedLayout{l, resp.Kvs[0].ModRevision}
	a.mu.Unlock()
	return l, resp.Kvs[0].ModRevision, nil
}

func (a *EtcdAllocator) forgetLayout(name string) {
	a.mu.Lock()
	delete(a.layouts, name)
	a.mu.Unlock()
}

var _ Allocator = &EtcdAllocator{}

// NewEtcd returns an allocator storing its data under prefix ("" = DefaultPrefix) through client.
func NewEtcd(client *clientv3.Client, prefix string, opts ...Option) (*EtcdAllocator, error) {
	if client == nil {
		return nil, errors.New("ipam: etcd client is nil")
	}
	if prefix == "" {
		prefix = DefaultPrefix
	}
	a := &EtcdAllocator{cli: client, prefix: strings.TrimSuffix(prefix, "/"), maxAttempts: 32,
		attemptTimeout: 5 * time.Second, now: time.Now, layouts: map[string]cachedLayout{}}
	for _, o := range opts {
		if err := o(a); err != nil {
			return nil, fmt.Errorf("ipam: %w", err)
		}
	}
	return a, nil
}

// Counters returns the allocator's cumulative counters.
func (a *EtcdAllocator) Counters() Counters {
	return Counters{a.allocs.Load(), a.txns.Load(), a.conflicts.Load(), a.scans.Load()}
}

// record is the value of an IP key.
type record struct {
	Handle      Handle    `json:"handle"`
	Fixed       bool      `json:"fixed,omitempty"`
	AllocatedAt time.Time `json:"allocatedAt"`
}

// handleRef is the value of a handle key.
type handleRef struct {
	Pool string     `json:"pool"`
	IP   netip.Addr `json:"ip"`
}

func (a *EtcdAllocator) poolKey(name string) string { return a.prefix + "/pools/" + name }
func (a *EtcdAllocator) ipsPrefix(pool string) string {
	if pool == "" {
		return a.prefix + "/ips/"
	}
	return a.prefix + "/ips/" + pool + "/"
}
func (a *EtcdAllocator) ipKey(pool string, ip netip.Addr) string {
	return a.ipsPrefix(pool) + ip.String()
}
func (a *EtcdAllocator) handleKey(h Handle) string { return a.prefix + "/handles/" + h.Key() }
func (a *EtcdAllocator) pinPrefix(pool string) string {
	if pool == "" {
		return a.prefix + "/fixed/"
	}
	return a.prefix + "/fixed/" + pool + "/"
}
func (a *EtcdAllocator) pinKey(pool, ns, name string) string {
	return a.pinPrefix(pool) + ns + "/" + name
}

// storeErr wraps an etcd error so callers can test errors.Is(err, ErrUnavailable).
func storeErr(op string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) {
		return fmt.Errorf("ipam %s: %w", op, err)
	}
	return fmt.Errorf("ipam %s: %w: %w", op, ErrUnavailable, err)
}

// mustJSON encodes the plain structs stored in etcd.
func mustJSON(v any) string { return string(jsonutil.MustMarshal(v)) }

// CreatePool validates p and stores it; ErrPoolExists if the name is taken,
// ErrPoolOverlap if another pool on the same VLAN overlaps its subnet. The
// overlap check is race-free: the txn only commits if no pool key changed
// since the pools were read.
func (a *EtcdAllocator) CreatePool(ctx context.Context, p Pool) error {
	l, err := newLayout(&p)
	if err != nil {
		return err
	}
	k, pools := a.poolKey(p.Name), a.prefix+"/pools/"
	for attempt := 0; attempt < 8; attempt++ {
		resp, err := a.cli.Get(ctx, pools, clientv3.WithPrefix())
		if err != nil {
			return storeErr("create pool "+p.Name, err)
		}
		var have []Pool
		for _, kv := range resp.Kvs {
			if string(kv.Key) == k {
				return fmt.Errorf("%w: %q", ErrPoolExists, p.Name)
			}
			o, err := decodePool(kv.Value)
			if err != nil {
				return fmt.Errorf("pool key %s: %w", kv.Key, err)
			}
			have = append(have, o.pool)
		}
		if err := overlapping(l.pool, have); err != nil {
			return err
		}
		tr, err := a.cli.Txn(ctx).If(
			clientv3.Compare(clientv3.CreateRevision(k), "=", 0),
			clientv3.Compare(clientv3.ModRevision(pools), "<", resp.Header.Revision+1).WithPrefix(),
		).Then(clientv3.OpPut(k, mustJSON(l.pool))).Commit()
		if err != nil {
			return storeErr("create pool "+p.Name, err)
		}
		if tr.Succeeded {
			return nil
		}
		// Another pool was created meanwhile: check against it too.
	}
	return fmt.Errorf("%w: create pool %q: pools kept changing", ErrTryAgain, p.Name)
}

// EnsurePool checks that the stored pool of p's name is the same as p, and
// creates p only when no such pool exists: the common case is a read, not a
// write transaction.
func (a *EtcdAllocator) EnsurePool(ctx context.Context, p Pool) error {
	if _, err := newLayout(&p); err != nil {
		return err
	}
	have, err := a.GetPool(ctx, p.Name)
	if errors.Is(err, ErrPoolNotFound) {
		err = a.CreatePool(ctx, p)
		if !errors.Is(err, ErrPoolExists) {
			return err
		}
		have, err = a.GetPool(ctx, p.Name) // created by another node meanwhile
	}
	if err != nil {
		return err
	}
	if !reflect.DeepEqual(have, p) {
		return fmt.Errorf("%w: pool %q in etcd (%s, vlan %d) differs from the configured one (%s, vlan "+
			"%d): pools are immutable, create a new pool or fix the config",
			ErrInvalidPool, p.Name, have.Subnet, have.VLAN, p.Subnet, p.VLAN)
	}
	return nil
}

// GetPool returns the named pool.
func (a *EtcdAllocator) GetPool(ctx context.Context, name string) (Pool, error) {
	l, err := a.layout(ctx, name)
	if err != nil {
		return Pool{}, err
	}
	return l.pool, nil
}

func (a *EtcdAllocator) layout(ctx context.Context, name string) (*layout, error) {
	resp, err := a.cli.Get(ctx, a.poolKey(name))
	if err != nil {
		return nil, storeErr("get pool "+name, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, fmt.Errorf("%w: %q", ErrPoolNotFound, name)
	}
	return decodePool(resp.Kvs[0].Value)
}

func decodePool(v []byte) (*layout, error) {
	var p Pool
	if err := json.Unmarshal(v, &p); err != nil {
		return nil, fmt.Errorf("ipam: corrupt pool in etcd: %w", err)
	}
	return newLayout(&p)
}

// ListPools returns every pool sorted by name.
func (a *EtcdAllocator) ListPools(ctx context.Context) ([]Pool, error) {
	resp, err := a.cli.Get(ctx, a.prefix+"/pools/", clientv3.WithPrefix())
	if err != nil {
		return nil, storeErr("list pools", err)
	}
	var out []Pool
	for _, kv := range resp.Kvs {
		l, err := decodePool(kv.Value)
		if err != nil {
			return nil, fmt.Errorf("pool key %s: %w", kv.Key, err)
		}
		out = append(out, l.pool)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// DeletePool removes a pool with no allocations and no pins (ErrPoolInUse otherwise).
func (a *EtcdAllocator) DeletePool(ctx context.Context, name string) error {
	a.forgetLayout(name)
	if _, err := a.layout(ctx, name); err != nil {
		return err
	}
	// One transaction: the pool is deleted only if no IP key and no pin exists at that moment.
	ips, pins := a.ipsPrefix(name), a.pinPrefix(name)
	resp, err := a.cli.Txn(ctx).If(
		clientv3.Compare(clientv3.CreateRevision(ips), "=", 0).WithPrefix(),
		clientv3.Compare(clientv3.CreateRevision(pins), "=", 0).WithPrefix(),
	).Then(clientv3.OpDelete(a.poolKey(name))).Commit()
	if err != nil {
		return storeErr("delete pool "+name, err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("%w: %q: release its addresses and pins first (cni-vlan ipam list %s)",
			ErrPoolInUse, name, name)
	}
	return nil
}
