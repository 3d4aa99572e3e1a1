#!/usr/bin/env bash
# Which RTM_NEWLINK/RTM_DELLINK events libnetwork produces, in which network
# namespace and in what order, when a container starts on a macvlan network
# (a veth parent of our own) and on an attachable overlay (single-node swarm),
# and when the container's first packet leaves, on a PRIVATE dockerd
# (--iptables=false). Self-cleaning (EXIT trap), like capture.sh.
#
#   sudo ./appearance.sh [OUTDIR]     # default: /tmp/nwappear
#
# Writes OUTDIR/host-monitor.txt (ip -ts -d monitor link all-nsid in the host
# namespace), OUTDIR/sandbox-monitor.txt (the same inside the overlay's
# sandbox namespace), OUTDIR/first-packet-*.txt (tcpdump -tt where the
# container's first packet arrives), OUTDIR/events.jsonl (Engine API events)
# and OUTDIR/transcript.txt.
#
# Network safety: traffic only to namespaces and containers made here; every
# address is in 198.18.0.0/15; nothing touches eth0.
set -uo pipefail

OUT=${1:-/tmp/nwappear}
N=nwapp1
R=/run/$N
SOCK=$R/d.sock
H=unix://$SOCK
API=http://d/v1.41
BR=${N}b
NSLAN=$R/ns/lan
IMAGE=netwatch-test:busybox
T=$OUT/transcript.txt
BGPIDS=()
DPID=""
OUR_LINKS=(nwaps0 nwaps1 nwapm0 docker_gwbridge "$BR")

rm -rf "$OUT"; mkdir -p "$OUT"; : >"$T"
log() { printf '\n### %s\n' "$*" >>"$T"; printf '== %s\n' "$*" >&2; }
x() { printf '$ %s\n' "$*" >>"$T"; "$@" >>"$T" 2>&1; local rc=$?; [ "$rc" -ne 0 ] && printf '(exit %s)\n' "$rc" >>"$T"; return "$rc"; }
D() { docker -H "$H" "$@"; }
now() { date -u +%H:%M:%S.%6N; }

procs_under() {
    local p
    for p in /proc/[0-9]*; do
        [ "${p#/proc/}" = "$$" ] && continue
        tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -qE "(^| |unix://)$R(/| |$)" && echo "${p#/proc/}"
    done
}

