#!/usr/bin/env bash
# images.d/berth.sh ROOTFS: adds what csi-sharedfs (a static Go binary itself) runs to the
# berth image:
#   - the GlusterFS FUSE client /usr/sbin/glusterfs(d) and the gluster CLI /usr/sbin/gluster
#     plus their libraries (the node plugin mounts volumes, the controller sets quotas);
#   - the dynamic loader and the shared libraries of these, found with ldd;
#   - the GlusterFS translators and RPC transports (/usr/lib/x86_64-linux-gnu/glusterfs/<ver>),
#     loaded by the client at run time (dlopen, so ldd does not see them) and their libraries;
#   - /var/lib/glusterd, /var/log/glusterfs and /var/run/gluster directories the client expects.
# Source: the build host's Debian packages glusterfs-client, glusterfs-common
# (`hack/install-deps.sh`). Adds ~60 MB.
set -euo pipefail
ROOTFS=$1
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
LIBDIR=/usr/lib/x86_64-linux-gnu

copy() { # copy PATH...: copy files (and symlink targets) keeping their absolute paths
  local f
  for f in "$@"; do
    [ -e "$f" ] || continue
    mkdir -p "$ROOTFS$(dirname "$f")"
    cp -aL "$f" "$ROOTFS$f"
  done
}
libs_of() { ldd "$@" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | sort -u; }

for f in /usr/sbin/glusterfsd /usr/sbin/gluster; do
  [ -x "$f" ] || { echo "images.d/berth.sh: $f missing: install glusterfs-client (hack/install-deps.sh)" >&2; exit 1; }
done
copy /usr/sbin/glusterfsd /usr/sbin/gluster
ln -sf glusterfsd "$ROOTFS/usr/sbin/glusterfs"
GVER=$(ls "$LIBDIR/glusterfs" | grep -E '^[0-9]+\.[0-9]+' | head -1)
mkdir -p "$ROOTFS$LIBDIR/glusterfs"
cp -a "$LIBDIR/glusterfs/$GVER" "$ROOTFS$LIBDIR/glusterfs/"
targets=(/usr/sbin/glusterfsd /usr/sbin/gluster)
mapfile -t sos < <(find "$LIBDIR/glusterfs/$GVER" -name '*.so')
copy $(libs_of "${targets[@]}" "${sos[@]}")
mkdir -p "$ROOTFS/var/lib/glusterd" "$ROOTFS/var/log/glusterfs" "$ROOTFS/var/run/gluster" "$ROOTFS/etc/glusterfs"
echo "images.d/berth.sh: added GlusterFS $GVER client, CLI and $(libs_of "${targets[@]}" "${sos[@]}" | wc -l) libraries"
