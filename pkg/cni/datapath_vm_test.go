//go:build vmtest

// Tests run inside a stock Debian kernel under qemu (hack/vm/vm.sh), because
// the kernel datapath needs CONFIG_VLAN_8021Q, which the CI kernel lacks:
//
//	hack/vm/vm.sh setup
//	CGO_ENABLED=0 go test -tags vmtest -exec "$PWD/hack/vm/vm.sh exec" -v ./pkg/cni/
package cni

import (
	"testing"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
)

// TestVMKernelDatapathIsolation: real 802.1Q sub-interfaces + bridges; VLAN
// 100 and 200 on the same subnet, isolated by the tags.
func TestVMKernelDatapathIsolation(t *testing.T) {
	testDatapathIsolation(t, DatapathKernel)
}

// TestVMAutoDatapathIsKernel: on a stock kernel, with 802.1Q, the default datapath is kernel,
// and works end to end.
func TestVMAutoDatapathIsKernel(t *testing.T) {
	testAutoDatapath(t, DatapathKernel)
	testDatapathIsolation(t, DatapathAuto)
}

// TestVMKernelDatapathLinks checks what the kernel datapath created is what
// an admin expects to see with `ip -d link`: up0.100 is VLAN 100 of up0, on berth100.
func TestVMKernelDatapathLinks(t *testing.T) {
	l := newLab(t)
	spec := Spec{Uplink: "up0", VLAN: 100, Bridge: "berth100"}
	inNS(t, l.hosts[0], func() error {
		if _, _, err := (kernelDatapath{}).Ensure(spec); err != nil {
			return err
		}
		vl, err := netlinksafe.LinkByName("up0.100")
		if err != nil {
			return err
		}
		v, ok := vl.(*netlink.Vlan)
		if !ok || v.VlanId != 100 {
			t.Errorf("up0.100 is %T %+v, want VLAN 100", vl, vl)
		}
		br, err := netlinksafe.LinkByName("berth100")
		if err != nil {
			return err
		}
		if vl.Attrs().MasterIndex != br.Attrs().Index {
			t.Errorf("up0.100 is not a port of berth100")
		}
		return (kernelDatapath{}).Check(spec)
	})
}

// TestVMTCBPFDatapathIsolation runs the tc-bpf datapath on the older stock kernel too.
func TestVMTCBPFDatapathIsolation(t *testing.T) {
	testDatapathIsolation(t, DatapathTCBPF)
}
