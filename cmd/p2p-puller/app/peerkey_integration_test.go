//go:build integration

package app_test

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"

	"github.com/berth-dev/berth/cmd/p2p-puller/app"
	"github.com/berth-dev/berth/internal/testenv"
)

// TestEnsurePeerKeyRace: against a real kube-apiserver with exactly the
// RBAC of manifests/p2p, pullers (the DaemonSet's ServiceAccount) started
// first wait for the peer key; keygen Jobs (their own ServiceAccount) race to
// create it; everyone ends up with the same key. The pullers' RBAC reaches
// no other Secret and creates none.
func TestEnsurePeerKeyRace(t *testing.T) {
	_, cfg := testenv.StartAPIServer(t)
	admin := kubernetes.NewForConfigOrDie(cfg)
	ctx := t.Context()
	ns := "berth-system"
	if _, err := admin.CoreV1().Namespaces().Create(ctx,
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	applyRBAC(t, admin, "../../../manifests/p2p/rbac.yaml")
	if _, err := admin.CoreV1().Secrets(ns).Create(ctx,
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "other"},
			Data: map[string][]byte{"password": []byte("x")}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	as := func(sa string) kubernetes.Interface {
		return kubernetes.NewForConfigOrDie(testenv.AsServiceAccount(cfg, ns, sa))
	}
	puller, keygen := as("p2p-puller"), as("p2p-puller-keygen")

	const pullers, jobs = 3, 3
	keys := make([][]byte, pullers+jobs)
	errs := make([]error, pullers+jobs)
	var wg sync.WaitGroup
	for i := range pullers {
		wg.Go(func() { keys[i], errs[i] = app.WaitPeerKey(ctx, puller, ns, 50*time.Millisecond) })
	}
	if _, err := app.EnsurePeerKey(ctx, puller, ns); !apierrors.IsForbidden(err) {
		t.Errorf("the p2p-puller ServiceAccount created the peer key Secret (err %v): only the keygen "+
			"Job may", err)
	}
	start := make(chan struct{})
	for i := pullers; i < pullers+jobs; i++ {
		wg.Go(func() {
			<-start
			keys[i], errs[i] = app.EnsurePeerKey(ctx, keygen, ns)
		})
	}
	close(start)
	wg.Wait()
	for i := range keys {
		if errs[i] != nil {
			t.Fatalf("client %d: %v", i, errs[i])
		}
		if len(keys[i]) != 64 || !bytes.Equal(keys[i], keys[0]) {
			t.Fatalf("client %d got key %q, client 0 got %q: want one shared 64-hex-digit key", i, keys[i],
				keys[0])
		}
	}
	s, err := admin.CoreV1().Secrets(ns).Get(ctx, app.PeerKeySecret, metav1.GetOptions{})
	if err != nil || !bytes.Equal(s.Data["key"], keys[0]) {
		t.Fatalf("Secret %s = %v, %v; want it to hold the key the pullers use", app.PeerKeySecret, s.Data,
			err)
	}
	if _, err := puller.CoreV1().Secrets(ns).Get(ctx, "other",
		metav1.GetOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("the p2p-puller ServiceAccount read another Secret (err %v): "+
			"its RBAC must reach only %s", err, app.PeerKeySecret)
	}
	if _, err := puller.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("the p2p-puller ServiceAccount can list Secrets (err %v)", err)
	}
	token := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "minted",
		Annotations: map[string]string{corev1.ServiceAccountNameKey: "default"}},
		Type: corev1.SecretTypeServiceAccountToken}
	if _, err := puller.CoreV1().Secrets(ns).Create(ctx, token,
		metav1.CreateOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("the p2p-puller ServiceAccount created a token Secret (err %v)", err)
	}
}

// applyRBAC creates the ServiceAccount, Role and RoleBinding of a manifest.
func applyRBAC(t *testing.T, c kubernetes.Interface, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ctx := t.Context()
	dec := utilyaml.NewYAMLReader(bufio.NewReader(f))
	for {
		doc, err := dec.Read()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		var meta metav1.TypeMeta
		if err := utilyaml.Unmarshal(doc, &meta); err != nil {
			t.Fatal(err)
		}
		switch meta.Kind {
		case "ServiceAccount":
			var o corev1.ServiceAccount
			must(t, utilyaml.Unmarshal(doc, &o))
			_, err = c.CoreV1().ServiceAccounts(o.Namespace).Create(ctx, &o, metav1.CreateOptions{})
		case "Role":
			var o rbacv1.Role
			must(t, utilyaml.Unmarshal(doc, &o))
			_, err = c.RbacV1().Roles(o.Namespace).Create(ctx, &o, metav1.CreateOptions{})
		case "RoleBinding":
			var o rbacv1.RoleBinding
			must(t, utilyaml.Unmarshal(doc, &o))
			_, err = c.RbacV1().RoleBindings(o.Namespace).Create(ctx, &o, metav1.CreateOptions{})
		case "":
			continue
		default:
			t.Fatalf("%s: unexpected kind %s", path, meta.Kind)
		}
		if err != nil {
			t.Fatalf("%s: creating %s: %v", path, meta.Kind, err)
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
