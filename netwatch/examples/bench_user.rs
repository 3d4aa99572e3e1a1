//! A micro-benchmark of the agent's user-space hot paths, in process and
//! without the kernel: `flows::Pipeline::ingest` of new-flow and export
//! records (as bench-pipeline feeds it, minus the ring buffer), and a
//! `flows -o json` query at 100,000 flows with the sweep of the kernel's
//! table before it, here a vector of the same flows (the agent's part of
//! what bench-scale times, minus the socket and the map read).
//!
//! Run by hand, e.g. to compare two builds round by round:
//!   cargo run --release -p netwatch --example bench_user -- [rounds]
//! It prints each measurement's median and range over the rounds, in this
//! thread's CPU time.

use std::{hint::black_box, net::Ipv4Addr, time::Duration};

use netwatch::{
    agent::{ContainerInterface, HostState, NetworkState},
    api::Layout,
    flows::{FlowFilter, FlowNames, Pipeline},
};
use netwatch_common::{
    event::{EventKind, FlowEvent},
    flow::{FlowKey, FlowStats, family},
    reason::{Direction, DropReason, Verdict},
};

/// This thread's CPU time: the machine this runs on is shared with
/// benchmarks, and wall-clock time counted their turns on the CPU too.
#[derive(Clone, Copy)]
struct Instant(Duration);

impl Instant {
    fn now() -> Instant {
        let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
            .expect("the thread's CPU clock");
        Instant(Duration::from(t))
    }

    fn elapsed(self) -> Duration {
        Instant::now().0 - self.0
    }
}

/// The endpoint of the named runs: veth ifindex 31, 172.30.0.2.
const VETH: u32 = 31;
const EP: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 2);

fn names() -> FlowNames {
    let endpoint = |container: &str, ifindex: u32, ip: Ipv4Addr| ContainerInterface {
        container: container.into(),
        container_id: format!("{container}3f2a9c0123456789abcdef0123456789abcdef0123456789abcdef"),
        network: "db".into(),
        host_ifname: format!("veth{ifindex}"),
        host_ifindex: ifindex,
        ipv4: Some(ip),
        ipv6: None,
        mac: [2, 0x42, 0, 0, 0, 2],
        container_labels: [
            ("com.docker.compose.service".to_string(), "db".to_string()),
            ("com.docker.compose.project".to_string(), "shop".to_string()),
        ]
        .into(),
        published: Vec::new(),
        macvlan: None,
        overlay: None,
    };
    let state = HostState {
        audit_all: false,
        networks: vec![NetworkState {
            name: "db".into(),
            driver: "bridge".into(),
            internal: false,
            bridge: Some(("br-db".into(), 30)),
            macvlan_parent: None,
            overlay_sandbox: None,
            subnets: vec!["172.30.0.0/16".parse().unwrap()],
            gateways: vec!["172.30.0.1".parse().unwrap()],
            labels: Default::default(),
        }],
        endpoints: vec![
            endpoint("postgres", VETH, EP),
            endpoint("web", 32, Ipv4Addr::new(172, 30, 0, 3)),
        ],
        host_addrs: vec!["172.30.0.1".parse().unwrap()],
        overlay_members: vec![],
        bridge_ports: vec![],
        provisional_children: Vec::new(),
        sandbox_ports: Vec::new(),
    };
    FlowNames::new(&state, &[])
}

/// Flow `n`'s record, as bench-pipeline's generator makes them (a UDP
/// flow from the endpoint, a never-used destination and port), seen at
/// `ifindex`.
fn record(ifindex: u32, n: u64, kind: EventKind) -> FlowEvent {
    let host = 256 + (n / 60_000) as u32;
    let dst = Ipv4Addr::from(u32::from_be_bytes([172, 30, 0, 0]) + host);
    let mut key = FlowKey {
        ifindex,
        direction: Direction::Egress as u8,
        family: family::IPV4,
        proto: 17,
        ethertype: 0x0800,
        src_port: 1024 + (n % 60_000) as u16,
        dst_port: 5353,
        ..FlowKey::default()
    };
    key.src[..4].copy_from_slice(&EP.octets());
    key.dst[..4].copy_from_slice(&dst.octets());
    // Kernel times: monotonic ns, with all kinds of sub-second parts.
    let t = 1_000_000_000_000 + n * 1_234_567;
    FlowEvent {
        kind: kind as u8,
        verdict: Verdict::Forwarded as u8,
        reason: DropReason::None as u8,
        key,
        packets: 1 + n % 7,
        bytes: 100 + n % 9000,
        first_seen_ns: t,
        last_seen_ns: t + n % 1000,
        ..FlowEvent::default()
    }
}

fn pipeline(limit: usize, named: bool) -> Pipeline {
    let pipeline = Pipeline::new(limit, Box::new(|| Ok(Vec::new())));
    if named {
        pipeline.set_names(names());
    }
    pipeline
}

