//! Floods from inside a container: many distinct UDP flows (or many packets
//! of a few) sent as raw frames from its network namespace, and the
//! agent's counters to account for them.
//!
//! Every frame a flood sends to a peer container carries a deliberately
//! wrong UDP checksum. netwatch does not look at L4 checksums, so each one
//! is a new flow to it like any other, but the peer's kernel discards it
//! silently (counted in its `Udp InCsumErrors`) instead of answering with
//! an ICMP port unreachable: the kernel rate-limits those, so answers would
//! open a varying number of flows of their own and no count could be exact.
//! The same counter tells exactly how many flood frames reached the peer.

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{
    packets::{Frame, Mac},
    rawframe::PacketSocket,
    reach::Netns,
};

/// Offsets in a frame built by [`FlowFrames`] (Ethernet, IPv4 without
/// options, UDP).
const IP_SRC: std::ops::Range<usize> = 26..30;
const IP_DST: std::ops::Range<usize> = 30..34;
const UDP: usize = 34;
const UDP_SRC_PORT: std::ops::Range<usize> = 34..36;
const UDP_DST_PORT: std::ops::Range<usize> = 36..38;
const UDP_CHECKSUM: std::ops::Range<usize> = 40..42;

/// One UDP frame from a source to a destination, re-addressed per flow in
/// place (no allocation per frame, so the sender is limited by the kernel,
/// not by the test).
pub struct FlowFrames {
    frame: Vec<u8>,
}

impl FlowFrames {
    /// From `src` (the sending container's MAC and address) to `dst_mac`
    /// and `dst_ip`, with `payload`.
    pub fn new(src: (Mac, Ipv4Addr), dst_mac: Mac, dst_ip: Ipv4Addr, payload: &[u8]) -> FlowFrames {
        let frame = Frame::eth(src.0, dst_mac)
            .ipv4(src.1, dst_ip)
            .udp(1, 1)
            .payload(payload)
            .build();
        assert_eq!(
            u16::from_be_bytes([frame[12], frame[13]]),
            0x0800,
            "an untagged IPv4 frame"
        );
        FlowFrames { frame }
    }

    /// The frame of flow (`src_port`, `dst_port`), with a UDP checksum that
    /// is wrong (and not zero, which would mean "no checksum").
    pub fn frame(&mut self, src_port: u16, dst_port: u16) -> &[u8] {
        self.frame[UDP_SRC_PORT].copy_from_slice(&src_port.to_be_bytes());
        self.frame[UDP_DST_PORT].copy_from_slice(&dst_port.to_be_bytes());
        self.frame[UDP_CHECKSUM].fill(0);
        let correct = udp_checksum(&self.frame);
        // Any value but the correct one and its one's complement twin.
        let wrong: u16 = if correct == 0x1234 { 0x4321 } else { 0x1234 };
        self.frame[UDP_CHECKSUM].copy_from_slice(&wrong.to_be_bytes());
        &self.frame
    }
}

/// The UDP checksum of an IPv4 frame whose checksum field is zero, as a
/// sender would write it (0 becomes 0xffff).
fn udp_checksum(frame: &[u8]) -> u16 {
    let udp = &frame[UDP..];
    let mut sum: u32 = 0;
    let mut add = |bytes: &[u8]| {
        for pair in bytes.chunks(2) {
            let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
            sum += u32::from(word);
        }
    };
    add(&frame[IP_SRC]);
    add(&frame[IP_DST]);
    add(&[0, 17]);
    add(&(udp.len() as u16).to_be_bytes());
    add(udp);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    match !(sum as u16) {
        0 => 0xffff,
        checksum => checksum,
    }
}

/// Flow `n`'s ports: source ports 1024..61024, then the next destination
/// port; every `n` below 60,000 × 64,000 is a distinct pair.
pub fn flow_ports(n: u64) -> (u16, u16) {
    let dst = 1 + n / 60_000;
    assert!(dst < 65_000, "ran out of distinct flows");
    (1024 + (n % 60_000) as u16, dst as u16)
}

