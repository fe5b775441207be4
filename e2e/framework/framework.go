// Package framework holds the helpers berth's e2e tests share: clients for the
// local cluster (KUBECONFIG, set by hack/cluster/env), a namespace per test
// that is dumped (pods, logs, events) when the test fails and deleted after,
// waits with clear timeouts, exec, logs and kustomize apply.
package framework

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/remotecommand"
)

// Framework is one test's view of the cluster.
type Framework struct {
	T         testing.TB
	Config    *rest.Config
	Client    kubernetes.Interface
	Namespace string
	ctx       context.Context
}

// RepoRoot returns the root of the berth checkout.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// Version is the berth version the images are tagged with (the VERSION file).
func Version() string {
	b, err := os.ReadFile(filepath.Join(RepoRoot(), "VERSION"))
	if err != nil {
		return "v0.0.0-dev"
	}
	return strings.TrimSpace(string(b))
}

// Image returns the reference of a berth or test image, e.g. Image("echo").
func Image(name string) string { return "ghcr.io/berth-dev/" + name + ":" + Version() }

// Connect returns clients for the cluster in KUBECONFIG, failing the test with
// a hint when there is none.
func Connect(t testing.TB) (*rest.Config, kubernetes.Interface) {
	t.Helper()
	kc := os.Getenv("KUBECONFIG")
	if kc == "" {
		t.Fatalf("KUBECONFIG is not set: bring the local cluster up with `make up` " +
			"and run `. hack/cluster/env` (or use `make test-e2e`)")
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kc)
	if err != nil {
		t.Fatalf("load KUBECONFIG %s: %v", kc, err)
	}
	cfg.QPS, cfg.Burst = 50, 100
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatalf("client for %s: %v", kc, err)
	}
	return cfg, cs
}

// New connects and creates a fresh namespace with the given labels. When the test
// fails, the namespace's pods, container logs and events are written to the test log;
// the namespace is deleted at the end either way.
func New(t testing.TB, labels map[string]string) *Framework {
	t.Helper()
	cfg, cs := Connect(t)
	f := &Framework{T: t, Config: cfg, Client: cs}
	// Registered first, so it runs last: the test's own cleanups (scale back, delete) still
	// have a live context, unlike t.Context(), which ends before any cleanup runs.
	var cancel context.CancelFunc
	f.ctx, cancel = context.WithCancel(context.Background())
	t.Cleanup(cancel)
	name := "e2e-" + strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-"))
	if len(name) > 50 {
		name = name[:50]
	}
	name = strings.TrimRight(name, "-") + "-" + rand.String(5)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	if _, err := cs.CoreV1().Namespaces().Create(context.Background(), ns, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create namespace %s: %v", name, err)
	}
	f.Namespace = name
	t.Cleanup(func() {
		if t.Failed() {
			f.Dump(name)
		}
		_ = cs.CoreV1().Namespaces().Delete(context.Background(), name, metav1.DeleteOptions{}) // best effort
	})
	// Pods can only be created once the namespace's default ServiceAccount exists.
	f.WaitFor("default ServiceAccount in "+name, time.Minute, func(ctx context.Context) (bool, error) {
		_, err := cs.CoreV1().ServiceAccounts(name).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	})
	return f
}

// Context returns a context that ends after the test and all its cleanups.
func (f *Framework) Context() context.Context { return f.ctx }

// WaitFor polls cond every 500 ms until it returns true, and fails the test naming what
// it waited for when the timeout passes or cond returns an error.
func (f *Framework) WaitFor(what string, timeout time.Duration, cond func(ctx context.Context) (bool, error)) {
	f.T.Helper()
	var last error
	err := wait.PollUntilContextTimeout(f.Context(), 500*time.Millisecond, timeout, true,
		func(ctx context.Context) (bool, error) {
			ok, err := cond(ctx)
			if err != nil {
				last = err
				return false, nil
			}
			return ok, nil
		})
	if err != nil {
		f.T.Fatalf("timed out after %s waiting for %s (last error: %v)", timeout, what, last)
	}
}

