package cni

import (
	"errors"
	"fmt"
	"net"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// The tc-bpf datapath is two kinds of tc programs, assembled here in Go so
// that no C toolchain is needed on the build machine or the node:
//
//   - tag (one per VLAN, on the ingress of the VLAN's trunk veth): every frame
//     the per-VLAN bridge sends towards the uplink gets an 802.1Q tag with the
//     VLAN id and is redirected to the uplink's egress.
//   - untag (one per uplink, on the uplink's ingress): untagged frames go to
//     the host stack as before; a tagged frame whose VLAN id has an entry in
//     the vlans map is popped and redirected into that VLAN's trunk veth; a
//     tagged frame of any other VLAN (or of an 802.1ad outer tag) is dropped,
//     so a tenant only ever sees its own VLAN.
//
// The vlans map (array, index = VLAN id, value = trunk veth ifindex, 0 = not
// served here) belongs to the untag program; later plugin runs find it again
// through the tc filter's program id, so nothing needs to be pinned in bpffs.

const (
	// untagFilterName is the name of the tc filter (and program) on the uplink.
	untagFilterName = "berth_untag"
	// tagFilterName is the name of the tc filter (and program) on a trunk veth.
	tagFilterName = "berth_tag"
	// vlansMapName names the VLAN id -> ifindex map.
	vlansMapName = "berth_vlans"
	// maxVLANs is the size of the 802.1Q id space.
	maxVLANs = 4096

	// Offsets in struct __sk_buff (include/uapi/linux/bpf.h); stable UAPI.
	skbVlanPresent = 20
	skbVlanTCI     = 24
	skbVlanProto   = 28

	tcActOK   = 0
	tcActShot = 2

	// ethP8021QBE is htons(ETH_P_8021Q) as the helpers and __sk_buff.vlan_proto hold it.
	ethP8021QBE = 0x0081
)

// newVLANMap creates the VLAN id -> trunk ifindex map of an uplink.
func newVLANMap() (*ebpf.Map, error) {
	m, err := ebpf.NewMap(&ebpf.MapSpec{
		Name:       vlansMapName,
		Type:       ebpf.Array,
		KeySize:    4,
		ValueSize:  4,
		MaxEntries: maxVLANs,
	})
	if err != nil {
		return nil, fmt.Errorf("failed to create BPF map %s: %w", vlansMapName, err)
	}
	return m, nil
}

// untagInstructions is the uplink ingress program (see the file comment).
func untagInstructions(vlans *ebpf.Map) asm.Instructions {
	return asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1), // r6 = skb
		asm.LoadMem(asm.R2, asm.R6, skbVlanPresent, asm.Word),
		asm.JEq.Imm(asm.R2, 0, "pass"), // untagged: host traffic
		asm.LoadMem(asm.R2, asm.R6, skbVlanProto, asm.Word),
		asm.JNE.Imm(asm.R2, ethP8021QBE, "drop"), // 802.1ad / QinQ is not ours
		asm.LoadMem(asm.R7, asm.R6, skbVlanTCI, asm.Word),
		asm.And.Imm(asm.R7, 0x0fff), // VLAN id without PCP/DEI
		asm.StoreMem(asm.RFP, -4, asm.R7, asm.Word),
		asm.LoadMapPtr(asm.R1, vlans.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "drop"),
		asm.LoadMem(asm.R8, asm.R0, 0, asm.Word), // trunk veth ifindex
		asm.JEq.Imm(asm.R8, 0, "drop"),           // VLAN not served on this node
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.FnSkbVlanPop.Call(),
		asm.JNE.Imm(asm.R0, 0, "drop"),
		asm.Mov.Reg(asm.R1, asm.R8),
		asm.Mov.Imm(asm.R2, 0), // egress of the trunk veth = ingress of the bridge port
		asm.FnRedirect.Call(),
		asm.Return(),
		asm.Mov.Imm(asm.R0, tcActShot).WithSymbol("drop"),
		asm.Return(),
		asm.Mov.Imm(asm.R0, tcActOK).WithSymbol("pass"),
		asm.Return(),
	}
}

// tagInstructions is the trunk veth ingress program of one VLAN. With a host gateway
// (every node's bridge holds the VLAN's gateway address), ARP requests for that address and
// ARP replies from it are dropped before they reach the trunk: a pod resolves the gateway to
// its own node only (its Service traffic must pass its own node's kube-proxy, which then also
// sees the replies). A node's own requests for remote pods (sent from the gateway address when
// it forwards) do cross; the plugin pins each pod's gateway entry so they cannot re-point it.
func tagInstructions(vid uint16, uplinkIndex int, hostGateway net.IP) asm.Instructions {
	insns := asm.Instructions{asm.Mov.Reg(asm.R6, asm.R1)}
	if gw := hostGateway.To4(); gw != nil {
		insns = append(insns, gatewayARPFilter(gw)...)
	}
	return append(insns,
		asm.Mov.Reg(asm.R1, asm.R6).WithSymbol("tag"),
		asm.Mov.Imm(asm.R2, ethP8021QBE),
		asm.Mov.Imm(asm.R3, int32(vid)),
		asm.FnSkbVlanPush.Call(),
		asm.JNE.Imm(asm.R0, 0, "drop"),
		asm.Mov.Imm(asm.R1, int32(uplinkIndex)),
		asm.Mov.Imm(asm.R2, 0), // egress of the uplink
		asm.FnRedirect.Call(),
		asm.Return(),
		asm.Mov.Imm(asm.R0, tcActShot).WithSymbol("drop"),
		asm.Return(),
	)
}

