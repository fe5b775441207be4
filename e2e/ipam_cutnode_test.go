//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/berth-dev/berth/e2e/framework"
)

// TestMultiNodeIPAMCutNode: a node is cut off and its pods force-deleted, as an admin does to
// get them replaced. Their containers may still run on the cut node with their addresses, so
// the IPAM keeps those addresses, through reconciler passes, for as long as the Node exists;
// once the Node object is deleted (the admin's word that the machine is gone) they return to
// the pool. The node, reconnected, registers again and runs pods.
func TestMultiNodeIPAMCutNode(t *testing.T) {
	f := framework.New(t, nil)
	f.RequireBerth("cni")
	pool, _ := vlanPool(f)
	node, _ := twoWorkers(t, f)
	const n = 3
	for i := 0; i < n; i++ {
		p := echoPodOn(fmt.Sprintf("stranded-%d", i), node, map[string]string{"e2e": "stranded"})
		if _, err := f.Client.CoreV1().Pods(f.Namespace).Create(f.Context(), p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	pods := f.WaitPodsReady("e2e=stranded", n, 3*time.Minute)
	owner := map[string]string{} // address -> namespace/pod
	for _, p := range pods {
		owner[p.Status.PodIP] = f.Namespace + "/" + p.Name
	}

	f.FailNode(t, node, "cut")
	// The node comes back as a new Node object (its kubelet registers again) without the
	// labels install-berth.sh gave it.
	t.Cleanup(func() {
		_, _ = f.Client.CoreV1().Nodes().Patch(context.Background(), node, types.MergePatchType,
			[]byte(`{"metadata":{"labels":{"berth.dev/glusterd":"true"}}}`), metav1.PatchOptions{})
	})
	for _, p := range pods {
		if err := f.Client.CoreV1().Pods(f.Namespace).Delete(f.Context(), p.Name,
			metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}); err != nil {
			t.Fatal(err)
		}
	}
	cut := time.Now()
	// Past the reconciler's grace period and two more of its passes (the local cluster runs it
	// with --grace-period=1m --interval=1m), the addresses are still held.
	for time.Since(cut) < 190*time.Second {
		held := ipamHolders(f, pool)
		for ip, who := range owner {
			if held[ip] != who {
				t.Fatalf("%v after the force-delete, %s (still in use on cut-off %s) is held by %q, want %s",
					time.Since(cut).Round(time.Second), ip, node, held[ip], who)
			}
		}
		time.Sleep(10 * time.Second)
	}
	t.Logf("%d addresses of force-deleted pods on cut-off %s kept for %v", n, node, time.Since(cut).Round(time.Second))

	if err := f.Client.CoreV1().Nodes().Delete(f.Context(), node, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	deleted := time.Now()
	f.WaitFor("the deleted node's addresses back in the pool", 5*time.Minute, func(context.Context) (bool, error) {
		held := ipamHolders(f, pool)
		for ip, who := range owner {
			if held[ip] == who {
				return false, nil
			}
		}
		return true, nil
	})
	t.Logf("%v after the Node was deleted, its pods' addresses are back in the pool",
		time.Since(deleted).Round(time.Second))

	// Reconnected, the machine registers again when its kubelet starts (a kubelet whose Node
	// was deleted under it does not re-register by itself): restart it, as an admin would.
	if out, err := framework.NodeCommand("heal", node); err != nil {
		t.Fatalf("heal %s: %v %s", node, err, out)
	}
	if out, err := framework.NodeExec(node, "pkill", "-x", "kubelet"); err != nil {
		t.Fatalf("restarting the kubelet of %s: %v %s", node, err, out)
	}
	f.RestoreNode(t, node, "heal")
	if _, err := f.Client.CoreV1().Nodes().Patch(f.Context(), node, types.MergePatchType,
		[]byte(`{"metadata":{"labels":{"berth.dev/glusterd":"true"}}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	back := echoPodOn("back", node, map[string]string{"e2e": "back"})
	if _, err := f.Client.CoreV1().Pods(f.Namespace).Create(f.Context(), back, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	f.WaitPodsReady("e2e=back", 1, 3*time.Minute)
}