// WaitPodsReady waits until at least n pods match selector and all of them are Ready.
func (f *Framework) WaitPodsReady(selector string, n int, timeout time.Duration) []corev1.Pod {
	f.T.Helper()
	var pods []corev1.Pod
	f.WaitFor(fmt.Sprintf("%d Ready pods %q in %s", n, selector, f.Namespace), timeout,
		func(ctx context.Context) (bool, error) {
			l, err := f.Client.CoreV1().Pods(f.Namespace).List(ctx, metav1.ListOptions{LabelSelector: selector})
			if err != nil {
				return false, err
			}
			pods = l.Items
			if len(pods) < n {
				return false, nil
			}
			for _, p := range pods {
				if !PodReady(&p) {
					return false, nil
				}
			}
			return true, nil
		})
	return pods
}

// PodReady reports whether the pod's Ready condition is True.
func PodReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// Logs returns a container's log.
func (f *Framework) Logs(pod, container string) string {
	f.T.Helper()
	b, err := f.Client.CoreV1().Pods(f.Namespace).GetLogs(pod,
		&corev1.PodLogOptions{Container: container}).DoRaw(f.Context())
	if err != nil {
		f.T.Fatalf("logs of %s/%s container %q: %v", f.Namespace, pod, container, err)
	}
	return string(b)
}

// Exec runs cmd in a container and returns stdout, stderr and the error.
func (f *Framework) Exec(pod, container string, cmd ...string) (string, string, error) {
	req := f.Client.CoreV1().RESTClient().Post().Resource("pods").Namespace(f.Namespace).Name(pod).SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{
			Container: container, Command: cmd, Stdout: true, Stderr: true,
		}, scheme.ParameterCodec)
	ex, err := remotecommand.NewSPDYExecutor(f.Config, "POST", req.URL())
	if err != nil {
		return "", "", fmt.Errorf("exec %v in %s/%s: %w", cmd, f.Namespace, pod, err)
	}
	var out, errb bytes.Buffer
	err = ex.StreamWithContext(f.Context(), remotecommand.StreamOptions{Stdout: &out, Stderr: &errb})
	return out.String(), errb.String(), err
}

// Kubectl runs the cluster's kubectl with args and returns its combined output.
func Kubectl(args ...string) (string, error) { return KubectlStdin("", args...) }

