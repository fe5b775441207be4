//go:build integration

// Runs the berth-ipam binary the way a container runtime does (CNI_* env,
// config on stdin) against a real etcd (apt: etcd-server).
package plugin_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/pkg/ipam"
	"github.com/berth-dev/berth/pkg/ipam/agent"
	"github.com/berth-dev/berth/pkg/ipam/agentapi"
)

type cniRun struct {
	t    *testing.T
	bin  string
	node string // NODE_NAME of the simulated host (default node-a)
}

type cniOut struct {
	IPs []struct {
		Address string `json:"address"`
		Gateway string `json:"gateway"`
	} `json:"ips"`
	Routes []struct {
		Dst string `json:"dst"`
		GW  string `json:"gw"`
	} `json:"routes"`
	Code    int    `json:"code"`
	Msg     string `json:"msg"`
	Details string `json:"details"`
}

// run invokes one CNI verb; it returns the parsed stdout and whether the plugin exited 0.
func (r cniRun) run(verb, containerID, config string) (cniOut, bool) {
	r.t.Helper()
	cmd := exec.Command(r.bin)
	node := r.node
	if node == "" {
		node = "node-a" // the configs' nodeName
	}
	cmd.Env = append(os.Environ(), "NODE_NAME="+node, "CNI_COMMAND="+verb,
		"CNI_CONTAINERID="+containerID, "CNI_NETNS=/var/run/netns/test",
		"CNI_IFNAME=eth0", "CNI_PATH=/opt/cni/bin",
		"CNI_ARGS=K8S_POD_NAMESPACE=ns;K8S_POD_NAME=web-0;K8S_POD_UID=uid-"+containerID)
	cmd.Stdin = strings.NewReader(config)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var out cniOut
	if stdout.Len() > 0 {
		if jerr := json.Unmarshal(stdout.Bytes(), &out); jerr != nil {
			r.t.Fatalf("%s: stdout is not JSON: %q (stderr %q)", verb, stdout.String(), stderr.String())
		}
	}
	return out, err == nil
}

func netconf(endpoint, ipamExtra string) string {
	return fmt.Sprintf(`{"cniVersion":"1.1.0","name":"testnet","type":"bridge","ipam":{"type":"berth-ipam",
		"etcd":{"endpoints":[%q]},"nodeName":"node-a",`+
		`"poolSpec":{"name":"p","vlan":100,"subnet":"10.9.0.0/29"}%s}}`, endpoint, ipamExtra)
}

func buildPlugin(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "berth-ipam")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/berth-ipam")
	cmd.Dir = testenv.RepoRoot()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build berth-ipam: %v\n%s", err, out)
	}
	return bin
}

func TestPluginVerbs(t *testing.T) {
	e := testenv.StartEtcd(t)
	r := cniRun{t: t, bin: buildPlugin(t)}
	conf := netconf(e.ClientURL, "")

	add, ok := r.run("ADD", "c1", conf)
	if !ok || len(add.IPs) != 1 || !strings.HasPrefix(add.IPs[0].Address, "10.9.0.") ||
		add.IPs[0].Gateway != "10.9.0.1" {
		t.Fatalf("ADD: ok=%v %+v", ok, add)
	}
	if len(add.Routes) != 1 || add.Routes[0].Dst != "0.0.0.0/0" || add.Routes[0].GW != "10.9.0.1" {
		t.Fatalf("ADD routes: %+v", add.Routes)
	}
	again, ok := r.run("ADD", "c1", conf)
	if !ok || again.IPs[0].Address != add.IPs[0].Address {
		t.Fatalf("repeated ADD gave %+v, want %s", again, add.IPs[0].Address)
	}
	withPrev := strings.TrimSuffix(conf, "}") + fmt.Sprintf(`,"prevResult":{"cniVersion":"1.1.0",`+
		`"ips":[{"address":%q}]}}`, add.IPs[0].Address)
	if out, ok := r.run("CHECK", "c1", withPrev); !ok {
		t.Fatalf("CHECK after ADD failed: %+v", out)
	}
	if out, ok := r.run("STATUS", "", conf); !ok {
		t.Fatalf("STATUS failed: %+v", out)
	}
	// GC: c1 is valid, c2 is not.
	if _, ok := r.run("ADD", "c2", conf); !ok {
		t.Fatal("ADD c2 failed")
	}
	gc := strings.TrimSuffix(conf, "}") + `,"cni.dev/valid-attachments":[{"containerID":"c1",` +
		`"ifname":"eth0"}]}`
	if out, ok := r.run("GC", "", gc); !ok {
		t.Fatalf("GC failed: %+v", out)
	}
	if out, ok := r.run("CHECK", "c2", conf); ok ||
		!strings.Contains(out.Msg+out.Details, "no address is reserved") {
		t.Fatalf("CHECK of a garbage-collected container: ok=%v %+v", ok, out)
	}
	for range 2 { // DEL is idempotent
		if out, ok := r.run("DEL", "c1", conf); !ok {
			t.Fatalf("DEL failed: %+v", out)
		}
	}
	if _, ok := r.run("CHECK", "c1", conf); ok {
		t.Fatal("CHECK after DEL succeeded")
	}
}

