package cni

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/utils/sysctl"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The link helpers below do what containernetworking/plugins' pkg/ip does for a
// bridge plugin. That package also holds the IP-masquerade helpers, which link
// go-iptables and knftables; knftables compiles ten regular expressions at
// start-up, and the runtime starts this binary for every pod ADD and DEL
// (0.30 ms of a 1.05 ms initialisation, GODEBUG=inittrace=1). Keeping the
// plugin's start-up at or below the reference bridge plugin's is an issue-15
// goal, so these few functions live here.

// setupVeth creates a veth pair from inside the pod's netns: contName stays
// here (down, until configureIface has put its addresses on), hostName goes to
// hostNS, up and without router advertisements (the plugin owns its routes). It returns the host and
// pod ends as the kernel created them (index, MAC).
func setupVeth(contName, hostName string, mtu int, hostNS ns.NetNS) (host, cont net.Interface,
	err error) {
	attrs := netlink.NewLinkAttrs()
	attrs.Name, attrs.MTU = contName, mtu
	veth := &netlink.Veth{LinkAttrs: attrs, PeerName: hostName,
		PeerNamespace: netlink.NsFd(int(hostNS.Fd()))}
	if err := netlink.LinkAdd(veth); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return host, cont, fmt.Errorf("veth %q or its host end %q already exists: %w", contName,
				hostName, err)
		}
		return host, cont, fmt.Errorf("failed to create veth pair %q/%q: %w", contName, hostName, err)
	}
	cl, err := netlinksafe.LinkByName(contName)
	if err != nil {
		_ = netlink.LinkDel(veth) // best effort: the caller's undo removes the host end
		return host, cont, fmt.Errorf("failed to look up the new veth %q: %w", contName, err)
	}
	var hl netlink.Link
	err = hostNS.Do(func(ns.NetNS) error {
		var err error
		if hl, err = netlinksafe.LinkByName(hostName); err != nil {
			return fmt.Errorf("failed to look up %q in %q: %w", hostName, hostNS.Path(), err)
		}
		if err := netlink.LinkSetUp(hl); err != nil {
			return fmt.Errorf("failed to set %q up: %w", hostName, err)
		}
		// Best effort: a kernel without IPv6 has no such key.
		_, _ = sysctl.Sysctl(fmt.Sprintf("net/ipv6/conf/%s/accept_ra", hostName), "0")
		return nil
	})
	if err != nil {
		return host, cont, err
	}
	return linkIface(hl), linkIface(cl), nil
}

func linkIface(l netlink.Link) net.Interface {
	a := l.Attrs()
	return net.Interface{Index: a.Index, MTU: a.MTU, Name: a.Name, HardwareAddr: a.HardwareAddr,
		Flags: a.Flags}
}

// settleInterval is how often settleAddresses looks at the DAD state.
const settleInterval = 50 * time.Millisecond

// settleAddresses waits until no IPv6 address of ifName is tentative (duplicate
// address detection still running), for at most timeout. An address whose DAD
// failed is an error: another host on the VLAN has it. A link that is not
// operationally up never finishes DAD, and is let through at the deadline.
func settleAddresses(ifName string, timeout time.Duration) error {
	link, err := netlinksafe.LinkByName(ifName)
	if err != nil {
		return fmt.Errorf("failed to look up %q: %w", ifName, err)
	}
	deadline := time.Now().Add(timeout)
	for {
		addrs, err := netlinksafe.AddrList(link, netlink.FAMILY_V6)
		if err != nil {
			return fmt.Errorf("failed to list the addresses of %q: %w", ifName, err)
		}
		tentative := false
		for _, a := range addrs {
			if a.Flags&unix.IFA_F_DADFAILED != 0 {
				return fmt.Errorf("address %s on %q failed duplicate address detection", a.IP, ifName)
			}
			tentative = tentative || a.Flags&unix.IFA_F_TENTATIVE != 0
		}
		if !tentative {
			return nil
		}
		if time.Now().After(deadline) {
			l, err := netlinksafe.LinkByName(ifName)
			if err != nil {
				return fmt.Errorf("failed to look up %q: %w", ifName, err)
			}
			if l.Attrs().OperState == netlink.OperUp {
				return fmt.Errorf("%q still has tentative IPv6 addresses after %s", ifName, timeout)
			}
			return nil
		}
		time.Sleep(settleInterval)
	}
}

// checkInterfaceIPs is CHECK's test that every address of the result is on
// ifName (same address and prefix) and that its subnet has a route.
func checkInterfaceIPs(ifName string, ips []*current.IPConfig) error {
	if len(ips) == 0 {
		return nil
	}
	link, err := netlinksafe.LinkByName(ifName)
	if err != nil {
		return fmt.Errorf("pod interface %q: %w", ifName, err)
	}
	have, err := netlinksafe.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("failed to list the addresses of %q: %w", ifName, err)
	}
	for _, ipc := range ips {
		want := netlink.Addr{IPNet: &ipc.Address}
		found := false
		for _, a := range have {
			if a.Equal(want) {
				found = true
				break
			}
		}
		if !found {
			return fmt.Errorf("address %s is not on %q", ipc.Address.String(), ifName)
		}
		subnet := &net.IPNet{IP: ipc.Address.IP.Mask(ipc.Address.Mask), Mask: ipc.Address.Mask}
		routes, err := netlinksafe.RouteListFiltered(addrFamily(ipc.Address.IP),
			&netlink.Route{Dst: subnet}, netlink.RT_FILTER_DST)
		if err != nil {
			return fmt.Errorf("failed to look up the route to %s: %w", subnet, err)
		}
		if len(routes) == 0 {
			return fmt.Errorf("no route to %s, the subnet of %s on %q", subnet, ipc.Address.String(),
				ifName)
		}
	}
	return nil
}

// checkRoutes is CHECK's test that every route of the result is in the
// routing table (with its gateway, when it names one).
func checkRoutes(routes []*types.Route) error {
	for _, r := range routes {
		find := &netlink.Route{Dst: &r.Dst, Gw: r.GW}
		filter := netlink.RT_FILTER_DST
		if r.GW != nil {
			filter |= netlink.RT_FILTER_GW
		}
		if ones, _ := r.Dst.Mask.Size(); ones == 0 {
			// The kernel keeps a default route without a destination.
			find.Dst, filter = nil, netlink.RT_FILTER_DST
		}
		found, err := netlinksafe.RouteListFiltered(addrFamily(r.Dst.IP), find, filter)
		if err != nil {
			return fmt.Errorf("failed to look up route %s: %w", r.Dst.String(), err)
		}
		if len(found) == 0 {
			return fmt.Errorf("route %s via %v is not in the routing table", r.Dst.String(), r.GW)
		}
	}
	return nil
}

func addrFamily(ip net.IP) int {
	if ip.To4() != nil {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}
