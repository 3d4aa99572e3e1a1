#!/usr/bin/env bash
# macvlan-hooks.sh — measure which TC/TCX hook points see which macvlan traffic.
#
# Runs as root on a throw-away VM. Creates ONLY: netns mvlan, mvc1, mvc2
# (+ mvc2's helper veth for the ifindex-collision check), the veth pair
# mvpar<->lan0, macvlan children, an optional host shim macvlan "mvshim",
# a private bpffs mount under a mktemp dir, a cgroup-v2 child "mvhtest".
# Sends traffic ONLY inside those namespaces / to 198.18.10.0/24,
# 203.0.113.7, fd00:10::/64. Everything is removed on exit (trap).
#
# Counting: TC "matchall"/"gact" are not built into this kernel
# (CONFIG_NET_CLS_MATCHALL/CONFIG_NET_ACT_GACT unset, CLS_U32_PERF unset), so
# each hook gets a tiny hand-assembled eBPF sched_cls program that only counts
# (into an array map) and returns "continue" (TCX_NEXT / TC_ACT_UNSPEC = -1).
# It is attached as a TCX link (BPF_LINK_CREATE, BPF_TCX_INGRESS/EGRESS: netwatch's
# hook) on every hook, and additionally as a cls_bpf direct-action filter under a
# clsact qdisc on the six required hooks (mvc1/mvc2 eth0 and mvpar, ingress+egress).
# Also: DROP-enforcement checks (E*), skb->mark propagation (M*), host/shim (7*),
# and what a CAP_NET_ADMIN(+NET_RAW)-only process inside a container netns can do (9*).
# Usage: bash macvlan-hooks.sh [bridge|private|vepa|passthru|all]   (default all)
set -u
MODES="${1:-all}"
[ "$MODES" = all ] && MODES="bridge private vepa passthru"

WORK=$(mktemp -d /tmp/mvhooks.XXXXXX)
BPFFS="$WORK/bpffs"
CG=/sys/fs/cgroup/unified/mvhtest

