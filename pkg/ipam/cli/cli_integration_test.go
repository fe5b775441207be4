//go:build integration

// Drives `cni-vlan ipam ...` against a real etcd (apt: etcd-server).
package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/pkg/ipam"
	"github.com/berth-dev/berth/pkg/ipam/cli"
)

func run(t *testing.T, endpoint string, args ...string) (string, error) {
	t.Helper()
	cmd := cli.NewCommand()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(append([]string{"--etcd-endpoints", endpoint}, args...))
	err := cmd.ExecuteContext(context.Background())
	return out.String(), err
}

func TestCLI(t *testing.T) {
	e := testenv.StartEtcd(t)
	ep := e.ClientURL
	out, err := run(t, ep, "create-pool", "vlan100", "--vlan", "100", "--subnet", "10.100.0.0/28", "--reserved", "10.100.0.2-10.100.0.5")
	if err != nil || !strings.Contains(out, "9 allocatable addresses") {
		t.Fatalf("create-pool: %v\n%s", err, out)
	}
	// Bad pools are refused with a message naming the problem.
	for args, want := range map[string]string{
		"create-pool x --subnet 10.0.0.1/24":             "did you mean 10.0.0.0/24",
		"create-pool x --vlan 5000 --subnet 10.0.0.0/24": "vlan 5000 out of range",
		"create-pool x": "--subnet is required",
		"create-pool x --subnet 10.0.0.0/24 --reserved bogus": "want START-END",
		"create-pool vlan100 --subnet 10.0.0.0/24":            "already exists",
	} {
		if out, err := run(t, ep, strings.Fields(args)...); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: want error containing %q, got %v\n%s", args, want, err, out)
		}
	}

	// A stuck address: its container died without a DEL.
	a, err := ipam.NewEtcd(testenv.NewEtcdClient(t, e), "")
	if err != nil {
		t.Fatal(err)
	}
	stuck, err := a.Allocate(context.Background(), "vlan100", ipam.Handle{ContainerID: "dead", IfName: "eth0", PodNamespace: "ns", PodName: "web", Node: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	out, err = run(t, ep, "pools")
	if err != nil || !strings.Contains(out, "vlan100") || !strings.Contains(out, "10.100.0.0/28") {
		t.Fatalf("pools: %v\n%s", err, out)
	}
	if fields := strings.Fields(strings.Split(out, "\n")[1]); len(fields) != 8 || fields[4] != "9" || fields[5] != "1" || fields[7] != "8" {
		t.Fatalf("pools row: %q", fields)
	}
	out, err = run(t, ep, "list", "vlan100")
	if err != nil || !strings.Contains(out, stuck.IP.Addr().String()) || !strings.Contains(out, "dead") || !strings.Contains(out, "ns/web") {
		t.Fatalf("list: %v\n%s", err, out)
	}
	ip := stuck.IP.Addr().String()
	if _, err := run(t, ep, "release", "vlan100", ip); err == nil || !strings.Contains(err.Error(), "--container-id is required") {
		t.Fatalf("release without --container-id: %v", err)
	}
	if _, err := run(t, ep, "release", "vlan100", ip, "--container-id", "someone-else"); err == nil || !strings.Contains(err.Error(), "belongs to") {
		t.Fatalf("release with the wrong owner: %v", err)
	}
	out, err = run(t, ep, "release", "vlan100", ip, "--container-id", "dead")
	if err != nil || !strings.Contains(out, "released "+ip) {
		t.Fatalf("release: %v\n%s", err, out)
	}
	if _, found, _ := a.Lookup(context.Background(), ipam.Handle{ContainerID: "dead", IfName: "eth0"}); found {
		t.Fatal("the stuck address is still allocated")
	}
	if _, err := run(t, ep, "release", "vlan100", ip, "--container-id", "dead"); err == nil || !strings.Contains(err.Error(), "not allocated") {
		t.Fatalf("second release: %v", err)
	}
	out, err = run(t, ep, "-o", "json", "list")
	var all []ipam.Allocation
	if err != nil || json.Unmarshal([]byte(out), &all) != nil || len(all) != 0 {
		t.Fatalf("list -o json after release: %v %q", err, out)
	}
	if _, err := run(t, ep, "list", "nope"); err == nil || !strings.Contains(err.Error(), "ipam pools") {
		t.Fatalf("list of a missing pool: %v", err)
	}
	if _, err := run(t, ep, "delete-pool", "vlan100"); err != nil {
		t.Fatalf("delete-pool: %v", err)
	}
}

func TestCLIUnreachableEtcd(t *testing.T) {
	_, err := run(t, "http://127.0.0.1:1", "--timeout", "3s", "pools")
	if err == nil || !strings.Contains(err.Error(), "cannot reach etcd") {
		t.Fatalf("want a clear unreachable error, got %v", err)
	}
	cmd := cli.NewCommand()
	cmd.SetArgs([]string{"pools"})
	cmd.SetOut(&bytes.Buffer{})
	cmd.SetErr(&bytes.Buffer{})
	if err := cmd.Execute(); err == nil || !strings.Contains(err.Error(), "etcd.endpoints") {
		t.Fatalf("no endpoints: %v", err)
	}
}
