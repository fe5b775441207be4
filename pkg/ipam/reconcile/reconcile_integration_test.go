//go:build integration

// The reconciler against a real kube-apiserver (envtest, hack/build-kube.sh)
// and a real etcd for the IPAM (apt: etcd-server).
package reconcile_test

import (
	"context"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/pkg/ipam"
	"github.com/berth-dev/berth/pkg/ipam/ipamtest"
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

func TestReconcilerFreesOnlyAddressesOfGonePods(t *testing.T) {
	_, cfg := testenv.StartAPIServer(t)
	kube := kubernetes.NewForConfigOrDie(cfg)
	e := testenv.StartEtcd(t)
	clk := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	alloc, err := ipam.NewEtcd(testenv.NewEtcdClient(t, e), "", ipam.WithClock(clk.Now))
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if err := alloc.CreatePool(ctx, ipamtest.Pool("p", "10.0.0.0/24")); err != nil {
		t.Fatal(err)
	}
	give := func(id string, pod *corev1.Pod, name, uid string) ipam.Allocation {
		h := ipam.Handle{ContainerID: id, IfName: "eth0", PodNamespace: "default", PodName: name, PodUID: uid, Node: "n1"}
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
	pass := func(what string, want ...string) {
		t.Helper()
		rel, err := r.ReconcileOnce(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, a := range rel {
			got = append(got, a.Handle.ContainerID)
		}
		if len(got) != len(want) || (len(want) > 0 && !sameSet(got, want)) {
			t.Fatalf("%s: released %v, want %v", what, got, want)
		}
	}
	pass("fresh allocations")
	clk.Add(2 * time.Minute)
	pass("pods first seen missing: grace period starts")
	clk.Add(30 * time.Second)
	pass("still within the grace period")
	clk.Add(31 * time.Second)
	pass("after the grace period", "c-gone", "c-web-old")
	pass("nothing left to do")
	for id, want := range map[string]bool{"c-alive": true, "c-no-uid": true, "c-web-new": true, "c-gone": false, "c-web-old": false} {
		if _, found, _ := alloc.Lookup(ctx, ipam.Handle{ContainerID: id, IfName: "eth0"}); found != want {
			t.Errorf("%s: allocated=%v, want %v", id, found, want)
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
