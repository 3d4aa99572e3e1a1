#!/usr/bin/env python3
"""Netlink-level topology of a private dockerd's namespaces (helper of capture.sh).

Subcommands (run as root in the host network namespace):

  nwtopo.py nsid PATH...            (run *inside* a namespace via nsenter) print
                                    {path: nsid} as the current namespace sees
                                    each namespace file (RTM_GETNSID + NETNSA_FD)
  nwtopo.py manifest ROOT SOCK EXTRA_JSON
                                    list the namespaces to look at: the host's,
                                    every file in ROOT/exec/netns (named after
                                    the container / overlay network behind it),
                                    every running container's /proc/PID/ns/net,
                                    plus EXTRA_JSON ({label: path})
  nwtopo.py topo MANIFEST OUTJSON   interfaces of each namespace, veth peers and
                                    macvlan lowers resolved to the namespace they
                                    live in (by link-netnsid -> nsid map), ifindex
                                    collisions with the host namespace; prints
                                    markdown, writes JSON
  nwtopo.py snap MANIFEST OUTJSON   per-interface packet counters of each namespace
  nwtopo.py diff A B                interfaces whose counters moved between A and B

Nothing here sends traffic or changes anything: it only reads (ip -j link, RTM_GETNSID).
"""

import json
import os
import socket
import struct
import subprocess
import sys

RTM_NEWNSID, RTM_GETNSID = 88, 90
NLM_F_REQUEST = 1
NLMSG_ERROR = 2
NETNSA_NSID, NETNSA_FD = 1, 3


def getnsid(sock, fd, seq):
    body = struct.pack("Bxxx", socket.AF_UNSPEC) + struct.pack("HHI", 8, NETNSA_FD, fd)
    hdr = struct.pack("IHHII", 16 + len(body), RTM_GETNSID, NLM_F_REQUEST, seq, 0)
    sock.send(hdr + body)
    data = sock.recv(65536)
    length, typ, _flags, _seq, _pid = struct.unpack_from("IHHII", data, 0)
    if typ == NLMSG_ERROR:
        return {"error": struct.unpack_from("i", data, 16)[0]}
    off = 16 + 4
    while off + 4 <= length:
        alen, atyp = struct.unpack_from("HH", data, off)
        if atyp == NETNSA_NSID:
            return struct.unpack_from("i", data, off + 4)[0]
        if alen < 4:
            break
        off += (alen + 3) & ~3
    return None


def cmd_nsid(paths):
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)  # NETLINK_ROUTE
    sock.bind((0, 0))
    me = os.stat("/proc/self/ns/net").st_ino
    out = {}
    for i, p in enumerate(paths):
        try:
            if os.stat(p).st_ino == me:
                out[p] = "self"
                continue
            fd = os.open(p, os.O_RDONLY)
        except OSError as e:
            out[p] = {"error": str(e)}
            continue
        try:
            out[p] = getnsid(sock, fd, i + 1)
        finally:
            os.close(fd)
    print(json.dumps(out))


def api(sock, path):
    raw = subprocess.run(
        ["curl", "-sS", "--unix-socket", sock, "http://d/v1.41" + path],
        check=True, capture_output=True).stdout
    return json.loads(raw)


def cmd_manifest(root, sock, extra_json):
    extra = json.loads(extra_json)
    # "host": a path into the host namespace that outlives this process (the
    # caller's /proc/PID/ns/net); it comes first.
    entries = [{"label": "host", "path": extra.pop("host", "/proc/1/ns/net")}]
    for label, path in extra.items():
        entries.append({"label": label, "path": path})
    containers = api(sock, "/containers/json")
    networks = api(sock, "/networks")
    by_sandbox = {}
    for c in containers:
        info = api(sock, "/containers/%s/json" % c["Id"])
        name = info["Name"].lstrip("/")
        key = info["NetworkSettings"].get("SandboxKey") or ""
        if key:
            by_sandbox[key] = name
        pid = info["State"].get("Pid") or 0
        if pid:
            entries.append({"label": "container:" + name, "path": "/proc/%d/ns/net" % pid,
                            "sandbox_key": key})
    netdir = os.path.join(root, "exec", "netns")
    for f in sorted(os.listdir(netdir)) if os.path.isdir(netdir) else []:
        path = os.path.join(netdir, f)
        if path in by_sandbox:
            label = "sandbox-of:" + by_sandbox[path]
        else:
            # overlay: "<n>-<first 10 hex of network id>"; "lb_<12 hex>"; ingress_sbox
            label = "netns-file:" + f
            for n in networks:
                nid = n["Id"]
                if "-" in f and nid.startswith(f.split("-", 1)[1]):
                    label = "overlay-sandbox-of-network:" + n["Name"]
                if f.startswith("lb_") and nid.startswith(f[3:]):
                    label = "lb-sandbox-of-network:" + n["Name"]
        entries.append({"label": label, "path": path})
    print(json.dumps(entries, indent=1))


