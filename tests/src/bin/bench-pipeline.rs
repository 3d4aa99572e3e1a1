//! `cargo xtask bench pipeline`: how many flow records per second the
//! agent's event pipeline takes in without losing one, and exact loss
//! accounting above that rate.
//!
//! The kernel side is real: a generator thread runs the loaded
//! `from_container` program with BPF_PROG_TEST_RUN, and every run emits one
//! ring buffer record (a new flow's `flow-open`, or — with the export
//! interval set to 1 ns — a `flow-export` per repeat of an established
//! flow). The consumer is the agent's own: a second load of the datapath
//! sharing the generator's pinned maps (as a restarted agent shares them
//! with attached programs), read by `flows::RecordReader` into
//! `flows::Pipeline::ingest` on its own thread, woken by the kernel past
//! the ring's watermark or by its timeout, exactly as the agent runs it
//! (netwatch/src/agent/run.rs). A row with the agent's former 250 ms drain
//! tick (`Datapath::drain_events` on a timer) shows what the reader buys.
//!
//! For every run, records offered (one per program run, by construction:
//! each new-flow packet has a 5-tuple never used before in the process)
//! must equal records received plus the kernel's lost counter
//! (`RINGBUF_LOST`, failed reservations); the benchmark fails if they do
//! not add up.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use netwatch::{
    datapath::{Datapath, Hook, LoadOptions, pinned},
    flows::{
        Pipeline, RecordReader,
        reader::{READ_TIMEOUT, thread_cpu_time},
    },
    policy::compile,
};
use netwatch_common::{
    endpoint::{DatapathConfig, policy_flags},
    event::FlowEvent,
    names,
};
use netwatch_tests::{
    bench::{BenchArgs, Section, Table, interleaved, median},
    fixture::{EP_MAC, EP_V4, PEER_MAC, PEER_V4, TC_CONTINUE, endpoint_spec, host_addresses},
    netns::PinDir,
    packets::Frame,
};

/// The drain interval of the agent before it had a reader thread.
const OLD_TICK: Duration = Duration::from_millis(250);
/// The agent's default `--flow-limit`.
const AGENT_FLOW_LIMIT: usize = 100_000;
/// The flow limit of the rate runs: high enough that no run reaches it
/// (each run starts with an empty pipeline), so they measure the pipeline
/// without folding; folding at the limit is measured on its own.
const UNFOLDED_FLOW_LIMIT: usize = 10_000_000;
/// What one record takes in the ring buffer: the record plus the kernel's
/// 8-byte header (BPF_RINGBUF_HDR_SZ), rounded up to 8 bytes.
const RECORD_SLOT: usize = (std::mem::size_of::<FlowEvent>() + 8).div_ceil(8) * 8;
/// Established flows the export generator cycles through.
const EXPORT_FLOWS: usize = 256;

/// What produces the records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    /// One test run per record, each a packet of a flow never seen before
    /// (`flow-open`): what a scan or a burst of short connections causes.
    NewFlows,
    /// Test runs with `repeat` on established flows with a 1 ns export
    /// interval: one `flow-export` per repeat, so the kernel offers records
    /// faster than one syscall per record could.
    Exports,
}

impl Source {
    fn name(self) -> &'static str {
        match self {
            Source::NewFlows => "new flows (flow-open)",
            Source::Exports => "active flows (flow-export)",
        }
    }
}

/// What takes the records out of the ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Consumer {
    /// `flows::RecordReader`, as the agent runs it.
    Reader,
    /// `Datapath::drain_events` every interval (the agent until the
    /// reader).
    Tick(Duration),
}

impl Consumer {
    fn name(self) -> String {
        match self {
            Consumer::Reader => "reader (epoll)".to_owned(),
            Consumer::Tick(interval) => format!("tick every {interval:?}"),
        }
    }
}

/// One configuration: where records come from, what consumes them, and
/// the offered rate (`None`: as fast as the generator can).
#[derive(Clone, Copy, Debug)]
struct Config {
    source: Source,
    consumer: Consumer,
    rate: Option<f64>,
}

