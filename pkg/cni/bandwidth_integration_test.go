//go:build integration

package cni

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/plugins/pkg/ns"
)

// TestBandwidthChained chains Debian's reference bandwidth plugin after
// cni-vlan, the way the installed conflist does, passes the limits a runtime
// derives from kubernetes.io/ingress-bandwidth and egress-bandwidth, and
// measures with iperf3 across the simulated hosts that the limited pod is
// limited and an unlimited pod is not. Rough bounds, not exact timing.
func TestBandwidthChained(t *testing.T) {
	iperf := lookPath(t, "iperf3", "apt-get install iperf3")
	lookPath(t, "/usr/lib/cni/bandwidth", "apt-get install containernetworking-plugins")
	l := newLab(t)
	etcd := startEtcd(t)
	const limit = 20_000_000 // bits/s, "20M" in the annotation
	cfg := &libcni.CNIConfig{Path: []string{filepath.Dir(pluginBin), "/usr/lib/cni"}}
	addPod := func(host int, id string, bw map[string]any) (ns.NetNS, string) {
		conf := netConf(
			"1.0.0",
			100,
			"10.100.0.0/24",
			hostEtcd(t, l.hosts[host], etcd),
			fmt.Sprintf("host%d", host),
		)
		delete(conf, "cniVersion")
		delete(conf, "name")
		list := map[string]any{"cniVersion": "1.0.0", "name": "bw", "plugins": []any{conf,
			map[string]any{
				"type":         "bandwidth",
				"capabilities": map[string]bool{"bandwidth": true},
			}}}
		data, _ := json.Marshal(list)
		nl, err := libcni.ConfListFromBytes(data)
		if err != nil {
			t.Fatal(err)
		}
		pod := newNS(t)
		rt := &libcni.RuntimeConf{ContainerID: id, NetNS: pod.Path(), IfName: "eth0"}
		if bw != nil {
			rt.CapabilityArgs = map[string]any{"bandwidth": bw}
		}
		var ip string
		inNS(t, l.hosts[host], func() error {
			res, err := cfg.AddNetworkList(t.Context(), nl, rt)
			if err != nil {
				return err
			}
			out, _ := json.Marshal(res)
			var r struct{ IPs []struct{ Address string } }
			_ = json.Unmarshal(out, &r)
			ip = r.IPs[0].Address[:len(r.IPs[0].Address)-3]
			t.Cleanup(
				func() {
					_ = l.hosts[host].Do(func(ns.NetNS) error {
						return cfg.DelNetworkList(t.Context(), nl, rt)
					})
				},
			)
			return nil
		})
		return pod, ip
	}
	server, serverIP := addPod(1, "bw-server", nil)
	limited, _ := addPod(0, "bw-limited", map[string]any{
		"ingressRate": limit, "ingressBurst": limit / 10, "egressRate": limit, "egressBurst": limit / 10})
	free, _ := addPod(0, "bw-free", nil)

	measure := func(client ns.NetNS, reverse bool) float64 {
		srv := exec.Command(iperf, "-s", "-1", "-B", serverIP, "-p", strconv.Itoa(iperfPort))
		inNS(t, server, srv.Start)
		defer func() { _ = srv.Process.Kill(); _ = srv.Wait() }()
		waitListening(t, server, iperfPort, 10*time.Second)
		args := []string{"-c", serverIP, "-p", strconv.Itoa(iperfPort), "-t", "2", "-J"}
		if reverse {
			args = append(args, "-R")
		}
		var out []byte
		inNS(t, client, func() error {
			var err error
			out, err = exec.Command(iperf, args...).Output()
			return err
		})
		var r struct {
			End struct {
				SumReceived struct {
					BitsPerSecond float64 `json:"bits_per_second"`
				} `json:"sum_received"`
			} `json:"end"`
		}
		if err := json.Unmarshal(out, &r); err != nil {
			t.Fatalf("iperf3 output: %v: %s", err, out)
		}
		return r.End.SumReceived.BitsPerSecond
	}
	egress, ingress, unlimited := measure(
		limited,
		false,
	), measure(
		limited,
		true,
	), measure(
		free,
		false,
	)
	t.Logf(
		"limit %d bit/s: limited pod egress %.1f Mbit/s, ingress %.1f Mbit/s; unlimited pod %.1f Mbit/s",
		limit,
		egress/1e6,
		ingress/1e6,
		unlimited/1e6,
	)
	if egress > 2*limit || ingress > 2*limit {
		t.Errorf(
			"kubernetes.io/*-bandwidth not honoured: egress %.1f / ingress %.1f Mbit/s with a 20 Mbit/s limit",
			egress/1e6,
			ingress/1e6,
		)
	}
	if unlimited < 5*limit {
		t.Errorf(
			"an unlimited pod got only %.1f Mbit/s: the limit leaked to other pods (or the lab is broken)",
			unlimited/1e6,
		)
	}
}

// iperfPort is iperf3's own default: the server runs in a pod netns of its own, where nothing
// else listens.
const iperfPort = 5201

func lookPath(t testing.TB, bin, install string) string {
	t.Helper()
	p, err := exec.LookPath(bin)
	if err != nil {
		t.Fatalf("%s not found: %s (hack/install-deps.sh)", bin, install)
	}
	return p
}
