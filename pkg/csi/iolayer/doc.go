// Package iolayer is the IO-limited FUSE layer of csi-sharedfs: a go-fuse loopback of one
// volume's staging directory, mounted at a pod's target, with token buckets for bandwidth
// and IOPS (iolimit.go), per-volume counters, path confinement against symlink swaps
// (confine.go) and a control API on a unix socket: GET /stats, PUT /limits (layer.go).
//
// Where it runs: each published target with IO limits or statistics gets its own process,
// `csi-sharedfs iolayer` (Run), on the node, started by the node plugin (Start, proc.go) and
// moved out of the plugin's container cgroup, so a restart of the plugin does not kill the
// FUSE server under a running pod; the next plugin adopts it (Adopt). SIGTERM, or an unmount
// of the target, stops the layer.
//
// Imports: pkg/csi/mountcgroup and libraries (go-fuse, x/time/rate, klog); never pkg/csi,
// which imports this package.
package iolayer