/// What one run measured.
#[derive(Clone, Copy, Debug, Default)]
struct Outcome {
    offered: u64,
    received: u64,
    lost: u64,
    /// How long the generator ran.
    secs: f64,
    /// Consumer time taking records out of the ring and in
    /// `Pipeline::ingest`.
    drain_secs: f64,
    ingest_secs: f64,
    /// The consumer thread's CPU time in `Pipeline::ingest`: wall time
    /// less its waits for a CPU.
    ingest_cpu_secs: f64,
    /// The most records one drain took.
    max_batch: usize,
    /// The reader's wakeups by the kernel and by its timeout.
    wakeups: u64,
    timeouts: u64,
}

impl Outcome {
    fn offered_rate(&self) -> f64 {
        self.offered as f64 / self.secs
    }
}

/// The generator's and the consumer's loads of the datapath, on the same
/// pinned maps.
struct Rig {
    consumer: Datapath,
    generator: Datapath,
    /// The next never-used flow number.
    next_flow: u64,
    template: Vec<u8>,
    exports: Vec<Vec<u8>>,
    // Dropped last: removes the pins.
    _pins: PinDir,
}

/// Offsets in the template frame (Ethernet + IPv4 without options + UDP).
const IP_HEADER: std::ops::Range<usize> = 14..34;
const IP_CHECKSUM: std::ops::Range<usize> = 24..26;
const IP_DST: std::ops::Range<usize> = 30..34;
const UDP_SRC_PORT: std::ops::Range<usize> = 34..36;
const UDP_CHECKSUM: std::ops::Range<usize> = 40..42;

/// Flow `n`'s destination and source port: a peer in the endpoint's own
/// network (172.30.0.0/16, so the packet is forwarded) from 172.30.1.0 up,
/// and ports 1024..61024; about 3.9 billion distinct flows.
fn flow_tuple(n: u64) -> (std::net::Ipv4Addr, u16) {
    let host = 256 + (n / 60_000) as u32;
    assert!(host < 65_535, "ran out of distinct flows");
    let dst = u32::from_be_bytes([172, 30, 0, 0]) + host;
    (dst.into(), 1024 + (n % 60_000) as u16)
}

fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Writes flow `n` into the template: destination, source port, IPv4
/// checksum; the UDP checksum is 0 (none, valid for IPv4).
fn patch(frame: &mut [u8], n: u64) {
    let (dst, port) = flow_tuple(n);
    frame[IP_DST].copy_from_slice(&dst.octets());
    frame[UDP_SRC_PORT].copy_from_slice(&port.to_be_bytes());
    frame[UDP_CHECKSUM].copy_from_slice(&[0, 0]);
    frame[IP_CHECKSUM].copy_from_slice(&[0, 0]);
    let sum = ipv4_checksum(&frame[IP_HEADER]);
    frame[IP_CHECKSUM].copy_from_slice(&sum.to_be_bytes());
}

impl Rig {
    fn new() -> Result<Rig> {
        let pins = PinDir::create();
        let options = LoadOptions {
            pin_root: Some(pins.0.clone()),
            ..LoadOptions::default()
        };
        let mut consumer = Datapath::load(&options).context("loading the consumer's datapath")?;
        let tables = compile(&[endpoint_spec(policy_flags::ENFORCE)], &host_addresses())?;
        consumer.apply(&tables)?;
        consumer.set_config(DatapathConfig {
            export_interval_ns: 1,
            ..DatapathConfig::default()
        })?;
        // The second load reuses the pinned maps: its programs write into
        // the consumer's ring buffer and counters.
        let generator = Datapath::load(&options).context("loading the generator's datapath")?;
        let template = Frame::eth(EP_MAC, PEER_MAC)
            .ipv4(EP_V4, PEER_V4)
            .udp(40000, 5353)
            .build();
        let mut check = template.clone();
        patch(&mut check, 0);
        let (dst, port) = flow_tuple(0);
        let mut built = Frame::eth(EP_MAC, PEER_MAC)
            .ipv4(EP_V4, dst)
            .udp(port, 5353)
            .build();
        built[UDP_CHECKSUM].copy_from_slice(&[0, 0]);
        ensure!(
            check == built,
            "the patched template differs from the frame builder's frame"
        );
        let mut rig = Rig {
            consumer,
            generator,
            next_flow: 0,
            template,
            exports: Vec::new(),
            _pins: pins,
        };
        // The export generator's flows exist before any measurement.
        for _ in 0..EXPORT_FLOWS {
            let mut frame = rig.template.clone();
            patch(&mut frame, rig.next_flow);
            rig.next_flow += 1;
            rig.generator.test_run(Hook::FromContainer, &frame, 1)?;
            rig.exports.push(frame);
        }
        rig.consumer.drain_events()?;
        Ok(rig)
    }

