package p2p

import (
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"time"
)

// peerTLSName is the subject of the peer certificate; clients do not check
// names, they pin the key.
const peerTLSName = "berth-p2p-peer"

// PeerTLS returns the TLS configurations of the peer API, both derived from
// the cluster's peer key: every puller derives the same Ed25519 key (seed =
// HMAC-SHA256(peer key, "berth-p2p-tls-ed25519")) and a self-signed
// certificate for it; servers and clients require the other side to present
// that same public key (TLS 1.3, mutual). So the peer traffic (layers of
// private images, grants) is encrypted, and only holders of the peer key
// can even open a connection, with no certificate to issue or rotate beyond
// the peer key Secret itself.
func PeerTLS(peerKey []byte) (server, client *tls.Config, err error) {
	if len(peerKey) == 0 {
		return nil, nil, errors.New("empty peer key: peer TLS needs the cluster's peer key")
	}
	m := hmac.New(sha256.New, peerKey)
	m.Write([]byte("berth-p2p-tls-ed25519"))
	priv := ed25519.NewKeyFromSeed(m.Sum(nil))
	pub := priv.Public().(ed25519.PublicKey)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: peerTLSName},
		DNSNames:     []string{peerTLSName},
		NotBefore:    time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:     time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(nil, tmpl, tmpl, pub, priv) // Ed25519 signing takes no randomness
	if err != nil {
		return nil, nil, fmt.Errorf("failed to create the peer TLS certificate: %w", err)
	}
	cert := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: priv}
	verify := func(raw [][]byte, _ [][]*x509.Certificate) error {
		if len(raw) == 0 {
			return errors.New("peer presented no certificate")
		}
		c, err := x509.ParseCertificate(raw[0])
		if err != nil {
			return fmt.Errorf("peer certificate: %w", err)
		}
		if k, ok := c.PublicKey.(ed25519.PublicKey); !ok || !k.Equal(pub) {
			return errors.New("peer certificate is not derived from this cluster's peer key: is it using " +
				"the same peer key?")
		}
		return nil
	}
	server = &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert},
		ClientAuth: tls.RequireAnyClientCert, VerifyPeerCertificate: verify,
		// HTTP/2: one connection per pair of nodes carries every piece in flight. Over
		// HTTP/1.1 each piece had its own connection, idle while its long-poll waited.
		NextProtos: []string{"h2", "http/1.1"}}
	client = &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert},
		// The chain is not checked against a CA: VerifyPeerCertificate pins the derived key.
		InsecureSkipVerify:    true, //nolint:gosec // the peer's key is pinned below
		VerifyPeerCertificate: verify}
	return server, client, nil
}

// PeerClient returns an HTTP client for the peer API of a cluster with this
// peer key (the preheat CLI and tests use it with SignedRequest).
func PeerClient(peerKey []byte) (*http.Client, error) {
	return newPeerClient(peerKey, nil)
}

// newPeerClient is PeerClient over base's settings (a clone of
// http.DefaultTransport when base is not an *http.Transport).
func newPeerClient(peerKey []byte, base http.RoundTripper) (*http.Client, error) {
	_, clientTLS, err := PeerTLS(peerKey)
	if err != nil {
		return nil, err
	}
	t, ok := base.(*http.Transport)
	if !ok {
		t = http.DefaultTransport.(*http.Transport)
	}
	t = t.Clone()
	t.TLSClientConfig = clientTLS
	t.MaxIdleConnsPerHost = max(t.MaxIdleConnsPerHost, 64)
	return &http.Client{Transport: t}, nil
}
