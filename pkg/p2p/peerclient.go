package p2p

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/pkg/p2p/peers"
)

// peerCall sends a signed request to a peer's API.
func (p *Puller) peerCall(ctx context.Context, method string, to peers.Peer, path, query string,
	body []byte, hdr http.Header) (*http.Response, error) {
	return SignedRequest(ctx, p.peerClient, p.cfg.PeerKey, p.cfg.Self.Name, method, to.Addr, path,
		query, body, hdr)
}

// SignedRequest sends one peer-API request signed with key as node, over
// TLS: c must come from PeerClient with the same key. The preheat CLI uses
// it too.
func SignedRequest(ctx context.Context, c *http.Client, key []byte, node, method, addr, path,
	query string, body []byte, hdr http.Header) (*http.Response, error) {
	u := url.URL{Scheme: "https", Host: addr, Path: path, RawQuery: query}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("failed to build peer request %s %s: %w", method, u.String(), err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	var nb [16]byte
	_, _ = rand.Read(nb[:]) // crypto/rand never fails
	nonce := hex.EncodeToString(nb[:])
	req.Header.Set(hdrNode, node)
	req.Header.Set(hdrTime, ts)
	req.Header.Set(hdrNonce, nonce)
	req.Header.Set(hdrSig, sign(key, node, ts, nonce, method, path, u.RawQuery,
		req.Header.Get(hdrManifest), body))
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("peer %s: %w", addr, err)
	}
	return resp, nil
}

// closeBody reads what is left of an answer (error bodies, a tracker's JSON
// tail) before closing it: a body closed unread costs its keep-alive
// connection, and a new dial per 404 under a burst.
func closeBody(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body,
		64<<10)) // best effort: past that, a new connection is cheaper
	_ = resp.Body.Close()
}

func peerError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 512)) // best effort: the status says enough
	return fmt.Errorf("peer answered %s: %s", resp.Status, bytes.TrimSpace(b))
}

// peerTrack registers this node at tracker for d and returns the nodes before it.
func (p *Puller) peerTrack(ctx context.Context, tracker peers.Peer, d digest.Digest) ([]peers.Peer,
	error) {
	body, _ := json.Marshal(p.cfg.Self) // a struct of strings always marshals
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := p.peerCall(ctx, http.MethodPost, tracker, "/p2p/v1/track/"+d.String(), "", body, nil)
	if err != nil {
		return nil, err
	}
	defer closeBody(resp)
	if resp.StatusCode != http.StatusOK {
		return nil, peerError(resp)
	}
	// A tracker lists each node at most once: bound what we read by the
	// cluster's size rather than by what the tracker sends.
	limit := int64(len(p.cfg.Discovery.Peers())+1) * 1024
	var before []peers.Peer
	if err := json.NewDecoder(io.LimitReader(resp.Body, limit)).Decode(&before); err != nil {
		return nil, fmt.Errorf("bad answer from tracker %s (at most %d bytes for this cluster): %w",
			tracker.Name, limit, err)
	}
	return before, nil
}

// peerGrant presents a manifest, fetched from the upstream repository repo
// (registry/repo) by our client, to src.
func (p *Puller) peerGrant(ctx context.Context, src peers.Peer, repo string, manifest []byte) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	q := url.Values{"repo": {repo}}.Encode()
	resp, err := p.peerCall(ctx, http.MethodPost, src, "/p2p/v1/grants", q, manifest, nil)
	if err != nil {
		return err
	}
	defer closeBody(resp)
	if resp.StatusCode != http.StatusOK {
		return peerError(resp)
	}
	return nil
}

// peerPiece fetches piece i of dl from src. nil data and nil error mean src
// does not have it (yet).
func (p *Puller) peerPiece(ctx context.Context, src peers.Peer, dl *download, md digest.Digest,
	i int, wait time.Duration) ([]byte, string, error) {
	q := url.Values{"size": {strconv.FormatInt(dl.size, 10)},
		"piece": {strconv.FormatInt(dl.pieceSize, 10)}, "wait": {wait.String()}, "stream": {"1"}}
	// The whole piece must arrive well within the wait plus a transfer budget;
	// a peer that stalls mid-piece is treated like a dead one.
	ctx, cancel := context.WithTimeout(ctx, wait+30*time.Second)
	defer cancel()
	resp, err := p.peerCall(ctx, http.MethodGet, src,
		fmt.Sprintf("/p2p/v1/blobs/%s/pieces/%d", dl.digest, i), q.Encode(), nil,
		http.Header{hdrManifest: {md.String()}})
	if err != nil {
		return nil, "", err
	}
	defer closeBody(resp)
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound:
		return nil, "", nil
	default:
		return nil, "", peerError(resp)
	}
	_, n := dl.pieceRange(i)
	if resp.ContentLength >= 0 && resp.ContentLength != n {
		return nil, "", fmt.Errorf("piece %d from %s: %d bytes announced, want %d", i, src.Name,
			resp.ContentLength, n)
	}
	body := &limitedReader{ctx: ctx, r: resp.Body, lim: p.down}
	buf := p.bufs.get(n)
	data, err := dl.receive(i, body, buf)
	if err != nil {
		p.bufs.put(buf)
		return nil, "", fmt.Errorf("failed to read piece %d from %s: %w", i, src.Name, err)
	}
	if extra, _ := io.CopyN(io.Discard, body, 1); extra > 0 {
		dl.abandon(i)
		p.bufs.put(data)
		return nil, "", fmt.Errorf("piece %d from %s is longer than %d bytes", i, src.Name, n)
	}
	// A piece the peer had whole comes with its digest in the header; one it
	// passed on while receiving it, in the trailer, once it verified it.
	hash := resp.Header.Get(hdrPieceDigest)
	if hash == "" {
		hash = resp.Trailer.Get(hdrPieceDigest)
	}
	if hash == "" {
		dl.abandon(i)
		p.bufs.put(data)
		return nil, "", fmt.Errorf("piece %d from %s: %w (no %s header or trailer)", i, src.Name,
			errCorruptPiece, hdrPieceDigest)
	}
	return data, hash, nil
}
