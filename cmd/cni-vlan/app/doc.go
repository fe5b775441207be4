// Package app is cni-vlan's command line when a person or the DaemonSet runs it (no
// CNI_COMMAND): install (the DaemonSet's init container), agent (the node's IPAM agent),
// reconcile (the leak reconciler) and ipam (the IPAM admin tool, run by an operator). Each fills
// the typed config of pkg/cni, pkg/ipam/agent or pkg/ipam/reconcile from its flags and calls
// its Run. It imports pkg/cni, pkg/ipam/... and internal/. The per-pod plugin build
// (-tags cniplugin) does not link this package.
package app
