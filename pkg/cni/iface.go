package cni

import (
	"fmt"
	"net"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/utils/sysctl"
	"github.com/vishvananda/netlink"
)

// dadSettleTimeout bounds the wait for IPv6 duplicate address detection.
const dadSettleTimeout = 5 * time.Second

// configureIface puts the result's addresses and routes on ifName inside the
// pod's netns and sets it up: what containernetworking/plugins' ipam.ConfigureIface
// does. That package also holds the IPAM exec helpers, which link pkg/invoke,
// OpenTelemetry and net/http into a binary the runtime starts for every pod
// (1.5 ms more start-up per ADD and DEL, measured with CNI_COMMAND=VERSION), so
// the plugin carries its own copy of this one function.
func configureIface(ifName string, res *current.Result) error {
	link, err := netlinksafe.LinkByName(ifName)
	if err != nil {
		return fmt.Errorf("failed to look up %q: %w", ifName, err)
	}
	var v4gw, v6gw net.IP
	ipv6Enabled := false
	for _, ipc := range res.IPs {
		if ipc.Address.IP.To4() == nil && !ipv6Enabled {
			if err := enableIPv6(ifName); err != nil {
				return err
			}
			ipv6Enabled = true
		}
		if err := netlink.AddrAdd(link, &netlink.Addr{IPNet: &ipc.Address}); err != nil {
			return fmt.Errorf("failed to add address %s to %q: %w", ipc.Address.String(), ifName, err)
		}
		switch {
		case ipc.Gateway == nil:
		case ipc.Gateway.To4() != nil && v4gw == nil:
			v4gw = ipc.Gateway
		case ipc.Gateway.To4() == nil && v6gw == nil:
			v6gw = ipc.Gateway
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("failed to set %q up: %w", ifName, err)
	}
	if v6gw != nil {
		// A route via an address still in DAD would fail: wait until it is usable.
		if err := settleAddresses(ifName, dadSettleTimeout); err != nil {
			return fmt.Errorf("failed to settle the addresses of %q: %w", ifName, err)
		}
	}
	for _, r := range res.Routes {
		gw := r.GW
		if gw == nil {
			gw = v4gw
			if r.Dst.IP.To4() == nil {
				gw = v6gw
			}
		}
		route := netlink.Route{Dst: &r.Dst, LinkIndex: link.Attrs().Index, Gw: gw, Priority: r.Priority}
		if r.Table != nil {
			route.Table = *r.Table
		}
		if r.Scope != nil {
			route.Scope = netlink.Scope(*r.Scope)
		}
		if err := netlink.RouteAddEcmp(&route); err != nil {
			return fmt.Errorf("failed to add route %s via %v dev %s: %w", r.Dst.String(), gw, ifName, err)
		}
	}
	return nil
}

// enableIPv6 turns IPv6 on for lo and ifName (a pod netns may start with it
// off) and keeps the addresses when the link goes down, before the first
// IPv6 address is added.
func enableIPv6(ifName string) error {
	for _, name := range []string{"lo", ifName} {
		key := fmt.Sprintf("net/ipv6/conf/%s/disable_ipv6", name)
		if v, err := sysctl.Sysctl(key); err != nil || v == "0" {
			continue // no IPv6 in this kernel, or already on: AddrAdd says what fails
		}
		if _, err := sysctl.Sysctl(key, "0"); err != nil {
			return fmt.Errorf("failed to enable IPv6 on %q: %w", name, err)
		}
	}
	if _, err := sysctl.Sysctl(fmt.Sprintf("net/ipv6/conf/%s/keep_addr_on_down", ifName), "1"); err != nil {
		return fmt.Errorf("failed to keep IPv6 addresses on %q when it goes down: %w", ifName, err)
	}
	return nil
}
