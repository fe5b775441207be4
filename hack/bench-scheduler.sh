#!/usr/bin/env bash
# Benchmark of cmd/scheduler-plugin against the default kube-scheduler, in the same run:
#  (a) throughput: BENCH_NODES fake nodes (5000) and BENCH_PODS pods (10000) per scheduler, pods/s
#      between the first and the last bind, and the ratio berth/default;
#  (b) quality: the mixed CPU/memory/network workload (pkg/scheduler/schedbench.Mix) on two
#      groups of BENCH_QUALITY_NODES nodes (100): CV of per-node demand at 70 % fill and pods
#      placed before the first unschedulable one.
# Both schedulers run in-process (the real kube-scheduler app) against a real kube-apiserver + etcd
# started by the test (no kubelets: pods only need binding). Needs the binaries of `make deps`.
# BENCH_BERTH_FIRST=1 swaps the order of the throughput phases (the second one tends to be faster).
# Prints a Markdown table; docs/scheduler.md keeps the last one.
set -euo pipefail
cd "$(dirname "$0")/.."
export BENCH_NODES="${BENCH_NODES:-5000}" BENCH_PODS="${BENCH_PODS:-10000}" BENCH_QUALITY_NODES="${BENCH_QUALITY_NODES:-100}"
echo "scheduler benchmark: ${BENCH_NODES} nodes / ${BENCH_PODS} pods throughput, ${BENCH_QUALITY_NODES}-node quality groups"
go test -tags bench -count=1 -timeout 90m -run '^TestBenchScheduler$' ./pkg/scheduler/schedbench/ -v 2>&1 |
	grep --line-buffered -v -E '^[IWE][0-9]{4} ' | grep --line-buffered -v -E '^\s+(apiVersion|kind|[a-zA-Z]+:|-)'
echo
echo "Score cost per node (go test -bench, must be 0 allocs):"
go test -run '^$' -bench '^BenchmarkScore$' -benchtime 200x ./pkg/scheduler/balance/ | grep -E '^Benchmark'