cleanup() {
    set +e
    trap - EXIT INT TERM
    log "cleanup"
    if [ -S "$SOCK" ] && timeout 5 docker -H "$H" version >/dev/null 2>&1; then
        local ids
        ids=$(timeout 20 docker -H "$H" ps -aq)
        [ -n "$ids" ] && x timeout 60 docker -H "$H" rm -f $ids
        x timeout 30 docker -H "$H" swarm leave --force
        for net in $(timeout 20 docker -H "$H" network ls -q --filter type=custom); do
            x timeout 20 docker -H "$H" network rm "$net"
        done
    fi
    for p in "${BGPIDS[@]}"; do kill "$p" 2>/dev/null; done
    [ -z "$DPID" ] && [ -s "$R/d.pid" ] && DPID=$(cat "$R/d.pid")
    if [ -n "$DPID" ] && kill -0 "$DPID" 2>/dev/null; then
        kill -TERM "$DPID"
        for _ in $(seq 1 200); do kill -0 "$DPID" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$DPID" 2>/dev/null && kill -KILL "$DPID"
    fi
    sleep 0.5
    local left
    left=$(procs_under)
    [ -n "$left" ] && { echo "killing left under $R: $left" >>"$T"; for p in $left; do kill -KILL "$p" 2>/dev/null; done; sleep 0.5; }
    for f in /sys/fs/cgroup/*/"$N"/*/cgroup.procs; do
        [ -f "$f" ] || continue
        for p in $(cat "$f"); do kill -KILL "$p" 2>/dev/null; done
    done
    sleep 0.2
    for id in $(ls "$R/data/containers" 2>/dev/null); do
        local h
        h=$(printf '%s' "$R/exec/containerd/containerd.sock/moby/$id" | sha256sum | cut -d' ' -f1)
        [ -e "/run/containerd/s/$h" ] && rm -f "/run/containerd/s/$h"
    done
    findmnt -rn -o TARGET | grep -E "^$R(/|$)" | awk '{print length, $0}' | sort -rn | cut -d' ' -f2- |
        while read -r m; do umount -l "$m" || echo "cannot unmount $m" >>"$T"; done
    for b in docker_gwbridge "$BR"; do
        [ -e "/sys/class/net/$b" ] || continue
        for port in $(ls "/sys/class/net/$b/brif" 2>/dev/null); do ip link del "$port" 2>/dev/null; done
    done
    for l in "${OUR_LINKS[@]}"; do [ -e "/sys/class/net/$l" ] && ip link del "$l" 2>/dev/null; done
    for d in /sys/fs/cgroup/*/"$N"; do [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} + 2>/dev/null; done
    [ -f "$R/dockerd.log" ] && cp "$R/dockerd.log" "$OUT/dockerd.log"
    rm -rf "$R"
    {
        echo "# leftovers"
        ip -o link show | awk -F': ' '{print $1": "$2}' | grep -E 'nwap|gwbridge|vx-|veth' || echo "(no links of ours)"
        ps -eo pid,args | grep -E "$N|/run/$N" | grep -v grep || echo "(no processes)"
        findmnt | grep "$N" || echo "(no mounts)"
        ls -d /sys/fs/cgroup/*/"$N" 2>/dev/null || echo "(no cgroups)"
        ss -tlnp | grep -E ':(2377|7946) ' || echo "(no swarm ports)"
    } >"$OUT/leftovers.txt" 2>&1
    cat "$OUT/leftovers.txt" >&2
}

[ "$(id -u)" = 0 ] || { echo "needs root" >&2; exit 1; }
for l in "${OUR_LINKS[@]}" nwapm1; do
    [ -e "/sys/class/net/$l" ] && { echo "interface $l already exists: not ours" >&2; exit 1; }
done
[ -e "$R" ] && { echo "$R exists: a previous run? remove it first" >&2; exit 1; }
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$R/ns"; chmod 711 "$R"

log "links and namespaces"
ip -ts -d monitor link all-nsid >"$OUT/host-monitor.txt" 2>&1 &
BGPIDS+=($!)
x ip link add "$BR" type bridge
x ip addr add 198.18.90.1/24 dev "$BR"
x ip link add nwaps0 type veth peer name nwaps1
x ip addr add 198.18.50.1/24 dev nwaps0
x ip link set nwaps0 up
x ip link set nwaps1 up
touch "$NSLAN"
x unshare --net="$NSLAN" true
x ip link add nwapm0 type veth peer name nwapm1
x ip link set nwapm1 netns "$NSLAN"
x nsenter --net="$NSLAN" ip link set lo up
x nsenter --net="$NSLAN" ip addr add 198.18.60.1/24 dev nwapm1
x nsenter --net="$NSLAN" ip link set nwapm1 up
x ip link set nwapm0 up

log "private dockerd"
echo '{}' >"$R/daemon.json"
DARGS=(--config-file "$R/daemon.json" --data-root "$R/data" --exec-root "$R/exec"
    --pidfile "$R/d.pid" -H "$H" --bridge "$BR" --storage-driver overlay2
    --iptables=false --cgroup-parent "/$N")
DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1 setsid dockerd "${DARGS[@]}" >"$R/dockerd.log" 2>&1 </dev/null &
for _ in $(seq 1 300); do D version >/dev/null 2>&1 && break; sleep 0.1; done
DPID=$(cat "$R/d.pid" 2>/dev/null)
D version >/dev/null 2>&1 || { echo "private dockerd did not answer" >&2; tail -30 "$R/dockerd.log" >&2; exit 1; }
curl -sSN --unix-socket "$SOCK" "$API/events" >"$OUT/events.jsonl" 2>>"$T" &
BGPIDS+=($!)
docker save "$IMAGE" | D load >>"$T" 2>&1 || exit 1

