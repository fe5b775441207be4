//go:build integration

// Integration tests of the cni-vlan binary as a container runtime runs it:
// CNI_* environment, config on stdin, inside simulated hosts (network
// namespaces) with a simulated switch, against a real etcd.
// Needs (hack/install-deps.sh): etcd-server, busybox-static (ping), iperf3,
// containernetworking-plugins (/usr/lib/cni/bandwidth for chaining).
package cni

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/containernetworking/plugins/pkg/utils/sysctl"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/pkg/ipam"
	"github.com/berth-dev/berth/pkg/ipam/agent"
)

// pluginBin is the cni-vlan binary built once for this test binary.
var (
	pluginBin string
	// testLockDir holds the node locks of the plugins the tests run in-process.
	testLockDir string
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "cni-vlan-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	pluginBin = filepath.Join(dir, Name)
	build := exec.Command(
		"go",
		"build",
		"-tags",
		"cniplugin",
		"-o",
		pluginBin,
		"github.com/berth-dev/berth/cmd/cni-vlan",
	)
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "go build cmd/cni-vlan: %v\n", err)
		os.Exit(1)
	}
	testLockDir = filepath.Join(dir, "lock")
	agentsDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// netConf is a cni-vlan config for VLAN vid of the lab, pool "vlan<vid>" on
// subnet, allocating through node's IPAM agent on etcd. It leaves "datapath" out, so the
// plugin runs the default a user gets ("auto": tc-bpf on a kernel without 802.1Q, like CI's).
func netConf(cniVersion string, vid int, subnet string, etcd []string, node string) map[string]any {
	return map[string]any{
		"cniVersion": cniVersion, "name": fmt.Sprintf("net%d", vid), "type": Name,
		"uplink": "up0", "vlan": vid,
		"ipam": map[string]any{
			"etcd":        map[string]any{"endpoints": etcd},
			"nodeName":    node,
			"agentSocket": agentSocket(etcd, node),
			"poolSpec": map[string]any{
				"name":   fmt.Sprintf("vlan%d", vid),
				"vlan":   vid,
				"subnet": subnet,
			},
		},
	}
}

var (
	agents    sync.Map // etcd endpoints + node -> socket
	agentsDir string
	// agentOptions: a test that needs other agent options stores them here
	// (etcd endpoints + node -> func(*agent.Options)) before its first netConf.
	agentOptions sync.Map
)

// agentSocket returns the socket of node's IPAM agent on etcd, started in
// this process on first use and stopped when the test binary ends: the
// plugin binary allocates through it, as on a node. Each test has its own
// etcd (its own ports), so tests never share an agent.
func agentSocket(etcd []string, node string) string {
	key := strings.Join(etcd, ",") + "|" + node
	if s, ok := agents.Load(key); ok {
		return s.(string)
	}
	dir, err := os.MkdirTemp(agentsDir, "a")
	if err != nil {
		panic(err)
	}
	cli, err := clientv3.New(
		clientv3.Config{Endpoints: etcd, DialTimeout: 2 * time.Second, Logger: zap.NewNop()},
	)
	if err != nil {
		panic(err)
	}
	alloc, err := ipam.NewEtcd(cli, "", ipam.WithAttemptTimeout(time.Second))
	if err != nil {
		panic(err)
	}
	sock := filepath.Join(dir, "ipam.sock")
	opts := agent.Options{Node: node, Socket: sock, StateDir: dir, CallTimeout: 2 * time.Second}
	if o, ok := agentOptions.Load(key); ok {
		o.(func(*agent.Options))(&opts)
	}
	a, err := agent.New(alloc, opts)
	if err != nil {
		panic(err)
	}
	go func() { _ = a.Run(context.Background()) }() // stops with the test binary
	for range 500 {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		time.Sleep(
			10 * time.Millisecond,
		) // polling for the listener: no other signal from a goroutine we do not own
	}
	agents.Store(key, sock)
	return sock
}

// cniCall is one plugin invocation.
type cniCall struct {
	cmd, containerID, netns, ifName, args string
	conf                                  map[string]any
}