func TestPluginErrors(t *testing.T) {
	e := testenv.StartEtcd(t)
	r := cniRun{t: t, bin: buildPlugin(t)}
	conf := netconf(e.ClientURL, "")
	// Fill the /29 (5 usable addresses).
	for i := range 5 {
		if out, ok := r.run("ADD", fmt.Sprintf("f%d", i), conf); !ok {
			t.Fatalf("ADD %d: %+v", i, out)
		}
	}
	if out, ok := r.run("ADD", "f5", conf); ok || out.Code != 100 {
		t.Fatalf("ADD into a full pool: want code 100, got ok=%v %+v", ok, out)
	}
	if out, ok := r.run("STATUS", "", conf); ok || out.Code != 50 {
		t.Fatalf("STATUS of a full pool: want code 50, got ok=%v %+v", ok, out)
	}
	dead := netconf(fmt.Sprintf("http://127.0.0.1:%d", testenv.FreePort(t)), `,"timeoutSeconds":2`)
	if out, ok := r.run("STATUS", "", dead); ok || out.Code != 50 {
		t.Fatalf("STATUS with etcd down: want code 50, got ok=%v %+v", ok, out)
	}
	if out, ok := r.run("ADD", "x", dead); ok || out.Code != 11 {
		t.Fatalf("ADD with etcd down: want code 11 (try again later), got ok=%v %+v", ok, out)
	}
	bad := []struct{ name, conf, want string }{
		{"no endpoints", `{"cniVersion":"1.1.0","name":"n","ipam":{"type":"berth-ipam","pool":"p"}}`,
			"etcd.endpoints"},
		{"no pool", fmt.Sprintf(`{"cniVersion":"1.1.0","name":"n","ipam":{"etcd":{"endpoints":[%q]}}}`,
			e.ClientURL), `"pool" is required`},
		{"bad subnet", strings.Replace(conf, "10.9.0.0/29", "10.9.0.3/29", 1), "did you mean 10.9.0.0/29"},
		{"bad fixed", netconf(e.ClientURL, `,"fixedIPStatefulSets":["justaname"]`), "namespace/statefulset"},
		{"pool changed", strings.Replace(conf, `"vlan":100`, `"vlan":200`, 1),
			"differs from the configured one"},
	}
	for _, tc := range bad {
		out, ok := r.run("ADD", "bad", tc.conf)
		if ok || !strings.Contains(out.Msg+" "+out.Details, tc.want) {
			t.Errorf("%s: want an error mentioning %q, got ok=%v %+v", tc.name, tc.want, ok, out)
		}
	}
}

