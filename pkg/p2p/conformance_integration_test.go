//go:build integration

package p2p_test

import (
	"bufio"
	"bytes"
	"fmt"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/testenv"
)

// conformanceModule is the OCI distribution-spec conformance suite, a Go
// program fetched through the module proxy.
const conformanceModule = "github.com/opencontainers/distribution-spec/conformance@v0.0.0-20260831232431-97274622c111"

// TestOCIConformancePull runs the OCI distribution-spec conformance suite
// twice: against the registry, and against a p2p-puller mirroring it (its
// pushes, which a pull-only mirror refuses, go to the registry). Every pull
// API (blob and manifest GET and HEAD) must conform through the mirror
// exactly as it does at the registry.
func TestOCIConformancePull(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "bin")
	install := exec.CommandContext(t.Context(), "go", "install", conformanceModule)
	install.Env = append(os.Environ(), "GOBIN="+bin, "GOFLAGS=")
	install.Dir = t.TempDir() // outside this module: the suite has its own go.mod
	if out, err := install.CombinedOutput(); err != nil {
		t.Fatalf("go install %s: %v\n%s", conformanceModule, err, out)
	}
	suite := filepath.Join(bin, "conformance")

	// Registries that accept non-distributable layers (their URLs allowed),
	// so the suite's manifests naming blobs nobody pushed are accepted.
	direct, _ := url.Parse(startForeignURLRegistry(t))
	want := runConformance(t, suite, direct.Host)

	up := startForeignURLRegistry(t)
	nd := startNodesURL(t, 1, up)[0]
	got := runConformance(t, suite, pushPullRouter(t, up, "http://"+nd.mirror))

	checked := 0
	for api, status := range want {
		if !strings.Contains(api, "get") && !strings.Contains(api, "head") {
			continue
		}
		checked++
		if status != "Pass" {
			t.Errorf("API %s at the registry itself: %s, want Pass (the setup is wrong)", api, status)
		}
		if got[api] != "Pass" {
			t.Errorf("API %s through the mirror: %s, want Pass", api, got[api])
		}
	}
	if checked == 0 {
		t.Fatalf("no pull API in the suite's report: %v", want)
	}
}

// pushPullRouter serves GET and HEAD from the mirror and sends everything
// else (pushes, deletes) to the registry, as a client configured with the
// mirror for pulls would; it returns its host:port.
func pushPullRouter(t *testing.T, registry, mirror string) string {
	t.Helper()
	reg, _ := url.Parse(registry)
	mir, _ := url.Parse(mirror)
	toReg, toMirror := httputil.NewSingleHostReverseProxy(reg), httputil.NewSingleHostReverseProxy(mir)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			toMirror.ServeHTTP(w, r)
			return
		}
		toReg.ServeHTTP(w, r)
	})
	srv := &http.Server{Addr: fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)), Handler: h}
	go func() { _ = srv.ListenAndServe() }()
	t.Cleanup(func() { _ = srv.Close() })
	waitFor(t, "the router to listen", func() bool {
		resp, err := http.Get("http://" + srv.Addr + "/v2/")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil
	})
	return srv.Addr
}

// runConformance runs the suite against registry (host:port, plain HTTP)
// and returns each API's status from its report ("Pass", "Fail", ...).
func runConformance(t *testing.T, suite, registry string) map[string]string {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.CommandContext(t.Context(), suite)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "OCI_REGISTRY="+registry, "OCI_TLS=disabled",
		"OCI_REPO1=conformance/repo1", "OCI_REPO2=conformance/repo2", "OCI_RESULTS_DIR="+dir, "OCI_LOG=error",
		// distribution/v3 has neither sha512 digests nor the referrers API.
		"OCI_DATA_SHA512=false", "OCI_API_REFERRER=false")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	// The suite exits 1 when anything fails, and the registry itself fails
	// some (e.g. sha512 blobs): only a run without a report is an error.
	err := cmd.Run()
	if !strings.Contains(out.String(), "API conformance:") {
		t.Fatalf("conformance suite against %s: %v\n%s", registry, err, out.String())
	}
	apis := map[string]string{}
	in := false
	var failures []string
	failing := false
	sc := bufio.NewScanner(bytes.NewReader(out.Bytes()))
	for sc.Scan() {
		line := sc.Text()
		detail := strings.HasPrefix(strings.TrimSpace(line), "- ")
		if strings.HasSuffix(line, ": FAIL") || detail && failing {
			failures = append(failures, line)
		}
		if !detail {
			failing = strings.HasSuffix(line, ": FAIL")
		}
		switch {
		case line == "API conformance:":
			in = true
		case in && strings.TrimSpace(line) == "":
			in = false
		case in:
			name, status, ok := strings.Cut(strings.TrimSpace(line), ":")
			if ok {
				apis[strings.TrimRight(name, ".")] = strings.TrimSpace(status)
			}
		}
	}
	t.Logf("conformance against %s: %v\nfailed:\n%s", registry, apis, strings.Join(failures, "\n"))
	return apis
}
