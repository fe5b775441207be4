// Package cni is the cni-vlan CNI plugin: pods on a VLAN of the host's
// uplink through a per-VLAN Linux bridge (58.com's Bridge+VLAN), with
// addresses from berth's cluster-global etcd IPAM (pkg/ipam).
//
// Where it sits: the container runtime (containerd, CRI-O) runs the
// cni-vlan binary on every node for every pod sandbox, with CNI_COMMAND set
// and the network config from /etc/cni/net.d/10-berth.conflist on stdin;
// the berth-system/cni-vlan DaemonSet installs both (see InstallOptions)
// and runs the IPAM leak reconciler.
//
// Verbs (CNI spec 1.1; one file each): ADD (add.go) allocates an address,
// makes sure the VLAN's bridge is connected to the uplink (a Datapath),
// creates the pod's veth on it and configures address, routes and MTU;
// any failure part-way undoes everything this call created. DEL (del.go)
// is idempotent and succeeds when the netns, interface or allocation is
// already gone. CHECK (check.go) verifies interface, addresses, routes,
// the IPAM reservation and the datapath. STATUS and GC are in status.go.
//
// Datapaths: "kernel" uses an 802.1Q sub-interface <uplink>.<vid>
// (datapath_kernel.go); "tc-bpf" tags and untags in tc BPF programs
// assembled with cilium/ebpf's asm package, for kernels without 802.1Q
// (datapath_tcbpf.go, bpf.go). Both give the bridge one port that carries
// the VLAN's untagged frames; frames of other VLANs never reach it.
package cni

import "runtime"

// Namespace switches (ns.Do) apply to the OS thread; keep main on one.
func init() { runtime.LockOSThread() }
