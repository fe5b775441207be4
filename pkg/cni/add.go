package cni

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"syscall"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/utils/sysctl"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/pkg/ipam/agentapi"
)

// hostVethName is the host end of a pod's veth: derived from the attachment
// so DEL can find it without state, even when the netns is gone.
func hostVethName(containerID, ifName string) string {
	sum := sha256.Sum256([]byte(containerID + "/" + ifName))
	return "bv" + hex.EncodeToString(sum[:])[:11]
}

// Add is the CNI ADD verb: allocate an address, plumb the VLAN, attach the pod.
func (pl *Plugin) Add(ctx context.Context, args *skel.CmdArgs) (err error) {
	conf, err := LoadConf(args.StdinData)
	if err != nil {
		return types.NewError(types.ErrInvalidNetworkConfig, "invalid cni-vlan config", err.Error())
	}
	dp, err := NewDatapath(conf.Datapath)
	if err != nil {
		return err
	}
	netns, err := ns.GetNS(args.Netns)
	if err != nil {
		return fmt.Errorf("failed to open netns %q: %w", args.Netns, err)
	}
	defer netns.Close()

	if err := checkForeignNetNS(args.Netns); err != nil {
		return err
	}
	resp, err := callAgent(ctx, conf, args, agentapi.VerbAdd, nil)
	if err != nil {
		return err
	}
	a := *resp.Allocation

	var undo undoStack
	success := false
	defer func() {
		if !success {
			err = errors.Join(err, undo.run())
		}
	}()
	// A repeated ADD of a live attachment gets its own address back from the
	// IPAM; it must not release it when the repeated ADD then fails.
	if !resp.Existed {
		undo.push(func() error {
			// The agent journals the release when etcd is away, so this never blocks on it.
			_, err := callAgent(ctx, conf, args, agentapi.VerbDel, nil)
			return err
		})
	}
	if a.VLAN != conf.VLAN {
		return types.NewError(types.ErrInvalidNetworkConfig, "IPAM pool is for another VLAN",
			fmt.Sprintf("pool %q serves VLAN %d but this network is VLAN %d", a.Pool, a.VLAN, conf.VLAN))
	}
	ipamRes := a.Result()

	spec := conf.spec()
	if conf.HostGateway && len(ipamRes.IPs) > 0 {
		spec.HostGateway = ipamRes.IPs[0].Gateway
	}
	br, hostIf, contIf, err := pl.attachPod(dp, spec, conf, args, netns, &undo)
	if err != nil {
		return err
	}
	res := &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{br, hostIf, contIf},
		IPs:        ipamRes.IPs,
		Routes:     ipamRes.Routes,
		DNS:        conf.DNS,
	}
	for _, ipc := range res.IPs {
		ipc.Interface = current.Int(2)
	}
	if err := netns.Do(func(ns.NetNS) error {
		// A gratuitous ARP when eth0 comes up with its address (as the reference bridge plugin
		// does): pods on the bridge that cached the MAC of this address's last owner learn the new one.
		_, _ = sysctl.Sysctl(fmt.Sprintf("net/ipv4/conf/%s/arp_notify", args.IfName), "1")
		if err := configureIface(args.IfName, res); err != nil {
			return err
		}
		if conf.HostGateway {
			return pinGateway(args.IfName, br.Mac, res.IPs)
		}
		return nil
	}); err != nil {
		return fmt.Errorf("failed to configure %s in %s: %w", args.IfName, args.Netns, err)
	}
	if err := forgetNeighbours(conf.Bridge, res.IPs); err != nil {
		return err
	}
	if conf.HostGateway {
		if err := ensureGatewayAddr(conf.Bridge, conf.Uplink, res.IPs); err != nil {
			return err
		}
	}
	if pl.postIPAMError != nil {
		return pl.postIPAMError
	}
	out, err := mergePrevResult(conf, res)
	if err != nil {
		return err
	}
	success = true
	return types.PrintResult(out, conf.CNIVersion)
}

