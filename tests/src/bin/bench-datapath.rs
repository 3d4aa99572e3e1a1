//! `cargo xtask bench datapath`: nanoseconds per packet of the kernel
//! programs, measured by BPF_PROG_TEST_RUN, beside two reference programs
//! measured in the same rounds: an empty one and a counter-only one (one
//! per-CPU counter increment, the cheapest program that does anything per
//! packet). Rounds interleave the scenarios so that machine noise hits them
//! alike; the median round is reported.
//!
//! Steady states (an established flow, a drop) are run with `repeat`: the
//! kernel runs the same frame many times and reports the mean. A new flow
//! cannot be measured that way (the first run creates the flow, the others
//! find it), so it is measured with many `repeat = 1` runs over distinct
//! 5-tuples, and the empty program is measured the same way on the same
//! frames; the difference is netwatch's added cost for a new flow.

use std::net::IpAddr;

use anyhow::{Context as _, Result, ensure};
use netwatch::datapath::Hook;
use netwatch_common::{
    flow::tcp_flags::{ACK, SYN},
    names,
};
use netwatch_tests::{
    bench::{BenchArgs, Section, Table, interleaved, median},
    fixture::*,
    packets::Frame,
};

/// What runs a frame.
#[derive(Clone, Copy, PartialEq)]
enum Program {
    Empty,
    Counter,
    Netwatch(Hook),
}

impl Program {
    fn run(self, harness: &Harness, frame: &[u8], repeat: u32) -> Result<(i32, f64)> {
        let outcome = match self {
            Program::Empty => harness
                .datapath
                .test_run(Hook::BenchBaseline, frame, repeat)?,
            Program::Counter => {
                harness
                    .datapath
                    .test_run_classifier(names::PROG_BENCH_COUNTER, frame, repeat)?
            }
            Program::Netwatch(hook) => harness.datapath.test_run(hook, frame, repeat)?,
        };
        Ok((outcome.action, outcome.duration.as_secs_f64() * 1e9))
    }
}

/// One steady-state row: the same frame `repeat` times.
struct Steady {
    label: &'static str,
    program: Program,
    v4: Vec<u8>,
    v6: Vec<u8>,
    /// The action every run must return (checked in the warm-up run, so a
    /// smoke run catches a scenario that no longer does what its label says).
    action: i32,
}

/// A TCP frame between the endpoint and another address (either way).
fn tcp(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, flags: u8, payload: usize) -> Vec<u8> {
    let from_endpoint = src == IpAddr::V4(EP_V4) || src == IpAddr::V6(EP_V6);
    let (src_mac, dst_mac) = if from_endpoint {
        (EP_MAC, PEER_MAC)
    } else {
        (PEER_MAC, EP_MAC)
    };
    let frame = Frame::eth(src_mac, dst_mac);
    let frame = match (src, dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => frame.ipv4(src, dst),
        (IpAddr::V6(src), IpAddr::V6(dst)) => frame.ipv6(src, dst),
        _ => unreachable!("one family per frame"),
    };
    frame
        .tcp(sport, dport, flags)
        .payload(&vec![0; payload])
        .build()
}

fn steady_rows() -> Vec<Steady> {
    let est = (
        tcp(EP_V4.into(), PEER_V4.into(), 40000, 80, ACK, 1400),
        tcp(EP_V6.into(), PEER_V6.into(), 40000, 80, ACK, 1400),
    );
    let inbound = (
        tcp(PEER_V4.into(), EP_V4.into(), 80, 40000, ACK, 1400),
        tcp(PEER_V6.into(), EP_V6.into(), 80, 40000, ACK, 1400),
    );
    let dropped = (
        tcp(EP_V4.into(), OUTSIDE_V4.into(), 40000, 443, SYN, 0),
        tcp(EP_V6.into(), OUTSIDE_V6.into(), 40000, 443, SYN, 0),
    );
    // The uplink sees a host-bound packet from the outside.
    let uplink = (
        Frame::eth(GW_MAC, EP_MAC).ipv4(OUTSIDE_V4, HOST_V4),
        Frame::eth(GW_MAC, EP_MAC).ipv6(OUTSIDE_V6, HOST_V6),
    );
    let uplink = (
        uplink.0.tcp(443, 40000, ACK).payload(&[0; 1400]).build(),
        uplink.1.tcp(443, 40000, ACK).payload(&[0; 1400]).build(),
    );
    let row = |label, program, (v4, v6): (Vec<u8>, Vec<u8>), action| Steady {
        label,
        program,
        v4,
        v6,
        action,
    };
    use Program::*;
    vec![
        row("empty program", Empty, est.clone(), TC_CONTINUE),
        row("counter-only program", Counter, est.clone(), TC_CONTINUE),
        row(
            "netwatch from_container, established TCP flow",
            Netwatch(Hook::FromContainer),
            est,
            TC_CONTINUE,
        ),
        row(
            "netwatch to_container, established TCP flow",
            Netwatch(Hook::ToContainer),
            inbound,
            TC_CONTINUE,
        ),
        row(
            "netwatch from_container, dropped (outside; record rate-limited)",
            Netwatch(Hook::FromContainer),
            dropped,
            TC_DROP,
        ),
        row(
            "netwatch uplink (XDP), host traffic passing",
            Netwatch(Hook::Uplink),
            uplink,
            XDP_PASS,
        ),
    ]
}

