// Package kubeclient is the one kubeconfig loader of every berth binary (webhook, scheduler
// plugin, cni-vlan's reconciler and IPAM CLI, p2p-puller), so a --kubeconfig flag means the same
// thing in each: the flag, else $KUBECONFIG, else the in-cluster service account, else
// ~/.kube/config. It runs wherever those binaries run (control plane and nodes) and imports
// only client-go.
package kubeclient
