package ipam

import (
	"context"
	"errors"
	"net/netip"
	"time"
)

// Errors returned by every Allocator. Callers test them with errors.Is; the
// CNI boundary maps them to CNI error codes with CNIError.
var (
	// ErrPoolNotFound means the named pool does not exist.
	ErrPoolNotFound = errors.New("ipam pool not found")
	// ErrPoolExists means CreatePool was asked for a name that is taken.
	ErrPoolExists = errors.New("ipam pool already exists")
	// ErrPoolOverlap means CreatePool was asked for a subnet that overlaps
	// another pool's on the same VLAN: both would hand out the same address.
	ErrPoolOverlap = errors.New("ipam pool overlaps another pool on the same VLAN")
	// ErrPoolInUse means DeletePool was asked for a pool that still has allocations.
	ErrPoolInUse = errors.New("ipam pool still has allocations")
	// ErrInvalidPool means a pool definition was refused; the wrapping error names the field.
	ErrInvalidPool = errors.New("invalid ipam pool")
	// ErrInvalidHandle means a handle lacks its container ID or interface name, or holds a '/'.
	ErrInvalidHandle = errors.New("invalid ipam handle")
	// ErrExhausted means the pool has no free address left.
	ErrExhausted = errors.New("ipam pool exhausted")
	// ErrTryAgain means the allocator gave up after its bounded retries
	// (contention or etcd unavailable); the CNI code is 11, "try again later".
	ErrTryAgain = errors.New("ipam: try again later")
	// ErrNotFound means no allocation matches.
	ErrNotFound = errors.New("ipam allocation not found")
	// ErrOwnerMismatch means an address is owned by another handle than the
	// one the caller named, so it was left alone.
	ErrOwnerMismatch = errors.New("ipam address is owned by another handle")
	// ErrUnavailable means the store (etcd) could not be reached.
	ErrUnavailable = errors.New("ipam store unavailable")
)

// IPRange is an inclusive range of addresses, e.g. reserved for routers or static hosts.
type IPRange struct {
	Start netip.Addr `json:"start"`
	End   netip.Addr `json:"end"`
}

// Contains reports whether a is within the range.
func (r IPRange) Contains(a netip.Addr) bool {
	return r.Start.Compare(a) <= 0 && a.Compare(r.End) <= 0
}

// Route is a route the pod gets with its address. A zero GW means "via the pool's gateway".
type Route struct {
	Dst netip.Prefix `json:"dst"`
	GW  netip.Addr   `json:"gw,omitzero"`
}

// Pool is a subnet handed out to pods on one VLAN. Pools are created by an
// admin (CLI or inline in the CNI config) and are immutable afterwards.
type Pool struct {
	// Name identifies the pool: lower-case letters, digits and '-', at most 63 characters.
	Name string `json:"name"`
	// VLAN is the 802.1Q id of the pool's network, 1-4094, or 0 for untagged.
	VLAN int `json:"vlan"`
	// Subnet is the pool's CIDR, e.g. 10.100.0.0/22. Its network and (IPv4)
	// broadcast addresses are never allocated.
	Subnet netip.Prefix `json:"subnet"`
	// Gateway is the pods' default gateway, never allocated. Zero means the
	// first address of the subnet (10.100.0.1).
	Gateway netip.Addr `json:"gateway,omitzero"`
	// Reserved ranges are never allocated (routers, static hosts, another IPAM's range).
	Reserved []IPRange `json:"reserved,omitempty"`
	// Routes are given to every pod; empty means one default route via Gateway.
	Routes []Route `json:"routes,omitempty"`
}

// Handle identifies the owner of an address. The ownership key is
// ContainerID + IfName (unique per attachment on a node, as in CNI); the
// other fields are recorded so admins and the reconciler can find the pod.
type Handle struct {
	ContainerID  string `json:"containerID"`
	IfName       string `json:"ifName"`
	PodNamespace string `json:"podNamespace,omitempty"`
	PodName      string `json:"podName,omitempty"`
	PodUID       string `json:"podUID,omitempty"`
	// Node is the node that made the allocation; GC only touches its own node's attachments.
	Node string `json:"node,omitempty"`
	// Network is the CNI network name; GC only touches its own network.
	Network string `json:"network,omitempty"`
	// Fixed asks (at Allocate time) that PodNamespace/PodName keep the same
	// address across restarts and nodes (StatefulSet pods). Opt-in.
	Fixed bool `json:"fixed,omitempty"`
}

