//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/berth-dev/berth/e2e/framework"
)

// ipamEtcd stops (SIGSTOP: the process keeps its sockets and answers nothing, as a hung or
// partitioned etcd does) or resumes the local cluster's IPAM etcd on the control-plane node.
func ipamEtcd(t *testing.T, signal string) {
	t.Helper()
	out, err := framework.NodeExec(controlPlaneNode(t), "pkill", "-"+signal, "-f", "etcd --name berth-ipam")
	if err != nil {
		t.Fatalf("pkill -%s the IPAM etcd: %v %s", signal, err, out)
	}
}

// TestIPAMEtcdOutage: the IPAM's etcd stops answering for 30 s while a Deployment is scaled up
// and down. Pods start from the addresses each node's agent holds and stop without waiting for
// etcd; once etcd is back, the pool holds exactly the running pods' addresses, each once.
func TestIPAMEtcdOutage(t *testing.T) {
	f := framework.New(t, nil)
	f.RequireBerth("cni")
	if os.Getenv("BERTH_IPAM_ETCD_PORT") == "" {
		t.Skip("BERTH_IPAM_ETCD_PORT unset: this cluster's IPAM shares the API server's etcd (source hack/cluster/env)")
	}
	nodes := f.ReadyNodes(3)
	pool, _ := vlanPool(f)
	labels := map[string]string{"app": "outage"}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "outage"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(int32(len(nodes))),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{
				TerminationGracePeriodSeconds: ptr.To[int64](0),
				// one pod per node per round: each node's buffer serves its share
				TopologySpreadConstraints: []corev1.TopologySpreadConstraint{{MaxSkew: 1,
					TopologyKey: "kubernetes.io/hostname", WhenUnsatisfiable: corev1.DoNotSchedule,
					LabelSelector: &metav1.LabelSelector{MatchLabels: labels}}},
				Containers: []corev1.Container{{Name: "echo", Image: framework.Image("echo")}},
			}},
		},
	}
	ctx := f.Context()
	if _, err := f.Client.AppsV1().Deployments(f.Namespace).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	f.WaitPodsReady("app=outage", len(nodes), 3*time.Minute)

	ipamEtcd(t, "STOP")
	stopped := time.Now()
	t.Cleanup(func() { ipamEtcd(t, "CONT") })
	scale := func(n int32) {
		t.Helper()
		s, err := f.Client.AppsV1().Deployments(f.Namespace).GetScale(ctx, "outage", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		s.Spec.Replicas = n
		if _, err := f.Client.AppsV1().Deployments(f.Namespace).UpdateScale(ctx, "outage", s,
			metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// Up: two more pods per node, from the nodes' buffers (4 addresses each by default).
	up := int32(3 * len(nodes))
	scale(up)
	f.WaitPodsReady("app=outage", int(up), 3*time.Minute)
	t.Logf("%d pods Running %v into the IPAM etcd's outage", up, time.Since(stopped).Round(time.Second))
	// Down: the deletes finish without etcd.
	scale(1)
	f.WaitFor("the Deployment to be down to 1 pod", 2*time.Minute, func(ctx context.Context) (bool, error) {
		ps, err := f.Client.CoreV1().Pods(f.Namespace).List(ctx, metav1.ListOptions{LabelSelector: "app=outage"})
		return err == nil && len(ps.Items) == 1, err
	})
	t.Logf("scaled down to 1 pod (the others' DEL done) %v into the outage", time.Since(stopped).Round(time.Second))
	if rest := 30*time.Second - time.Since(stopped); rest > 0 {
		time.Sleep(rest) // the outage lasts 30 s whatever the pace of the cluster
	}
	ipamEtcd(t, "CONT")
	resumed := time.Now()

	// After: the pool holds exactly the running pods' addresses.
	var want, got []string
	f.WaitFor("the pool to match the running pods", 3*time.Minute, func(ctx context.Context) (bool, error) {
		ps, err := f.Client.CoreV1().Pods(f.Namespace).List(ctx, metav1.ListOptions{LabelSelector: "app=outage"})
		if err != nil {
			return false, err
		}
		want = want[:0]
		for _, p := range ps.Items {
			if p.Status.PodIP == "" {
				return false, nil
			}
			want = append(want, p.Status.PodIP+" "+f.Namespace+"/"+p.Name)
		}
		got = got[:0]
		for ip, holder := range ipamHolders(f, pool) {
			if strings.HasPrefix(holder, f.Namespace+"/") {
				got = append(got, ip+" "+holder)
			}
		}
		sort.Strings(want)
		sort.Strings(got)
		return fmt.Sprint(want) == fmt.Sprint(got), nil
	})
	t.Logf("%v after etcd answered again the pool holds exactly the running pods: %v",
		time.Since(resumed).Round(time.Second), got)
	ips := map[string]bool{}
	for _, w := range want {
		ip := strings.Fields(w)[0]
		if ips[ip] {
			t.Errorf("address %s given to two running pods: %v", ip, want)
		}
		ips[ip] = true
	}
}
