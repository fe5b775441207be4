#!/usr/bin/env bash
# Benchmark of berth's etcd IPAM: allocations/s from 10 simulated nodes (each
# with its own etcd connection) against one real etcd on loopback, berth's
# spread strategy vs a naive scan for the first free address, in interleaved
# rounds of the same run. Prints a table (see docs/ipam.md).
# Needs: etcd (apt: etcd-server). IPAM_BENCH_ROUNDS (default 2) rounds per row;
# a naive round is capped at 30 s and counts what it achieved by then.
set -euo pipefail
cd "$(dirname "$0")/.."
export IPAM_BENCH_ROUNDS="${IPAM_BENCH_ROUNDS:-2}"
export BERTH_ETCD_ON_DISK=1   # measure against an etcd that fsyncs to disk, as in production
go test -tags integration -run '^$' -bench '^BenchmarkIPAM10Nodes$' -benchtime 1x -count 1 -timeout 20m ./pkg/ipam/ 2>&1 \
	| grep -v '"level":"warn"'
echo
echo "# one ADD + DEL at a time (ns/op is per ADD+DEL pair)"
go test -tags integration -run '^$' -bench '^BenchmarkAllocateRelease$' -benchtime 300x -count 1 -timeout 10m ./pkg/ipam/ 2>&1 \
	| grep -E '^Benchmark|^ok|FAIL'
echo
echo "# through the node agents (one etcd session per node, buffers) vs straight to etcd: fill exactly 1,000"
go test -tags integration -run '^$' -bench '^BenchmarkAgentFill1000$' -benchtime 1x -count 1 -timeout 20m ./pkg/ipam/agent/ 2>&1 \
	| grep -E '^\||^round|^Benchmark|^ok|FAIL'
