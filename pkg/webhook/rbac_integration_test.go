//go:build integration

package webhook_test

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/pkg/webhook"
)

// TestLeastPrivilege runs the webhook as its ServiceAccount with exactly the RBAC and the
// policies of manifests/webhook: certificate rotation, the caBundle, leader election and
// berth.dev/after's gates all work, and nothing beyond them does — no other Secret of
// berth-system, no change to its webhook configuration but the caBundle, no pod change but
// removing the gate.
func TestLeastPrivilege(t *testing.T) {
	env, cfg := testenv.StartAPIServer(t)
	admin := kubernetes.NewForConfigOrDie(cfg)
	ctx := t.Context()
	namespace(t, admin, "berth-system", false)
	namespace(t, admin, "apps", true)
	//lint:ignore SA1019 the admin kubectl of the test control plane is what we want here
	stdout, stderr, err := env.ControlPlane.KubeCtl().Run("apply", "--server-side", "-k",
		filepath.Join("..", "..", "manifests", "webhook"))
	if err != nil {
		out, _ := io.ReadAll(stdout)
		msg, _ := io.ReadAll(stderr)
		t.Fatalf("kubectl apply -k manifests/webhook: %v\n%s\n%s", err, out, msg)
	}
	// envtest's apiserver cannot reach a Service: point the configuration at this process.
	port := testenv.FreePort(t)
	url := fmt.Sprintf("https://localhost:%d%s", port, webhook.Path)
	patch := fmt.Sprintf(`[{"op":"replace","path":"/webhooks/0/clientConfig","value":{"url":%q}}]`, url)
	if _, err := admin.AdmissionregistrationV1().MutatingWebhookConfigurations().Patch(ctx,
		"berth-webhook", types.JSONPatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	other := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "p2p-peer-key"},
		StringData: map[string]string{"key": "secret"}}
	if _, err := admin.CoreV1().Secrets("berth-system").Create(ctx, other, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	sa := testenv.AsServiceAccount(cfg, "berth-system", "berth-webhook")
	startWebhook(t, sa, webhook.RunOptions{
		Inject: webhook.DefaultOptions(), Namespace: "berth-system", Host: "127.0.0.1", Port: port,
		CertDir: filepath.Join(t.TempDir(), "certs"), DNSName: "localhost", CertRotation: true,
		ServiceName: "berth-webhook", SecretName: "berth-webhook-certs", WebhookConfigName: "berth-webhook",
		MetricsAddr: "0", ProbeAddr: "0", LeaderElection: true, Reporter: true, After: true, AfterWorkers: 2,
	})
	waitServing(t, admin, "apps")
	waitFor(t, "the webhook's replica leads",
		func(ctx context.Context) bool { return leaseHolder(ctx, admin) != "" })

	t.Run("berth.dev/after works with its RBAC", func(t *testing.T) {
		service(t, admin, "apps", "db")
		mustCreate(t, admin, "apps", afterPod("shop-1", "db", nil))
		waitEvent(t, admin, "apps", "shop-1", webhook.ReasonAfterWaiting, "apps/db (0/1")
		endpoints(t, admin, "apps", "db", true)
		waitUngated(t, admin, "apps", "shop-1")
	})
	as := kubernetes.NewForConfigOrDie(sa)
	t.Run("no other Secret", func(t *testing.T) {
		if _, err := as.CoreV1().Secrets("berth-system").Get(ctx, "p2p-peer-key",
			metav1.GetOptions{}); !apierrors.IsForbidden(err) {
			t.Errorf("get another Secret of berth-system: want Forbidden, got %v", err)
		}
		if _, err := as.CoreV1().Secrets("berth-system").List(ctx,
			metav1.ListOptions{}); !apierrors.IsForbidden(err) {
			t.Errorf("list the Secrets of berth-system: want Forbidden, got %v", err)
		}
		if _, err := as.CoreV1().Secrets("apps").List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
			t.Errorf("list Secrets of another namespace: want Forbidden, got %v", err)
		}
	})
	t.Run("only the caBundle of its own configuration", func(t *testing.T) {
		mwc, err := as.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, "berth-webhook",
			metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(mwc.Webhooks[0].ClientConfig.CABundle) == 0 {
			t.Error("the caBundle was not patched (by the ServiceAccount, through the policy)")
		}
		mwc.Webhooks[0].FailurePolicy = ptr.To(admissionv1.Ignore)
		_, err = as.AdmissionregistrationV1().MutatingWebhookConfigurations().Update(ctx, mwc,
			metav1.UpdateOptions{})
		if err == nil || !strings.Contains(err.Error(), "only change the caBundle") {
			t.Errorf("the ServiceAccount changed the failurePolicy: %v", err)
		}
	})
	t.Run("no pod change but removing the gate", func(t *testing.T) {
		p := mustCreate(t, admin, "apps", afterPod("victim-1", "nothing", nil))
		for _, patch := range []string{
			`{"spec":{"containers":[{"name":"app","image":"evil:1"}]}}`,
			`{"metadata":{"labels":{"app":"other"}}}`,
		} {
			_, err := as.CoreV1().Pods("apps").Patch(ctx, p.Name, types.StrategicMergePatchType,
				[]byte(patch), metav1.PatchOptions{})
			if err == nil || !strings.Contains(err.Error(), "only remove the berth.dev/after scheduling gate") {
				t.Errorf("patch %s as the webhook: want the policy's denial, got %v", patch, err)
			}
		}
	})
}
