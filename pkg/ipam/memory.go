package ipam

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"sort"
	"sync"
	"time"
)

// MemoryAllocator is an in-process Allocator for unit tests of code that
// uses the IPAM (no etcd, one process only). It passes the same conformance
// suite (ipamtest) as EtcdAllocator.
type MemoryAllocator struct {
	mu      sync.Mutex
	now     func() time.Time
	pools   map[string]*layout
	ips     map[string]map[netip.Addr]record // pool -> ip -> record
	handles map[string]handleRef             // handle key -> ref
	pins    map[string]netip.Addr            // pool/ns/name -> ip
}

var _ Allocator = &MemoryAllocator{}

// NewMemory returns an empty in-memory allocator.
func NewMemory() *MemoryAllocator {
	return &MemoryAllocator{now: time.Now, pools: map[string]*layout{}, ips: map[string]map[netip.Addr]record{},
		handles: map[string]handleRef{}, pins: map[string]netip.Addr{}}
}

func pinID(pool, ns, name string) string { return pool + "/" + ns + "/" + name }

// CreatePool implements Allocator.
func (m *MemoryAllocator) CreatePool(_ context.Context, p Pool) error {
	l, err := newLayout(&p)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.pools[p.Name] != nil {
		return fmt.Errorf("%w: %q", ErrPoolExists, p.Name)
	}
	others := make([]Pool, 0, len(m.pools))
	for _, o := range m.pools {
		others = append(others, o.pool)
	}
	if err := overlapping(l.pool, others); err != nil {
		return err
	}
	m.pools[p.Name], m.ips[p.Name] = l, map[netip.Addr]record{}
	return nil
}

// EnsurePool implements Allocator.
func (m *MemoryAllocator) EnsurePool(ctx context.Context, p Pool) error {
	err := m.CreatePool(ctx, p)
	if !errors.Is(err, ErrPoolExists) {
		return err
	}
	_ = p.Validate() // validated by CreatePool above; fills defaults for the comparison
	have, err := m.GetPool(ctx, p.Name)
	if err != nil {
		return err
	}
	if !reflect.DeepEqual(have, p) {
		return fmt.Errorf("%w: pool %q differs from the configured one", ErrInvalidPool, p.Name)
	}
	return nil
}

// GetPool implements Allocator.
func (m *MemoryAllocator) GetPool(_ context.Context, name string) (Pool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	l := m.pools[name]
	if l == nil {
		return Pool{}, fmt.Errorf("%w: %q", ErrPoolNotFound, name)
	}
	return l.pool, nil
}

