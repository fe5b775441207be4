package ipam

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"regexp"
	"sort"
)

// MaxHostBits bounds a pool's size (2^20 addresses, an IPv4 /12 or IPv6 /108):
// larger pools would make the free-address scan slow; split them instead.
const MaxHostBits = 20

var poolNameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// span is an inclusive interval of host offsets from the subnet base.
type span struct{ lo, hi uint64 }

// layout is a validated pool with its allocatable offsets precomputed.
type layout struct {
	pool  Pool
	base  netip.Addr
	spans []span // sorted, disjoint
	size  uint64
}

// Validate checks p and fills defaults (Gateway, Routes). Every error wraps
// ErrInvalidPool and names the field and a valid example.
func (p *Pool) Validate() error {
	_, err := newLayout(p)
	return err
}

func invalid(name, format string, args ...any) error {
	return fmt.Errorf("%w %q: %s", ErrInvalidPool, name, fmt.Sprintf(format, args...))
}

// newLayout validates p (filling its defaults in place) and computes its allocatable offsets.
func newLayout(p *Pool) (*layout, error) {
	if !poolNameRE.MatchString(p.Name) {
		return nil, invalid(p.Name, "name must be 1-63 lower-case letters, digits or '-' (e.g. \"vlan100\")")
	}
	if p.VLAN < 0 || p.VLAN > 4094 {
		return nil, invalid(p.Name, "vlan %d out of range: use 1-4094, or 0 for untagged", p.VLAN)
	}
	if !p.Subnet.IsValid() {
		return nil, invalid(p.Name, "subnet is required (e.g. \"10.100.0.0/22\")")
	}
	if p.Subnet.Masked() != p.Subnet {
		return nil, invalid(p.Name, "subnet %s has host bits set: did you mean %s?", p.Subnet,
			p.Subnet.Masked())
	}
	hostBits := p.Subnet.Addr().BitLen() - p.Subnet.Bits()
	if hostBits > MaxHostBits {
		return nil, invalid(p.Name, "subnet %s is larger than %d addresses: split it into pools of /%d "+
			"(IPv4) or /%d (IPv6) or smaller",
			p.Subnet, 1<<MaxHostBits, 32-MaxHostBits, 128-MaxHostBits)
	}
	if hostBits < 2 {
		return nil, invalid(p.Name, "subnet %s is too small: it needs room for a gateway and pods (use "+
			"/30 or larger)", p.Subnet)
	}
	l := &layout{pool: *p, base: p.Subnet.Addr()}
	last := uint64(1)<<hostBits - 1
	hi := last
	if p.Subnet.Addr().Is4() {
		hi = last - 1 // broadcast
	}
	if !p.Gateway.IsValid() {
		p.Gateway = l.addr(1)
	}
	if !p.Subnet.Contains(p.Gateway) {
		return nil, invalid(p.Name, "gateway %s is outside subnet %s", p.Gateway, p.Subnet)
	}
	gw := l.offset(p.Gateway)
	if gw == 0 || gw > hi {
		return nil, invalid(p.Name, "gateway %s is the network or broadcast address of %s", p.Gateway,
			p.Subnet)
	}
	excluded := []span{{gw, gw}}
	for i, r := range p.Reserved {
		if !p.Subnet.Contains(r.Start) || !p.Subnet.Contains(r.End) {
			return nil, invalid(p.Name, "reserved[%d] %s-%s is not inside subnet %s", i, r.Start, r.End,
				p.Subnet)
		}
		if r.End.Less(r.Start) {
			return nil, invalid(p.Name, "reserved[%d] ends (%s) before it starts (%s)", i, r.End, r.Start)
		}
		excluded = append(excluded, span{l.offset(r.Start), l.offset(r.End)})
	}
	for i, rt := range p.Routes {
		if !rt.Dst.IsValid() {
			return nil, invalid(p.Name, "routes[%d].dst is required (e.g. \"0.0.0.0/0\")", i)
		}
		if rt.Dst.Addr().Is4() != p.Subnet.Addr().Is4() ||
			(rt.GW.IsValid() && rt.GW.Is4() != p.Subnet.Addr().Is4()) {
			return nil, invalid(p.Name, "routes[%d] %s mixes IPv4 and IPv6 with subnet %s", i, rt.Dst, p.Subnet)
		}
	}
	if len(p.Routes) == 0 {
		def := netip.PrefixFrom(netip.IPv4Unspecified(), 0)
		if p.Subnet.Addr().Is6() {
			def = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
		}
		p.Routes = []Route{{Dst: def}}
	}
	l.pool = *p
	l.spans = subtract(span{1, hi}, excluded)
	for _, s := range l.spans {
		l.size += s.hi - s.lo + 1
	}
	if l.size == 0 {
		return nil, invalid(p.Name, "no allocatable address left in %s after the gateway and reserved "+
			"ranges", p.Subnet)
	}
	return l, nil
}

