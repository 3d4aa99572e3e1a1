#!/usr/bin/env bash
# Captures Docker Engine API answers and the kernel topology of Docker's
# macvlan, ipvlan, overlay (single-node swarm), host and none networks, on a
# PRIVATE dockerd (the main one at /var/run/docker.sock is only read: `docker
# save netwatch-test:busybox`). Self-cleaning: an EXIT trap removes every
# container, network, process, namespace, mount, interface, cgroup and
# directory it made, and then lists what is still there (must be nothing).
#
#   sudo ./capture.sh [OUTDIR]     # default: the directory of this script
#
# Writes OUTDIR/captures/ (API answers, errors.md, events.jsonl) and
# OUTDIR/topology/ (transcript, per-namespace dumps, topology.md, traffic
# counters, ip monitor log, leftover check). Needs nwtopo.py next to it.
#
# Network safety: traffic only goes to namespaces and containers made here;
# every address is in 198.18.0.0/15 or fd00::/8; nothing touches eth0.
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${1:-$HERE}
CAP=$OUT/captures
TOPO=$OUT/topology
TOOL=$HERE/nwtopo.py
N=nwcap1                  # instance name: /run/nwcap1, bridge nwcap1b, cgroup /nwcap1
R=/run/$N
SOCK=$R/d.sock
H=unix://$SOCK
API=http://d/v1.41
BR=${N}b
NSMV=$R/ns/nwmvlan        # the "LAN router" namespace of the macvlan parents
IMAGE=netwatch-test:busybox
T=$TOPO/transcript.txt
BGPIDS=()
DPID=""
OUR_LINKS=(nwsw0 nwsw1 nwmv0 nwmp0 nwmi0 nwiv0 nwiv1 docker_gwbridge "$BR")

rm -rf "$CAP" "$TOPO"   # this script owns both
mkdir -p "$CAP" "$TOPO"
: >"$T"

log() { printf '\n### %s\n' "$*" >>"$T"; printf '== %s\n' "$*" >&2; }
# x CMD...: run, with the command and its output in the transcript.
x() {
    printf '$ %s\n' "$*" >>"$T"
    "$@" >>"$T" 2>&1
    local rc=$?
    [ "$rc" -ne 0 ] && printf '(exit status %s)\n' "$rc" >>"$T"
    return "$rc"
}
D() { docker -H "$H" "$@"; }
api() { curl -sS --unix-socket "$SOCK" "$API$1"; }
# save PATH FILE: GET PATH, pretty-printed into captures/FILE.
save() {
    printf '$ curl --unix-socket %s %s%s | python3 -m json.tool > captures/%s\n' "$SOCK" "$API" "$1" "$2" >>"$T"
    api "$1" | python3 -m json.tool >"$CAP/$2" || printf '(FAILED)\n' >>"$T"
}
inns() { nsenter --net="$1" "${@:2}"; }

# req TITLE CLI METHOD PATH [BODY]: one API request whose answer goes into
# errors.md (status and body). Prints the status.
req() {
    local title=$1 cli=$2 method=$3 path=$4 body=${5:-}
    local tmp=$R/req.out code
    if [ -n "$body" ]; then
        code=$(curl -sS --unix-socket "$SOCK" -o "$tmp" -w '%{http_code}' -X "$method" \
            -H 'Content-Type: application/json' -d "$body" "$API$path")
    else
        code=$(curl -sS --unix-socket "$SOCK" -o "$tmp" -w '%{http_code}' -X "$method" "$API$path")
    fi
    {
        printf '\n## %s\n\nCLI equivalent: `%s`\n\n```\n%s /v1.41%s\n' "$title" "$cli" "$method" "$path"
        [ -n "$body" ] && printf '%s\n' "$body" | python3 -m json.tool
        printf '```\n\nHTTP %s\n\n```\n' "$code"
        if [ -s "$tmp" ]; then python3 -m json.tool <"$tmp" 2>/dev/null || cat "$tmp"; else printf '(empty body)\n'; fi
        printf '```\n'
    } >>"$CAP/errors.md"
    printf '$ curl -X %s %s %s -> HTTP %s: %s\n' "$method" "$path" "$body" "$code" "$(cat "$tmp" 2>/dev/null)" >>"$T"
    echo "$code"
}