    /// A pipeline as the agent makes it, reading this rig's flow table.
    fn pipeline(&self, flow_limit: usize) -> Pipeline {
        let root = self._pins.0.clone();
        Pipeline::new(flow_limit, Box::new(move || pinned::read_flows(&root)))
    }

    /// Offers records as `config` says for `secs` seconds while the
    /// consumer takes them, into a fresh pipeline.
    fn run(&mut self, config: &Config, secs: f64) -> Result<Outcome> {
        let pipeline = Arc::new(self.pipeline(UNFOLDED_FLOW_LIMIT));
        let (events, _) = self.consumer.drain_events()?;
        ensure!(events.is_empty(), "records left over from the last run");
        let lost_before = self.consumer.ringbuf_lost()?;
        let ((offered, gen_secs), mut outcome) = match config.consumer {
            Consumer::Reader => {
                let rings = self.consumer.record_rings()?;
                let reader = RecordReader::start(rings, Arc::clone(&pipeline), false)?;
                let generated = on_one_cpu(|| {
                    generate(
                        &self.generator,
                        config,
                        secs,
                        &mut self.next_flow,
                        &self.template,
                        &self.exports,
                    )
                })?;
                // Reads what is left, then stops.
                let stats = reader.stop();
                ensure!(
                    stats.malformed == 0,
                    "{} malformed records",
                    stats.malformed
                );
                let (left, _) = self.consumer.drain_events()?;
                ensure!(
                    left.is_empty(),
                    "{} records left in the ring after the reader stopped (it read {})",
                    left.len(),
                    stats.records
                );
                let outcome = Outcome {
                    received: pipeline.counters().records,
                    drain_secs: stats.drain_ns as f64 / 1e9,
                    ingest_secs: stats.ingest_ns as f64 / 1e9,
                    ingest_cpu_secs: stats.ingest_cpu_ns as f64 / 1e9,
                    max_batch: stats.max_batch as usize,
                    wakeups: stats.wakeups,
                    timeouts: stats.timeouts,
                    ..Outcome::default()
                };
                (generated?, outcome)
            }
            Consumer::Tick(interval) => {
                let done = AtomicBool::new(false);
                let Rig {
                    consumer,
                    generator,
                    next_flow,
                    template,
                    exports,
                    ..
                } = self;
                let pipeline = &*pipeline;
                let (generated, consumed) = std::thread::scope(|scope| {
                    let consumer_thread =
                        scope.spawn(|| consume(consumer, pipeline, interval, &done));
                    let generated = on_one_cpu(|| {
                        generate(generator, config, secs, next_flow, template, exports)
                    });
                    done.store(true, Ordering::Release);
                    let consumed = consumer_thread
                        .join()
                        .expect("the consumer thread panicked");
                    (generated, consumed)
                });
                (generated??, consumed?)
            }
        };
        outcome.offered = offered;
        outcome.secs = gen_secs;
        outcome.lost = self.consumer.ringbuf_lost()? - lost_before;
        ensure!(
            outcome.received + outcome.lost == outcome.offered,
            "records do not add up for {} at {:?}: offered {}, received {}, lost {}",
            config.source.name(),
            config.rate,
            outcome.offered,
            outcome.received,
            outcome.lost
        );
        Ok(outcome)
    }
}

impl Rig {
    /// Runs `n` never-seen flows' first packets through the program.
    fn offer_new_flows(&mut self, n: u64) -> Result<()> {
        let mut frame = self.template.clone();
        for _ in 0..n {
            patch(&mut frame, self.next_flow);
            self.next_flow += 1;
            let outcome = self.generator.test_run(Hook::FromContainer, &frame, 1)?;
            ensure!(
                outcome.action == TC_CONTINUE,
                "a new-flow packet was not forwarded: action {}",
                outcome.action
            );
        }
        Ok(())
    }