def ip_json(path, *args):
    raw = subprocess.run(["nsenter", "--net=" + path, "ip", "-j", *args],
                         check=True, capture_output=True).stdout
    return json.loads(raw or b"[]")


def load_namespaces(manifest):
    entries = json.load(open(manifest))
    spaces = []  # merged by inode
    for e in entries:
        try:
            ino = os.stat(e["path"]).st_ino
        except OSError as err:
            print("# cannot stat %s: %s" % (e["path"], err), file=sys.stderr)
            continue
        for s in spaces:
            if s["inode"] == ino:
                s["labels"].append(e["label"])
                s["paths"].append(e["path"])
                break
        else:
            spaces.append({"inode": ino, "labels": [e["label"]], "paths": [e["path"]]})
    for s in spaces:
        s["name"] = " = ".join(s["labels"])
    return spaces


def cmd_topo(manifest, outjson):
    spaces = load_namespaces(manifest)
    all_paths = [s["paths"][0] for s in spaces]
    for s in spaces:
        s["links"] = ip_json(s["paths"][0], "-d", "link", "show")
        s["addrs"] = ip_json(s["paths"][0], "addr", "show")
        raw = subprocess.run(["nsenter", "--net=" + s["paths"][0], sys.executable,
                              os.path.abspath(__file__), "nsid", *all_paths],
                             check=True, capture_output=True).stdout
        ids = json.loads(raw)
        s["nsid_to_space"] = {}
        for other, p in zip(spaces, all_paths):
            v = ids.get(p)
            if isinstance(v, int) and v >= 0:
                s["nsid_to_space"][v] = other["name"]
    by_name = {s["name"]: s for s in spaces}
    host = spaces[0]
    host_idx = {l["ifindex"]: l["ifname"] for l in host["links"]}

    def find(space, ifindex):
        for l in by_name[space]["links"]:
            if l["ifindex"] == ifindex:
                return l
        return None

    rows = []
    for s in spaces:
        for l in s["links"]:
            kind = (l.get("linkinfo") or {}).get("info_kind", "")
            slave = (l.get("linkinfo") or {}).get("info_slave_kind", "")
            row = {
                "ns": s["name"], "ifindex": l["ifindex"], "ifname": l["ifname"],
                "kind": kind or ("loopback" if l.get("link_type") == "loopback" else ""),
                "master": l.get("master", ""), "slave_kind": slave,
                "mac": l.get("address", ""), "mtu": l.get("mtu"),
                "operstate": l.get("operstate"),
                "addrs": [],
            }
            for a in s["addrs"]:
                if a["ifindex"] == l["ifindex"]:
                    row["addrs"] = ["%s/%s" % (i["local"], i["prefixlen"]) for i in a.get("addr_info", [])]
            data = (l.get("linkinfo") or {}).get("info_data") or {}
            if kind == "macvlan":
                row["macvlan_mode"] = data.get("mode")
            if kind == "vxlan":
                row["vxlan"] = {k: data.get(k) for k in ("id", "port", "local", "learning", "proxy", "l2miss", "l3miss") if k in data}
            # peer (veth) / lower (macvlan)
            if "link_index" in l or "link" in l:
                if "link_netnsid" in l:
                    peer_ns = s["nsid_to_space"].get(l["link_netnsid"], "UNKNOWN nsid %s" % l["link_netnsid"])
                else:
                    peer_ns = s["name"]
                if "link_index" in l:
                    peer_idx = l["link_index"]
                else:
                    peer_idx = next((x["ifindex"] for x in s["links"] if x["ifname"] == l["link"]), None)
                row["peer_ns"] = peer_ns
                row["peer_ifindex"] = peer_idx
                row["link_netnsid"] = l.get("link_netnsid")
                if peer_ns in by_name and peer_idx is not None:
                    p = find(peer_ns, peer_idx)
                    if p:
                        row["peer_ifname"] = p["ifname"]
                        row["peer_master"] = p.get("master", "")
                        # cross-check for veths: the peer points back at us
                        if kind == "veth":
                            back = p.get("link_index")
                            if back is None and "link" in p:
                                back = next((x["ifindex"] for x in by_name[peer_ns]["links"] if x["ifname"] == p["link"]), None)
                            row["peer_points_back"] = back == l["ifindex"]
            if s is not host and l["ifindex"] in host_idx:
                row["same_ifindex_in_host_ns"] = host_idx[l["ifindex"]]
            rows.append(row)
    peers_in_host = {r["peer_ifindex"] for r in rows if r["ns"] != host["name"] and r.get("peer_ns") == host["name"]}
    json.dump({"namespaces": [{k: s[k] for k in ("name", "inode", "paths", "nsid_to_space")} for s in spaces],
               "host_ifindexes": host_idx,
               # host-namespace interfaces other than this capture's are left out
               "interfaces": [r for r in rows if r["ns"] != host["name"] or is_ours(r, peers_in_host)]},
              open(outjson, "w"), indent=1, default=str)

    print("## Namespaces (net ns inode; nsids they assign to the others)\n")
    for s in spaces:
        print("- `%s`: inode %s, paths %s; nsids: %s" % (
            s["name"], s["inode"], ", ".join("`%s`" % p for p in s["paths"]),
            ", ".join("%s -> %s" % (k, v) for k, v in sorted(s["nsid_to_space"].items())) or "none"))
    print("\n## Interfaces\n")
    print("| namespace | ifindex | name | kind | master | addresses | peer/lower: namespace, ifindex, name, its master | ifindex also used in host ns by |")
    print("|---|---|---|---|---|---|---|---|")
    ours = {r["peer_ifindex"] for r in rows if r["ns"] != host["name"] and r.get("peer_ns") == host["name"]}
    for r in rows:
        if r["ns"] == host["name"] and not is_ours(r, ours):
            continue
        peer = ""
        if r["kind"] == "vxlan" and "peer_ns" in r:
            # IFLA_LINK of a vxlan is itself; its link-netnsid names the
            # namespace of its UDP socket (the underlay), not a peer
            peer = "(no peer) underlay/UDP socket namespace: %s" % r["peer_ns"]
        elif "peer_ns" in r:
            peer = "%s, %s, %s, %s" % (r["peer_ns"], r["peer_ifindex"], r.get("peer_ifname", "?"),
                                       r.get("peer_master") or "-")
            if r.get("peer_points_back") is False:
                peer += " (PEER DOES NOT POINT BACK)"
        extra = ""
        if r.get("macvlan_mode"):
            extra = " mode " + r["macvlan_mode"]
        if r.get("vxlan"):
            extra = " " + json.dumps(r["vxlan"])
        print("| %s | %s | %s | %s%s | %s | %s | %s | %s |" % (
            r["ns"], r["ifindex"], r["ifname"], r["kind"], extra, r["master"] or "-",
            " ".join(r["addrs"]) or "-", peer or "-", r.get("same_ifindex_in_host_ns", "-")))
    print("\nHost namespace ifindexes (all): %s" % ", ".join("%s=%s" % kv for kv in sorted(host_idx.items())))


