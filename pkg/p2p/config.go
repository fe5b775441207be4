package p2p

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/berth-dev/berth/pkg/p2p/peers"
)

// Registry is one upstream registry the mirror serves.
type Registry struct {
	// Host is the name in image references and in containerd's ?ns= ("ghcr.io").
	Host string
	// URL is where the registry really is ("https://ghcr.io", "http://10.0.0.1:5000").
	URL *url.URL
}

// ParseRegistry parses "host=url" or a bare "url" (host taken from the URL).
func ParseRegistry(s string) (Registry, error) {
	host, raw, ok := strings.Cut(s, "=")
	if !ok {
		raw = s
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return Registry{}, fmt.Errorf("invalid registry %q: want host=URL or URL, e.g. "+
			"docker.io=https://registry-1.docker.io", s)
	}
	if !ok {
		host = u.Host
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	return Registry{Host: host, URL: u}, nil
}

// Config is everything a Puller needs. Zero durations and sizes get defaults.
type Config struct {
	// Self is this node's peer identity (node name, advertised peer address).
	Self peers.Peer
	// MirrorAddr is the loopback address containerd uses ("127.0.0.1:5001").
	MirrorAddr string
	// PeerAddr is where the peer API listens (":5002").
	PeerAddr string
	// Registries are the mirrored upstreams; the first one also serves clients that send no ?ns=.
	Registries []Registry
	// Discovery returns the live peers, Self included.
	Discovery peers.Discovery

	CacheDir      string
	CacheMaxBytes int64
	GCHigh, GCLow float64

	// PieceSize is the unit of peer transfer and verification (default 1 MiB).
	PieceSize int64
	// PieceWait is how long a peer holds a piece request open while it is still downloading that piece.
	PieceWait time.Duration
	// PeerKey signs peer requests (HMAC-SHA256); every puller of a cluster shares it.
	PeerKey []byte
	// UploadBytesPerSec and DownloadBytesPerSec limit peer uploads and all downloads (0: unlimited).
	UploadBytesPerSec, DownloadBytesPerSec int64
	// MaxBlobBytes bounds the size of one blob (default 64 GiB): a size a
	// manifest, an upstream or a peer announces beyond it is refused, so no
	// request can make the puller plan a download of any size it names.
	MaxBlobBytes int64
	// GrantTTL is how long a fetched manifest lets its credentials (or a peer) read the blobs it
	// references.
	GrantTTL time.Duration
	// PullSecrets are used by preheat only (clients always bring their own credentials), by registry host.
	PullSecrets map[string]authn.AuthConfig
	// Registerer receives the metrics (nil: not registered).
	Registerer prometheus.Registerer
	// Transport reaches upstreams and peers (nil: a clone of http.DefaultTransport).
	Transport http.RoundTripper

	// uploadFault, set only by tests (export_test.go), damages every piece served to peers in
	// place and returns the digest to announce ("" for the true one). A corrupt piece from a
	// real peer cannot be caused on demand: its disk or NIC would have to fail.
	uploadFault func(piece []byte) (announce string)
}

// Piece sizes a puller uses or serves: a peer asking for pieces of another
// size outside these bounds is refused, so no request sizes a buffer.
const (
	minPieceSize = 64 << 10
	maxPieceSize = 16 << 20
)

func (c *Config) setDefaults() {
	if c.PieceSize == 0 {
		c.PieceSize = 1 << 20
	}
	if c.PieceWait == 0 {
		c.PieceWait = 15 * time.Second
	}
	if c.GCHigh == 0 {
		c.GCHigh = 0.9
	}
	if c.GCLow == 0 {
		c.GCLow = 0.8
	}
	if c.MaxBlobBytes == 0 {
		c.MaxBlobBytes = 64 << 30
	}
	if c.GrantTTL == 0 {
		c.GrantTTL = time.Hour
	}
	if c.Transport == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = 64
		c.Transport = t
	}
	if c.Discovery == nil {
		c.Discovery = peers.Static{c.Self}
	}
}

func (c *Config) validate() error {
	switch {
	case c.Self.Name == "":
		return fmt.Errorf("node name is required (--node-name, usually from the downward API spec.nodeName)")
	case c.Self.Addr == "":
		return fmt.Errorf("advertised peer address is required (--peer-advertise-address host:port)")
	case len(c.Registries) == 0:
		return fmt.Errorf("at least one registry is required (--registry host=URL)")
	case len(c.PeerKey) == 0:
		return fmt.Errorf("peer key is required: the peer API is never served unsigned " +
			"(--peer-key-file, or the p2p-puller-peer-key Secret)")
	case c.CacheDir == "":
		return fmt.Errorf("cache directory is required (--cache-dir)")
	case c.PieceSize < minPieceSize || c.PieceSize > maxPieceSize:
		return fmt.Errorf("piece size %d is out of range: want 64Ki to 16Mi, e.g. --piece-size=1Mi",
			c.PieceSize)
	case c.MaxBlobBytes < c.PieceSize:
		return fmt.Errorf("max blob size %d is below the piece size: want e.g. --max-blob-size=64Gi",
			c.MaxBlobBytes)
	}
	return nil
}
