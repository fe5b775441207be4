#!/usr/bin/env bash
# node-init.sh: PID 1 of one node of the local cluster. node.sh starts it inside the node's own
# network, mount, UTS, IPC, PID and cgroup namespaces (see docs/development.md); it
#   1. makes the node's view of the machine: its cgroup hierarchies rooted at the node's cgroup,
#      a private /run, and the node's own copies of the directories a kubelet, containerd, the CNI
#      and berth's DaemonSets write (bind-mounted over the shared paths, so one manifest overlay
#      serves every node);
#   2. starts the node's components: on the control-plane node etcd, kube-apiserver,
#      kube-controller-manager and kube-scheduler; on every node glusterd, containerd, the
#      kubelet and kube-proxy; each logs to $BERTH_STATE/logs/<node>/<component>.log;
#   3. becomes the pause binary, which reaps the node's orphans until the node is stopped
#      (killing PID 1 of a PID namespace kills everything in it: a power cut).
# Environment: NODE, NODE_IDX, NODE_IP, ROLE (control-plane|worker), set by node.sh.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/env"
S=$BERTH_STATE
B=$BERTH_CACHE/kube/bin
P=$S/pki
L=$S/logs/$NODE
ND=$S/nodes/$NODE
log() { printf '%s %s: %s\n' "$(date +%H:%M:%S)" "$NODE" "$*"; }

hostname "$NODE"
# The machine's names, as /etc/hosts has them on a real cluster: glusterd looks its peers up by
# address, and a lookup through the host's resolver (unreachable from here) takes 10 s each.
{
  echo "127.0.0.1 localhost"
  for i in $(seq 1 "$BERTH_NODES"); do echo "$BERTH_DC_PREFIX.$((10 + i)) $BERTH_NODE_PREFIX$i"; done
} >"$ND/hosts"
mount --bind "$ND/hosts" /etc/hosts

# cgroups: this process is in the node's cgroup and a new cgroup namespace; mounting each
# hierarchy again shows the node's cgroup as its root, as on a real machine (the kubelet's
# kubepods, the pods and the CSI mount cgroup all land under the node, so freeze/stop catch them).
cgroups=$(awk '$9 == "cgroup" || $9 == "cgroup2" {print $5, $9, $NF}' /proc/self/mountinfo)
# (a hierarchy cannot be mounted again on the root of its own mount: a fresh tmpfs under them)
mount -t tmpfs -o mode=755 cgroup /sys/fs/cgroup
while read -r mp fs opts; do
  mkdir -p "$mp"
  if [ "$fs" = cgroup2 ]; then mount -t cgroup2 cgroup2 "$mp"
  else mount -t cgroup -o "$(tr ',' '\n' <<<"$opts" | grep -vE '^(rw|ro)$' | paste -sd, -)" cgroup "$mp"; fi
done <<<"$cgroups"

# A private /run, like a booted machine: containerd's shims, netns, the CNI agent's socket,
# glusterd's run dir, the iptables lock.
mount -t tmpfs -o mode=755 tmpfs /run
# The node's own state over the shared paths (containerd, kubelet, CNI, berth's hostPaths).
for d in containerd cni kubelet kubelet-logs kube-proxy p2p csi-sharedfs ipam-agent glusterd; do
  mkdir -p "$ND/$d" "$S/$d"
  mount --bind "$ND/$d" "$S/$d"
done
for d in /var/lib/cni /var/log/containers /var/log/pods; do
  mkdir -p "$ND/sys$d"
  mount --bind "$ND/sys$d" "$d"
done
# The kubelet's root dir and the CSI node plugin's state are shared mounts: volumes mounted
# inside the CSI plugin's container (Bidirectional propagation) must reach the pods.
mount --make-rshared "$S/kubelet"
mount --make-rshared "$S/csi-sharedfs"

sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.route_localnet=1 \
  net.bridge.bridge-nf-call-iptables=1 net.bridge.bridge-nf-call-ip6tables=1 2>/dev/null || true
ip link set lo up

start() { # start NAME CMD...: a component in the background, restarted 1 s after it exits (as
  # systemd's Restart=always does on a real node), its output in its log
  local name=$1; shift
  log "starting $name"
  ( while :; do
      rc=0; "$@" >>"$L/$name.log" 2>&1 </dev/null || rc=$?
      log "$name exited ($rc); restarting in 1 s" >>"$L/$name.log"; sleep 1
    done ) &
}

