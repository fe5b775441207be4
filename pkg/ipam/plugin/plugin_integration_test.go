//go:build integration

// Runs the berth-ipam binary the way a container runtime does (CNI_* env,
// config on stdin) against a real etcd (apt: etcd-server).
package plugin_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/testenv"
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
