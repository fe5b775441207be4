#!/bin/bash
# hack/bench-cni.sh - cni-vlan against the host baseline and the reference bridge+host-local,
# in ONE run with interleaved rounds (absolute numbers drift on a shared machine: read the ratios).
#
#   bbsw  netns: the simulated switch (plain bridge "swbr", forwards 802.1Q frames as they are),
#                also the management network: 10.99.0.254, where the IPAM's etcd listens
#   bbhA / bbhB: simulated hosts; uplink up0 on the switch, enslaved to refbr0 (10.99.0.1/.2)
#                so the reference bridge plugin's pods share the wire, untagged
#   pods:       berth  = cni-vlan, tc-bpf datapath, VLAN 100, pool 10.100.0.0/24 in etcd
#               ref    = reference bridge plugin on refbr0 + host-local (disjoint ranges per host)
#
#   agents:     `cni-vlan agent` per host (in the host netns, as the DaemonSet's hostNetwork pod),
#               holding the host's etcd session; the plugin calls it on $T/agent<host>.sock
#
# Measures pod-to-pod across the two hosts: iperf3 (1 stream) Gbit/s, qperf tcp_lat / udp_lat us,
# CNI ADD / DEL wall time (p50, p99; hack/cniburst execs the binary in the host netns through
# libcni's invoke, as containerd does, and times the exec alone), the
# plugin binaries' start-up (CNI_COMMAND=VERSION), and ADDs from real plugin processes 50 at a
# time: the slim berth-ipam-plugin through the node agent against berth-ipam straight to etcd
# (what each cni-vlan ADD did before the agent), and cni-vlan's whole ADD through the agent.
# Needs root, etcd, iperf3, qperf, /usr/lib/cni (containernetworking-plugins). Usage:
#   hack/bench-cni.sh [rounds=3] [adddel-iterations=40]
set -euo pipefail
ROUNDS=${1:-3}
ITER=${2:-40}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
T=$(mktemp -d /tmp/bench-cni.XXXXXX)
REF=/usr/lib/cni
for b in etcd iperf3 qperf "$REF/bridge" "$REF/host-local"; do
	command -v "$b" >/dev/null || { echo "missing $b: run hack/install-deps.sh" >&2; exit 1; }
done
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	for n in $(ip netns list | awk '{print $1}' | grep '^bb' || true); do ip netns del "$n"; done
	rm -rf "$T"
}
trap cleanup EXIT
hx() { local h=$1; shift; ip netns exec "bbh$h" "$@"; }

