//go:build integration

package webhook_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/pkg/webhook"
)

// service creates a Service selecting app=<name>.
func service(t testing.TB, cs kubernetes.Interface, ns, name string) {
	t.Helper()
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.ServiceSpec{
		Selector: map[string]string{"app": name}, Ports: []corev1.ServicePort{{Port: 80}}}}
	if _, err := cs.CoreV1().Services(ns).Create(t.Context(), svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// endpoints writes the EndpointSlice of Service svc with one endpoint per entry of ready, as the
// endpointslice controller does for the Service's pods (envtest runs no controller-manager).
func endpoints(t testing.TB, cs kubernetes.Interface, ns, svc string, ready ...bool) {
	t.Helper()
	s := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: svc + "-abcde",
			Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Port: ptr.To(int32(80))}},
	}
	for i, r := range ready {
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{fmt.Sprintf("10.1.0.%d", i+1)},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(r)},
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: fmt.Sprintf("%s-%d", svc, i)},
		})
	}
	ctx := t.Context()
	old, err := cs.DiscoveryV1().EndpointSlices(ns).Get(ctx, s.Name, metav1.GetOptions{})
	if err == nil {
		old.Endpoints = s.Endpoints
		_, err = cs.DiscoveryV1().EndpointSlices(ns).Update(ctx, old, metav1.UpdateOptions{})
	} else {
		_, err = cs.DiscoveryV1().EndpointSlices(ns).Create(ctx, s, metav1.CreateOptions{})
	}
	if err != nil {
		t.Fatal(err)
	}
}

// afterPod is a pod labelled app=<name> that waits for the Services of after.
func afterPod(name, after string, extra map[string]string) *corev1.Pod {
	annos := map[string]string{webhook.AnnoAfter: after}
	for k, v := range extra {
		annos[k] = v
	}
	p := appPod(name, annos)
	p.Labels["app"] = strings.TrimRight(strings.SplitN(name, "-", 2)[0], "0123456789")
	return p
}

func gated(p *corev1.Pod) bool { return hasGate(p, webhook.GateAfter) }

func hasGate(p *corev1.Pod, gate string) bool {
	for _, g := range p.Spec.SchedulingGates {
		if g.Name == gate {
			return true
		}
	}
	return false
}

// waitEvent waits for an Event of reason on the pod whose note contains every want.
func waitEvent(t testing.TB, cs kubernetes.Interface, ns, pod, reason string, want ...string) string {
	t.Helper()
	var note string
	err := wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, 30*time.Second, true,
		func(ctx context.Context) (bool, error) {
			evs, err := cs.EventsV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "regarding.name=" + pod})
			if err != nil {
				return false, err
			}
		next:
			for _, e := range evs.Items {
				if e.Reason != reason {
					continue
				}
				for _, w := range want {
					if !strings.Contains(e.Note, w) {
						continue next
					}
				}
				note = e.Note
				return true, nil
			}
			return false, nil
		})
	if err != nil {
		t.Fatalf("pod %s/%s: no %s Event containing %q: %v", ns, pod, reason, want, err)
	}
	return note
}

// waitUngated waits until the pod has no berth.dev/after gate.
func waitUngated(t testing.TB, cs kubernetes.Interface, ns, name string) {
	t.Helper()
	err := wait.PollUntilContextTimeout(t.Context(), 50*time.Millisecond, 30*time.Second, true,
		func(ctx context.Context) (bool, error) {
			p, err := cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
			return err == nil && !gated(p), err
		})
	if err != nil {
		t.Fatalf("pod %s/%s keeps its scheduling gate: %v", ns, name, err)
	}
}

func mustCreate(t testing.TB, cs kubernetes.Interface, ns string, p *corev1.Pod) *corev1.Pod {
	t.Helper()
	got, err := cs.CoreV1().Pods(ns).Create(t.Context(), p, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create pod %s: %v", p.Name, err)
	}
	return got
}

func mustBeGated(t testing.TB, cs kubernetes.Interface, ns, name string) {
	t.Helper()
	p, err := cs.CoreV1().Pods(ns).Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !gated(p) {
		t.Fatalf("pod %s/%s lost its gate: %v", ns, name, p.Spec.SchedulingGates)
	}
}

