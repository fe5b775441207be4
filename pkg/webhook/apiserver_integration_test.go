//go:build integration

// Integration tests: a real kube-apiserver + etcd (envtest, internal/testenv)
// that really calls this webhook over TLS, with the MutatingWebhookConfiguration
// from manifests/webhook. Needs hack/build-kube.sh and etcd (make deps).
package webhook_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/pkg/webhook"
)

const manifest = "../../manifests/webhook/mutatingwebhookconfiguration.yaml"

// startWebhook runs webhook.Run against cfg until the returned cancel is called.
func startWebhook(t testing.TB, cfg *rest.Config, o webhook.RunOptions) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- webhook.Run(ctx, cfg, o) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("webhook.Run: %v", err)
		}
	}
	t.Cleanup(stop)
	return stop
}

func runOptions(env *envtest.Environment) webhook.RunOptions {
	w := env.WebhookInstallOptions
	return webhook.RunOptions{
		Inject: webhook.DefaultOptions(), Namespace: "berth-system",
		Host: w.LocalServingHost, Port: w.LocalServingPort, CertDir: w.LocalServingCertDir,
		MetricsAddr: "0", ProbeAddr: "0", Reporter: true, After: true, AfterWorkers: 4,
	}
}

func namespace(t testing.TB, cs kubernetes.Interface, name string, optIn bool) {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if optIn {
		ns.Labels = map[string]string{"berth.dev/inject": "enabled"}
	}
	if _, err := cs.CoreV1().Namespaces().Create(t.Context(), ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func appPod(name string, annos map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: annos,
			Labels: map[string]string{webhook.LabelOptIn: webhook.OptInValue}},
		Spec: corev1.PodSpec{
			AutomountServiceAccountToken: ptr.To(false),
			Containers: []corev1.Container{{
				Name: "app", Image: "ghcr.io/berth-dev/hookapp:v0.1.0",
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
				ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{
					HTTPGet: &corev1.HTTPGetAction{Path: "/check", Port: intOrStr("http")}}},
				LivenessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{
					HTTPGet: &corev1.HTTPGetAction{Path: "/check", Port: intOrStr("http")}}},
			}},
		},
	}
}

// waitServing creates probe pods until the webhook answers (the server starts asynchronously).
func waitServing(t testing.TB, cs kubernetes.Interface, ns string) {
	t.Helper()
	i := 0
	var last error
	err := wait.PollUntilContextTimeout(t.Context(), 200*time.Millisecond, 60*time.Second, true,
		func(ctx context.Context) (bool, error) {
			i++
			p, err := cs.CoreV1().Pods(ns).Create(ctx,
				appPod(fmt.Sprintf("probe-%d", i), map[string]string{"berth.dev/debug": "port"}),
				metav1.CreateOptions{})
			if err != nil {
				last = err
				return false, nil
			}
			last = fmt.Errorf("pod %s created without injection", p.Name)
			return p.Annotations[webhook.AnnoStatus] != "", nil
		})
	if err != nil {
		t.Fatalf("the apiserver never got an answer from the webhook: %v (last: %v)", err, last)
	}
}