# ---------------------------------------------------------------------------
# Cleanup (EXIT trap): idempotent, never touches anything it did not create.

procs_under() { # pids whose command line mentions $R
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
        timeout 30 docker -H "$H" service rm nwcap-svc >/dev/null 2>&1
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
        kill -0 "$DPID" 2>/dev/null && { echo "dockerd $DPID ignored SIGTERM: SIGKILL" >>"$T"; kill -KILL "$DPID"; }
    fi
    sleep 0.5
    local left
    left=$(procs_under)
    if [ -n "$left" ]; then
        echo "killing processes left under $R: $left" >>"$T"
        for p in $left; do kill -KILL "$p" 2>/dev/null; done
        sleep 0.5
    fi
    # container processes (their cgroups are under /$N in every hierarchy)
    for f in /sys/fs/cgroup/*/"$N"/*/cgroup.procs; do
        [ -f "$f" ] || continue
        for p in $(cat "$f"); do echo "killing container process $p" >>"$T"; kill -KILL "$p" 2>/dev/null; done
    done
    sleep 0.2
    # shim sockets of our containers (containerd 1.6: /run/containerd/s/<sha256>)
    for id in $(ls "$R/data/containers" 2>/dev/null); do
        local h
        h=$(printf '%s' "$R/exec/containerd/containerd.sock/moby/$id" | sha256sum | cut -d' ' -f1)
        [ -e "/run/containerd/s/$h" ] && { echo "removing shim socket $h" >>"$T"; rm -f "/run/containerd/s/$h"; }
    done
    # mounts under $R, deepest first (includes the nwmvlan namespace file)
    findmnt -rn -o TARGET | grep -E "^$R(/|$)" | awk '{print length, $0}' | sort -rn | cut -d' ' -f2- |
        while read -r m; do umount -l "$m" || echo "cannot unmount $m" >>"$T"; done
    # interfaces: the veth ports of our bridges, our vx-/br- links, our fixed names
    for b in docker_gwbridge "$BR"; do
        [ -e "/sys/class/net/$b" ] || continue
        for port in $(ls "/sys/class/net/$b/brif" 2>/dev/null); do
            echo "deleting $port (port of $b)" >>"$T"
            ip link del "$port" 2>/dev/null
        done
    done
    if [ -f "$R/netids" ]; then
        for l in $(ls /sys/class/net); do
            case $l in
            vx-* | br-*) grep -q "${l##*-}" "$R/netids" && { echo "deleting $l" >>"$T"; ip link del "$l"; } ;;
            esac
        done
    fi
    for l in "${OUR_LINKS[@]}"; do
        [ -e "/sys/class/net/$l" ] && ip link del "$l" 2>/dev/null
    done
    # cgroups
    for d in /sys/fs/cgroup/*/"$N"; do
        [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
    done
    [ -f "$R/dockerd.log" ] && cp "$R/dockerd.log" "$TOPO/dockerd.log"
    rm -rf "$R"
    check_leftovers
}

check_leftovers() {
    {
        echo "# Leftover check after cleanup ($(date -u +%FT%TZ))"
        echo "\$ ip -o link show | awk -F': ' '{print \$1\": \"\$2}'   (index and name only)"
        ip -o link show | awk -F': ' '{print $1": "$2}'
        echo '$ ip netns'; ip netns
        echo "\$ ls -d $R /run/netns"; ls -d "$R" /run/netns 2>&1
        echo "\$ findmnt | grep -E '$N|netns'"; findmnt | grep -E "$N|netns" || echo "(none)"
        echo "\$ ps -eo pid,args | grep -E 'dockerd|containerd|$N'"; ps -eo pid,args | grep -E "dockerd|containerd|$N" | grep -v grep
        echo "\$ ls -d /sys/fs/cgroup/*/$N"; ls -d /sys/fs/cgroup/*/"$N" 2>&1
        echo '$ ls /run/containerd/s'; ls /run/containerd/s
        echo '$ ip route | grep 198.18'; ip route | grep 198.18 || echo "(none)"
        echo '$ ss -ualnp | grep -E ":(4789|7946)"'; ss -uanp | grep -E ':(4789|7946) ' || echo "(none)"
        echo '$ ss -tlnp | grep -E ":(2377|7946)"'; ss -tlnp | grep -E ':(2377|7946) ' || echo "(none)"
    } >"$TOPO/leftovers.txt" 2>&1
    iptables-save | grep -v '^#' >"/tmp/$N.ipt.after" 2>/dev/null
    ip6tables-save | grep -v '^#' >>"/tmp/$N.ipt.after" 2>/dev/null
    if [ -f "/tmp/$N.ipt.before" ]; then
        { echo '$ diff <(iptables-save; ip6tables-save) before/after (comments stripped)'
          diff "/tmp/$N.ipt.before" "/tmp/$N.ipt.after" && echo "(no difference)"; } >>"$TOPO/leftovers.txt"
        rm -f "/tmp/$N.ipt.before"
    fi
    rm -f "/tmp/$N.ipt.after"
    cat "$TOPO/leftovers.txt" >&2
}