// attachPod plumbs the VLAN (under the node lock) and creates the pod's veth
// on the bridge. Rollback steps are pushed on undo.
func (pl *Plugin) attachPod(dp Datapath, spec Spec, conf *NetConf, args *skel.CmdArgs,
	netns ns.NetNS, undo *undoStack) (br, hostIf, contIf *current.Interface, err error) {
	unlock, err := pl.nodeLock()
	if err != nil {
		return nil, nil, nil, err
	}
	defer unlock()
	bridge, undoDP, err := dp.Ensure(spec)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%s datapath for VLAN %d on %s: %w", dp.Name(), conf.VLAN,
			conf.Uplink, err)
	}
	// The plumbing is undone last (pushed first), under the lock, and only while no pod port is on the
	// bridge.
	undo.push(func() error {
		unlock, err := pl.nodeLock()
		if err != nil {
			return err
		}
		defer unlock()
		return undoDP()
	})
	mtu := conf.MTU
	if mtu == 0 {
		mtu = bridge.MTU
	}
	hostName := hostVethName(args.ContainerID, args.IfName)
	var hostVeth, contVeth net.Interface
	err = netns.Do(func(hostNS ns.NetNS) error {
		var err error
		hostVeth, contVeth, err = setupVeth(args.IfName, hostName, mtu, hostNS)
		return err
	})
	if err != nil {
		return nil, nil, nil, fmt.Errorf("failed to create veth %s/%s: %w", hostName, args.IfName, err)
	}
	undo.push(func() error { return deleteLinkIfExists(hostName) })
	hl, err := netlinksafe.LinkByName(hostName)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("host veth %q: %w", hostName, err)
	}
	if err := netlink.LinkSetMaster(hl, bridge); err != nil {
		return nil, nil, nil, fmt.Errorf("failed to add %q to bridge %q: %w", hostName, conf.Bridge, err)
	}
	// Hairpin: a pod that calls its own Service is DNATed back to itself, and with
	// br_netfilter (kube-proxy's iptables mode) the bridge must send that frame out of the
	// port it came in on; without it the connection times out whenever kube-proxy picks
	// the caller as the endpoint.
	if err := netlink.LinkSetHairpin(hl, true); err != nil {
		return nil, nil, nil, fmt.Errorf("failed to set hairpin mode on %q: %w", hostName, err)
	}
	br = &current.Interface{Name: bridge.Name, Mac: bridge.HardwareAddr.String()}
	hostIf = &current.Interface{Name: hostVeth.Name, Mac: hostVeth.HardwareAddr.String()}
	contIf = &current.Interface{Name: contVeth.Name, Mac: contVeth.HardwareAddr.String(),
		Sandbox: args.Netns}
	return br, hostIf, contIf, nil
}

// ensureGatewayAddr puts each pool gateway (with the pool's prefix) on the bridge.
//
// The node's own traffic into the VLAN leaves with the uplink's address as its source, not the
// gateway's: every node's bridge holds the same gateway address, and an ARP request from it
// would teach another node's pods that their gateway is this node (their Service traffic would
// then bypass their own node's kube-proxy, which alone sees the replies).
func ensureGatewayAddr(bridge, uplink string, ips []*current.IPConfig) error {
	l, err := netlinksafe.LinkByName(bridge)
	if err != nil {
		return fmt.Errorf("bridge %q: %w", bridge, err)
	}
	// A bridge made by an older cni-vlan takes its lowest port's MAC, which changes as pods come
	// and go; pods of a host-gateway VLAN hold the bridge's MAC as their gateway's: pin it (new
	// bridges get a set MAC at creation). Only this path needs it, not every ADD.
	if err := netlink.LinkSetHardwareAddr(l, l.Attrs().HardwareAddr); err != nil {
		return fmt.Errorf("failed to pin the MAC of bridge %q: %w", bridge, err)
	}
	src := uplinkIPv4(uplink)
	for _, ipc := range ips {
		if ipc.Gateway == nil {
			continue
		}
		if src == nil || ipc.Gateway.To4() == nil {
			addr := &netlink.Addr{IPNet: &net.IPNet{IP: ipc.Gateway, Mask: ipc.Address.Mask}}
			if err := netlink.AddrAdd(l, addr); err != nil && !errors.Is(err, errExist) {
				return fmt.Errorf("failed to add gateway %s to bridge %q: %w", addr.IPNet, bridge, err)
			}
			continue
		}
		// The uplink's address first, then the gateway, both /32: the kernel picks the first
		// address of the bridge as the source of what the node sends into the VLAN on behalf of
		// others (kube-proxy's masquerade, ARP requests while forwarding), and it must be this
		// node's own, never the shared gateway (the reply would go to the pod's own node).
		for _, ip := range []net.IP{src, ipc.Gateway} {
			addr := &netlink.Addr{IPNet: &net.IPNet{IP: ip, Mask: net.CIDRMask(32, 32)}}
			if err := netlink.AddrAdd(l, addr); err != nil && !errors.Is(err, errExist) {
				return fmt.Errorf("failed to add %s to bridge %q: %w", addr.IPNet, bridge, err)
			}
		}
		subnet := &net.IPNet{IP: ipc.Gateway.Mask(ipc.Address.Mask), Mask: ipc.Address.Mask}
		r := &netlink.Route{LinkIndex: l.Attrs().Index, Dst: subnet, Src: src, Scope: netlink.SCOPE_LINK,
			Protocol: unix.RTPROT_KERNEL}
		if err := netlink.RouteReplace(r); err != nil {
			return fmt.Errorf("failed to route %s via bridge %q from %s: %w", subnet, bridge, src, err)
		}
	}
	return nil
}

