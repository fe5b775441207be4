package cni

import (
	"errors"
	"fmt"
	"net"

	"github.com/cilium/ebpf"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// tcBPFDatapath emulates an 802.1Q sub-interface with a veth pair and tc BPF:
//
//	pod veth -> bridge <vid> -> bvs<vid> ==veth== bvt<vid> --[tag: push vid]--> uplink egress
//	uplink ingress --[untag: pop, lookup vid]--> bvt<vid> egress -> bvs<vid> -> bridge -> pod
//
// bvs<vid> plays the role "uplink.<vid>" plays in the kernel datapath.
type tcBPFDatapath struct{}

var _ Datapath = tcBPFDatapath{}

func (tcBPFDatapath) Name() string { return DatapathTCBPF }

// trunkName is the uplink-facing end of a VLAN's veth pair (carries the tag program).
func trunkName(vid int) string { return fmt.Sprintf("bvt%d", vid) }

// UplinkPort returns the bridge-facing end of the VLAN's veth pair.
func (tcBPFDatapath) UplinkPort(spec Spec) string { return fmt.Sprintf("bvs%d", spec.VLAN) }

func (d tcBPFDatapath) Ensure(spec Spec) (*netlink.Bridge, func() error, error) {
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
	trunk, created, err := d.ensureTrunk(spec, uplink, br, mtu)
	if err != nil {
		return fail(err)
	}
	if created {
		undo.push(func() error { return deleteLinkIfExists(trunk.Attrs().Name) })
	}
	vlans, created, err := ensureUntag(uplink)
	if err != nil {
		return fail(err)
	}
	defer vlans.Close()
	if created {
		// The untag program serves every VLAN of the uplink: by the time this
		// runs another ADD may have enabled its VLAN in the map.
		undo.push(func() error { return removeUntagIfUnused(spec.Uplink) })
	}
	key, val := uint32(spec.VLAN), uint32(trunk.Attrs().Index)
	var old uint32
	if err := vlans.Lookup(key, &old); err != nil {
		return fail(fmt.Errorf("failed to read VLAN %d from %s: %w", spec.VLAN, vlansMapName, err))
	}
	if old != val {
		if err := vlans.Put(key, val); err != nil {
			return fail(fmt.Errorf("failed to enable VLAN %d in %s: %w", spec.VLAN, vlansMapName, err))
		}
		undo.push(func() error { return setVLANEntry(spec.Uplink, spec.VLAN, old) })
	}
	return br, guardUndo(spec, d.UplinkPort(spec), undo), nil
}

// guardUndo wraps a rollback so it does nothing once another pod joined the bridge.
func guardUndo(spec Spec, uplinkPort string, undo undoStack) func() error {
	return func() error {
		busy, err := hasPodPorts(spec.Bridge, uplinkPort)
		if err != nil {
			return err
		}
		if busy {
			return nil // another pod uses the VLAN plumbing by now: keep it
		}
		return undo.run()
	}
}

// ensureTrunk makes the VLAN's veth pair: bvs<vid> on the bridge, bvt<vid>
// with the tag program. created reports whether the pair was made now.
func (d tcBPFDatapath) ensureTrunk(spec Spec, uplink netlink.Link, br *netlink.Bridge,
	mtu int) (netlink.Link, bool, error) {
	name, port := trunkName(spec.VLAN), d.UplinkPort(spec)
	created := false
	trunk, err := netlinksafe.LinkByName(name)
	if isNotFound(err) {
		la := netlink.NewLinkAttrs()
		la.Name, la.MTU = name, mtu
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: port}); err != nil {
			return nil, false, fmt.Errorf("failed to create veth pair %s/%s for VLAN %d: %w", name, port,
				spec.VLAN, err)
		}
		created = true
		trunk, err = netlinksafe.LinkByName(name)
	}
	if err != nil {
		return nil, created, fmt.Errorf("trunk veth %q: %w", name, err)
	}
	sub, err := netlinksafe.LinkByName(port)
	if err != nil {
		return trunk, created, fmt.Errorf("trunk veth peer %q: %w", port, err)
	}
	if sub.Attrs().MasterIndex != br.Index {
		if err := netlink.LinkSetMaster(sub, br); err != nil {
			return trunk, created, fmt.Errorf("failed to add %q to bridge %q: %w", port, br.Name, err)
		}
	}
	for _, l := range []netlink.Link{trunk, sub} {
		if err := netlink.LinkSetUp(l); err != nil {
			return trunk, created, fmt.Errorf("failed to set %q up: %w", l.Attrs().Name, err)
		}
	}
	if created || findBPFFilter(trunk, tagFilterName) == nil {
		if err := attachTag(trunk, spec.VLAN, uplink.Attrs().Index, spec.HostGateway); err != nil {
			return trunk, created, err
		}
	}
	return trunk, created, nil
}

// attachTag loads the VLAN's tag program onto the ingress of trunk.
func attachTag(trunk netlink.Link, vid, uplinkIndex int, hostGateway net.IP) error {
	prog, err := loadSchedCLS(tagFilterName, tagInstructions(uint16(vid), uplinkIndex, hostGateway))
	if err != nil {
		return err
	}
	defer prog.Close() // the tc filter keeps its own reference
	if err := ensureClsact(trunk); err != nil {
		return err
	}
	return replaceBPFFilter(trunk, tagFilterName, prog.FD())
}