echo "building cni-vlan..." >&2
# Built as `make build` builds what the image ships: static, stripped (a cgo build's dynamic
# loader alone adds about 1 ms to every plugin start).
gob() { (cd "$ROOT" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" "$@"); }
gob -tags cniplugin -o "$T/bin/cni-vlan" ./cmd/cni-vlan            # the slim plugin the DaemonSet installs
gob -o "$T/bin/cni-vlan-full" ./cmd/cni-vlan                       # install, agent, ipam, reconcile
gob -o "$T/bin/berth-ipam" ./cmd/berth-ipam                        # the stand-alone IPAM, dialling etcd itself
gob -tags cniplugin -o "$T/bin/berth-ipam-plugin" ./cmd/berth-ipam # its slim build: the node agent's client only
gob -o "$T/bin/cniburst" ./hack/cniburst                           # runs the plugins as a runtime does (libcni)

# --- topology
ip netns add bbsw
ip -n bbsw link add swbr type bridge
ip -n bbsw link set swbr up
ip -n bbsw link set lo up
ip -n bbsw addr add 10.99.0.254/24 dev swbr
declare -A HIP=([A]=10.99.0.1 [B]=10.99.0.2) RS=([A]=10 [B]=110) RE=([A]=99 [B]=199)
for h in A B; do
	ip netns add "bbh$h"
	ip link add up0 netns "bbh$h" type veth peer name "sw$h" netns bbsw
	ip -n bbsw link set "sw$h" master swbr up
	hx $h ip link set lo up
	hx $h ip link add refbr0 type bridge
	hx $h ip link set up0 master refbr0
	hx $h ip link set up0 up
	hx $h ip link set refbr0 up
	hx $h ip addr add "${HIP[$h]}/24" dev refbr0
done

# --- etcd on the management network (inside the switch netns: its own ports)
ip netns exec bbsw etcd --data-dir "$T/etcd" --listen-client-urls http://10.99.0.254:2379 \
	--advertise-client-urls http://10.99.0.254:2379 --listen-peer-urls http://127.0.0.1:2380 \
	--initial-advertise-peer-urls http://127.0.0.1:2380 --initial-cluster default=http://127.0.0.1:2380 \
	>"$T/etcd.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do hx A bash -c 'exec 3<>/dev/tcp/10.99.0.254/2379' 2>/dev/null && break; sleep 0.2; done

# --- one IPAM agent per host, as the DaemonSet runs it
for h in A B; do
	# ip netns exec execs the agent, so $! is the agent itself (killed by cleanup); hx would add a subshell.
	ip netns exec "bbh$h" "$T/bin/cni-vlan-full" agent --etcd-endpoints http://10.99.0.254:2379 --node-name "host$h" \
		--socket "$T/agent$h.sock" --state-dir "$T/agent$h" --health-probe-bind-address 0 >"$T/agent$h.log" 2>&1 &
	PIDS+=($!)
done
for h in A B; do for _ in $(seq 100); do [ -S "$T/agent$h.sock" ] && break; sleep 0.1; done; done

berth_conf() { # $1 host
	cat <<EOF
{"cniVersion":"1.0.0","name":"bench","type":"cni-vlan","uplink":"up0","vlan":100,"datapath":"tc-bpf",
 "ipam":{"agentSocket":"$T/agent$1.sock","poolSpec":{"name":"vlan100","vlan":100,"subnet":"10.100.0.0/24"}}}
EOF
}
ref_conf() { # $1 host
	cat <<EOF
{"cniVersion":"1.0.0","name":"ref","type":"bridge","bridge":"refbr0","isGateway":false,
 "ipam":{"type":"host-local","dataDir":"$T/hostlocal/$1",
         "ranges":[[{"subnet":"10.50.0.0/24","rangeStart":"10.50.0.${RS[$1]}","rangeEnd":"10.50.0.${RE[$1]}"}]]}}
EOF
}
for h in A B; do
	berth_conf $h >"$T/berth$h.json"
	ref_conf $h >"$T/ref$h.json"
done

# cni <host> <CMD> <plugin-path> <conf> <netns> <containerid>  -> prints the result
cni() {
	hx "$1" env CNI_COMMAND="$2" CNI_CONTAINERID="$6" CNI_NETNS="/var/run/netns/$5" CNI_IFNAME=eth0 \
		CNI_PATH="$REF" "$3" <"$4"
}
podip() { ip -n "$1" -4 -o addr show dev eth0 | awk '{print $4}' | cut -d/ -f1; }
declare -A IP
for h in A B; do
	for kind in berth ref; do
		ns="bb${kind}$h"
		ip netns add "$ns"
		ip -n "$ns" link set lo up
		plugin="$T/bin/cni-vlan"
		[ $kind = ref ] && plugin=$REF/bridge
		cni $h ADD "$plugin" "$T/$kind$h.json" "$ns" "$ns" >/dev/null
		IP[$kind$h]=$(podip "$ns")
	done
done
echo "pods: berth ${IP[berthA]} -> ${IP[berthB]}, ref ${IP[refA]} -> ${IP[refB]}, hosts ${HIP[A]} -> ${HIP[B]}" >&2

# servers on host B side
declare -A SRVNS=([host]=bbhB [berth]=bbberthB [ref]=bbrefB) CLINS=([host]=bbhA [berth]=bbberthA [ref]=bbrefA)
declare -A DST=([host]=${HIP[B]} [berth]=${IP[berthB]} [ref]=${IP[refB]})
for k in host berth ref; do
	ip netns exec "${SRVNS[$k]}" iperf3 -s -D -B "${DST[$k]}" --pidfile "$T/iperf-$k.pid" >/dev/null
	ip netns exec "${SRVNS[$k]}" qperf >/dev/null 2>&1 &
	PIDS+=($!)
done
sleep 1
for k in host berth ref; do PIDS+=("$(cat "$T/iperf-$k.pid")"); done

median() { sort -g | awk '{a[NR]=$1} END {if (NR==0) {print "nan"; exit}; print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
pct() { sort -g | awk -v p="$1" '{a[NR]=$1} END {i=int((NR*p+99)/100); if (i<1) i=1; print a[i]}'; }
qlat() { # ns dst test -> us
	ip netns exec "$1" qperf -t 2 "$2" "$3" | awk '/latency/ {v=$3; u=$4; if (u=="ms") v*=1000; if (u=="ns") v/=1000; print v}'
}
for r in $(seq "$ROUNDS"); do
	echo "round $r/$ROUNDS" >&2
	for k in host berth ref; do
		ip netns exec "${CLINS[$k]}" iperf3 -c "${DST[$k]}" -t 3 -J |
			python3 -c 'import json,sys; print(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9)' >>"$T/bw-$k"
		qlat "${CLINS[$k]}" "${DST[$k]}" tcp_lat >>"$T/tcp-$k"
		qlat "${CLINS[$k]}" "${DST[$k]}" udp_lat >>"$T/udp-$k"
	done
done

# ADD / DEL timings, interleaved berth/ref, on host A, fresh netns each time. cniburst execs the
# plugin from a Go process through libcni's invoke, as containerd does, and times that exec alone.
rt() { # verb kind ns id -> ms
	local plugin="$T/bin/cni-vlan"
	[ "$2" = ref ] && plugin=$REF/bridge
	hx A "$T/bin/cniburst" call -plugin "$plugin" -config "$T/${2}A.json" -verb "$1" \
		-netns "/var/run/netns/$3" -id "$4" -cni-path "$REF"
}
for i in $(seq "$ITER"); do
	for kind in berth ref; do
		ns="bbt$kind$i"
		ip netns add "$ns"
		rt ADD "$kind" "$ns" "t$kind$i" >>"$T/add-$kind"
		rt DEL "$kind" "$ns" "t$kind$i" >>"$T/del-$kind"
		ip netns del "$ns"
	done
done

# start-up: CNI_COMMAND=VERSION, interleaved, exec'd by cniburst as above; 5x the ADD/DEL
# iterations: a start takes 3 ms and 40 of them moved the ratio by +-0.06 between runs
"$T/bin/cniburst" startup -n "$((ITER * 5))" berth="$T/bin/cni-vlan" ref="$REF/bridge" \
	ipamslim="$T/bin/berth-ipam-plugin" ipamfull="$T/bin/berth-ipam" |
	while read -r kind ms; do echo "$ms" >>"$T/version-$kind"; done

# 50 ADDs at a time from real plugin processes, as a runtime starting many pods runs them:
# berth-ipam (the IPAM alone) straight to etcd, and its slim build through the node agent
# ("agentSocket"), as a node with the agent runs it; then cni-vlan's whole ADD (netns, veth on
# the bridge under the node lock, address) through the agent.
cat >"$T/direct.json" <<EOC
{"cniVersion":"1.0.0","name":"direct","type":"bridge",
 "ipam":{"type":"berth-ipam","etcd":{"endpoints":["http://10.99.0.254:2379"]},
         "poolSpec":{"name":"direct","vlan":100,"subnet":"10.101.0.0/24"}}}
EOC
sed 's|"type":"berth-ipam",|"type":"berth-ipam","agentSocket":"'"$T"'/agentA.sock",|' "$T/direct.json" >"$T/viaagent.json"
BURST=200
for i in $(seq $BURST); do ip netns add "bbp$i"; done
burst() { # kind -> allocations/s on stdout (failed calls are not counted, and listed at the end)
	local plugin=$T/bin/berth-ipam conf=$T/direct.json
	[ "$1" = agent ] && plugin=$T/bin/berth-ipam-plugin conf=$T/viaagent.json
	[ "$1" = full ] && plugin=$T/bin/cni-vlan conf=$T/berthA.json
	run() { # verb kind -> calls/s (a function of burst, reading its plugin and conf)
		hx A env NODE_NAME=hostA "$T/bin/cniburst" burst -plugin "$plugin" -config "$conf" -verb "$1" \
			-n $BURST -parallel 50 -netns-prefix /var/run/netns/bbp -id-prefix "$2" -cni-path "$REF" \
			2>>"$T/burst-failures"
	}
	run ADD "$1"            # the figure
	run DEL "$1" >/dev/null # clean up for the next kind
}
KINDS=(agent direct full)
for r in $(seq "$ROUNDS"); do
	echo "burst round $r/$ROUNDS" >&2
	for j in 0 1 2; do
		k=${KINDS[$(((j + r) % 3))]} # rotate who goes first
		burst "$k" >>"$T/burst-$k"
	done
done

m() { median <"$T/$1" | xargs printf '%.2f'; }
ratio() { python3 -c "print('%.2f' % ($1/$2))"; }
echo
echo "## cni-vlan benchmark ($(date -u +%Y-%m-%d), $ROUNDS interleaved rounds, $ITER ADD/DEL each; medians)"
echo
echo "| path (pod to pod across two simulated hosts) | iperf3 Gbit/s | vs host | qperf tcp_lat us | vs host | qperf udp_lat us | vs host |"
echo "|---|---|---|---|---|---|---|"
for k in host berth ref; do
	name=${k/host/host to host (baseline, uplink in a bridge)}
	name=${name/berth/cni-vlan tc-bpf VLAN 100 (etcd IPAM)}
	name=${name/ref/reference bridge + host-local (flat, untagged)}
	echo "| $name | $(m bw-$k) | $(ratio "$(m bw-$k)" "$(m bw-host)") | $(m tcp-$k) | $(ratio "$(m tcp-$k)" "$(m tcp-host)") | $(m udp-$k) | $(ratio "$(m udp-$k)" "$(m udp-host)") |"
done
echo
echo "| CNI call (the plugin exec'd through libcni in the host netns) | p50 ms | p99 ms | p50 vs reference |"
echo "|---|---|---|---|"
for v in add del; do
	for kind in berth ref; do
		label="${v^^} ${kind/berth/cni-vlan (node agent, etcd IPAM)}"
		label=${label/ref/reference bridge + host-local}
		p50=$(m $v-$kind)
		p99=$(pct 99 <"$T/$v-$kind" | xargs printf '%.1f')
		echo "| $label | $p50 | $p99 | $(ratio "$p50" "$(m $v-ref)") (p99 $(ratio "$p99" "$(pct 99 <"$T/$v-ref")")) |"
	done
done
echo
echo "| start-up, CNI_COMMAND=VERSION | p50 ms | p99 ms | p50 vs reference |"
echo "|---|---|---|---|"
for kind in berth ref ipamslim ipamfull; do
	label=${kind/berth/cni-vlan plugin binary (agent client)}
	label=${label/ref/reference bridge}
	label=${label/ipamslim/berth-ipam-plugin (slim: agent client)}
	label=${label/ipamfull/berth-ipam (etcd client)}
	echo "| $label | $(m version-$kind) | $(pct 99 <"$T/version-$kind" | xargs printf '%.1f') | $(ratio "$(m version-$kind)" "$(m version-ref)") |"
done
echo
echo "| $BURST ADDs, 50 plugin processes at a time (host A) | allocations/s, median of $ROUNDS | min-max | vs direct |"
echo "|---|---|---|---|"
for k in agent direct full; do
	label=${k/agent/berth-ipam-plugin through the node agent (address only)}
	label=${label/direct/berth-ipam straight to etcd (address only; each cni-vlan ADD before the agent)}
	label=${label/full/cni-vlan through the node agent (whole ADD: netns, veth, address)}
	echo "| $label | $(m burst-$k) | $(sort -g "$T/burst-$k" | sed -n '1p;$p' | paste -sd-) | $(ratio "$(m burst-$k)" "$(m burst-direct)") |"
done
if [ -s "$T/burst-failures" ]; then
	echo
	echo "failed burst calls (not counted): $(grep -c . "$T/burst-failures")"
	cut -c1-200 "$T/burst-failures" | sort | uniq -c | sort -rn | head -5
fi
