package p2p

import (
	"context"
	"fmt"
	"io"
	"net/http"

	"github.com/opencontainers/go-digest"
	"golang.org/x/time/rate"
)

// upstream reaches one repository of an upstream registry on behalf of one
// client: with that client's Authorization header (the mirror passes it
// through and forgets it), or with preheat's pull-secret transport.
type upstream struct {
	reg    *Registry
	repo   string
	client *http.Client
	authz  string
	count  func(kind string)
}

func (u *upstream) url(kind, ref string) string {
	return fmt.Sprintf("%s/v2/%s/%s/%s", u.reg.URL.String(), u.repo, kind, ref)
}

func (u *upstream) do(ctx context.Context, kind, method, url string,
	hdr http.Header) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		return nil, fmt.Errorf("failed to build upstream request %s %s: %w", method, url, err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if u.authz != "" {
		req.Header.Set("Authorization", u.authz)
	}
	if u.count != nil {
		u.count(kind)
	}
	resp, err := u.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("upstream %s unreachable: %w", u.reg.URL.Host, err)
	}
	return resp, nil
}

// headBlob asks the upstream whether these credentials may read d, and its size.
func (u *upstream) headBlob(ctx context.Context, d digest.Digest) (*http.Response, error) {
	resp, err := u.do(ctx, "head", http.MethodHead, u.url("blobs", d.String()), nil)
	if err != nil {
		return nil, err
	}
	_ = resp.Body.Close() // HEAD has no body
	return resp, nil
}

// limitedReader throttles reads through a shared per-node limiter.
type limitedReader struct {
	ctx context.Context
	r   io.Reader
	lim *rate.Limiter
}

func (l *limitedReader) Read(b []byte) (int, error) {
	if l.lim == nil {
		return l.r.Read(b)
	}
	if len(b) > l.lim.Burst() {
		b = b[:l.lim.Burst()]
	}
	n, err := l.r.Read(b)
	if n > 0 {
		if werr := l.lim.WaitN(l.ctx, n); werr != nil {
			return n, fmt.Errorf("rate limiter: %w", werr)
		}
	}
	return n, err
}

func newLimiter(bytesPerSec int64) *rate.Limiter {
	if bytesPerSec <= 0 {
		return nil
	}
	burst := int(min(bytesPerSec, 256<<10))
	return rate.NewLimiter(rate.Limit(bytesPerSec), burst)
}