log "macvlan"
x D network create -d macvlan -o parent=nwapm0 --subnet 198.18.60.0/24 --gateway 198.18.60.1 nwap-mv
# the container's first packet, seen where it arrives (the LAN namespace)
nsenter --net="$NSLAN" tcpdump -tt -n -l -i nwapm1 icmp >"$OUT/first-packet-macvlan.txt" 2>&1 &
BGPIDS+=($!)
sleep 1   # (measurement script, not a test: let tcpdump open its socket)
echo "$(now) docker run mv1" >>"$OUT/host-monitor.txt.marks"
x D run -d --name mv1 --network nwap-mv "$IMAGE" sh -c 'ping -c 3 -i 0.2 198.18.60.1; sleep 3600'
echo "$(now) docker run mv1 returned" >>"$OUT/host-monitor.txt.marks"
sleep 1
x nsenter -t "$(D inspect -f '{{.State.Pid}}' mv1)" -n ip -d link show
x D rm -f mv1

log "swarm and overlays"
x D network create --subnet 198.18.80.0/24 --gateway 198.18.80.1 \
    -o com.docker.network.bridge.name=docker_gwbridge \
    -o com.docker.network.bridge.enable_icc=false \
    -o com.docker.network.bridge.enable_ip_masquerade=true docker_gwbridge
D swarm init --advertise-addr 198.18.50.1 --listen-addr 198.18.50.1:2377 \
    --default-addr-pool 198.18.128.0/17 --default-addr-pool-mask-length 24 2>&1 | grep -v -- '--token' >>"$T"
x D network create -d overlay --attachable --subnet 198.18.70.0/24 --gateway 198.18.70.1 nwap-ovl
x D network create -d overlay --attachable --internal --subnet 198.18.71.0/24 --gateway 198.18.71.1 nwap-ovi
for net in nwap-ovl nwap-ovi; do
    echo "$(now) docker run ${net}-1 (first container: sandbox made)" >>"$OUT/host-monitor.txt.marks"
    x D run -d --name "${net}-1" --network "$net" "$IMAGE" sleep 3600
done
x ls -l "$R/exec/netns"
for net in nwap-ovl nwap-ovi; do
    id=$(D network inspect -f '{{.Id}}' "$net")
    sbx="$R/exec/netns/1-${id:0:10}"
    [ -e "$sbx" ] || { echo "no sandbox $sbx" >&2; exit 1; }
    nsenter --net="$sbx" ip -ts -d monitor link all-nsid >"$OUT/sandbox-monitor-$net.txt" 2>&1 &
    BGPIDS+=($!)
    nsenter --net="$sbx" tcpdump -tt -n -l -i br0 icmp >"$OUT/first-packet-$net.txt" 2>&1 &
    BGPIDS+=($!)
    x nsenter --net="$sbx" ip -d link show
done
sleep 1
for net in nwap-ovl nwap-ovi; do
    echo "$(now) docker run ${net}-2" >>"$OUT/host-monitor.txt.marks"
    gw=198.18.70.1; [ "$net" = nwap-ovi ] && gw=198.18.71.1
    x D run -d --name "${net}-2" --network "$net" "$IMAGE" sh -c "ping -c 3 -i 0.2 $gw; sleep 3600"
    echo "$(now) docker run ${net}-2 returned" >>"$OUT/host-monitor.txt.marks"
    sleep 1
    x nsenter -t "$(D inspect -f '{{.State.Pid}}' "${net}-2")" -n ip -d link show
done
for net in nwap-ovl nwap-ovi; do
    echo "$(now) docker rm -f ${net}-2" >>"$OUT/host-monitor.txt.marks"
    x D rm -f "${net}-2"
done
sleep 1
log "done"