/// Row indexes in [`steady_rows`].
const EMPTY: usize = 0;
const COUNTER: usize = 1;
const ESTABLISHED: usize = 2;

fn main() -> Result<()> {
    let args = BenchArgs::from_env();
    let repeat: u32 = args.pick(200_000, 1_000);
    let rounds: usize = args.pick(9, 1);
    // New flows per address family and round (each measured once with
    // netwatch and once with the empty program).
    let new_flows: usize = args.pick(2_000, 20);

    let mut harness = Harness::standard();
    let rows = steady_rows();

    // Warm up: creates the flows, so that measured packets are established,
    // and checks that every scenario returns the action its label says.
    for row in &rows {
        for frame in [&row.v4, &row.v6] {
            let (action, _) = row.program.run(&harness, frame, 1)?;
            ensure!(
                action == row.action,
                "{}: action {action}, expected {}",
                row.label,
                row.action
            );
        }
    }
    let counted = harness.datapath.bench_counter()?;
    ensure!(
        counted == 2,
        "the counter-only program counted {counted} of 2 packets"
    );
    harness.datapath.drain_events()?;

    // (row, family) pairs, interleaved round by round.
    let configs: Vec<(usize, bool)> = (0..rows.len())
        .flat_map(|row| [(row, false), (row, true)])
        .collect();
    let steady = interleaved(&configs, rounds, |&(row, v6)| -> Result<f64> {
        let row_def = &rows[row];
        let frame = if v6 { &row_def.v6 } else { &row_def.v4 };
        let (_, ns) = row_def.program.run(&harness, frame, repeat)?;
        Ok(ns)
    })?;
    harness.datapath.drain_events()?;
    let steady_ns = |row: usize, v6: bool| -> f64 {
        let index = configs
            .iter()
            .position(|c| *c == (row, v6))
            .expect("configured");
        median(&steady[index])
    };

    // New flows: per round, `new_flows` fresh 5-tuples per family, each run
    // once through the empty program and once through netwatch (in that
    // order, frame by frame). Netwatch's added cost is the difference of
    // the medians of the round.
    let mut round_cost = [Vec::new(), Vec::new()];
    let mut round_empty = [Vec::new(), Vec::new()];
    for round in 0..rounds {
        for (family, v6) in [false, true].into_iter().enumerate() {
            let mut empty = Vec::with_capacity(new_flows);
            let mut netwatch = Vec::with_capacity(new_flows);
            for i in 0..new_flows {
                let sport = 10_000 + (round * new_flows + i) as u16;
                let frame = if v6 {
                    tcp(EP_V6.into(), PEER_V6.into(), sport, 8080, SYN, 0)
                } else {
                    tcp(EP_V4.into(), PEER_V4.into(), sport, 8080, SYN, 0)
                };
                empty.push(Program::Empty.run(&harness, &frame, 1)?.1);
                let (action, ns) =
                    Program::Netwatch(Hook::FromContainer).run(&harness, &frame, 1)?;
                ensure!(action == TC_CONTINUE, "new flow: action {action}");
                netwatch.push(ns);
                if i % 500 == 499 {
                    // Keep the ring buffer from filling: the agent drains it too.
                    harness.datapath.drain_events()?;
                }
            }
            harness.datapath.drain_events()?;
            round_cost[family].push(median(&netwatch) - median(&empty));
            round_empty[family].push(median(&empty));
        }
    }
    let lost = harness.datapath.ringbuf_lost()?;
    ensure!(
        lost == 0,
        "{lost} ring buffer records were lost during the benchmark"
    );

    let mut table = Table::new(&[
        "scenario",
        "IPv4 ns/packet",
        "IPv4 over empty",
        "IPv4 vs counter-only",
        "IPv6 ns/packet",
        "IPv6 over empty",
        "IPv6 vs counter-only",
    ]);
    let cells = |ns: [f64; 2]| -> Vec<String> {
        let mut cells = Vec::new();
        for (family, v6) in [false, true].into_iter().enumerate() {
            let empty = steady_ns(EMPTY, v6);
            let counter = steady_ns(COUNTER, v6);
            cells.push(format!("{:.1}", ns[family]));
            cells.push(format!("{:+.1}", ns[family] - empty));
            cells.push(format!("{:.2}x", ns[family] / counter));
        }
        cells
    };
    for (i, row) in rows.iter().enumerate() {
        let mut line = vec![row.label.to_owned()];
        line.extend(cells([steady_ns(i, false), steady_ns(i, true)]));
        table.row(line);
        if i == ESTABLISHED {
            // New flows next to established ones: the empty program's
            // repeat cost plus the added cost measured with repeat = 1.
            let added = [median(&round_cost[0]), median(&round_cost[1])];
            let mut line = vec!["netwatch from_container, new TCP flow (SYN; see text)".to_owned()];
            line.extend(cells([
                steady_ns(EMPTY, false) + added[0],
                steady_ns(EMPTY, true) + added[1],
            ]));
            table.row(line);
        }
    }

    let goal = |v6: bool| -> String {
        let ratio = steady_ns(ESTABLISHED, v6) / steady_ns(COUNTER, v6);
        let verdict = if ratio <= 2.0 { "met" } else { "missed" };
        format!(
            "{} {verdict}: {ratio:.2}x ({:.1} vs {:.1} ns/packet; netwatch's own work \
             {:.1} ns over the empty program, the counter's {:.1} ns)",
            if v6 { "IPv6" } else { "IPv4" },
            steady_ns(ESTABLISHED, v6),
            steady_ns(COUNTER, v6),
            steady_ns(ESTABLISHED, v6) - steady_ns(EMPTY, v6),
            steady_ns(COUNTER, v6) - steady_ns(EMPTY, v6),
        )
    };

    let mut section = Section::new("Per-packet program cost (`datapath`)");
    section.text(&format!(
        "The kernel programs run on crafted frames through `BPF_PROG_TEST_RUN` \
         (`cargo xtask bench datapath`, binary `bench-datapath`). Steady-state rows run \
         one frame {repeat} times per measurement (the kernel reports the mean); \
         {rounds} rounds interleave every row and family; the table shows the median \
         round. *ns/packet* includes the kernel's own per-run cost of the test harness, \
         which the empty program shows alone; *over empty* subtracts it. The reference \
         programs: an empty TC program, and a counter-only one that increments one \
         per-CPU counter and lets the packet continue. Frames: 1,400-byte TCP payloads \
         between the enforced endpoint and a peer of its network; the drop is a SYN to \
         an address outside the network (its record is rate-limited to one per flow \
         per second, so steady drops cost a lookup, not a record); the uplink row is the \
         XDP program on a host-bound packet (an XDP test run, whose harness cost \
         differs from a TC run's)."
    ));
    section.text(&format!(
        "New flows cannot use `repeat` (the first run creates the flow, the rest find \
         it): each round runs {new_flows} SYNs with distinct 5-tuples per family once \
         each (`repeat = 1`) through netwatch and through the empty program, and takes \
         the difference of the two medians; that is netwatch's added cost for a new \
         flow (a flow-table insert and a flow-open record in the ring buffer, drained \
         between batches as the agent does). The row shows the empty program's \
         steady cost plus that difference, so it reads like the rows around it. \
         Measured the same way, the empty program alone took {:.0} ns (IPv4) and {:.0} ns \
         (IPv6) per single run: the timer and setup of one test run, which the \
         subtraction removes.",
        median(&round_empty[0]),
        median(&round_empty[1]),
    ));
    section.table(&table);
    section.text(&format!(
        "Goal: established-flow cost ≤ 2x the counter-only program. {}. {}.",
        goal(false),
        goal(true)
    ));
    if args.smoke {
        section.text("Smoke run: numbers are meaningless.");
    }
    section.emit(&args).context("writing the section")?;
    Ok(())
}
