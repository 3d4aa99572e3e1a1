#!/usr/bin/env python3
"""Where a loaded BPF program spends its time, by source line.

`perf annotate` cannot disassemble a JIT-compiled BPF program without a perf
built against binutils' libopcodes (this machine's cannot), and this
machine's bpftool lacks libbfd for `prog dump jited`. The kernel still hands
out what is needed: the JIT image's address ranges (`jited_ksyms`,
`jited_func_lens`) and, for programs with BTF line info (netwatch's have it),
the JIT address of every line-info record (`jited_line_info`), whose
instruction offsets `bpftool prog dump xlated` prints beside the Rust source
line. This script joins those with perf's sample addresses.

Usage (as root, while the programs are still loaded):

  # a load that runs the programs, e.g. the live-cost measurements:
  target/release/bench-throughput --live-only --live-secs 20 &
  perf record -a -F 25000 -o /tmp/bpf.data -- sleep 8
  docs/measurements/bpf-lines.py /tmp/bpf.data from_container to_container

It prints, per loaded program of each name, how many samples landed in it
and the source lines with the most. Samples are CPU-clock ones (this VM has
no PMU), so a line's share also holds the stalls of the loads before it.
Measured with it (Linux 6.18, TCP through a veth): `from_container`'s
samples spread over the whole program, 17% in its entry, 13% at the map
lookups, no line above 6% else.
"""

import bisect
import collections
import ctypes
import json
import os
import re
import struct
import subprocess
import sys

SYS_BPF = 321  # x86_64
BPF_PROG_GET_FD_BY_ID = 13
BPF_OBJ_GET_INFO_BY_FD = 15
# struct bpf_prog_info (include/uapi/linux/bpf.h): the fields used here.
INFO_SIZE = 232
OFF_NR_JITED_KSYMS = 104
OFF_NR_JITED_FUNC_LENS = 108
OFF_JITED_KSYMS = 112
OFF_JITED_FUNC_LENS = 120
OFF_NR_LINE_INFO = 148
OFF_LINE_INFO = 152
OFF_JITED_LINE_INFO = 160
OFF_NR_JITED_LINE_INFO = 168  # then line_info_rec_size, jited_line_info_rec_size

libc = ctypes.CDLL(None, use_errno=True)


def bpf(cmd, attr):
    buf = ctypes.create_string_buffer(bytes(attr), len(attr))
    ret = libc.syscall(SYS_BPF, cmd, buf, len(attr))
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return ret


def prog_info(fd, info):
    buf = ctypes.create_string_buffer(bytes(info), INFO_SIZE)
    attr = bytearray(16)
    struct.pack_into("IIQ", attr, 0, fd, INFO_SIZE, ctypes.addressof(buf))
    bpf(BPF_OBJ_GET_INFO_BY_FD, attr)
    return bytearray(buf.raw)


def jit_layout(prog_id):
    """[(start, length)] of the program's functions and
    [(jit address, instruction offset)] of its line-info records."""
    attr = bytearray(16)
    struct.pack_into("I", attr, 0, prog_id)
    fd = bpf(BPF_PROG_GET_FD_BY_ID, attr)
    try:
        first = prog_info(fd, bytearray(INFO_SIZE))
        (nr_ksyms, nr_lens) = struct.unpack_from("II", first, OFF_NR_JITED_KSYMS)
        (nr_lines,) = struct.unpack_from("I", first, OFF_NR_LINE_INFO)
        nr_jlines, line_rec, jline_rec = struct.unpack_from("III", first, OFF_NR_JITED_LINE_INFO)
        ksyms = ctypes.create_string_buffer(8 * nr_ksyms)
        lens = ctypes.create_string_buffer(4 * nr_lens)
        lines = ctypes.create_string_buffer(max(1, nr_lines * line_rec))
        jlines = ctypes.create_string_buffer(max(1, nr_jlines * jline_rec))
        ask = bytearray(INFO_SIZE)
        struct.pack_into("II", ask, OFF_NR_JITED_KSYMS, nr_ksyms, nr_lens)
        struct.pack_into("QQ", ask, OFF_JITED_KSYMS, ctypes.addressof(ksyms), ctypes.addressof(lens))
        struct.pack_into("I", ask, OFF_NR_LINE_INFO, nr_lines)
        struct.pack_into("QQ", ask, OFF_LINE_INFO, ctypes.addressof(lines), ctypes.addressof(jlines))
        struct.pack_into("III", ask, OFF_NR_JITED_LINE_INFO, nr_jlines, line_rec, jline_rec)
        prog_info(fd, ask)
    finally:
        os.close(fd)
    funcs = list(zip(struct.unpack_from(f"{nr_ksyms}Q", ksyms),
                     struct.unpack_from(f"{nr_lens}I", lens)))
    records = []
    for i in range(min(nr_lines, nr_jlines)):
        (insn_off,) = struct.unpack_from("I", lines, i * line_rec)
        (addr,) = struct.unpack_from("Q", jlines, i * jline_rec)
        records.append((addr, insn_off))
    records.sort()
    return funcs, records


def source_lines(prog_id):
    """{instruction offset: the source line bpftool prints above it}."""
    out = subprocess.run(["bpftool", "prog", "dump", "xlated", "id", str(prog_id)],
                         capture_output=True, text=True, check=True).stdout
    lines, current = {}, "?"
    for line in out.splitlines():
        if line.startswith(";"):
            current = line[1:].strip()
        else:
            m = re.match(r"\s*(\d+):", line)
            if m:
                lines[int(m.group(1))] = current
    return lines


def sample_addresses(perf_data):
    out = subprocess.run(["perf", "script", "-i", perf_data, "-F", "ip"],
                         capture_output=True, text=True, check=True).stdout
    counts = collections.Counter()
    for word in out.split():
        try:
            counts[int(word, 16)] += 1
        except ValueError:
            pass
    return counts


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    perf_data, names = sys.argv[1], sys.argv[2:]
    progs = json.loads(subprocess.run(["bpftool", "-j", "prog", "show"],
                                      capture_output=True, text=True, check=True).stdout)
    samples = sample_addresses(perf_data)
    total = sum(samples.values())
    for prog in progs:
        if prog.get("name") not in names:
            continue
        try:
            funcs, records = jit_layout(prog["id"])
        except FileNotFoundError:
            print(f"== {prog['name']} (id {prog['id']}): unloaded meanwhile")
            continue
        if not records:
            print(f"== {prog['name']} (id {prog['id']}): no line info")
            continue
        source = source_lines(prog["id"])
        addrs = [addr for addr, _ in records]
        per_line = collections.Counter()
        inside = 0
        for ip, n in samples.items():
            if any(start <= ip < start + length for start, length in funcs):
                at = bisect.bisect_right(addrs, ip) - 1
                if at >= 0:
                    per_line[source.get(records[at][1], "?")] += n
                    inside += n
        print(f"== {prog['name']} (id {prog['id']}): {inside} of {total} samples")
        for line, n in per_line.most_common(25):
            print(f"{n:7} {100 * n / max(inside, 1):5.1f}%  {line[:100]}")


if __name__ == "__main__":
    main()