func TestWebhookThroughAPIServer(t *testing.T) {
	env, cfg := testenv.StartAPIServer(t, func(e *envtest.Environment) {
		e.WebhookInstallOptions = envtest.WebhookInstallOptions{Paths: []string{manifest}}
	})
	cs := kubernetes.NewForConfigOrDie(cfg)
	namespace(t, cs, "apps", true)
	namespace(t, cs, "plain", false)
	applyPolicies(t, cs, "apps")
	stop := startWebhook(t, cfg, runOptions(env))
	waitServing(t, cs, "apps")
	ctx := t.Context()

	t.Run("annotated pod is injected and valid", func(t *testing.T) {
		annos := map[string]string{"berth.dev/prestart": "inline:echo prep",
			"berth.dev/preonline": "inline:echo warm",
			"berth.dev/debug":     "java", "berth.dev/volumes": "cache=emptydir:/cache"}
		p, err := cs.CoreV1().Pods("apps").Create(ctx, appPod("shop", annos), metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("the apiserver refused the mutated pod: %v", err)
		}
		var names []string
		for _, c := range p.Spec.InitContainers {
			names = append(names, c.Name)
		}
		if strings.Join(names, ",") != "berth-install,berth-prestart,berth-sidecar" {
			t.Errorf("init containers %v", names)
		}
		if p.Spec.Containers[0].LivenessProbe.HTTPGet.Path != "/livez" {
			t.Errorf("liveness not rewritten: %+v", p.Spec.Containers[0].LivenessProbe)
		}
	})
	t.Run("bad annotation is refused with key and example", func(t *testing.T) {
		_, err := cs.CoreV1().Pods("apps").Create(ctx,
			appPod("bad", map[string]string{"berth.dev/drain": "soon", "berth.dev/preonline": "none"}),
			metav1.CreateOptions{})
		if err == nil || !strings.Contains(err.Error(), `"berth.dev/drain"`) ||
			!strings.Contains(err.Error(), "example") {
			t.Fatalf("want a denial naming berth.dev/drain with an example, got %v", err)
		}
	})
	t.Run("not opted in and kube-system are untouched", func(t *testing.T) {
		for _, ns := range []string{"plain", "kube-system"} {
			p, err := cs.CoreV1().Pods(ns).Create(ctx,
				appPod("untouched", map[string]string{"berth.dev/debug": "java"}), metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if len(p.Spec.InitContainers) != 0 || p.Annotations[webhook.AnnoStatus] != "" {
				t.Errorf("%s: pod was mutated", ns)
			}
		}
	})
	t.Run("failed preStart becomes an Event", func(t *testing.T) {
		testPreStartEvent(t, cs)
	})
	t.Run("webhook down fails closed only for opted-in pods", func(t *testing.T) {
		stop()
		_, err := cs.CoreV1().Pods("apps").Create(ctx,
			appPod("while-down", map[string]string{"berth.dev/debug": "java"}), metav1.CreateOptions{})
		if err == nil || !strings.Contains(err.Error(), "failed calling webhook") {
			t.Errorf("opted-in pod: want 'failed calling webhook', got %v", err)
		}
		plain := appPod("plain-while-down", nil)
		delete(plain.Labels, webhook.LabelOptIn)
		if _, err := cs.CoreV1().Pods("apps").Create(ctx, plain, metav1.CreateOptions{}); err != nil {
			t.Errorf("a pod that does not use berth, in an opted-in namespace, is blocked by the webhook "+
				"being down: %v", err)
		}
		if _, err := cs.CoreV1().Pods("plain").Create(ctx, appPod("while-down", nil),
			metav1.CreateOptions{}); err != nil {
			t.Errorf("a namespace that did not opt in is affected by the webhook being down: %v", err)
		}
		// berth.dev/ annotations without the label: refused by the apiserver's own policy, so the
		// pod cannot start without berth while the webhook is down.
		sneaky := appPod("sneaky", map[string]string{"berth.dev/after": "db", "berth.dev/profile": "cpu"})
		delete(sneaky.Labels, webhook.LabelOptIn)
		_, err = cs.CoreV1().Pods("apps").Create(ctx, sneaky, metav1.CreateOptions{})
		if err == nil || !strings.Contains(err.Error(), "berth.dev/inject=enabled") ||
			!strings.Contains(err.Error(), "(berth.dev/after)") {
			t.Errorf("annotated pod without the label: want a denial naming the label and the key, got %v", err)
		}
	})
}

// applyPolicies creates the ValidatingAdmissionPolicies of manifests/webhook and waits until
// the apiserver enforces the opt-in one (policies load asynchronously).
func applyPolicies(t testing.TB, cs kubernetes.Interface, ns string) {
	t.Helper()
	raw, err := os.ReadFile("../../manifests/webhook/validatingadmissionpolicy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	for _, doc := range strings.Split(string(raw), "\n---\n") {
		var meta metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
			t.Fatal(err)
		}
		switch meta.Kind {
		case "ValidatingAdmissionPolicy":
			var p admissionv1.ValidatingAdmissionPolicy
			if err := yaml.UnmarshalStrict([]byte(doc), &p); err != nil {
				t.Fatal(err)
			}
			_, err = cs.AdmissionregistrationV1().ValidatingAdmissionPolicies().Create(ctx, &p,
				metav1.CreateOptions{})
		case "ValidatingAdmissionPolicyBinding":
			var b admissionv1.ValidatingAdmissionPolicyBinding
			if err := yaml.UnmarshalStrict([]byte(doc), &b); err != nil {
				t.Fatal(err)
			}
			_, err = cs.AdmissionregistrationV1().ValidatingAdmissionPolicyBindings().Create(ctx, &b,
				metav1.CreateOptions{})
		default:
			t.Fatalf("unexpected kind %q in validatingadmissionpolicy.yaml", meta.Kind)
		}
		if err != nil {
			t.Fatalf("the apiserver refused the policy: %v", err)
		}
	}
	probe := appPod("policy-probe", map[string]string{"berth.dev/after": "db"})
	delete(probe.Labels, webhook.LabelOptIn)
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true,
		func(ctx context.Context) (bool, error) {
			_, err := cs.CoreV1().Pods(ns).Create(ctx, probe,
				metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
			return err != nil && strings.Contains(err.Error(), "berth-pod-opt-in"), nil
		})
	if err != nil {
		t.Fatalf("the opt-in policy is not enforced: %v", err)
	}
}