/// Runs `f(i, n)` on `n` threads at once, thread `i` pinned to the `i`-th
/// CPU this process may use.
///
/// Why: the kernel's LRU map keeps the entries a CPU inserted on that CPU's
/// own pending list until that CPU next refills its free list, and only
/// evicts from the global lists (other CPUs' pending entries are never
/// taken). Entries inserted on one CPU survive any number of inserts on
/// another: a flow table is pushed through only by inserts on every CPU.
pub fn on_each_cpu(f: impl Fn(usize, usize) + Sync) {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills it.
    let mut allowed: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: the set is valid for the size given.
    let got = unsafe {
        libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &raw mut allowed)
    };
    assert_eq!(
        got,
        0,
        "sched_getaffinity: {}",
        std::io::Error::last_os_error()
    );
    let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `cpu` is below CPU_SETSIZE.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &allowed) })
        .collect();
    std::thread::scope(|scope| {
        let count = cpus.len();
        for (i, &cpu) in cpus.iter().enumerate() {
            let f = &f;
            scope.spawn(move || {
                // SAFETY: as above; the set names one CPU.
                let pinned = unsafe {
                    let mut one: libc::cpu_set_t = std::mem::zeroed();
                    libc::CPU_SET(cpu, &mut one);
                    libc::sched_setaffinity(
                        0,
                        std::mem::size_of::<libc::cpu_set_t>(),
                        &raw const one,
                    )
                };
                assert_eq!(
                    pinned,
                    0,
                    "pin a thread to CPU {cpu}: {}",
                    std::io::Error::last_os_error()
                );
                f(i, count);
            });
        }
    });
}

/// What a flood sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sent {
    pub allowed: u64,
    pub denied: u64,
}

/// Sends frames of flows `first..` as fast as one thread can, until
/// `duration` has passed: every `denied_every`-th from `denied`, the
/// others from `allowed`. Returns what was sent and the next unused flow
/// number. A frame the kernel refused to send is not counted.
pub fn flood(
    socket: &PacketSocket,
    allowed: &mut FlowFrames,
    denied: &mut FlowFrames,
    denied_every: u64,
    first: u64,
    duration: Duration,
) -> (Sent, u64) {
    let start = Instant::now();
    let mut sent = Sent::default();
    let mut n = first;
    while start.elapsed() < duration {
        // The clock is read once per batch: it costs as much as a send.
        for _ in 0..64 {
            let (src_port, dst_port) = flow_ports(n);
            let is_denied = n.is_multiple_of(denied_every);
            let frames = if is_denied {
                &mut *denied
            } else {
                &mut *allowed
            };
            if socket.send(frames.frame(src_port, dst_port)).is_ok() {
                if is_denied {
                    sent.denied += 1;
                } else {
                    sent.allowed += 1;
                }
            }
            n += 1;
        }
    }
    (sent, n)
}

/// `netwatch status -o json` of a test agent, the fields floods account
/// with.
#[derive(Clone, Debug, Default)]
pub struct AgentCounters {
    /// Packets forwarded, summed over every hook (kernel).
    pub forwarded: u64,
    /// Packets dropped per reason (kernel).
    pub drops: BTreeMap<String, u64>,
    /// Failed ring buffer reservations (kernel).
    pub ringbuf_lost: u64,
    /// The agent's pipeline: records read, malformed, evictions seen,
    /// flows summarised, flows kept one by one and the limit.
    pub records: u64,
    pub malformed: u64,
    pub kernel_evictions: u64,
    pub summarised: u64,
    pub tracked_flows: u64,
    pub flow_limit: u64,
    /// The kernel's flow table (from the pins): entries held, entries the
    /// programs inserted, and what the LRU evicted.
    pub table_entries: u64,
    pub table_inserted: u64,
    pub table_evicted: u64,
}