    /// The pipeline's ingest cost per new-flow record while it fills up to
    /// the agent's default flow limit, and once it is there (every record
    /// beyond the limit makes the aggregate fold the longest-idle tenth of
    /// the limit into summaries, then nothing until it is full again). Every
    /// record goes through the kernel and the ring buffer; none may be lost.
    fn at_limit(&mut self, extra: u64) -> Result<(f64, f64)> {
        let pipeline = self.pipeline(AGENT_FLOW_LIMIT);
        let lost_before = self.consumer.ringbuf_lost()?;
        let phase = |rig: &mut Rig, total: u64, batch: u64| -> Result<f64> {
            let mut done = 0;
            let mut secs = 0.0;
            while done < total {
                let n = batch.min(total - done);
                rig.offer_new_flows(n)?;
                let (events, _) = rig.consumer.drain_events()?;
                ensure!(
                    events.len() as u64 == n,
                    "records lost while filling the pipeline"
                );
                let start = thread_cpu_time();
                pipeline.ingest(&events);
                secs += thread_cpu_time().saturating_sub(start).as_secs_f64();
                done += n;
            }
            Ok(secs / total as f64 * 1e9)
        };
        let filling = phase(self, AGENT_FLOW_LIMIT as u64, 8192)?;
        ensure!(
            pipeline.tracked_flows() == AGENT_FLOW_LIMIT,
            "the pipeline did not fill"
        );
        let full = phase(self, extra, 100)?;
        let expected = folds_beyond_the_limit(AGENT_FLOW_LIMIT as u64, extra);
        ensure!(
            pipeline.counters().summarised == expected,
            "expected {expected} flows folded after {extra} beyond the limit, got {}",
            pipeline.counters().summarised
        );
        ensure!(self.consumer.ringbuf_lost()? == lost_before, "records lost");
        Ok((filling, full))
    }
}

/// How many flows the aggregate folds when `extra` new flows arrive at a
/// full `limit`: each time it goes over, it folds down to the limit less a
/// tenth (see `Aggregator::enforce_limit`).
fn folds_beyond_the_limit(limit: u64, extra: u64) -> u64 {
    let low_water = limit - (limit / 10).clamp(1, limit - 1);
    let (mut tracked, mut folded) = (limit, 0);
    for _ in 0..extra {
        tracked += 1;
        if tracked > limit {
            folded += tracked - low_water;
            tracked = low_water;
        }
    }
    folded
}

/// The generator: paced to `config.rate` (or flat out) for `secs`.
/// Returns records offered and the seconds it took.
fn generate(
    datapath: &Datapath,
    config: &Config,
    secs: f64,
    next_flow: &mut u64,
    template: &[u8],
    exports: &[Vec<u8>],
) -> Result<(u64, f64)> {
    let mut frame = template.to_vec();
    let total = config.rate.map(|rate| (rate * secs).round() as u64);
    let start = Instant::now();
    let mut offered = 0u64;
    let mut export_turn = 0usize;
    loop {
        let elapsed = start.elapsed().as_secs_f64();
        let due = match (config.rate, total) {
            (Some(rate), Some(total)) => {
                if offered >= total {
                    break;
                }
                ((rate * elapsed) as u64).min(total)
            }
            _ => {
                if elapsed >= secs {
                    break;
                }
                offered + 64
            }
        };
        if offered >= due {
            std::thread::sleep(Duration::from_micros(50));
            continue;
        }
        let batch = (due - offered).min(64);
        match config.source {
            Source::NewFlows => {
                for _ in 0..batch {
                    patch(&mut frame, *next_flow);
                    *next_flow += 1;
                    let outcome = datapath.test_run(Hook::FromContainer, &frame, 1)?;
                    if outcome.action != TC_CONTINUE {
                        bail!(
                            "a new-flow packet was not forwarded: action {}",
                            outcome.action
                        );
                    }
                }
            }
            Source::Exports => {
                let frame = &exports[export_turn % exports.len()];
                export_turn += 1;
                let outcome = datapath.test_run(Hook::FromContainer, frame, batch as u32)?;
                if outcome.action != TC_CONTINUE {
                    bail!(
                        "an export packet was not forwarded: action {}",
                        outcome.action
                    );
                }
            }
        }
        offered += batch;
    }
    Ok((offered, start.elapsed().as_secs_f64()))
}

