# berth: `make up` brings up a local cluster with berth installed, `make test` runs every test.
SHELL := /bin/bash
VERSION ?= $(shell cat VERSION)
GO ?= go
GOFLAGS_BUILD := -trimpath -ldflags "-s -w -X github.com/berth-dev/berth/internal/version.Version=$(VERSION)"
BIN := _output/bin
CMDS := $(notdir $(patsubst %/main.go,%,$(wildcard cmd/*/main.go)))
# Packages with tests (manifests/: the privileges test over the rendered manifests); integration
# tests need root and the components `make deps` installs.
PKGS := ./cmd/... ./internal/... ./pkg/... ./manifests/...
TEST_TIMEOUT ?= 30m

.PHONY: all build deps kube up down status test test-unit test-integration test-e2e test-vm lint codegen images demo \
	clean help

all: build

help: ## this list
	@grep -hE '^[a-zA-Z%_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

build: ## build every binary into _output/bin
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build $(GOFLAGS_BUILD) -o $(BIN)/ $(addprefix ./cmd/,$(CMDS))
	CGO_ENABLED=0 $(GO) build $(GOFLAGS_BUILD) -tags cniplugin -o $(BIN)/cni-vlan-plugin ./cmd/cni-vlan
	CGO_ENABLED=0 $(GO) build $(GOFLAGS_BUILD) -tags cniplugin -o $(BIN)/berth-ipam-plugin ./cmd/berth-ipam

deps: ## install what the cluster and the tests need (apt packages, Kubernetes binaries)
	hack/install-deps.sh
	hack/build-kube.sh

kube: ## build the Kubernetes binaries of the local cluster (cached in .cache/kube)
	hack/build-kube.sh

images: build ## build berth's and the test apps' OCI images (no Docker) and push them to the cluster registry
	hack/images.sh

up: deps ## bring up the local cluster (NODES=3 by default) with berth installed
	hack/cluster/cluster.sh up

down: ## stop the local cluster and remove everything it created (safe to run twice)
	hack/cluster/cluster.sh down

status: ## show what of the local cluster is running
	hack/cluster/cluster.sh status

# phase runs one phase of `make test` and says how long it took (CI reads the times).
phase = @s=$$(date +%s); $(2); rc=$$?; \
	echo "=== make test: $(1) took $$(( $$(date +%s) - s ))s (exit $$rc)"; exit $$rc

test: deps ## lint, unit (-race), integration, the kernel datapath in qemu, then e2e on a cluster brought up and torn down here
	$(call phase,lint,$(MAKE) lint)
	$(call phase,unit,$(MAKE) test-unit)
	$(call phase,integration,$(MAKE) test-integration)
	$(call phase,vm,$(MAKE) test-vm)
	$(call phase,e2e,hack/test-e2e.sh)

test-unit: ## unit tests with the race detector (no root, no external components)
	$(GO) test -count=1 -race -timeout $(TEST_TIMEOUT) $(PKGS)

test-integration: ## integration tests against real etcd, kube-apiserver, glusterd, netns, containerd (root)
	$(GO) test -count=1 -p 1 -tags integration -timeout $(TEST_TIMEOUT) $(PKGS)

test-e2e: ## e2e tests against the running local cluster (make up first)
	. hack/cluster/env && $(GO) test -count=1 -tags e2e -timeout $(TEST_TIMEOUT) -v ./e2e/...

test-vm: ## cni-vlan's kernel (802.1Q) datapath tests inside a qemu guest with a stock Debian kernel
	hack/vm/test-cni.sh

lint: ## gofmt, go vet (every build tag), staticcheck, generated code up to date
	hack/lint.sh

codegen: ## regenerate the scheduler plugin args' DeepCopy, conversions and defaults
	hack/update-codegen.sh

bench-%: ## benchmarks of one component against its reference (webhook, scheduler, cni, ipam, csi, p2p)
	hack/bench-$*.sh

demo: ## deploy the sample app that uses every berth feature and explain what happened
	hack/demo.sh

clean: ## remove build outputs (not the cluster or caches)
	rm -rf _output
