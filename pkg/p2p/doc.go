// Package p2p is p2p-puller, berth's node-local image distribution.
//
// Where it sits: one p2p-puller per node (a hostNetwork DaemonSet). It
// serves the OCI distribution API on loopback; containerd reaches it through
// <config_path>/<registry>/hosts.toml (written by package hosts) as a mirror
// in front of the real registry, which stays the fallback.
//
// What it does per request (mirror.go):
//   - manifests, tags and /v2/ always go to the upstream registry with the
//     client's own Authorization header (never stored, never sent to peers);
//     a manifest fetched that way grants the client's credentials what a
//     pull of it reads: an image manifest's config and layers, an index's
//     manifests (grants.go). A blob this node holds for another repository
//     is served only after the upstream confirmed, to the client's own
//     credentials, that the client's repository holds it (origins.go).
//   - blobs are served from the node's cache (package cache). On a miss the
//     node asks the blob's tracker, the live peer with the highest rendezvous
//     score for the digest (package peers), who else has or is fetching the
//     blob. The first node fetches from the upstream; every later node
//     takes the pieces from the node that registered just before it, while
//     that one is still downloading them, so a burst forms a chain in which
//     each node uploads one copy (fetch.go, download.go). A node passes a
//     piece on while it is receiving it, its digest in a trailer once it
//     checked it (peerapi.go), so a hop costs a chunk, not a piece. It verifies each
//     piece against the piece digest
//     and the whole blob against its digest (computed as pieces arrive)
//     before it stores it. A client reading a blob still in flight gets
//     verified pieces in order, the last one only once the whole matched.
//     A dead, slow or corrupt peer costs a retry at another peer and finally
//     a ranged request to the upstream, never a failed pull.
//   - a peer gets a blob only after presenting, over TLS keyed by the
//     cluster's peer key (HTTP/2) and in a signed single-use request (peertls.go,
//     peerapi.go), a manifest that names the blob, for a repository this
//     node holds the blob for, and that its own client
//     fetched from the upstream with its own credentials (peerapi.go).
//
// Preheat (preheat.go) pulls an image's blobs into chosen nodes' caches
// before a rollout. Upload and download rates are limited per node.
package p2p