cleanup() {
    set +e
    ip link del mvshim 2>/dev/null
    ip link del mvpar 2>/dev/null          # also removes lan0 (peer) if still paired
    for ns in mvc1 mvc2 mvlan; do ip netns del "$ns" 2>/dev/null; done
    ip link del mvpar 2>/dev/null
    if mountpoint -q "$BPFFS" 2>/dev/null; then umount "$BPFFS"; fi
    if [ -d "$CG" ]; then
        for p in $(cat "$CG/cgroup.procs" 2>/dev/null); do echo "$p" > /sys/fs/cgroup/unified/cgroup.procs; done
        rmdir "$CG" 2>/dev/null
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

nsq() { local ns=$1; shift; ip netns exec "$ns" "$@"; }   # run inside a netns
quiet_v6() {  # no RS / DAD / RA noise in a namespace
    nsq "$1" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0 \
        net.ipv6.conf.all.router_solicitations=0 net.ipv6.conf.default.router_solicitations=0 \
        net.ipv6.conf.all.accept_ra=0 net.ipv6.conf.default.accept_ra=0
}

# MACs are fixed so the tables can name them (Docker itself derives 02:42:<ip>).
MAC_LAN=02:00:5e:10:00:01   # lan0   (the LAN router, in ns mvlan)
MAC_PAR=02:00:5e:10:00:02   # mvpar  (macvlan parent, host ns)
MAC_C1=02:42:c6:12:0a:0b    # mvc1 eth0  198.18.10.11
MAC_C2=02:42:c6:12:0a:0c    # mvc2 eth0  198.18.10.12

setup() {  # $1 = macvlan mode
    local mode=$1
    echo "### setup mode=$mode"
    for ns in mvlan mvc1 mvc2; do ip netns add $ns; nsq $ns ip link set lo up; quiet_v6 $ns; done
    # --- the LAN: veth lan0 (in mvlan) <-> mvpar (host, macvlan parent) ---
    ip link add mvpar address $MAC_PAR type veth peer name lan0 address $MAC_LAN netns mvlan
    sysctl -qw net.ipv6.conf.mvpar.disable_ipv6=1          # host itself says nothing on mvpar
    ip link set mvpar up
    # LAN side is a bridge so that vepa/private can be tested with a hairpin (reflective relay) port
    nsq mvlan ip link add lanbr address $MAC_LAN type bridge stp_state 0 forward_delay 0
    nsq mvlan ip link set lan0 master lanbr
    if [ "$mode" = vepa ] || [ "$mode" = private ]; then
        nsq mvlan ip link set lan0 type bridge_slave hairpin on
    fi
    nsq mvlan ip link set lan0 up
    nsq mvlan ip link set lanbr up
    nsq mvlan ip addr add 198.18.10.1/24 dev lanbr
    nsq mvlan ip addr add fd00:10::1/64 dev lanbr nodad
    nsq mvlan ip addr add 203.0.113.7/32 dev lo                 # "beyond the router"
    nsq mvlan sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
    # --- containers: macvlan child created in host ns, moved, renamed eth0 (as Docker does) ---
    local n ip mac
    for n in 1 2; do
        [ "$mode" = passthru ] && [ $n = 2 ] && continue      # passthru allows one child only
        ip=198.18.10.1$n; mac=$([ $n = 1 ] && echo $MAC_C1 || echo $MAC_C2)
        if [ "$mode" = passthru ]; then
            ip link add mvtmp$n link mvpar type macvlan mode passthru
        else
            ip link add mvtmp$n link mvpar address $mac type macvlan mode $mode
        fi
        echo "ifindex mvtmp$n in host ns before move: $(cat /sys/class/net/mvtmp$n/ifindex)"
        if [ $n = 2 ] && [ "$mode" = bridge ]; then
            # collision check: occupy the same ifindex inside mvc2 before moving mvtmp2 in
            local idx; idx=$(cat /sys/class/net/mvtmp2/ifindex)
            nsq mvc2 ip link add blocker index "$idx" type veth peer name blockerp
            echo "mvc2: pre-created 'blocker' with ifindex $idx"
        fi
        ip link set mvtmp$n netns mvc$n
        nsq mvc$n ip link set mvtmp$n name eth0
        echo "ifindex eth0 in mvc$n after move+rename: $(nsq mvc$n cat /sys/class/net/eth0/ifindex)  (iflink=$(nsq mvc$n cat /sys/class/net/eth0/iflink), mvpar ifindex in host=$(cat /sys/class/net/mvpar/ifindex))"
        nsq mvc$n ip link set eth0 up
        nsq mvc$n ip addr add $ip/24 dev eth0
        nsq mvc$n ip addr add fd00:10::1$n/64 dev eth0 nodad
        nsq mvc$n ip route add default via 198.18.10.1
    done
    if [ "$mode" = bridge ]; then nsq mvc2 ip link del blocker; fi
    # static neighbours: unicast cases run without ARP/ND noise (ARP/ND are measured separately)
    local c1mac; c1mac=$(nsq mvc1 cat /sys/class/net/eth0/address)
    nsq mvlan ip neigh replace 198.18.10.11 lladdr $c1mac dev lanbr nud permanent
    nsq mvlan ip neigh replace fd00:10::11 lladdr $c1mac dev lanbr nud permanent
    nsq mvc1 ip neigh replace 198.18.10.1 lladdr $MAC_LAN dev eth0 nud permanent
    nsq mvc1 ip neigh replace fd00:10::1 lladdr $MAC_LAN dev eth0 nud permanent
    if [ "$mode" != passthru ]; then
        nsq mvlan ip neigh replace 198.18.10.12 lladdr $MAC_C2 dev lanbr nud permanent
        nsq mvlan ip neigh replace fd00:10::12 lladdr $MAC_C2 dev lanbr nud permanent
        nsq mvc1 ip neigh replace 198.18.10.12 lladdr $MAC_C2 dev eth0 nud permanent
        nsq mvc1 ip neigh replace fd00:10::12 lladdr $MAC_C2 dev eth0 nud permanent
        nsq mvc2 ip neigh replace 198.18.10.11 lladdr $c1mac dev eth0 nud permanent
        nsq mvc2 ip neigh replace fd00:10::11 lladdr $c1mac dev eth0 nud permanent
        nsq mvc2 ip neigh replace 198.18.10.1 lladdr $MAC_LAN dev eth0 nud permanent
        nsq mvc2 ip neigh replace fd00:10::1 lladdr $MAC_LAN dev eth0 nud permanent
    fi
    ip -d link show mvpar | sed 's/^/  host: /'
    nsq mvc1 ip -d link show eth0 | sed 's/^/  mvc1: /'
    sleep 2   # let MLD reports etc. settle before counting
}

teardown() {
    ip link del mvshim 2>/dev/null
    for ns in mvc1 mvc2 mvlan; do ip netns del "$ns" 2>/dev/null; done
    ip link del mvpar 2>/dev/null
    sleep 0.5
}

mkdir -p "$BPFFS" && mount -t bpf bpf "$BPFFS" || { echo "cannot mount private bpffs"; exit 1; }
mkdir "$CG" || { echo "cannot create cgroup $CG"; exit 1; }

# The python half (hook attach, traffic, counter read-out) lives in a heredoc.
PY="$WORK/mvhooks.py"
cat > "$PY" <<'PYEOF'
import ctypes, os, socket, struct, subprocess, sys, time, random, errno

MODE = sys.argv[1]; BPFFS = sys.argv[2]; CG = sys.argv[3]
libc = ctypes.CDLL(None, use_errno=True)
NR_BPF = 321
CLONE_NEWNET = 0x40000000
HOSTNS = os.open('/proc/self/ns/net', os.O_RDONLY)
MAC = dict(LAN='02:00:5e:10:00:01', PAR='02:00:5e:10:00:02', C1='02:42:c6:12:0a:0b',
           C2='02:42:c6:12:0a:0c', SHIM='02:00:5e:10:00:03', BC='ff:ff:ff:ff:ff:ff',
           RND='06:11:22:33:44:55', NEW='02:42:c6:12:0a:99', SRC='02:aa:bb:cc:dd:ee')

def run(cmd, check=True, show=True):
    if show: print('    $ ' + cmd)
    r = subprocess.run(cmd, shell=True, capture_output=True, text=True)
    out = (r.stdout + r.stderr).strip()
    if show and out: print('\n'.join('      ' + l for l in out.splitlines()))
    if check and r.returncode != 0: raise RuntimeError(f'failed: {cmd}: {out}')
    return r.returncode, out

class InNs:
    def __init__(self, ns): self.ns = ns
    def __enter__(self):
        if self.ns:
            fd = os.open(f'/run/netns/{self.ns}', os.O_RDONLY)
            if libc.setns(fd, CLONE_NEWNET) != 0: raise OSError(ctypes.get_errno(), 'setns')
            os.close(fd)
    def __exit__(self, *a):
        if self.ns: libc.setns(HOSTNS, CLONE_NEWNET)

def exists(ns, dev):
    with InNs(ns):
        try: socket.if_nametoindex(dev); return True
        except OSError: return False

# ---------------------------------------------------------------- bpf()
def bpf(cmd, attr: bytes):
    buf = ctypes.create_string_buffer(attr, 144)
    r = libc.syscall(NR_BPF, cmd, buf, 144)
    if r < 0: raise OSError(ctypes.get_errno(), f'bpf cmd {cmd}: ' + os.strerror(ctypes.get_errno()))
    return r, buf.raw

VSZ = 96; NSLOT = 48
def map_create():
    fd, _ = bpf(0, struct.pack('<IIIII', 2, 4, VSZ, NSLOT, 0))   # ARRAY
    return fd
def map_get(fd, k):
    key = ctypes.create_string_buffer(struct.pack('<I', k)); val = ctypes.create_string_buffer(VSZ)
    bpf(1, struct.pack('<IIQQQ', fd, 0, ctypes.addressof(key), ctypes.addressof(val), 0))
    return val.raw
def map_zero(fd):
    zero = ctypes.create_string_buffer(VSZ)
    for k in range(NSLOT):
        key = ctypes.create_string_buffer(struct.pack('<I', k))
        bpf(2, struct.pack('<IIQQQ', fd, 0, ctypes.addressof(key), ctypes.addressof(zero), 0))

def ins(op, dst=0, src=0, off=0, imm=0): return [struct.pack('<BBhi', op, (src << 4) | dst, off, imm)]
def build_prog(mapfd, slot, ret=-1, stamp=None):
    # simple two-pass assembler with labels
    P = []; jumps = []; labels = {}
    def e(*a): P.extend(ins(*a))
    def j(op, dst, src, imm, label): jumps.append((len(P), op, dst, src, imm, label)); P.extend(ins(op, dst, src, 0, imm))
    def L(name): labels[name] = len(P)
    def xadd(off): e(0xb7, 1, 0, 0, 1); e(0xdb, 7, 1, off, 0)
    e(0xbf, 6, 1); e(0x62, 10, 0, -4, slot); e(0xbf, 2, 10); e(0x07, 2, 0, 0, -4)
    P.extend(ins(0x18, 1, 1, 0, mapfd)); P.extend(ins(0, 0, 0, 0, 0))
    e(0x85, 0, 0, 0, 1); j(0x15, 0, 0, 0, 'out'); e(0xbf, 7, 0)
    xadd(0)
    e(0x61, 2, 6, 16); j(0x55, 2, 0, 0x0608, 'noarp'); xadd(16)
    e(0xbf, 1, 6); e(0x85, 0, 0, 0, 122); e(0x7b, 7, 0, 80)          # ARP: netns cookie
    e(0x79, 2, 6, 168); e(0xb7, 3, 0, 0, 0); e(0x15, 2, 0, 1, 0); e(0xb7, 3, 0, 0, 1); e(0x63, 7, 3, 88)  # ARP: sk?
    L('noarp')
    e(0x61, 2, 6, 16); j(0x55, 2, 0, 0xdd86, 'nov6'); xadd(24); L('nov6')
    e(0x61, 2, 6, 0); j(0x55, 2, 0, 1000, 'out'); xadd(8)
    e(0xbf, 1, 6); e(0x85, 0, 0, 0, 122); e(0x7b, 7, 0, 32)
    e(0xbf, 1, 6); e(0x85, 0, 0, 0, 79); e(0x7b, 7, 0, 40)
    e(0x79, 2, 6, 168); e(0xb7, 3, 0, 0, 0); e(0x15, 2, 0, 1, 0); e(0xb7, 3, 0, 0, 1); e(0x63, 7, 3, 48)
    e(0x61, 2, 6, 36); e(0x63, 7, 2, 52); e(0x61, 2, 6, 40); e(0x63, 7, 2, 56); e(0x61, 2, 6, 4); e(0x63, 7, 2, 60)
    e(0x61, 2, 6, 8); e(0x63, 7, 2, 92)               # skb->mark
    e(0x61, 2, 6, 76); e(0x61, 3, 6, 80); e(0xbf, 4, 2); e(0x07, 4, 0, 0, 14); j(0x2d, 4, 3, 0, 'out')
    e(0x79, 5, 2, 0); e(0x7b, 7, 5, 64); e(0x79, 5, 2, 6); e(0x7b, 7, 5, 72)
    L('out')
    if stamp is not None: e(0xb7, 1, 0, 0, stamp); e(0x63, 6, 1, 8)   # skb->mark = stamp
    e(0xb7, 0, 0, 0, ret); e(0x95)
    for (i, op, dst, src, imm, label) in jumps:
        P[i] = struct.pack('<BBhi', op, (src << 4) | dst, labels[label] - i - 1, imm)
    return b''.join(P)

def prog_load(mapfd, slot, name, ret=-1, stamp=None):
    code = build_prog(mapfd, slot, ret, stamp)
    insns = ctypes.create_string_buffer(code); lic = ctypes.create_string_buffer(b'GPL')
    log = ctypes.create_string_buffer(65536)
    attr = struct.pack('<IIQQIIQII16sII', 3, len(code) // 8, ctypes.addressof(insns), ctypes.addressof(lic),
                       1, 65536, ctypes.addressof(log), 0, 0, name.encode()[:15], 0, 0)
    try:
        fd, _ = bpf(5, attr)
    except OSError:
        print(log.value.decode(errors='replace')[-3000:]); raise
    return fd

TCX_IN, TCX_EG = 46, 47
def tcx_attach(ns, dev, progfd, egress):
    with InNs(ns):
        idx = socket.if_nametoindex(dev)
        fd, _ = bpf(28, struct.pack('<IIII', progfd, idx, TCX_EG if egress else TCX_IN, 0))  # BPF_LINK_CREATE
    return fd

# ---------------------------------------------------------------- hooks
# (label, netns, device, egress?, also-clsact?)
HOOKS = [('c1.eg', 'mvc1', 'eth0', True, True), ('par.eg', None, 'mvpar', True, True),
         ('lan.in', 'mvlan', 'lan0', False, False), ('lan.eg', 'mvlan', 'lan0', True, False),
         ('par.in', None, 'mvpar', False, True), ('c1.in', 'mvc1', 'eth0', False, True),
         ('c2.eg', 'mvc2', 'eth0', True, True), ('c2.in', 'mvc2', 'eth0', False, True),
         ('shim.eg', None, 'mvshim', True, False), ('shim.in', None, 'mvshim', False, False),
         ('c1x.eg', 'mvc1', 'eth1', True, False), ('c1x.in', 'mvc1', 'eth1', False, False)]
CLS_OFF = 16
MAPFD = map_create()
LINKS = {}    # label -> link fd
PROGS = {}

def attach_hook(i, with_cls=True):
    label, ns, dev, eg, cls = HOOKS[i]
    cls = cls and with_cls
    if label in LINKS or not exists(ns, dev): return
    pfd = prog_load(MAPFD, i, 'mvh_' + label.replace('.', '_'))
    LINKS[label] = tcx_attach(ns, dev, pfd, eg)
    if cls:
        cfd = prog_load(MAPFD, i + CLS_OFF, 'mvhc_' + label.replace('.', '_'))
        path = f'{BPFFS}/cls_{label.replace(".", "_")}'
        pbuf = ctypes.create_string_buffer(path.encode())     # keep a reference while bpf() runs
        bpf(6, struct.pack('<QII', ctypes.addressof(pbuf), cfd, 0))
        nse = f'nsenter --net=/run/netns/{ns} ' if ns else ''
        run(f'{nse}tc qdisc replace dev {dev} clsact', show=False)
        run(f'{nse}tc filter add dev {dev} {"egress" if eg else "ingress"} pref 10 bpf object-pinned {path} direct-action', show=False)
        os.unlink(path); os.close(cfd)
    os.close(pfd)

def attach_all():
    for i in range(len(HOOKS)): attach_hook(i)

def detach(label):
    if label in LINKS: os.close(LINKS.pop(label))

def macstr(b): return ':'.join(f'{x:02x}' for x in b)
def read_all():
    res = {}
    for i, h in enumerate(HOOKS):
        v = map_get(MAPFD, i); c = map_get(MAPFD, i + CLS_OFF)
        allc, magic, arp, v6, ck, cg = struct.unpack_from('<QQQQQQ', v, 0)
        sk, iif, ifx, pt = struct.unpack_from('<IIII', v, 48)
        d = v[64:72] + v[72:80]
        arpck, arpsk, mark = struct.unpack_from('<QII', v, 80)
        res[h[0]] = dict(all=allc, magic=magic, arp=arp, v6=v6, cookie=ck, cgid=cg, sk=sk, iif=iif, ifx=ifx,
                         pkttype=pt, dst=macstr(d[0:6]), src=macstr(d[8:14]), arpck=arpck, arpsk=arpsk, mark=mark,
                         cls_magic=struct.unpack_from('<Q', c, 8)[0] if h[4] else None,
                         cls_all=struct.unpack_from('<Q', c, 0)[0] if h[4] else None,
                         cls_arp=struct.unpack_from('<Q', c, 16)[0] if h[4] else None,
                         cls_v6=struct.unpack_from('<Q', c, 24)[0] if h[4] else None)
    return res

# ---------------------------------------------------------------- ground truth: packet taps
TAPS = {}   # label -> AF_PACKET socket bound to device (sees frames delivered to that device)
def open_tap(label, ns, dev):
    if label in TAPS or not exists(ns, dev): return
    with InNs(ns):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
        s.bind((dev, 0)); s.setblocking(False)
    TAPS[label] = s
def drain_taps():
    out = {}
    for label, s in TAPS.items():
        n = 0
        while True:
            try: data, addr = s.recvfrom(4096)
            except OSError: break          # EAGAIN, or ENETDOWN once the device is gone
            if len(data) == 1000 and addr[2] != 4: n += 1     # 4 = PACKET_OUTGOING
        out[label] = n
    return out

# ---------------------------------------------------------------- traffic
def macb(m): return bytes(int(x, 16) for x in m.split(':'))
def udp(ns, dst, n=5, v6=False, bcast=False, scope=None, port=9999):
    with InNs(ns):
        s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)
        if bcast: s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        if scope: s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, scope.encode())
    payload = b'U' * (1000 - 14 - (40 if v6 else 20) - 8)
    sent = 0
    for _ in range(n):
        try:
            s.sendto(payload, (dst, port, 0, socket.if_nametoindex_ns(ns, scope)) if (v6 and scope) else (dst, port)); sent += 1
        except OSError as e: print(f'      sendto {dst}: {e}')
        time.sleep(0.02)
    s.close(); return sent