// run executes the plugin in host h (nil: the test's netns) like a runtime.
func (c cniCall) run(t testing.TB, h ns.NetNS) ([]byte, error) {
	t.Helper()
	stdin, err := json.Marshal(c.conf)
	if err != nil {
		t.Fatal(err)
	}
	ifName := c.ifName
	if ifName == "" {
		ifName = "eth0"
	}
	cmd := exec.Command(pluginBin)
	cmd.Env = []string{
		"CNI_COMMAND=" + c.cmd,
		"CNI_CONTAINERID=" + c.containerID,
		"CNI_NETNS=" + c.netns,
		"CNI_IFNAME=" + ifName,
		"CNI_PATH=/usr/lib/cni",
		"CNI_ARGS=" + c.args,
		"PATH=/usr/sbin:/usr/bin:/sbin:/bin",
	}
	cmd.Stdin = bytes.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runIt := func() error { return cmd.Run() }
	if h != nil {
		err = h.Do(func(ns.NetNS) error { return runIt() })
	} else {
		err = runIt()
	}
	if err != nil {
		var cerr types.Error
		if jerr := json.Unmarshal(stdout.Bytes(), &cerr); jerr == nil && cerr.Code != 0 {
			return stdout.Bytes(), &cerr
		}
		return stdout.Bytes(), fmt.Errorf(
			"%s: %w (stdout %q, stderr %q)",
			c.cmd,
			err,
			stdout.String(),
			stderr.String(),
		)
	}
	return stdout.Bytes(), nil
}

// add runs ADD and returns the result in the current format.
func (c cniCall) add(t testing.TB, h ns.NetNS) (*current.Result, []byte) {
	t.Helper()
	c.cmd = "ADD"
	out, err := c.run(t, h)
	if err != nil {
		t.Fatalf("ADD %s: %v", c.containerID, err)
	}
	r, err := version.NewResult(c.conf["cniVersion"].(string), out)
	if err != nil {
		t.Fatalf("ADD %s: unparsable result %s: %v", c.containerID, out, err)
	}
	res, err := current.NewResultFromResult(r)
	if err != nil {
		t.Fatalf("convert result: %v", err)
	}
	return res, out
}

func startEtcd(t testing.TB) []string {
	t.Helper()
	return testenv.Endpoints(testenv.StartEtcd(t))
}

// hostEtcd returns the etcd endpoints a plugin in host h uses: the same, as
// the plugin reaches etcd only through its node's agent (in this process).
func hostEtcd(t testing.TB, _ ns.NetNS, etcd []string) []string {
	t.Helper()
	return etcd
}

func podIP(res *current.Result) string { return res.IPs[0].Address.IP.String() }

