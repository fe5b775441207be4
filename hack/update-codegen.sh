#!/usr/bin/env bash
# update-codegen.sh: regenerate the scheduler plugin args' DeepCopy, conversions and defaulting
# entry points (zz_generated.*.go under pkg/scheduler/apis/config) with Kubernetes' generators,
# as kubernetes-sigs/scheduler-plugins does. The generators come from the module proxy at the
# version of k8s.io/apimachinery in go.mod, so they match the libraries the code is built with.
#   hack/update-codegen.sh           rewrite the generated files
#   hack/update-codegen.sh --verify  fail if they differ from what the generators write (CI)
set -euo pipefail
cd "$(dirname "$0")/.."
ver=$(go list -m -f '{{.Version}}' k8s.io/apimachinery)
api=./pkg/scheduler/apis/config
hdr=hack/boilerplate.go.txt
files=("$api/zz_generated.deepcopy.go" "$api/v1/zz_generated.deepcopy.go"
	"$api/v1/zz_generated.conversion.go" "$api/v1/zz_generated.defaults.go")

generate() {
	go run "k8s.io/code-generator/cmd/deepcopy-gen@$ver" --go-header-file "$hdr" \
		--output-file zz_generated.deepcopy.go "$api" "$api/v1"
	go run "k8s.io/code-generator/cmd/conversion-gen@$ver" --go-header-file "$hdr" \
		--output-file zz_generated.conversion.go "$api/v1"
	go run "k8s.io/code-generator/cmd/defaulter-gen@$ver" --go-header-file "$hdr" \
		--output-file zz_generated.defaults.go "$api/v1"
}

if [ "${1:-}" != --verify ]; then
	generate
	echo "update-codegen: ok (code-generator $ver)"
	exit 0
fi
saved=$(mktemp -d)
trap 'rm -rf "$saved"' EXIT
for f in "${files[@]}"; do
	mkdir -p "$saved/$(dirname "$f")"
	cp "$f" "$saved/$f" 2>/dev/null || : >"$saved/$f"
done
generate
bad=0
for f in "${files[@]}"; do
	if ! diff -u "$saved/$f" "$f"; then bad=1; fi
	cp "$saved/$f" "$f" # leave the tree as it was
done
if [ "$bad" = 1 ]; then
	echo "verify-codegen: generated files are stale: run hack/update-codegen.sh" >&2
	exit 1
fi
echo "verify-codegen: ok (code-generator $ver)"