// pinGateway makes the pod's neighbour entry for its gateway permanent, with its own node's
// bridge MAC. Every node's bridge holds the gateway address, and a node's ARP request for a pod
// on another node (forwarding a Service connection) is sent from that address: a learned entry
// would follow it to the wrong node, whose kube-proxy never sees the pod's replies.
func pinGateway(ifName, bridgeMAC string, ips []*current.IPConfig) error {
	mac, err := net.ParseMAC(bridgeMAC)
	if err != nil {
		return fmt.Errorf("bridge MAC %q: %w", bridgeMAC, err)
	}
	l, err := netlinksafe.LinkByName(ifName)
	if err != nil {
		return fmt.Errorf("pod interface %q: %w", ifName, err)
	}
	for _, ipc := range ips {
		if ipc.Gateway == nil || ipc.Gateway.To4() == nil {
			continue
		}
		n := &netlink.Neigh{LinkIndex: l.Attrs().Index, Family: netlink.FAMILY_V4, IP: ipc.Gateway,
			HardwareAddr: mac, State: netlink.NUD_PERMANENT}
		if err := netlink.NeighSet(n); err != nil {
			return fmt.Errorf("failed to pin gateway %s to %s on %q: %w", ipc.Gateway, mac, ifName, err)
		}
	}
	return nil
}

// uplinkIPv4 is the uplink's first global IPv4 address, nil when it has none.
func uplinkIPv4(uplink string) net.IP {
	l, err := netlinksafe.LinkByName(uplink)
	if err != nil {
		return nil
	}
	addrs, err := netlinksafe.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		return nil
	}
	for _, a := range addrs {
		if a.Scope == int(netlink.SCOPE_UNIVERSE) {
			return a.IP
		}
	}
	return nil
}

// forgetNeighbours drops the node's neighbour entries for the pod's addresses on the bridge.
// The IPAM may hand out an address its last owner gave back a moment ago, and the node may still
// hold that pod's MAC for it (REACHABLE for up to ~45 s, and a gratuitous ARP does not override
// an entry confirmed within the last second): the kubelet's probes of the new pod would go to a
// MAC no port has, time out, and get the pod killed.
func forgetNeighbours(bridge string, ips []*current.IPConfig) error {
	l, err := netlinksafe.LinkByName(bridge)
	if err != nil {
		return fmt.Errorf("bridge %q: %w", bridge, err)
	}
	for _, ipc := range ips {
		n := &netlink.Neigh{LinkIndex: l.Attrs().Index, IP: ipc.Address.IP, Family: netlink.FAMILY_V4}
		if ipc.Address.IP.To4() == nil {
			n.Family = netlink.FAMILY_V6
		}
		if err := netlink.NeighDel(n); err != nil && !errors.Is(err, syscall.ENOENT) {
			return fmt.Errorf("failed to drop the stale neighbour entry of %s on %q: %w", ipc.Address.IP,
				bridge, err)
		}
	}
	return nil
}

// mergePrevResult appends this plugin's interfaces and addresses to a
// prevResult (when cni-vlan is not first in a chain), re-indexing ours.
func mergePrevResult(conf *NetConf, res *current.Result) (*current.Result, error) {
	if conf.PrevResult == nil {
		return res, nil
	}
	prev, err := current.NewResultFromResult(conf.PrevResult)
	if err != nil {
		return nil, fmt.Errorf("failed to convert prevResult: %w", err)
	}
	offset := len(prev.Interfaces)
	prev.Interfaces = append(prev.Interfaces, res.Interfaces...)
	for _, ipc := range res.IPs {
		ipc.Interface = current.Int(*ipc.Interface + offset)
		prev.IPs = append(prev.IPs, ipc)
	}
	prev.Routes = append(prev.Routes, res.Routes...)
	if len(prev.DNS.Nameservers) == 0 {
		prev.DNS = res.DNS
	}
	return prev, nil
}
