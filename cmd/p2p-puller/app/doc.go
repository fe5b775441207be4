// Package app is p2p-puller's command line: the daemon (flags, wiring, health and metrics; the
// DaemonSet on every node), the preheat client and the hosts.toml checker (run by an operator)
// and the peer-key command (the p2p-puller-peer-key Job). The mirror itself is pkg/p2p; this
// package imports pkg/p2p/... and internal/.
package app
