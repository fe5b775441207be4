package p2p

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"
)

// PreheatRequest asks a node to pull an image's blobs into its cache.
type PreheatRequest struct {
	Image string `json:"image"`
}

// PreheatResult says what a preheat did on one node.
type PreheatResult struct {
	Node    string  `json:"node"`
	Image   string  `json:"image"`
	Blobs   int     `json:"blobs"`
	Bytes   int64   `json:"bytes"`
	Seconds float64 `json:"seconds"`
}

var manifestAccept = strings.Join([]string{
	"application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json",
	"application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json",
}, ", ")

// Preheat pulls image (for this node's OS/architecture) into the cache, with
// the pull secret configured for its registry (anonymous without one), the
// same way a client pull would: from peers when they have or are fetching it.
// A later client pull still needs its own credentials to read the blobs.
func (p *Puller) Preheat(ctx context.Context, image string) (*PreheatResult, error) {
	start := time.Now()
	ref, err := name.ParseReference(image, name.WeakValidation)
	if err != nil {
		return nil, fmt.Errorf("invalid image %q: %w", image, err)
	}
	reg, err := p.registryFor(ref.Context().RegistryStr())
	if err != nil {
		return nil, err
	}
	up, err := p.preheatUpstream(ctx, reg, ref)
	if err != nil {
		return nil, err
	}
	body, err := p.resolveManifest(ctx, up, ref.Identifier())
	if err != nil {
		return nil, err
	}
	origin := reg.Host + "/" + up.repo
	if _, err := p.grants.addManifest("preheat|"+origin, body, p.cfg.MaxBlobBytes); err != nil {
		return nil, fmt.Errorf("manifest of %s: %w", image, err)
	}
	refs, _ := pullRefs(body, p.cfg.MaxBlobBytes) // addManifest parsed it already
	var blobs []descriptor
	for d, size := range refs {
		if size < 0 {
			return nil, fmt.Errorf("manifest of %s: blob %s has no size in [0, %d] (--max-blob-size)", image,
				d, p.cfg.MaxBlobBytes)
		}
		blobs = append(blobs, descriptor{Digest: d, Size: size})
	}
	res := &PreheatResult{Node: p.cfg.Self.Name, Image: image, Blobs: len(blobs)}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(3)
	for _, b := range blobs {
		res.Bytes += b.Size
		g.Go(func() error {
			return p.ensureBlob(gctx, blobJob{digest: b.Digest, size: b.Size, up: up, origin: origin,
				manifest: body})
		})
	}
	if err := g.Wait(); err != nil {
		return nil, fmt.Errorf("preheat %s: %w", image, err)
	}
	res.Seconds = time.Since(start).Seconds()
	return res, nil
}

func (p *Puller) preheatUpstream(ctx context.Context, reg *Registry, ref name.Reference) (*upstream,
	error) {
	var opts []name.Option
	if reg.URL.Scheme == "http" {
		opts = append(opts, name.Insecure)
	}
	upReg, err := name.NewRegistry(reg.URL.Host, opts...)
	if err != nil {
		return nil, fmt.Errorf("invalid upstream %q: %w", reg.URL, err)
	}
	auth := authn.Anonymous
	if cfg, ok := p.cfg.PullSecrets[reg.Host]; ok {
		auth = authn.FromConfig(cfg)
	}
	repo := ref.Context().RepositoryStr()
	rt, err := transport.NewWithContext(ctx, upReg, auth, p.cfg.Transport,
		[]string{upReg.Repo(repo).Scope(transport.PullScope)})
	if err != nil {
		return nil, fmt.Errorf("failed to authenticate to %s for %s: %w", reg.URL.Host, repo, err)
	}
	return &upstream{reg: reg, repo: repo, client: &http.Client{Transport: rt},
		count: func(kind string) { p.m.upstreamRequests.WithLabelValues(kind).Inc() }}, nil
}

// resolveManifest fetches a manifest; an index resolves to this node's platform.
func (p *Puller) resolveManifest(ctx context.Context, up *upstream, reference string) ([]byte, error) {
	for range 2 {
		resp, err := up.do(ctx, "manifest", http.MethodGet, up.url("manifests", reference),
			http.Header{"Accept": {manifestAccept}})
		if err != nil {
			return nil, err
		}
		body, err := io.ReadAll(io.LimitReader(resp.Body, maxManifestBytes))
		_ = resp.Body.Close() // fully read
		if err != nil || resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("manifest %s/%s:%s from %s: %s %v", up.reg.Host, up.repo, reference,
				up.reg.URL.Host, resp.Status, err)
		}
		var idx struct {
			Manifests []struct {
				Digest   digest.Digest `json:"digest"`
				Platform struct {
					OS           string `json:"os"`
					Architecture string `json:"architecture"`
				} `json:"platform"`
			} `json:"manifests"`
		}
		if err := json.Unmarshal(body, &idx); err != nil {
			return nil, fmt.Errorf("manifest of %s is not JSON: %w", reference, err)
		}
		if len(idx.Manifests) == 0 {
			return body, nil
		}
		reference = ""
		for _, m := range idx.Manifests {
			if m.Platform.OS == runtime.GOOS && m.Platform.Architecture == runtime.GOARCH {
				reference = m.Digest.String()
				break
			}
		}
		if reference == "" {
			return nil, fmt.Errorf("image index has no manifest for %s/%s", runtime.GOOS, runtime.GOARCH)
		}
	}
	return nil, fmt.Errorf("image index nested in an image index: not supported")
}
