//go:build integration || bench

package schedbench

import (
	"os"
	"path/filepath"
	"testing"

	"k8s.io/client-go/kubernetes"

	"github.com/berth-dev/berth/internal/testenv"
)

// startCluster starts a real kube-apiserver + etcd and returns a fast client, a temp dir and the
// path of a kubeconfig for in-process schedulers.
func startCluster(t *testing.T) (kubernetes.Interface, string, string) {
	t.Helper()
	env, cfg := testenv.StartAPIServer(t)
	cfg.QPS, cfg.Burst = 5000, 5000
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	dir := t.TempDir()
	kc := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kc, env.KubeConfig, 0o600); err != nil {
		t.Fatal(err)
	}
	return c, dir, kc
}