# ---------------------------------------------------------------------------
# Preflight: refuse to run over anything that is not ours.

[ "$(id -u)" = 0 ] || { echo "needs root" >&2; exit 1; }
[ -f "$TOOL" ] || { echo "$TOOL is missing" >&2; exit 1; }
for l in "${OUR_LINKS[@]}" nwmv1 nwmp1 nwmi1; do
    [ -e "/sys/class/net/$l" ] && { echo "interface $l already exists: not ours, stopping" >&2; exit 1; }
done
[ -e "$R" ] && { echo "$R exists: a previous run? remove it first" >&2; exit 1; }
[ -S /run/containerd/containerd.sock ] && echo "note: a system containerd runs; dockerd 20.10 would use it" >&2

trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$R/ns"
chmod 711 "$R"
iptables-save | grep -v '^#' >"/tmp/$N.ipt.before"
ip6tables-save | grep -v '^#' >>"/tmp/$N.ipt.before"

# ---------------------------------------------------------------------------
log "links and namespaces of the test LAN"
# ip monitor in the host namespace (and every namespace it has an nsid for)
ip -t -d monitor link all-nsid >"$TOPO/ip-monitor-host.txt" 2>&1 &
BGPIDS+=($!)
x ip link add "$BR" type bridge
x ip addr add 198.18.90.1/24 dev "$BR"      # dockerd -b takes the bridge's address
# swarm control plane address
x ip link add nwsw0 type veth peer name nwsw1
x ip addr add 198.18.50.1/24 dev nwsw0
x ip link set nwsw0 up
x ip link set nwsw1 up
# macvlan parents: nwmv0 (bridge mode, IPv4+IPv6) and nwmp0 (private mode);
# their peers live in the namespace nwmvlan, the "LAN router".
touch "$NSMV"
x unshare --net="$NSMV" true
x ip link add nwmv0 type veth peer name nwmv1
x ip link add nwmp0 type veth peer name nwmp1
x ip link add nwmi0 type veth peer name nwmi1
x ip link set nwmv1 netns "$NSMV"
x ip link set nwmp1 netns "$NSMV"
x ip link set nwmi1 netns "$NSMV"
x inns "$NSMV" ip link set lo up
x inns "$NSMV" ip addr add 198.18.60.1/24 dev nwmv1
x inns "$NSMV" ip addr add fd00:60::1/64 dev nwmv1 nodad
x inns "$NSMV" ip addr add 198.18.61.1/24 dev nwmp1
x inns "$NSMV" ip addr add 198.18.63.1/24 dev nwmi1
x inns "$NSMV" ip link set nwmv1 up
x inns "$NSMV" ip link set nwmp1 up
x inns "$NSMV" ip link set nwmi1 up
x ip link set nwmv0 up
x ip link set nwmp0 up
x ip link set nwmi0 up
# ipvlan parent (the kernel has no ipvlan: only to capture Docker's refusal)
x ip link add nwiv0 type veth peer name nwiv1

# ---------------------------------------------------------------------------
log "private dockerd"
echo '{}' >"$R/daemon.json"
DARGS=(--config-file "$R/daemon.json" --data-root "$R/data" --exec-root "$R/exec"
    --pidfile "$R/d.pid" -H "$H" --bridge "$BR" --storage-driver overlay2
    --iptables=false --cgroup-parent "/$N")