if [ "$ROLE" = control-plane ]; then
  e=$BERTH_ETCD_PORT
  start etcd etcd --name berth --data-dir "$S/etcd" \
    --listen-client-urls "http://127.0.0.1:$e,http://$NODE_IP:$e" --advertise-client-urls "http://$NODE_IP:$e" \
    --listen-peer-urls "http://127.0.0.1:$((e + 10))" --initial-advertise-peer-urls "http://127.0.0.1:$((e + 10))" \
    --initial-cluster "berth=http://127.0.0.1:$((e + 10))" --listen-metrics-urls "http://127.0.0.1:$((e + 20))"
  until curl -s "http://127.0.0.1:$e/health" | grep -q true; do sleep 0.3; done
  # The IPAM's own etcd, as production keeps it apart from the API server's: the e2e tests stop
  # it without stopping the cluster.
  i=$BERTH_IPAM_ETCD_PORT
  start ipam-etcd etcd --name berth-ipam --data-dir "$S/ipam-etcd" \
    --listen-client-urls "http://127.0.0.1:$i,http://$NODE_IP:$i" --advertise-client-urls "http://$NODE_IP:$i" \
    --listen-peer-urls "http://127.0.0.1:$((i + 10))" --initial-advertise-peer-urls "http://127.0.0.1:$((i + 10))" \
    --initial-cluster "berth-ipam=http://127.0.0.1:$((i + 10))" --listen-metrics-urls "http://127.0.0.1:$((i + 20))"
  # --enable-aggregator-routing: the apiserver calls webhooks on endpoint IPs, kube-proxy or not.
  start kube-apiserver "$B/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$e" --bind-address=0.0.0.0 --secure-port="$BERTH_APISERVER_PORT" \
    --advertise-address="$NODE_IP" \
    --tls-cert-file="$P/apiserver.crt" --tls-private-key-file="$P/apiserver.key" --client-ca-file="$P/ca.crt" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$P/sa.pub" --service-account-signing-key-file="$P/sa.key" \
    --service-cluster-ip-range="$BERTH_SERVICE_CIDR" \
    --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction --allow-privileged=true \
    --kubelet-client-certificate="$P/apiserver-kubelet-client.crt" \
    --kubelet-client-key="$P/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority="$P/ca.crt" --kubelet-preferred-address-types=InternalIP,Hostname \
    --requestheader-client-ca-file="$P/front-proxy-ca.crt" --requestheader-allowed-names=front-proxy-client \
    --requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group \
    --requestheader-extra-headers-prefix=X-Remote-Extra- \
    --proxy-client-cert-file="$P/front-proxy-client.crt" --proxy-client-key-file="$P/front-proxy-client.key" \
    --enable-aggregator-routing=true \
    --default-not-ready-toleration-seconds=30 --default-unreachable-toleration-seconds=30
  # The controller-manager gives up when the API server is not healthy in time: wait for it.
  until curl -skf "https://127.0.0.1:$BERTH_APISERVER_PORT/readyz" >/dev/null; do sleep 0.5; done
  # A node is marked unreachable after 20 s without a heartbeat, and its pods are evicted 30 s
  # later (the API server's default tolerations above): a replacement within a minute, not five.
  start kube-controller-manager "$B/kube-controller-manager" \
    --kubeconfig="$P/controller-manager.kubeconfig" \
    --authentication-kubeconfig="$P/controller-manager.kubeconfig" \
    --authorization-kubeconfig="$P/controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$BERTH_KCM_PORT" \
    --client-ca-file="$P/ca.crt" --requestheader-client-ca-file="$P/front-proxy-ca.crt" \
    --service-account-private-key-file="$P/sa.key" --root-ca-file="$P/ca.crt" \
    --cluster-signing-cert-file="$P/ca.crt" --cluster-signing-key-file="$P/ca.key" \
    --use-service-account-credentials=true --service-cluster-ip-range="$BERTH_SERVICE_CIDR" \
    --allocate-node-cidrs=false --leader-elect=false --node-monitor-grace-period=20s
  start kube-scheduler "$B/kube-scheduler" \
    --kubeconfig="$P/scheduler.kubeconfig" \
    --authentication-kubeconfig="$P/scheduler.kubeconfig" --authorization-kubeconfig="$P/scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$BERTH_SCHEDULER_PORT" --leader-elect=false
fi

# Every node runs glusterd: the nodes form one trusted pool and hold the bricks of the
# replicated volume, as SAE ran GlusterFS on its app hosts. Its state is the node's own
# $S/glusterd (like /var/lib/glusterd); its socket, pid files and brick sockets are in the
# node's /run (the defaults, /var/run/glusterd.socket and /var/run/gluster), gone at a power
# cut as on a real machine, so a booting node never mistakes a stale pid for a running brick.
# glusterd daemonizes, spawns the bricks and the self-heal daemon, and after a reboot restarts
# the bricks of started volumes by itself.
[ -f "$S/glusterd/glusterd.vol" ] && glusterd -f "$S/glusterd/glusterd.vol" -p /run/glusterd.pid \
  -l "$L/glusterd.log" --log-level WARNING

start containerd containerd --config "$S/containerd/config.toml"
until ctr -a "$S/containerd/containerd.sock" version >/dev/null 2>&1; do sleep 0.2; done
start kubelet "$B/kubelet" --config="$S/kubelet/config.yaml" --kubeconfig="$P/kubelet-$NODE.kubeconfig" \
  --root-dir="$S/kubelet/root" --hostname-override="$NODE" --node-ip="$NODE_IP" --v=2
start kube-proxy "$B/kube-proxy" --config="$S/kube-proxy/config.yaml" --v=2

log "booted; PID 1 is now the reaper"
exec "$BERTH_CACHE/bin/pause"
