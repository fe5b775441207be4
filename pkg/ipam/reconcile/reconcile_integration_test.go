//go:build integration

// The reconciler against a real kube-apiserver (envtest, hack/build-kube.sh)
// and a real etcd for the IPAM (apt: etcd-server).
package reconcile_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/berth-dev/berth/cmd/cni-vlan/app"
	"github.com/berth-dev/berth/internal/ipamtest"
	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/pkg/ipam"
	"github.com/berth-dev/berth/pkg/ipam/reconcile"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func createPod(t *testing.T, kube kubernetes.Interface, name string) *corev1.Pod {
	t.Helper()
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}
	p, err := kube.CoreV1().Pods("default").Create(context.Background(), p, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// clockedEnv starts a real apiserver and etcd and returns a client and an allocator on a
// test clock (grace periods pass by moving it).
func clockedEnv(t *testing.T) (kubernetes.Interface, *ipam.EtcdAllocator, *clock) {
	t.Helper()
	_, cfg := testenv.StartAPIServer(t)
	e := testenv.StartEtcd(t)
	clk := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	alloc, err := ipam.NewEtcd(testenv.NewEtcdClient(t, e), "", ipam.WithClock(clk.Now))
	if err != nil {
		t.Fatal(err)
	}
	return kubernetes.NewForConfigOrDie(cfg), alloc, clk
}

func TestReconcilerFreesOnlyAddressesOfGonePods(t *testing.T) {
	kube, alloc, clk := clockedEnv(t)
	ctx := t.Context()
	if err := alloc.CreatePool(ctx, ipamtest.Pool("p", "10.0.0.0/24")); err != nil {
		t.Fatal(err)
	}
	give := func(id string, pod *corev1.Pod, name, uid string) ipam.Allocation {
		h := ipam.Handle{ContainerID: id, IfName: "eth0", PodNamespace: "default", PodName: name,
			PodUID: uid, Node: "n1"}
		if pod != nil {
			h.PodName, h.PodUID = pod.Name, string(pod.UID)
		}
		a, err := alloc.Allocate(ctx, "p", h)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	alive := createPod(t, kube, "alive")
	give("c-alive", alive, "", "")
	give("c-gone", nil, "gone", "00000000-dead-beef-0000-000000000000")
	give("c-no-uid", nil, "gone", "") // no K8S_POD_UID: not ours to judge
	old := createPod(t, kube, "web-0")
	give("c-web-old", old, "", "")
	if err := kube.CoreV1().Pods("default").Delete(ctx, "web-0", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	recreated := createPod(t, kube, "web-0") // same name, new UID
	give("c-web-new", recreated, "", "")

	r, err := reconcile.New(alloc, kube, reconcile.Options{GracePeriod: time.Minute, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	if !r.StartInformer(ctx) {
		t.Fatal("informer did not sync")
	}
	pass := passChecker(t, r, func(h ipam.Handle) string { return h.ContainerID })
	pass("fresh allocations")
	clk.Add(2 * time.Minute)
	pass("pods first seen missing: grace period starts")
	clk.Add(30 * time.Second)
	pass("still within the grace period")
	clk.Add(31 * time.Second)
	pass("after the grace period", "c-gone", "c-web-old")
	pass("nothing left to do")
	for id, want := range map[string]bool{"c-alive": true, "c-no-uid": true, "c-web-new": true,
		"c-gone": false, "c-web-old": false} {
		if _, found, _ := alloc.Lookup(ctx, ipam.Handle{ContainerID: id, IfName: "eth0"}); found != want {
			t.Errorf("%s: allocated=%v, want %v", id, found, want)
		}
	}
}

// TestReconcilerKeepsAddressesOnLiveNodes: a pod force-deleted, or on a node
// cut off from the apiserver, keeps running with its address although its pod
// object is gone. The reconciler leaves that address alone for as long as the
// node exists (it used to free it after 5 minutes, and the next pod got the
// same IP: a duplicate on the VLAN); once the Node is deleted, the address and
// the node agent's buffered addresses are freed.
func TestReconcilerKeepsAddressesOnLiveNodes(t *testing.T) {
	kube, alloc, clk := clockedEnv(t)
	ctx := t.Context()
	if err := alloc.CreatePool(ctx, ipamtest.Pool("p", "10.0.0.0/24")); err != nil {
		t.Fatal(err)
	}
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "partitioned"}}
	if _, err := kube.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod := createPod(t, kube, "cut-off")
	h := ipam.Handle{ContainerID: "c-cut-off", IfName: "eth0", PodNamespace: "default",
		PodName: pod.Name, PodUID: string(pod.UID), Node: "partitioned"}
	if _, err := alloc.Allocate(ctx, "p", h); err != nil {
		t.Fatal(err)
	}
	buf := ipam.NewBufferHandle("partitioned", "net")
	if _, err := alloc.Allocate(ctx, "p", buf); err != nil {
		t.Fatal(err)
	}
	zero := int64(0) // force delete, as `kubectl delete --force --grace-period=0` on a partitioned node
	if err := kube.CoreV1().Pods("default").Delete(ctx, pod.Name,
		metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		t.Fatal(err)
	}
	r, err := reconcile.New(alloc, kube, reconcile.Options{GracePeriod: time.Minute, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	if !r.StartInformer(ctx) {
		t.Fatal("informer did not sync")
	}
	pass := passChecker(t, r, func(h ipam.Handle) string { return h.ContainerID })
	clk.Add(2 * time.Minute)
	pass("pod first seen missing")
	for range 10 { // an hour and more: the node still exists, so its pod may still run
		clk.Add(10 * time.Minute)
		pass("pod gone, node still there")
	}
	if err := kube.CoreV1().Nodes().Delete(ctx, "partitioned", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	pass("node gone: the pod's address is freed, the buffer's grace period starts", "c-cut-off")
	clk.Add(2 * time.Minute)
	pass("node gone for the grace period", buf.ContainerID)
}

// TestReconcilerReclaimsFixedIPsOfDeletedStatefulSets: a fixed IP held for a
// StatefulSet pod stays while the StatefulSet exists, and is unpinned and
// freed once the StatefulSet has been gone for the grace period.
func TestReconcilerReclaimsFixedIPsOfDeletedStatefulSets(t *testing.T) {
	kube, alloc, clk := clockedEnv(t)
	ctx := t.Context()
	const ns = "ipam-sts-test"
	if _, err := kube.CoreV1().Namespaces().Create(ctx,
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = kube.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{}) })
	labels := map[string]string{"app": "x"}
	for _, name := range []string{"db", "cache"} {
		sts := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec: appsv1.StatefulSetSpec{
				Selector: &metav1.LabelSelector{MatchLabels: labels},
				Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
					Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}}}
		if _, err := kube.AppsV1().StatefulSets(ns).Create(ctx, sts, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := alloc.CreatePool(ctx, ipamtest.Pool("p", "10.0.0.0/24")); err != nil {
		t.Fatal(err)
	}
	held := map[string]ipam.Allocation{}
	for _, pod := range []string{"db-0", "cache-0"} {
		h := ipam.Handle{ContainerID: "c-" + pod, IfName: "eth0", PodNamespace: ns, PodName: pod,
			PodUID: "uid-" + pod, Fixed: true}
		a, err := alloc.Allocate(ctx, "p", h)
		if err != nil {
			t.Fatal(err)
		}
		if err := alloc.Release(ctx, h); err != nil { // the pod is deleted: its address is held
			t.Fatal(err)
		}
		held[pod] = a
	}
	r, err := reconcile.New(alloc, kube, reconcile.Options{GracePeriod: time.Minute, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	if !r.StartInformer(ctx) {
		t.Fatal("informer did not sync")
	}
	pass := passChecker(t, r, func(h ipam.Handle) string { return h.PodName })
	pass("both StatefulSets exist")
	if err := kube.AppsV1().StatefulSets(ns).Delete(ctx, "db", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	pass("db just deleted: grace period starts")
	clk.Add(30 * time.Second)
	pass("within the grace period")
	clk.Add(31 * time.Second)
	pass("after the grace period", "db-0")
	pins, err := alloc.ListPins(ctx, "p")
	if err != nil {
		t.Fatal(err)
	}
	if len(pins) != 1 || pins[0].Name != "cache-0" {
		t.Fatalf("pins after the reclaim: %+v, want only cache-0's", pins)
	}
	all, err := alloc.ListAllocations(ctx, "p")
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 1 || all[0].IP != held["cache-0"].IP || !all[0].Held() {
		t.Fatalf("allocations after the reclaim: %+v, want only cache-0's held address", all)
	}
	clk.Add(10 * time.Minute)
	pass("cache's StatefulSet still exists")
}

// passChecker returns a check that runs one reconcile pass and fails the test unless it
// released exactly the allocations named want (by the handle field key picks).
func passChecker(t *testing.T, r *reconcile.Reconciler,
	key func(ipam.Handle) string) func(what string, want ...string) {
	return func(what string, want ...string) {
		t.Helper()
		rel, err := r.ReconcileOnce(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, a := range rel {
			got = append(got, key(a.Handle))
		}
		if !sameSet(got, want) {
			t.Fatalf("%s: released %v, want %v", what, got, want)
		}
	}
}

func sameSet(a, b []string) bool {
	m := map[string]int{}
	for _, x := range a {
		m[x]++
	}
	for _, x := range b {
		m[x]--
	}
	for _, v := range m {
		if v != 0 {
			return false
		}
	}
	return true
}

func TestReconcilerRejectsBadOptions(t *testing.T) {
	if _, err := reconcile.New(nil, nil, reconcile.Options{}); err == nil {
		t.Fatal("New without allocator and client must fail")
	}
}

// TestReconcileDaemon runs `cni-vlan reconcile` as a user would (flags, real
// clock) and watches it free a leaked address and report it in /metrics.
func TestReconcileDaemon(t *testing.T) {
	env, cfg := testenv.StartAPIServer(t)
	kube := kubernetes.NewForConfigOrDie(cfg)
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, env.KubeConfig, 0o600); err != nil {
		t.Fatal(err)
	}
	e := testenv.StartEtcd(t)
	alloc, err := ipam.NewEtcd(testenv.NewEtcdClient(t, e), "")
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if err := alloc.CreatePool(ctx, ipamtest.Pool("p", "10.0.0.0/24")); err != nil {
		t.Fatal(err)
	}
	live := createPod(t, kube, "live")
	for _, h := range []ipam.Handle{
		{ContainerID: "live", IfName: "eth0", PodNamespace: "default", PodName: "live", PodUID: string(live.UID)},
		// Its node is gone too (no Node object): only then is a gone pod's address known unused.
		{ContainerID: "leaked", IfName: "eth0", PodNamespace: "default", PodName: "gone",
			PodUID: "11111111-2222-3333-4444-555555555555", Node: "removed-node"},
	} {
		if _, err := alloc.Allocate(ctx, "p", h); err != nil {
			t.Fatal(err)
		}
	}
	probe := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	cmd := app.NewCommand()
	cmd.SetArgs([]string{"reconcile", "--etcd-endpoints", e.ClientURL, "--kubeconfig", kubeconfig,
		"--interval", "200ms",
		"--grace-period", "1s", "--health-probe-bind-address", probe})
	dctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(dctx) }()
	defer func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("reconcile exited with %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("reconcile did not stop within 30s of its context being cancelled")
		}
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, leaked, _ := alloc.Lookup(ctx, ipam.Handle{ContainerID: "leaked", IfName: "eth0"})
		if !leaked {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the leaked address was not released within 30s")
		}
		time.Sleep(200 * time.Millisecond)
	}
	if _, found, _ := alloc.Lookup(ctx, ipam.Handle{ContainerID: "live", IfName: "eth0"}); !found {
		t.Fatal("the live pod's address was released")
	}
	for path, want := range map[string]string{"/readyz": "ok",
		"/metrics": "berth_ipam_reconciler_released_total 1"} {
		resp, err := http.Get("http://" + probe + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(body), want) {
			t.Errorf("%s: want %q in\n%s", path, want, body)
		}
	}
}

// TestLeaderElectedReplicasAreAllReady runs two `cni-vlan reconcile
// --leader-elect` replicas, as the DaemonSet does on a two-node cluster:
// both must report ready (the standby could take over), and exactly one
// holds the Lease and reconciles.
func TestLeaderElectedReplicasAreAllReady(t *testing.T) {
	env, cfg := testenv.StartAPIServer(t)
	kube := kubernetes.NewForConfigOrDie(cfg)
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, env.KubeConfig, 0o600); err != nil {
		t.Fatal(err)
	}
	e := testenv.StartEtcd(t)
	ctx := t.Context()
	probes := map[string]string{}
	var wg sync.WaitGroup
	dctx, cancel := context.WithCancel(ctx)
	defer func() { cancel(); wg.Wait() }()
	for _, id := range []string{"node-a", "node-b"} {
		probes[id] = fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
		cmd := app.NewCommand()
		cmd.SetArgs([]string{"reconcile", "--etcd-endpoints", e.ClientURL, "--kubeconfig", kubeconfig,
			"--leader-elect",
			"--leader-elect-identity", id, "--leader-elect-namespace", "default",
			"--leader-elect-lease-duration", "3s",
			"--health-probe-bind-address", probes[id]})
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := cmd.ExecuteContext(dctx); err != nil {
				t.Errorf("%s: reconcile exited with %v", id, err)
			}
		}()
	}
	get := func(id, path string) (int, string) {
		resp, err := http.Get("http://" + probes[id] + path)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	deadline := time.Now().Add(30 * time.Second)
	for id := range probes {
		for {
			code, body := get(id, "/readyz")
			if code == http.StatusOK {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: /readyz not ready within 30s: %d %s", id, code, body)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	lease, err := kube.CoordinationV1().Leases("default").Get(ctx, "berth-ipam-reconciler", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	holder := ""
	if lease.Spec.HolderIdentity != nil {
		holder = *lease.Spec.HolderIdentity
	}
	if _, ok := probes[holder]; !ok {
		t.Fatalf("Lease holder is %q, want node-a or node-b", holder)
	}
	leaders := 0
	for id := range probes {
		_, body := get(id, "/metrics")
		switch {
		case strings.Contains(body, "\nberth_ipam_reconciler_leader 1"):
			leaders++
			if id != holder {
				t.Errorf("%s reconciles but %s holds the Lease", id, holder)
			}
		case !strings.Contains(body, "\nberth_ipam_reconciler_leader 0"):
			t.Errorf("%s: no berth_ipam_reconciler_leader gauge in /metrics", id)
		}
	}
	if leaders != 1 {
		t.Fatalf("%d replicas reconcile, want exactly 1", leaders)
	}
}