// lookup asks the IPAM whether containerID/eth0 holds an address.
func lookup(t testing.TB, etcd []string, containerID string) bool {
	t.Helper()
	c := &ipam.Config{Etcd: ipam.EtcdConfig{Endpoints: etcd}, Pool: "x"}
	a, closeFn, err := c.Open(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer closeFn()
	_, ok, err := a.Lookup(t.Context(), ipam.Handle{ContainerID: containerID, IfName: "eth0"})
	if err != nil {
		t.Fatalf("IPAM lookup %s: %v", containerID, err)
	}
	return ok
}

// TestPluginLifecycle runs ADD -> CHECK -> DEL -> DEL for every CNI spec version.
func TestPluginLifecycle(t *testing.T) {
	l := newLab(t)
	etcd := startEtcd(t)
	hetcd := hostEtcd(t, l.hosts[0], etcd)
	for _, ver := range testutils.AllSpecVersions {
		t.Run(ver, func(t *testing.T) {
			pod := newNS(t)
			id := "lifecycle-" + strings.ReplaceAll(ver, ".", "")
			c := cniCall{
				containerID: id,
				netns:       pod.Path(),
				conf:        netConf(ver, 100, "10.100.0.0/24", hetcd, "host0"),
				args:        "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=" + id,
			}
			res, raw := c.add(t, l.hosts[0])
			if len(res.IPs) != 1 || !strings.HasPrefix(podIP(res), "10.100.0.") {
				t.Fatalf("ADD result %s: want one address in 10.100.0.0/24", raw)
			}
			inNS(t, pod, func() error { return checkPodIface("eth0", podIP(res), 1500) })
			inNS(t, l.hosts[0], func() error { // a pod calling its own Service is sent back to it
				link, err := netlinksafe.LinkByName(hostVethName(id, "eth0"))
				if err != nil {
					return err
				}
				pi, err := netlink.LinkGetProtinfo(link)
				if err != nil || !pi.Hairpin {
					t.Errorf(
						"host veth %s: hairpin %v (%v), want on",
						link.Attrs().Name,
						pi.Hairpin,
						err,
					)
				}
				return nil
			})
			if !lookup(t, etcd, id) {
				t.Fatalf("IPAM has no reservation for %s after ADD", id)
			}
			if testutils.SpecVersionHasCHECK(ver) {
				var prev map[string]any
				if err := json.Unmarshal(raw, &prev); err != nil {
					t.Fatal(err)
				}
				c.conf["prevResult"] = prev
				c.cmd = "CHECK"
				if _, err := c.run(t, l.hosts[0]); err != nil {
					t.Fatalf("CHECK after ADD: %v", err)
				}
			}
			for i := range 2 { // DEL is idempotent
				c.cmd = "DEL"
				if _, err := c.run(t, l.hosts[0]); err != nil {
					t.Fatalf("DEL #%d: %v", i+1, err)
				}
			}
			if lookup(t, etcd, id) {
				t.Errorf("IPAM still holds %s's address after DEL", id)
			}
			if err := pod.Do(func(ns.NetNS) error { return checkPodIface("eth0", "", 0) }); err == nil {
				t.Errorf("eth0 still exists in the pod after DEL")
			}
		})
	}
}

// checkPodIface verifies name exists (with ip and mtu when not zero).
func checkPodIface(name, ip string, mtu int) error {
	out, err := exec.Command("ip", "-o", "addr", "show", "dev", name).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v %s", name, err, out)
	}
	if ip != "" && !strings.Contains(string(out), " "+ip+"/") {
		return fmt.Errorf("%s has no address %s: %s", name, ip, out)
	}
	if mtu != 0 {
		link, _ := exec.Command("ip", "-o", "link", "show", "dev", name).CombinedOutput()
		if !strings.Contains(string(link), fmt.Sprintf("mtu %d ", mtu)) {
			return fmt.Errorf("%s: want mtu %d: %s", name, mtu, link)
		}
	}
	return nil
}

// TestPluginVLANIsolation: pods of VLAN 100 and VLAN 200 on two hosts, both
// VLANs on the same subnet: VLAN-mates talk across hosts, tenants do not.
func TestPluginVLANIsolation(t *testing.T) {
	l := newLab(t)
	etcd := startEtcd(t)
	pods, ips := map[string]ns.NetNS{}, map[string]string{}
	for i, h := range l.hosts {
		for _, vid := range []int{100, 200} {
			key := fmt.Sprintf("%d/%d", vid, i)
			hetcd := hostEtcd(t, h, etcd)
			pod := newNS(t)
			c := cniCall{containerID: "iso-" + strings.ReplaceAll(key, "/", "-"), netns: pod.Path(),
				conf: netConf("1.1.0", vid, "10.100.0.0/24", hetcd, fmt.Sprintf("host%d", i))}
			res, _ := c.add(t, h)
			pods[key], ips[key] = pod, podIP(res)
			t.Cleanup(func() { c.cmd = "DEL"; _, _ = c.run(t, h) })
		}
	}
	if !canPing(t, pods["100/0"], ips["100/1"]) {
		t.Errorf("VLAN 100 pod on host 0 cannot reach its VLAN-mate %s on host 1", ips["100/1"])
	}
	if !canPing(t, pods["200/1"], ips["200/0"]) {
		t.Errorf("VLAN 200 pod on host 1 cannot reach its VLAN-mate %s on host 0", ips["200/0"])
	}
	if canPing(t, pods["100/0"], ips["200/1"]) {
		t.Errorf(
			"VLAN 100 pod reached VLAN 200 pod %s on the same subnet: tenants are not isolated",
			ips["200/1"],
		)
	}
	if canPing(t, pods["200/0"], ips["100/1"]) {
		t.Errorf("VLAN 200 pod reached VLAN 100 pod %s: tenants are not isolated", ips["100/1"])
	}
}