/// Runs `f` with the calling thread held on its current CPU, then lets it
/// move again.
///
/// The generator counts one record per program run, but with a 1 ns export
/// interval that holds only on one CPU: BPF_PROG_TEST_RUN with `repeat`
/// may move to another CPU between repeats (it reschedules when asked to),
/// and a repeat that lands where the clock reads no later than the flow's
/// last record (`bpf_ktime_get_ns` across this VM's CPUs; the program
/// never lets a flow's time go back) finds no interval elapsed and emits
/// nothing. Seen here as 0.2–0.3% of export records neither received nor
/// lost once the reader thread shared the CPUs; held on one CPU, every
/// repeat emits. Threads started before keep their own affinity.
fn on_one_cpu<T>(f: impl FnOnce() -> T) -> Result<T> {
    use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
    use nix::unistd::Pid;
    let all = sched_getaffinity(Pid::from_raw(0)).context("reading the CPU affinity")?;
    // SAFETY: sched_getcpu has no preconditions; -1 means it failed.
    let here = unsafe { nix::libc::sched_getcpu() };
    let mut one = CpuSet::new();
    one.set(usize::try_from(here).unwrap_or(0))
        .context("choosing the generator's CPU")?;
    sched_setaffinity(Pid::from_raw(0), &one).context("holding the generator on one CPU")?;
    let out = f();
    sched_setaffinity(Pid::from_raw(0), &all).context("restoring the CPU affinity")?;
    Ok(out)
}

/// The former consumer: what the agent's drain tick did, every `interval`,
/// until the generator is done; then one last drain.
fn consume(
    datapath: &mut Datapath,
    pipeline: &Pipeline,
    interval: Duration,
    done: &AtomicBool,
) -> Result<Outcome> {
    let mut outcome = Outcome::default();
    let mut next = Instant::now() + interval;
    loop {
        let last = done.load(Ordering::Acquire);
        if !last {
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            }
            // Missed ticks are skipped, as the agent's interval does.
            while next <= Instant::now() {
                next += interval;
            }
        }
        let t0 = Instant::now();
        let (events, malformed) = datapath.drain_events()?;
        let t1 = Instant::now();
        ensure!(malformed == 0, "{malformed} malformed records");
        let cpu = thread_cpu_time();
        pipeline.ingest(&events);
        let cpu = thread_cpu_time().saturating_sub(cpu);
        let t2 = Instant::now();
        outcome.drain_secs += (t1 - t0).as_secs_f64();
        outcome.ingest_secs += (t2 - t1).as_secs_f64();
        outcome.ingest_cpu_secs += cpu.as_secs_f64();
        outcome.received += events.len() as u64;
        outcome.max_batch = outcome.max_batch.max(events.len());
        if last {
            return Ok(outcome);
        }
    }
}

fn rate_label(rate: Option<f64>) -> String {
    match rate {
        Some(rate) => thousands(rate),
        None => "flat out".to_owned(),
    }
}