impl AgentCounters {
    /// Runs `binary status -o json` against the agent pinned under
    /// `pin_root` with its run directory `run_dir`; panics unless the
    /// agent's pipeline answered. Returns the counters and how long the
    /// command took.
    pub fn read(binary: &str, pin_root: &Path, run_dir: &Path) -> (AgentCounters, Duration) {
        let start = Instant::now();
        let out = Command::new(binary)
            .args(["status", "-o", "json", "--pin-root"])
            .arg(pin_root)
            .arg("--run-dir")
            .arg(run_dir)
            .output()
            .expect("run netwatch status");
        let took = start.elapsed();
        // 3: some internal network of this host (another test's) is not
        // guarded by this agent; the counters are still all there.
        assert!(
            matches!(out.status.code(), Some(0 | 3)),
            "netwatch status: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json: Value = serde_json::from_slice(&out.stdout).expect("status JSON");
        let pipeline = &json["pipeline"];
        assert!(
            pipeline.is_object(),
            "the agent's pipeline did not answer `status`: {}",
            json["pipeline_error"]
        );
        let number = |v: &Value| {
            v.as_u64()
                .unwrap_or_else(|| panic!("not a number in status: {v} ({json})"))
        };
        let counters = &pipeline["counters"];
        let table = &json["flow_table"];
        let drops = json["drops"]
            .as_object()
            .expect("drops in status")
            .iter()
            .map(|(reason, n)| (reason.clone(), number(n)))
            .collect();
        (
            AgentCounters {
                forwarded: number(&json["forwarded"]),
                drops,
                ringbuf_lost: number(&json["ringbuf_lost"]),
                records: number(&counters["records"]),
                malformed: number(&counters["malformed"]),
                kernel_evictions: number(&counters["kernel_evictions"]),
                summarised: number(&counters["summarised"]),
                tracked_flows: number(&pipeline["tracked_flows"]),
                flow_limit: number(&pipeline["flow_limit"]),
                table_entries: number(&table["entries"]),
                table_inserted: number(&table["inserted"]),
                table_evicted: number(&table["evicted"]),
            },
            took,
        )
    }

    /// Packets dropped for `reason` (0 when none were).
    pub fn dropped(&self, reason: &str) -> u64 {
        self.drops.get(reason).copied().unwrap_or(0)
    }
}

/// A value (kB) of /proc/<pid>/status, e.g. `VmRSS` or `VmHWM` (the peak).
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let [kib] = proc_status_kibs(pid, [field]);
    kib
}

/// Values (kB) of /proc/<pid>/status from one read of it, so that they
/// describe the same moment (e.g. `VmRSS` and its part `RssAnon`).
pub fn proc_status_kibs<const N: usize>(pid: u32, fields: [&str; N]) -> [u64; N] {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/status: {e}"));
    fields.map(|field| {
        text.lines()
            .find_map(|line| line.strip_prefix(&format!("{field}:")))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
    })
}

/// Packets an interface of `ns` dropped on transmit (`/proc/net/dev`): for
/// a container's veth, frames its peer's backlog had no room for, which no
/// program on the host side ever saw.
pub fn tx_dropped(ns: &Netns, ifname: &str) -> u64 {
    let text = ns
        .run(|| std::fs::read_to_string("/proc/thread-self/net/dev"))
        .expect("read /proc/thread-self/net/dev");
    let line = text
        .lines()
        .find_map(|l| l.trim_start().strip_prefix(&format!("{ifname}:")))
        .unwrap_or_else(|| panic!("no {ifname} in /proc/net/dev of {ns:?}"));
    // Receive: bytes packets errs drop fifo frame compressed multicast;
    // transmit: bytes packets errs drop…
    line.split_whitespace()
        .nth(11)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no transmit drop column for {ifname}: {line}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flood_frames_carry_a_wrong_udp_checksum_and_their_own_ports() {
        let src = ([2, 0, 0, 0, 0, 1], Ipv4Addr::new(172, 30, 0, 2));
        let mut frames =
            FlowFrames::new(src, [2, 0, 0, 0, 0, 2], Ipv4Addr::new(172, 30, 0, 3), b"x");
        for n in [0, 1, 59_999, 60_000, 1_234_567] {
            let (sport, dport) = flow_ports(n);
            let frame = frames.frame(sport, dport).to_vec();
            let parsed = etherparse::SlicedPacket::from_ethernet(&frame).unwrap();
            let Some(etherparse::TransportSlice::Udp(udp)) = parsed.transport else {
                panic!("not UDP");
            };
            assert_eq!((udp.source_port(), udp.destination_port()), (sport, dport));
            let mut fixed = frame.clone();
            fixed[UDP_CHECKSUM].fill(0);
            let correct = udp_checksum(&fixed);
            assert_ne!(udp.checksum(), correct);
            assert_ne!(udp.checksum(), 0);
            // The reference: etherparse's checksum of the same datagram.
            let ip = etherparse::Ipv4HeaderSlice::from_slice(&frame[14..]).unwrap();
            let header = udp.to_header();
            assert_eq!(
                header
                    .calc_checksum_ipv4(&ip.to_header(), udp.payload())
                    .unwrap(),
                correct
            );
        }
        assert_ne!(flow_ports(0), flow_ports(60_000));
    }
}
