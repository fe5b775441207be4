//go:build integration

package cni

import (
	"fmt"
	"runtime"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
)

func init() { runtime.LockOSThread() }

// TestTCBPFDatapathIsolation builds VLANs 100 and 200 with the tc-bpf datapath
// on two simulated hosts. Both VLANs use the same /24, so only the 802.1Q
// tags keep them apart.
func TestTCBPFDatapathIsolation(t *testing.T) {
	l := newLab(t)
	dp, err := NewDatapath(DatapathTCBPF)
	if err != nil {
		t.Fatal(err)
	}
	pods := map[string]ns.NetNS{}
	for i, h := range l.hosts {
		for _, vid := range []int{100, 200} {
			spec := Spec{Uplink: "up0", VLAN: vid, Bridge: fmt.Sprintf("berth%d", vid)}
			inNS(t, h, func() error { _, _, err := dp.Ensure(spec); return err })
			inNS(t, h, func() error { _, _, err := dp.Ensure(spec); return err }) // idempotent
			inNS(t, h, func() error { return dp.Check(spec) })
			ip := fmt.Sprintf("10.100.0.%d", vid/10+i) // VLAN 100: .10 .11, VLAN 200: .20 .21
			pods[fmt.Sprintf("%d/%d", vid, i)] = addBarePod(t, h, spec.Bridge, ip)
		}
	}
	if !canPing(t, pods["100/0"], "10.100.0.11") {
		t.Errorf("VLAN 100 pod on host 0 cannot reach its VLAN-mate on host 1")
	}
	if !canPing(t, pods["200/0"], "10.100.0.21") {
		t.Errorf("VLAN 200 pod on host 0 cannot reach its VLAN-mate on host 1")
	}
	if canPing(t, pods["100/0"], "10.100.0.21") {
		t.Errorf("VLAN 100 pod reached a VLAN 200 pod on another host (same subnet): tenants are not isolated")
	}
	if canPing(t, pods["200/1"], "10.100.0.10") {
		t.Errorf("VLAN 200 pod reached a VLAN 100 pod on another host: tenants are not isolated")
	}
	if !canPing(t, l.hosts[0], "10.99.0.2") {
		t.Errorf("untagged host traffic over the uplink broke")
	}
}