fn thousands(value: f64) -> String {
    let digits = format!("{value:.0}");
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn main() -> Result<()> {
    let args = BenchArgs::from_env();
    ensure!(
        netwatch::host::is_root(),
        "bench-pipeline loads BPF programs: run it as root (cargo xtask bench pipeline)"
    );
    let secs = args.pick(2.0, 0.15);
    let rounds = args.pick(3, 1);
    let reader = Consumer::Reader;
    let config = |source, consumer, rate| Config {
        source,
        consumer,
        rate,
    };
    let configs: Vec<Config> = if args.smoke {
        vec![
            config(Source::NewFlows, reader, Some(20_000.0)),
            config(Source::NewFlows, reader, None),
            config(Source::Exports, reader, Some(1_000_000.0)),
        ]
    } else {
        let mut configs = Vec::new();
        for rate in [10_000.0, 40_000.0, 100_000.0, 200_000.0, 300_000.0] {
            configs.push(config(Source::NewFlows, reader, Some(rate)));
        }
        configs.push(config(Source::NewFlows, reader, None));
        configs.push(config(
            Source::NewFlows,
            Consumer::Tick(OLD_TICK),
            Some(100_000.0),
        ));
        for rate in [250_000.0, 500_000.0, 1_000_000.0, 1_500_000.0] {
            configs.push(config(Source::Exports, reader, Some(rate)));
        }
        configs.push(config(Source::Exports, reader, None));
        configs.push(config(
            Source::Exports,
            Consumer::Tick(OLD_TICK),
            Some(1_000_000.0),
        ));
        configs
    };
    let mut rig = Rig::new()?;
    let started = Instant::now();
    let mut outcomes: Vec<Vec<Outcome>> = vec![Vec::new(); configs.len()];
    interleaved(&configs, rounds, |config| -> Result<f64> {
        let outcome = rig.run(config, secs)?;
        let i = configs
            .iter()
            .position(|c| std::ptr::eq(c, config))
            .expect("a configuration of the list");
        eprintln!(
            "{} {} rate {}: offered {} ({:.0}/s) received {} lost {} (wakeups {}, timeouts {}, largest batch {})",
            config.source.name(),
            config.consumer.name(),
            rate_label(config.rate),
            outcome.offered,
            outcome.offered_rate(),
            outcome.received,
            outcome.lost,
            outcome.wakeups,
            outcome.timeouts,
            outcome.max_batch,
        );
        outcomes[i].push(outcome);
        Ok(outcome.offered_rate())
    })?;
    eprintln!("rate runs took {:.1} s", started.elapsed().as_secs_f64());
    // A whole fold cycle: the first record beyond the limit folds a tenth
    // of it, the next tenth fold nothing.
    let extra = args.pick(AGENT_FLOW_LIMIT as u64 / 10 + 1, 20);
    let (filling_ns, full_ns) = rig.at_limit(extra)?;
    eprintln!("ingest per new flow: {filling_ns:.0} ns filling, {full_ns:.0} ns at the limit");

    let capacity = names::EVENTS_BYTES as usize / RECORD_SLOT;
    let mut table = Table::new(&[
        "records from",
        "consumer",
        "offered rate (target)",
        "offered/s (median)",
        "offered",
        "received",
        "lost (kernel counter)",
        "loss",
        "drain ns/record",
        "ingest ns/record (wall)",
        "ingest CPU ns/record",
        "largest drain",
        "wakeups (kernel / timeout)",
    ]);
    // Per source and consumer: the highest offered rate with no loss in
    // any round.
    let mut ceilings: Vec<(Source, Consumer, f64)> = Vec::new();
    // (source, wall ns, CPU ns) per record.
    let mut ingest_ns_by_source: Vec<(Source, f64, f64)> = Vec::new();
    let mut flat_out: Vec<(Source, f64)> = Vec::new();
    let mut losses: Vec<RowLoss> = Vec::new();
    for (config, runs) in configs.iter().zip(&outcomes) {
        let offered: u64 = runs.iter().map(|o| o.offered).sum();
        let received: u64 = runs.iter().map(|o| o.received).sum();
        let lost: u64 = runs.iter().map(|o| o.lost).sum();
        let rate = median(&runs.iter().map(Outcome::offered_rate).collect::<Vec<_>>());
        let per = |secs: f64| {
            if received > 0 {
                secs / received as f64 * 1e9
            } else {
                f64::NAN
            }
        };
        let drain_ns = per(runs.iter().map(|o| o.drain_secs).sum());
        let ingest_ns = per(runs.iter().map(|o| o.ingest_secs).sum());
        let ingest_cpu_ns = per(runs.iter().map(|o| o.ingest_cpu_secs).sum());
        if received > 10_000 && config.consumer == Consumer::Reader {
            ingest_ns_by_source.push((config.source, ingest_ns, ingest_cpu_ns));
        }
        if config.rate.is_none() {
            flat_out.push((config.source, rate));
        }
        losses.push((
            config.source,
            config.consumer,
            config.rate,
            rate,
            offered,
            lost,
        ));
        if lost == 0 {
            match ceilings
                .iter_mut()
                .find(|(s, c, _)| *s == config.source && *c == config.consumer)
            {
                Some(entry) => entry.2 = entry.2.max(rate),
                None => ceilings.push((config.source, config.consumer, rate)),
            }
        }
        let wakeups = match config.consumer {
            Consumer::Reader => format!(
                "{} / {}",
                runs.iter().map(|o| o.wakeups).sum::<u64>(),
                runs.iter().map(|o| o.timeouts).sum::<u64>()
            ),
            Consumer::Tick(_) => "-".to_owned(),
        };
        table.row(vec![
            config.source.name().to_owned(),
            config.consumer.name(),
            rate_label(config.rate),
            thousands(rate),
            offered.to_string(),
            received.to_string(),
            lost.to_string(),
            format!("{:.1}%", lost as f64 / offered.max(1) as f64 * 100.0),
            format!("{drain_ns:.0}"),
            format!("{ingest_ns:.0}"),
            format!("{ingest_cpu_ns:.0}"),
            runs.iter()
                .map(|o| o.max_batch)
                .max()
                .unwrap_or(0)
                .to_string(),
            wakeups,
        ]);
    }
    let ingest_range = |source: Source, cpu: bool| {
        let all: Vec<f64> = ingest_ns_by_source
            .iter()
            .filter(|(s, _, _)| *s == source)
            .map(|&(_, wall, on_cpu)| if cpu { on_cpu } else { wall })
            .collect();
        (
            all.iter().copied().fold(f64::INFINITY, f64::min),
            all.iter().copied().fold(0.0, f64::max),
        )
    };
    let mut section = Section::new("Event pipeline");
    section.text(&format!(
        "Flow records per second the agent's pipeline takes in, and what is lost above \
         that. A generator thread runs the real `from_container` program with \
         BPF_PROG_TEST_RUN at a paced rate; each run emits one ring buffer record \
         (a never-seen 5-tuple's `flow-open`, or with `repeat` on {EXPORT_FLOWS} established \
         flows and a 1 ns export interval one `flow-export` per repeat). The consumer is the \
         agent's: `flows::RecordReader` on a second load of the datapath sharing the pinned \
         maps, on its own thread, asleep in epoll on the ring's fd until the kernel wakes it \
         (records are submitted with `BPF_RB_NO_WAKEUP` until the ring holds a sixteenth of \
         its size, then with `BPF_RB_FORCE_WAKEUP`) or its {READ_TIMEOUT:?} timeout passes, \
         into a fresh `flows::Pipeline` per run (a flow limit no run reaches; the default \
         limit is measured below) with no observer attached, as an agent without `observe` \
         or a flow log runs. The rows with a 250 ms tick are the agent's former consumer \
         (`Datapath::drain_events` on a timer) on today's ring, for comparison. \
         Offered = received + lost (the kernel's `RINGBUF_LOST` counter) is checked for \
         every run. {rounds} interleaved rounds of {secs} s per row; offered/s is the median \
         round, counts are summed over rounds. The ring buffer is {} KiB and holds \
         {capacity} records of {RECORD_SLOT} bytes (88-byte record + 8-byte header). Goals: \
         1,000,000 export records/s and 300,000 new-flow records/s without loss, ingest \
         under 1 µs per record. Generator and consumer share this machine's two cores \
         (with the kernel's softirq work and whatever else runs).",
        names::EVENTS_BYTES / 1024
    ));
    section.table(&table);
    let mut limit_table = Table::new(&[
        "pipeline state",
        "ingest CPU ns per new-flow record",
        "max records/s on one core",
    ]);
    limit_table.row(vec![
        format!(
            "filling up to the default --flow-limit ({})",
            thousands(AGENT_FLOW_LIMIT as f64)
        ),
        format!("{filling_ns:.0}"),
        thousands(1e9 / filling_ns),
    ]);
    limit_table.row(vec![
        format!("at the limit ({extra} more new flows; the first folds a tenth of the limit)"),
        format!("{full_ns:.0}"),
        thousands(1e9 / full_ns),
    ]);
    section.text(
        "The rows above start each run with an empty pipeline and a flow limit no run \
         reaches. An agent that already keeps its default 100,000 flows pays more per new \
         flow, measured through the same kernel → ring buffer → ingest path (the \
         measuring thread's CPU time in `Pipeline::ingest`):",
    );
    section.table(&limit_table);
    section.text(&verdict_text(
        &ceilings,
        &losses,
        &flat_out,
        Ingest {
            new_cpu: ingest_range(Source::NewFlows, true),
            export_cpu: ingest_range(Source::Exports, true),
            new_wall: ingest_range(Source::NewFlows, false),
            export_wall: ingest_range(Source::Exports, false),
        },
        full_ns,
    ));
    section.emit(&args)?;
    Ok(())
}

/// Ingest per record in the reader rows, (lowest, highest) over rows.
struct Ingest {
    new_cpu: (f64, f64),
    export_cpu: (f64, f64),
    new_wall: (f64, f64),
    export_wall: (f64, f64),
}

/// One row: source, consumer, target rate, median offered rate, records
/// offered and lost.
type RowLoss = (Source, Consumer, Option<f64>, f64, u64, u64);

/// Says which goals were met from what was measured.
fn verdict_text(
    ceilings: &[(Source, Consumer, f64)],
    losses: &[RowLoss],
    flat_out: &[(Source, f64)],
    ingest: Ingest,
    at_limit_ns: f64,
) -> String {
    let ceiling = |source: Source, consumer: Consumer| {
        ceilings
            .iter()
            .find(|(s, c, _)| *s == source && *c == consumer)
            .map_or(0.0, |c| c.2)
    };
    let generator = |source: Source| {
        flat_out
            .iter()
            .filter(|(s, _)| *s == source)
            .map(|(_, r)| *r)
            .fold(0.0, f64::max)
    };
    // Median offered rate, records offered and lost at one target rate.
    let at = |source: Source, consumer: Consumer, rate: f64| {
        losses
            .iter()
            .find(|(s, c, r, _, _, _)| *s == source && *c == consumer && *r == Some(rate))
            .map(|(_, _, _, offered_rate, offered, lost)| (*offered_rate, *offered, *lost))
    };
    // A goal is met only at the rate it names: a generator that could not
    // offer it (a busy machine) proves nothing about it.
    let goal = |source: Source, rate: f64| match at(source, Consumer::Reader, rate) {
        Some((offered_rate, offered, lost)) if offered_rate < rate * 0.98 => format!(
            "not shown: the generator offered only {}/s ({lost} of {offered} lost)",
            thousands(offered_rate)
        ),
        Some((_, offered, 0)) => format!("met (0 of {offered} lost)"),
        Some((_, offered, lost)) => format!(
            "missed ({lost} of {offered} lost, {:.2}%)",
            lost as f64 / offered as f64 * 100.0
        ),
        None => "not measured".to_owned(),
    };
    let old = |source: Source, rate: f64| match at(source, Consumer::Tick(OLD_TICK), rate) {
        Some((offered_rate, offered, lost)) => format!(
            "{lost} of {offered} lost (offered {}/s)",
            thousands(offered_rate)
        ),
        None => "not measured".to_owned(),
    };
    format!(
        "**Verdict.** 1,000,000 export records/s: {}; the former 250 ms tick on the same \
         ring: {}. 300,000 new-flow records/s: {}; the former tick at 100,000/s: {}. \
         Highest loss-free rate measured with the reader: {}/s export records (the generator \
         flat out offers {}/s) and {}/s new-flow records (the generator flat out offers \
         {}/s, one BPF_PROG_TEST_RUN syscall each, on a core it shares with the reader). \
         Ingest in the reader with no observer, as the reader thread's CPU time: \
         {:.0}–{:.0} ns per export record, {:.0}–{:.0} ns per new-flow record (goal < 1 µs: \
         {}); by the wall clock, which also counts the thread's waits for a core it shares \
         with the generator (and the hypervisor's steal), {:.0}–{:.0} and {:.0}–{:.0} ns. \
         With the default 100,000 flows \
         kept, a new flow costs {:.0} ns on average (`Aggregator::enforce_limit` folds the \
         longest-idle tenth of the limit at once). An observer (`observe`, the flow log) \
         makes every record described (a `FlowEntry` with its strings), which costs more \
         than the silent path measured here.",
        goal(Source::Exports, 1_000_000.0),
        old(Source::Exports, 1_000_000.0),
        goal(Source::NewFlows, 300_000.0),
        old(Source::NewFlows, 100_000.0),
        thousands(ceiling(Source::Exports, Consumer::Reader)),
        thousands(generator(Source::Exports)),
        thousands(ceiling(Source::NewFlows, Consumer::Reader)),
        thousands(generator(Source::NewFlows)),
        ingest.export_cpu.0,
        ingest.export_cpu.1,
        ingest.new_cpu.0,
        ingest.new_cpu.1,
        if ingest.new_cpu.0.is_infinite() || ingest.export_cpu.0.is_infinite() {
            "not measured"
        } else if ingest.new_cpu.1.max(ingest.export_cpu.1) < 1000.0 {
            "met"
        } else {
            "missed"
        },
        ingest.export_wall.0,
        ingest.export_wall.1,
        ingest.new_wall.0,
        ingest.new_wall.1,
        at_limit_ns,
    )
}