def _ifidx_ns(ns, dev):
    with InNs(ns): return socket.if_nametoindex(dev)
socket.if_nametoindex_ns = _ifidx_ns

def csum(b):
    if len(b) % 2: b += b'\0'
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b)); s = (s >> 16) + (s & 0xffff); s += s >> 16
    return ~s & 0xffff
def ping(ns, dst, n=3, v6=False, scope=None):
    """ICMP echo with 1000-byte frames; returns replies received."""
    with InNs(ns):
        s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_RAW,
                          socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP)
        if scope: s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, scope.encode())
    s.settimeout(0.3)
    ident = random.randint(1, 65535); got = 0
    payload = b'P' * (1000 - 14 - (40 if v6 else 20) - 8)
    for seq in range(n):
        if v6:
            pkt = struct.pack('!BBHHH', 128, 0, 0, ident, seq) + payload
            s.sendto(pkt, (dst, 0, 0, _ifidx_ns(ns, scope) if scope else 0))
        else:
            h = struct.pack('!BBHHH', 8, 0, 0, ident, seq) + payload
            pkt = struct.pack('!BBHHH', 8, 0, csum(h), ident, seq) + payload
            s.sendto(pkt, (dst, 0))
        t0 = time.time()
        while time.time() - t0 < 0.3:
            try: data = s.recv(4096)
            except socket.timeout: break
            off = 0 if v6 else (data[0] & 15) * 4
            typ = data[off]; rid = struct.unpack('!H', data[off + 4:off + 6])[0]
            if typ == (129 if v6 else 0) and rid == ident: got += 1
    s.close(); return got