printf '$ DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1 setsid dockerd %s\n' "${DARGS[*]}" >>"$T"
# DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1: swarm tasks use the local image and
# never try to pull it (no registry traffic); moby's own tests set it too.
DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1 setsid dockerd "${DARGS[@]}" >"$R/dockerd.log" 2>&1 </dev/null &
for _ in $(seq 1 300); do
    D version >/dev/null 2>&1 && break
    sleep 0.1
done
DPID=$(cat "$R/d.pid" 2>/dev/null)
D version >/dev/null 2>&1 || { echo "private dockerd did not answer" >&2; tail -30 "$R/dockerd.log" >&2; exit 1; }
echo "dockerd pid $DPID" >>"$T"

# every Engine API event from now on, raw (one JSON object a line)
curl -sSN --unix-socket "$SOCK" "$API/events" >"$CAP/events.jsonl" 2>>"$T" &
BGPIDS+=($!)

printf '$ docker save %s | docker -H %s load\n' "$IMAGE" "$H" >>"$T"
docker save "$IMAGE" | D load >>"$T" 2>&1 || exit 1

save /version version.json
save /info info-before-swarm.json

# ---------------------------------------------------------------------------
log "refusals (errors.md)"
{
    echo "# Requests the private dockerd (20.10.24, API 1.41) refused, and the accepted steps around them"
    echo
    echo "Kernel: $(uname -r); no CONFIG_DUMMY, no CONFIG_IPVLAN, no CONFIG_VLAN_8021Q, no CONFIG_IP_VS."
    echo "Each request as sent (curl --unix-socket), the HTTP status, the body."
} >"$CAP/errors.md"
# trynet TITLE CLI NAME BODY: a network create expected to be refused; if
# Docker accepts it after all, its inspect is kept and it is removed again.
trynet() {
    local code
    code=$(req "$1" "$2" POST /networks/create "$4")
    if [ "$code" = 201 ]; then
        save "/networks/$3?verbose=true" "network-$3.json"
        x D network rm "$3"
    fi
}
ipam() { printf '"IPAM":{"Config":[{"Subnet":"198.18.%s.0/24","Gateway":"198.18.%s.1"}]}' "$1" "$1"; }
req "overlay network before swarm init" \
    "docker network create -d overlay --attachable --subnet 198.18.72.0/24 nwcap-ovl-early" \
    POST /networks/create '{"Name":"nwcap-ovl-early","Driver":"overlay","Attachable":true,"IPAM":{"Config":[{"Subnet":"198.18.72.0/24"}]},"CheckDuplicate":true}' >/dev/null
trynet "internal macvlan without a parent (Docker makes a dummy parent dm-<id>)" \
    "docker network create -d macvlan --internal --subnet 198.18.65.0/24 --gateway 198.18.65.1 nwcap-mvint2" nwcap-mvint2 \
    '{"Name":"nwcap-mvint2","Driver":"macvlan","Internal":true,'"$(ipam 65)"',"CheckDuplicate":true}'
trynet "macvlan without a parent (also a dummy parent)" \
    "docker network create -d macvlan --subnet 198.18.66.0/24 --gateway 198.18.66.1 nwcap-mvnoparent" nwcap-mvnoparent \
    '{"Name":"nwcap-mvnoparent","Driver":"macvlan",'"$(ipam 66)"',"CheckDuplicate":true}'
trynet "macvlan on an 802.1q sub-interface parent (kernel has no VLAN support)" \
    "docker network create -d macvlan -o parent=nwmv0.62 --subnet 198.18.67.0/24 --gateway 198.18.67.1 nwcap-mvvlan" nwcap-mvvlan \
    '{"Name":"nwcap-mvvlan","Driver":"macvlan","Options":{"parent":"nwmv0.62"},'"$(ipam 67)"',"CheckDuplicate":true}'
trynet "macvlan on a parent that does not exist" \
    "docker network create -d macvlan -o parent=nwnope0 --subnet 198.18.68.0/24 --gateway 198.18.68.1 nwcap-mvnope" nwcap-mvnope \
    '{"Name":"nwcap-mvnope","Driver":"macvlan","Options":{"parent":"nwnope0"},'"$(ipam 68)"',"CheckDuplicate":true}'
