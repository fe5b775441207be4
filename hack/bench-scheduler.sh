#!/usr/bin/env bash
# Benchmark of cmd/scheduler-plugin against the default kube-scheduler, in the same run:
#  (a) quality matrix: every node shape of schedbench.Shapes (identical; 1x/2x; 1x/2x/4x with
#      different NIC speeds) x every pod mix of schedbench.Workloads (documented mix; network-heavy
#      majority; 30 % without bandwidth; 3 % very large pods) x BENCH_SEEDS seeds (5), each on two
#      fresh groups of BENCH_QUALITY_NODES nodes (12), one per scheduler, filled one pod at a time
#      with the same sequence: CV of per-node CPU/memory/network fill (share of the node's own
#      capacity) and the fullest node at 70 % fill, pods placed before the first unschedulable;
#      mean (min-max) over seeds and the goals berth misses per cell. BENCH_PARALLEL (4) runs fill
#      at the same time;
#  (b) throughput: BENCH_NODES fake nodes (5000) and BENCH_PODS pods (10000) per scheduler, pods/s
#      between the first and the last bind, and the ratio berth/default. BENCH_QUALITY_ONLY=1
#      skips it; BENCH_QUALITY_NODES=0 skips (a). BENCH_BERTH_FIRST=1 swaps the order of the
#      throughput phases (the second one tends to be faster).
#  BENCH_SIMULATE=1 runs instead the same matrix on the offline simulator (schedbench.SimulateMatrix:
#      the same score plugins and weights on in-memory nodes, no API server) for BENCH_SIM_SEEDS
#      seeds (20), with BerthBalance's defaults, packing from 75 % and packing off; it takes seconds.
# Both schedulers run in-process (the real kube-scheduler app) against a real kube-apiserver + etcd
# started by the test (no kubelets: pods only need binding). Needs the binaries of `make deps`.
# Prints Markdown tables and the load average before and after; docs/scheduler.md keeps the last.
set -euo pipefail
cd "$(dirname "$0")/.."
export BENCH_NODES="${BENCH_NODES:-5000}" BENCH_PODS="${BENCH_PODS:-10000}"
export BENCH_QUALITY_NODES="${BENCH_QUALITY_NODES:-12}" BENCH_SEEDS="${BENCH_SEEDS:-5}"
export BENCH_PARALLEL="${BENCH_PARALLEL:-4}" BENCH_QUALITY_ONLY="${BENCH_QUALITY_ONLY:-0}"
if [[ "${BENCH_SIMULATE:-0}" == 1 ]]; then
	go test -tags bench -count=1 -run '^TestBenchSimulatedMatrix$' ./internal/schedbench/ -v 2>&1 |
		grep -v -E '^(=== |--- |PASS|ok )'
	exit "${PIPESTATUS[0]}"
fi
if [[ "$BENCH_QUALITY_ONLY" == 1 ]]; then
	echo "scheduler benchmark: quality matrix only, ${BENCH_QUALITY_NODES}-node groups, ${BENCH_SEEDS} seeds"
else
	echo "scheduler benchmark: ${BENCH_NODES} nodes / ${BENCH_PODS} pods throughput," \
		"quality matrix on ${BENCH_QUALITY_NODES}-node groups, ${BENCH_SEEDS} seeds"
fi
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
go test -tags bench -count=1 -timeout 180m -run '^TestBenchScheduler$' ./internal/schedbench/ -v 2>&1 |
	grep --line-buffered -v -E '^[IWE][0-9]{4} ' | grep --line-buffered -v -E '^\s+(apiVersion|kind|[a-zA-Z]+:|-)'
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "Score cost per node (go test -bench, must be 0 allocs):"
go test -run '^$' -bench '^BenchmarkScore$' -benchtime 200x ./pkg/scheduler/balance/ | grep -E '^Benchmark'