def raw(ns, dev, dst, src, n=5, bypass=True):
    with InNs(ns):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x88b5))
        s.bind((dev, 0))
        if bypass: s.setsockopt(263, 20, 1)          # SOL_PACKET, PACKET_QDISC_BYPASS
    fr = macb(MAC[dst] if dst in MAC else dst) + macb(MAC[src] if src in MAC else src) + b'\x88\xb5'
    fr += b'R' * (1000 - len(fr))
    errs = {}
    for _ in range(n):
        try: s.send(fr)
        except OSError as e: errs[e.strerror] = errs.get(e.strerror, 0) + 1
        time.sleep(0.02)
    s.close()
    return ('send() errors: ' + ', '.join(f'{v}x {k}' for k, v in errs.items())) if errs else None

def cookie_of(ns):
    with InNs(ns):
        s = socket.socket(); c = struct.unpack('<Q', s.getsockopt(socket.SOL_SOCKET, 71, 8))[0]; s.close()
    return c

# ---------------------------------------------------------------- reporting
COLS = ['c1.eg', 'par.eg', 'lan.in', 'lan.eg', 'par.in', 'c1.in', 'c2.eg', 'c2.in', 'shim.eg', 'shim.in', 'c1x.eg', 'c1x.in']
TAPCOLS = [('rx@c1', 'mvc1', 'eth0'), ('rx@c2', 'mvc2', 'eth0'), ('rx@lan', 'mvlan', 'lanbr'), ('rx@shim', None, 'mvshim'), ('rx@c1x', 'mvc1', 'eth1')]
ROWS = []
def measure(name, fn, what='magic', note=''):
    for t in TAPCOLS: open_tap(*t)
    map_zero(MAPFD); drain_taps()
    extra = fn()
    time.sleep(0.4)
    r = read_all(); taps = drain_taps()
    cells = []
    for c in COLS:
        if c not in LINKS: cells.append('·'); continue
        v = r[c][what]; cv = r[c]['cls_' + what]
        cell = str(v) if (cv is None or c not in CLSACTIVE or cv == v) else f'{v}≠cls{cv}'
        cells.append(cell)
    tc = [str(taps[t[0]]) if t[0] in taps else '·' for t in TAPCOLS]
    row = f'| {name} | ' + ' | '.join(cells) + ' | ' + ' | '.join(tc) + f' | {extra if extra is not None else ""} {note} |'
    ROWS.append(row); print(row)
    return r

def header():
    h = '| case | ' + ' | '.join(COLS) + ' | ' + ' | '.join(t[0] for t in TAPCOLS) + ' | result |'
    print(h); print('|' + '---|' * (len(COLS) + len(TAPCOLS) + 2)); ROWS.append(h)

def arpdetails(r, labels):
    for l in labels:
        if l in LINKS and r[l]['arp']:
            print(f'      {l:8s} last ARP frame: skb->sk={"yes" if r[l]["arpsk"] else "no"} netns_cookie={r[l]["arpck"]}')
