#!/usr/bin/env bash
# demo.sh (`make demo`): deploys examples/demo, a small shop app that uses every berth feature
# at once, on the local cluster (`make up` first), and shows step by step what berth did, with
# the evidence: events, logs, addresses, metrics. Leaves the app running; remove it with
# `kubectl delete ns berth-demo`.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/hack/cluster/env"
NS=berth-demo
K() { kubectl "$@"; }
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
say() { printf '   %s\n' "$*"; }
die() { echo "demo: $*" >&2; exit 1; }
indent() { sed 's/^/     /'; }
metric() { # metric HOSTPORT NAME: the metric's samples from a berth daemon on the node
  curl -s --max-time 5 "http://$1/metrics" | grep -E "^$2(\{| )" | indent || true
}

K get --raw /readyz >/dev/null 2>&1 || die "no cluster: run 'make up' first"
K -n berth-system rollout status ds/cni-vlan --timeout=5s >/dev/null 2>&1 || die "berth is not installed: run 'make up'"

step "0. Deploy: kubectl apply -k examples/demo (namespace $NS opted in with berth.dev/inject=enabled)"
K delete ns "$NS" --ignore-not-found --wait=true >/dev/null
K apply -k "$ROOT/examples/demo" | indent

step "0b. berth.dev/after: the shop waits for its backing service stock (which boots for 10 s)"
say "shop's pods are SchedulingGated: no node, no IP, no volume while they wait:"
for _ in $(seq 1 20); do # the Deployment controller creates the pods a moment after the apply
  [ -n "$(K -n "$NS" get pods -l app=shop -o name 2>/dev/null)" ] && break
  sleep 0.5
done
K -n "$NS" get pods -l 'app in (shop,stock)' -o wide | indent
say "the Event that says what they wait for:"
for _ in $(seq 1 30); do # the controller posts it once it has seen the pod
  [ -n "$(K -n "$NS" get events --field-selector reason=WaitingForServices -o name 2>/dev/null)" ] && break
  sleep 0.5
done
K -n "$NS" get events --field-selector reason=WaitingForServices \
  -o custom-columns='POD:.involvedObject.name,REASON:.reason,MESSAGE:.message' | indent
K -n "$NS" wait --for=jsonpath='{.status.phase}'=Bound pvc/shop-data --timeout=120s >/dev/null ||
  die "PVC shop-data not bound: kubectl -n $NS describe pvc shop-data"
K -n "$NS" rollout status deploy/shop --timeout=300s | indent ||
  die "shop did not become ready: kubectl -n $NS describe pods"
mapfile -t PODS < <(K -n "$NS" get pods -l app=shop -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}')
P=${PODS[0]}
say "stock became ready; the gate went, then the scheduler placed the shop:"
K -n "$NS" get events --field-selector reason=ServicesReady \
  -o custom-columns='POD:.involvedObject.name,REASON:.reason,MESSAGE:.message' | indent
NODE=$(K -n "$NS" get pod "$P" -o jsonpath='{.spec.nodeName}')
NODE_IP=$(K get node "$NODE" -o jsonpath='{.status.addresses[?(@.type=="InternalIP")].address}')

step "1. Image through the node's P2P mirror (p2p-puller, containerd's hosts.toml points at it)"
say "containerd's config for ghcr.io on $NODE, the node of $P (written by p2p-puller):"
sed -n '1,12p' "$BERTH_STATE/nodes/$NODE/containerd/certs.d/ghcr.io/hosts.toml" | indent
say "p2p-puller metrics on $NODE: bytes by source, blob requests:"
metric "$NODE_IP:5003" berth_p2p_bytes_total
metric "$NODE_IP:5003" berth_p2p_blob_requests_total

step "2. Scheduler: berth-scheduler placed the pods (network-heavy: 100M ingress/egress)"
K -n "$NS" get events --field-selector reason=Scheduled \
  -o custom-columns='POD:.involvedObject.name,BY:.reportingComponent,MESSAGE:.message' | indent
