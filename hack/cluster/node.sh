#!/usr/bin/env bash
# node.sh: the nodes of the local cluster, for tests and for anyone who wants to see a failure.
#
#   node.sh list                   every node: state, address, PID 1
#   node.sh stop NODE              power cut: kill every process of the node (SIGKILL to its PID 1),
#                                  its link goes down
#   node.sh start NODE             boot it again (containerd, kubelet, kube-proxy; the control plane
#                                  too on node 1): it rejoins the cluster by itself
#   node.sh freeze|thaw NODE       pause / resume every process of the node (cgroup freezer)
#   node.sh cut|heal NODE          partition: drop / restore the node's traffic to and from the
#                                  other nodes and the host, while it keeps running
#   node.sh shell NODE             a shell inside the node (its namespaces: ip, ps, crictl-less ctr)
#   node.sh exec NODE CMD...       run CMD inside the node
#   node.sh logs NODE [COMPONENT]  the node's component logs (kubelet, containerd, kube-proxy, ...)
#
# NODE is a name (berth-node-2) or an index (2). A node is a network namespace berth-<i> joined to
# the host bridge $BERTH_DC_BRIDGE by a veth (bn<i> on the host, eth0 in the node), plus mount, UTS,
# IPC, PID and cgroup namespaces made by `unshare` around hack/cluster/node-init.sh, in the
# cgroup berth/<node> of every hierarchy. See docs/development.md.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/env"
S=$BERTH_STATE

die() { printf 'node: %s\n' "$*" >&2; exit 1; }
log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*"; }

