#!/bin/bash
# Benchmark of the berth CSI driver (csi-sharedfs) against its references, one run:
# brick disk vs plain GlusterFS FUSE mount vs berth volume (bind mount, unlimited) vs berth
# volume through the IO layer; sequential 1 MiB and random 4 KiB O_DIRECT IO; 4 parallel
# writers into one quota'd volume (rate and overshoot, GlusterFS write-behind off and on, 3
# rounds each); write-limit accuracy; provisioning latency p50. Needs root, glusterfs-server,
# glusterfs-client and no other glusterd running (it starts its own on port 24007).
set -euo pipefail
cd "$(dirname "$0")/.."
go test -count=1 -tags integration -run '^$' -bench '^BenchmarkSharedStorage$' -benchtime 1x \
  -timeout 10m ./pkg/csi/ 2>&1 | grep -v '^[IEW][0-9]\{4\} ' | grep -v '^\(goos\|goarch\|pkg\|cpu\|PASS\|ok\)' 
