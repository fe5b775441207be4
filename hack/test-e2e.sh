#!/usr/bin/env bash
# test-e2e.sh: brings up a fresh local cluster, runs the e2e suite against it, and tears it
# down whatever happened. On failure the cluster's logs are kept in $BERTH_STATE/../e2e-logs.
# KEEP_CLUSTER=1 leaves the cluster running for debugging (make down removes it).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/hack/cluster/env"
cleanup() {
  rc=$?
  if [ $rc -ne 0 ] && [ -d "$BERTH_STATE/logs" ]; then
    rm -rf "$BERTH_STATE/../e2e-logs"; cp -r "$BERTH_STATE/logs" "$BERTH_STATE/../e2e-logs"
    # GlusterFS's own logs (bricks, self-heal daemon, CLI) and berth's pod logs live in the
    # nodes' state, which `down` removes.
    for nd in "$BERTH_STATE"/nodes/*/; do
      n=$(basename "$nd"); mkdir -p "$BERTH_STATE/../e2e-logs/$n"
      [ -d "$nd/glusterd/log" ] && cp -r "$nd/glusterd/log" "$BERTH_STATE/../e2e-logs/$n/gluster"
      for p in "$nd"/sys/var/log/pods/berth-system_*; do
        [ -d "$p" ] && cp -rL "$p" "$BERTH_STATE/../e2e-logs/$n/" 2>/dev/null
      done
    done
    echo "test-e2e: failed; cluster logs copied to $(cd "$BERTH_STATE/.." && pwd)/e2e-logs" >&2
  fi
  [ "${KEEP_CLUSTER:-0}" = 1 ] || "$ROOT/hack/cluster/cluster.sh" down >/dev/null 2>&1
  exit $rc
}
trap cleanup EXIT
"$ROOT/hack/cluster/cluster.sh" down >/dev/null 2>&1 || true
"$ROOT/hack/cluster/cluster.sh" up || exit 1
cd "$ROOT" && go test -count=1 -tags e2e -timeout "${E2E_TIMEOUT:-55m}" -v ${E2E_RUN:+-run "$E2E_RUN"} ./e2e/...
