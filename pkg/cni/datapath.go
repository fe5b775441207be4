package cni

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"slices"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Datapath names accepted in the "datapath" config field.
const (
	// DatapathKernel uses an 802.1Q VLAN sub-interface of the uplink (uplink.VID)
	// as the per-VLAN bridge's port to the wire. Needs CONFIG_VLAN_8021Q.
	DatapathKernel = "kernel"
	// DatapathTCBPF tags and untags in tc BPF programs on the uplink, for
	// kernels without 802.1Q (or where the 8021q module may not be loaded).
	DatapathTCBPF = "tc-bpf"
	// DatapathAuto, the default (also an empty "datapath"), is kernel when the node's kernel
	// can make 802.1Q sub-interfaces and tc-bpf otherwise: the default works on every kernel,
	// and CI, whose kernel has no 802.1Q, tests what a user gets by default there.
	DatapathAuto = "auto"
)

// Spec is the per-VLAN plumbing one network needs on a node.
type Spec struct {
	// Uplink is the host interface facing the switch (a trunk port).
	Uplink string
	// VLAN is the 802.1Q id, 1-4094.
	VLAN int
	// Bridge is the per-VLAN Linux bridge the pods' veths join.
	Bridge string
	// MTU of the bridge and its uplink-side port; 0 means the uplink's MTU.
	MTU int
	// HostGateway is the VLAN's gateway address when every node's bridge holds it (the
	// hostGateway option); nil otherwise. The tc-bpf datapath then keeps ARP for it off the
	// trunk, so each node answers its own pods and no node answers another's.
	HostGateway net.IP
}

// Datapath connects a per-VLAN bridge to the uplink's VLAN. Implementations
// run in the host network namespace and are called with the node lock held.
type Datapath interface {
	// Name returns the config name of the datapath.
	Name() string
	// Ensure makes spec's bridge exist and be connected to the uplink's VLAN.
	// The returned undo removes only what this call created, and only while
	// no pod port is on the bridge.
	Ensure(spec Spec) (br *netlink.Bridge, undo func() error, err error)
	// Check reports what is missing or wrong in spec's plumbing.
	Check(spec Spec) error
	// UplinkPort returns the name of the bridge port that leads to the uplink.
	UplinkPort(spec Spec) string
}

// NewDatapath returns the datapath of a config name; "auto" and "" probe the kernel.
func NewDatapath(name string) (Datapath, error) {
	name, err := ResolveDatapath(name)
	if err != nil {
		return nil, err
	}
	switch name {
	case DatapathKernel:
		return kernelDatapath{}, nil
	case DatapathTCBPF:
		return tcBPFDatapath{}, nil
	default:
		return nil, errUnknownDatapath(name)
	}
}

func errUnknownDatapath(name string) error {
	return fmt.Errorf("unknown datapath %q: use %q (probe the kernel: 802.1Q if it has it, else "+
		"tc-bpf), %q (802.1Q sub-interface) or %q (tc BPF tagging, for kernels without 802.1Q)",
		name, DatapathAuto, DatapathKernel, DatapathTCBPF)
}

// ResolveDatapath returns name, or for "auto" and "" the datapath the node's kernel supports:
// kernel when it has 802.1Q (built in, loaded, or loadable: the probe loads the module as the
// first sub-interface would), tc-bpf otherwise.
func ResolveDatapath(name string) (string, error) {
	if name != "" && name != DatapathAuto {
		return name, nil
	}
	ok, err := kernelHasVLAN()
	switch {
	case err != nil:
		return "", fmt.Errorf("datapath %q: %w (or set \"datapath\" to %q or %q)",
			DatapathAuto, err, DatapathKernel, DatapathTCBPF)
	case ok:
		return DatapathKernel, nil
	}
	return DatapathTCBPF, nil
}

// vlanProbeName is the name of the VLAN interface the probe asks for; it is never created.
const vlanProbeName = "berth-probe"

// kernelHasVLAN asks the kernel for a VLAN interface without a parent: it looks the link kind
// up first (loading 8021q on demand) and answers EOPNOTSUPP when it has no 802.1Q, else refuses
// the missing parent. Nothing is created, in any network namespace; it needs CAP_NET_ADMIN,
// which a CNI plugin and cni-vlan install have.
func kernelHasVLAN() (bool, error) {
	err := netlink.LinkAdd(&netlink.Vlan{
		LinkAttrs: netlink.LinkAttrs{Name: vlanProbeName}, VlanId: 1,
	})
	switch {
	case errors.Is(err, unix.EOPNOTSUPP):
		return false, nil
	case err == nil: // no kernel should accept it; take it away again
		if l, lerr := netlinksafe.LinkByName(vlanProbeName); lerr == nil {
			_ = netlink.LinkDel(l)
		}
		return true, nil
	case errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENODEV), errors.Is(err, unix.EEXIST):
		return true, nil
	}
	return false, fmt.Errorf("failed to probe the kernel for 802.1Q: %w", err)
}