// TestAfterThroughAPIServer: berth.dev/after through a real apiserver, webhook and controller.
func TestAfterThroughAPIServer(t *testing.T) {
	env, cfg := testenv.StartAPIServer(t, func(e *envtest.Environment) {
		e.WebhookInstallOptions = envtest.WebhookInstallOptions{Paths: []string{manifest}}
	})
	cs := kubernetes.NewForConfigOrDie(cfg)
	namespace(t, cs, "berth-system", false)
	namespace(t, cs, "apps", true)
	namespace(t, cs, "team2", true)
	namespace(t, cs, "plain", false)
	startWebhook(t, cfg, runOptions(env))
	waitServing(t, cs, "apps")
	ctx := t.Context()

	t.Run("waits with an Event, then ungated when the Service is ready", func(t *testing.T) {
		service(t, cs, "apps", "db")
		p := mustCreate(t, cs, "apps", afterPod("shop-1", "db", nil))
		if !gated(p) {
			t.Fatalf("want the %s gate, got %v", webhook.GateAfter, p.Spec.SchedulingGates)
		}
		waitEvent(t, cs, "apps", "shop-1", webhook.ReasonAfterWaiting, "apps/db (0/1 ready endpoints)")
		endpoints(t, cs, "apps", "db", false)
		endpoints(t, cs, "apps", "db", true)
		waitUngated(t, cs, "apps", "shop-1")
		waitEvent(t, cs, "apps", "shop-1", webhook.ReasonAfterReady, "apps/db (1/1 ready endpoints)",
			"gate berth.dev/after removed")

		// A fails later: B is not touched (its own probes decide), no gate comes back.
		endpoints(t, cs, "apps", "db", false)
		if p := mustGet(t, cs, "apps", "shop-1"); gated(p) {
			t.Error("the gate came back")
		}
	})
	t.Run("ready at admission: no gate", func(t *testing.T) {
		// db is not ready now (the subtest above ends with it failing). A pod gated now and
		// ungated below shows the webhook's caches (shared with the controller) saw db ready.
		if p := mustCreate(t, cs, "apps", afterPod("shop-2", "db", nil)); !gated(p) {
			t.Fatal("db is not ready, yet the pod got no gate")
		}
		endpoints(t, cs, "apps", "db", true)
		waitUngated(t, cs, "apps", "shop-2")
		if p := mustCreate(t, cs, "apps", afterPod("shop-3", "db", nil)); gated(p) {
			t.Errorf("db is ready at admission, yet the pod got the gate")
		}
	})
	t.Run("scaled to 0 before the gate is removed: keeps waiting", func(t *testing.T) {
		service(t, cs, "apps", "queue")
		mustCreate(t, cs, "apps", afterPod("worker-1", "queue", map[string]string{webhook.AnnoAfterReady: "2"}))
		endpoints(t, cs, "apps", "queue", true, false)
		waitEvent(t, cs, "apps", "worker-1", webhook.ReasonAfterWaiting, "apps/queue (1/2 ready endpoints)")
		endpoints(t, cs, "apps", "queue")
		waitEvent(t, cs, "apps", "worker-1", webhook.ReasonAfterWaiting, "apps/queue (0/2 ready endpoints)")
		mustBeGated(t, cs, "apps", "worker-1")
		endpoints(t, cs, "apps", "queue", true, true)
		waitUngated(t, cs, "apps", "worker-1")
	})
	t.Run("cycle: a Warning on both pods naming it", func(t *testing.T) {
		service(t, cs, "apps", "ping")
		service(t, cs, "apps", "pong")
		mustCreate(t, cs, "apps", afterPod("ping-1", "pong", nil))
		mustCreate(t, cs, "apps", afterPod("pong-1", "ping", nil))
		for _, pod := range []string{"ping-1", "pong-1"} {
			note := waitEvent(t, cs, "apps", pod, webhook.ReasonAfterCycle, "apps/ping", "apps/pong")
			t.Logf("%s: %s", pod, note)
		}
	})
	t.Run("Service deleted: Warning, keeps waiting", func(t *testing.T) {
		service(t, cs, "apps", "cache")
		mustCreate(t, cs, "apps", afterPod("api-1", "cache", nil))
		waitEvent(t, cs, "apps", "api-1", webhook.ReasonAfterWaiting, "apps/cache (0/1")
		if err := cs.CoreV1().Services("apps").Delete(ctx, "cache", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		waitEvent(t, cs, "apps", "api-1", webhook.ReasonAfterMissing, "apps/cache not found")
		endpoints(t, cs, "apps", "cache", true) // a leftover slice of a deleted Service does not count
		waitEvent(t, cs, "apps", "api-1", webhook.ReasonAfterWaiting, "apps/cache (Service not found)")
		mustBeGated(t, cs, "apps", "api-1")
		service(t, cs, "apps", "cache")
		waitUngated(t, cs, "apps", "api-1")
	})
	t.Run("timeout: a Warning, keeps waiting", func(t *testing.T) {
		service(t, cs, "apps", "slow")
		mustCreate(t, cs, "apps", afterPod("late-1", "slow", map[string]string{webhook.AnnoAfterTimeout: "2s"}))
		waitEvent(t, cs, "apps", "late-1", webhook.ReasonAfterTimeout, "still waiting after 2s", "apps/slow (0/1")
		mustBeGated(t, cs, "apps", "late-1")
	})
	t.Run("other namespaces: opted-in only, never kube-system", func(t *testing.T) {
		service(t, cs, "team2", "ledger")
		endpoints(t, cs, "team2", "ledger", true)
		// The webhook answers from its informers: when they have not seen the new slice yet the
		// pod is gated at admission (seen once in CI), and the controller lifts the gate.
		if p := mustCreate(t, cs, "apps", afterPod("pay-1", "team2/ledger", nil)); gated(p) {
			t.Log("gated at admission (the webhook's informer had not seen team2/ledger's endpoints yet)")
		}
		waitUngated(t, cs, "apps", "pay-1")
		for _, ns := range []string{"plain", "kube-system"} {
			_, err := cs.CoreV1().Pods("apps").Create(ctx, afterPod("pay-2", ns+"/x", nil), metav1.CreateOptions{})
			if err == nil || !strings.Contains(err.Error(), `"berth.dev/after"`) || !strings.Contains(err.Error(), ns) {
				t.Errorf("after %s/x: want a denial naming the key and the namespace, got %v", ns, err)
			}
		}
	})
	t.Run("bad value refused with the key and an example", func(t *testing.T) {
		_, err := cs.CoreV1().Pods("apps").Create(ctx, afterPod("bad-1", "db, Not_A_Service", nil),
			metav1.CreateOptions{})
		if err == nil || !strings.Contains(err.Error(), `"berth.dev/after"`) || !strings.Contains(err.Error(), "example") {
			t.Errorf("want a denial naming berth.dev/after with an example, got %v", err)
		}
	})
}

func mustGet(t testing.TB, cs kubernetes.Interface, ns, name string) *corev1.Pod {
	t.Helper()
	p, err := cs.CoreV1().Pods(ns).Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// leaseHolder is the holder of the webhook's leader Lease ("" when there is none).
func leaseHolder(ctx context.Context, cs kubernetes.Interface) string {
	l, err := cs.CoordinationV1().Leases("berth-system").Get(ctx, webhook.LeaseName, metav1.GetOptions{})
	if err != nil || l.Spec.HolderIdentity == nil {
		return ""
	}
	return *l.Spec.HolderIdentity
}

// TestAfterLeaderFailover: two webhook replicas; the leader is stopped while a pod waits, and
// its Service becomes ready while no replica leads. The other replica takes the Lease and
// removes the gate: the gate is the state, in the API, so no pod is lost.
func TestAfterLeaderFailover(t *testing.T) {
	env, cfg := testenv.StartAPIServer(t, func(e *envtest.Environment) {
		e.WebhookInstallOptions = envtest.WebhookInstallOptions{Paths: []string{manifest}}
	})
	cs := kubernetes.NewForConfigOrDie(cfg)
	namespace(t, cs, "berth-system", false)
	namespace(t, cs, "apps", true)
	first := runOptions(env)
	first.LeaderElection = true
	stopFirst := startWebhook(t, cfg, first)
	waitServing(t, cs, "apps")
	var holder1 string
	waitFor(t, "the first replica leads", func(ctx context.Context) bool {
		holder1 = leaseHolder(ctx,
			cs)
		return holder1 != ""
	})

	second := first
	second.Port = testenv.FreePort(t)
	startWebhook(t, cfg, second)

	service(t, cs, "apps", "db")
	mustCreate(t, cs, "apps", afterPod("shop-1", "db", nil))
	waitEvent(t, cs, "apps", "shop-1", webhook.ReasonAfterWaiting, "apps/db (0/1")

	// The leader goes (it releases the Lease, as in a rolling update); the Service becomes
	// ready before anyone leads again. The pod's gate is the only record of its wait.
	stopFirst()
	endpoints(t, cs, "apps", "db", true)
	waitFor(t, "the second replica leads", func(ctx context.Context) bool {
		h := leaseHolder(ctx, cs)
		return h != "" && h != holder1
	})
	waitUngated(t, cs, "apps", "shop-1")
	if got := mustGet(t, cs, "apps", "shop-1"); gated(got) {
		t.Fatal("still gated")
	}
}

func waitFor(t testing.TB, what string, cond func(context.Context) bool) {
	t.Helper()
	err := wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, 60*time.Second, true,
		func(ctx context.Context) (bool, error) {
			return cond(ctx), nil
		})
	if err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}
