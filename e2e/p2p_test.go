//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/utils/ptr"

	"github.com/berth-dev/berth/e2e/framework"
)

// TestP2PMirror: with manifests/p2p installed, a Deployment whose image no
// node has yet comes through the node's p2p-puller (its metrics count the
// blobs), and its pods run.
//
// The image is the echo test image plus one fresh random layer, pushed to the
// cluster registry as ghcr.io/berth-dev/p2p-e2e:<random>, so containerd must
// fetch at least that layer (BERTH_REGISTRY_PORT, default 15000, is where the
// cluster registry listens on this machine).
func TestP2PMirror(t *testing.T) {
	f := framework.New(t, nil)
	ctx := f.Context()
	pullers, err := f.Client.CoreV1().Pods("berth-system").List(ctx,
		metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=p2p-puller"})
	if err != nil || len(pullers.Items) == 0 {
		t.Fatalf("no p2p-puller pods in berth-system (err %v): install manifests/p2p "+
			"(kubectl apply -k manifests/p2p, see docs/p2p.md)", err)
	}
	for _, p := range pullers.Items {
		if !framework.PodReady(&p) {
			t.Fatalf("p2p-puller pod %s on %s is not Ready", p.Name, p.Spec.NodeName)
		}
	}
	registry := os.Getenv("BERTH_REGISTRY") // host:port of the cluster's registry (hack/cluster/env)
	if registry == "" {
		t.Fatal("BERTH_REGISTRY is not set: source hack/cluster/env (make test-e2e does)")
	}
	tag := rand.String(8)
	layerBytes := int64(8 << 20)
	pushImage(t, registry, tag, layerBytes)

	before := map[string]float64{}
	for _, p := range pullers.Items {
		before[p.Spec.NodeName] = pullerMetric(t, p.Status.PodIP, "berth_p2p_blob_requests_total")
	}
	labels := map[string]string{"app": "p2p-e2e"}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "p2p-e2e", Namespace: f.Namespace},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](2),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: "echo", Image: "ghcr.io/berth-dev/p2p-e2e:" + tag,
					Ports: []corev1.ContainerPort{{ContainerPort: 8080}},
					ReadinessProbe: &corev1.Probe{
						ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
							Path: "/", Port: intstr.FromInt32(8080)}},
						PeriodSeconds: 1,
					},
				}}},
			},
		},
	}
	if _, err := f.Client.AppsV1().Deployments(f.Namespace).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create deployment: %v", err)
	}
	pods := f.WaitPodsReady("app=p2p-e2e", 2, 3*time.Minute)
	for _, pod := range pods {
		var puller *corev1.Pod
		for i := range pullers.Items {
			if pullers.Items[i].Spec.NodeName == pod.Spec.NodeName {
				puller = &pullers.Items[i]
			}
		}
		if puller == nil {
			t.Fatalf("no p2p-puller on node %s where pod %s runs", pod.Spec.NodeName, pod.Name)
		}
		after := pullerMetric(t, puller.Status.PodIP, "berth_p2p_blob_requests_total")
		if after <= before[pod.Spec.NodeName] {
			t.Errorf("p2p-puller on %s served no blob (berth_p2p_blob_requests_total %v -> %v): "+
				"containerd did not use the mirror; "+
				"run `kubectl -n berth-system exec %s -- p2p-puller check-hosts ...` (docs/p2p.md)",
				pod.Spec.NodeName, before[pod.Spec.NodeName], after, puller.Name)
		}
	}
}

// pushImage pushes echo + one random layer as berth-dev/p2p-e2e:tag.
func pushImage(t *testing.T, registry, tag string, layerBytes int64) {
	t.Helper()
	base, err := name.ParseReference(registry+"/berth-dev/echo:"+framework.Version(), name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(base)
	if err != nil {
		t.Fatalf("echo image not in the cluster registry %s (make images): %v", registry, err)
	}
	layer, err := random.Layer(layerBytes, types.DockerLayer)
	if err != nil {
		t.Fatal(err)
	}
	if img, err = mutate.AppendLayers(img, layer); err != nil {
		t.Fatal(err)
	}
	dst, err := name.ParseReference(registry+"/berth-dev/p2p-e2e:"+tag, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(dst, img); err != nil {
		t.Fatalf("push %s: %v", dst, err)
	}
}

// pullerMetric reads one counter (summed over labels) from a p2p-puller's
// /metrics on its host network port 5003; metric may name some labels too
// (`berth_p2p_bytes_total{source="upstream"`).
func pullerMetric(t *testing.T, ip, metric string) float64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://%s:5003/metrics", ip), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("p2p-puller metrics at %s:5003: %v", ip, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	sum := 0.0
	for _, line := range strings.Split(string(b), "\n") {
		rest, ok := strings.CutPrefix(line, metric)
		if !ok || rest == "" || !strings.ContainsRune("{ },", rune(rest[0])) {
			continue
		}
		fields := strings.Fields(line)
		v, err := strconv.ParseFloat(fields[len(fields)-1], 64)
		if err == nil {
			sum += v
		}
	}
	return sum
}