# resolve NODE: sets idx, name, ns, ip, veth
resolve() {
  local n=${1:-}
  [ -n "$n" ] || die "which node? (a name like ${BERTH_NODE_PREFIX}2 or an index like 2)"
  if [[ $n =~ ^[0-9]+$ ]]; then idx=$n; else idx=${n#"$BERTH_NODE_PREFIX"}; fi
  [[ $idx =~ ^[0-9]+$ ]] && [ "$idx" -ge 1 ] && [ "$idx" -le 99 ] || die "no such node: $n"
  name=$BERTH_NODE_PREFIX$idx ns=berth-$idx ip=$BERTH_DC_PREFIX.$((10 + idx)) veth=bn$idx
}

cgroup_dirs() { # every hierarchy's directory for the node's cgroup
  awk '$9 == "cgroup" || $9 == "cgroup2" {print $5}' /proc/1/mountinfo | while read -r mp; do echo "$mp/berth/$name"; done
}

init_pid() { # PID 1 of the node, as the host sees it; empty when stopped
  local f=$S/nodes/$name/unshare.pid p
  [ -f "$f" ] || return 0
  p=$(cat "$f")
  kill -0 "$p" 2>/dev/null || return 0
  cat "/proc/$p/task/$p/children" 2>/dev/null | awk '{print $1}'
}

# create: the node's network (namespace, veth into the datacenter bridge, address, routes).
create() {
  if ! ip link show "$BERTH_DC_BRIDGE" >/dev/null 2>&1; then
    ip link add "$BERTH_DC_BRIDGE" type bridge
    ip addr add "$BERTH_DC_HOST/24" dev "$BERTH_DC_BRIDGE"
    ip link set "$BERTH_DC_BRIDGE" up
  fi
  ip netns list | grep -qw "^$ns" && return 0
  ip netns add "$ns"
  ip link add "$veth" type veth peer name eth0 netns "$ns"
  ip link set "$veth" master "$BERTH_DC_BRIDGE" up
  ip -n "$ns" link set lo up
  ip -n "$ns" link set eth0 up
  ip -n "$ns" addr add "$ip/24" dev eth0
  ip -n "$ns" route add default via "$BERTH_DC_HOST"
  # The bootstrap bridge network of every other node (10.217.j.0/24), until cni-vlan replaces it.
  local j
  for j in $(seq 1 "$BERTH_NODES"); do
    [ "$j" = "$idx" ] || ip -n "$ns" route add "${BERTH_POD_CIDR%.*.*/*}.$j.0/24" via "$BERTH_DC_PREFIX.$((10 + j))"
  done
}

boot() {
  [ -z "$(init_pid)" ] || { log "$name already running"; return 0; }
  ip netns list | grep -qw "^$ns" || die "$name has no network namespace: run make up"
  local role=worker d
  [ "$name" = "$BERTH_NODE" ] && role=control-plane
  mkdir -p "$S/nodes/$name" "$S/logs/$name"
  for d in $(cgroup_dirs); do
    mkdir -p "$d"
    # cpuset children start empty: give the node the machine's CPUs and memory nodes
    if [ -f "$d/cpuset.cpus" ]; then
      cat "$(dirname "$(dirname "$d")")/cpuset.cpus" >"$(dirname "$d")/cpuset.cpus" 2>/dev/null || true
      cat "$(dirname "$(dirname "$d")")/cpuset.mems" >"$(dirname "$d")/cpuset.mems" 2>/dev/null || true
      cat "$(dirname "$d")/cpuset.cpus" >"$d/cpuset.cpus"; cat "$(dirname "$d")/cpuset.mems" >"$d/cpuset.mems"
    fi
  done
  ip link set "$veth" up
  (
    for d in $(cgroup_dirs); do echo "$BASHPID" >"$d/cgroup.procs"; done
    exec nsenter --net="/run/netns/$ns" unshare --mount --uts --ipc --pid --cgroup --fork --mount-proc \
      --propagation slave env NODE="$name" NODE_IDX="$idx" NODE_IP="$ip" ROLE="$role" "$HERE/node-init.sh"
  ) >>"$S/logs/$name/init.log" 2>&1 </dev/null &
  echo $! >"$S/nodes/$name/unshare.pid"
  local end=$(( $(date +%s) + 10 )) pid1=
  until [ -n "$pid1" ]; do
    [ "$(date +%s)" -lt "$end" ] || die "$name did not start: $S/logs/$name/init.log"
    sleep 0.1; pid1=$(init_pid)
  done
  log "$name booted ($role, $ip, PID 1 = $pid1 on the host)"
}

stop() {
  local p
  p=$(init_pid)
  if [ -n "$p" ]; then
    # thaw first: a frozen process cannot die
    for d in $(cgroup_dirs); do [ -f "$d/freezer.state" ] && echo THAWED >"$d/freezer.state"; done
    kill -9 "$p" 2>/dev/null || true
    local end=$(( $(date +%s) + 20 ))
    while [ -n "$(procs)" ]; do
      [ "$(date +%s)" -lt "$end" ] || die "processes of $name survive: $(procs | head -5 | tr '\n' ' ')"
      procs | xargs -r kill -9 2>/dev/null || true
      sleep 0.2
    done
  fi
  ip link set "$veth" down 2>/dev/null || true
  rm -f "$S/nodes/$name/unshare.pid"
  # the node's cgroups, deepest first (pods' cgroups are empty now)
  for d in $(cgroup_dirs); do [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null; done
  log "$name stopped"
}

procs() { # every process in the node's cgroup subtree (freezer hierarchy)
  local d
  d=$(cgroup_dirs | grep /freezer/ | head -1)
  [ -n "$d" ] && [ -d "$d" ] && find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null
  true
}

freeze() {
  local d
  d=$(cgroup_dirs | grep /freezer/) || die "no freezer hierarchy"
  echo "$1" >"$d/freezer.state"
  log "$name $(cat "$d/freezer.state" | tr 'A-Z' 'a-z')"
}

# cut/heal: the host end of the node's link down/up. The node keeps running but reaches no other
# node, not the API server (unless it is node 1), not the registry: a network partition.
cut() { ip link set "$veth" down; log "$name cut off"; }
heal() { ip link set "$veth" up; log "$name connected again"; }

enter() { # enter CMD...: run inside the node's namespaces
  local p; p=$(init_pid)
  [ -n "$p" ] || die "$name is not running"
  exec nsenter -t "$p" -n -m -u -i -p -C --wd="$BERTH_ROOT" "$@"
}

list() {
  local i p state
  printf '%-14s %-14s %-10s %s\n' NODE ADDRESS STATE PID1
  for i in $(seq 1 "$BERTH_NODES"); do
    resolve "$i"; p=$(init_pid); state=stopped
    if [ -n "$p" ]; then
      state=running
      [ "$(cat "$(cgroup_dirs | grep /freezer/)/freezer.state" 2>/dev/null)" = FROZEN ] && state=frozen
      [ "$(cat "/sys/class/net/$veth/operstate" 2>/dev/null)" = down ] && state=cut
    fi
    printf '%-14s %-14s %-10s %s\n' "$name" "$ip" "$state" "${p:--}"
  done
}

cmd=${1:-}; shift || true
case "$cmd" in
  list) list ;;
  create) resolve "${1:-}"; create ;;
  start|boot) resolve "${1:-}"; boot ;;
  stop) resolve "${1:-}"; stop ;;
  freeze) resolve "${1:-}"; freeze FROZEN ;;
  thaw) resolve "${1:-}"; freeze THAWED ;;
  cut) resolve "${1:-}"; cut ;;
  heal) resolve "${1:-}"; heal ;;
  shell) resolve "${1:-}"; enter bash ;;
  exec) resolve "${1:-}"; shift; enter "$@" ;;
  logs)
    resolve "${1:-}"
    if [ -n "${2:-}" ]; then exec tail -n 200 "$S/logs/$name/$2.log"; else ls -l "$S/logs/$name"; fi ;;
  *) sed -n '2,/^set -e/p' "$0" | sed -e 's/^# \{0,1\}//' -e '/^set -e/d' >&2; exit 2 ;;
esac
