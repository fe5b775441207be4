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

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/pkg/p2p/app"
)

// TestEnsurePeerKeyRace: against a real kube-apiserver, pullers running as
// the p2p-puller ServiceAccount with exactly the RBAC of manifests/p2p race
// to create the peer key Secret; all end up with the same key, and that
// RBAC reaches no other Secret.
func TestEnsurePeerKeyRace(t *testing.T) {
	_, cfg := testenv.StartAPIServer(t)
	admin := kubernetes.NewForConfigOrDie(cfg)
	ctx := t.Context()
	ns := "berth-system"
	if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	applyRBAC(t, admin, "../../../manifests/p2p/rbac.yaml")
	if _, err := admin.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "other"},
		Data: map[string][]byte{"password": []byte("x")}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	sa := rest.CopyConfig(cfg)
	sa.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:" + ns + ":p2p-puller"}
	client := kubernetes.NewForConfigOrDie(sa)

	const pullers = 4
	keys := make([][]byte, pullers)
	errs := make([]error, pullers)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range pullers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			keys[i], errs[i] = app.EnsurePeerKey(ctx, client, ns)
		}()
	}
	close(start)
	wg.Wait()
	for i := range pullers {
		if errs[i] != nil {
			t.Fatalf("puller %d: %v", i, errs[i])
		}
		if len(keys[i]) != 64 || !bytes.Equal(keys[i], keys[0]) {
			t.Fatalf("puller %d got key %q, puller 0 got %q: want one shared 64-hex-digit key", i, keys[i], keys[0])
		}
	}
	s, err := admin.CoreV1().Secrets(ns).Get(ctx, app.PeerKeySecret, metav1.GetOptions{})
	if err != nil || !bytes.Equal(s.Data["key"], keys[0]) {
		t.Fatalf("Secret %s = %v, %v; want it to hold the key the pullers use", app.PeerKeySecret, s.Data, err)
	}
	// A puller starting later reads the same key.
	if again, err := app.EnsurePeerKey(ctx, client, ns); err != nil || !bytes.Equal(again, keys[0]) {
		t.Fatalf("a later puller got %q, %v; want %q", again, err, keys[0])
	}
	if _, err := client.CoreV1().Secrets(ns).Get(ctx, "other", metav1.GetOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("the p2p-puller ServiceAccount read another Secret (err %v): its RBAC must reach only %s", err, app.PeerKeySecret)
	}
	if _, err := client.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("the p2p-puller ServiceAccount can list Secrets (err %v)", err)
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