// Offsets in an untagged Ethernet frame carrying IPv4 ARP.
const (
	ethTypeOffset = 12
	arpOpOffset   = 14 + 6  // operation
	arpSPAOffset  = 14 + 14 // sender protocol address
	arpTPAOffset  = 14 + 24 // target protocol address
	ethPARPLE     = 0x0608  // htons(ETH_P_ARP) read as a little-endian u16
	arpRequestLE  = 0x0100  // htons(ARPOP_REQUEST) read as a little-endian u16
	arpReplyLE    = 0x0200  // htons(ARPOP_REPLY)
)

// gatewayARPFilter jumps to "drop" for an ARP request whose target is gw or an ARP reply whose
// sender is gw, and to "tag" for anything else (r6 = skb). bpf_skb_load_bytes copies to the
// stack, so frames too short for an ARP header simply go on.
func gatewayARPFilter(gw net.IP) asm.Instructions {
	gwLE := int32(uint32(gw[0]) | uint32(gw[1])<<8 | uint32(gw[2])<<16 | uint32(gw[3])<<24)
	load := func(off, size int32) asm.Instructions {
		return asm.Instructions{
			asm.Mov.Reg(asm.R1, asm.R6),
			asm.Mov.Imm(asm.R2, off),
			asm.Mov.Reg(asm.R3, asm.RFP),
			asm.Add.Imm(asm.R3, -8),
			asm.Mov.Imm(asm.R4, size),
			asm.FnSkbLoadBytes.Call(),
			asm.JNE.Imm(asm.R0, 0, "tag"),
		}
	}
	var insns asm.Instructions
	insns = append(insns, load(ethTypeOffset, 2)...)
	insns = append(insns,
		asm.LoadMem(asm.R2, asm.RFP, -8, asm.Half),
		asm.JNE.Imm(asm.R2, ethPARPLE, "tag"))
	insns = append(insns, load(arpOpOffset, 2)...)
	insns = append(insns,
		asm.LoadMem(asm.R2, asm.RFP, -8, asm.Half),
		asm.JEq.Imm(asm.R2, arpReplyLE, "reply"),
		asm.JNE.Imm(asm.R2, arpRequestLE, "tag"))
	// a request: is its target the gateway? a reply: is its sender?
	for i, off := range []int32{arpTPAOffset, arpSPAOffset} {
		addr := load(off, 4)
		if i == 1 {
			addr[0] = addr[0].WithSymbol("reply")
		}
		insns = append(insns, addr...)
		insns = append(insns,
			asm.LoadMem(asm.R2, asm.RFP, -8, asm.Word),
			asm.JEq.Imm32(asm.R2, gwLE, "drop"),
			asm.Ja.Label("tag"))
	}
	return insns
}

// loadSchedCLS verifies and loads a tc classifier program.
func loadSchedCLS(name string, insns asm.Instructions) (*ebpf.Program, error) {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         name,
		Type:         ebpf.SchedCLS,
		Instructions: insns,
		License:      "Dual BSD/GPL",
	})
	if err != nil {
		var verr *ebpf.VerifierError
		if errors.As(err, &verr) {
			return nil, fmt.Errorf("BPF verifier refused %s: %+v", name, verr)
		}
		return nil, fmt.Errorf("failed to load BPF program %s (is the BPF syscall allowed? "+
			"CAP_BPF/CAP_SYS_ADMIN needed): %w", name, err)
	}
	return prog, nil
}

// vlanMapOfProgram returns the vlans map used by a loaded untag program.
func vlanMapOfProgram(id ebpf.ProgramID) (*ebpf.Map, error) {
	prog, err := ebpf.NewProgramFromID(id)
	if err != nil {
		return nil, fmt.Errorf("failed to open BPF program %d: %w", id, err)
	}
	defer prog.Close()
	info, err := prog.Info()
	if err != nil {
		return nil, fmt.Errorf("failed to read info of BPF program %d: %w", id, err)
	}
	ids, ok := info.MapIDs()
	if !ok || len(ids) == 0 {
		return nil, fmt.Errorf("BPF program %d (%s) uses no map", id, info.Name)
	}
	for _, mid := range ids {
		m, err := ebpf.NewMapFromID(mid)
		if err != nil {
			return nil, fmt.Errorf("failed to open BPF map %d: %w", mid, err)
		}
		if mi, err := m.Info(); err == nil && mi.Name == vlansMapName {
			return m, nil
		}
		_ = m.Close() // not ours, keep looking
	}
	return nil, fmt.Errorf("BPF program %d has no %s map", id, vlansMapName)
}
