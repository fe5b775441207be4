package p2pbench

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

	"golang.org/x/sync/errgroup"
)

// maxManifest bounds what a client reads of a manifest (registries cap
// manifests at 4 MiB too).
const maxManifest = 4 << 20

// layerConcurrency is containerd's default max_concurrent_downloads.
const layerConcurrency = 3

// Client pulls images over HTTP from inside one host, as containerd does
// through hosts.toml: plain HTTP to the mirror on loopback, or to the registry.
type Client struct {
	http *http.Client
}

// NewClient returns a client whose connections start inside h.
func NewClient(h *Host) *Client {
	return &Client{http: &http.Client{Transport: &http.Transport{DialContext: h.DialContext,
		MaxIdleConnsPerHost: layerConcurrency + 1, DisableCompression: true}}}
}

// Close drops the client's idle connections.
func (c *Client) Close() { c.http.CloseIdleConnections() }

type descriptor struct {
	Digest string `json:"digest"`
	Size   int64  `json:"size"`
}

type manifest struct {
	Config descriptor   `json:"config"`
	Layers []descriptor `json:"layers"`
}

// Pull fetches base/v2/repo/manifests/tag, then its config and layers
// (layerConcurrency at a time), reads every blob and checks its size and
// digest. It returns the blob bytes read.
func (c *Client) Pull(ctx context.Context, base, repo, tag string) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v2/"+repo+"/manifests/"+tag, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json, "+
		"application/vnd.docker.distribution.manifest.v2+json")
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, fmt.Errorf("manifest %s:%s: %w", repo, tag, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("manifest %s:%s: %s", repo, tag, resp.Status)
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxManifest+1))
	if err != nil || len(raw) > maxManifest {
		return 0, fmt.Errorf("manifest %s:%s: larger than %d bytes or unreadable: %v", repo, tag, maxManifest, err)
	}
	var m manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return 0, fmt.Errorf("manifest %s:%s is not an image manifest: %w", repo, tag, err)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(layerConcurrency)
	blobs := append([]descriptor{m.Config}, m.Layers...)
	sizes := make([]int64, len(blobs))
	for i, d := range blobs {
		g.Go(func() error {
			var err error
			sizes[i], err = c.blob(gctx, base, repo, d)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return 0, err
	}
	var total int64
	for _, s := range sizes {
		total += s
	}
	return total, nil
}

func (c *Client) blob(ctx context.Context, base, repo string, d descriptor) (int64, error) {
	want, ok := strings.CutPrefix(d.Digest, "sha256:")
	if !ok {
		return 0, fmt.Errorf("blob digest %q: want sha256:<hex>", d.Digest)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v2/"+repo+"/blobs/"+d.Digest, nil)
	if err != nil {
		return 0, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, fmt.Errorf("blob %s: %w", d.Digest, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("blob %s: %s", d.Digest, resp.Status)
	}
	h := sha256.New()
	n, err := io.Copy(h, io.LimitReader(resp.Body, d.Size+1))
	if err != nil {
		return n, fmt.Errorf("blob %s after %d bytes: %w", d.Digest, n, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); n != d.Size || got != want {
		return n, fmt.Errorf("blob %s: got %d bytes with digest sha256:%s, want %d", d.Digest, n, got, d.Size)
	}
	return n, nil
}