def details(r, labels):
    for l in labels:
        if l in LINKS and r[l]['magic']:
            d = r[l]; print(f'      {l:8s} last magic frame: dst={d["dst"]} src={d["src"]} skb->ifindex={d["ifx"]} '
                            f'ingress_ifindex={d["iif"]} pkt_type={d["pkttype"]} skb->sk={"yes" if d["sk"] else "no"} '
                            f'netns_cookie={d["cookie"]} skb_cgroup_id={d["cgid"]} mark={d["mark"]:#x}')

CLSACTIVE = set(h[0] for h in HOOKS if h[4])

# ================================================================ main
os.makedirs(CG, exist_ok=True)
with open(f'{CG}/cgroup.procs', 'w') as f: f.write(str(os.getpid()))
CGID = os.stat(CG).st_ino
def _mac(ns, dev):
    return subprocess.run(f'ip netns exec {ns} cat /sys/class/net/{dev}/address', shell=True,
                          capture_output=True, text=True).stdout.strip()
print(f'\n## mode={MODE}')
MAC['C1'] = _mac('mvc1', 'eth0')   # passthru: the child inherits the parent's MAC
print(f'netns cookies: host(init_net)={cookie_of(None)} mvlan={cookie_of("mvlan")} mvc1={cookie_of("mvc1")}'
      + ('' if MODE == 'passthru' else f' mvc2={cookie_of("mvc2")}') + f'; sender cgroup id (mvhtest)={CGID}')
attach_all()
print('attached TCX links:', ', '.join(LINKS)); print('clsact cls_bpf filters on:', ', '.join(sorted(CLSACTIVE)))
print('legend: each cell = number of 1000-byte frames counted by the TCX program at that hook (cls_bpf under clsact shown only if it differs); rx@X = 1000-byte frames an AF_PACKET tap on X received (ground truth delivery); · = hook/device absent')
header()
ALL = COLS
m = lambda name, fn, **k: measure(name, fn, **k)

m('0 idle 1s (all frames)', lambda: time.sleep(1), what='all')
r = m('1a mvc1→router UDP x5', lambda: udp('mvc1', '198.18.10.1')); details(r, ['c1.eg', 'par.eg', 'lan.in'])
r = m('1b router→mvc1 UDP x5', lambda: udp('mvlan', '198.18.10.11')); details(r, ['lan.eg', 'par.in', 'c1.in'])
m('1c mvc1 ping router x3 (req+rep)', lambda: f'replies={ping("mvc1", "198.18.10.1")}')
r = m('1d router ping mvc1 x3 (mvc1 kernel replies)', lambda: f'replies={ping("mvlan", "198.18.10.11")}'); details(r, ['c1.eg', 'par.eg'])
if MODE == 'bridge':
    run('ip netns exec mvc1 sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.send_redirects=0 net.ipv4.conf.eth0.send_redirects=0')
    run('ip netns exec mvc2 ip route add 203.0.113.7/32 via 198.18.10.11')
    r = m('1e mvc2→203.0.113.7 routed via mvc1 (mvc1 forwards) x5', lambda: udp('mvc2', '203.0.113.7'))
    details(r, ['c2.eg', 'par.in', 'c1.in', 'c1.eg', 'par.eg'])
    run('ip netns exec mvc2 ip route del 203.0.113.7/32 via 198.18.10.11')
    run('ip netns exec mvc1 sysctl -qw net.ipv4.ip_forward=0')
m('2a mvc1→203.0.113.7 UDP x5', lambda: udp('mvc1', '203.0.113.7'))
m('2b mvc1 ping 203.0.113.7 x3', lambda: f'replies={ping("mvc1", "203.0.113.7")}')
m('2c mvc1→fd00:10::1 UDP6 x5', lambda: udp('mvc1', 'fd00:10::1', v6=True))
if MODE != 'passthru':
    r = m('3a mvc1→mvc2 UDP x5', lambda: udp('mvc1', '198.18.10.12')); details(r, ['c1.eg', 'par.in', 'c2.in', 'par.eg'])
    m('3b mvc2→mvc1 UDP x5', lambda: udp('mvc2', '198.18.10.11'))
    m('3c mvc1 ping mvc2 x3', lambda: f'replies={ping("mvc1", "198.18.10.12")}')
    m('3d mvc1 ping6 mvc2 x3', lambda: f'replies={ping("mvc1", "fd00:10::12", v6=True)}')
# broadcast / multicast
def arp_case():
    run('ip netns exec mvc1 ip neigh del 198.18.10.1 dev eth0', check=False, show=False)
    udp('mvc1', '198.18.10.1', n=1); time.sleep(0.3)
    run(f'ip netns exec mvc1 ip neigh replace 198.18.10.1 lladdr {MAC["LAN"]} dev eth0 nud permanent', show=False)
r = m('4a ARP: mvc1 resolves router (ARP frames)', arp_case, what='arp', note='(counts ARP frames: who-has bcast + reply)')
arpdetails(r, ['c1.eg', 'par.eg', 'par.in', 'c1.in'])
if MODE != 'passthru':
    def arp2():
        run('ip netns exec mvc1 ip neigh del 198.18.10.12 dev eth0', check=False, show=False)
        udp('mvc1', '198.18.10.12', n=1); time.sleep(0.3)
        run(f'ip netns exec mvc1 ip neigh replace 198.18.10.12 lladdr {MAC["C2"]} dev eth0 nud permanent', show=False)
    m('4b ARP: mvc1 resolves mvc2 (ARP frames)', arp2, what='arp')
m('4c UDP → 198.18.10.255 x5', lambda: udp('mvc1', '198.18.10.255', bcast=True))
m('4d UDP → 255.255.255.255 x5', lambda: udp('mvc1', '255.255.255.255', bcast=True))
m('4e UDP6 → ff02::1%eth0 x5', lambda: udp('mvc1', 'ff02::1', v6=True, scope='eth0'))
m('4f ping6 ff02::1%eth0 x3 (req+replies)', lambda: f'replies={ping("mvc1", "ff02::1", v6=True, scope="eth0")}')
def nd_case():
    run('ip netns exec mvc1 ip neigh del fd00:10::1 dev eth0', check=False, show=False)
    udp('mvc1', 'fd00:10::1', v6=True, n=1); time.sleep(0.3)
    run(f'ip netns exec mvc1 ip neigh replace fd00:10::1 lladdr {MAC["LAN"]} dev eth0 nud permanent', show=False)
