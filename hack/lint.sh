#!/usr/bin/env bash
# lint.sh: gofmt, go vet (every build tag), staticcheck, and the generated API code up to date
# (hack/update-codegen.sh --verify). `make lint`; `make test` runs it first.
set -euo pipefail
cd "$(dirname "$0")/.."
bad=$(gofmt -l $(git ls-files '*.go') 2>/dev/null || true)
if [ -n "$bad" ]; then echo "gofmt: these files need formatting:"; echo "$bad"; exit 1; fi
go vet ./...
go vet -tags integration ./...
go vet -tags e2e ./e2e/...
go vet -tags vmtest ./pkg/cni/
go run honnef.co/go/tools/cmd/staticcheck@v0.8.2 -tags integration ./...
hack/update-codegen.sh --verify
echo "lint: ok"
