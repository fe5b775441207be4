//go:build e2e

// Package e2e drives the local cluster (make up) through client-go, the way
// users meet berth: Deployments, Services, logs, exec, events.
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
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/berth-dev/berth/e2e/framework"
)

// TestClusterBasics is the foundation's own check: a Deployment pulled through the
// cluster registry becomes Ready, its logs and exec work, a ClusterIP Service reaches
// it, and deleting it leaves nothing behind.
func TestClusterBasics(t *testing.T) {
	f := framework.New(t, nil)
	ctx := f.Context()
	labels := map[string]string{"app": "echo"}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "echo", Namespace: f.Namespace},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](2),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: "echo", Image: framework.Image("echo"),
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
	pods := f.WaitPodsReady("app=echo", 2, 2*time.Minute)

	// logs: the app's own start line is in kubectl logs
	if logs := f.Logs(pods[0].Name, "echo"); !strings.Contains(logs, "listening on :8080") {
		t.Errorf("logs of %s do not show the server start; got:\n%s", pods[0].Name, logs)
	}
	// exec: a command inside the container sees the pod's hostname
	out, stderr, err := f.Exec(pods[0].Name, "echo", "cat", "/etc/hostname")
	if err != nil || strings.TrimSpace(out) != pods[0].Name {
		t.Errorf("exec cat /etc/hostname in %s = %q (stderr %q, err %v), want the pod name", pods[0].Name, out, stderr, err)
	}

	// ClusterIP Service: both replicas answer through it, to a node
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "echo", Namespace: f.Namespace},
		Spec: corev1.ServiceSpec{
			Selector: labels,
			Ports:    []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}},
		},
	}
	svc, err = f.Client.CoreV1().Services(f.Namespace).Create(ctx, svc, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create service: %v", err)
	}
	seen := map[string]bool{}
	f.WaitFor("both echo pods to answer through ClusterIP "+svc.Spec.ClusterIP, time.Minute,
		func(ctx context.Context) (bool, error) {
			body, err := nodeGet(fmt.Sprintf("http://%s/", svc.Spec.ClusterIP))
			if err != nil {
				return false, err
			}
			seen[strings.TrimSpace(strings.TrimPrefix(body, "hello from "))] = true
			return seen[pods[0].Name] && seen[pods[1].Name], nil
		})
	// and from a pod, through the Service's DNS-free ClusterIP. Eight calls: with two endpoints
	// some are sent back to the caller itself (hairpin), and every call must be answered.
	answered := map[string]bool{}
	for i := 0; i < 8; i++ {
		out, stderr, err = f.Exec(pods[0].Name, "echo", "sh", "-c",
			fmt.Sprintf("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 %s 80", svc.Spec.ClusterIP))
		if err != nil || !strings.Contains(out, "hello from echo-") {
			t.Fatalf("pod -> ClusterIP, call %d: got %q (stderr %q, err %v)", i+1, out, stderr, err)
		}
		answered[strings.TrimSpace(out[strings.Index(out, "hello from ")+len("hello from "):])] = true
	}
	t.Logf("pod -> ClusterIP: 8 of 8 calls answered, by %d pod(s)", len(answered))

	// delete: the pods, endpoints and the Service go away
	foreground := metav1.DeleteOptions{PropagationPolicy: ptr.To(metav1.DeletePropagationForeground)}
	if err := f.Client.AppsV1().Deployments(f.Namespace).Delete(ctx, "echo", foreground); err != nil {
		t.Fatalf("delete deployment: %v", err)
	}
	if err := f.Client.CoreV1().Services(f.Namespace).Delete(ctx, "echo", metav1.DeleteOptions{}); err != nil {
		t.Fatalf("delete service: %v", err)
	}
	f.WaitFor("no pods, deployment, replicasets or endpoints left", 2*time.Minute,
		func(ctx context.Context) (bool, error) {
			pl, err := f.Client.CoreV1().Pods(f.Namespace).List(ctx, metav1.ListOptions{})
			if err != nil || len(pl.Items) > 0 {
				return false, err
			}
			rs, err := f.Client.AppsV1().ReplicaSets(f.Namespace).List(ctx, metav1.ListOptions{})
			if err != nil || len(rs.Items) > 0 {
				return false, err
			}
			_, err = f.Client.CoreV1().Endpoints(f.Namespace).Get(ctx, "echo", metav1.GetOptions{})
			return apierrors.IsNotFound(err), nil
		})
}

// nodeGet GETs url from a node of the cluster (the control-plane node's network namespace, as
// its kubelet or a hostNetwork pod would): a ClusterIP is reachable from the nodes, not from the
// machine outside the cluster the tests run on. curl opens a new connection per call.
func nodeGet(url string) (string, error) {
	node := os.Getenv("BERTH_NODE")
	if node == "" {
		return "", fmt.Errorf("BERTH_NODE is not set: source hack/cluster/env")
	}
	out, err := framework.NodeExec(node, "curl", "-sS", "-f", "-m", "3", url)
	if err != nil {
		return "", err
	}
	return out, nil
}