/// Ingests `records` in batches of `batch`; ns per record.
fn ingest(pipeline: &Pipeline, records: &[FlowEvent], batch: usize) -> f64 {
    let start = Instant::now();
    for chunk in records.chunks(batch) {
        black_box(pipeline.ingest(chunk));
    }
    start.elapsed().as_nanos() as f64 / records.len() as f64
}

const FLOWS: u64 = 100_000;

fn round(rounds: usize, only: &str) {
    let mut results: Vec<(&str, Vec<f64>)> = Vec::new();
    let mut add = |name, v| match results.iter_mut().find(|(n, _)| *n == name) {
        Some((_, vs)) => vs.push(v),
        None => results.push((name, vec![v])),
    };
    for _ in 0..rounds {
        for (named, ifindex) in [(false, 1), (true, VETH)] {
            if only == "query" {
                break;
            }
            let new: Vec<FlowEvent> = (0..FLOWS)
                .map(|n| record(ifindex, n, EventKind::FlowOpen))
                .collect();
            // Filling, with a limit no run reaches (bench-pipeline's rows).
            let p = pipeline(if only == "limit" { 1 } else { 10_000_000 }, named);
            let ns = ingest(&p, &new, 8192);
            add(
                if named {
                    "ingest new, named, filling 100k (ns/rec)"
                } else {
                    "ingest new, unnamed, filling 100k (ns/rec)"
                },
                ns,
            );
            if named {
                // Exports of 256 known flows.
                let exports: Vec<FlowEvent> = (0..200_000)
                    .map(|i| {
                        let mut r = record(ifindex, i % 256, EventKind::FlowExport);
                        r.packets += i;
                        r.last_seen_ns += i * 1000;
                        r
                    })
                    .collect();
                add("ingest export, named (ns/rec)", ingest(&p, &exports, 8192));
            }
            drop(p);
            // At the agent's default limit: fill, then 10,001 more.
            let p = pipeline(100_000, named);
            ingest(&p, &new, 8192);
            let more: Vec<FlowEvent> = (FLOWS..FLOWS + 10_001)
                .map(|n| record(ifindex, n, EventKind::FlowOpen))
                .collect();
            add(
                if named {
                    "ingest new, named, at limit (ns/rec)"
                } else {
                    "ingest new, unnamed, at limit (ns/rec)"
                },
                ingest(&p, &more, 100),
            );
            // And on: folds at every tenth of the limit, as an agent at its
            // limit keeps doing.
            let on: Vec<FlowEvent> = (FLOWS + 10_001..FLOWS + 260_001)
                .map(|n| record(ifindex, n, EventKind::FlowOpen))
                .collect();
            add(
                if named {
                    "ingest new, named, at limit, 250k on (ns/rec)"
                } else {
                    "ingest new, unnamed, at limit, 250k on (ns/rec)"
                },
                ingest(&p, &on, 100),
            );
        }
        if only == "ingest" || only == "limit" {
            continue;
        }
        // A query of 100,000 named flows, pretty JSON, as the API streams it,
        // after a sweep of the kernel's table holding the same flows (in an
        // order of their own, as the kernel's hash gives them).
        let new: Vec<FlowEvent> = (0..FLOWS)
            .map(|n| record(VETH, n, EventKind::FlowOpen))
            .collect();
        let table: Vec<(FlowKey, FlowStats)> = (0..FLOWS)
            .map(|n| {
                let event = &new[((n * 7919) % FLOWS) as usize];
                let stats = FlowStats {
                    packets: event.packets + 1,
                    bytes: event.bytes + 100,
                    first_seen_ns: event.first_seen_ns,
                    last_seen_ns: event.last_seen_ns + 1,
                    ..FlowStats::default()
                };
                (event.key, stats)
            })
            .collect();
        let p = Pipeline::new(1_000_000, Box::new(move || Ok(table.clone())));
        p.set_names(names());
        ingest(&p, &new, 8192);
        for (name, layout) in [
            ("sweep + query 100k pretty (ms)", Layout::Pretty),
            ("sweep + query 100k compact (ms)", Layout::Compact),
        ] {
            // Past the sweep interval, as bench-scale's queries are.
            std::thread::sleep(Duration::from_millis(110));
            let start = Instant::now();
            let mut bytes = 0;
            p.show_flows(&FlowFilter::default(), |flows| {
                layout.stream_flows(&flows, |piece| {
                    bytes += piece.len();
                    drop(black_box(piece));
                });
            })
            .unwrap();
            add(name, start.elapsed().as_secs_f64() * 1e3);
            black_box(bytes);
        }
    }
    for (name, mut values) in results {
        values.sort_by(f64::total_cmp);
        println!(
            "{name:45} median {:9.1}  min {:9.1}  max {:9.1}",
            values[values.len() / 2],
            values[0],
            values[values.len() - 1]
        );
    }
}

fn main() {
    let rounds = std::env::args()
        .nth(1)
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    // `ingest` or `query` runs only those, `limit` most of the time at
    // the limit (for a profile).
    let only = std::env::args().nth(2).unwrap_or_default();
    round(rounds, &only);
}