// TestPluginDelMissingState: DEL of an attachment that never existed, with a
// netns that is gone, succeeds.
func TestPluginDelMissingState(t *testing.T) {
	l := newLab(t)
	etcd := startEtcd(t)
	c := cniCall{
		cmd:         "DEL",
		containerID: "never-added",
		netns:       "/var/run/netns/berth-does-not-exist",
		conf:        netConf("1.1.0", 100, "10.100.0.0/24", hostEtcd(t, l.hosts[0], etcd), "host0"),
	}
	for i := range 2 {
		if _, err := c.run(t, l.hosts[0]); err != nil {
			t.Fatalf("DEL #%d of missing state: %v", i+1, err)
		}
	}
}

// TestPluginDelWithDriftedPoolSpec: the conflist's inline poolSpec no longer
// matches the pool in etcd (an admin edited it). ADD is refused (code 7), but
// DEL still releases the address: a config error on DEL would leave the pod
// Terminating for good. Only ADD creates the inline pool, so STATUS and GC
// before the first ADD succeed.
func TestPluginDelWithDriftedPoolSpec(t *testing.T) {
	l := newLab(t)
	etcd := startEtcd(t)
	hetcd := hostEtcd(t, l.hosts[0], etcd)
	conf := netConf("1.1.0", 100, "10.100.0.0/24", hetcd, "host0")
	for _, verb := range []string{"STATUS", "GC"} {
		if _, err := (cniCall{cmd: verb, conf: conf}).run(t, l.hosts[0]); err != nil {
			t.Fatalf("%s before the first ADD (pool not created yet): %v", verb, err)
		}
	}
	pod := newNS(t)
	c := cniCall{containerID: "drift", netns: pod.Path(), conf: conf}
	c.add(t, l.hosts[0])

	drifted := netConf("1.1.0", 100, "10.101.0.0/24", hetcd, "host0")
	c2 := cniCall{cmd: "ADD", containerID: "drift-2", netns: newNS(t).Path(), conf: drifted}
	var cerr *types.Error
	if _, err := c2.run(t, l.hosts[0]); !errors.As(err, &cerr) ||
		cerr.Code != types.ErrInvalidNetworkConfig ||
		!strings.Contains(cerr.Details, "differs") {
		t.Fatalf("ADD with a drifted poolSpec: got %v, want code 7 saying the pool differs", err)
	}

	c.cmd, c.conf = "DEL", drifted
	for i := range 2 {
		if _, err := c.run(t, l.hosts[0]); err != nil {
			t.Fatalf("DEL #%d with a drifted poolSpec: %v", i+1, err)
		}
	}
	if lookup(t, etcd, "drift") {
		t.Fatal("DEL with a drifted poolSpec did not release the address")
	}
}