OUR_PREFIXES = ("nwcap", "nwsw", "nwmv", "nwmp", "nwiv", "docker_gwbridge", "vx-", "br-", "veth", "ov-")
OUR_NAMES = ("nwcap", "nwsw", "nwmv", "nwmp", "nwiv", "docker_gwbridge", "vx-", "ov-")


def is_ours(row, peer_idx):
    """Host-namespace rows worth showing: this capture's links, links whose
    peer is in one of its namespaces, and ports of its bridges."""
    return (row["ifname"].startswith(OUR_NAMES) or row["ifindex"] in peer_idx
            or row["master"].startswith(("docker_gwbridge", "nwcap")))


def cmd_snap(manifest, outjson):
    spaces = load_namespaces(manifest)
    snap = {}
    for i, s in enumerate(spaces):
        for l in ip_json(s["paths"][0], "-s", "link", "show"):
            if i == 0 and not l["ifname"].startswith(OUR_PREFIXES):
                continue  # host namespace: only interfaces of this capture
            st = l.get("stats64") or l.get("stats") or {}
            snap["%s|%s|%s" % (s["name"], l["ifindex"], l["ifname"])] = {
                "rx": st.get("rx", {}).get("packets", 0), "tx": st.get("tx", {}).get("packets", 0)}
    json.dump(snap, open(outjson, "w"), indent=1)


