#!/usr/bin/env bash
# install-deps.sh: the Debian packages the local cluster and the integration tests use.
# Idempotent: only missing packages are installed.
set -euo pipefail
PKGS=(containerd runc etcd-server etcd-client glusterfs-server glusterfs-client
      containernetworking-plugins iperf3 qperf iproute2 iptables openssl busybox-static tcpdump
      conntrack socat ethtool procps psmisc kmod curl ca-certificates gcc libc6-dev pkg-config)
if [ "$(id -u)" != 0 ]; then
  echo "install-deps: must run as root (apt-get install and, later, the cluster need root)" >&2; exit 1
fi
missing=()
for p in "${PKGS[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian starts these as services where it can; berth's tests and cluster run their own instances.
for s in containerd etcd glusterd; do
  if command -v systemctl >/dev/null && systemctl is-active -q "$s" 2>/dev/null; then systemctl stop "$s" || true; systemctl disable "$s" 2>/dev/null || true; fi
done
echo "install-deps: ok"
