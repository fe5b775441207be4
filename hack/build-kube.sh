#!/usr/bin/env bash
# build-kube.sh: builds the Kubernetes binaries of the local cluster from the Go module proxy
# (module hack/kube, k8s.io/kubernetes v1.35.4) into $BERTH_CACHE/kube/bin and reuses them
# while hack/kube/go.sum is unchanged. Cold: ~12 min on 2 cores; warm: nothing to do.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${BERTH_CACHE:-$ROOT/.cache}
BIN=$CACHE/kube/bin
CMDS=${KUBE_CMDS:-"kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl kube-proxy"}
V=$(awk '/^require k8s.io\/kubernetes/ {print $3}' "$ROOT/hack/kube/go.mod")
MINOR=$(echo "$V" | cut -d. -f2)
STAMP=$(sha256sum "$ROOT/hack/kube/go.sum" | cut -c1-16)
mkdir -p "$BIN"
LD="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  LD="$LD -X $p.gitVersion=$V -X $p.gitMajor=1 -X $p.gitMinor=$MINOR -X $p.gitTreeState=clean"
done
cd "$ROOT/hack/kube"
for c in $CMDS; do
  if [ -x "$BIN/$c" ] && [ "$(cat "$BIN/.$c.stamp" 2>/dev/null)" = "$STAMP" ]; then continue; fi
  start=$(date +%s)
  echo "building $c $V (first build of the Kubernetes binaries takes ~12 min on 2 cores)..."
  CGO_ENABLED=0 GOFLAGS=-buildvcs=false go build -trimpath -ldflags "$LD" -o "$BIN/$c.tmp" "k8s.io/kubernetes/cmd/$c"
  mv "$BIN/$c.tmp" "$BIN/$c"
  echo "$STAMP" > "$BIN/.$c.stamp"
  echo "built $c in $(( $(date +%s) - start ))s"
done
# CoreDNS, with only the plugins a cluster needs (module hack/coredns).
DNS_STAMP=$(sha256sum "$ROOT/hack/coredns/go.sum" "$ROOT/hack/coredns/main.go" | sha256sum | cut -c1-16)
if ! [ -x "$BIN/coredns" ] || [ "$(cat "$BIN/.coredns.stamp" 2>/dev/null)" != "$DNS_STAMP" ]; then
  start=$(date +%s)
  echo "building coredns..."
  (cd "$ROOT/hack/coredns" && CGO_ENABLED=0 GOFLAGS=-buildvcs=false go build -trimpath -ldflags "-s -w" -o "$BIN/coredns.tmp" .)
  mv "$BIN/coredns.tmp" "$BIN/coredns"
  echo "$DNS_STAMP" > "$BIN/.coredns.stamp"
  echo "built coredns in $(( $(date +%s) - start ))s"
fi
