package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// RepoRoot returns the root of the berth checkout (the directory holding go.mod).
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// KubeBinDir is where hack/build-kube.sh puts the Kubernetes binaries.
func KubeBinDir() string {
	if c := os.Getenv("BERTH_CACHE"); c != "" {
		return filepath.Join(c, "kube", "bin")
	}
	return filepath.Join(RepoRoot(), ".cache", "kube", "bin")
}

// KubeBinary returns the path of a Kubernetes binary built by hack/build-kube.sh, or fails the test.
func KubeBinary(t testing.TB, name string) string {
	t.Helper()
	p := filepath.Join(KubeBinDir(), name)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%s not found at %s: run `hack/build-kube.sh` (or `make deps`) first", name, p)
	}
	return p
}

// StartAPIServer starts a real etcd + kube-apiserver through envtest and stops them when the test ends.
// Options can change the environment before it starts (CRDs, webhook options, apiserver flags).
func StartAPIServer(t testing.TB, opts ...func(*envtest.Environment)) (*envtest.Environment,
	*rest.Config) {
	t.Helper()
	env := &envtest.Environment{
		BinaryAssetsDirectory:    KubeBinDir(),
		ControlPlaneStartTimeout: 90 * 1e9,
		ControlPlaneStopTimeout:  30 * 1e9,
	}
	KubeBinary(t, "kube-apiserver")
	etcd := EtcdBinary(t)
	env.ControlPlane.Etcd = &envtest.Etcd{Path: etcd}
	env.ControlPlane.APIServer = &envtest.APIServer{Path: filepath.Join(KubeBinDir(), "kube-apiserver")}
	if kubectl, err := exec.LookPath(filepath.Join(KubeBinDir(), "kubectl")); err == nil {
		env.ControlPlane.KubectlPath = kubectl
	}
	for _, o := range opts {
		o(env)
	}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("failed to start kube-apiserver + etcd (envtest): %v", err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Logf("stopping envtest: %v", err)
		}
	})
	return env, cfg
}