m('4g ND: mvc1 resolves fd00:10::1 (all IPv6 frames)', nd_case, what='v6', note='(NS mcast + NA + 1 UDP6; includes any MLD noise)')
m('4h router→198.18.10.255 UDP x5', lambda: udp('mvlan', '198.18.10.255', bcast=True))
m('4i router→ff02::1 UDP6 x5', lambda: udp('mvlan', 'ff02::1', v6=True, scope='lanbr'))
# raw frames, with and without qdisc bypass
peers = [('LAN', 'C1'), ('C2', 'C1'), ('BC', 'C1'), ('PAR', 'C1'), ('01:00:5e:00:00:01', 'C1'),
         ('LAN', 'PAR'), ('C2', 'RND'), ('LAN', 'C2'), ('BC', 'C2'), ('C2', 'LAN'), ('LAN', 'RND')]
if MODE == 'passthru': peers = [p for p in peers if 'C2' not in p]
for byp in (True, False):
    for dst, src in peers:
        r = m(f'{"5" if byp else "6"} raw{" BYPASS" if byp else ""} dst={dst} src={src}',
              lambda: raw('mvc1', 'eth0', dst, src, bypass=byp))
        if byp and dst in ('LAN', 'C2') and src in ('C1', 'RND'): details(r, ['par.eg', 'par.in', 'c2.in'])
if MODE != 'passthru':
    m('5x raw BYPASS from mvc2 dst=C1 src=C2', lambda: raw('mvc2', 'eth0', 'C1', 'C2'))
if MODE == 'bridge':
    # the same bypass send from a process holding ONLY CAP_NET_RAW (Docker's default set includes NET_RAW)
    snip = ("import socket;s=socket.socket(socket.AF_PACKET,socket.SOCK_RAW,socket.htons(0x88b5));s.bind(('eth0',0));"
            "s.setsockopt(263,20,1);f=bytes.fromhex('0242c6120a0c0242c6120a0b88b5')+b'R'*986;"
            "[s.send(f) for _ in range(5)];print('sent 5 with PACKET_QDISC_BYPASS')")
    m('5n raw BYPASS dst=C2, sender has only CAP_NET_RAW', lambda: run(
        f'ip netns exec mvc1 setpriv --bounding-set -all,+net_raw --inh-caps -all python3 -c "{snip}"')[1])
# LAN-originated raw frames
m('L1 LAN raw dst=C1 src=LAN', lambda: raw('mvlan', 'lan0', 'C1', 'LAN', bypass=False))
m('L2 LAN raw dst=BC src=LAN', lambda: raw('mvlan', 'lan0', 'BC', 'LAN', bypass=False))
m('L3 LAN raw dst=BC src=C1 (forged)', lambda: raw('mvlan', 'lan0', 'BC', 'C1', bypass=False))
m('L4 LAN raw dst=PAR src=LAN', lambda: raw('mvlan', 'lan0', 'PAR', 'LAN', bypass=False))

def with_drop(label, fn):
    i = [h[0] for h in HOOKS].index(label); _, ns, dev, eg, _ = HOOKS[i]
    pfd = prog_load(MAPFD, 47, 'mvh_drop', ret=2)             # TCX_DROP == TC_ACT_SHOT == 2
    lfd = tcx_attach(ns, dev, pfd, eg); os.close(pfd)          # appended after the counting program
    try: return fn()
    finally: os.close(lfd)
if MODE in ('bridge', 'private', 'vepa'):
    print('\n### enforcement check: a TCX program returning DROP at one hook (counters run first)')
    m('E1 DROP@par.in; raw BYPASS mvc1 dst=C2', lambda: with_drop('par.in', lambda: raw('mvc1', 'eth0', 'C2', 'C1')))
    m('E2 DROP@par.eg; raw BYPASS mvc1 dst=LAN', lambda: with_drop('par.eg', lambda: raw('mvc1', 'eth0', 'LAN', 'C1')))
    m('E3 DROP@par.eg; raw BYPASS mvc1 dst=BC', lambda: with_drop('par.eg', lambda: raw('mvc1', 'eth0', 'BC', 'C1')))
    m('E4 DROP@c2.in; raw BYPASS mvc1 dst=BC', lambda: with_drop('c2.in', lambda: raw('mvc1', 'eth0', 'BC', 'C1')))
    m('E5 DROP@par.in; LAN raw dst=BC', lambda: with_drop('par.in', lambda: raw('mvlan', 'lan0', 'BC', 'LAN', bypass=False)))
    m('E6 DROP@par.in; LAN raw dst=C1', lambda: with_drop('par.in', lambda: raw('mvlan', 'lan0', 'C1', 'LAN', bypass=False)))
    m('E7 DROP@c1.eg; raw BYPASS mvc1 dst=LAN', lambda: with_drop('c1.eg', lambda: raw('mvc1', 'eth0', 'LAN', 'C1')))
    m('E8 DROP@c1.eg; raw (no bypass) mvc1 dst=LAN', lambda: with_drop('c1.eg', lambda: raw('mvc1', 'eth0', 'LAN', 'C1', bypass=False)))

if MODE == 'bridge':
    print('\n### skb->mark stamped by a TCX program at c1.eg (mark=0x4e570001): where does it survive?')
    pfd = prog_load(MAPFD, 46, 'mvh_stamp', stamp=0x4e570001)
    slink = tcx_attach('mvc1', 'eth0', pfd, True); os.close(pfd)
    r = m('M1 stamp@c1.eg; mvc1→router UDP x5', lambda: udp('mvc1', '198.18.10.1')); details(r, ['par.eg', 'lan.in'])
    r = m('M2 stamp@c1.eg; raw BYPASS dst=LAN', lambda: raw('mvc1', 'eth0', 'LAN', 'C1')); details(r, ['par.eg'])
    r = m('M3 stamp@c1.eg; mvc1→mvc2 UDP x5', lambda: udp('mvc1', '198.18.10.12')); details(r, ['par.in', 'c2.in'])
    r = m('M4 stamp@c1.eg; mvc1→198.18.10.255 UDP x5', lambda: udp('mvc1', '198.18.10.255', bcast=True)); details(r, ['par.eg', 'c2.in'])
    os.close(slink)

