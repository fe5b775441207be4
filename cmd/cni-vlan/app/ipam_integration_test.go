//go:build integration

// Drives `cni-vlan ipam ...` against a real etcd (apt: etcd-server).
package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/berth-dev/berth/cmd/cni-vlan/app"
	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/pkg/ipam"
)

func run(t *testing.T, endpoint string, args ...string) (string, error) {
	t.Helper()
	cmd := app.NewCommand()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(append([]string{"ipam", "--etcd-endpoints", endpoint}, args...))
	err := cmd.ExecuteContext(context.Background())
	return out.String(), err
}

func TestCLI(t *testing.T) {
	t.Setenv("KUBECONFIG", filepath.Join(t.TempDir(), "none")) // no cluster to ask
	e := testenv.StartEtcd(t)
	ep := e.ClientURL
	out, err := run(t, ep, "create-pool", "vlan100", "--vlan", "100", "--subnet", "10.100.0.0/28",
		"--reserved", "10.100.0.2-10.100.0.5")
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
	stuck, err := a.Allocate(context.Background(), "vlan100",
		ipam.Handle{ContainerID: "dead", IfName: "eth0", PodNamespace: "ns", PodName: "web", Node: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	out, err = run(t, ep, "pools")
	if err != nil || !strings.Contains(out, "vlan100") || !strings.Contains(out, "10.100.0.0/28") {
		t.Fatalf("pools: %v\n%s", err, out)
	}
	if fields := strings.Fields(strings.Split(out, "\n")[1]); len(fields) != 8 || fields[4] != "9" ||
		fields[5] != "1" || fields[7] != "8" {
		t.Fatalf("pools row: %q", fields)
	}
	out, err = run(t, ep, "list", "vlan100")
	if err != nil || !strings.Contains(out, stuck.IP.Addr().String()) ||
		!strings.Contains(out, "dead") || !strings.Contains(out, "ns/web") {
		t.Fatalf("list: %v\n%s", err, out)
	}
	ip := stuck.IP.Addr().String()
	if _, err := run(t, ep, "release", "vlan100", ip); err == nil ||
		!strings.Contains(err.Error(), "--container-id is required") {
		t.Fatalf("release without --container-id: %v", err)
	}
	if _, err := run(t, ep, "release", "vlan100", ip, "--container-id", "someone-else"); err == nil ||
		!strings.Contains(err.Error(), "belongs to") {
		t.Fatalf("release with the wrong owner: %v", err)
	}
	if _, err := run(t, ep, "release", "vlan100", ip, "--container-id", "dead"); err == nil ||
		!strings.Contains(err.Error(), "cannot check whether its pod ns/web") ||
		!strings.Contains(err.Error(), "--force") {
		t.Fatalf("release with no cluster to ask: %v, want a refusal naming the pod and --force", err)
	}
	out, err = run(t, ep, "release", "vlan100", ip, "--container-id", "dead", "--force")
	if err != nil || !strings.Contains(out, "released "+ip) {
		t.Fatalf("release: %v\n%s", err, out)
	}
	if _, found, _ := a.Lookup(context.Background(), ipam.Handle{ContainerID: "dead", IfName: "eth0"}); found {
		t.Fatal("the stuck address is still allocated")
	}
	if _, err := run(t, ep, "release", "vlan100", ip, "--container-id", "dead",
		"--force"); err == nil || !strings.Contains(err.Error(), "not allocated") {
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

// TestReleaseChecksThePod: release asks the cluster from $KUBECONFIG (no
// flag) and refuses while the owning pod, by UID, still exists.
func TestReleaseChecksThePod(t *testing.T) {
	env, cfg := testenv.StartAPIServer(t)
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, env.KubeConfig, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("KUBECONFIG", kubeconfig)
	kube := kubernetes.NewForConfigOrDie(cfg)
	ctx := t.Context()
	const ns = "ipam-release-test"
	if _, err := kube.CoreV1().Namespaces().Create(ctx,
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = kube.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{}) })
	newPod := func() *corev1.Pod {
		p, err := kube.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web-0"},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}},
			metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	e := testenv.StartEtcd(t)
	ep := e.ClientURL
	a, err := ipam.NewEtcd(testenv.NewEtcdClient(t, e), "")
	if err != nil {
		t.Fatal(err)
	}
	if err := a.CreatePool(ctx, ipam.Pool{Name: "p", VLAN: 100,
		Subnet: netip.MustParsePrefix("10.9.0.0/28")}); err != nil {
		t.Fatal(err)
	}
	live := newPod()
	al, err := a.Allocate(ctx, "p", ipam.Handle{ContainerID: "c1", IfName: "eth0", PodNamespace: ns,
		PodName: "web-0", PodUID: string(live.UID)})
	if err != nil {
		t.Fatal(err)
	}
	ip := al.IP.Addr().String()
	if _, err := run(t, ep, "release", "p", ip, "--container-id", "c1"); err == nil ||
		!strings.Contains(err.Error(), "still exists") || !strings.Contains(err.Error(), string(live.UID)) {
		t.Fatalf("release while the pod lives: %v, want a refusal naming the pod's UID", err)
	}
	if _, found, _ := a.Lookup(ctx, ipam.Handle{ContainerID: "c1", IfName: "eth0"}); !found {
		t.Fatal("the live pod's address was released")
	}
	// The pod is recreated under the same name: a new UID, so the old owner is gone.
	if err := kube.CoreV1().Pods(ns).Delete(ctx, "web-0", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	recreated := newPod()
	out, err := run(t, ep, "release", "p", ip, "--container-id", "c1")
	if err != nil || !strings.Contains(out, "no longer exists") || !strings.Contains(out, "released "+ip) {
		t.Fatalf("release after the pod was recreated: %v\n%s", err, out)
	}
	// --force skips the check: the recreated pod lives, its address is released anyway.
	al, err = a.Allocate(ctx, "p", ipam.Handle{ContainerID: "c2", IfName: "eth0", PodNamespace: ns,
		PodName: "web-0", PodUID: string(recreated.UID)})
	if err != nil {
		t.Fatal(err)
	}
	if out, err := run(t, ep, "release", "p", al.IP.Addr().String(), "--container-id", "c2",
		"--force"); err != nil || !strings.Contains(out, "released") {
		t.Fatalf("release --force of a live pod's address: %v\n%s", err, out)
	}
}

func TestCLIUnreachableEtcd(t *testing.T) {
	_, err := run(t, "http://127.0.0.1:1", "--timeout", "3s", "pools")
	if err == nil || !strings.Contains(err.Error(), "cannot reach etcd") {
		t.Fatalf("want a clear unreachable error, got %v", err)
	}
	cmd := app.NewCommand()
	cmd.SetArgs([]string{"ipam", "pools"})
	cmd.SetOut(&bytes.Buffer{})
	cmd.SetErr(&bytes.Buffer{})
	if err := cmd.Execute(); err == nil || !strings.Contains(err.Error(), "etcd.endpoints") {
		t.Fatalf("no endpoints: %v", err)
	}
}
