//go:build integration

package peers_test

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/pkg/p2p/peers"
)

// TestKubeDiscovery: against a real kube-apiserver, the peers are the ready
// p2p-puller pods (at their pod IP and the peer port), plus self; a pod that
// turns unready or goes away leaves the set.
func TestKubeDiscovery(t *testing.T) {
	_, cfg := testenv.StartAPIServer(t)
	client := kubernetes.NewForConfigOrDie(cfg)
	ctx := t.Context()
	ns := "berth-system"
	if _, err := client.CoreV1().Namespaces().Create(ctx,
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	mkPod := func(name, node, ip string, ready bool, labels map[string]string) {
		t.Helper()
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels},
			Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "p", Image: "x"}}}}
		created, err := client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		status := corev1.ConditionFalse
		if ready {
			status = corev1.ConditionTrue
		}
		created.Status = corev1.PodStatus{PodIP: ip,
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: status}}}
		if _, err := client.CoreV1().Pods(ns).UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	app := map[string]string{"app.kubernetes.io/name": "p2p-puller"}
	mkPod("p2p-a", "node-a", "10.0.0.1", true, app)
	mkPod("p2p-b", "node-b", "10.0.0.2", true, app)
	mkPod("p2p-c", "node-c", "10.0.0.3", false, app)
	mkPod("other", "node-d", "10.0.0.4", true, map[string]string{"app": "other"})

	self := peers.Peer{Name: "node-a", Addr: "10.0.0.1:5002"}
	k, err := peers.NewKube(client, ns, "app.kubernetes.io/name=p2p-puller", 5002, self)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := peers.NewKube(client, ns, "a in (", 5002, self); err == nil {
		t.Errorf("a bad selector was accepted")
	}
	if err := k.Run(ctx); err != nil {
		t.Fatal(err)
	}
	want := []peers.Peer{self, {Name: "node-b", Addr: "10.0.0.2:5002"}}
	waitPeers(t, k, want)

	if err := client.CoreV1().Pods(ns).Delete(ctx, "p2p-b",
		metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
		t.Fatal(err)
	}
	waitPeers(t, k, []peers.Peer{self})
}

func waitPeers(t *testing.T, k *peers.Kube, want []peers.Peer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	for {
		got := k.Peers()
		if equal(got, want) {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("peers = %v, want %v", got, want)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func equal(a, b []peers.Peer) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