// ListPools implements Allocator.
func (m *MemoryAllocator) ListPools(context.Context) ([]Pool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Pool
	for _, l := range m.pools {
		out = append(out, l.pool)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// DeletePool implements Allocator.
func (m *MemoryAllocator) DeletePool(_ context.Context, name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.pools[name] == nil {
		return fmt.Errorf("%w: %q", ErrPoolNotFound, name)
	}
	for k := range m.pins {
		if len(k) > len(name) && k[:len(name)+1] == name+"/" {
			return fmt.Errorf("%w: %q", ErrPoolInUse, name)
		}
	}
	if len(m.ips[name]) > 0 {
		return fmt.Errorf("%w: %q", ErrPoolInUse, name)
	}
	delete(m.pools, name)
	delete(m.ips, name)
	return nil
}

// Allocate implements Allocator.
func (m *MemoryAllocator) Allocate(_ context.Context, pool string, h Handle) (Allocation, error) {
	if err := validateHandle(h); err != nil {
		return Allocation{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	l := m.pools[pool]
	if l == nil {
		return Allocation{}, fmt.Errorf("%w: %q", ErrPoolNotFound, pool)
	}
	if ref, ok := m.handles[h.Key()]; ok {
		if ref.Pool != pool {
			return Allocation{}, fmt.Errorf("ipam: %s already has %s from pool %q, not %q: DEL it first", h.Key(), ref.IP, ref.Pool, pool)
		}
		return m.pools[ref.Pool].allocation(ref.IP, m.ips[ref.Pool][ref.IP]), nil
	}
	rec := record{Handle: h, Fixed: h.Fixed, AllocatedAt: m.now().UTC()}
	if pin, ok := m.pins[pinID(pool, h.PodNamespace, h.PodName)]; h.Fixed && ok {
		if cur, used := m.ips[pool][pin]; used && cur.Handle.ContainerID != "" {
			return Allocation{}, fmt.Errorf("%w: fixed IP %s of pod %s/%s is still held by container %s", ErrTryAgain, pin, h.PodNamespace, h.PodName, cur.Handle.ContainerID)
		}
		return m.claim(l, pin, rec), nil
	}
	used := map[uint64]bool{}
	for ip := range m.ips[pool] {
		used[l.offset(ip)] = true
	}
	ip, ok := firstFree(l, used, rand.Uint64N(l.size))
	if !ok {
		return Allocation{}, fmt.Errorf("%w: all %d addresses of %q are in use", ErrExhausted, l.size, pool)
	}
	if h.Fixed {
		m.pins[pinID(pool, h.PodNamespace, h.PodName)] = ip
	}
	return m.claim(l, ip, rec), nil
}

func (m *MemoryAllocator) claim(l *layout, ip netip.Addr, rec record) Allocation {
	m.ips[l.pool.Name][ip] = rec
	m.handles[rec.Handle.Key()] = handleRef{Pool: l.pool.Name, IP: ip}
	return l.allocation(ip, rec)
}

// release frees ip (m.mu held); a pinned fixed address stays held for its pod.
func (m *MemoryAllocator) release(pool string, ip netip.Addr, keepPin bool) {
	rec := m.ips[pool][ip]
	delete(m.handles, rec.Handle.Key())
	h := rec.Handle
	if pin, ok := m.pins[pinID(pool, h.PodNamespace, h.PodName)]; keepPin && rec.Fixed && ok && pin == ip && h.ContainerID != "" {
		m.ips[pool][ip] = record{Handle: Handle{PodNamespace: h.PodNamespace, PodName: h.PodName, Network: h.Network}, Fixed: true, AllocatedAt: m.now().UTC()}
		return
	}
	delete(m.ips[pool], ip)
}

// Release implements Allocator.
func (m *MemoryAllocator) Release(_ context.Context, h Handle) error {
	if err := validateHandle(h); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	ref, ok := m.handles[h.Key()]
	if !ok {
		return nil
	}
	if rec, ok := m.ips[ref.Pool][ref.IP]; ok && rec.Handle.Same(h) {
		m.release(ref.Pool, ref.IP, true)
	}
	delete(m.handles, h.Key())
	return nil
}

// Lookup implements Allocator.
func (m *MemoryAllocator) Lookup(_ context.Context, h Handle) (Allocation, bool, error) {
	if err := validateHandle(h); err != nil {
		return Allocation{}, false, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	ref, ok := m.handles[h.Key()]
	if !ok {
		return Allocation{}, false, nil
	}
	return m.pools[ref.Pool].allocation(ref.IP, m.ips[ref.Pool][ref.IP]), true, nil
}

// ReleaseIP implements Allocator.
func (m *MemoryAllocator) ReleaseIP(_ context.Context, pool string, ip netip.Addr, owner Handle) (Allocation, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	l := m.pools[pool]
	if l == nil {
		return Allocation{}, fmt.Errorf("%w: %q", ErrPoolNotFound, pool)
	}
	rec, ok := m.ips[pool][ip]
	if !ok {
		return Allocation{}, fmt.Errorf("%w: %s in pool %q is not allocated", ErrNotFound, ip, pool)
	}
	if rec.Handle.ContainerID != owner.ContainerID || (owner.IfName != "" && owner.IfName != rec.Handle.IfName) {
		return Allocation{}, fmt.Errorf("%w: %s in pool %q belongs to %q, not %q", ErrOwnerMismatch, ip, pool, rec.Handle.Key(), owner.Key())
	}
	if rec.Handle.ContainerID == "" { // a held address released by hand drops its pin too
		id := pinID(pool, rec.Handle.PodNamespace, rec.Handle.PodName)
		if m.pins[id] == ip {
			delete(m.pins, id)
		}
	}
	m.release(pool, ip, rec.Handle.ContainerID != "")
	return l.allocation(ip, rec), nil
}

// GC implements Allocator.
func (m *MemoryAllocator) GC(ctx context.Context, req GCRequest) ([]Allocation, error) {
	if req.Node == "" {
		return nil, errors.New("ipam GC: the node name is required, so that only this node's attachments are collected")
	}
	valid := map[string]bool{}
	for _, h := range req.Valid {
		valid[h.Key()] = true
	}
	all, err := m.ListAllocations(ctx, req.Pool)
	if err != nil {
		return nil, err
	}
	var out []Allocation
	for _, a := range all {
		h := a.Handle
		if a.Held() || h.Node != req.Node || (req.Network != "" && h.Network != req.Network) || valid[h.Key()] {
			continue
		}
		if r, err := m.ReleaseIP(ctx, a.Pool, a.IP.Addr(), h); err == nil {
			out = append(out, r)
		}
	}
	return out, nil
}

// ListAllocations implements Allocator.
func (m *MemoryAllocator) ListAllocations(_ context.Context, pool string) ([]Allocation, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if pool != "" && m.pools[pool] == nil {
		return nil, fmt.Errorf("%w: %q", ErrPoolNotFound, pool)
	}
	var out []Allocation
	for name, l := range m.pools {
		if pool != "" && name != pool {
			continue
		}
		for ip, rec := range m.ips[name] {
			out = append(out, l.allocation(ip, rec))
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Pool != out[j].Pool {
			return out[i].Pool < out[j].Pool
		}
		return out[i].IP.Addr().Less(out[j].IP.Addr())
	})
	return out, nil
}

// Stats implements Allocator.
func (m *MemoryAllocator) Stats(ctx context.Context, pool string) (PoolStats, error) {
	all, err := m.ListAllocations(ctx, pool)
	if err != nil {
		return PoolStats{}, err
	}
	m.mu.Lock()
	st := PoolStats{Pool: pool, Size: m.pools[pool].size}
	m.mu.Unlock()
	for _, a := range all {
		if a.Held() {
			st.Held++
		} else {
			st.Used++
		}
	}
	st.Free = st.Size - st.Used - st.Held
	return st, nil
}

// Status implements Allocator.
func (m *MemoryAllocator) Status(ctx context.Context, pool string) error {
	if pool == "" {
		return nil
	}
	st, err := m.Stats(ctx, pool)
	if err != nil {
		return err
	}
	if st.Free == 0 {
		return fmt.Errorf("%w: %q", ErrExhausted, pool)
	}
	return nil
}

// ListPins implements Allocator.
func (m *MemoryAllocator) ListPins(_ context.Context, pool string) ([]Pin, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Pin
	for k, ip := range m.pins {
		var p Pin
		if _, err := fmt.Sscanf(replaceSlashes(k), "%s %s %s", &p.Pool, &p.Namespace, &p.Name); err != nil {
			return nil, fmt.Errorf("ipam: corrupt pin %q", k)
		}
		if pool == "" || p.Pool == pool {
			p.IP = ip
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		return pinID(out[i].Pool, out[i].Namespace, out[i].Name) < pinID(out[j].Pool, out[j].Namespace, out[j].Name)
	})
	return out, nil
}

func replaceSlashes(s string) string {
	b := []byte(s)
	for i := range b {
		if b[i] == '/' {
			b[i] = ' '
		}
	}
	return string(b)
}

// Unpin implements Allocator.
func (m *MemoryAllocator) Unpin(_ context.Context, pool, namespace, name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	id := pinID(pool, namespace, name)
	ip, ok := m.pins[id]
	if !ok {
		return fmt.Errorf("%w: no fixed IP pinned for %s/%s in pool %q", ErrNotFound, namespace, name, pool)
	}
	delete(m.pins, id)
	if rec, ok := m.ips[pool][ip]; ok && rec.Fixed {
		if rec.Handle.ContainerID == "" {
			delete(m.ips[pool], ip)
		} else {
			rec.Fixed, rec.Handle.Fixed = false, false
			m.ips[pool][ip] = rec
		}
	}
	return nil
}