// testPreStartEvent writes the status the kubelet writes for a failed
// berth-prestart init container, and expects the reporter's Warning Event.
func testPreStartEvent(t *testing.T, cs kubernetes.Interface) {
	ctx := t.Context()
	p, err := cs.CoreV1().Pods("apps").Create(ctx,
		appPod("failing", map[string]string{"berth.dev/prestart": "inline:exit 1"}), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	msg := "preStart gave up after 3 attempt(s) in 14s: exit status 1"
	p.Status.Phase = corev1.PodPending
	p.Status.InitContainerStatuses = []corev1.ContainerStatus{{
		Name: webhook.PreStartName, Image: "x", ImageID: "x", ContainerID: "containerd://abc",
		RestartCount: 0,
		State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1,
			Reason: "Error", Message: msg, FinishedAt: metav1.Now()}},
	}}
	if _, err := cs.CoreV1().Pods("apps").UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true,
		func(ctx context.Context) (bool, error) {
			evs, err := cs.EventsV1().Events("apps").List(ctx,
				metav1.ListOptions{FieldSelector: "regarding.name=failing"})
			if err != nil {
				return false, err
			}
			for _, e := range evs.Items {
				if e.Reason == webhook.ReasonPreStartFailed && e.Type == corev1.EventTypeWarning &&
					strings.Contains(e.Note, msg) {
					return true, nil
				}
			}
			return false, nil
		})
	if err != nil {
		t.Fatalf("no %s Event with the termination message: %v", webhook.ReasonPreStartFailed, err)
	}
}

