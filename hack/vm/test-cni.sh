#!/bin/bash
# hack/vm/test-cni.sh - `make test-vm`: pkg/cni's vmtest tests (kernel 802.1Q datapath, and
# tc-bpf on an older stock kernel) inside a stock Debian kernel under qemu TCG.
# First run: ~1 min setup (qemu via apt, kernel .deb via apt-get download) + a static test build.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
[ -f "${BERTH_VM_DIR:-$ROOT/.cache/vm}/vmlinux" ] || hack/vm/vm.sh setup
CGO_ENABLED=0 go test -count=1 -tags vmtest -exec "$ROOT/hack/vm/vm.sh exec" -v "$@" ./pkg/cni/