// undoStack collects rollback steps and runs them last-in first-out.
type undoStack []func() error

func (u *undoStack) push(f func() error) { *u = append(*u, f) }

// run runs every step, even after a failed one, and joins their errors.
func (u undoStack) run() error {
	var errs []error
	for _, f := range slices.Backward(u) {
		errs = append(errs, f())
	}
	return errors.Join(errs...)
}

// ensureBridge returns the bridge called name, creating it (up, with mtu when
// not 0) if needed; created reports whether it did.
func ensureBridge(name string, mtu int) (br *netlink.Bridge, created bool, err error) {
	l, err := netlinksafe.LinkByName(name)
	if err == nil {
		b, ok := l.(*netlink.Bridge)
		if !ok {
			return nil, false, fmt.Errorf("%q already exists and is a %s, not a bridge: "+
				"choose another \"bridge\" name", name, l.Type())
		}
		return b, false, netlink.LinkSetUp(b)
	}
	if !isNotFound(err) {
		return nil, false, fmt.Errorf("failed to look up bridge %q: %w", name, err)
	}
	la := netlink.NewLinkAttrs()
	la.Name = name
	la.MTU = mtu
	la.HardwareAddr = randomMAC() // set, so it never follows the ports' MACs
	b := &netlink.Bridge{LinkAttrs: la}
	if err := netlink.LinkAdd(b); err != nil {
		if errors.Is(err, errExist) { // created by a concurrent run (another netns lock holder)
			return ensureBridge(name, mtu)
		}
		return nil, false, fmt.Errorf("failed to create bridge %q: %w", name, err)
	}
	if err := netlink.LinkSetUp(b); err != nil {
		_ = netlink.LinkDel(b) // rollback of our own creation; the setup error matters
		return nil, false, fmt.Errorf("failed to set bridge %q up: %w", name, err)
	}
	l, err = netlinksafe.LinkByName(name)
	if err != nil {
		return nil, true, fmt.Errorf("failed to re-read bridge %q: %w", name, err)
	}
	return l.(*netlink.Bridge), true, nil
}

// bridgePorts returns the names of the links enslaved to br.
func bridgePorts(br netlink.Link) ([]string, error) {
	links, err := netlinksafe.LinkList()
	if err != nil {
		return nil, fmt.Errorf("failed to list links: %w", err)
	}
	var ports []string
	for _, l := range links {
		if l.Attrs().MasterIndex == br.Attrs().Index {
			ports = append(ports, l.Attrs().Name)
		}
	}
	return ports, nil
}

// hasPodPorts reports whether bridge name has a port other than uplinkPort.
// A missing bridge has none.
func hasPodPorts(name, uplinkPort string) (bool, error) {
	br, err := netlinksafe.LinkByName(name)
	if isNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("failed to look up bridge %q: %w", name, err)
	}
	ports, err := bridgePorts(br)
	if err != nil {
		return false, err
	}
	for _, p := range ports {
		if p != uplinkPort {
			return true, nil
		}
	}
	return false, nil
}

// deleteLinkIfExists removes a link; a missing link is success.
func deleteLinkIfExists(name string) error {
	l, err := netlinksafe.LinkByName(name)
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("failed to look up %q: %w", name, err)
	}
	if err := netlink.LinkDel(l); err != nil && !isNotFound(err) {
		return fmt.Errorf("failed to delete %q: %w", name, err)
	}
	return nil
}

// checkBridge verifies that name is an up bridge with port as a port.
func checkBridge(name, port string) error {
	l, err := netlinksafe.LinkByName(name)
	if err != nil {
		return fmt.Errorf("bridge %q: %w", name, err)
	}
	if _, ok := l.(*netlink.Bridge); !ok {
		return fmt.Errorf("%q is a %s, not a bridge", name, l.Type())
	}
	if l.Attrs().Flags&netFlagUp == 0 {
		return fmt.Errorf("bridge %q is down", name)
	}
	p, err := netlinksafe.LinkByName(port)
	if err != nil {
		return fmt.Errorf("uplink port %q of bridge %q: %w", port, name, err)
	}
	if p.Attrs().MasterIndex != l.Attrs().Index {
		return fmt.Errorf("%q is not a port of bridge %q", port, name)
	}
	return nil
}

// randomMAC is a random locally administered unicast MAC address.
func randomMAC() net.HardwareAddr {
	mac := make(net.HardwareAddr, 6)
	_, _ = rand.Read(mac) // crypto/rand never fails on Linux
	mac[0] = (mac[0] | 0x02) &^ 0x01
	return mac
}
