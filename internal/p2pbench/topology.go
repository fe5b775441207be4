package p2pbench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"
)

// Subnet is the hosts' network. It exists only inside the harness's
// namespaces, so it cannot clash with the machine's own addresses.
const Subnet = "10.77.0.0/24"

// RegistryIP is the registry host's address; node i has NodeIP(i).
const RegistryIP = "10.77.0.1"

// MaxNodes is how many nodes fit in Subnet after the registry.
const MaxNodes = 200

// NodeIP returns node i's address.
func NodeIP(i int) string { return "10.77.0." + strconv.Itoa(10+i) }

// Host is one simulated machine: a network namespace with one uplink "eth0".
type Host struct {
	Name string
	IP   string
	ns   ns.NetNS
}

// Path is the namespace's bind mount (for nsenter --net=).
func (h *Host) Path() string { return h.ns.Path() }

// Do runs fn on a thread inside the host's namespace: sockets it opens
// (dials, listeners) stay in that namespace after it returns.
func (h *Host) Do(fn func() error) error {
	return h.ns.Do(func(ns.NetNS) error { return fn() })
}

// DialContext dials from inside the host, for http.Transport.DialContext.
func (h *Host) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := h.Do(func() error {
		var err error
		c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// Listen listens on addr inside the host.
func (h *Host) Listen(addr string) (net.Listener, error) {
	var ln net.Listener
	err := h.Do(func() error {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err
	})
	return ln, err
}

// TxBytes is what the host's uplink has sent (every byte, headers included).
func (h *Host) TxBytes() (uint64, error) {
	var n uint64
	err := h.Do(func() error {
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return fmt.Errorf("uplink of %s: %w", h.Name, err)
		}
		n = l.Attrs().Statistics.TxBytes
		return nil
	})
	return n, err
}

// Topology is a switch (a bridge in its own namespace), a registry host and
// nodes, each host linked to the switch by a veth shaped to the same rate
// in both directions.
type Topology struct {
	Registry *Host
	Nodes    []*Host
	// Rate is each link's rate per direction in tc's syntax ("100mbit").
	Rate   string
	sw     ns.NetNS
	closed []ns.NetNS
}

// NewTopology builds a switch, a registry host and n nodes whose links are
// shaped to rate (tc syntax, e.g. "100mbit") each way. Close removes it all.
func NewTopology(n int, rate string) (_ *Topology, err error) {
	if n < 1 || n > MaxNodes {
		return nil, fmt.Errorf("nodes: want 1 to %d, got %d", MaxNodes, n)
	}
	t := &Topology{Rate: rate}
	defer func() {
		if err != nil {
			t.Close()
		}
	}()
	if t.sw, err = t.newNS(); err != nil {
		return nil, err
	}
	if err := t.sw.Do(func(ns.NetNS) error {
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}
		if err := netlink.LinkAdd(br); err != nil {
			return fmt.Errorf("bridge: %w", err)
		}
		return netlink.LinkSetUp(br)
	}); err != nil {
		return nil, err
	}
	if t.Registry, err = t.addHost("registry", "p-reg", RegistryIP); err != nil {
		return nil, err
	}
	for i := range n {
		h, err := t.addHost(fmt.Sprintf("node-%d", i), fmt.Sprintf("p-n%d", i), NodeIP(i))
		if err != nil {
			return nil, err
		}
		t.Nodes = append(t.Nodes, h)
	}
	return t, nil
}

func (t *Topology) newNS() (ns.NetNS, error) {
	n, err := testutils.NewNS()
	if err != nil {
		return nil, fmt.Errorf("create netns: %w", err)
	}
	t.closed = append(t.closed, n)
	return n, nil
}

// addHost creates a host namespace whose eth0 is the peer of port on the
// switch's bridge, and shapes both ends' egress (host upload on eth0, host
// download on port).
func (t *Topology) addHost(name, port, ip string) (*Host, error) {
	n, err := t.newNS()
	if err != nil {
		return nil, err
	}
	h := &Host{Name: name, IP: ip, ns: n}
	if err := t.sw.Do(func(ns.NetNS) error {
		la := netlink.NewLinkAttrs()
		la.Name = port
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: "eth0"}); err != nil {
			return fmt.Errorf("veth %s: %w", port, err)
		}
		peer, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetNsFd(peer, int(n.Fd())); err != nil {
			return err
		}
		br, err := netlink.LinkByName("br0")
		if err != nil {
			return err
		}
		p, err := netlink.LinkByName(port)
		if err != nil {
			return err
		}
		if err := netlink.LinkSetMaster(p, br); err != nil {
			return err
		}
		return netlink.LinkSetUp(p)
	}); err != nil {
		return nil, fmt.Errorf("host %s: %w", name, err)
	}
	if err := h.Do(func() error { return hostUp(ip) }); err != nil {
		return nil, fmt.Errorf("host %s: %w", name, err)
	}
	if err := t.shape(t.sw.Path(), port); err != nil {
		return nil, err
	}
	if err := t.shape(n.Path(), "eth0"); err != nil {
		return nil, err
	}
	return h, nil
}

func hostUp(ip string) error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return err
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return err
	}
	eth, err := netlink.LinkByName("eth0")
	if err != nil {
		return err
	}
	addr, err := netlink.ParseAddr(ip + "/24")
	if err != nil {
		return err
	}
	if err := netlink.AddrAdd(eth, addr); err != nil {
		return fmt.Errorf("address %s: %w", ip, err)
	}
	return netlink.LinkSetUp(eth)
}

// shape puts a token bucket on dev's egress. The bucket holds 10 ms of the
// rate but at least 128 KiB: veths hand over 64 KiB GSO packets, and a
// bucket smaller than a packet stalls TCP instead of pacing it.
func (t *Topology) shape(nsPath, dev string) error {
	burst, err := burstFor(t.Rate)
	if err != nil {
		return err
	}
	out, err := exec.Command("nsenter", "--net="+nsPath, "--", "tc", "qdisc", "replace", "dev", dev, "root",
		"tbf", "rate", t.Rate, "burst", strconv.Itoa(burst), "latency", "50ms").CombinedOutput()
	if err != nil {
		return fmt.Errorf("tc tbf rate %s on %s: %w: %s", t.Rate, dev, err, out)
	}
	return nil
}

// burstFor returns the token bucket size for rate.
func burstFor(rate string) (int, error) {
	bps, err := ParseRate(rate)
	if err != nil {
		return 0, err
	}
	return max(int(bps/8/100), 128<<10), nil
}

// ParseRate parses tc's rate syntax (bits per second: "100mbit", "1gbit",
// "500kbit") into bits per second.
func ParseRate(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"gbit", 1e9}, {"mbit", 1e6}, {"kbit", 1e3}, {"bit", 1}}
	for _, u := range units {
		if num, ok := strings.CutSuffix(s, u.suffix); ok {
			v, err := strconv.ParseInt(num, 10, 64)
			if err == nil && v > 0 {
				return v * u.mult, nil
			}
		}
	}
	return 0, fmt.Errorf("invalid link rate %q: want a tc rate in bits per second like 100mbit or 1gbit", s)
}

// Close removes every namespace (their links and qdiscs go with them).
func (t *Topology) Close() error {
	var errs []error
	for _, n := range t.closed {
		errs = append(errs, n.Close(), testutils.UnmountNS(n))
	}
	t.closed = nil
	return errors.Join(errs...)
}