code=$(req "ipvlan network (kernel has no ipvlan): create" \
    "docker network create -d ipvlan -o parent=nwiv0 --subnet 198.18.62.0/24 --gateway 198.18.62.1 nwcap-ipvlan" \
    POST /networks/create '{"Name":"nwcap-ipvlan","Driver":"ipvlan","Options":{"parent":"nwiv0"},'"$(ipam 62)"',"CheckDuplicate":true}')
if [ "$code" = 201 ]; then
    save "/networks/nwcap-ipvlan?verbose=true" network-nwcap-ipvlan.json
    code=$(req "container on the ipvlan network: create" \
        "docker create --name nwcap-iv --network nwcap-ipvlan $IMAGE sleep 3600" \
        POST "/containers/create?name=nwcap-iv" '{"Image":"'"$IMAGE"'","Cmd":["sleep","3600"],"HostConfig":{"NetworkMode":"nwcap-ipvlan"}}')
    if [ "$code" = 201 ]; then
        req "container on the ipvlan network: start" "docker start nwcap-iv" POST /containers/nwcap-iv/start >/dev/null
        save /containers/nwcap-iv/json container-iv-not-started.json
        x D rm -f nwcap-iv
    fi
    x D network rm nwcap-ipvlan
fi

# ---------------------------------------------------------------------------
log "macvlan networks and containers"
x D network create -d macvlan -o parent=nwmv0 --ipv6 \
    --subnet 198.18.60.0/24 --gateway 198.18.60.1 --subnet fd00:60::/64 --gateway fd00:60::1 \
    --label netwatch.capture=macvlan nwcap-mvlan
x D network create -d macvlan -o parent=nwmp0 -o macvlan_mode=private \
    --subnet 198.18.61.0/24 --gateway 198.18.61.1 nwcap-mvpriv
# --internal with an explicit parent: accepted, and the parent is used (no dummy)
code=$(req "internal macvlan WITH a parent (accepted: recorded for its answer)" \
    "docker network create -d macvlan --internal -o parent=nwmi0 --subnet 198.18.63.0/24 --gateway 198.18.63.1 nwcap-mvint" \
    POST /networks/create '{"Name":"nwcap-mvint","Driver":"macvlan","Internal":true,"Options":{"parent":"nwmi0"},'"$(ipam 63)"',"CheckDuplicate":true}')
req "a second macvlan network on a parent already used by one" \
    "docker network create -d macvlan -o parent=nwmv0 --subnet 198.18.64.0/24 nwcap-mvdup" \
    POST /networks/create '{"Name":"nwcap-mvdup","Driver":"macvlan","Options":{"parent":"nwmv0"},"IPAM":{"Config":[{"Subnet":"198.18.64.0/24"}]},"CheckDuplicate":true}' >/dev/null
x D run -d --name nwcap-mv --network nwcap-mvlan --label netwatch.allow=198.18.60.1:53/udp $IMAGE sleep 3600
x D run -d --name nwcap-mv2 --network nwcap-mvlan $IMAGE sleep 3600
x D run -d --name nwcap-mvp --network nwcap-mvpriv $IMAGE sleep 3600
x D run -d --name nwcap-mvi --network nwcap-mvint $IMAGE sleep 3600
x D run -d --name nwcap-hostnet2 --network host $IMAGE sleep 3600
x D run -d --name nwcap-none2 --network none $IMAGE sleep 3600
req "connecting a --network host container to another network" \
    "docker network connect nwcap-mvlan nwcap-hostnet2" \
    POST /networks/nwcap-mvlan/connect '{"Container":"nwcap-hostnet2"}' >/dev/null

# ---------------------------------------------------------------------------
log "swarm (single node) and overlay networks"
# docker_gwbridge made before swarm init, as Docker's docs describe for a
# custom subnet; the options are the ones Docker gives it itself.
x D network create --subnet 198.18.80.0/24 --gateway 198.18.80.1 \
    -o com.docker.network.bridge.name=docker_gwbridge \
    -o com.docker.network.bridge.enable_icc=false \
    -o com.docker.network.bridge.enable_ip_masquerade=true docker_gwbridge
