#!/usr/bin/env bash
# cluster.sh: a real multi-node Kubernetes cluster on this machine, for berth's e2e tests and demo.
#
#   cluster.sh up       $BERTH_NODES nodes (NODES=N, default 3), each a set of namespaces of its own
#                       (node.sh) on a simulated datacenter bridge, with containerd + runc, the kubelet
#                       and kube-proxy; etcd, kube-apiserver, kube-controller-manager, kube-scheduler
#                       on node 1; glusterd on every node (one trusted pool, a replica-3 volume);
#                       the reference bridge CNI until cni-vlan replaces it; an
#                       OCI registry (distribution/v3) on the host holding berth's images; then
#                       installs berth from manifests/ (BERTH_INSTALL=0 to skip)
#   cluster.sh down     stops all of it and removes what it created; safe to run twice
#   cluster.sh status   the nodes and what runs on the host
#
# Settings (ports, paths, CIDRs) live in hack/cluster/env. State and logs: $BERTH_STATE
# (.state/cluster), logs in $BERTH_STATE/logs/<node>/<component>.log. See docs/development.md.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/env"
S=$BERTH_STATE
B=$BERTH_CACHE/kube/bin
P=$S/pki
L=$S/logs
# Paths as a node sees them: node-init.sh bind-mounts $S/nodes/<node>/<dir> over $S/<dir>.
SOCK=$S/containerd/containerd.sock
CNI_CONF=$S/cni/net.d
CNI_BIN=$S/cni/bin
CERTS_D=$S/containerd/certs.d
KUBELET_ROOT=$S/kubelet/root
NODE_SH=$HERE/node.sh
node_name() { echo "$BERTH_NODE_PREFIX$1"; }
node_ip() { echo "$BERTH_DC_PREFIX.$((10 + $1))"; }
nodes() { seq 1 "$BERTH_NODES"; }

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { printf 'cluster: %s\n' "$*" >&2; exit 1; }
K() { "$B/kubectl" "$@"; }
wait_for() { # wait_for SECONDS CMD...: poll every 0.3 s
  local end=$(( $(date +%s) + $1 )); shift
  until "$@" >/dev/null 2>&1; do [ "$(date +%s)" -ge "$end" ] && return 1; sleep 0.3; done
}
running() { local f=$L/$1.pid; [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null; }

# port_free PORT COMPONENT: fail clearly when something else holds a port we need.
port_free() {
  local who
  who=$(ss -Hltnp "sport = :$1" 2>/dev/null | head -1)
  [ -z "$who" ] && return 0
  die "port $1 needed by $2 is already in use: $who
  (another cluster on this machine? override the port in hack/cluster/env, e.g. BERTH_APISERVER_PORT=..., or run 'make down')"
}

# start NAME PORTS CMD...: start a component in the background unless it already runs.
start() {
  local name=$1 ports=$2; shift 2
  if running "$name"; then log "$name already running (pid $(cat "$L/$name.pid"))"; return 0; fi
  for p in $ports; do port_free "$p" "$name"; done
  nohup "$@" >"$L/$name.log" 2>&1 &
  echo $! >"$L/$name.pid"
}

# ready NAME SECONDS CMD...: wait until CMD succeeds; on timeout say what failed and where its log is.
ready() {
  local name=$1 t=$2; shift 2
  if ! wait_for "$t" "$@"; then
    echo "cluster: $name did not become ready within ${t}s. Last lines of $L/$name.log:" >&2
    tail -n 20 "$L/$name.log" >&2 || true
    return 1
  fi
  log "$name ready"
}

preflight() {
  [ "$(id -u)" = 0 ] || die "must run as root (containerd, kubelet and CNI need it); try: sudo make up"
  local missing=()
  [[ $BERTH_NODES =~ ^[0-9]+$ ]] && [ "$BERTH_NODES" -ge 1 ] && [ "$BERTH_NODES" -le 8 ] ||
    die "NODES=$BERTH_NODES: give 1 to 8 nodes (each costs ~300 MiB and a little CPU; see docs/development.md)"
  for c in containerd runc etcd openssl iptables ip ss unshare nsenter /usr/lib/cni/bridge /usr/lib/cni/host-local; do
    command -v "$c" >/dev/null 2>&1 || [ -x "$c" ] || missing+=("$c")
  done
  [ ${#missing[@]} -eq 0 ] || die "missing ${missing[*]}: run 'make deps' (hack/install-deps.sh)"
  for c in kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl kube-proxy; do
    [ -x "$B/$c" ] || die "missing $B/$c: run 'make kube' (hack/build-kube.sh builds it from the module proxy)"
  done
}

pki() {
  [ -f "$P/ca.crt" ] && return 0
  log "making PKI in $P"
  mkdir -p "$P" && cd "$P"
  ca() { openssl req -x509 -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.crt" -days 3650 -subj "/CN=$2" 2>/dev/null; }
  cert() { # cert NAME CN O CA [SAN]
    local n=$1 cn=$2 o=$3 ca=$4 san=${5:-}
    openssl req -newkey rsa:2048 -nodes -keyout "$n.key" -out "$n.csr" -subj "/CN=$cn${o:+/O=$o}" 2>/dev/null
    { echo "basicConstraints=CA:FALSE"; echo "keyUsage=critical,digitalSignature,keyEncipherment"
      if [ -n "$san" ]; then echo "extendedKeyUsage=serverAuth,clientAuth"; echo "subjectAltName=$san"
      else echo "extendedKeyUsage=clientAuth"; fi; } >"$n.ext"
    openssl x509 -req -in "$n.csr" -CA "$ca.crt" -CAkey "$ca.key" -CAcreateserial -out "$n.crt" -days 3650 -extfile "$n.ext" 2>/dev/null
    rm -f "$n.csr" "$n.ext"
  }
  ca ca berth-local-ca
  ca front-proxy-ca berth-local-front-proxy-ca
  cert apiserver kube-apiserver "" ca "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost,IP:127.0.0.1,IP:$BERTH_CP_IP,IP:$BERTH_SERVICE_IP"
  cert admin kubernetes-admin system:masters ca
  cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters ca
  cert controller-manager system:kube-controller-manager "" ca
  cert scheduler system:kube-scheduler "" ca
  cert kube-proxy system:kube-proxy "" ca
  local i n
  for i in $(nodes); do
    n=$(node_name "$i")
    cert "kubelet-$n" "system:node:$n" system:nodes ca
    cert "kubelet-serving-$n" "$n" "" ca "DNS:$n,DNS:localhost,IP:127.0.0.1,IP:$(node_ip "$i")"
  done
  cert front-proxy-client front-proxy-client "" front-proxy-ca
  openssl genrsa -out sa.key 2048 2>/dev/null; openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  for u in admin controller-manager scheduler kube-proxy $(for i in $(nodes); do echo "kubelet-$(node_name "$i")"; done); do
    cat >"$u.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: berth-local
  cluster: {certificate-authority: $P/ca.crt, server: "https://$BERTH_CP_IP:$BERTH_APISERVER_PORT"}
users:
- name: $u
  user: {client-certificate: $P/$u.crt, client-key: $P/$u.key}
contexts:
- name: berth-local
  context: {cluster: berth-local, user: $u}
current-context: berth-local
EOF
  done
  cd - >/dev/null
}

# configs I: node i's containerd, CNI, kubelet and kube-proxy files, written to $S/nodes/<node>/
# (N=) and naming the paths the node sees ($S/...).
configs() {
  local i=$1 n N podcidr
  n=$(node_name "$i"); N=$S/nodes/$n
  podcidr="${BERTH_POD_CIDR%.*.*/*}.$i.0/24"
  mkdir -p "$N/containerd/certs.d/ghcr.io" "$N/cni/net.d" "$N/cni/bin" "$N/cni/ipam" "$N/kubelet/manifests" \
    "$N/kubelet/root" "$N/kube-proxy" "$S/registry"
  # containerd 1.6 takes ONE CNI bin_dir: the reference plugins plus berth's, side by side.
  # Copies, not symlinks: cni-vlan's installer checks the chained plugins (bandwidth) from
  # inside its container, where a link into the host's /usr/lib/cni dangles.
  for p in /usr/lib/cni/*; do [ -e "$N/cni/bin/$(basename "$p")" ] || cp "$p" "$N/cni/bin/"; done
  # restrict_oom_score_adj: this VM lacks CAP_SYS_RESOURCE, without it every sandbox fails to start.
  cat >"$N/containerd/config.toml" <<EOF
version = 2
root = "$S/containerd/root"
state = "$S/containerd/state"
[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$SOCK.ttrpc"
[debug]
  address = "$S/containerd/debug.sock"
[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "$S/containerd/opt"
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "ghcr.io/berth-dev/pause:$(cat "$BERTH_ROOT/VERSION")"
    restrict_oom_score_adj = true
    netns_mounts_under_state_dir = true
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = false
          Root = "$S/containerd/runc"
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "$CNI_BIN"
      conf_dir = "$CNI_CONF"
      max_conf_num = 1
    [plugins."io.containerd.grpc.v1.cri".registry]
      config_path = "$CERTS_D"
EOF
  # ghcr.io/berth-dev/* resolves from the local registry: manifests keep their production image names.
  cat >"$N/containerd/certs.d/ghcr.io/hosts.toml" <<EOF
server = "https://ghcr.io"
[host."http://$BERTH_REGISTRY"]
  capabilities = ["pull", "resolve"]
EOF
  # The reference bridge + host-local CNI, until cni-vlan is installed over it.
  [ -n "$(ls -A "$N/cni/net.d" 2>/dev/null)" ] || cat >"$N/cni/net.d/10-berth-bridge.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "berth-bridge",
  "plugins": [
    {"type": "bridge", "bridge": "$BERTH_BRIDGE", "isGateway": true, "ipMasq": true, "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": "$S/cni/ipam", "ranges": [[{"subnet": "$podcidr"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}},
    {"type": "bandwidth", "capabilities": {"bandwidth": true}}
  ]
}
EOF
  # failCgroupV1: false — v1.35 refuses cgroup v1 by default, and this machine runs cgroup v1.
  cat >"$N/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupsPerQOS: true
enforceNodeAllocatable: ["pods"]
failSwapOn: false
containerRuntimeEndpoint: unix://$SOCK
address: 0.0.0.0
port: $BERTH_KUBELET_PORT
healthzBindAddress: 127.0.0.1
healthzPort: $BERTH_KUBELET_HEALTHZ_PORT
readOnlyPort: 0
tlsCertFile: $P/kubelet-serving-$n.crt
tlsPrivateKeyFile: $P/kubelet-serving-$n.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $P/ca.crt}
authorization: {mode: Webhook}
podCIDR: $podcidr
clusterDomain: cluster.local
clusterDNS: ["$BERTH_DNS_IP"]
resolvConf: /etc/resolv.conf
podLogsDir: $S/kubelet-logs/pods
staticPodPath: $S/kubelet/manifests
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
maxPods: 250
EOF
  cat >"$N/kube-proxy/config.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $P/kube-proxy.kubeconfig}
mode: iptables
clusterCIDR: $BERTH_VLAN_SUBNET # pod traffic from the VLAN is not masqueraded: every node shares its gateway address
hostnameOverride: $n
healthzBindAddress: 127.0.0.1:$BERTH_PROXY_HEALTHZ_PORT
metricsBindAddress: 127.0.0.1:$BERTH_PROXY_METRICS_PORT
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
}

start_registry() {
  go build -o "$BERTH_CACHE/bin/registry" "$BERTH_ROOT/hack/registry"
  start registry "$BERTH_REGISTRY_PORT" "$BERTH_CACHE/bin/registry" --addr "$BERTH_REGISTRY" --root "$S/registry" \
    --private-prefix "$BERTH_REGISTRY_PRIVATE_PREFIX" --private-credentials "$BERTH_REGISTRY_PRIVATE_CREDENTIALS"
  ready registry 30 curl -sf "http://$BERTH_REGISTRY/v2/"
}

# in_node I CMD...: run CMD inside node I (its network, mounts, PIDs)
in_node() { local i=$1; shift; "$NODE_SH" exec "$i" "$@"; }

# start_control_plane: node 1, with etcd, the API server, controller-manager and scheduler, then
# (as on every node) glusterd, containerd, the kubelet and kube-proxy.
start_control_plane() {
  L=$S/logs/$BERTH_NODE
  "$NODE_SH" start 1
  ready kube-apiserver 120 sh -c "'$B/kubectl' get --raw /readyz | grep -q ok"
  ready kube-controller-manager 120 in_node 1 curl -skf "https://127.0.0.1:$BERTH_KCM_PORT/healthz"
  ready kube-scheduler 120 in_node 1 curl -skf "https://127.0.0.1:$BERTH_SCHEDULER_PORT/healthz"
  L=$S/logs
}

# start_nodes: boot nodes 2..N (node 1 runs already) and wait until every kubelet is Ready and
# every kube-proxy healthy.
start_nodes() {
  local i n
  for i in $(nodes); do [ "$i" = 1 ] || "$NODE_SH" start "$i"; done
  for i in $(nodes); do
    n=$(node_name "$i"); L=$S/logs/$n
    ready kubelet 120 sh -c "'$B/kubectl' get node $n -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -q True"
    ready kube-proxy 60 sh -c "'$NODE_SH' exec $i curl -s 127.0.0.1:$BERTH_PROXY_HEALTHZ_PORT/healthz | grep -q '\"healthy\":true'"
  done
  L=$S/logs
  ready default-serviceaccount 60 "$B/kubectl" -n default get sa default
}

# host_dirs: directories node-init.sh mounts over that this machine may lack; made here and
# recorded, so that down removes exactly what up created.
host_dirs() {
  local d
  for d in /var/lib/cni /var/log/containers /var/log/pods; do
    [ -d "$d" ] && continue
    mkdir -p "$d" && echo "$d" >>"$S/created-dirs"
  done
}

build_images() {
  log "building berth binaries and images"
  make -s -C "$BERTH_ROOT" build >"$L/images.log" 2>&1 || { echo "cluster: make build failed, see $L/images.log" >&2; tail -20 "$L/images.log" >&2; return 1; }
  "$BERTH_ROOT/hack/images.sh" >>"$L/images.log" 2>&1 || { echo "cluster: image build failed, see $L/images.log" >&2; tail -20 "$L/images.log" >&2; return 1; }
  log "images pushed to 127.0.0.1:$BERTH_REGISTRY_PORT (log: $L/images.log)"
}

start_dns() {
  sed -e "s|@DNS_IP@|$BERTH_DNS_IP|g" -e "s|@VERSION@|$(cat "$BERTH_ROOT/VERSION")|g" "$HERE/coredns.yaml" | K apply -f - >"$L/coredns-apply.log" 2>&1 ||
    { cat "$L/coredns-apply.log" >&2; return 1; }
  ready coredns 120 "$B/kubectl" -n kube-system wait --for=condition=Available deploy/coredns --timeout=5s
}

# gluster_config: glusterd's configuration for every node, under the node's own $S/glusterd
# (node-init.sh binds $S/nodes/<node>/glusterd there and starts glusterd when it finds it).
# glusterd's management port is always 24007 (one glusterd per network namespace); its socket
# is the default /var/run/glusterd.socket, in the node's private /run. The keepalive options are Debian's defaults
# and not optional: without them glusterd cannot connect to a peer ("peer probe" times out).
gluster_config() {
  local i d g=$S/glusterd # g: the path as the node sees it
  for i in $(nodes); do
    d=$S/nodes/$(node_name "$i")/glusterd
    mkdir -p "$d/lib/groups" "$d/log" "$d/bricks"
    cp /var/lib/glusterd/groups/* "$d/lib/groups/" 2>/dev/null || true
    cat >"$d/glusterd.vol" <<EOF
volume management
    type mgmt/glusterd
    option working-directory $g/lib
    option logging-directory $g/log
    option transport-type socket
    option transport.socket.keepalive-time 10
    option transport.socket.keepalive-interval 2
    option transport.socket.read-fail-log off
    option transport.socket.listen-port 24007
    option ping-timeout 0
    option event-threads 1
end-volume
EOF
  done
}

# gluster_cli ARGS...: the gluster CLI inside node 1; any member of the pool answers for all.
gluster_cli() { in_node 1 gluster --mode=script --log-file="$S/glusterd/log/cli.log" "$@"; }
pool_connected() { [ "$(gluster_cli pool list | grep -c Connected)" -eq "$BERTH_NODES" ]; }

# gluster_volume: the nodes' glusterds form one trusted pool, and the volume the StorageClasses
# use is replicated across nodes: replica $BERTH_GLUSTER_REPLICA (3, or fewer on a smaller
# cluster), one brick per node on the first replica*k nodes, so 6 nodes give a
# distributed-replicated 2x3 volume (and BERTH_GLUSTER_REPLICA=2 on 4 nodes SAE's 2x2).
gluster_volume() {
  local i ip replica n bricks=() r=()
  for i in $(nodes); do
    ready "glusterd on $(node_name "$i")" 60 in_node "$i" gluster --mode=script pool list
  done
  for i in $(nodes); do
    [ "$i" = 1 ] && continue
    ip=$(node_ip "$i")
    gluster_cli peer probe "$ip" >>"$L/glusterd.log" 2>&1 || die "gluster peer probe $ip failed, see $L/glusterd.log"
  done
  ready "gluster pool of $BERTH_NODES nodes" 60 pool_connected
  replica=${BERTH_GLUSTER_REPLICA:-3}
  [ "$replica" -le "$BERTH_NODES" ] || replica=$BERTH_NODES
  n=$(( BERTH_NODES / replica * replica ))
  for i in $(seq 1 "$n"); do bricks+=("$(node_ip "$i"):$S/glusterd/bricks/$BERTH_GLUSTER_VOLUME"); done
  if ! gluster_cli volume info "$BERTH_GLUSTER_VOLUME" >/dev/null 2>&1; then
    [ "$replica" -gt 1 ] && r=(replica "$replica")
    gluster_cli volume create "$BERTH_GLUSTER_VOLUME" "${r[@]}" "${bricks[@]}" force >>"$L/glusterd.log" 2>&1 ||
      die "gluster volume create failed, see $L/glusterd.log"
    # A dead brick host is given up on after 15 s instead of 42: writers on the other nodes
    # pause that long, not most of a minute (docs/csi.md, "When a node dies").
    gluster_cli volume set "$BERTH_GLUSTER_VOLUME" network.ping-timeout 15 >>"$L/glusterd.log" 2>&1 ||
      die "gluster volume set failed, see $L/glusterd.log"
  fi
  gluster_cli volume start "$BERTH_GLUSTER_VOLUME" force >>"$L/glusterd.log" 2>&1 || die "gluster volume start failed, see $L/glusterd.log"
  log "gluster pool of $BERTH_NODES nodes: volume $BERTH_GLUSTER_VOLUME, replica $replica, bricks ${bricks[*]}"
}

install_berth() {
  [ "${BERTH_INSTALL:-1}" = 1 ] || { log "BERTH_INSTALL=0: berth not installed"; return 0; }
  gluster_volume
  "$HERE/install-berth.sh"
}

up() {
  preflight
  local t0 i; t0=$(date +%s)
  mkdir -p "$L" "$BERTH_CACHE/bin"
  trap 'rc=$?; if [ $rc -ne 0 ]; then echo "cluster: make up failed; stopping what it started (logs stay in $L)" >&2; down_keep_logs; fi; exit $rc' EXIT
  pki
  for i in $(nodes); do configs "$i"; "$NODE_SH" create "$i"; done
  host_dirs
  gluster_config
  CGO_ENABLED=0 go build -o "$BERTH_CACHE/bin/pause" "$BERTH_ROOT/hack/pause"
  start_registry
  start_control_plane
  build_images
  start_nodes
  start_dns
  install_berth
  trap - EXIT
  touch "$S/ready"
  log "cluster up in $(( $(date +%s) - t0 ))s"
  cat <<EOF

  The berth local cluster is up: $BERTH_NODES node(s), Kubernetes $("$B/kubectl" version -o json 2>/dev/null | sed -n 's/.*"gitVersion": "\(v1[^"]*\)".*/\1/p' | tail -1).
    . hack/cluster/env             # KUBECONFIG and kubectl
    kubectl get nodes -o wide
    hack/cluster/node.sh list      # stop|start|freeze|thaw|cut|heal|shell|logs NODE
  Registry: $BERTH_REGISTRY (ghcr.io/berth-dev/* resolves there)   Logs: $S/logs/<node>/
  Stop and clean everything: make down
EOF
}

status() {
  "$NODE_SH" list
  if running registry; then printf '%-14s running (pid %s)  log %s\n' registry "$(cat "$L/registry.pid")" "$L/registry.log"
  else printf '%-14s stopped\n' registry; fi
}

kill_pid() { # kill_pid NAME: TERM, wait up to 10 s, then KILL
  local f=$L/$1.pid p
  [ -f "$f" ] || return 0
  p=$(cat "$f")
  if kill -0 "$p" 2>/dev/null; then
    kill "$p" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$p" 2>/dev/null && kill -9 "$p" 2>/dev/null || true
  fi
  rm -f "$f"
}

drain_workloads() {
  K get --raw /readyz >/dev/null 2>&1 || return 0
  log "deleting workloads so the kubelets tear sandboxes down (CNI DEL)"
  K delete mutatingwebhookconfigurations,validatingwebhookconfigurations --all --wait=false >/dev/null 2>&1 || true
  K delete ds,deploy,rs,sts,job,cronjob --all -A --wait=false >/dev/null 2>&1 || true
  K delete pods --all -A --grace-period=1 --wait=false >/dev/null 2>&1 || true
  wait_for 60 sh -c "[ -z \"\$('$B/kubectl' get pods -A --no-headers 2>/dev/null)\" ]" ||
    log "warning: some pods are still there; the nodes are stopped anyway"
}

down_keep_logs() {
  set +e
  drain_workloads
  local i n d
  # every node: a power cut (kills all its processes; its mounts go with its mount namespace)
  for i in $(seq 1 99); do
    n=$(node_name "$i")
    [ -d "$S/nodes/$n" ] || ip netns list 2>/dev/null | grep -qw "^berth-$i" || continue
    "$NODE_SH" stop "$i" >/dev/null
    ip netns del "berth-$i" 2>/dev/null
    ip link del "bn$i" 2>/dev/null
  done
  ip link del "$BERTH_DC_BRIDGE" 2>/dev/null
  for d in /sys/fs/cgroup/*/berth /sys/fs/cgroup/berth; do [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null; done
  kill_pid registry
  # anything still mounted under our state dir (nothing, unless a node could not be stopped)
  awk -v r="$S/" 'index($5,r)==1 {print $5}' /proc/self/mountinfo | sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done
  [ -f "$S/created-dirs" ] && sort -r "$S/created-dirs" | while read -r d; do rmdir "$d" 2>/dev/null; done
  if [ -x "$HERE/down-extra.sh" ]; then "$HERE/down-extra.sh"; fi
  rm -rf "$S/nodes" "$S/etcd" "$S/ipam-etcd" "$S/registry" "$S/ready" "$S/glusterd" "$S/created-dirs"
  set -e
}

down() {
  down_keep_logs
  rm -rf "$S"
  log "down: the local cluster is stopped and its state removed"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
