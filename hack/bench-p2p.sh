#!/usr/bin/env bash
# bench-p2p.sh (make bench-p2p): N nodes pull one image at the same moment, directly from the
# registry and through N p2p-pullers, in the same run; prints a markdown table (time until all N
# have it ÷ one node's direct pull, p50/p95, upstream bytes per image, the most one node uploaded
# to peers per image, CPU use, failures).
#
# MODE=links (default, needs root): every node is its own network namespace behind its own link,
#   shaped with tc tbf each way (the registry's too), running the real p2p-puller binary and a
#   client that pulls like containerd (internal/p2pbench, BenchmarkP2PLinks). Knobs (env):
#     BERTH_BENCH_P2P_LINK=100mbit     each link's rate each way (tc syntax)
#     BERTH_BENCH_P2P_MB=100           image size in MB (random, incompressible)
#     BERTH_BENCH_P2P_N=1,2,4,8,16     node counts (32 works too: see docs/p2p.md#benchmark)
#     BERTH_BENCH_P2P_LAYERS=1,4       layer counts (one shape per value)
#     BERTH_BENCH_P2P_PULLER=          a p2p-puller binary (default: built from ./cmd/p2p-puller)
# MODE=inprocess: the earlier table, every puller in this one process on loopback and the registry's
#   egress shaped in-process (pkg/p2p, BenchmarkP2PFanout): it shows the CPU cost of N pullers on
#   one machine, not the time N machines take. Knobs: BERTH_BENCH_P2P_MB, _RATE_MB (registry
#   egress MB/s, 100), _N (1,2,4,8,16,32), _LAYERS (1,4).
# Needs ~N x image size of free disk in $TMPDIR (caches are removed after each N).
set -euo pipefail
cd "$(dirname "$0")/.."
case "${MODE:-links}" in
  links)
    exec go test -tags integration -count=1 -run '^$' -bench '^BenchmarkP2PLinks$' -benchtime 1x -timeout 90m \
      ./internal/p2pbench/ 2>&1 | grep --line-buffered -v -E '^[IEW][0-9]{4} ' ;;
  inprocess)
    exec go test -tags integration -count=1 -run '^$' -bench '^BenchmarkP2PFanout$' -benchtime 1x -timeout 60m \
      ./pkg/p2p/ 2>&1 | grep --line-buffered -v -E '^[IEW][0-9]{4} ' ;;
  *) echo "bench-p2p: MODE must be links or inprocess, got '${MODE}'" >&2; exit 2 ;;
esac
