//! `cargo xtask bench datapath`: nanoseconds per packet of the kernel
//! programs, measured by BPF_PROG_TEST_RUN with `repeat`, beside an empty
//! program measured in the same rounds. Rounds interleave the scenarios so
//! that machine noise hits them alike; the median round is reported.

use std::time::Duration;

use netwatch::datapath::Hook;
use netwatch_common::flow::tcp_flags::{ACK, SYN};
use netwatch_tests::{fixture::*, packets::Frame};

const REPEAT: u32 = 200_000;
const ROUNDS: usize = 9;

fn main() -> anyhow::Result<()> {
    let mut harness = Harness::standard();
    let established = Frame::eth(EP_MAC, PEER_MAC)
        .ipv4(EP_V4, PEER_V4)
        .tcp(40000, 80, ACK)
        .payload(&[0; 1400])
        .build();
    let established_v6 = Frame::eth(EP_MAC, PEER_MAC)
        .ipv6(EP_V6, PEER_V6)
        .tcp(40000, 80, ACK)
        .payload(&[0; 1400])
        .build();
    let dropped = Frame::eth(EP_MAC, GW_MAC)
        .ipv4(EP_V4, OUTSIDE_V4)
        .tcp(40000, 443, SYN)
        .build();
    let inbound = Frame::eth(PEER_MAC, EP_MAC)
        .ipv4(PEER_V4, EP_V4)
        .tcp(80, 40000, ACK)
        .payload(&[0; 1400])
        .build();
    let uplink = Frame::eth(GW_MAC, EP_MAC)
        .ipv4(OUTSIDE_V4, HOST_V4)
        .tcp(443, 40000, ACK)
        .payload(&[0; 1400])
        .build();
    let scenarios: Vec<(&str, Hook, &[u8])> = vec![
        (
            "empty program (baseline)",
            Hook::BenchBaseline,
            &established,
        ),
        (
            "from_container, established IPv4 TCP flow",
            Hook::FromContainer,
            &established,
        ),
        (
            "from_container, established IPv6 TCP flow",
            Hook::FromContainer,
            &established_v6,
        ),
        (
            "to_container, established IPv4 TCP flow",
            Hook::ToContainer,
            &inbound,
        ),
        (
            "from_container, dropped (rate-limited record)",
            Hook::FromContainer,
            &dropped,
        ),
        ("uplink XDP, host traffic passing", Hook::Uplink, &uplink),
    ];
    // Warm up: create the flows so that measured packets are established.
    for (_, hook, frame) in &scenarios {
        harness.datapath.test_run(*hook, frame, 1)?;
    }
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); scenarios.len()];
    for _ in 0..ROUNDS {
        for (i, (_, hook, frame)) in scenarios.iter().enumerate() {
            samples[i].push(harness.datapath.test_run(*hook, frame, REPEAT)?.duration);
            harness.datapath.drain_events()?;
        }
    }
    let medians: Vec<f64> = samples
        .iter_mut()
        .map(|s| {
            s.sort();
            s[s.len() / 2].as_secs_f64() * 1e9
        })
        .collect();
    println!(
        "BPF_PROG_TEST_RUN, {REPEAT} repeats x {ROUNDS} interleaved rounds, median ns/packet \
         (includes the kernel's per-run skb/xdp setup, the same for every row)"
    );
    println!(
        "{:<48} {:>10} {:>12}",
        "scenario", "ns/packet", "vs baseline"
    );
    for ((name, _, _), ns) in scenarios.iter().zip(&medians) {
        println!("{name:<48} {ns:>10.1} {:>11.2}x", ns / medians[0]);
    }
    println!(
        "netwatch's own cost on an established flow: {:.1} ns/packet",
        medians[1] - medians[0]
    );
    Ok(())
}
