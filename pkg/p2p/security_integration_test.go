//go:build integration

package p2p_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry/handlers"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"
	"github.com/sirupsen/logrus"

	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/pkg/p2p"
)

// startForeignURLRegistry starts a real distribution/v3 registry that, like
// Docker Hub, accepts non-distributable layers with URLs: it does not check
// that such a layer exists in the repository.
func startForeignURLRegistry(t *testing.T) string {
	t.Helper()
	cfg := &configuration.Configuration{}
	cfg.Storage = configuration.Storage{"filesystem": configuration.Parameters{"rootdirectory": t.TempDir()}}
	cfg.HTTP.Secret = "berth-test-registry"
	cfg.Log.AccessLog.Disabled = true
	cfg.Validation.Manifests.URLs.Allow = []string{"^https://"}
	if os.Getenv("BERTH_REGISTRY_LOG") == "" {
		logrus.SetOutput(io.Discard)
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv := &http.Server{Addr: fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)),
		Handler: handlers.NewApp(ctx, cfg)}
	go func() { _ = srv.ListenAndServe() }()
	t.Cleanup(func() { _ = srv.Close(); cancel() })
	return "http://" + srv.Addr
}

// aclFront stands in front of a real registry and enforces what a
// registry's token service does per repository: repositories under
// "private/" need alice's password, the rest are public (read and push).
// distribution's htpasswd auth is all-or-nothing, hence this front. It
// counts the blob GETs it passes.
func aclFront(t *testing.T, upstream string) (string, *atomic.Int64) {
	t.Helper()
	target, _ := url.Parse(upstream)
	proxy := httputil.NewSingleHostReverseProxy(target)
	var blobGets atomic.Int64
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, pw, ok := r.BasicAuth()
		private := strings.HasPrefix(r.URL.Path, "/v2/private/") ||
			strings.HasPrefix(r.URL.Query().Get("from"), "private/")
		if private && (!ok || u != user || pw != password) {
			w.Header().Set("WWW-Authenticate", `Basic realm="berth-test"`)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = io.WriteString(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`)
			return
		}
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") {
			blobGets.Add(1)
		}
		r.Header.Del("Authorization")
		proxy.ServeHTTP(w, r)
	})
	srv := &http.Server{Addr: fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)), Handler: h}
	go func() { _ = srv.ListenAndServe() }()
	t.Cleanup(func() { _ = srv.Close() })
	base := "http://" + srv.Addr
	waitFor(t, "the ACL front to listen", func() bool {
		resp, err := http.Get(base + "/v2/")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil
	})
	return base, &blobGets
}

// pushBlob uploads data to repo of the registry at base (POST then PUT).
func pushBlob(t *testing.T, base, repo string, data []byte) digest.Digest {
	t.Helper()
	d := digest.FromBytes(data)
	resp, err := http.Post(base+"/v2/"+repo+"/blobs/uploads/", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusAccepted || err != nil {
		t.Fatalf("start upload to %s: %s (Location %q)", repo, resp.Status, resp.Header.Get("Location"))
	}
	b, _ := url.Parse(base)
	loc = b.ResolveReference(loc)
	q := loc.Query()
	q.Set("digest", d.String())
	loc.RawQuery = q.Encode()
	req, _ := http.NewRequest(http.MethodPut, loc.String(), bytes.NewReader(data))
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("upload blob to %s: %s", repo, resp.Status)
	}
	return d
}

// putManifest pushes an OCI image manifest to repo:tag of the registry at base.
func putManifest(t *testing.T, base, repo, tag string, manifest any) {
	t.Helper()
	body, _ := json.Marshal(manifest)
	req, _ := http.NewRequest(http.MethodPut, base+"/v2/"+repo+"/manifests/"+tag, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	msg, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("push manifest %s:%s: %s %s", repo, tag, resp.Status, msg)
	}
}

// answer is one complete mirror answer.
type answer struct {
	status int
	header http.Header
	body   []byte
	err    error // reading the body failed: the answer was cut
}

// mirrorGet sends method path (with auth, if any) to a node's mirror and
// reads the whole answer.
func mirrorGet(t *testing.T, nd *node, method, path string, auth *authn.Basic) answer {
	t.Helper()
	// A mirror that commits to an answer it cannot complete would hang the test.
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, method, "http://"+nd.mirror+path, nil)
	req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json, "+
		"application/vnd.oci.image.index.v1+json")
	if auth != nil {
		req.SetBasicAuth(auth.Username, auth.Password)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return answer{err: err}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return answer{status: resp.StatusCode, header: resp.Header, body: body, err: err}
}

// ociErrorCode checks that a is a complete OCI error answer and returns its code.
func (a answer) ociErrorCode(t *testing.T, what string) string {
	t.Helper()
	if a.err != nil {
		t.Errorf("%s: answer cut: %v", what, a.err)
		return ""
	}
	var e struct {
		Errors []struct{ Code, Message string } `json:"errors"`
	}
	if err := json.Unmarshal(a.body, &e); err != nil || len(e.Errors) == 0 {
		t.Errorf("%s: %d with body %q, want an OCI error body", what, a.status, a.body)
		return ""
	}
	return e.Errors[0].Code
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// TestPrivateLayerNeedsUpstreamAccess: an anonymous attacker who can push to
// a public repository names a private layer's digest in a manifest (as
// subject, as an artifact blob, as a non-distributable layer the registry
// does not check), fetches that manifest through the mirrors, then asks for
// the private layer: neither the node that has it cached nor a node that
// would fetch it from that peer hands it out. A client of a public
// repository that really holds the same layer still gets it.
func TestPrivateLayerNeedsUpstreamAccess(t *testing.T) {
	upURL := startForeignURLRegistry(t)
	front, blobGets := aclFront(t, upURL)
	alice := &authn.Basic{Username: user, Password: password}
	img, err := random.Image(1<<20, 1)
	if err != nil {
		t.Fatal(err)
	}
	push := func(base, repoTag string) {
		u, _ := url.Parse(base)
		tag, err := name.NewTag(u.Host+"/"+repoTag, name.Insecure)
		if err == nil {
			err = remote.Write(tag, img, remote.WithAuth(alice))
		}
		if err != nil {
			t.Fatalf("push %s: %v", repoTag, err)
		}
	}
	push(front, "private/app:v1")
	layers, _ := img.Layers()
	secret, _ := layers[0].Digest()
	nodes := startNodesURL(t, 2, front)
	if err := pull(t.Context(), nodes[0].ref(t, "private/app:v1"), alice); err != nil {
		t.Fatalf("alice's pull: %v", err)
	}

	cfg := pushBlob(t, front, "pub/evil", []byte("{}"))
	config := map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg, "size": 2}
	ptr := map[string]any{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
		"digest": secret.String(), "size": 1 << 20}
	foreign := map[string]any{"mediaType": "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
		"digest": secret.String(), "size": 1 << 20, "urls": []string{"https://example.invalid/layer"}}
	manifests := map[string]map[string]any{
		"subject": {"config": config, "layers": []any{}, "subject": ptr},
		"blobs":   {"config": config, "layers": []any{}, "blobs": []any{ptr}},
		"foreign": {"config": config, "layers": []any{foreign}},
	}
	for tag, m := range manifests {
		m["schemaVersion"] = 2
		m["mediaType"] = "application/vnd.oci.image.manifest.v1+json"
		putManifest(t, front, "pub/evil", tag, m)
		for _, nd := range nodes {
			if a := mirrorGet(t, nd, http.MethodGet, "/v2/pub/evil/manifests/"+tag, nil); a.status != http.StatusOK {
				t.Fatalf("attacker's manifest %s through %s: %d %s", tag, nd.name, a.status, a.body)
			}
			for _, method := range []string{http.MethodHead, http.MethodGet} {
				what := fmt.Sprintf("%s of the private layer after manifest %q, through %s", method, tag, nd.name)
				a := mirrorGet(t, nd, method, "/v2/pub/evil/blobs/"+secret.String(), nil)
				if a.status == http.StatusOK {
					t.Errorf("%s: 200 (%d bytes): the private layer leaked", what, len(a.body))
					continue
				}
				if method == http.MethodGet {
					if code := a.ociErrorCode(t, what); code != "BLOB_UNKNOWN" {
						t.Errorf("%s: code %q, want BLOB_UNKNOWN (the upstream's answer for pub/evil)", what, code)
					}
				}
			}
		}
	}

	// The same layer really pushed to a public repository: the upstream
	// confirms it to a HEAD, and the node's cached copy serves it.
	push(upURL, "pub/copy:v1")
	before := blobGets.Load()
	if err := pull(t.Context(), nodes[0].ref(t, "pub/copy:v1"), authn.Anonymous); err != nil {
		t.Errorf("anonymous pull of the public copy: %v", err)
	}
	if got := blobGets.Load() - before; got != 0 {
		t.Errorf("public copy cost the upstream %d blob GETs, want the cached copy served after a HEAD", got)
	}
}

// TestDeclaredSizesAreUntrusted: manifests declaring absurd or wrong sizes
// for real blobs cost the client an error or the real blob, never the
// puller's life, and every answer is complete.
func TestDeclaredSizesAreUntrusted(t *testing.T) {
	up := testenv.StartRegistry(t)
	_, img := up.PushRandomImage(t, "app:v1", 1, 1<<20)
	layers, _ := img.Layers()
	ld, _ := layers[0].Digest()
	m, _ := img.Manifest()
	for _, tt := range []struct {
		tag    string
		size   int64
		status int
	}{
		{"huge", 9000000000000000000, http.StatusOK}, // out of bounds: the upstream's size is used
		{"small", 1000, http.StatusBadGateway},       // in bounds but wrong: the upstream's length disagrees
	} {
		manifest := map[string]any{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
			"config": map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json",
				"digest": m.Config.Digest.String(), "size": m.Config.Size},
			"layers": []any{map[string]any{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
				"digest": ld.String(), "size": tt.size}}}
		putManifest(t, up.URL, "app", tt.tag, manifest)
		nd := startNodes(t, 1, up)[0] // a cold cache
		if a := mirrorGet(t, nd, http.MethodGet, "/v2/app/manifests/"+tt.tag, nil); a.status != http.StatusOK {
			t.Fatalf("manifest %s: %d %s", tt.tag, a.status, a.body)
		}
		a := mirrorGet(t, nd, http.MethodGet, "/v2/app/blobs/"+ld.String(), nil)
		switch {
		case a.err != nil:
			t.Errorf("layer after manifest %q (size %d): answer cut: %v", tt.tag, tt.size, a.err)
		case a.status != tt.status:
			t.Errorf("layer after manifest %q (size %d): %d %s, want %d", tt.tag, tt.size, a.status, a.body, tt.status)
		case a.status == http.StatusOK && digest.FromBytes(a.body).String() != ld.String():
			t.Errorf("layer after manifest %q: %d bytes that do not match %s", tt.tag, len(a.body), ld)
		case a.status != http.StatusOK:
			a.ociErrorCode(t, "layer after manifest "+tt.tag)
		}
		// A later pull of the real image works: the puller is alive and unhurt.
		if err := pull(t.Context(), nd.ref(t, "app:v1"), authn.Anonymous); err != nil {
			t.Errorf("pull after manifest %q: %v", tt.tag, err)
		}
	}
}

// TestMirrorErrorsAreComplete: a blob the upstream does not have is a
// complete 404 BLOB_UNKNOWN answer, also when a fetched manifest names it
// (the mirror does not commit to 200 before the first byte).
func TestMirrorErrorsAreComplete(t *testing.T) {
	upURL := startForeignURLRegistry(t)
	nodes := startNodesURL(t, 1, upURL)
	nd := nodes[0]
	missing := digest.FromBytes(randomBytes(64))
	cfg := pushBlob(t, upURL, "app", []byte("{}"))
	putManifest(t, upURL, "app", "v1", map[string]any{"schemaVersion": 2,
		"mediaType": "application/vnd.oci.image.manifest.v1+json",
		"config": map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json",
			"digest": cfg, "size": 2},
		"layers": []any{map[string]any{"mediaType": "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
			"digest": missing, "size": 5 << 20, "urls": []string{"https://example.invalid/layer"}}}})
	check := func(what string) {
		t.Helper()
		a := mirrorGet(t, nd, http.MethodGet, "/v2/app/blobs/"+missing.String(), nil)
		if a.status != http.StatusNotFound {
			t.Errorf("%s: status %d (body %q, err %v), want 404", what, a.status, a.body, a.err)
		}
		if code := a.ociErrorCode(t, what); code != "BLOB_UNKNOWN" {
			t.Errorf("%s: code %q, want BLOB_UNKNOWN", what, code)
		}
		if h := mirrorGet(t, nd, http.MethodHead, "/v2/app/blobs/"+missing.String(),
			nil); h.status != http.StatusNotFound || h.err != nil {
			t.Errorf("HEAD, %s: %d (err %v), want 404", what, h.status, h.err)
		}
	}
	check("no manifest fetched")
	if a := mirrorGet(t, nd, http.MethodGet, "/v2/app/manifests/v1", nil); a.status != http.StatusOK {
		t.Fatalf("manifest: %d %s", a.status, a.body)
	}
	check("after a manifest naming it")
}

// captured is a signed peer request as seen on the wire.
type captured struct {
	method, path, query string
	header              http.Header
	body                []byte
}

// capture signs a peer request with the cluster key and records it as an
// eavesdropper on the node network would, without it reaching any node.
func capture(t *testing.T, key []byte, method, path, query string, body []byte, hdr http.Header) captured {
	t.Helper()
	got := make(chan captured, 1)
	rec := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- captured{method: r.Method, path: r.URL.Path, query: r.URL.RawQuery,
			header: r.Header.Clone(), body: b}
	}))
	serverTLS, _, err := p2p.PeerTLS(key)
	if err != nil {
		t.Fatal(err)
	}
	rec.TLS = serverTLS
	rec.StartTLS()
	defer rec.Close()
	client, err := p2p.PeerClient(key)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := p2p.SignedRequest(t.Context(), client, key, "node-x", method,
		rec.Listener.Addr().String(), path, query, body, hdr)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return <-got
}

// replay sends c to addr, with query and body replaced when not nil, over
// the peer TLS of key (as a node, or whoever holds the key, would).
func (c captured) replay(t *testing.T, key []byte, addr string, query *string, body []byte) int {
	t.Helper()
	client, err := p2p.PeerClient(key)
	if err != nil {
		t.Fatal(err)
	}
	q, b := c.query, c.body
	if query != nil {
		q = *query
	}
	if body != nil {
		b = body
	}
	u := url.URL{Scheme: "https", Host: addr, Path: c.path, RawQuery: q}
	req, _ := http.NewRequestWithContext(t.Context(), c.method, u.String(), bytes.NewReader(b))
	for k, v := range c.header {
		req.Header[k] = v
	}
	req.Header.Del("Content-Length")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	// One multiplexed connection per pair of nodes: HTTP/1.1 opened one per piece in
	// flight, each idling between pieces, and the chain moved slower (docs/p2p.md).
	if resp.ProtoMajor != 2 {
		t.Errorf("the peer API answered over %s, want HTTP/2", resp.Proto)
	}
	return resp.StatusCode
}

// TestPeerRequestsCannotBeReplayed: a captured peer request works once and
// only as signed: replayed, or with another query (a whole blob as one
// piece), another manifest or another image, it is refused; and a signed
// request cannot ask for a piece larger than the bound.
func TestPeerRequestsCannotBeReplayed(t *testing.T) {
	up := testenv.StartRegistry(t)
	ref, img := up.PushRandomImage(t, "app:v1", 1, 1<<20)
	otherRef, _ := up.PushRandomImage(t, "other:v1", 1, 1<<20)
	layers, _ := img.Layers()
	ld, _ := layers[0].Digest()
	ls, _ := layers[0].Size()
	raw, _ := img.RawManifest()
	nd := startNodes(t, 1, up)[0]
	if err := pull(t.Context(), nd.ref(t, "app:v1"), authn.Anonymous); err != nil {
		t.Fatal(err)
	}
	addr := nd.peer.Addr
	repo := "repo=" + url.QueryEscape(up.Host+"/app")
	otherManifest := []byte(`{"schemaVersion":2,"layers":[{"digest":"` + ld.String() + `","size":1}]}`)

	grant := capture(t, nd.key, http.MethodPost, "/p2p/v1/grants", repo, raw, nil)
	if got := grant.replay(t, nd.key, addr, nil, otherManifest); got != http.StatusUnauthorized {
		t.Errorf("grant with another manifest body: %d, want 401", got)
	}
	if got := grant.replay(t, nd.key, addr, nil, nil); got != http.StatusOK {
		t.Fatalf("grant as signed: %d, want 200", got)
	}
	if got := grant.replay(t, nd.key, addr, nil, nil); got != http.StatusUnauthorized {
		t.Errorf("grant replayed: %d, want 401", got)
	}

	path := fmt.Sprintf("/p2p/v1/blobs/%s/pieces/0", ld)
	q := fmt.Sprintf("piece=%d&size=%d&wait=0s", 256<<10, ls)
	whole := fmt.Sprintf("piece=%d&size=%d&wait=0s", ls, ls)
	piece := capture(t, nd.key, http.MethodGet, path, q, nil,
		http.Header{"X-Berth-Manifest": {digest.FromBytes(raw).String()}})
	if got := piece.replay(t, nd.key, addr, &whole, nil); got != http.StatusUnauthorized {
		t.Errorf("piece request with piece=<blob size>: %d, want 401", got)
	}
	if got := piece.replay(t, nd.key, addr, nil, nil); got != http.StatusOK {
		t.Errorf("piece request as signed: %d, want 200", got)
	}
	if got := piece.replay(t, nd.key, addr, nil, nil); got != http.StatusUnauthorized {
		t.Errorf("piece request replayed: %d, want 401", got)
	}
	tooBig := fmt.Sprintf("piece=%d&size=%d&wait=0s", 1<<30, int64(1)<<31)
	big := capture(t, nd.key, http.MethodGet, path, tooBig, nil,
		http.Header{"X-Berth-Manifest": {digest.FromBytes(raw).String()}})
	if got := big.replay(t, nd.key, addr, nil, nil); got != http.StatusBadRequest {
		t.Errorf("signed piece request for 1 GiB pieces: %d, want 400", got)
	}

	preheat := capture(t, nd.key, http.MethodPost, "/p2p/v1/preheat", "",
		[]byte(fmt.Sprintf(`{"image": %q}`, ref)), nil)
	if got := preheat.replay(t, nd.key, addr, nil,
		[]byte(fmt.Sprintf(`{"image": %q}`, otherRef))); got != http.StatusUnauthorized {
		t.Errorf("preheat with another image: %d, want 401", got)
	}
}
