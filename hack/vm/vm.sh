#!/bin/bash
# hack/vm/vm.sh - run a Go test binary inside a stock Debian kernel under qemu (TCG).
#
# Why: the kernel datapath of cni-vlan needs CONFIG_VLAN_8021Q, which the CI/dev
# machine's kernel lacks. A stock Debian 6.1 kernel has it (as a module). This
# script boots that kernel (nothing is installed into /boot) with a small
# initramfs and runs a test binary in it, as a `go test -exec` wrapper:
#
#   hack/vm/vm.sh setup                       # once: qemu + kernel .deb (~70 MB) + initramfs
#   CGO_ENABLED=0 go test -tags vmtest -exec "$PWD/hack/vm/vm.sh exec" -run TestKernel -v ./pkg/cni/
#   (or: make test-vm, which runs hack/vm/test-cni.sh; make test and CI run it too)
#
# Facts this relies on (measured on the dev machine, see ../shared/recipes/vm.md):
#  - /dev/kvm there is a software nested layer that dies on stock kernels: TCG only.
#  - Booting the uncompressed vmlinux directly (PVH entry) is ~2x faster than bzImage.
#  - The guest's exit code comes back through isa-debug-exit: qemu rc = (rc<<1)|1;
#    the script also reads it from a file the guest writes on the 9p share.
#  - The test binary must be static (CGO_ENABLED=0): the initramfs has no libc.
# Everything lives in $BERTH_VM_DIR (default .cache/vm in the repository).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
W=${BERTH_VM_DIR:-$ROOT/.cache/vm}
KVER=${BERTH_VM_KVER:-}
VMTIMEOUT=${VMTIMEOUT:-900}

kdep() {
	apt-cache depends linux-image-amd64 2>/dev/null |
		sed -n 's/.*Depends: linux-image-\(.*\)$/\1/p' | head -1
}

kver() { # the Debian kernel linux-image-amd64 depends on, e.g. 6.1.0-56-amd64
	if [ -z "$KVER" ]; then
		if [ -f "$W/kver" ]; then
			KVER=$(cat "$W/kver")
		else
			KVER=$(kdep)
			if [ -z "$KVER" ]; then # a clean machine has no package lists yet
				apt-get update -qq
				KVER=$(kdep)
			fi
		fi
	fi
	[ -n "$KVER" ] || {
		echo "cannot tell the Debian kernel version (apt-cache depends linux-image-amd64)" >&2
		exit 1
	}
}

setup() {
	mkdir -p "$W"
	kver
	# What a clean Debian machine with only Go lacks (CI: .ci/run).
	local need=()
	command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
	[ -x /bin/busybox ] || need+=(busybox-static)
	command -v python3 >/dev/null || need+=(python3)
	command -v xz >/dev/null || need+=(xz-utils)
	if [ ${#need[@]} -gt 0 ]; then
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
	fi
	if [ ! -f "$W/vmlinux" ]; then
		(cd "$W" && apt-get download "linux-image-$KVER")
		rm -rf "$W/kernel"
		dpkg -x "$W"/linux-image-"${KVER}"_*.deb "$W/kernel"
		# vmlinuz is an xz-compressed bzImage: the xz stream inside is the ELF vmlinux (PVH note)
		python3 -c 'import lzma,sys; d=open(sys.argv[1],"rb").read(); i=d.find(b"\xfd7zXZ\x00"); open(sys.argv[2],"wb").write(lzma.LZMADecompressor(lzma.FORMAT_XZ).decompress(d[i:]))' \
			"$W/kernel/boot/vmlinuz-$KVER" "$W/vmlinux"
		rm -f "$W"/linux-image-*.deb
	fi
	echo "$KVER" >"$W/kver"
	build
}

# Modules the guest needs, in load order (dependencies first, from each .ko's depends=).
MODS="net/llc/llc net/802/stp net/802/garp net/802/mrp net/8021q/8021q net/bridge/bridge
 drivers/net/veth net/sched/sch_ingress net/sched/cls_bpf net/sched/act_gact
 drivers/virtio/virtio_ring drivers/virtio/virtio drivers/virtio/virtio_pci_modern_dev
 drivers/virtio/virtio_pci_legacy_dev drivers/virtio/virtio_pci fs/netfs/netfs fs/fscache/fscache
 net/9p/9pnet net/9p/9pnet_virtio fs/9p/9p"

build() {
	kver
	local R=$W/initramfs.root md=$W/kernel/lib/modules/$KVER/kernel m list=""
	rm -rf "$R"
	mkdir -p "$R"/bin "$R"/proc "$R"/sys "$R"/dev "$R"/mnt "$R"/tmp "$R"/run "$R"/lib/modules
	cp /bin/busybox "$R/bin/busybox"
	for m in $MODS; do
		if [ -f "$md/$m.ko" ]; then
			cp "$md/$m.ko" "$R/lib/modules/"
		elif [ -f "$md/$m.ko.xz" ]; then
			xz -dc "$md/$m.ko.xz" >"$R/lib/modules/$(basename "$m").ko"
		else
			continue # built into the kernel
		fi
		list="$list $(basename "$m")"
	done
	echo "$list" >"$R/modules"
	cp "$ROOT/hack/vm/init" "$R/init"
	chmod +x "$R/init"
	(cd "$R" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1) >"$W/initramfs.cpio.gz"
	echo "initramfs: $W/initramfs.cpio.gz (kernel $KVER)"
}

# exec BIN ARGS...: go test -exec wrapper; output and exit code of BIN come back.
vmexec() {
	if [ ! -f "$W/vmlinux" ] || [ ! -f "$W/initramfs.cpio.gz" ]; then
		echo "VM not set up: run hack/vm/vm.sh setup" >&2
		exit 1
	fi
	local run q rc
	run=$(mktemp -d "$W/run.XXXXXX")
	cp "$1" "$run/testbin"
	shift
	{
		printf './testbin'
		for a in "$@"; do printf " '%s'" "${a//\'/\'\\\'\'}"; done
		echo
	} >"$run/cmd"
	set +e
	timeout "$VMTIMEOUT" qemu-system-x86_64 -accel tcg -cpu max -smp 1 -m 768 -nographic -nodefaults \
		-serial stdio -no-reboot -kernel "$W/vmlinux" -initrd "$W/initramfs.cpio.gz" \
		-device isa-debug-exit,iobase=0xf4,iosize=0x04 -append "console=ttyS0 quiet panic=-1" \
		-virtfs "local,path=$run,mount_tag=host0,security_model=none,id=host0" >"$run/console.log" 2>&1
	q=$?
	set -e
	cat "$run/out" 2>/dev/null || true
	rc=$(cat "$run/exitcode" 2>/dev/null || echo 99)
	if [ "$rc" = 99 ]; then
		echo "VM did not report an exit code (qemu rc=$q, 124 = timeout); console:" >&2
		cat "$run/console.log" >&2
	fi
	rm -rf "$run"
	return "$rc"
}

case "${1:-}" in
setup) setup ;;
build) build ;;
exec)
	shift
	vmexec "$@"
	;;
*)
	echo "usage: $0 setup|build|exec BIN [ARGS...]" >&2
	exit 2
	;;
esac
