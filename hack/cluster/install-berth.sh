#!/usr/bin/env bash
# install-berth.sh: installs all of berth on the local cluster from manifests/, the way an admin
# does (`kubectl apply -k`), through the overlay hack/cluster/berth-overlay.yaml.in (this
# machine's paths and endpoints), and waits until every component is ready. Then cni-vlan is
# the cluster's CNI: the bootstrap bridge network is removed and CoreDNS moves onto cni-vlan.
# Run by `cluster.sh up` (after glusterd); safe to run again.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/env"
S=$BERTH_STATE L=$BERTH_STATE/logs
K() { kubectl "$@"; }
log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*"; }
fail() {
  echo "install-berth: $*" >&2
  K -n berth-system get pods -o wide >&2 2>/dev/null || true
  K -n berth-system get events --sort-by=.lastTimestamp 2>/dev/null | tail -20 >&2 || true
  exit 1
}

o=$S/berth-overlay
mkdir -p "$o"
# (Each node's $S/csi-sharedfs and kubelet root dir are shared mounts, made by node-init.sh: the
# CSI node plugin mounts GlusterFS there with Bidirectional propagation.)
# kustomize takes a base only by a relative path
sed -e "s|@MANIFESTS@|$(realpath --relative-to="$o" "$BERTH_ROOT/manifests")|g" -e "s|@STATE@|$S|g" -e "s|@KUBELET_ROOT@|$S/kubelet/root|g" \
    -e "s|@ETCD@|http://$BERTH_CP_IP:$BERTH_IPAM_ETCD_PORT|g" -e "s|@UPLINK@|$BERTH_UPLINK|g" -e "s|@VLAN@|$BERTH_VLAN|g" \
    -e "s|@SUBNET@|$BERTH_VLAN_SUBNET|g" -e "s|@GATEWAY@|$BERTH_VLAN_GATEWAY|g" -e "s|@REGISTRY@|$BERTH_REGISTRY|g" -e "s|@GLUSTER@|127.0.0.1|g" \
    "$HERE/berth-overlay.yaml.in" >"$o/kustomization.yaml"

log "installing berth from manifests/ (overlay $o)"
# Every node runs glusterd (a member of the trusted pool): the CSI controller may run on any, and
# each node's FUSE clients fetch volume layouts from their own node's glusterd.
for n in $(K get nodes -o name); do K label "$n" berth.dev/glusterd=true --overwrite >/dev/null; done
# The namespace first, then everything (server-side apply: the same command upgrades).
K apply --server-side -f "$BERTH_ROOT/manifests/namespace.yaml" >"$L/berth-apply.log"
K apply --server-side --force-conflicts -k "$o" >>"$L/berth-apply.log" 2>&1 || { cat "$L/berth-apply.log" >&2; fail "kubectl apply -k failed"; }

wait_rollout() { # wait_rollout KIND/NAME SECONDS
  K -n berth-system rollout status "$1" --timeout="$2s" >/dev/null 2>&1 || fail "$1 not ready within $2s"
  log "$1 ready"
}
wait_rollout ds/cni-vlan 180
# cni-vlan's conflist is in place on every node: drop the bootstrap bridge network, so new pods
# get VLAN addresses.
for n in "$S"/nodes/*/; do
  [ -f "$n/cni/net.d/10-berth.conflist" ] || fail "cni-vlan did not write $n/cni/net.d/10-berth.conflist"
  rm -f "$n/cni/net.d/10-berth-bridge.conflist"
done
# Pods that started on the bridge (CoreDNS, berth's own non-host-network pods) move to cni-vlan.
K -n kube-system rollout restart deploy/coredns >/dev/null
for d in $(K -n berth-system get deploy -o name); do
  if [ "$(K -n berth-system get "$d" -o jsonpath='{.spec.template.spec.hostNetwork}')" != true ]; then
    K -n berth-system rollout restart "$d" >/dev/null
  fi
done
wait_rollout ds/p2p-puller 180
wait_rollout ds/csi-sharedfs-node 180
wait_rollout deploy/csi-sharedfs-controller 180
wait_rollout deploy/berth-scheduler 180
wait_rollout deploy/berth-webhook 180
K -n kube-system rollout status deploy/coredns --timeout=180s >/dev/null 2>&1 || fail "CoreDNS did not come back on cni-vlan"
log "berth installed: $(K -n berth-system get pods --no-headers | wc -l) pods in berth-system; CNI cni-vlan (VLAN $BERTH_VLAN, $BERTH_VLAN_SUBNET)"