if MODE == 'bridge':
    print('\n### case 7: host namespace <-> mvc1')
    run('ip addr add 198.18.10.2/24 dev mvpar')
    run(f'ip neigh replace 198.18.10.11 lladdr {MAC["C1"]} dev mvpar nud permanent')
    m('7a host(mvpar 198.18.10.2)→mvc1 UDP x5', lambda: udp(None, '198.18.10.11'))
    m('7b host ping mvc1 via mvpar x3', lambda: f'replies={ping(None, "198.18.10.11")}')
    run('ip addr del 198.18.10.2/24 dev mvpar')
    run(f'ip link add mvshim link mvpar address {MAC["SHIM"]} type macvlan mode bridge')
    run('sysctl -qw net.ipv6.conf.mvshim.disable_ipv6=1')
    run('ip link set mvshim up'); run('ip addr add 198.18.10.3/32 dev mvshim')
    run('ip route add 198.18.10.11/32 dev mvshim')
    run(f'ip neigh replace 198.18.10.11 lladdr {MAC["C1"]} dev mvshim nud permanent')
    run(f'ip netns exec mvc1 ip neigh replace 198.18.10.3 lladdr {MAC["SHIM"]} dev eth0 nud permanent')
    attach_all()
    r = m('7c host(shim .3)→mvc1 UDP x5', lambda: udp(None, '198.18.10.11')); details(r, ['shim.eg', 'par.in', 'c1.in'])
    r = m('7d mvc1→host shim UDP x5', lambda: udp('mvc1', '198.18.10.3')); details(r, ['c1.eg', 'par.in', 'shim.in'])
    m('7e host(shim) ping mvc1 x3', lambda: f'replies={ping(None, "198.18.10.11")}')
    m('7f raw BYPASS mvc1 dst=SHIM', lambda: raw('mvc1', 'eth0', 'SHIM', 'C1'))
    m('7g mvc1→broadcast 198.18.10.255 (shim present)', lambda: udp('mvc1', '198.18.10.255', bcast=True))
    run('ip link del mvshim'); detach('shim.eg'); detach('shim.in'); TAPS.pop('rx@shim', None)

    print('\n### case 9: what a CAP_NET_ADMIN process inside mvc1 can do')
    run('ip netns exec mvc1 tc qdisc show dev eth0')
    run('ip netns exec mvc1 tc filter show dev eth0 ingress')
    run('ip netns exec mvc1 tc filter show dev eth0 egress')
    run('ip netns exec mvc1 ip -d link show eth0')
    run('nsenter --net=/run/netns/mvc1 bpftool net show dev eth0', check=False)
    # BPF_PROG_QUERY for TCX (needs bpf(); Docker's default seccomp profile denies bpf() without CAP_SYS_ADMIN/CAP_BPF)
    with InNs('mvc1'):
        idx = socket.if_nametoindex('eth0')
        for at, nm in ((TCX_IN, 'tcx_ingress'), (TCX_EG, 'tcx_egress')):
            ids = ctypes.create_string_buffer(64); lids = ctypes.create_string_buffer(64)
            try:
                _, out = bpf(16, struct.pack('<IIIIQIIQQQQ', idx, at, 0, 0, ctypes.addressof(ids), 16, 0, 0, ctypes.addressof(lids), 0, 0))
                cnt = struct.unpack_from('<I', out, 24)[0]
                print(f'      in mvc1: BPF_PROG_QUERY {nm} on eth0 -> {cnt} attachment(s), prog ids {struct.unpack_from("<%dI" % cnt, ids.raw)}, link ids {struct.unpack_from("<%dI" % cnt, lids.raw)}')
            except OSError as e: print(f'      in mvc1: BPF_PROG_QUERY {nm}: {e}')
        # try detaching by prog detach (no prog fd: "detach whatever") — links must refuse
        try:
            bpf(9, struct.pack('<IIII', idx, 0, TCX_IN, 0)); print('      in mvc1: BPF_PROG_DETACH tcx_ingress: succeeded (!)')
        except OSError as e: print(f'      in mvc1: BPF_PROG_DETACH tcx_ingress (no fd): {e}')
    # same queries from a process whose capabilities are only NET_ADMIN+NET_RAW (no SYS_ADMIN/BPF)
    snippet = ("import ctypes,struct,socket,os;l=ctypes.CDLL(None,use_errno=True);"
               "idx=socket.if_nametoindex('eth0');ids=ctypes.create_string_buffer(64);"
               "a=ctypes.create_string_buffer(struct.pack('<IIIIQIIQQQQ',idx,46,0,0,ctypes.addressof(ids),16,0,0,0,0,0),144);"
               "r=l.syscall(321,16,a,144);print('PROG_QUERY tcx_ingress:',r,os.strerror(ctypes.get_errno()) if r<0 else struct.unpack_from('<I',a.raw,24));"
               "b=ctypes.create_string_buffer(struct.pack('<I',1),144);"
               "r=l.syscall(321,30,b,144);print('LINK_GET_FD_BY_ID:',r,os.strerror(ctypes.get_errno()) if r<0 else 'ok')")
    run(f'ip netns exec mvc1 setpriv --bounding-set -all,+net_admin,+net_raw --inh-caps -all python3 -c "{snippet}"', check=False)
    run('ip netns exec mvc1 setpriv --bounding-set -all,+net_admin,+net_raw --inh-caps -all tc qdisc show dev eth0', check=False)
    # a fully privileged root (CAP_SYS_ADMIN) inside the netns CAN detach a TCX link: by id -> fd -> LINK_DETACH
    with InNs('mvc1'):
        idx = socket.if_nametoindex('eth0')
        ids = ctypes.create_string_buffer(64); lids = ctypes.create_string_buffer(64)
        _, out = bpf(16, struct.pack('<IIIIQIIQQQQ', idx, TCX_IN, 0, 0, ctypes.addressof(ids), 16, 0, 0, ctypes.addressof(lids), 0, 0))
        lid = struct.unpack_from('<I', lids.raw, 0)[0]
        try:
            lfd, _ = bpf(30, struct.pack('<I', lid))            # BPF_LINK_GET_FD_BY_ID
            bpf(34, struct.pack('<I', lfd)); os.close(lfd)       # BPF_LINK_DETACH
            print(f'      in mvc1 as full root: BPF_LINK_GET_FD_BY_ID({lid}) + BPF_LINK_DETACH -> detached')
        except OSError as e: print(f'      in mvc1 as full root: link detach: {e}')
    m('9- after LINK_DETACH of c1.in: router→mvc1 UDP x5', lambda: udp('mvlan', '198.18.10.11'))
    detach('c1.in'); attach_hook([h[0] for h in HOOKS].index('c1.in'), with_cls=False)
    run('ip netns exec mvc1 setpriv --bounding-set -all,+net_admin,+net_raw --inh-caps -all tc qdisc del dev eth0 clsact')
    CLSACTIVE.discard('c1.in'); CLSACTIVE.discard('c1.eg')
    r = m('9a after in-ns "tc qdisc del clsact": mvc1→router UDP x5', lambda: udp('mvc1', '198.18.10.1'))
    print(f'      c1.eg TCX={r["c1.eg"]["magic"]} clsact={r["c1.eg"]["cls_magic"]} (clsact filter gone, TCX link kept)')
    NA = 'ip netns exec mvc1 setpriv --bounding-set -all,+net_admin,+net_raw --inh-caps -all '
    run(NA + 'ip link set eth0 address ' + MAC['NEW'])
    run(f'ip netns exec mvlan ip neigh replace 198.18.10.11 lladdr {MAC["NEW"]} dev lanbr nud permanent')
    run(f'ip netns exec mvc2 ip neigh replace 198.18.10.11 lladdr {MAC["NEW"]} dev eth0 nud permanent')
    r = m('9b new MAC: mvc1→router UDP x5', lambda: udp('mvc1', '198.18.10.1')); details(r, ['c1.eg', 'par.eg', 'lan.in'])
    r = m('9c new MAC: router→mvc1 UDP x5', lambda: udp('mvlan', '198.18.10.11')); details(r, ['par.in', 'c1.in'])
    m('9d new MAC: mvc2→mvc1 UDP x5', lambda: udp('mvc2', '198.18.10.11'))
    run(NA + 'ip link set eth0 address ' + MAC['C2'], check=False)       # a sibling's MAC
    run(NA + 'ip link set eth0 address ' + MAC['PAR'], check=False)      # the parent's MAC
    run(NA + 'ip link set eth0 address ' + MAC['LAN'], check=False)      # the LAN router's MAC
    r = m('9j mvc1 owns router MAC: mvc2→router 198.18.10.1 UDP x5', lambda: udp('mvc2', '198.18.10.1'))
    details(r, ['c2.eg', 'par.in', 'c1.in'])
    run(NA + 'ip link set eth0 address ' + MAC['NEW'])
    # a MAC change flushes mvc1's neighbour entries (even 'permanent' ones): put them back so 9e is not an ARP test
    run(f'ip netns exec mvc1 ip neigh replace 198.18.10.12 lladdr {MAC["C2"]} dev eth0 nud permanent')
    run(f'ip netns exec mvc1 ip neigh replace 198.18.10.1 lladdr {MAC["LAN"]} dev eth0 nud permanent')
    run('ip netns exec mvc1 ip neigh show dev eth0')
    # change macvlan mode from inside
    run(NA + 'ip link set eth0 type macvlan mode vepa', check=False)
    run('ip netns exec mvc1 ip -d link show eth0 | grep -o "macvlan mode [a-z]*"', check=False)
    m('9e after in-ns mode→vepa: mvc1→mvc2 UDP x5', lambda: udp('mvc1', '198.18.10.12'))
    run('ip netns exec mvc1 ip link set eth0 type macvlan mode bridge', check=False)
    # nested macvlan created from inside the container: which lower device does it get?
    rc, _ = run(NA + 'ip link add eth1 link eth0 address 02:42:c6:12:0a:77 type macvlan mode bridge', check=False)
    if rc == 0:
        run('ip netns exec mvc1 ip -d link show eth1')
        run('ip -d link show mvpar | head -1')
        run('ip netns exec mvc1 sysctl -qw net.ipv6.conf.eth1.disable_ipv6=1')
        run('ip netns exec mvc1 ip link set eth1 up')
        run('ip netns exec mvc1 ip addr add 198.18.10.21/32 dev eth1')
        run('ip netns exec mvc1 ip route add 198.18.10.1/32 dev eth1 src 198.18.10.21')
        run('ip netns exec mvc1 ip neigh replace 198.18.10.1 lladdr ' + MAC['LAN'] + ' dev eth1 nud permanent')
        run('ip netns exec mvlan ip neigh replace 198.18.10.21 lladdr 02:42:c6:12:0a:77 dev lanbr nud permanent')
        attach_all()
        r = m('9f in-ns nested macvlan eth1: mvc1(eth1)→router UDP x5', lambda: udp('mvc1', '198.18.10.1')); details(r, ['c1.eg', 'c1x.eg', 'par.eg'])
        m('9g router→mvc1 eth1 (198.18.10.21) UDP x5', lambda: udp('mvlan', '198.18.10.21'))
        m('9h raw BYPASS on eth1 dst=C2', lambda: raw('mvc1', 'eth1', 'C2', '02:42:c6:12:0a:77'))
        run('ip netns exec mvc1 ip link del eth1'); detach('c1x.eg'); detach('c1x.in'); TAPS.pop('rx@c1x', None)
    # macvlan "source" mode from inside: a receive-only sniffer keyed by source MAC
    rc, _ = run(NA + 'ip link add eth2 link eth0 type macvlan mode source', check=False)
    if rc == 0:
        run(NA + f'ip link set eth2 type macvlan macaddr add {MAC["LAN"]}')
        run('ip netns exec mvc1 sysctl -qw net.ipv6.conf.eth2.disable_ipv6=1')
        run('ip netns exec mvc1 ip link set eth2 up')
        run('ip netns exec mvc1 ip -d link show eth2')
        open_tap('rx@c1src', 'mvc1', 'eth2')
        TAPCOLS.append(('rx@c1src', 'mvc1', 'eth2'))
        m('9i router→mvc2 UDP x5 with mvc1:eth2 in source mode (src=router MAC)', lambda: udp('mvlan', '198.18.10.12'),
          note='[extra column before result = rx@mvc1:eth2, the source-mode sniffer]')
        run(NA + 'ip link set eth2 type macvlan mode source flag nodst', check=False)   # steal instead of copy
        run('ip netns exec mvc1 ip -d link show eth2 | grep -o "macvlan mode source[a-z ]*"', check=False)
        m('9k same with flag nodst on mvc1:eth2', lambda: udp('mvlan', '198.18.10.12'),
          note='[extra column before result = rx@mvc1:eth2, the source-mode sniffer]')
        TAPCOLS.pop(); TAPS.pop('rx@c1src', None)
        run('ip netns exec mvc1 ip link del eth2')
    run('ip netns exec mvc1 ip link set eth0 down')
    run('ip netns exec mvc1 ip link del eth0', check=False)
    run('ip -d link show mvpar | head -1')

for fd in list(LINKS.values()): os.close(fd)
with open('/sys/fs/cgroup/unified/cgroup.procs', 'w') as f: f.write(str(os.getpid()))
PYEOF

for mode in $MODES; do
    setup "$mode" || { echo "setup $mode failed"; teardown; continue; }
    python3 "$PY" "$mode" "$BPFFS" "$CG" || echo "python run for $mode failed (rc=$?)"
    teardown
done
echo "### leftovers check:"; ip netns list | grep -E '^(mvlan|mvc1|mvc2)( |$)' || echo "no mvlan/mvc1/mvc2 netns"
ip -br link | grep -E '^(mvpar|mvshim|mvtmp[12])[@ ]' || echo "no mvpar/mvshim/mvtmp* links in host ns"