// TestPluginRefusesAnotherNodesName: the same config (nodeName node-a) copied
// to node-b is refused there; GC on node-b used to release node-a's live
// addresses.
func TestPluginRefusesAnotherNodesName(t *testing.T) {
	e := testenv.StartEtcd(t)
	bin := buildPlugin(t)
	conf := netconf(e.ClientURL, "")
	a := cniRun{t: t, bin: bin}
	if _, ok := a.run("ADD", "live-on-a", conf); !ok {
		t.Fatal("ADD on node-a failed")
	}
	b := cniRun{t: t, bin: bin, node: "node-b"}
	for _, verb := range []string{"GC", "ADD"} {
		out, ok := b.run(verb, "on-b", conf)
		if ok || out.Code != 7 || !strings.Contains(out.Details, `leave "nodeName" out`) {
			t.Fatalf("%s on node-b with nodeName node-a: ok=%v %+v, want code 7 saying to leave nodeName out", verb, ok, out)
		}
	}
	if _, ok := a.run("CHECK", "live-on-a", conf); !ok {
		t.Fatal("node-a's address is gone after node-b ran GC with node-a's config")
	}
}

// TestSlimPluginThroughAgent runs the slim build (-tags cniplugin, shipped as
// berth-ipam-plugin) as a runtime does against a real node agent on a real
// etcd: every verb goes through the agent, and the agent's reclaim, which frees
// cni-vlan attachments whose host veth is gone, leaves berth-ipam's alone (its
// main plugin, macvlan or bridge, makes no cni-vlan veth) while it does free a
// gone cni-vlan attachment in the same run.
func TestSlimPluginThroughAgent(t *testing.T) {
	e := testenv.StartEtcd(t)
	bin := buildSlimPlugin(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "ipam.sock")
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{e.ClientURL}, DialTimeout: 2 * time.Second,
		Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	alloc, err := ipam.NewEtcd(cli, "")
	if err != nil {
		t.Fatal(err)
	}
	ag, err := agent.New(alloc, agent.Options{Node: "node-a", Socket: sock, StateDir: dir,
		SyncInterval: 100 * time.Millisecond, ReclaimInterval: 100 * time.Millisecond,
		ReclaimGrace:      time.Millisecond,
		AttachmentPresent: func(string, string) (bool, error) { return false, nil }, // no veth of anyone
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ag.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	conf := `{"cniVersion":"1.1.0","name":"macnet","type":"macvlan","ipam":{"type":"berth-ipam",` +
		`"agentSocket":"` + sock + `","poolSpec":{"name":"p","vlan":100,"subnet":"10.9.0.0/28"}}}`
	r := cniRun{t: t, bin: bin}
	var add cniOut
	deadline := time.Now().Add(10 * time.Second)
	for { // the agent listens once Run has started
		var ok bool
		if add, ok = r.run("ADD", "c1", conf); ok {
			break
		}
		if time.Now().After(deadline) || add.Code != 11 {
			t.Fatalf("ADD through the agent: %+v", add)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(add.IPs) != 1 || !strings.HasPrefix(add.IPs[0].Address, "10.9.0.") {
		t.Fatalf("ADD: %+v", add)
	}
	if again, ok := r.run("ADD", "c1", conf); !ok || again.IPs[0].Address != add.IPs[0].Address {
		t.Fatalf("repeated ADD gave %+v, want %s", again, add.IPs[0].Address)
	}
	withPrev := func(addr string) string {
		return strings.TrimSuffix(conf, "}") + fmt.Sprintf(`,"prevResult":{"cniVersion":"1.1.0",`+
			`"ips":[{"address":%q}]}}`, addr)
	}
	if out, ok := r.run("CHECK", "c1", withPrev(add.IPs[0].Address)); !ok {
		t.Fatalf("CHECK after ADD failed: %+v", out)
	}
	if out, ok := r.run("CHECK", "c1", withPrev("10.9.0.14/28")); ok ||
		!strings.Contains(out.Msg+out.Details, "not in prevResult") {
		t.Fatalf("CHECK with another address in prevResult: ok=%v %+v", ok, out)
	}
	if out, ok := r.run("STATUS", "", conf); !ok {
		t.Fatalf("STATUS failed: %+v", out)
	}
	if out, ok := r.run("ADD", "c2", conf); !ok {
		t.Fatalf("ADD c2 failed: %+v", out)
	}
	gc := strings.TrimSuffix(conf, "}") + `,"cni.dev/valid-attachments":[{"containerID":"c1",` +
		`"ifname":"eth0"}]}`
	if out, ok := r.run("GC", "", gc); !ok {
		t.Fatalf("GC failed: %+v", out)
	}
	if out, ok := r.run("CHECK", "c2", conf); ok || out.Code != int(agent.CodeNoReservation) {
		t.Fatalf("CHECK of a garbage-collected container: ok=%v %+v", ok, out)
	}

	// A cni-vlan attachment (a request without Plugin) on another pool, gone from the node:
	// reclaim frees it, so reclaim runs; c1 must survive the same passes.
	vlanReq := &agentapi.Request{Verb: agentapi.VerbAdd, ContainerID: "v1", IfName: "eth0",
		Network: "vlannet", VLAN: 200,
		IPAM: json.RawMessage(`{"poolSpec":{"name":"q","vlan":200,"subnet":"10.8.0.0/28"}}`),
		Args: "K8S_POD_NAMESPACE=ns;K8S_POD_NAME=v1;K8S_POD_UID=uid-v1"}
	cctx, ccancel := context.WithTimeout(ctx, 20*time.Second)
	defer ccancel()
	if resp, err := agentapi.Call(cctx, sock, vlanReq); agentapi.CNIError(resp, err) != nil {
		t.Fatalf("cni-vlan ADD: %v", agentapi.CNIError(resp, err))
	}
	vlanHandle := ipam.Handle{ContainerID: "v1", IfName: "eth0", Network: "vlannet", Node: "node-a"}
	deadline = time.Now().Add(10 * time.Second)
	for {
		_, found, err := alloc.Lookup(cctx, vlanHandle)
		if err != nil {
			t.Fatal(err)
		}
		if !found {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("reclaim never freed the gone cni-vlan attachment: it does not run, and this test proves nothing")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if out, ok := r.run("CHECK", "c1", withPrev(add.IPs[0].Address)); !ok {
		t.Fatalf("reclaim freed berth-ipam's live attachment c1 (it has no cni-vlan veth): %+v", out)
	}

	for range 2 { // DEL is idempotent
		if out, ok := r.run("DEL", "c1", conf); !ok {
			t.Fatalf("DEL failed: %+v", out)
		}
	}
	if _, ok := r.run("CHECK", "c1", conf); ok {
		t.Fatal("CHECK after DEL succeeded")
	}

	// Without "agentSocket" the slim build cannot work: it says what to do and allocates nothing.
	direct := netconf(e.ClientURL, "")
	if out, ok := r.run("ADD", "d1", direct); ok || out.Code != 7 ||
		!strings.Contains(out.Msg+out.Details, "agentSocket") {
		t.Fatalf("slim ADD without agentSocket: want code 7 naming agentSocket, got ok=%v %+v", ok, out)
	}
	if out, ok := r.run("ADD", "d1", strings.Replace(conf, sock, "run/berth/ipam.sock", 1)); ok ||
		out.Code != 7 || !strings.Contains(out.Details, "absolute path") {
		t.Fatalf("relative agentSocket: want code 7 saying absolute path, got ok=%v %+v", ok, out)
	}
}

func buildSlimPlugin(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "berth-ipam-plugin")
	cmd := exec.Command("go", "build", "-tags", "cniplugin", "-o", bin, "./cmd/berth-ipam")
	cmd.Dir = testenv.RepoRoot()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the slim berth-ipam: %v\n%s", err, out)
	}
	list := exec.Command("go", "list", "-tags", "cniplugin", "-deps", "./cmd/berth-ipam")
	list.Dir = testenv.RepoRoot()
	deps, err := list.Output()
	if err != nil {
		t.Fatalf("go list the slim berth-ipam's packages: %v", err)
	}
	for _, pkg := range strings.Fields(string(deps)) {
		if strings.HasPrefix(pkg, "go.etcd.io/") || strings.HasPrefix(pkg, "google.golang.org/grpc") ||
			pkg == "net/http" {
			t.Errorf("the slim berth-ipam links %s: every pod's ADD would pay its start-up", pkg)
		}
	}
	return bin
}