// KubectlStdin runs kubectl with stdin as its standard input (e.g. `apply -f -`).
func KubectlStdin(stdin string, args ...string) (string, error) {
	bin := filepath.Join(RepoRoot(), ".cache", "kube", "bin", "kubectl")
	if _, err := os.Stat(bin); err != nil {
		bin = "kubectl"
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// ApplyKustomization applies a kustomize directory (relative to the repo root or absolute)
// with server-side apply, and fails the test with kubectl's message when that fails.
func (f *Framework) ApplyKustomization(dir string) {
	f.T.Helper()
	if !filepath.IsAbs(dir) {
		dir = filepath.Join(RepoRoot(), dir)
	}
	if out, err := Kubectl("apply", "--server-side", "--force-conflicts", "-k", dir); err != nil {
		f.T.Fatalf("apply -k %s: %v", dir, err)
	} else {
		f.T.Logf("applied %s:\n%s", dir, out)
	}
}

// Dump records a failed test's namespace: the pods, container logs and events go
// to a file under the cluster's log directory ($BERTH_STATE/logs/e2e, which
// test-e2e.sh keeps on failure), and the test log gets one line per pod and the
// Warning events. The test log stays short so that its tail, which is what a CI
// summary shows, still holds the failure message itself.
func (f *Framework) Dump(ns string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var full bytes.Buffer
	logf := func(format string, args ...any) { fmt.Fprintf(&full, format+"\n", args...) }
	pods, err := f.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		f.T.Logf("dump %s: list pods: %v", ns, err)
		return
	}
	for _, p := range pods.Items {
		logf("=== pod %s/%s phase=%s node=%s ip=%s", ns, p.Name, p.Status.Phase, p.Spec.NodeName, p.Status.PodIP)
		var states []string
		for _, cs := range append(p.Status.InitContainerStatuses, p.Status.ContainerStatuses...) {
			logf("    container %s ready=%v restarts=%d state=%+v", cs.Name, cs.Ready, cs.RestartCount, cs.State)
			states = append(states, fmt.Sprintf("%s ready=%v restarts=%d", cs.Name, cs.Ready, cs.RestartCount))
		}
		f.T.Logf("pod %s phase=%s ip=%s: %s", p.Name, p.Status.Phase, p.Status.PodIP, strings.Join(states, ", "))
		for _, c := range append(p.Spec.InitContainers, p.Spec.Containers...) {
			b, err := f.Client.CoreV1().Pods(ns).GetLogs(p.Name, &corev1.PodLogOptions{Container: c.Name}).DoRaw(ctx)
			if err != nil && !apierrors.IsBadRequest(err) {
				logf("--- logs %s/%s: %v", p.Name, c.Name, err)
				continue
			}
			logf("--- logs %s/%s:\n%s", p.Name, c.Name, b)
		}
	}
	if evs, err := f.Client.CoreV1().Events(ns).List(ctx, metav1.ListOptions{}); err == nil {
		for _, e := range evs.Items {
			logf("event %s %s/%s %s: %s", e.Type, e.InvolvedObject.Kind, e.InvolvedObject.Name, e.Reason, e.Message)
			if e.Type == corev1.EventTypeWarning {
				f.T.Logf("event Warning %s/%s %s: %s", e.InvolvedObject.Kind, e.InvolvedObject.Name, e.Reason, e.Message)
			}
		}
	}
	dir := filepath.Join(os.Getenv("BERTH_STATE"), "logs", "e2e")
	if os.Getenv("BERTH_STATE") == "" {
		dir = filepath.Join(os.TempDir(), "berth-e2e-dumps")
	}
	file := filepath.Join(dir, ns+".log")
	err = os.MkdirAll(dir, 0o755)
	if err == nil {
		err = os.WriteFile(file, full.Bytes(), 0o644)
	}
	if err != nil {
		f.T.Logf("dump %s: %v; the full dump follows\n%s", ns, err, full.String())
		return
	}
	f.T.Logf("pods, container logs and events of %s: %s", ns, file)
}

// berthWorkloads are the workloads of each berth component in berth-system, as
// manifests/ installs them.
var berthWorkloads = map[string][]string{
	"cni":       {"daemonset/cni-vlan"},
	"p2p":       {"daemonset/p2p-puller"},
	"csi":       {"daemonset/csi-sharedfs-node", "deployment/csi-sharedfs-controller"},
	"scheduler": {"deployment/berth-scheduler"},
	"webhook":   {"deployment/berth-webhook"},
}

// RequireBerth waits until the named berth components, installed by `make up`
// from manifests/ (hack/cluster/install-berth.sh), have rolled out. Tests use
// the installed berth rather than applying manifests themselves, so they see
// the cluster an admin would have.
func (f *Framework) RequireBerth(components ...string) {
	f.T.Helper()
	for _, c := range components {
		ws, ok := berthWorkloads[c]
		if !ok {
			f.T.Fatalf("RequireBerth: unknown component %q", c)
		}
		for _, w := range ws {
			if out, err := Kubectl("-n", "berth-system", "rollout", "status", w, "--timeout=3m"); err != nil {
				f.T.Fatalf("berth component %s (%s) is not installed or not ready: %v\n%s\n"+
					"(make up installs berth; see hack/cluster/install-berth.sh)", c, w, err, out)
			}
		}
	}
}
