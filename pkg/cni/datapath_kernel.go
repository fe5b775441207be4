package cni

import (
	"errors"
	"fmt"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
)

// kernelDatapath is the classic Bridge+VLAN of 58.com: an 802.1Q
// sub-interface <uplink>.<vid> of the uplink is the per-VLAN bridge's port
// to the wire; the kernel tags and untags.
type kernelDatapath struct{}

var _ Datapath = kernelDatapath{}

func (kernelDatapath) Name() string { return DatapathKernel }

// UplinkPort returns the VLAN sub-interface name: <uplink>.<vid>, or
// berth.<vid> when that would exceed the 15-byte interface name limit.
func (kernelDatapath) UplinkPort(spec Spec) string {
	n := fmt.Sprintf("%s.%d", spec.Uplink, spec.VLAN)
	if len(n) > 15 {
		n = fmt.Sprintf("berth.%d", spec.VLAN)
	}
	return n
}

func (d kernelDatapath) Ensure(spec Spec) (*netlink.Bridge, func() error, error) {
	uplink, err := netlinksafe.LinkByName(spec.Uplink)
	if err != nil {
		return nil, nil, fmt.Errorf("uplink %q: %w", spec.Uplink, err)
	}
	mtu := spec.MTU
	if mtu == 0 {
		mtu = uplink.Attrs().MTU
	}
	var undo undoStack
	fail := func(err error) (*netlink.Bridge, func() error, error) {
		return nil, nil, errors.Join(err, undo.run())
	}
	br, created, err := ensureBridge(spec.Bridge, mtu)
	if err != nil {
		return fail(err)
	}
	if created {
		undo.push(func() error { return deleteLinkIfExists(spec.Bridge) })
	}
	name := d.UplinkPort(spec)
	vl, err := netlinksafe.LinkByName(name)
	if isNotFound(err) {
		la := netlink.NewLinkAttrs()
		la.Name, la.MTU, la.ParentIndex = name, mtu, uplink.Attrs().Index
		if err := netlink.LinkAdd(&netlink.Vlan{LinkAttrs: la, VlanId: spec.VLAN,
			VlanProtocol: netlink.VLAN_PROTOCOL_8021Q}); err != nil {
			return fail(fmt.Errorf("failed to create VLAN interface %s (VLAN %d on %s; does the kernel "+
				"have 8021q? else use \"datapath\": %q): %w",
				name, spec.VLAN, spec.Uplink, DatapathTCBPF, err))
		}
		undo.push(func() error { return deleteLinkIfExists(name) })
		vl, err = netlinksafe.LinkByName(name)
	}
	if err != nil {
		return fail(fmt.Errorf("VLAN interface %q: %w", name, err))
	}
	if err := checkVlanLink(vl, spec, uplink.Attrs().Index); err != nil {
		return fail(err)
	}
	if vl.Attrs().MasterIndex != br.Index {
		if err := netlink.LinkSetMaster(vl, br); err != nil {
			return fail(fmt.Errorf("failed to add %q to bridge %q: %w", name, spec.Bridge, err))
		}
	}
	if err := netlink.LinkSetUp(vl); err != nil {
		return fail(fmt.Errorf("failed to set %q up: %w", name, err))
	}
	return br, guardUndo(spec, name, undo), nil
}

// checkVlanLink verifies that l is VLAN spec.VLAN of the uplink.
func checkVlanLink(l netlink.Link, spec Spec, uplinkIndex int) error {
	v, ok := l.(*netlink.Vlan)
	if !ok {
		return fmt.Errorf("%q exists and is a %s, not a VLAN interface", l.Attrs().Name, l.Type())
	}
	if v.VlanId != spec.VLAN || v.ParentIndex != uplinkIndex {
		return fmt.Errorf("%q is VLAN %d of ifindex %d, want VLAN %d of %s", l.Attrs().Name, v.VlanId,
			v.ParentIndex, spec.VLAN, spec.Uplink)
	}
	return nil
}

func (d kernelDatapath) Check(spec Spec) error {
	uplink, err := netlinksafe.LinkByName(spec.Uplink)
	if err != nil {
		return fmt.Errorf("uplink %q: %w", spec.Uplink, err)
	}
	name := d.UplinkPort(spec)
	vl, err := netlinksafe.LinkByName(name)
	if err != nil {
		return fmt.Errorf("VLAN interface %q: %w", name, err)
	}
	if err := checkVlanLink(vl, spec, uplink.Attrs().Index); err != nil {
		return err
	}
	return checkBridge(spec.Bridge, name)
}