// TestCertRotation: with no certificate at all, the webhook creates its CA and
// serving certificate, stores them in the Secret, patches the caBundle, and
// the apiserver then calls it successfully.
func TestCertRotation(t *testing.T) {
	_, cfg := testenv.StartAPIServer(t)
	cs := kubernetes.NewForConfigOrDie(cfg)
	ctx := t.Context()
	namespace(t, cs, "berth-system", false)
	namespace(t, cs, "apps", true)
	port := testenv.FreePort(t)
	mwc := &admissionv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "berth-webhook"},
		Webhooks: []admissionv1.MutatingWebhook{{
			Name: "pods.berth.dev", AdmissionReviewVersions: []string{"v1"},
			SideEffects:    ptr.To(admissionv1.SideEffectClassNone),
			FailurePolicy:  ptr.To(admissionv1.Fail),
			TimeoutSeconds: ptr.To(int32(5)),
			ClientConfig: admissionv1.WebhookClientConfig{URL: ptr.To(fmt.Sprintf("https://localhost:%d%s",
				port, webhook.Path))},
			Rules: []admissionv1.RuleWithOperations{{Operations: []admissionv1.OperationType{admissionv1.Create},
				Rule: admissionv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"},
					Resources: []string{"pods"}}}},
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"berth.dev/inject": "enabled"}},
		}},
	}
	if _, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, mwc,
		metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Secrets("berth-system").Create(ctx,
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "berth-webhook-certs"}},
		metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	startWebhook(t, cfg, webhook.RunOptions{
		Inject: webhook.DefaultOptions(), Namespace: "berth-system", Host: "127.0.0.1", Port: port,
		CertDir: filepath.Join(t.TempDir(), "certs"), DNSName: "localhost", CertRotation: true,
		ServiceName: "berth-webhook", SecretName: "berth-webhook-certs", WebhookConfigName: "berth-webhook",
		MetricsAddr: "0", ProbeAddr: "0",
	})
	waitServing(t, cs, "apps")
	got, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, "berth-webhook",
		metav1.GetOptions{})
	if err != nil || len(got.Webhooks[0].ClientConfig.CABundle) == 0 {
		t.Fatalf("caBundle not patched: %v", err)
	}
	sec, err := cs.CoreV1().Secrets("berth-system").Get(ctx, "berth-webhook-certs", metav1.GetOptions{})
	if err != nil || len(sec.Data["tls.crt"]) == 0 || len(sec.Data["ca.crt"]) == 0 {
		t.Fatalf("certificate not stored in the Secret: %v %v", err, keys(sec))
	}
}

func keys(s *corev1.Secret) []string {
	if s == nil {
		return nil
	}
	var out []string
	for k := range s.Data {
		out = append(out, k)
	}
	return out
}

func intOrStr(s string) intstr.IntOrString { return intstr.FromString(s) }

func init() { ctrl.SetLogger(klog.Background()) }

// TestManifestsApply: the kustomize base of manifests/webhook is accepted by a
// real kube-apiserver (schemas, RBAC rules, the webhook configuration).
func TestManifestsApply(t *testing.T) {
	env, cfg := testenv.StartAPIServer(t)
	cs := kubernetes.NewForConfigOrDie(cfg)
	namespace(t, cs, "berth-system", false)
	//lint:ignore SA1019 the admin kubectl of the test control plane is what we want here
	stdout, stderr, err := env.ControlPlane.KubeCtl().Run("apply", "--server-side", "-k",
		filepath.Join("..", "..", "manifests", "webhook"))
	if err != nil {
		out, _ := io.ReadAll(stdout)
		msg, _ := io.ReadAll(stderr)
		t.Fatalf("kubectl apply -k manifests/webhook: %v\n%s\n%s", err, out, msg)
	}
	mwc, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(t.Context(),
		"berth-webhook", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	w := mwc.Webhooks[0]
	if *w.FailurePolicy != admissionv1.Fail ||
		*w.ReinvocationPolicy != admissionv1.IfNeededReinvocationPolicy || *w.TimeoutSeconds > 10 ||
		w.NamespaceSelector.MatchLabels["berth.dev/inject"] != "enabled" ||
		w.ObjectSelector.MatchLabels[webhook.LabelOptIn] != webhook.OptInValue {
		t.Errorf("webhook configuration is not the documented one: %+v", w)
	}
	d, err := cs.AppsV1().Deployments("berth-system").Get(t.Context(), "berth-webhook",
		metav1.GetOptions{})
	if err != nil || *d.Spec.Replicas != 2 {
		t.Errorf("Deployment: %v", err)
	}
	if _, err := cs.PolicyV1().PodDisruptionBudgets("berth-system").Get(t.Context(), "berth-webhook",
		metav1.GetOptions{}); err != nil {
		t.Errorf("PodDisruptionBudget: %v", err)
	}
}
