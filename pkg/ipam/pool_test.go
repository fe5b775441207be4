package ipam

import (
	"errors"
	"net/netip"
	"testing"
)

func TestLayout(t *testing.T) {
	ip := netip.MustParseAddr
	tests := []struct {
		name      string
		pool      Pool
		size      uint64
		first     string
		last      string
		never     []string
		gatewayIs string
	}{
		{"ipv4 /24", Pool{Name: "a", Subnet: netip.MustParsePrefix("10.0.0.0/24")}, 253, "10.0.0.2",
			"10.0.0.254", []string{"10.0.0.0", "10.0.0.1", "10.0.0.255"}, "10.0.0.1"},
		{"ipv4 reserved and gateway in the middle",
			Pool{Name: "b", Subnet: netip.MustParsePrefix("10.0.0.0/28"), Gateway: ip("10.0.0.8"),
				Reserved: []IPRange{{ip("10.0.0.1"), ip("10.0.0.3")}, {ip("10.0.0.2"), ip("10.0.0.5")}}}, 8,
			"10.0.0.6", "10.0.0.14", []string{"10.0.0.8", "10.0.0.4", "10.0.0.15"}, "10.0.0.8"},
		{"ipv6 /120 has no broadcast", Pool{Name: "c", Subnet: netip.MustParsePrefix("fd00::/120")}, 254,
			"fd00::2", "fd00::ff", []string{"fd00::", "fd00::1"}, "fd00::1"},
		{"ipv4 /30", Pool{Name: "d", Subnet: netip.MustParsePrefix("192.168.0.0/30")}, 1, "192.168.0.2",
			"192.168.0.2", []string{"192.168.0.3"}, "192.168.0.1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l, err := newLayout(&tc.pool)
			if err != nil {
				t.Fatal(err)
			}
			if l.size != tc.size {
				t.Fatalf("size %d, want %d", l.size, tc.size)
			}
			if got := l.nth(0).String(); got != tc.first {
				t.Errorf("first %s, want %s", got, tc.first)
			}
			if got := l.nth(l.size - 1).String(); got != tc.last {
				t.Errorf("last %s, want %s", got, tc.last)
			}
			for _, n := range tc.never {
				if l.allocatable(ip(n)) {
					t.Errorf("%s must not be allocatable", n)
				}
			}
			seen := map[netip.Addr]bool{}
			for k := range l.size {
				a := l.nth(k)
				if seen[a] || !l.allocatable(a) || l.offset(a) == 0 {
					t.Fatalf("nth(%d)=%s repeated or not allocatable", k, a)
				}
				seen[a] = true
			}
			if tc.pool.Gateway.String() != tc.gatewayIs {
				t.Errorf("gateway %s, want %s", tc.pool.Gateway, tc.gatewayIs)
			}
		})
	}
}

func TestPoolValidateErrorsWrapErrInvalidPool(t *testing.T) {
	p := Pool{Name: "ok", Subnet: netip.MustParsePrefix("10.0.0.0/24"), VLAN: -1}
	if err := p.Validate(); !errors.Is(err, ErrInvalidPool) {
		t.Fatalf("want ErrInvalidPool, got %v", err)
	}
}

func TestFirstFreeWraps(t *testing.T) {
	p := Pool{Name: "a", Subnet: netip.MustParsePrefix("10.0.0.0/29")} // .2-.6
	l, err := newLayout(&p)
	if err != nil {
		t.Fatal(err)
	}
	used := map[uint64]bool{5: true, 6: true}
	if ip, ok := firstFree(l, used, 3); !ok || ip.String() != "10.0.0.2" {
		t.Fatalf("firstFree from index 3 = %s, %v; want wrap to 10.0.0.2", ip, ok)
	}
	for off := range uint64(8) {
		used[off] = true
	}
	if _, ok := firstFree(l, used, 0); ok {
		t.Fatal("firstFree found an address in a full pool")
	}
}

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }
