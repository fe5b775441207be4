// Package csi is berth's CSI driver for GlusterFS SharedStorage (binary cmd/csi-sharedfs).
//
// The controller (a Deployment next to glusterd) turns each PersistentVolume into a
// hash-sharded directory <gluster volume>/berth-volumes/<shard>/<name>/data with a gluster
// directory quota (hard- and soft-timeout 0, so writers get EDQUOT at the limit), raises the
// quota live on expansion, and runs its own provisioning and resize controller because the
// standard CSI sidecars are not available. The node plugin (a DaemonSet) registers itself
// with the kubelet, FUSE-mounts each GlusterFS volume once per node, bind-mounts PV
// directories into pods, and serves volumes with IO limits or statistics through an
// IO-limited layer process per target (package iolayer), whose counters it exports.
//
// Layout: the gRPC services (identityserver.go, controllerserver.go, nodeserver.go) and
// what they call; the driver's view of the layer processes is layers.go. The controller's
// health loop (health.go) reads brick, daemon and heal state from glusterd, starts heals
// (and full heals after a client death, clientdeath.go) and restarts a self-heal or quota
// daemon that stays down (daemons.go). Config and Run
// (run.go) are what cmd/csi-sharedfs/app calls.
//
// Imports: pkg/csi/iolayer (the layer processes: start, adopt, stats, limits) and
// pkg/csi/mountcgroup (moving the mounts' FUSE daemons out of the plugin's cgroup),
// internal/daemon, client-go and the CSI libraries; never cobra, pflag or cmd/.
package csi