// ensureUntag returns the uplink's vlans map, attaching the untag program
// (and creating the map) if the uplink has none yet.
func ensureUntag(uplink netlink.Link) (vlans *ebpf.Map, created bool, err error) {
	if f := findBPFFilter(uplink, untagFilterName); f != nil {
		m, err := vlanMapOfProgram(ebpf.ProgramID(f.Id))
		return m, false, err
	}
	vlans, err = newVLANMap()
	if err != nil {
		return nil, false, err
	}
	prog, err := loadSchedCLS(untagFilterName, untagInstructions(vlans))
	if err != nil {
		vlans.Close()
		return nil, false, err
	}
	defer prog.Close()
	if err := ensureClsact(uplink); err != nil {
		vlans.Close()
		return nil, false, err
	}
	if err := replaceBPFFilter(uplink, untagFilterName, prog.FD()); err != nil {
		vlans.Close()
		return nil, false, err
	}
	return vlans, true, nil
}

// removeUntagIfUnused detaches the untag program from the uplink (host
// traffic is untouched) unless a VLAN is still enabled in its map.
func removeUntagIfUnused(uplinkName string) error {
	uplink, err := netlinksafe.LinkByName(uplinkName)
	if err != nil {
		return fmt.Errorf("uplink %q: %w", uplinkName, err)
	}
	f := findBPFFilter(uplink, untagFilterName)
	if f == nil {
		return nil
	}
	m, err := vlanMapOfProgram(ebpf.ProgramID(f.Id))
	if err != nil {
		return err
	}
	defer m.Close()
	var vid, ifindex uint32
	it := m.Iterate()
	for it.Next(&vid, &ifindex) {
		if ifindex != 0 {
			return nil // VLAN vid still uses it
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("failed to read %s of %q, keeping %s: %w", vlansMapName, uplinkName,
			untagFilterName, err)
	}
	if err := netlink.FilterDel(f); err != nil && !isNotFound(err) {
		return fmt.Errorf("failed to remove %s from %q: %w", untagFilterName, uplinkName, err)
	}
	return nil
}

// setVLANEntry sets the uplink's map entry of vid (0 disables the VLAN).
func setVLANEntry(uplinkName string, vid int, ifindex uint32) error {
	uplink, err := netlinksafe.LinkByName(uplinkName)
	if err != nil {
		return fmt.Errorf("uplink %q: %w", uplinkName, err)
	}
	f := findBPFFilter(uplink, untagFilterName)
	if f == nil {
		return nil // nothing is untagged on this uplink any more
	}
	m, err := vlanMapOfProgram(ebpf.ProgramID(f.Id))
	if err != nil {
		return err
	}
	defer m.Close()
	if err := m.Put(uint32(vid), ifindex); err != nil {
		return fmt.Errorf("failed to set VLAN %d in %s: %w", vid, vlansMapName, err)
	}
	return nil
}

func (d tcBPFDatapath) Check(spec Spec) error {
	if err := checkBridge(spec.Bridge, d.UplinkPort(spec)); err != nil {
		return err
	}
	trunk, err := netlinksafe.LinkByName(trunkName(spec.VLAN))
	if err != nil {
		return fmt.Errorf("trunk veth of VLAN %d: %w", spec.VLAN, err)
	}
	if findBPFFilter(trunk, tagFilterName) == nil {
		return fmt.Errorf("%q has no %s tc program: VLAN %d frames leave untagged", trunk.Attrs().Name,
			tagFilterName, spec.VLAN)
	}
	uplink, err := netlinksafe.LinkByName(spec.Uplink)
	if err != nil {
		return fmt.Errorf("uplink %q: %w", spec.Uplink, err)
	}
	f := findBPFFilter(uplink, untagFilterName)
	if f == nil {
		return fmt.Errorf("uplink %q has no %s tc program: VLAN %d frames are not received", spec.Uplink,
			untagFilterName, spec.VLAN)
	}
	m, err := vlanMapOfProgram(ebpf.ProgramID(f.Id))
	if err != nil {
		return err
	}
	defer m.Close()
	var got uint32
	if err := m.Lookup(uint32(spec.VLAN), &got); err != nil {
		return fmt.Errorf("failed to read VLAN %d from %s: %w", spec.VLAN, vlansMapName, err)
	}
	if int(got) != trunk.Attrs().Index {
		return fmt.Errorf("uplink %q delivers VLAN %d to ifindex %d, want %d (%s)", spec.Uplink,
			spec.VLAN, got, trunk.Attrs().Index, trunk.Attrs().Name)
	}
	return nil
}

// ensureClsact adds the clsact qdisc to l unless it has one.
func ensureClsact(l netlink.Link) error {
	q := &netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{
			LinkIndex: l.Attrs().Index,
			Handle:    netlink.MakeHandle(0xffff, 0),
			Parent:    netlink.HANDLE_CLSACT,
		},
		QdiscType: "clsact",
	}
	if err := netlink.QdiscAdd(q); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("failed to add clsact qdisc to %q (is sch_clsact available?): %w",
			l.Attrs().Name, err)
	}
	return nil
}

// replaceBPFFilter attaches the program fd as the direct-action ingress filter of l.
func replaceBPFFilter(l netlink.Link, name string, fd int) error {
	f := &netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: l.Attrs().Index,
			Parent:    netlink.HANDLE_MIN_INGRESS,
			Handle:    1,
			Protocol:  unix.ETH_P_ALL,
			Priority:  1,
		},
		Fd:           fd,
		Name:         name,
		DirectAction: true,
	}
	if err := netlink.FilterReplace(f); err != nil {
		return fmt.Errorf("failed to attach %s to the ingress of %q: %w", name, l.Attrs().Name, err)
	}
	return nil
}

// findBPFFilter returns l's ingress BPF filter called name, or nil.
func findBPFFilter(l netlink.Link, name string) *netlink.BpfFilter {
	filters, err := netlinksafe.FilterList(l, netlink.HANDLE_MIN_INGRESS)
	if err != nil {
		return nil
	}
	for _, f := range filters {
		if bf, ok := f.(*netlink.BpfFilter); ok && bf.Name == name {
			return bf
		}
	}
	return nil
}
