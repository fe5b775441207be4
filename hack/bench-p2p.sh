#!/usr/bin/env bash
# bench-p2p.sh (make bench-p2p): N nodes pull one image at the same moment, directly from a
# registry with shaped egress and through N p2p-pullers, in the same run; prints a markdown table
# (upstream bytes per image, the most one node uploaded to peers per image, time until all N have it
# vs one node's direct pull, p50/p95, failures).
#
# Everything runs in one process on loopback: a distribution/v3 registry (egress shaped to
# BERTH_BENCH_P2P_RATE_MB MB/s over all connections), N in-process p2p-pullers, N
# go-containerregistry clients that read every blob (go-containerregistry verifies each digest once). Knobs (env):
#   BERTH_BENCH_P2P_MB=100          image size in MB (random, incompressible)
#   BERTH_BENCH_P2P_RATE_MB=100     registry egress in MB/s
#   BERTH_BENCH_P2P_N=1,2,4,8,16,32 node counts
#   BERTH_BENCH_P2P_LAYERS=1,4      layer counts
# Needs ~N x image size of free disk in $TMPDIR (caches are removed after each N).
set -euo pipefail
cd "$(dirname "$0")/.."
exec go test -tags integration -count=1 -run '^$' -bench '^BenchmarkP2PFanout$' -benchtime 1x -timeout 60m ./pkg/p2p/ 2>&1 \
  | grep -v -E '^[IEW][0-9]{4} ' 