printf '$ docker swarm init --advertise-addr 198.18.50.1 --listen-addr 198.18.50.1:2377 --default-addr-pool 198.18.128.0/17 --default-addr-pool-mask-length 24\n' >>"$T"
D swarm init --advertise-addr 198.18.50.1 --listen-addr 198.18.50.1:2377 \
    --default-addr-pool 198.18.128.0/17 --default-addr-pool-mask-length 24 2>&1 |
    grep -v -- '--token' >>"$T" # (join tokens not kept)
save /info info.json
x D network create -d overlay --attachable --subnet 198.18.70.0/24 --gateway 198.18.70.1 nwcap-ovl
x D network create -d overlay --attachable --internal --subnet 198.18.71.0/24 --gateway 198.18.71.1 nwcap-ovl-int
x D network create -d overlay --subnet 198.18.73.0/24 nwcap-ovl-na
code=$(req "container create on a non-attachable overlay" \
    "docker create --name nwcap-ona --network nwcap-ovl-na $IMAGE sleep 3600" \
    POST "/containers/create?name=nwcap-ona" '{"Image":"'"$IMAGE"'","Cmd":["sleep","3600"],"HostConfig":{"NetworkMode":"nwcap-ovl-na"}}')
if [ "$code" = 201 ]; then
    req "container start on a non-attachable overlay" "docker start nwcap-ona" POST /containers/nwcap-ona/start >/dev/null
    x D rm -f nwcap-ona
fi
x D network rm nwcap-ovl-na
x D run -d --name nwcap-ovc --network nwcap-ovl $IMAGE sleep 3600
x D run -d --name nwcap-ovi --network nwcap-ovl-int $IMAGE sleep 3600
x D service create --detach --no-resolve-image --name nwcap-svc --replicas 1 --network nwcap-ovl $IMAGE sleep 3600
SVC=""
for _ in $(seq 1 120); do
    SVC=$(D ps -q --filter label=com.docker.swarm.service.name=nwcap-svc)
    [ -n "$SVC" ] && break
    sleep 0.5
done
x D service ps --no-trunc nwcap-svc
[ -n "$SVC" ] || { echo "the service task never ran" >&2; tail -40 "$R/dockerd.log" >&2; }
sleep 2 # let the load balancer endpoint settle

# ---------------------------------------------------------------------------
log "API captures"
save /networks networks.json
api /networks | python3 -c 'import json,sys; [print(n["Id"]) for n in json.load(sys.stdin)]' >"$R/netids"
for n in $(api /networks | python3 -c 'import json,sys; [print(n["Name"]) for n in json.load(sys.stdin)]'); do
    save "/networks/$n?verbose=true" "network-$n.json"
done
for n in nwcap-ovl nwcap-ovl-int ingress nwcap-mvlan nwcap-mvint; do
    save "/networks/$n" "network-$n.not-verbose.json"
done
save /containers/json containers.json
for c in mv mv2 mvp mvi hostnet2 none2 ovc ovi; do
    save "/containers/nwcap-$c/json" "container-$c.json"
done
[ -n "$SVC" ] && save "/containers/$SVC/json" container-svc.json
save /services services.json
save /tasks tasks.json
save /nodes nodes.json

# ---------------------------------------------------------------------------
log "kernel topology"
x sh -c "ip -br link | grep -E '^(nwcap|nwsw|nwmv|nwmp|nwmi|nwiv|docker_gwbridge|veth|vx-)'"
x ls -l "$R/exec/netns"
x sh -c "findmnt -rn -o TARGET,SOURCE,FSTYPE | grep $R"
for c in nwcap-mv nwcap-mv2 nwcap-mvp nwcap-mvi nwcap-hostnet2 nwcap-none2 nwcap-ovc nwcap-ovi "$SVC"; do
    [ -n "$c" ] || continue
    pid=$(D inspect -f '{{.State.Pid}}' "$c")
    printf '\n$ # %s: pid %s, net ns %s, SandboxKey %s\n' "$c" "$pid" "$(readlink /proc/$pid/ns/net)" \
        "$(D inspect -f '{{.NetworkSettings.SandboxKey}}' "$c")" >>"$T"
    if [ "$(readlink /proc/$pid/ns/net)" = "$(readlink /proc/$$/ns/net)" ]; then
        echo "(the host's own network namespace: not listed here)" >>"$T"
        continue
    fi
    x nsenter -t "$pid" -n ip -d link show
    x nsenter -t "$pid" -n ip addr show
    x nsenter -t "$pid" -n ip route show
    x nsenter -t "$pid" -n ip -6 route show