// Key returns the ownership key "containerID/ifname".
func (h Handle) Key() string { return h.ContainerID + "/" + h.IfName }

// Same reports whether h and o name the same attachment (ContainerID and IfName).
func (h Handle) Same(o Handle) bool { return h.ContainerID == o.ContainerID && h.IfName == o.IfName }

// Allocation is an address owned by a handle (or, when Handle.ContainerID is
// empty, held for a fixed-IP pod that is not running right now).
type Allocation struct {
	Pool        string       `json:"pool"`
	VLAN        int          `json:"vlan"`
	IP          netip.Prefix `json:"ip"` // the address with the pool's prefix length
	Gateway     netip.Addr   `json:"gateway"`
	Routes      []Route      `json:"routes,omitempty"`
	Handle      Handle       `json:"handle"`
	Fixed       bool         `json:"fixed,omitempty"`
	AllocatedAt time.Time    `json:"allocatedAt"`
}

// Held reports whether the address is only held for a fixed-IP pod, with no container using it.
func (a Allocation) Held() bool { return a.Handle.ContainerID == "" }

// PoolStats counts a pool's addresses.
type PoolStats struct {
	Pool string `json:"pool"`
	// Size is the number of allocatable addresses (subnet minus network,
	// broadcast, gateway and reserved ranges).
	Size uint64 `json:"size"`
	// Used counts addresses owned by a container.
	Used uint64 `json:"used"`
	// Held counts addresses held for fixed-IP pods that are not running.
	Held uint64 `json:"held"`
	// Free is Size - Used - Held.
	Free uint64 `json:"free"`
}

// GCRequest is a CNI GC: release every attachment of Network on Node that is not in Valid.
type GCRequest struct {
	Network string
	Node    string
	// Pool, if set, limits GC to that pool.
	Pool  string
	Valid []Handle // only ContainerID and IfName are compared
}

// Pin is an address reserved for a StatefulSet pod (namespace/name) in a pool.
type Pin struct {
	Pool      string     `json:"pool"`
	Namespace string     `json:"namespace"`
	Name      string     `json:"name"`
	IP        netip.Addr `json:"ip"`
}

// Allocator is the IPAM. EtcdAllocator is the implementation; ipamtest.Conformance
// is the suite every implementation passes.
type Allocator interface {
	// Allocate gives h an address from pool; the same handle gets the same address again.
	Allocate(ctx context.Context, pool string, h Handle) (Allocation, error)
	// Release frees h's address if h still owns it; a missing allocation is success.
	Release(ctx context.Context, h Handle) error
	// Lookup returns h's allocation, false when it has none.
	Lookup(ctx context.Context, h Handle) (Allocation, bool, error)
	// ReleaseIP frees ip in pool only if it is still owned by owner (ContainerID, and IfName if set).
	ReleaseIP(ctx context.Context, pool string, ip netip.Addr, owner Handle) (Allocation, error)
	// GC releases this node's attachments of a network that are not in req.Valid and returns them.
	GC(ctx context.Context, req GCRequest) ([]Allocation, error)
	// Status returns nil when the store is reachable and pool (if set) has a free address.
	Status(ctx context.Context, pool string) error

	// CreatePool validates and stores a new pool.
	CreatePool(ctx context.Context, p Pool) error
	// EnsurePool creates p, or checks an existing pool of that name is identical.
	EnsurePool(ctx context.Context, p Pool) error
	// GetPool returns a pool by name.
	GetPool(ctx context.Context, name string) (Pool, error)
	// ListPools returns every pool, sorted by name.
	ListPools(ctx context.Context) ([]Pool, error)
	// DeletePool removes a pool that has no allocations.
	DeletePool(ctx context.Context, name string) error
	// ListAllocations returns the allocations of pool ("" for every pool), sorted by pool and address.
	ListAllocations(ctx context.Context, pool string) ([]Allocation, error)
	// Stats counts the addresses of a pool.
	Stats(ctx context.Context, pool string) (PoolStats, error)
	// ListPins returns the fixed-IP pins of pool ("" for all).
	ListPins(ctx context.Context, pool string) ([]Pin, error)
	// Unpin removes a fixed-IP pin; a held address is freed, a used one is freed at its release.
	Unpin(ctx context.Context, pool, namespace, name string) error
}
