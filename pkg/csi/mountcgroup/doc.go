// Package mountcgroup moves the FUSE daemons of a node's CSI mounts (GlusterFS clients and
// IO-limited layers) out of the node plugin's container cgroup, so that they outlive a
// restart of the plugin, and identifies such daemons by their command line when a new run
// of the plugin adopts them.
//
// It runs in the node plugin of csi-sharedfs (DaemonSet, privileged, hostPID, the host's
// cgroupfs mounted). Both pkg/csi (the node server's GlusterFS mounts) and pkg/csi/iolayer
// (the layer processes) use it. It imports only the standard library.
package mountcgroup
