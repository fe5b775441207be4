//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/berth-dev/berth/e2e/framework"
)

// controlPlaneNode is the node the local cluster's API server runs on: stopping it stops the
// cluster, so the failure tests stop another one.
func controlPlaneNode(t *testing.T) string {
	t.Helper()
	n := os.Getenv("BERTH_NODE")
	if n == "" {
		t.Fatal("BERTH_NODE (the control-plane node) is not set: source hack/cluster/env (make test-e2e does)")
	}
	return n
}

// victim picks, among the nodes that run the pods, one that is not the control-plane node.
func victim(t *testing.T, pods []corev1.Pod) string {
	t.Helper()
	on := map[string]bool{}
	for _, p := range pods {
		on[p.Spec.NodeName] = true
	}
	if len(on) < 2 {
		t.Fatalf("the %d pods all run on %v: want them spread over two nodes", len(pods), on)
	}
	for _, p := range pods {
		if p.Spec.NodeName != controlPlaneNode(t) {
			return p.Spec.NodeName
		}
	}
	t.Fatalf("every pod runs on the control-plane node %s", controlPlaneNode(t))
	return ""
}

// TestNodeFailureWebhook: the webhook's two replicas run on two nodes; with the node of one
// stopped, an opted-in namespace still gets its pods created, and every one of them injected.
func TestNodeFailureWebhook(t *testing.T) {
	f := framework.New(t, optIn)
	f.ReadyNodes(3)
	webhookUp(t, f)
	ctx := f.Context()
	ws, err := f.Client.CoreV1().Pods("berth-system").List(ctx, metav1.ListOptions{LabelSelector: "app=berth-webhook"})
	if err != nil {
		t.Fatal(err)
	}
	node := victim(t, ws.Items)
	f.FailNode(t, node, "stop")

	labels := map[string]string{"app": "after-node-loss", "berth.dev/inject": "enabled"}
	tmpl := hookappPod("x", map[string]string{"berth.dev/prestart": "inline:echo prepared"})
	tmpl.Spec.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{
		RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{
			NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{{
				Key: "kubernetes.io/hostname", Operator: corev1.NodeSelectorOpNotIn, Values: []string{node}}}}}}}}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "after-node-loss"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(int32(4)),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels, Annotations: tmpl.Annotations},
				Spec:       tmpl.Spec,
			},
		},
	}
	if _, err := f.Client.AppsV1().Deployments(f.Namespace).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The ReplicaSet controller retries a pod whose admission called the dead replica (until
	// the EndpointSlice drops it): all 4 pods come, none uninjected.
	pods := f.WaitPodsReady("app=after-node-loss", 4, 4*time.Minute)
	for _, p := range pods {
		if p.Annotations["berth.dev/status"] == "" {
			t.Errorf("pod %s was created without injection while a webhook replica was down", p.Name)
		}
	}
	all, err := f.Client.CoreV1().Pods(f.Namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range all.Items {
		if p.Annotations["berth.dev/status"] == "" {
			t.Errorf("pod %s exists uninjected", p.Name)
		}
	}
}

// TestNodeFailureDemo: the demo shop with replicas on two nodes; the node of one replica loses
// power. The Service keeps answering (a client retries a connection that hit the dead endpoint,
// as any HTTP client does), a replacement runs on another node with the same shared data, and
// the node, started again, rejoins without a manual step.
func TestNodeFailureDemo(t *testing.T) {
	f := framework.New(t, optIn)
	f.RequireBerth("cni", "p2p", "csi", "scheduler", "webhook")
	nodes := f.ReadyNodes(3)
	deployDemo(f)
	pods := f.WaitPodsReady("app=shop", 2, 4*time.Minute)
	node := victim(t, pods)
	mustExec(f, pods[0].Name, "sh", "-c", "echo survives > /data/before-node-loss")
	var lost string
	for _, p := range pods {
		if p.Spec.NodeName == node {
			lost = p.Name
		}
	}
	// the client runs on a node that stays up
	clientNode := nodes[0]
	for _, n := range nodes {
		if n != node && n != controlPlaneNode(t) {
			clientNode = n
		}
	}
	if _, err := f.Client.CoreV1().Pods(f.Namespace).Create(f.Context(),
		echoPodOn("client", clientNode, nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	f.WaitPodsReady("app!=shop", 1, 2*time.Minute)
	visitOnce := func() error {
		var last error
		for try := 0; try < 6; try++ {
			out, stderr, err := f.Exec("client", "echo", "timeout", "3", "wget", "-q", "-O-", "http://shop/")
			if err == nil && strings.HasPrefix(out, "shop ") {
				return nil
			}
			last = fmt.Errorf("%v %s %q", err, stderr, out)
		}
		return last
	}
	if err := visitOnce(); err != nil {
		t.Fatalf("the Service does not answer before the failure: %v", err)
	}

	f.FailNode(t, node, "stop")
	stopped := time.Now()
	var replacement string
	f.WaitFor("a replacement shop pod Ready on another node", 4*time.Minute, func(ctx context.Context) (bool, error) {
		if err := visitOnce(); err != nil {
			return false, fmt.Errorf("the Service stopped answering %s after %s was stopped: %v",
				time.Since(stopped).Round(time.Second), node, err)
		}
		l, err := f.Client.CoreV1().Pods(f.Namespace).List(ctx, metav1.ListOptions{LabelSelector: "app=shop"})
		if err != nil {
			return false, nil
		}
		for i := range l.Items {
			p := &l.Items[i]
			if p.Name != lost && p.Spec.NodeName != node && p.Spec.NodeName != "" && framework.PodReady(p) &&
				p.Name != pods[0].Name && p.Name != pods[1].Name {
				replacement = p.Name
				return true, nil
			}
		}
		return false, nil
	})
	t.Logf("replacement %s Ready %s after %s was stopped", replacement, time.Since(stopped).Round(time.Second), node)
	if out := mustExec(f, replacement, "cat", "/data/before-node-loss"); strings.TrimSpace(out) != "survives" {
		t.Errorf("the replacement reads %q from the shared volume", out)
	}

	f.RestoreNode(t, node, "start")
	f.WaitFor("the lost pod's object gone once its node is back", 3*time.Minute, func(ctx context.Context) (bool, error) {
		_, err := f.Client.CoreV1().Pods(f.Namespace).Get(ctx, lost, metav1.GetOptions{})
		return err != nil, nil
	})
	if err := visitOnce(); err != nil {
		t.Errorf("the Service after %s rejoined: %v", node, err)
	}
}
