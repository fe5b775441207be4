package framework

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The local cluster's node control (hack/cluster/node.sh): tests that fail a node call these and
// restore the node in a cleanup, so a failing test never leaves the next one a broken cluster.

// NodeCommand runs hack/cluster/node.sh with args (stop, start, freeze, thaw, cut, heal, exec)
// and returns its combined output.
func NodeCommand(args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(RepoRoot(), "hack", "cluster", "node.sh"), args...)
	cmd.Env = os.Environ()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("node.sh %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// NodeExec runs cmd inside a node's namespaces (network, mounts, processes) and returns its
// combined output.
func NodeExec(node string, cmd ...string) (string, error) {
	return NodeCommand(append([]string{"exec", node, "--"}, cmd...)...)
}

// ReadyNodes returns the names of the Ready nodes, sorted; the test fails when fewer than min.
func (f *Framework) ReadyNodes(min int) []string {
	f.T.Helper()
	nodes, err := f.Client.CoreV1().Nodes().List(f.Context(), metav1.ListOptions{})
	if err != nil {
		f.T.Fatalf("list nodes: %v", err)
	}
	var ready []string
	for _, n := range nodes.Items {
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue && !n.Spec.Unschedulable {
				ready = append(ready, n.Name)
			}
		}
	}
	sort.Strings(ready)
	if len(ready) < min {
		f.T.Fatalf("this test needs %d Ready nodes, the cluster has %v: bring it up with `make up NODES=%d`", min, ready, min)
	}
	return ready
}

// FailNode applies a failure (stop, freeze or cut) to a node and registers its undo (start,
// thaw or heal) as a cleanup that also waits until the node is Ready again.
func (f *Framework) FailNode(t testing.TB, node, how string) {
	t.Helper()
	undo := map[string]string{"stop": "start", "freeze": "thaw", "cut": "heal"}[how]
	if undo == "" {
		t.Fatalf("FailNode %s: want stop, freeze or cut", how)
	}
	t.Cleanup(func() { f.RestoreNode(t, node, undo) })
	if out, err := NodeCommand(how, node); err != nil {
		t.Fatalf("%v", err)
	} else {
		t.Logf("%s", strings.TrimSpace(out))
	}
}

// RestoreNode undoes a failure (start, thaw or heal; idempotent) and waits until the node is
// Ready and every DaemonSet pod on it is Ready again.
func (f *Framework) RestoreNode(t testing.TB, node, how string) {
	t.Helper()
	if out, err := NodeCommand(how, node); err != nil {
		t.Errorf("%v", err)
		return
	} else {
		t.Logf("%s", strings.TrimSpace(out))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	for {
		if f.nodeHealthy(ctx, node) {
			return
		}
		select {
		case <-ctx.Done():
			t.Errorf("node %s not Ready with its DaemonSet pods 4 min after %s", node, how)
			return
		case <-time.After(time.Second):
		}
	}
}

func (f *Framework) nodeHealthy(ctx context.Context, node string) bool {
	n, err := f.Client.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if err != nil {
		return false
	}
	if !NodeReady(n) {
		return false
	}
	pods, err := f.Client.CoreV1().Pods("berth-system").List(ctx,
		metav1.ListOptions{FieldSelector: "spec.nodeName=" + node})
	if err != nil {
		return false
	}
	for i := range pods.Items {
		p := &pods.Items[i]
		if len(p.OwnerReferences) > 0 && p.OwnerReferences[0].Kind == "DaemonSet" && !PodReady(p) {
			return false
		}
	}
	return true
}

// NodeReady reports whether the node's Ready condition is True.
func NodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