// TestPluginBadConfig: a wrong config is refused with code 7 and a message naming the field.
func TestPluginBadConfig(t *testing.T) {
	l := newLab(t)
	etcd := []string{"http://127.0.0.1:1"}
	for _, tc := range []struct {
		name, key string
		val       any
		want      string
	}{
		{"no uplink", "uplink", "", `"uplink" is required`},
		{"vlan out of range", "vlan", 5000, `"vlan" must be an 802.1Q id`},
		{"unknown datapath", "datapath", "ovs", `unknown datapath "ovs"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pod := newNS(t)
			conf := netConf("1.1.0", 100, "10.100.0.0/24", etcd, "host0")
			conf[tc.key] = tc.val
			_, err := cniCall{
				cmd:         "ADD",
				containerID: "bad",
				netns:       pod.Path(),
				conf:        conf,
			}.run(
				t,
				l.hosts[0],
			)
			var cerr *types.Error
			if !errors.As(err, &cerr) || cerr.Code != types.ErrInvalidNetworkConfig ||
				!strings.Contains(cerr.Details, tc.want) {
				t.Fatalf("ADD with %s: got %v, want code 7 mentioning %q", tc.name, err, tc.want)
			}
		})
	}
}

// TestPluginStatus: STATUS is fine with etcd up and room in the pool, code 50
// when the pool is exhausted and when etcd is unreachable.
func TestPluginStatus(t *testing.T) {
	l := newLab(t)
	members := testenv.StartEtcdCluster(t, 1)
	etcd := testenv.Endpoints(members...)
	conf := netConf(
		"1.1.0",
		100,
		"10.100.0.0/30",
		hostEtcd(t, l.hosts[0], etcd),
		"host0",
	) // one allocatable address
	status := cniCall{cmd: "STATUS", conf: conf}
	if _, err := status.run(t, l.hosts[0]); err != nil {
		t.Fatalf("STATUS with etcd up: %v", err)
	}
	pod := newNS(t)
	add := cniCall{containerID: "only-one", netns: pod.Path(), conf: conf}
	add.add(t, l.hosts[0])
	wantCode50 := func(when string) {
		_, err := status.run(t, l.hosts[0])
		var cerr *types.Error
		if !errors.As(err, &cerr) || cerr.Code != types.ErrPluginNotAvailable {
			t.Fatalf("STATUS %s: got %v, want code 50", when, err)
		}
	}
	wantCode50("with the pool exhausted")
	members[0].Kill()
	conf["ipam"].(map[string]any)["timeoutSeconds"] = 3
	wantCode50("with etcd down")
}

// TestPluginGC: GC releases this node's addresses not in valid-attachments
// and deletes their host veths (ghosts of a leaked netns would still answer
// ARP for the address); it goes on when etcd is down and reports the error.
func TestPluginGC(t *testing.T) {
	l := newLab(t)
	members := testenv.StartEtcdCluster(t, 1)
	etcd := testenv.Endpoints(members...)
	hetcd := hostEtcd(t, l.hosts[0], etcd)
	pods := map[string]ns.NetNS{}
	for _, id := range []string{"gc-keep", "gc-leaked", "gc-ghost"} {
		pods[id] = newNS(t)
		cniCall{
			containerID: id,
			netns:       pods[id].Path(),
			conf:        netConf("1.1.0", 100, "10.100.0.0/24", hetcd, "host0"),
		}.add(
			t,
			l.hosts[0],
		)
	}
	hostVeth := func(id string) bool {
		var err error
		inNS(
			t,
			l.hosts[0],
			func() error { _, err = netlinksafe.LinkByName(hostVethName(id, "eth0")); return nil },
		)
		return err == nil
	}
	conf := netConf("1.1.0", 100, "10.100.0.0/24", hetcd, "host0")
	conf["cni.dev/valid-attachments"] = []map[string]string{
		{"containerID": "gc-keep", "ifname": "eth0"},
		{"containerID": "gc-ghost", "ifname": "eth0"},
	}
	if _, err := (cniCall{cmd: "GC", conf: conf}).run(t, l.hosts[0]); err != nil {
		t.Fatalf("GC: %v", err)
	}
	if !lookup(t, etcd, "gc-keep") || lookup(t, etcd, "gc-leaked") {
		t.Errorf(
			"GC: want gc-keep kept and gc-leaked released, got keep=%v leaked=%v",
			lookup(t, etcd, "gc-keep"),
			lookup(t, etcd, "gc-leaked"),
		)
	}
	if !hostVeth("gc-keep") || hostVeth("gc-leaked") {
		t.Errorf(
			"GC: want gc-keep's veth kept and gc-leaked's deleted, got keep=%v leaked=%v",
			hostVeth("gc-keep"),
			hostVeth("gc-leaked"),
		)
	}
	if err := pods["gc-leaked"].Do(func(ns.NetNS) error { return checkPodIface("eth0", "", 0) }); err == nil {
		t.Error("GC: the leaked pod still has its eth0 (the veth pair survived)")
	}
	// etcd down: the ghost veth of gc-ghost is still deleted, and GC reports "try again later".
	members[0].Kill()
	conf["cni.dev/valid-attachments"] = []map[string]string{
		{"containerID": "gc-keep", "ifname": "eth0"},
	}
	conf["ipam"].(map[string]any)["timeoutSeconds"] = 3
	_, err := (cniCall{cmd: "GC", conf: conf}).run(t, l.hosts[0])
	var cerr *types.Error
	if !errors.As(err, &cerr) || cerr.Code != types.ErrTryAgainLater {
		t.Fatalf("GC with etcd down: got %v, want code 11", err)
	}
	if hostVeth("gc-ghost") || !hostVeth("gc-keep") {
		t.Errorf(
			"GC with etcd down: want gc-ghost's veth deleted and gc-keep's kept, got ghost=%v keep=%v",
			hostVeth("gc-ghost"),
			hostVeth("gc-keep"),
		)
	}
}

var _ = context.Background

// TestPluginReusedAddressAnswersAtOnce: a new pod that gets the address of a pod deleted a
// moment ago answers the node at once. The node's neighbour entry still holds the old pod's
// MAC (REACHABLE for up to ~45 s); until it expired, the kubelet's probes of the new pod timed
// out and killed it (seen in e2e when the IPAM handed an address straight back out).
func TestPluginReusedAddressAnswersAtOnce(t *testing.T) {
	l := newLab(t)
	etcd := startEtcd(t)
	hetcd := hostEtcd(t, l.hosts[0], etcd)
	conf := netConf("1.0.0", 101, "10.101.0.0/29", hetcd, "host0")
	conf["hostGateway"] = true
	// Two pod addresses, .2 and .3: a pod that stays keeps the bridge (and the node's
	// neighbour table on it) alive, and the other address is handed out twice.
	conf["ipam"].(map[string]any)["poolSpec"].(map[string]any)["reserved"] = []map[string]string{
		{"start": "10.101.0.4", "end": "10.101.0.6"},
	}
	keeper := newNS(t)
	keep := cniCall{containerID: "reuse-keeper", netns: keeper.Path(), conf: conf,
		args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=reuse-keeper"}
	keep.add(t, l.hosts[0])
	t.Cleanup(func() { keep.cmd = "DEL"; _, _ = keep.run(t, l.hosts[0]) })
	ips := map[string]bool{}
	for _, id := range []string{"reuse-old", "reuse-new"} {
		pod := newNS(t)
		c := cniCall{containerID: id, netns: pod.Path(), conf: conf,
			args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=" + id}
		res, _ := c.add(t, l.hosts[0])
		ips[podIP(res)] = true
		if !canPing(
			t,
			l.hosts[0],
			podIP(res),
		) { // the node reaches the pod, as the kubelet's probes do
			t.Errorf("the node does not reach %s (%s) right after ADD", id, podIP(res))
		}
		c.cmd = "DEL"
		if _, err := c.run(t, l.hosts[0]); err != nil {
			t.Fatalf("DEL %s: %v", id, err)
		}
	}
	if len(ips) != 1 {
		t.Fatalf("the two pods got %v, want the same address (the test is about reuse)", ips)
	}
}

// TestHostGatewayOnEveryNode: with hostGateway on two nodes of one VLAN, a pod's gateway is
// always its own node, even after another node has talked to it (the API server calling a
// webhook pod on another node) or forwarded a Service connection to it. Before, both bridges
// answered ARP for the shared gateway address across the trunk, and a node's ARP request (sent
// from that address) re-pointed the remote pod's gateway at the wrong node: its Service traffic
// then went through a kube-proxy that never saw the replies.
func TestHostGatewayOnEveryNode(t *testing.T) {
	l := newLab(t)
	etcd := startEtcd(t)
	for _, h := range l.hosts { // as on a Kubernetes node: forwarding on, loose source checks
		inNS(t, h, func() error {
			for k, v := range map[string]string{"net/ipv4/ip_forward": "1", "net/ipv4/conf/all/rp_filter": "2"} {
				if _, err := sysctl.Sysctl(k, v); err != nil {
					return err
				}
			}
			return nil
		})
	}
	var pods []ns.NetNS
	var ips []string
	for i, h := range l.hosts {
		conf := netConf(
			"1.0.0",
			102,
			"10.102.0.0/24",
			hostEtcd(t, h, etcd),
			fmt.Sprintf("host%d", i),
		)
		conf["hostGateway"] = true
		pod := newNS(t)
		c := cniCall{containerID: fmt.Sprintf("gw-pod-%d", i), netns: pod.Path(), conf: conf,
			args: fmt.Sprintf(
				"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=gw-pod-%d",
				i,
			)}
		res, _ := c.add(t, h)
		t.Cleanup(func() { c.cmd = "DEL"; _, _ = c.run(t, h) })
		pods, ips = append(pods, pod), append(ips, podIP(res))
	}
	bridgeMAC := func(h ns.NetNS) (mac string) {
		inNS(t, h, func() error {
			br, err := netlink.LinkByName("berth102")
			if err == nil {
				mac = br.Attrs().HardwareAddr.String()
			}
			return err
		})
		return mac
	}
	gatewayMAC := func(pod ns.NetNS) (mac string) {
		inNS(t, pod, func() error {
			neighs, err := netlink.NeighList(0, netlink.FAMILY_V4)
			for _, n := range neighs {
				if n.IP.String() == "10.102.0.1" {
					mac = n.HardwareAddr.String()
				}
			}
			return err
		})
		return mac
	}
	// Each node reaches the other's pod (through its bridge, from its uplink address), and
	// each pod reaches its gateway and the other pod.
	if !canPing(t, l.hosts[0], ips[1]) || !canPing(t, l.hosts[1], ips[0]) {
		t.Fatal("a node does not reach the pod on the other node")
	}
	// A Service as kube-proxy makes it: node 0 DNATs a virtual address to the pod on node 1
	// (it forwards, so its ARP request for that pod goes out from the gateway address), and
	// the reply, sent by the pod straight to pod 0, is un-NATed by node 0's bridge netfilter.
	inNS(t, l.hosts[0], func() error {
		if _, err := sysctl.Sysctl("net/bridge/bridge-nf-call-iptables", "1"); err != nil {
			return err
		}
		out, err := exec.Command("iptables", "-t", "nat", "-A", "PREROUTING", "-d", "10.102.99.1",
			"-j", "DNAT", "--to-destination", ips[1]).CombinedOutput()
		if err != nil {
			return fmt.Errorf("iptables: %v: %s", err, out)
		}
		// forget pod 1's MAC: the forwarded packet makes node 0 ask for it again
		if out, err := exec.Command("ip", "neigh", "flush", "dev", "berth102").CombinedOutput(); err != nil {
			return fmt.Errorf("ip neigh flush: %v: %s", err, out)
		}
		return nil
	})
	if !canPing(t, pods[0], "10.102.99.1") {
		t.Error("pod 0 does not reach the Service address whose endpoint is on node 1")
	}
	// The node itself calls a Service whose endpoint is on node 1, masqueraded as kube-proxy
	// does for traffic from outside the pod network: the reply must come back to this node.
	inNS(t, l.hosts[0], func() error {
		for _, rule := range [][]string{
			{"-t", "nat", "-A", "OUTPUT", "-d", "10.102.99.2", "-j", "DNAT", "--to-destination", ips[1]},
			{"-t", "nat", "-A", "POSTROUTING", "-d", ips[1], "-j", "MASQUERADE"},
		} {
			if out, err := exec.Command("iptables", rule...).CombinedOutput(); err != nil {
				return fmt.Errorf("iptables %v: %v: %s", rule, err, out)
			}
		}
		// a route for the Service range, as a node's default route gives it
		out, err := exec.Command("ip", "route", "add", "10.102.99.0/24", "dev", "up0").
			CombinedOutput()
		if err != nil {
			return fmt.Errorf("ip route: %v: %s", err, out)
		}
		return nil
	})
	if !canPing(t, l.hosts[0], "10.102.99.2") {
		t.Error("node 0 does not reach a masqueraded Service address whose endpoint is on node 1")
	}
	for i, pod := range pods {
		if !canPing(t, pod, "10.102.0.1") || !canPing(t, pod, ips[1-i]) {
			t.Fatalf("pod %d does not reach its gateway or the other pod", i)
		}
		if got, want := gatewayMAC(pod), bridgeMAC(l.hosts[i]); got != want {
			t.Errorf(
				"pod %d on node %d resolves its gateway to %s, want its own node's bridge %s (the other node's is %s)",
				i,
				i,
				got,
				want,
				bridgeMAC(l.hosts[1-i]),
			)
		}
	}
}

// TestAgentFreesAddressOfGoneAttachment: a pod whose sandbox vanished without
// a DEL (the runtime crashed; no CNI GC at 1.0.0) leaves its address in etcd.
// The node's agent sees the pod's host veth is gone and frees the address;
// the address of a pod that still runs is kept.
func TestAgentFreesAddressOfGoneAttachment(t *testing.T) {
	l := newLab(t)
	etcd := startEtcd(t)
	h := l.hosts[0]
	agentOptions.Store(strings.Join(etcd, ",")+"|host0", func(o *agent.Options) {
		o.ReclaimInterval, o.ReclaimGrace, o.SyncInterval = 200*time.Millisecond, time.Millisecond, 100*time.Millisecond
		o.AttachmentPresent = func(id, ifName string) (present bool, err error) {
			err = h.Do(
				func(ns.NetNS) error { present, err = AttachmentPresent(id, ifName); return err },
			)
			return present, err
		}
	})
	conf := netConf("1.1.0", 100, "10.100.0.0/24", etcd, "host0")
	keep, gone := newNS(t), newNS(t)
	for id, pod := range map[string]ns.NetNS{"reclaim-keep": keep, "reclaim-gone": gone} {
		cniCall{
			containerID: id,
			netns:       pod.Path(),
			conf:        conf,
			args:        "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=" + id,
		}.add(
			t,
			h,
		)
	}
	// The sandbox goes away with no DEL: its netns, and with it the veth pair.
	if err := gone.Close(); err != nil {
		t.Fatal(err)
	}
	if err := testutils.UnmountNS(gone); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for lookup(t, etcd, "reclaim-gone") {
		if time.Now().After(deadline) {
			t.Fatal("the address of the vanished pod is still reserved after 30 s")
		}
		time.Sleep(100 * time.Millisecond) // the agent frees it in the background
	}
	if !lookup(t, etcd, "reclaim-keep") {
		t.Fatal("the agent freed the address of a pod that still runs")
	}
}

// TestPluginRefusesOwnNetNS: an ADD whose CNI_NETNS is the plugin's own
// network namespace (the host's) is refused with code 4 before an address is
// taken. It used to commit the address, print a result and then fail with code
// 8, leaving the reservation behind.
func TestPluginRefusesOwnNetNS(t *testing.T) {
	l := newLab(t)
	etcd := startEtcd(t)
	h := l.hosts[0]
	c := cniCall{
		cmd:         "ADD",
		containerID: "own-netns",
		netns:       h.Path(),
		conf:        netConf("1.1.0", 100, "10.100.0.0/24", etcd, "host0"),
	}
	out, err := c.run(t, h)
	var cerr *types.Error
	if !errors.As(err, &cerr) || cerr.Code != types.ErrInvalidEnvironmentVariables ||
		!strings.Contains(cerr.Details, "own") {
		t.Fatalf("ADD into the plugin's own netns: got %v (stdout %s), want code 4", err, out)
	}
	if lookup(t, etcd, "own-netns") {
		t.Fatal("the refused ADD left an address reserved")
	}
}
