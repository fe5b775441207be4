#!/usr/bin/env bash
# images.sh: builds berth's OCI images without Docker and pushes them to the local registry.
#   berth                  every binary of _output/bin at /usr/local/bin (make build first)
#   pause                  the local cluster's sandbox image (hack/pause)
#   coredns                the local cluster's DNS (hack/coredns, built by hack/build-kube.sh)
#   <name>                 one per test/images/<name>: its Go program at /app, plus busybox for exec
# A hack/images.d/<name>.sh script, when present, is run with the image's rootfs directory as $1
# to add what that image needs beyond the binaries (e.g. GlusterFS client libraries).
# Images are pushed as $REGISTRY/berth-dev/<name>:$VERSION; the local cluster's containerd
# resolves ghcr.io/berth-dev/* from that registry (see docs/development.md).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/hack/cluster/env"
VERSION=${VERSION:-$(cat "$ROOT/VERSION")}
REGISTRY=${REGISTRY:-$BERTH_REGISTRY}
WORK=$BERTH_CACHE/images
ONLY=${1:-}
mkdir -p "$WORK"
go build -o "$WORK/mkimage" "$ROOT/hack/mkimage"

base_rootfs() { # base_rootfs DIR: the files every image has
  rm -rf "$1"; mkdir -p "$1"/{etc,tmp,usr/local/bin}
  chmod 1777 "$1/tmp"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > "$1/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' > "$1/etc/group"
  [ -f /etc/ssl/certs/ca-certificates.crt ] && mkdir -p "$1/etc/ssl/certs" && cp /etc/ssl/certs/ca-certificates.crt "$1/etc/ssl/certs/"
  true
}
add_busybox() {
  mkdir -p "$1/bin"; cp /bin/busybox "$1/bin/busybox"
  for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$1/bin/$a"; done # every applet: sh, wget, dd, df, ...
}
build_image() { # build_image NAME ROOTFS ENTRYPOINT USER
  local name=$1 dir=$2 ep=$3 user=$4
  if [ -x "$ROOT/hack/images.d/$name.sh" ]; then "$ROOT/hack/images.d/$name.sh" "$dir"; fi
  "$WORK/mkimage" --rootfs "$dir" --push "$REGISTRY/berth-dev/$name:$VERSION" --entrypoint "$ep" --user "$user" \
    --label org.opencontainers.image.version="$VERSION" --label org.opencontainers.image.source=https://github.com/berth-dev/berth
}
want() { [ -z "$ONLY" ] || [ "$ONLY" = "$1" ]; }

if want berth; then
  [ -d "$ROOT/_output/bin" ] || { echo "images: _output/bin missing: run make build first" >&2; exit 1; }
  d=$WORK/rootfs-berth; base_rootfs "$d"; cp "$ROOT"/_output/bin/* "$d/usr/local/bin/"
  build_image berth "$d" '[]' 65532:65532
fi
if want pause; then
  d=$WORK/rootfs-pause; base_rootfs "$d"
  CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o "$d/pause" "$ROOT/hack/pause"
  build_image pause "$d" '["/pause"]' 65535:65535
fi
if want coredns; then
  d=$WORK/rootfs-coredns; base_rootfs "$d"
  cp "$BERTH_CACHE/kube/bin/coredns" "$d/coredns"
  build_image coredns "$d" '["/coredns"]' 65532:65532
fi
for src in "$ROOT"/test/images/*/; do
  [ -f "$src/main.go" ] || continue
  n=$(basename "$src"); want "$n" || continue
  d=$WORK/rootfs-$n; base_rootfs "$d"; add_busybox "$d"
  CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o "$d/app" "$src"
  build_image "$n" "$d" '["/app"]' 65532:65532
done
