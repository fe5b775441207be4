//go:build integration

package cni

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"
)

// addInProcess runs pl's ADD in this process (so its test hook applies) inside host h.
func addInProcess(t *testing.T, pl *Plugin, h ns.NetNS, id string, pod ns.NetNS, conf map[string]any) error {
	t.Helper()
	data, _ := json.Marshal(conf)
	args := &skel.CmdArgs{ContainerID: id, Netns: pod.Path(), IfName: "eth0", StdinData: data}
	return h.Do(func(ns.NetNS) error {
		_, _, err := testutils.CmdAddWithArgs(args, func() error { return pl.Add(t.Context(), args) })
		return err
	})
}

// hostLinks lists the link names of h.
func hostLinks(t *testing.T, h ns.NetNS) []string {
	t.Helper()
	var names []string
	inNS(t, h, func() error {
		links, err := netlinksafe.LinkList()
		for _, l := range links {
			names = append(names, l.Attrs().Name)
		}
		return err
	})
	return names
}

// TestAddRollbackOnLateFailure forces ADD to fail after everything was done
// and checks nothing is left: no veth, no pod interface, no reservation, and
// (first pod of the VLAN) no bridge, trunk or tc program either. A failing
// ADD next to a running pod leaves that pod's plumbing alone.
func TestAddRollbackOnLateFailure(t *testing.T) {
	l := newLab(t)
	etcd := startEtcd(t)
	h := l.hosts[0]
	// In-process: the IPAM client dials from threads outside the host netns, so use etcd directly.
	conf := netConf("1.1.0", 300, "10.30.0.0/24", etcd, "host0")
	before := strings.Join(hostLinks(t, h), ",")

	failing := &Plugin{LockDir: testLockDir, postIPAMError: errors.New("forced late failure")}
	pod := newNS(t)
	err := addInProcess(t, failing, h, "rollback-1", pod, conf)
	if err == nil || !strings.Contains(err.Error(), "forced late failure") {
		t.Fatalf("ADD with a forced late failure: got %v", err)
	}
	if after := strings.Join(hostLinks(t, h), ","); after != before {
		t.Errorf("links left behind by the failed ADD: before %q, after %q", before, after)
	}
	inNS(t, h, func() error {
		up, err := netlinksafe.LinkByName("up0")
		if err != nil {
			return err
		}
		if f := findBPFFilter(up, untagFilterName); f != nil {
			t.Errorf("the untag program is still on the uplink after the failed first ADD")
		}
		return nil
	})
	if err := pod.Do(func(ns.NetNS) error { _, err := netlink.LinkByName("eth0"); return err }); err == nil {
		t.Errorf("eth0 left in the pod")
	}
	if lookup(t, etcd, "rollback-1") {
		t.Errorf("the address of the failed ADD is still reserved")
	}

	// A running pod on the VLAN, then a failing ADD: the running pod keeps its plumbing.
	running := newNS(t)
	if err := addInProcess(t, &Plugin{LockDir: testLockDir}, h, "running", running, conf); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	if err := addInProcess(t, failing, h, "rollback-2", newNS(t), conf); err == nil {
		t.Fatalf("ADD with a forced late failure succeeded")
	}
	inNS(t, h, func() error { return tcBPFDatapath{}.Check(Spec{Uplink: "up0", VLAN: 300, Bridge: "berth300"}) })
	if lookup(t, etcd, "rollback-2") || !lookup(t, etcd, "running") {
		t.Errorf("after a failed ADD next to a running pod: want only the running pod's address reserved")
	}
}

// TestTCBPFRollbackKeepsOtherVLANs: the untag program on the uplink is shared
// by every VLAN. VLAN 100's first ADD attaches it, VLAN 200 enables itself in
// its map, then VLAN 100's ADD rolls back: VLAN 200 must keep working.
func TestTCBPFRollbackKeepsOtherVLANs(t *testing.T) {
	l := newLab(t)
	h := l.hosts[0]
	dp := tcBPFDatapath{}
	s100 := Spec{Uplink: "up0", VLAN: 100, Bridge: "berth100"}
	s200 := Spec{Uplink: "up0", VLAN: 200, Bridge: "berth200"}
	inNS(t, h, func() error {
		_, undo100, err := dp.Ensure(s100)
		if err != nil {
			return err
		}
		if _, _, err := dp.Ensure(s200); err != nil {
			return err
		}
		if err := undo100(); err != nil {
			return fmt.Errorf("rollback of VLAN 100: %w", err)
		}
		if err := dp.Check(s200); err != nil {
			t.Errorf("VLAN 200 broken by VLAN 100's rollback: %v", err)
		}
		if err := dp.Check(s100); err == nil {
			t.Errorf("VLAN 100's plumbing survived its rollback")
		}
		return nil
	})
}