// subtract removes the excluded intervals from whole.
func subtract(whole span, excluded []span) []span {
	sort.Slice(excluded, func(i, j int) bool { return excluded[i].lo < excluded[j].lo })
	var out []span
	next := whole.lo
	for _, e := range excluded {
		if e.hi < next {
			continue
		}
		if e.lo > whole.hi {
			break
		}
		if e.lo > next {
			out = append(out, span{next, e.lo - 1})
		}
		next = e.hi + 1
	}
	if next <= whole.hi {
		out = append(out, span{next, whole.hi})
	}
	return out
}

// addr returns base + off. Pools have at most MaxHostBits host bits, so
// the arithmetic never carries out of the low 64 bits of the address.
func (l *layout) addr(off uint64) netip.Addr {
	b := l.base.As16()
	binary.BigEndian.PutUint64(b[8:], binary.BigEndian.Uint64(b[8:])+off)
	a := netip.AddrFrom16(b)
	if l.base.Is4() {
		return a.Unmap()
	}
	return a
}

// offset returns a - base (a must be inside the subnet).
func (l *layout) offset(a netip.Addr) uint64 {
	x, y := a.As16(), l.base.As16()
	return binary.BigEndian.Uint64(x[8:]) - binary.BigEndian.Uint64(y[8:])
}

// nth returns the k-th allocatable address, 0 <= k < size.
func (l *layout) nth(k uint64) netip.Addr {
	for _, s := range l.spans {
		n := s.hi - s.lo + 1
		if k < n {
			return l.addr(s.lo + k)
		}
		k -= n
	}
	panic(fmt.Sprintf("ipam: index %d out of pool %q of size %d", k, l.pool.Name, l.size))
}

// allocatable reports whether a may be handed out.
func (l *layout) allocatable(a netip.Addr) bool {
	if !l.pool.Subnet.Contains(a) {
		return false
	}
	off := l.offset(a)
	for _, s := range l.spans {
		if off >= s.lo && off <= s.hi {
			return true
		}
	}
	return false
}

// allocation builds the Allocation for address a owned by h.
func (l *layout) allocation(a netip.Addr, rec record) Allocation {
	routes := make([]Route, len(l.pool.Routes))
	copy(routes, l.pool.Routes)
	return Allocation{
		Pool: l.pool.Name, VLAN: l.pool.VLAN,
		IP:      netip.PrefixFrom(a, l.pool.Subnet.Bits()),
		Gateway: l.pool.Gateway, Routes: routes,
		Handle: rec.Handle, Fixed: rec.Fixed, AllocatedAt: rec.AllocatedAt,
	}
}

// overlapping returns the first of pools (other than p itself) on p's VLAN
// whose subnet overlaps p's, as an ErrPoolOverlap naming both, or nil.
func overlapping(p Pool, pools []Pool) error {
	for _, o := range pools {
		if o.Name != p.Name && o.VLAN == p.VLAN && o.Subnet.Overlaps(p.Subnet) {
			return fmt.Errorf("%w: pool %q (%s) and pool %q (%s) are both on VLAN %d: give the new pool a "+
				"disjoint subnet or another VLAN",
				ErrPoolOverlap, p.Name, p.Subnet, o.Name, o.Subnet, p.VLAN)
		}
	}
	return nil
}
