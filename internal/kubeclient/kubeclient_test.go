package kubeclient

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/client-go/rest"
)

func writeKubeconfig(t *testing.T, path, server string) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: ` + server + `}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestPrecedence: the flag, else $KUBECONFIG, else in-cluster, else ~/.kube/config. Each case
// makes every source of lower rank available too, so a wrong order picks the wrong server.
func TestPrecedence(t *testing.T) {
	dir := t.TempDir()
	flag := writeKubeconfig(t, filepath.Join(dir, "flag"), "https://flag:6443")
	env := writeKubeconfig(t, filepath.Join(dir, "env"), "https://env:6443")
	home := filepath.Join(dir, "home")
	writeKubeconfig(t, filepath.Join(home, ".kube", "config"), "https://home:6443")
	inCluster := func() (*rest.Config, error) { return &rest.Config{Host: "https://incluster:443"}, nil }
	notInCluster := func() (*rest.Config, error) { return nil, errors.New("not in a cluster") }

	for _, tc := range []struct {
		name, flag, env string
		inCluster       func() (*rest.Config, error)
		want            string
	}{
		{"flag wins", flag, env, inCluster, "https://flag:6443"},
		{"then $KUBECONFIG", "", env, inCluster, "https://env:6443"},
		{"then in-cluster", "", "", inCluster, "https://incluster:443"},
		{"then ~/.kube/config", "", "", notInCluster, "https://home:6443"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("HOME", home)
			t.Setenv("KUBECONFIG", tc.env)
			cfg, err := restConfig(tc.flag, tc.inCluster)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Host != tc.want {
				t.Fatalf("server %s, want %s", cfg.Host, tc.want)
			}
		})
	}
}

func TestNoConfigSaysWhatToPass(t *testing.T) {
	t.Setenv("HOME", t.TempDir())
	t.Setenv("KUBECONFIG", "")
	_, err := restConfig("", func() (*rest.Config, error) { return nil, errors.New("not in a cluster") })
	if err == nil || !strings.Contains(err.Error(), "--kubeconfig") {
		t.Fatalf("want an error naming --kubeconfig, got %v", err)
	}
	_, err = restConfig(filepath.Join(t.TempDir(), "missing"), nil)
	if err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("a missing --kubeconfig file: want an error naming it, got %v", err)
	}
}
