#!/usr/bin/env bash
# cluster.sh: a real single-node Kubernetes cluster on this machine, for berth's e2e tests and demo.
#
#   cluster.sh up       containerd + runc, etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
#                       kubelet, kube-proxy, the reference bridge CNI, an OCI registry (distribution/v3)
#                       holding berth's images; then installs berth (BERTH_INSTALL=0 to skip)
#   cluster.sh down     stops all of it by PID and removes what it created; safe to run twice
#   cluster.sh status   what runs, where its log is
#
# Settings (ports, paths, CIDRs) live in hack/cluster/env. State and logs: $BERTH_STATE
# (.state/cluster), logs in $BERTH_STATE/logs/<component>.log. See docs/development.md.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/env"
S=$BERTH_STATE
B=$BERTH_CACHE/kube/bin
P=$S/pki
L=$S/logs
SOCK=$S/containerd/containerd.sock
CNI_CONF=$S/cni/net.d
CNI_BIN=$S/cni/bin
CERTS_D=$S/containerd/certs.d
KUBELET_ROOT=$S/kubelet/root
COMPONENTS="registry containerd etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy"

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { printf 'cluster: %s\n' "$*" >&2; exit 1; }
K() { "$B/kubectl" "$@"; }
wait_for() { # wait_for SECONDS CMD...: poll every 0.3 s
  local end=$(( $(date +%s) + $1 )); shift
  until "$@" >/dev/null 2>&1; do [ "$(date +%s)" -ge "$end" ] && return 1; sleep 0.3; done
}
host_ip() {
  local ip
  ip=$(ip -4 route get 1.1.1.1 2>/dev/null | awk '{for(i=1;i<=NF;i++) if($i=="src") print $(i+1)}')
  [ -n "$ip" ] || ip=$(ip -4 -o addr show scope global | awk '{split($4,a,"/"); print a[1]; exit}')
  [ -n "$ip" ] || die "no global IPv4 address on this machine: the kubelet needs one for --node-ip"
  echo "$ip"
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
  for c in containerd runc etcd openssl iptables ip ss /usr/lib/cni/bridge /usr/lib/cni/host-local; do
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
  local ip; ip=$(host_ip)
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
  cert apiserver kube-apiserver "" ca "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost,IP:127.0.0.1,IP:$ip,IP:$BERTH_SERVICE_IP"
  cert admin kubernetes-admin system:masters ca
  cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters ca
  cert controller-manager system:kube-controller-manager "" ca
  cert scheduler system:kube-scheduler "" ca
  cert kube-proxy system:kube-proxy "" ca
  cert kubelet "system:node:$BERTH_NODE" system:nodes ca
  cert kubelet-serving "$BERTH_NODE" "" ca "DNS:$BERTH_NODE,DNS:localhost,IP:127.0.0.1,IP:$ip"
  cert front-proxy-client front-proxy-client "" front-proxy-ca
  openssl genrsa -out sa.key 2048 2>/dev/null; openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  for u in admin controller-manager scheduler kubelet kube-proxy; do
    cat >"$u.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: berth-local
  cluster: {certificate-authority: $P/ca.crt, server: "https://127.0.0.1:$BERTH_APISERVER_PORT"}
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

configs() {
  mkdir -p "$S/containerd" "$CERTS_D/ghcr.io" "$CNI_CONF" "$CNI_BIN" "$S/cni/ipam" "$S/kubelet/manifests" "$KUBELET_ROOT" "$S/kube-proxy" "$S/registry"
  # containerd 1.6 takes ONE CNI bin_dir: the reference plugins plus berth's, side by side.
  # Copies, not symlinks: cni-vlan's installer checks the chained plugins (bandwidth) from
  # inside its container, where a link into the host's /usr/lib/cni dangles.
  for p in /usr/lib/cni/*; do [ -e "$CNI_BIN/$(basename "$p")" ] || cp "$p" "$CNI_BIN/"; done
  # restrict_oom_score_adj: this VM lacks CAP_SYS_RESOURCE, without it every sandbox fails to start.
  cat >"$S/containerd/config.toml" <<EOF
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
  cat >"$CERTS_D/ghcr.io/hosts.toml" <<EOF
server = "https://ghcr.io"
[host."http://127.0.0.1:$BERTH_REGISTRY_PORT"]
  capabilities = ["pull", "resolve"]
EOF
  # The reference bridge + host-local CNI, until cni-vlan is installed over it.
  [ -n "$(ls -A "$CNI_CONF" 2>/dev/null)" ] || cat >"$CNI_CONF/10-berth-bridge.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "berth-bridge",
  "plugins": [
    {"type": "bridge", "bridge": "$BERTH_BRIDGE", "isGateway": true, "ipMasq": true, "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": "$S/cni/ipam", "ranges": [[{"subnet": "$BERTH_POD_CIDR"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}},
    {"type": "bandwidth", "capabilities": {"bandwidth": true}}
  ]
}
EOF
  # failCgroupV1: false — v1.35 refuses cgroup v1 by default, and this machine runs cgroup v1.
  cat >"$S/kubelet/config.yaml" <<EOF
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
tlsCertFile: $P/kubelet-serving.crt
tlsPrivateKeyFile: $P/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $P/ca.crt}
authorization: {mode: Webhook}
podCIDR: $BERTH_POD_CIDR
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
  cat >"$S/kube-proxy/config.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $P/kube-proxy.kubeconfig}
mode: iptables
clusterCIDR: $BERTH_POD_CIDR
hostnameOverride: $BERTH_NODE
healthzBindAddress: 127.0.0.1:$BERTH_PROXY_HEALTHZ_PORT
metricsBindAddress: 127.0.0.1:$BERTH_PROXY_METRICS_PORT
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
}

start_registry() {
  go build -o "$BERTH_CACHE/bin/registry" "$BERTH_ROOT/hack/registry"
  start registry "$BERTH_REGISTRY_PORT" "$BERTH_CACHE/bin/registry" --addr "127.0.0.1:$BERTH_REGISTRY_PORT" --root "$S/registry"
  ready registry 30 curl -sf "http://127.0.0.1:$BERTH_REGISTRY_PORT/v2/"
}

start_control_plane() {
  local ip=$1 e=$BERTH_ETCD_PORT
  start etcd "$e $((e + 10)) $((e + 20))" etcd --name berth --data-dir "$S/etcd" \
    --listen-client-urls "http://127.0.0.1:$e" --advertise-client-urls "http://127.0.0.1:$e" \
    --listen-peer-urls "http://127.0.0.1:$((e + 10))" --initial-advertise-peer-urls "http://127.0.0.1:$((e + 10))" \
    --initial-cluster "berth=http://127.0.0.1:$((e + 10))" --listen-metrics-urls "http://127.0.0.1:$((e + 20))"
  ready etcd 30 sh -c "curl -s http://127.0.0.1:$e/health | grep -q true"
  # --enable-aggregator-routing: the apiserver calls webhooks on endpoint IPs, kube-proxy or not.
  start kube-apiserver "$BERTH_APISERVER_PORT" "$B/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$e" --bind-address=0.0.0.0 --secure-port="$BERTH_APISERVER_PORT" --advertise-address="$ip" \
    --tls-cert-file="$P/apiserver.crt" --tls-private-key-file="$P/apiserver.key" --client-ca-file="$P/ca.crt" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$P/sa.pub" --service-account-signing-key-file="$P/sa.key" \
    --service-cluster-ip-range="$BERTH_SERVICE_CIDR" \
    --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction --allow-privileged=true \
    --kubelet-client-certificate="$P/apiserver-kubelet-client.crt" --kubelet-client-key="$P/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority="$P/ca.crt" --kubelet-preferred-address-types=InternalIP,Hostname \
    --requestheader-client-ca-file="$P/front-proxy-ca.crt" --requestheader-allowed-names=front-proxy-client \
    --requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group \
    --requestheader-extra-headers-prefix=X-Remote-Extra- \
    --proxy-client-cert-file="$P/front-proxy-client.crt" --proxy-client-key-file="$P/front-proxy-client.key" \
    --enable-aggregator-routing=true
  ready kube-apiserver 120 sh -c "'$B/kubectl' get --raw /readyz | grep -q ok"
  start kube-controller-manager "$BERTH_KCM_PORT" "$B/kube-controller-manager" \
    --kubeconfig="$P/controller-manager.kubeconfig" \
    --authentication-kubeconfig="$P/controller-manager.kubeconfig" --authorization-kubeconfig="$P/controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$BERTH_KCM_PORT" \
    --client-ca-file="$P/ca.crt" --requestheader-client-ca-file="$P/front-proxy-ca.crt" \
    --service-account-private-key-file="$P/sa.key" --root-ca-file="$P/ca.crt" \
    --cluster-signing-cert-file="$P/ca.crt" --cluster-signing-key-file="$P/ca.key" \
    --use-service-account-credentials=true --service-cluster-ip-range="$BERTH_SERVICE_CIDR" \
    --allocate-node-cidrs=false --leader-elect=false
  start kube-scheduler "$BERTH_SCHEDULER_PORT" "$B/kube-scheduler" \
    --kubeconfig="$P/scheduler.kubeconfig" \
    --authentication-kubeconfig="$P/scheduler.kubeconfig" --authorization-kubeconfig="$P/scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$BERTH_SCHEDULER_PORT" --leader-elect=false
  ready kube-controller-manager 60 curl -skf "https://127.0.0.1:$BERTH_KCM_PORT/healthz"
  ready kube-scheduler 60 curl -skf "https://127.0.0.1:$BERTH_SCHEDULER_PORT/healthz"
}

start_node() {
  local ip=$1
  start containerd "" containerd --config "$S/containerd/config.toml"
  ready containerd 30 ctr -a "$SOCK" version
  start kubelet "$BERTH_KUBELET_PORT $BERTH_KUBELET_HEALTHZ_PORT" "$B/kubelet" --config="$S/kubelet/config.yaml" \
    --kubeconfig="$P/kubelet.kubeconfig" --root-dir="$KUBELET_ROOT" --hostname-override="$BERTH_NODE" --node-ip="$ip" --v=2
  ready kubelet 120 sh -c "'$B/kubectl' get node $BERTH_NODE -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -q True"
  start kube-proxy "$BERTH_PROXY_HEALTHZ_PORT $BERTH_PROXY_METRICS_PORT" "$B/kube-proxy" --config="$S/kube-proxy/config.yaml" --v=2
  ready kube-proxy 60 sh -c "curl -s 127.0.0.1:$BERTH_PROXY_HEALTHZ_PORT/healthz | grep -q '\"healthy\":true'"
  sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.route_localnet=1 2>/dev/null || true
  ready default-serviceaccount 60 "$B/kubectl" -n default get sa default
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

# start_glusterd: the GlusterFS server the CSI driver uses, with a one-brick volume under $S/glusterd.
# glusterd's management port is always 24007: only one glusterd can run on a machine.
start_glusterd() {
  local g=$S/glusterd
  if [ -f "$g/glusterd.pid" ] && kill -0 "$(cat "$g/glusterd.pid")" 2>/dev/null; then log "glusterd already running"; return 0; fi
  port_free 24007 glusterd
  mkdir -p "$g/lib/groups" "$g/run" "$g/log" "$g/bricks"
  cp /var/lib/glusterd/groups/* "$g/lib/groups/" 2>/dev/null || true
  cat >"$g/glusterd.vol" <<EOF
volume management
    type mgmt/glusterd
    option working-directory $g/lib
    option run-directory $g/run
    option logging-directory $g/log
    option glusterd-sockfile $g/glusterd.socket
    option transport-type socket
    option transport.socket.listen-port 24007
    option ping-timeout 0
    option event-threads 1
end-volume
EOF
  glusterd -f "$g/glusterd.vol" -p "$g/glusterd.pid" -l "$L/glusterd.log" --log-level WARNING
  local cli=(gluster --mode=script --glusterd-sock="$g/glusterd.socket" --log-file="$g/log/cli.log")
  ready glusterd 30 "${cli[@]}" pool list
  if ! "${cli[@]}" volume info "$BERTH_GLUSTER_VOLUME" >/dev/null 2>&1; then
    "${cli[@]}" volume create "$BERTH_GLUSTER_VOLUME" "$(hostname):$g/bricks/$BERTH_GLUSTER_VOLUME" force >>"$L/glusterd.log" 2>&1 ||
      die "gluster volume create failed, see $L/glusterd.log"
  fi
  "${cli[@]}" volume start "$BERTH_GLUSTER_VOLUME" force >>"$L/glusterd.log" 2>&1 || die "gluster volume start failed, see $L/glusterd.log"
  log "glusterd ready: volume $BERTH_GLUSTER_VOLUME on $(hostname), socket $g/glusterd.socket"
}

stop_glusterd() {
  local g=$S/glusterd p
  [ -d "$g" ] || return 0
  # glusterd, the brick processes, quotad, self-heal: every gluster process whose arguments name our dir
  for p in $(ps -eo pid=,args= | awk -v a="$g/" 'index($0,a) && /gluster/ {print $1}'); do kill "$p" 2>/dev/null; done
  for _ in $(seq 25); do ps -eo args= | grep -F "$g/" | grep -q gluster || break; sleep 0.2; done
  for p in $(ps -eo pid=,args= | awk -v a="$g/" 'index($0,a) && /gluster/ {print $1}'); do kill -9 "$p" 2>/dev/null; done
}

# uplink: the interface cni-vlan's tc-bpf datapath tags VLAN frames onto. There is no switch
# behind it on this machine, and this kernel has no dummy links: one end of a veth pair.
uplink() {
  ip link show "$BERTH_UPLINK" >/dev/null 2>&1 || ip link add "$BERTH_UPLINK" type veth peer name "${BERTH_UPLINK}p"
  ip link set "$BERTH_UPLINK" up; ip link set "${BERTH_UPLINK}p" up
}

install_berth() {
  [ "${BERTH_INSTALL:-1}" = 1 ] || { log "BERTH_INSTALL=0: berth not installed"; return 0; }
  start_glusterd
  uplink
  "$HERE/install-berth.sh"
}

up() {
  preflight
  local t0 ip; t0=$(date +%s); ip=$(host_ip)
  mkdir -p "$L" "$BERTH_CACHE/bin"
  trap 'rc=$?; if [ $rc -ne 0 ]; then echo "cluster: make up failed; stopping what it started (logs stay in $L)" >&2; down_keep_logs; fi; exit $rc' EXIT
  pki; configs
  start_registry
  start_control_plane "$ip"
  build_images
  start_node "$ip"
  start_dns
  install_berth
  trap - EXIT
  touch "$S/ready"
  log "cluster up in $(( $(date +%s) - t0 ))s"
  cat <<EOF

  The berth local cluster is up (node $BERTH_NODE, Kubernetes $("$B/kubectl" version -o json 2>/dev/null | sed -n 's/.*"gitVersion": "\(v1[^"]*\)".*/\1/p' | tail -1)).
    export KUBECONFIG=$KUBECONFIG
    export PATH=$B:\$PATH          # kubectl
    kubectl get nodes,pods -A
  Registry: 127.0.0.1:$BERTH_REGISTRY_PORT (ghcr.io/berth-dev/* resolves there)   Logs: $L
  Stop and clean everything: make down
EOF
}

status() {
  for c in $COMPONENTS; do
    if running "$c"; then printf '  %-24s running (pid %s)  log %s\n' "$c" "$(cat "$L/$c.pid")" "$L/$c.log"
    else printf '  %-24s stopped\n' "$c"; fi
  done
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
  running kube-apiserver && K get --raw /readyz >/dev/null 2>&1 || return 0
  log "deleting workloads so the kubelet tears sandboxes down (CNI DEL)"
  K delete mutatingwebhookconfigurations,validatingwebhookconfigurations --all --wait=false >/dev/null 2>&1 || true
  K delete ds,deploy,rs,sts,job,cronjob --all -A --wait=false >/dev/null 2>&1 || true
  K delete pods --all -A --grace-period=1 --wait=false >/dev/null 2>&1 || true
  if running kubelet && [ -S "$SOCK" ]; then
    wait_for 60 sh -c "[ -z \"\$(ctr -a $SOCK -n k8s.io tasks ls -q 2>/dev/null)\" ]" || log "warning: some containers still running; killing them"
  fi
}

down_keep_logs() {
  set +e
  drain_workloads
  kill_pid kube-proxy
  [ -x "$B/kube-proxy" ] && "$B/kube-proxy" --cleanup >/dev/null 2>&1
  for c in kubelet kube-scheduler kube-controller-manager kube-apiserver etcd; do kill_pid "$c"; done
  if [ -S "$SOCK" ]; then
    for t in $(ctr -a "$SOCK" -n k8s.io tasks ls -q 2>/dev/null); do
      ctr -a "$SOCK" -n k8s.io tasks kill -s SIGKILL "$t" >/dev/null 2>&1; sleep 0.3; ctr -a "$SOCK" -n k8s.io tasks rm -f "$t" >/dev/null 2>&1
    done
    for c in $(ctr -a "$SOCK" -n k8s.io containers ls -q 2>/dev/null); do ctr -a "$SOCK" -n k8s.io containers rm "$c" >/dev/null 2>&1; done
  fi
  kill_pid containerd
  kill_pid registry
  stop_glusterd
  ip link del "$BERTH_UPLINK" 2>/dev/null
  ip link del "berth$BERTH_VLAN" 2>/dev/null # cni-vlan's bridge of the pod VLAN
  ip link del "bvt$BERTH_VLAN" 2>/dev/null   # and its tc-bpf trunk veth pair (bvt/bvs), not removed with the uplink
  # shims of OUR containerd only (matched by our socket path), by PID
  for p in $(ps -eo pid=,args= | awk -v a="$SOCK" 'index($0,"containerd-shim") && index($0,a) {print $1}'); do kill "$p" 2>/dev/null; done
  # KUBE-* iptables chains: only when no other kubelet/kube-proxy runs on this machine
  if ! ps -eo args= | grep -qE '^[^ ]*(kubelet|kube-proxy)( |$)'; then
    for ipt in iptables ip6tables; do for t in filter nat mangle; do
      "$ipt" -t "$t" -S 2>/dev/null | grep -E '^-A [A-Z]+ .*-j KUBE-' | grep -vE '^-A KUBE-' | sed 's/^-A/-D/' |
        while read -r r; do eval "$ipt -t $t $r" 2>/dev/null; done
      for c in $("$ipt" -t "$t" -S 2>/dev/null | awk '/^-N KUBE-/ {print $2}'); do "$ipt" -t "$t" -F "$c" 2>/dev/null; done
      for c in $("$ipt" -t "$t" -S 2>/dev/null | awk '/^-N KUBE-/ {print $2}'); do "$ipt" -t "$t" -X "$c" 2>/dev/null; done
    done; done
  fi
  # The bootstrap bridge plugin's masquerade rules and chains (network "berth-bridge", one
  # chain per pod): its pods are killed above, never deleted through CNI. Found by name, as
  # the rules name the pod's address, not the pod CIDR.
  iptables -t nat -S POSTROUTING 2>/dev/null | grep -F 'name: \"berth-bridge\"' | sed 's/^-A/-D/' |
    while read -r r; do eval "iptables -t nat $r" 2>/dev/null; done
  for c in $(iptables -t nat -S 2>/dev/null | grep -F 'name: \"berth-bridge\"' | awk '$1 == "-A" && $2 ~ /^CNI-/ {print $2}' | sort -u); do
    iptables -t nat -F "$c" 2>/dev/null; iptables -t nat -X "$c" 2>/dev/null
  done
  # mounts under our state dir (pod volumes, netns, overlay snapshots), deepest first
  awk -v r="$S/" 'index($5,r)==1 {print $5}' /proc/self/mountinfo | sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done
  # FUSE daemons of the CSI node plugin's mounts: outside its container's cgroup by design
  # (they survive a restart of the plugin), so they are stopped here, by the PIDs of that cgroup.
  for sig in TERM KILL; do
    for d in /sys/fs/cgroup/*/berth-csi-mounts /sys/fs/cgroup/berth-csi-mounts; do
      [ -f "$d/cgroup.procs" ] && for p in $(cat "$d/cgroup.procs"); do kill -s "$sig" "$p" 2>/dev/null; done
    done
    sleep 0.5
  done
  for d in /sys/fs/cgroup/*/berth-csi-mounts /sys/fs/cgroup/berth-csi-mounts; do [ -d "$d" ] && rmdir "$d" 2>/dev/null; done
  ip link del "$BERTH_BRIDGE" 2>/dev/null
  find /var/log/containers -maxdepth 1 -lname "$S/*" -delete 2>/dev/null
  rm -f /var/lib/cni/results/berth-* 2>/dev/null
  for d in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/*/k8s.io; do [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null; done
  rmdir /run/containerd/runc/k8s.io /run/containerd/runc /run/containerd/fifo /run/containerd/s /run/containerd 2>/dev/null
  rmdir /var/log/containers /var/lib/cni/results /var/lib/cni 2>/dev/null
  if [ -x "$HERE/down-extra.sh" ]; then "$HERE/down-extra.sh"; fi
  rm -rf "$S/containerd" "$S/etcd" "$S/kubelet" "$S/kubelet-logs" "$S/cni" "$S/registry" "$S/ready" "$S/kube-proxy"
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
