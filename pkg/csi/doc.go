// Package csi is berth's CSI driver for GlusterFS SharedStorage (binary cmd/csi-sharedfs).
//
// The controller (a Deployment next to glusterd) turns each PersistentVolume into a
// hash-sharded directory <gluster volume>/berth-volumes/<shard>/<name>/data with a gluster
// directory quota (hard- and soft-timeout 0, so writers get EDQUOT at the limit), raises the
// quota live on expansion, and runs its own provisioning and resize controller because the
// standard CSI sidecars are not available. The node plugin (a DaemonSet) registers itself
// with the kubelet, FUSE-mounts each GlusterFS volume once per node, bind-mounts PV
// directories into pods, and serves volumes with IO limits through a user-space FUSE layer
// with token buckets that also counts per-volume read/write bytes and operations.
package csi
