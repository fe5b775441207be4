//go:build integration

package cni

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/berth-dev/berth/pkg/ipam"
)

// TestPluginCheckDetectsDrift: CHECK fails, saying what is wrong, when the
// pod's route or address, the IPAM reservation or the VLAN's tag program is
// gone.
func TestPluginCheckDetectsDrift(t *testing.T) {
	l := newLab(t)
	etcd := startEtcd(t)
	h := l.hosts[0]
	pod := newNS(t)
	c := cniCall{containerID: "drift", netns: pod.Path(),
		conf: netConf("1.1.0", 100, "10.100.0.0/24", hostEtcd(t, h, etcd), "host0")}
	res, raw := c.add(t, h)
	var prev map[string]any
	if err := json.Unmarshal(raw, &prev); err != nil {
		t.Fatal(err)
	}
	c.conf["prevResult"] = prev
	c.cmd = "CHECK"
	if _, err := c.run(t, h); err != nil {
		t.Fatalf("CHECK right after ADD: %v", err)
	}

	// Drift inside the pod: a route of the result, then its address, removed.
	if len(res.Routes) == 0 || len(res.IPs) == 0 {
		t.Fatalf("ADD result without routes or addresses: %+v", res)
	}
	route := netlink.Route{Dst: &res.Routes[0].Dst, Gw: res.Routes[0].GW}
	if ones, _ := route.Dst.Mask.Size(); ones == 0 {
		route.Dst = nil
	}
	if route.Gw == nil {
		route.Gw = res.IPs[0].Gateway
	}
	if err := pod.Do(func(ns.NetNS) error { return netlink.RouteDel(&route) }); err != nil {
		t.Fatalf("deleting route %v in the pod: %v", route, err)
	}
	if _, err := c.run(t, h); err == nil || !strings.Contains(err.Error(), "is not in the routing table") {
		t.Errorf("CHECK with the pod's route %s removed: got %v", res.Routes[0].Dst.String(), err)
	}
	if err := pod.Do(func(ns.NetNS) error { return netlink.RouteAdd(&route) }); err != nil {
		t.Fatalf("restoring route %v in the pod: %v", route, err)
	}
	if _, err := c.run(t, h); err != nil {
		t.Fatalf("CHECK with the route restored: %v", err)
	}
	err := pod.Do(func(ns.NetNS) error {
		l, err := netlinksafe.LinkByName("eth0")
		if err != nil {
			return err
		}
		return netlink.AddrDel(l, &netlink.Addr{IPNet: &res.IPs[0].Address})
	})
	if err != nil {
		t.Fatalf("deleting the pod's address: %v", err)
	}
	if _, err := c.run(t, h); err == nil || !strings.Contains(err.Error(), "is not on \"eth0\"") {
		t.Errorf("CHECK with the pod's address %s removed: got %v", res.IPs[0].Address.String(), err)
	}

	inNS(t, h, func() error {
		trunk, err := netlinksafe.LinkByName(trunkName(100))
		if err != nil {
			return err
		}
		return netlink.FilterDel(findBPFFilter(trunk, tagFilterName))
	})
	if _, err := c.run(t, h); err == nil || !strings.Contains(err.Error(), "no berth_tag tc program") {
		t.Errorf("CHECK with the tag program removed: got %v", err)
	}

	cfg := &ipam.Config{Etcd: ipam.EtcdConfig{Endpoints: etcd}, Pool: "vlan100"}
	a, closeFn, err := cfg.Open(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer closeFn()
	if err := a.Release(t.Context(), ipam.Handle{ContainerID: "drift", IfName: "eth0"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.run(t, h); err == nil || !strings.Contains(err.Error(), "no reservation") {
		t.Errorf("CHECK with the reservation released: got %v", err)
	}
}

// TestPluginConcurrentAdds: a node's runtime starts many pods at once; the
// first pods of a VLAN race to create its bridge. All ADDs succeed with
// distinct addresses and the configured MTU.
func TestPluginConcurrentAdds(t *testing.T) {
	l := newLab(t)
	etcd := startEtcd(t)
	h := l.hosts[0]
	hetcd := hostEtcd(t, h, etcd)
	const n = 8
	ips := make([]string, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		pod := newNS(t)
		conf := netConf("1.1.0", 400, "10.40.0.0/24", hetcd, "host0")
		conf["mtu"] = 1400
		c := cniCall{cmd: "ADD", containerID: fmt.Sprintf("conc-%d", i), netns: pod.Path(), conf: conf}
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, err := c.run(t, h)
			if err != nil {
				errs <- fmt.Errorf("ADD %s: %w", c.containerID, err)
				return
			}
			var r struct{ IPs []struct{ Address string } }
			_ = json.Unmarshal(out, &r)
			if len(r.IPs) == 1 {
				ips[i] = r.IPs[0].Address
			}
			if err := pod.Do(func(ns.NetNS) error {
				return checkPodIface("eth0",
					strings.Split(ips[i], "/")[0], 1400)
			}); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	seen := map[string]bool{}
	for _, ip := range ips {
		if ip == "" || seen[ip] {
			t.Fatalf("addresses not distinct: %v", ips)
		}
		seen[ip] = true
	}
}

// TestPluginRepeatedAddKeepsRunningPod: a second ADD of a live attachment
// fails (its interface exists) without taking the running pod's address or veth.
func TestPluginRepeatedAddKeepsRunningPod(t *testing.T) {
	l := newLab(t)
	etcd := startEtcd(t)
	h := l.hosts[0]
	pod := newNS(t)
	c := cniCall{containerID: "twice", netns: pod.Path(),
		conf: netConf("1.1.0", 100, "10.100.0.0/24", hostEtcd(t, h, etcd), "host0")}
	res, _ := c.add(t, h)
	c.cmd = "ADD"
	if _, err := c.run(t, h); err == nil {
		t.Fatalf("second ADD of the same attachment succeeded")
	}
	if !lookup(t, etcd, "twice") {
		t.Errorf("the failed repeated ADD released the running pod's address")
	}
	inNS(t, pod, func() error { return checkPodIface("eth0", podIP(res), 0) })
	inNS(t, h, func() error { _, err := netlinksafe.LinkByName(hostVethName("twice", "eth0")); return err })
}