done
for f in "$R"/exec/netns/*; do
    printf '\n$ # namespace file %s (inode %s)\n' "$f" "$(stat -L -c %i "$f")" >>"$T"
    if [ "$(stat -L -c %i "$f")" = "$(stat -L -c %i /proc/$$/ns/net)" ]; then
        echo "(the host's own network namespace: not listed here)" >>"$T"
        continue
    fi
    x nsenter --net="$f" ip -d link show
    x nsenter --net="$f" ip addr show
    x nsenter --net="$f" ip route show
    x nsenter --net="$f" bridge link show
    x nsenter --net="$f" bridge fdb show
    x nsenter --net="$f" ip neigh show
done
printf '\n$ # host namespace, interfaces of this capture\n' >>"$T"
for l in "$BR" docker_gwbridge nwsw0 nwmv0 nwmp0 nwmi0 nwiv0 $(ls /sys/class/net/docker_gwbridge/brif /sys/class/net/$BR/brif 2>/dev/null | grep -v :); do
    [ -e "/sys/class/net/$l" ] && x ip -d link show dev "$l"
done
x sh -c "ip route show | grep 198.18"
x sh -c "ss -uanp | grep -E ':(4789|7946) '"
x sh -c "ss -tlnp | grep -E ':(2377|7946) '"

python3 "$TOOL" manifest "$R" "$SOCK" '{"host": "/proc/'$$'/ns/net", "nwmvlan": "'"$NSMV"'"}' >"$R/manifest.json"
cp "$R/manifest.json" "$TOPO/manifest.json"
python3 "$TOOL" topo "$R/manifest.json" "$TOPO/topology.json" >"$TOPO/topology.md" 2>>"$T"

# ---------------------------------------------------------------------------
log "traffic: which interfaces see which packets (ip -s link counters; tcpdump on the macvlan parents)"
MV2IP=$(D inspect -f '{{(index .NetworkSettings.Networks "nwcap-mvlan").IPAddress}}' nwcap-mv2)
SVCIP=""
[ -n "$SVC" ] && SVCIP=$(D inspect -f '{{(index .NetworkSettings.Networks "nwcap-ovl").IPAddress}}' "$SVC")
: >"$TOPO/traffic.md"
# probe TITLE DUMPIF CMD...: packet counters of every namespace around one
# command, and what tcpdump sees meanwhile on DUMPIF (host namespace; "-" for none)
probe() {
    local title=$1 dumpif=$2; shift 2
    local tin="" tout="" out rc
    python3 "$TOOL" snap "$R/manifest.json" "$R/a.json"
    if [ "$dumpif" != - ]; then
        # -Q in: received on the parent (its ingress side); -Q out: sent by it (egress)
        tcpdump -p -nn -e -l -Q in -i "$dumpif" >"$R/td.in" 2>/dev/null &
        tin=$!
        tcpdump -p -nn -e -l -Q out -i "$dumpif" >"$R/td.out" 2>/dev/null &
        tout=$!
        BGPIDS+=("$tin" "$tout")
        sleep 1
    fi
    printf '$ %s\n' "$*" >>"$T"
    out=$("$@" 2>&1); rc=$?
    printf '%s\n' "$out" >>"$T"
    sleep 0.5
    python3 "$TOOL" snap "$R/manifest.json" "$R/b.json"
    if [ -n "$tin" ]; then
        kill "$tin" "$tout"
        wait "$tin" "$tout" 2>/dev/null
    fi
    {
        printf '\n## %s\n\n`%s` (exit %s)\n\n```\n%s\n```\n\n' "$title" "$*" "$rc" "$(printf '%s\n' "$out" | tail -3)"
        if [ -n "$tin" ]; then
            printf 'tcpdump -p -nn -e -Q in -i %s (host namespace; what the parent RECEIVES, i.e. its ingress side): %s packets\n\n```\n' "$dumpif" "$(grep -c . "$R/td.in")"
            head -12 "$R/td.in"
            printf '```\n\ntcpdump -p -nn -e -Q out -i %s (what the parent SENDS, its egress side): %s packets\n\n```\n' "$dumpif" "$(grep -c . "$R/td.out")"
            head -12 "$R/td.out"
            printf '```\n\n'
        fi
        echo "Interfaces whose packet counters moved (ip -s link; all namespaces of this capture):"
        echo
        python3 "$TOOL" diff "$R/a.json" "$R/b.json"
    } >>"$TOPO/traffic.md"
}
probe "macvlan container -> the LAN router (198.18.60.1, behind the parent)" nwmv0 D exec nwcap-mv ping -c 3 -W 1 198.18.60.1
probe "macvlan container -> the LAN router over IPv6 (fd00:60::1)" nwmv0 D exec nwcap-mv ping -c 3 -W 1 fd00:60::1
probe "macvlan container -> another macvlan container on the same parent (bridge mode)" nwmv0 D exec nwcap-mv ping -c 3 -W 1 "$MV2IP"
probe "private-mode macvlan container -> the LAN router (198.18.61.1)" nwmp0 D exec nwcap-mvp ping -c 3 -W 1 198.18.61.1
probe "internal macvlan container -> the LAN router on its own subnet (198.18.63.1)" nwmi0 D exec nwcap-mvi ping -c 3 -W 1 198.18.63.1
probe "internal macvlan container -> an address off its subnet (198.18.60.1: needs a default route)" nwmi0 D exec nwcap-mvi ping -c 2 -W 1 198.18.60.1
if [ -n "$SVCIP" ]; then
    probe "overlay container -> the service task on the same overlay ($SVCIP)" - D exec nwcap-ovc ping -c 3 -W 1 "$SVCIP"
    SVCVIP=$(api /services/nwcap-svc | python3 -c 'import json,sys; print(json.load(sys.stdin)["Endpoint"]["VirtualIPs"][0]["Addr"].split("/")[0])')
    probe "overlay container -> the service's VIP ($SVCVIP; this kernel has no IPVS)" - D exec nwcap-ovc ping -c 2 -W 1 "$SVCVIP"
fi
probe "overlay container -> docker_gwbridge's gateway 198.18.80.1 (its eth1 leg)" - D exec nwcap-ovc ping -c 3 -W 1 198.18.80.1
probe "internal overlay container -> docker_gwbridge's gateway (no route expected)" - D exec nwcap-ovi ping -c 2 -W 1 198.18.80.1

# ---------------------------------------------------------------------------
log "teardown through the API (its events go into events.jsonl)"
x D service rm nwcap-svc
for _ in $(seq 1 60); do
    [ -z "$(D ps -aq --filter label=com.docker.swarm.service.name=nwcap-svc)" ] && break
    sleep 0.5
done
x D rm -f nwcap-mv nwcap-mv2 nwcap-mvp nwcap-mvi nwcap-hostnet2 nwcap-none2 nwcap-ovc nwcap-ovi
for n in nwcap-ovl nwcap-ovl-int nwcap-mvlan nwcap-mvpriv nwcap-mvint; do
    for _ in $(seq 1 40); do
        D network rm "$n" >/dev/null 2>&1 && { echo "removed network $n" >>"$T"; break; }
        sleep 0.5
    done
done
sleep 1
x D swarm leave --force
sleep 1
x D network rm docker_gwbridge
sleep 1
for p in "${BGPIDS[@]}"; do kill "$p" 2>/dev/null; done
BGPIDS=()
# every link this capture made: where it was created, moved, renamed, deleted
python3 "$TOOL" monitor "$TOPO/ip-monitor-host.txt" "$TOPO/topology.json" >"$TOPO/link-events.md"
python3 - "$CAP/events.jsonl" >"$TOPO/events-summary.md" <<'EOF'
import json, sys
print("| # | Type | Action | Scope | Actor.ID (12) | Actor.Attributes |")
print("|---|---|---|---|---|---|")
for i, line in enumerate(open(sys.argv[1])):
    line = line.strip()
    if not line:
        continue
    e = json.loads(line)
    a = e.get("Actor", {})
    attrs = ", ".join("%s=%s" % kv for kv in sorted((a.get("Attributes") or {}).items()))
    print("| %d | %s | %s | %s | %s | %s |" % (i + 1, e.get("Type"), e.get("Action"), e.get("scope"),
                                             a.get("ID", "")[:12], attrs.replace("|", "\\|")))
EOF
log "done; cleanup follows"