def cmd_diff(a, b):
    A, B = json.load(open(a)), json.load(open(b))
    print("| namespace | ifindex | name | rx packets + | tx packets + |")
    print("|---|---|---|---|---|")
    for k in sorted(B):
        before = A.get(k, {"rx": 0, "tx": 0})
        drx, dtx = B[k]["rx"] - before["rx"], B[k]["tx"] - before["tx"]
        if drx or dtx:
            ns, idx, name = k.split("|")
            print("| %s | %s | %s | %d | %d |" % (ns, idx, name, drx, dtx))


def cmd_monitor(log, topojson):
    """`ip -t -d monitor link all-nsid` records of this capture's links, one
    line each: where each link was created, moved (new-netnsid/new-ifindex),
    renamed, deleted."""
    import re
    topo = json.load(open(topojson))
    host = topo["namespaces"][0]
    ours = {int(k): v for k, v in host["nsid_to_space"].items()}
    # new-netnsid in a record is relative to the namespace the link LEAVES
    tables = {n["name"]: {int(k): v for k, v in n["nsid_to_space"].items()} for n in topo["namespaces"]}
    head = re.compile(r"^\[nsid (\w+)\](Deleted )?(\d+): ([^:@ ]+)(@[^:]+)?: ")
    records, cur = [], None
    for line in open(log, errors="replace"):
        if line.startswith("Timestamp:"):
            t = re.search(r"(\d\d:\d\d:\d\d) \d{4} (\d+) usec", line)
            stamp = "%s.%06d" % (t.group(1), int(t.group(2))) if t else line[10:].strip()
            continue
        m = head.match(line)
        if m:
            cur = {"time": stamp, "nsid": m.group(1), "deleted": bool(m.group(2)), "ifindex": int(m.group(3)),
                   "name": m.group(4), "link": (m.group(5) or "")[1:], "kind": "", "move": "", "master": ""}
            mm = re.search(r" master (\S+)", line)
            if mm:
                cur["master"] = mm.group(1)
            records.append(cur)
            continue
        if cur is None:
            continue
        mv = re.search(r"new-netnsid (\d+) new-ifindex (\d+)", line)
        if mv:
            src = host["name"] if cur["nsid"] == "current" else ours.get(int(cur["nsid"]))
            dest = tables.get(src, {}).get(int(mv.group(1)), "?")
            cur["move"] = "moved to %s as ifindex %s" % (dest, mv.group(2))
        word = line.strip().split(" ")[0]
        if word in ("veth", "macvlan", "vxlan", "bridge", "bridge_slave") and not cur["kind"]:
            cur["kind"] = word
    mine = ("nwcap", "nwsw", "nwmv", "nwmp", "nwmi", "nwiv", "docker_gwbridge", "veth", "vx-", "testvxlan")
    print("`master` is as `ip monitor` printed it: it resolves the master's ifindex in the HOST namespace, so")
    print("a port of an overlay sandbox's br0 (ifindex 2 there) shows up as `master ifb0` (ifindex 2 in the host).")
    print("`moved to ?`: the namespace the link left had no nsid for its destination when topology.json was")
    print("taken (at teardown Docker moves every link back to the host namespace before deleting it).")
    print("Only namespaces that have an nsid in the host namespace are reported by `ip monitor all-nsid`: a")
    print("sandbox's first events (e.g. br0's creation) happen before it has one and are missing.\n")
    print("| time | namespace (nsid in host ns) | event | ifindex | name@link | kind | master (name resolved in the host ns: wrong outside it) | move |")
    print("|---|---|---|---|---|---|---|---|")
    last = None
    for r in records:
        if r["nsid"] == "current":
            if not r["name"].startswith(mine):
                continue
            ns = "host"
        else:
            if int(r["nsid"]) not in ours:
                continue
            ns = "%s (%s)" % (ours[int(r["nsid"])], r["nsid"])
        key = (ns, r["deleted"], r["ifindex"], r["name"], r["link"], r["master"], r["move"])
        if key == last:
            continue
        last = key
        print("| %s | %s | %s | %s | %s%s | %s | %s | %s |" % (
            r["time"], ns, "DELLINK" if r["deleted"] else "NEWLINK", r["ifindex"], r["name"],
            "@" + r["link"] if r["link"] else "", r["kind"], r["master"] or "-", r["move"] or "-"))


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"nsid": lambda: cmd_nsid(args),
     "manifest": lambda: cmd_manifest(*args),
     "topo": lambda: cmd_topo(*args),
     "snap": lambda: cmd_snap(*args),
     "diff": lambda: cmd_diff(*args),
     "monitor": lambda: cmd_monitor(*args)}[cmd]()
