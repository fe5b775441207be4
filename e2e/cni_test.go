//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/berth-dev/berth/e2e/framework"
)

// TestCNIVLAN: with manifests/cni installed as the cluster's CNI, pods get
// distinct addresses from the global pool, VLAN-mates talk to each other,
// the IPAM shows the reservations (`cni-vlan ipam list`), and deleting a pod
// gives its address back. Isolation from another VLAN is TestMultiNodeNetwork's
// (a host on VLAN 200, in the same subnet, attached by cni-vlan on a real node).
func TestCNIVLAN(t *testing.T) {
	f := framework.New(t, nil)
	ctx := f.Context()
	ds, err := f.Client.AppsV1().DaemonSets("berth-system").Get(ctx, "cni-vlan", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("cni-vlan DaemonSet: %v (apply manifests/cni first)", err)
	}
	f.WaitFor("cni-vlan DaemonSet ready", 3*time.Minute, func(ctx context.Context) (bool, error) {
		ds, err = f.Client.AppsV1().DaemonSets("berth-system").Get(ctx, "cni-vlan", metav1.GetOptions{})
		return err == nil && ds.Status.DesiredNumberScheduled > 0 &&
			ds.Status.NumberReady == ds.Status.DesiredNumberScheduled, nil
	})
	cm, err := f.Client.CoreV1().ConfigMaps("berth-system").Get(ctx, "cni-vlan-config", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("cni-vlan-config: %v", err)
	}
	subnet, err := netip.ParsePrefix(cm.Data["pool-subnet"])
	if err != nil {
		t.Fatalf("pool-subnet %q in cni-vlan-config: %v", cm.Data["pool-subnet"], err)
	}

	for _, name := range []string{"vlan-a", "vlan-b"} {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": "cni-e2e"},
				Annotations: map[string]string{"kubernetes.io/ingress-bandwidth": "50M", "kubernetes.io/egress-bandwidth": "50M"}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{
				Name: "echo", Image: framework.Image("echo"),
				ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{
					TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(8080)}}},
			}}},
		}
		if _, err := f.Client.CoreV1().Pods(f.Namespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create pod %s: %v", name, err)
		}
	}
	pods := f.WaitPodsReady("app=cni-e2e", 2, 3*time.Minute)
	ips := map[string]string{}
	for _, p := range pods {
		a, err := netip.ParseAddr(p.Status.PodIP)
		if err != nil || !subnet.Contains(a) {
			t.Fatalf("pod %s got IP %q, want one from the pool %s", p.Name, p.Status.PodIP, subnet)
		}
		ips[p.Name] = p.Status.PodIP
	}
	if ips["vlan-a"] == ips["vlan-b"] {
		t.Fatalf("both pods got %s", ips["vlan-a"])
	}
	out, stderr, err := f.Exec("vlan-a", "echo", "timeout", "5", "wget", "-q", "-O-",
		fmt.Sprintf("http://%s:8080/", ips["vlan-b"]))
	if err != nil || !strings.Contains(out, "vlan-b") {
		t.Fatalf("vlan-a -> vlan-b (%s): %q %q %v", ips["vlan-b"], out, stderr, err)
	}

	held := func() map[string]bool {
		out, err := framework.Kubectl("-n", "berth-system", "exec", "ds/cni-vlan", "-c", "reconcile", "--",
			"/usr/local/bin/cni-vlan", "ipam", "list", cm.Data["pool"], "-o", "json")
		if err != nil {
			t.Fatalf("cni-vlan ipam list: %v", err)
		}
		var allocs []struct {
			IP string `json:"ip"`
		}
		if err := json.Unmarshal([]byte(out), &allocs); err != nil {
			t.Fatalf("cni-vlan ipam list -o json: %v: %s", err, out)
		}
		m := map[string]bool{}
		for _, a := range allocs {
			m[strings.Split(a.IP, "/")[0]] = true
		}
		return m
	}
	if h := held(); !h[ips["vlan-a"]] || !h[ips["vlan-b"]] {
		t.Fatalf("IPAM does not hold the pods' addresses %v: %v", ips, h)
	}
	if err := f.Client.CoreV1().Pods(f.Namespace).Delete(ctx, "vlan-b", metav1.DeleteOptions{}); err != nil {
		t.Fatalf("delete vlan-b: %v", err)
	}
	f.WaitFor("vlan-b's address released", 2*time.Minute, func(context.Context) (bool, error) {
		return !held()[ips["vlan-b"]], nil
	})
}