K -n berth-system logs deploy/berth-scheduler --tail=200 2>/dev/null | grep -E "shop" | tail -3 | indent || true

step "3. CNI: addresses from the cluster-global IPAM pool (cni-vlan, VLAN $BERTH_VLAN, $BERTH_VLAN_SUBNET)"
K -n "$NS" get pods -l app=shop -o custom-columns='POD:.metadata.name,IP:.status.podIP,NODE:.spec.nodeName' | indent
say "the IPAM's reservations in etcd (cni-vlan ipam list vlan$BERTH_VLAN):"
K -n berth-system exec ds/cni-vlan -c reconcile -- /usr/local/bin/cni-vlan ipam list "vlan$BERTH_VLAN" 2>&1 | indent

step "4. Webhook: what it injected (berth.dev/status) and the preStart hook's log"
K -n "$NS" get pod "$P" -o jsonpath='{.metadata.annotations.berth\.dev/status}' | indent; echo
say "init containers: $(K -n "$NS" get pod "$P" -o jsonpath='{range .spec.initContainers[*]}{.name}{" "}{end}')"
K -n "$NS" logs "$P" -c berth-prestart | tail -5 | indent

step "5. preOnline: check URL 2xx -> warm-up -> marker -> Ready (the sidecar's log)"
K -n "$NS" logs "$P" -c berth-sidecar | grep -E "preOnline|warm|ONLINE" | tail -6 | indent
say "app log (the warm-up came before any traffic):"
K -n "$NS" logs "$P" -c app | head -6 | indent

step "6. SharedStorage: both pods share one GlusterFS directory with a 64 MiB quota"
for p in "${PODS[@]}"; do
  K -n "$NS" exec "$p" -c app -- wget -q -O- http://127.0.0.1:8080/ | indent
done
say "through the Service (ClusterIP), from a pod:"
for _ in 1 2 3 4 5 6 7 8 9 10; do # kube-proxy programs the endpoints a moment after the pods turn Ready
  if out=$(K -n "$NS" exec "$P" -c app -- wget -q -O- http://shop/ 2>&1); then break; fi
  sleep 1
done
printf '%s\n' "$out" | indent
say "df inside the pod (the quota is the size):"
K -n "$NS" exec "$P" -c app -- df -h /data | indent
say "writing 80 MiB into the 64 MiB volume:"
K -n "$NS" exec "$P" -c app -- sh -c 'dd if=/dev/zero of=/data/too-big bs=1M count=80 2>&1 | grep -E "quota|records out"; rm -f /data/too-big' | indent || true

step "7. IO limits: the volume's bytes and throttled time (csi-sharedfs node plugin metrics on $NODE)"
metric "$NODE_IP:9813" berth_csi_volume_io_bytes_total
metric "$NODE_IP:9813" berth_csi_volume_throttled_seconds_total

step "8. Debug mode: kubectl port-forward reaches berth's loopback-only proxy, which forwards to the app's debug port"
say "kubectl port-forward $P 15105:15105, then connecting to 127.0.0.1:15105 (what an IDE does):"
K -n "$NS" port-forward "pod/$P" 15105:15105 >/dev/null 2>&1 &
PF=$!
sleep 2
exec 3<>/dev/tcp/127.0.0.1/15105 && { timeout 2 head -1 <&3 | indent; exec 3>&-; } || say "(could not connect)"
kill "$PF" 2>/dev/null || true
say "the liveness probe now asks the sidecar: $(K -n "$NS" get pod "$P" -o jsonpath='{.spec.containers[0].livenessProbe.httpGet.path}'):$(K -n "$NS" get pod "$P" -o jsonpath='{.spec.containers[0].livenessProbe.httpGet.port}')"

step "Done. The app keeps running: kubectl -n $NS get pods,pvc,svc; remove it: kubectl delete ns $NS"
