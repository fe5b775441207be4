//go:build integration

package manifests

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/berth-dev/berth/internal/testenv"
)

// TestSchedulerRunsWithManifestRBAC runs the berth scheduler with the configuration of
// manifests/scheduler (leader election on berth-system/berth-scheduler included) as its
// ServiceAccount, with only the manifests' RBAC, against a real kube-apiserver: it takes its
// lease and binds a pod. A rule missing from the ClusterRole berth-scheduler stalls its
// informers, and the pod stays Pending.
func TestSchedulerRunsWithManifestRBAC(t *testing.T) {
	env, cfg := testenv.StartAPIServer(t)
	admin := kubernetes.NewForConfigOrDie(cfg)
	ctx := t.Context()
	objs := render(t, ".")
	applyRBAC(ctx, t, admin, objs)

	dir := t.TempDir()
	kc := filepath.Join(dir, "kubeconfig")
	testenv.WriteServiceAccountKubeconfig(t, env.KubeConfig, kc, "berth-system", "berth-scheduler")
	config := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(config, []byte(schedulerConfig(t, objs, kc)), 0o600); err != nil {
		t.Fatal(err)
	}
	log := startSchedulerBinary(t, dir, config)

	rl := corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("4"),
		corev1.ResourceMemory: resource.MustParse("8Gi"), corev1.ResourcePods: resource.MustParse("10")}
	node, err := admin.CoreV1().Nodes().Create(ctx, &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "node-1"},
		Status:     corev1.NodeStatus{Capacity: rl, Allocatable: rl},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	node.Spec.Taints = nil // added by TaintNodesByCondition; no kubelet will clear it
	if _, err := admin.CoreV1().Nodes().Update(ctx, node, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.CoreV1().Pods("default").Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "app"},
		Spec: corev1.PodSpec{SchedulerName: "berth-scheduler",
			Containers: []corev1.Container{{Name: "app", Image: "registry.k8s.io/pause:3.10"}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true,
		func(ctx context.Context) (bool, error) {
			p, err := admin.CoreV1().Pods("default").Get(ctx, "app", metav1.GetOptions{})
			return err == nil && p.Spec.NodeName == "node-1", err
		})
	if err != nil {
		t.Fatalf("pod not bound by berth-scheduler with the manifests' RBAC: %v", err)
	}
	lease, err := admin.CoordinationV1().Leases("berth-system").Get(ctx, "berth-scheduler",
		metav1.GetOptions{})
	if err != nil || lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity == "" {
		t.Fatalf("lease berth-system/berth-scheduler has no holder: %v %+v", err, lease)
	}
	// Every informer has synced before the first binding: any refusal is in the log by now.
	b, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, "forbidden") {
			t.Errorf("the scheduler was refused a request: %s", line)
		}
	}
}

// startSchedulerBinary builds cmd/scheduler-plugin and runs it as manifests/scheduler's
// Deployment does (kube-scheduler exits the process when it stops leading, so not in-process),
// and returns the path of its log.
func startSchedulerBinary(t *testing.T, dir, config string) string {
	t.Helper()
	bin := filepath.Join(dir, "scheduler-plugin")
	build := exec.Command("go", "build", "-o", bin, testenv.RepoRoot()+"/cmd/scheduler-plugin")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build cmd/scheduler-plugin: %v\n%s", err, out)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close() // the scheduler binds it next
	log := filepath.Join(dir, "scheduler.log")
	out, err := os.Create(log)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close() // the child holds its own descriptor
	cmd := exec.Command(bin, "--config="+config, "--bind-address=127.0.0.1",
		"--secure-port="+strconv.Itoa(port), "--v=2")
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		if b, _ := os.ReadFile(log); t.Failed() {
			t.Logf("scheduler log:\n%s", b)
		}
	})
	return log
}

// schedulerConfig returns the KubeSchedulerConfiguration of manifests/scheduler's ConfigMap,
// connecting through kubeconfig.
func schedulerConfig(t *testing.T, objs []object, kubeconfig string) string {
	t.Helper()
	for _, o := range objs {
		if o.kind != "ConfigMap" || o.name != "berth-scheduler-config" {
			continue
		}
		var cm corev1.ConfigMap
		if err := yaml.Unmarshal(o.yaml, &cm); err != nil {
			t.Fatal(err)
		}
		var c map[string]any
		if err := yaml.Unmarshal([]byte(cm.Data["config.yaml"]), &c); err != nil {
			t.Fatal(err)
		}
		c["clientConnection"] = map[string]any{"kubeconfig": kubeconfig}
		b, err := yaml.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	t.Fatal("no ConfigMap berth-scheduler-config in manifests/")
	return ""
}
