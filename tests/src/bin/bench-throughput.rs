//! `cargo xtask bench throughput`: what netwatch costs real traffic through
//! a container's veth, side by side with no program and with tcpdump
//! capturing on the same veth.
//!
//! The topology is [`TestHost`]'s Docker-like host in namespaces this
//! process creates: a "container" C and a peer P on a bridge in a "host"
//! namespace H, C's host-side veth `vc`. Traffic goes from C to P (through
//! `vc`'s ingress, the bridge, `vp`'s egress), so every packet C sends
//! passes netwatch's `from_container` once and every reply its
//! `to_container`, as on a Docker host where netwatch watches C.
//!
//! Configurations, alternated round by round:
//! - no program;
//! - enforce+observe: the programs attached and pinned as the agent
//!   attaches them (`Datapath::attach_veth` with a pin directory), C's
//!   policy enforced (an internal network);
//! - observe-only: as a standalone session attaches them
//!   (`attach_veth_for_session`, policy without `ENFORCE`, nothing pinned);
//! - tcpdump capturing on `vc` to /dev/null.
//!
//! Metrics: TCP throughput (iperf3 in the namespaces, client pinned to CPU 0,
//! server to CPU 1) and small-packet UDP packets per second (this binary's
//! own multi-flow sender: 64 source ports, 64-byte payloads, `sendmmsg`
//! batches; the receiving socket in P counts what arrives).
//!
//! Network safety: before anything is sent, `ip route get` in C must name
//! C's own `eth0` for P's address (and the reverse). Everything is removed
//! by guards, also when a step fails: namespaces (which detaches programs),
//! pins, the iperf3 server and tcpdump.

use std::{
    fs::File,
    io::{BufRead, BufReader},
    net::{IpAddr, Ipv4Addr, SocketAddrV4, UdpSocket},
    os::fd::AsRawFd,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use netwatch::{
    datapath::{
        Attachment, Datapath, DropReasonNames, LoadOptions,
        bench::{BenchPrograms, Reference},
        detach_interface,
    },
    policy::{Cidr, InterfacePolicy, compile},
};
use netwatch_common::{
    endpoint::{EndpointPolicy, policy_flags},
    names,
};
use netwatch_tests::{
    bench::{
        BenchArgs, Rounds, Section, Table, interleaved_rounds, keep_rounds, median, raise_priority,
    },
    fixture::tcx_program_counts,
    netns::{PinDir, TestHost},
    reach::{Netns, assert_route_via},
};
use nix::{
    libc,
    sched::{CloneFlags, CpuSet, sched_setaffinity, setns},
    sys::signal::{Signal, kill},
    unistd::Pid,
};

const IPERF_PORT: u16 = 5201;
const UDP_PORT: u16 = 9000;
/// A port nothing in P listens on: the live-cost drop load sends there, and
/// P's kernel frees each datagram (`NO_SOCKET`) through `kfree_skb`.
const UDP_CLOSED_PORT: u16 = 9001;
/// Source ports of the UDP sender: one socket each.
const UDP_FLOWS: usize = 64;
const UDP_PAYLOAD: usize = 64;
/// Datagrams per `sendmmsg` call.
const UDP_BATCH: usize = 32;
/// The CPU the senders (iperf3 client, UDP sender) run on; receivers run
/// on the other one.
const SENDER_CPU: usize = 0;
const RECEIVER_CPU: usize = 1;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Config {
    NoProgram,
    EnforceObserve,
    EnforceObserveKernelDrops,
    ObserveOnly,
    Tcpdump,
}

impl Config {
    const ALL: [Config; 5] = [
        Config::NoProgram,
        Config::EnforceObserve,
        Config::EnforceObserveKernelDrops,
        Config::ObserveOnly,
        Config::Tcpdump,
    ];

    fn label(self) -> &'static str {
        match self {
            Config::NoProgram => "no program",
            Config::EnforceObserve => "netwatch enforce+observe (as the agent attaches)",
            Config::EnforceObserveKernelDrops => {
                "netwatch enforce+observe + kernel drop program (kfree_skb), as the agent runs"
            }
            Config::ObserveOnly => "netwatch observe-only (as a standalone session attaches)",
            Config::Tcpdump => "tcpdump -w /dev/null on the same veth",
        }
    }
}

/// The live-cost goal per program run (issue 16), under the TCP and the
/// small-packet UDP load.
const LIVE_GOAL_NS: f64 = 150.0;
/// The live-cost measurements' loads.
const LOAD_TCP: &str = "TCP";
const LOAD_UDP: &str = "UDP";
/// Small-packet UDP to a closed port: the kernel drop program's warm cost,
/// which the other two loads run too seldom to show.
const LOAD_DROPS: &str = "UDP to a closed port";

/// What one program did during one measurement with run-time statistics
/// on.
struct ProgramRuns {
    load: &'static str,
    program: &'static str,
    /// A reference program (`bench_counter`, `bench_headers`, `bench_flow`,
    /// `bench_kfree`), not one of netwatch's: no goal.
    reference: bool,
    runs: u64,
    time: Duration,
    elapsed: Duration,
}

impl ProgramRuns {
    fn per_run_ns(&self) -> f64 {
        if self.runs == 0 {
            0.0
        } else {
            self.time.as_nanos() as f64 / self.runs as f64
        }
    }

    fn cpu_share(&self) -> f64 {
        self.time.as_secs_f64() / self.elapsed.as_secs_f64()
    }
}

/// One row per load and program, in the order they first came: runs,
/// run time and measured time summed over the rounds.
fn summed_by_program(runs: Vec<ProgramRuns>) -> Vec<ProgramRuns> {
    let mut summed: Vec<ProgramRuns> = Vec::new();
    for r in runs {
        match summed
            .iter_mut()
            .find(|s| s.load == r.load && s.program == r.program)
        {
            Some(s) => {
                s.runs += r.runs;
                s.time += r.time;
                s.elapsed += r.elapsed;
            }
            None => summed.push(r),
        }
    }
    summed
}

/// Runs `load` once and returns what each of `programs` did meanwhile,
/// from `counts` (runs and run time, in the order of `programs`) read
/// before and after.
fn runs_under_load(
    load: &'static str,
    programs: &[&'static str],
    reference: bool,
    run_load: impl FnOnce() -> Result<()>,
    counts: impl Fn() -> Result<Vec<(u64, Duration)>>,
) -> Result<Vec<ProgramRuns>> {
    let before = counts()?;
    let start = Instant::now();
    run_load()?;
    let elapsed = start.elapsed();
    let after = counts()?;
    ensure!(
        before.len() == programs.len() && after.len() == programs.len(),
        "run counts for {} programs, expected {}",
        after.len(),
        programs.len()
    );
    Ok(programs
        .iter()
        .zip(before.into_iter().zip(after))
        .map(
            |(&program, ((runs_before, time_before), (runs, time)))| ProgramRuns {
                load,
                program,
                reference,
                runs: runs - runs_before,
                time: time.saturating_sub(time_before),
                elapsed,
            },
        )
        .collect())
}

/// What the reference rows say of the live-cost goal, load by load: where
/// the per-flow floor (`bench_flow`) itself is over the goal, no program
/// that keeps per-flow state meets it there, and netwatch's distance to
/// that floor is what netwatch could still win.
fn floors_text(runs: &[ProgramRuns]) -> String {
    let measured = |load: &str, program: &str| {
        runs.iter()
            .find(|r| r.load == load && r.program == program && r.runs > 0)
    };
    let per_run = |load: &str, program: &str| measured(load, program).map(ProgramRuns::per_run_ns);
    let mut parts = Vec::new();
    for load in [LOAD_TCP, LOAD_UDP] {
        let (Some(headers), Some(flow)) = (
            per_run(load, names::PROG_BENCH_HEADERS),
            per_run(load, names::PROG_BENCH_FLOW),
        ) else {
            continue;
        };
        let over: Vec<String> = [names::PROG_FROM_CONTAINER, names::PROG_TO_CONTAINER]
            .into_iter()
            .filter_map(|program| {
                per_run(load, program).map(|ns| format!("`{program}` {:+.0} ns", ns - flow))
            })
            .collect();
        let floor = if flow > LIVE_GOAL_NS {
            format!(
                "over the {LIVE_GOAL_NS:.0} ns goal by itself, so a program that keeps \
                 per-flow state in a BPF hash table, as netwatch does, does not meet the \
                 goal under this load on this machine"
            )
        } else {
            format!("within the {LIVE_GOAL_NS:.0} ns goal")
        };
        parts.push(format!(
            "under {load}, reading the headers took {headers:.0} ns per run and keeping \
             per-flow counters besides {flow:.0} ns, {floor}; netwatch's programs against \
             that floor: {}",
            over.join(", ")
        ));
    }
    for load in [LOAD_TCP, LOAD_UDP, LOAD_DROPS] {
        let (Some(counter), Some(drops)) = (
            measured(load, names::PROG_BENCH_KFREE),
            measured(load, names::PROG_KERNEL_DROPS),
        ) else {
            continue;
        };
        parts.push(format!(
            "on `kfree_skb` under {load}, a counter alone took {:.0} ns per run \
             ({} runs) and `kernel_drops` {:.0} ns ({} runs)",
            counter.per_run_ns(),
            counter.runs,
            drops.per_run_ns(),
            drops.runs,
        ));
    }
    if parts.is_empty() {
        return "No floor in this run: the reference programs did not run under the \
                loads, or netwatch's programs beside them did not."
            .to_owned();
    }
    format!(
        "Floors, from the reference rows measured right after netwatch's: {}. What \
         netwatch does beyond `bench_flow` on a packet of an established flow: the \
         policy generation, the cached verdict's checks, the per-reason counter, the \
         tick clock and the export check, each a cache line or two that the \
         traffic between two runs has pushed out.",
        parts.join("; ")
    )
}

/// The namespaces, the loaded enforcing datapath and what it needs.
struct Bench {
    host: TestHost,
    p: Netns,
    h: Netns,
    vc_ifindex: u32,
    pin_dir: PinDir,
    /// Loaded once with the pin directory; attached and detached per round.
    enforcing: Datapath,
    observe_tables: netwatch::policy::CompiledTables,
    enforce_tables: netwatch::policy::CompiledTables,
    /// Kernel drop records taken after each measurement with the kernel
    /// drop program, and the packets they count.
    kernel_drop_records: u64,
    /// The kernel's reasons for them, as netwatch names them.
    kernel_drop_reasons: Vec<String>,
}

/// What a configuration holds while it is applied; dropping it undoes it.
enum Applied {
    Nothing,
    /// The enforcing datapath's links on vc, pinned under `pin_root`;
    /// removing the pins detaches them.
    Pinned {
        pin_root: PathBuf,
        ifindex: u32,
    },
    /// As `Pinned`, plus a datapath holding the kernel drop program on
    /// `kfree_skb` (C's address guarded): it goes when this is dropped.
    PinnedWithKernelDrops {
        pin_root: PathBuf,
        ifindex: u32,
        kernel_drops: Datapath,
        reasons: DropReasonNames,
    },
    /// A session's datapath: its links go when it is dropped.
    Session(Datapath),
    Tcpdump(#[expect(dead_code, reason = "held for its Drop")] ChildGuard),
}

impl Drop for Applied {
    fn drop(&mut self) {
        if let Applied::Pinned { pin_root, ifindex }
        | Applied::PinnedWithKernelDrops {
            pin_root, ifindex, ..
        } = self
            && let Err(e) = detach_interface(pin_root, *ifindex)
        {
            eprintln!("bench-throughput: cannot detach from vc: {e}");
        }
    }
}

impl Bench {
    fn create() -> Result<Bench> {
        let host = TestHost::create();
        let (c, p, h) = (
            Netns::named(&host.container_ns()),
            Netns::named(&host.peer_ns()),
            Netns::named(&host.host_ns()),
        );
        // Network safety: the only traffic is C <-> P over their own eth0.
        assert_route_via(&c, IpAddr::V4(host.peer_ip()), &["eth0"]);
        assert_route_via(&p, IpAddr::V4(host.container_ip()), &["eth0"]);
        let vc_ifindex = h
            .run(|| nix::net::if_::if_nametoindex(TestHost::CONTAINER_VETH))
            .context("vc in the host namespace")?;
        let network = Cidr::new(IpAddr::V4(host.gateway()), 24)?;
        let spec = |flags: u32| InterfacePolicy {
            ifindex: vc_ifindex,
            policy: EndpointPolicy {
                flags: flags | policy_flags::HAS_IPV4,
                scope: 1,
                ipv4: host.container_ip().octets(),
                gateway_v4: host.gateway().octets(),
                mac: host.mac(&host.container_ns()),
                ..EndpointPolicy::default()
            },
            networks: vec![network],
            published: Vec::new(),
            allow: Vec::new(),
        };
        let pin_dir = PinDir::create();
        let mut enforcing = Datapath::load(&LoadOptions {
            pin_root: Some(pin_dir.0.clone()),
            ..LoadOptions::default()
        })
        .context("loading netwatch's programs")?;
        let enforce_tables = compile(&[spec(policy_flags::ENFORCE)], &[])?;
        enforcing.apply(&enforce_tables)?;
        let observe_tables = compile(&[spec(0)], &[])?;
        Ok(Bench {
            host,
            p,
            h,
            vc_ifindex,
            pin_dir,
            enforcing,
            observe_tables,
            enforce_tables,
            kernel_drop_records: 0,
            kernel_drop_reasons: Vec::new(),
        })
    }

    fn peer(&self) -> Ipv4Addr {
        self.host.peer_ip()
    }

    /// Programs attached to vc (ingress, egress).
    fn programs_on_vc(&self) -> (usize, usize) {
        self.h.run(|| tcx_program_counts(TestHost::CONTAINER_VETH))
    }

    fn apply(&mut self, config: Config) -> Result<Applied> {
        ensure!(
            self.programs_on_vc() == (0, 0),
            "vc still has programs attached before applying {config:?}"
        );
        let applied = match config {
            Config::NoProgram => Applied::Nothing,
            Config::EnforceObserve | Config::EnforceObserveKernelDrops => {
                // Loaded first: nothing is attached to undo if it fails.
                let kernel_drops = if config == Config::EnforceObserveKernelDrops {
                    let mut kernel_drops = Datapath::load(&LoadOptions::default())?;
                    kernel_drops.apply(&self.enforce_tables)?;
                    let reasons = kernel_drops.attach_kernel_drops()?;
                    Some((kernel_drops, reasons))
                } else {
                    None
                };
                let ifindex = self.vc_ifindex;
                let enforcing = &mut self.enforcing;
                let attached = self
                    .h
                    .run(|| enforcing.attach_veth(TestHost::CONTAINER_VETH, ifindex))?;
                let pin_root = self.pin_dir.0.clone();
                let applied = match kernel_drops {
                    Some((kernel_drops, reasons)) => Applied::PinnedWithKernelDrops {
                        pin_root,
                        ifindex,
                        kernel_drops,
                        reasons,
                    },
                    None => Applied::Pinned { pin_root, ifindex },
                };
                ensure!(attached == Attachment::Attached, "vc was already attached");
                applied
            }
            Config::ObserveOnly => {
                let mut session = Datapath::load(&LoadOptions::default())?;
                session.apply(&self.observe_tables)?;
                let ifindex = self.vc_ifindex;
                self.h
                    .run(|| session.attach_veth_for_session(TestHost::CONTAINER_VETH, ifindex))?;
                Applied::Session(session)
            }
            Config::Tcpdump => Applied::Tcpdump(start_tcpdump(&self.host.host_ns())?),
        };
        let expected = match config {
            Config::EnforceObserve | Config::EnforceObserveKernelDrops | Config::ObserveOnly => {
                (1, 1)
            }
            Config::NoProgram | Config::Tcpdump => (0, 0),
        };
        ensure!(
            self.programs_on_vc() == expected,
            "{config:?}: vc has {:?} programs attached, expected {expected:?}",
            self.programs_on_vc()
        );
        Ok(applied)
    }

    /// Packets netwatch forwarded under `applied`, by its own counters (the
    /// proof that the traffic went through it); None without netwatch.
    fn forwarded(&self, applied: &Applied) -> Result<Option<u64>> {
        Ok(match applied {
            Applied::Pinned { .. } | Applied::PinnedWithKernelDrops { .. } => {
                Some(self.enforcing.verdict_counts()?[0])
            }
            Applied::Session(datapath) => Some(datapath.verdict_counts()?[0]),
            Applied::Nothing | Applied::Tcpdump(_) => None,
        })
    }
}

/// A child process that is stopped (SIGTERM, then SIGKILL) and reaped when
/// dropped.
struct ChildGuard {
    child: Child,
    what: &'static str,
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let pid = Pid::from_raw(self.child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "bench-throughput: {} ignored SIGTERM; killing it",
            self.what
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// tcpdump on vc in the host namespace, once it says it is capturing.
fn start_tcpdump(host_ns: &str) -> Result<ChildGuard> {
    let mut child = Command::new("ip")
        .args([
            "netns",
            "exec",
            host_ns,
            "tcpdump",
            "-i",
            TestHost::CONTAINER_VETH,
        ])
        .args(["-n", "-w", "/dev/null"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting tcpdump (cargo xtask setup installs it)")?;
    let stderr = child.stderr.take().expect("piped");
    let guard = ChildGuard {
        child,
        what: "tcpdump",
    };
    let mut lines = BufReader::new(stderr).lines();
    loop {
        match lines.next() {
            Some(Ok(line)) if line.contains("listening on") => break,
            Some(Ok(_)) => {}
            _ => bail!("tcpdump exited before capturing"),
        }
    }
    // Keep draining its stderr so it never blocks on a full pipe.
    thread::spawn(move || for _ in lines {});
    Ok(guard)
}

/// The iperf3 server in P, for the whole run.
fn start_iperf_server(peer_ns: &str) -> Result<ChildGuard> {
    let child = Command::new("ip")
        .args(["netns", "exec", peer_ns, "iperf3", "-s"])
        .args([
            "-p",
            &IPERF_PORT.to_string(),
            "-A",
            &RECEIVER_CPU.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting iperf3 (cargo xtask setup installs it)")?;
    Ok(ChildGuard {
        child,
        what: "iperf3 server",
    })
}

/// One iperf3 run from C to P: Gbit/s received, and CPU time of client and
/// server together (as iperf3 reports it, softirq work done in their
/// context included) in ns per KB sent. Retries briefly while the server is
/// not listening yet.
fn iperf(bench: &Bench, seconds: u32) -> Result<(f64, f64)> {
    let mut attempt = 0;
    loop {
        let output = Command::new("ip")
            .args(["netns", "exec", &bench.host.container_ns(), "iperf3", "-J"])
            .args([
                "-c",
                &bench.peer().to_string(),
                "-p",
                &IPERF_PORT.to_string(),
            ])
            .args(["-t", &seconds.to_string(), "-A", &SENDER_CPU.to_string()])
            .output()
            .context("running iperf3")?;
        let report: serde_json::Value =
            serde_json::from_slice(&output.stdout).with_context(|| {
                format!(
                    "iperf3 printed no JSON: {}",
                    String::from_utf8_lossy(&output.stderr)
                )
            })?;
        if let Some(bps) = report["end"]["sum_received"]["bits_per_second"].as_f64() {
            ensure!(output.status.success(), "iperf3 failed: {report}");
            let end = &report["end"];
            let cpu = &end["cpu_utilization_percent"];
            let (Some(host), Some(remote), Some(bytes), Some(secs)) = (
                cpu["host_total"].as_f64(),
                cpu["remote_total"].as_f64(),
                end["sum_sent"]["bytes"].as_f64(),
                end["sum_sent"]["seconds"].as_f64(),
            ) else {
                bail!("iperf3 reported no CPU use or bytes sent: {end}");
            };
            let cpu_ns = (host + remote) / 100.0 * secs * 1e9;
            return Ok((bps / 1e9, cpu_ns / (bytes / 1e3)));
        }
        attempt += 1;
        if attempt >= 20 {
            bail!("iperf3 failed: {}", report["error"]);
        }
        thread::sleep(Duration::from_millis(100));
    }
}

fn pin_to_cpu(cpu: usize) {
    let mut set = CpuSet::new();
    if set.set(cpu).is_ok() {
        let _ = sched_setaffinity(Pid::from_raw(0), &set);
    }
}

/// Moves the calling thread into the named namespace (under /run/netns).
fn enter(ns_name: &str) -> Result<()> {
    let file = File::open(format!("/run/netns/{ns_name}"))
        .with_context(|| format!("opening namespace {ns_name}"))?;
    setns(file, CloneFlags::CLONE_NEWNET).with_context(|| format!("setns into {ns_name}"))
}

/// The receiving socket in P: counts datagrams until stopped.
struct Receiver {
    received: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl Receiver {
    fn start(bench: &Bench) -> Result<Receiver> {
        let socket = bench
            .p
            .run(|| UdpSocket::bind(SocketAddrV4::new(bench.peer(), UDP_PORT)))
            .context("binding the UDP receiver in P")?;
        // The receiver spins instead of sleeping: a sleeping receiver is
        // woken per batch by an IPI from the sender's CPU, which on a VM is a
        // costly exit that would dominate and blur what is measured.
        socket.set_nonblocking(true)?;
        let size: libc::c_int = 8 << 20;
        // SAFETY: a valid socket fd and a c_int option value of the right size.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        let received = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (received, stop) = (Arc::clone(&received), Arc::clone(&stop));
            thread::spawn(move || -> Result<()> {
                pin_to_cpu(RECEIVER_CPU);
                let mut bufs = vec![[0u8; 2048]; 64];
                while !stop.load(Ordering::Relaxed) {
                    match recv_batch(&socket, &mut bufs)? {
                        0 => std::hint::spin_loop(),
                        n => {
                            received.fetch_add(n as u64, Ordering::Relaxed);
                        }
                    }
                }
                Ok(())
            })
        };
        Ok(Receiver {
            received,
            stop,
            thread: Some(thread),
        })
    }

    fn count(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            match thread.join() {
                Ok(Err(e)) => eprintln!("bench-throughput: UDP receiver failed: {e:#}"),
                Err(_) => eprintln!("bench-throughput: UDP receiver panicked"),
                Ok(Ok(())) => {}
            }
        }
    }
}

/// One non-blocking `recvmmsg`; 0 when nothing is queued.
fn recv_batch(socket: &UdpSocket, bufs: &mut [[u8; 2048]]) -> Result<usize> {
    let mut iovs: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: b.len(),
        })
        .collect();
    // Each header points at one iovec that outlives the call.
    let mut msgs: Vec<libc::mmsghdr> = iovs
        .iter_mut()
        .map(|iov| {
            // SAFETY: an all-zero mmsghdr is a valid value (null name and
            // control, no iovecs) of a plain C struct.
            let mut msg: libc::mmsghdr = unsafe { std::mem::zeroed() };
            msg.msg_hdr.msg_iov = iov;
            msg.msg_hdr.msg_iovlen = 1;
            msg
        })
        .collect();
    // SAFETY: msgs and their buffers are valid for the call.
    let n = unsafe {
        libc::recvmmsg(
            socket.as_raw_fd(),
            msgs.as_mut_ptr(),
            msgs.len() as libc::c_uint,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    if n >= 0 {
        return Ok(n as usize);
    }
    let error = std::io::Error::last_os_error();
    match error.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted => Ok(0),
        _ => Err(error).context("recvmmsg"),
    }
}

/// The multi-flow sender in C: `UDP_FLOWS` sockets (one source port each),
/// `UDP_BATCH` datagrams per `sendmmsg`, round robin, until stopped.
fn udp_sender(
    bench: &Bench,
    port: u16,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    tid: Arc<AtomicI32>,
) -> Result<JoinHandle<Result<()>>> {
    let container_ns = bench.host.container_ns();
    let peer = bench.peer();
    Ok(thread::spawn(move || -> Result<()> {
        enter(&container_ns)?;
        pin_to_cpu(SENDER_CPU);
        tid.store(nix::unistd::gettid().as_raw(), Ordering::Release);
        let sockets: Vec<UdpSocket> = (0..UDP_FLOWS)
            .map(|_| -> Result<UdpSocket> {
                let socket = UdpSocket::bind("0.0.0.0:0")?;
                socket.connect(SocketAddrV4::new(peer, port))?;
                Ok(socket)
            })
            .collect::<Result<_>>()?;
        let mut payload = [0u8; UDP_PAYLOAD];
        let mut iov = libc::iovec {
            iov_base: payload.as_mut_ptr().cast(),
            iov_len: payload.len(),
        };
        let mut msgs: Vec<libc::mmsghdr> = (0..UDP_BATCH)
            .map(|_| {
                // SAFETY: zeroed mmsghdr is valid; the socket is connected,
                // so no name is needed.
                let mut msg: libc::mmsghdr = unsafe { std::mem::zeroed() };
                msg.msg_hdr.msg_iov = &mut iov;
                msg.msg_hdr.msg_iovlen = 1;
                msg
            })
            .collect();
        while !stop.load(Ordering::Relaxed) {
            for socket in &sockets {
                // SAFETY: msgs point at `iov` and `payload`, alive here.
                let n = unsafe {
                    libc::sendmmsg(
                        socket.as_raw_fd(),
                        msgs.as_mut_ptr(),
                        msgs.len() as libc::c_uint,
                        0,
                    )
                };
                if n > 0 {
                    sent.fetch_add(n as u64, Ordering::Relaxed);
                } else {
                    let error = std::io::Error::last_os_error();
                    // A full queue or a refused port (ICMP) is not fatal.
                    if !matches!(
                        error.raw_os_error(),
                        Some(libc::ENOBUFS | libc::EAGAIN | libc::ECONNREFUSED)
                    ) {
                        return Err(error).context("sendmmsg");
                    }
                }
            }
        }
        Ok(())
    }))
}

/// Packets per second received in P while the sender runs for `window`.
/// Nanoseconds thread `tid` of this process has run on a CPU
/// (/proc/self/task/TID/schedstat; softirq work done in its context
/// included, as this kernel has no IRQ time accounting).
fn thread_runtime_ns(tid: i32) -> Result<u64> {
    let path = format!("/proc/self/task/{tid}/schedstat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    text.split_whitespace()
        .next()
        .and_then(|ns| ns.parse().ok())
        .with_context(|| format!("no runtime in {path}: {text}"))
}

/// What one UDP measurement saw.
struct UdpRun {
    received_pps: f64,
    sent_pps: f64,
    /// Sender CPU time per packet sent, in ns.
    cpu_ns_per_packet: f64,
}

fn udp_pps(bench: &Bench, warmup: Duration, window: Duration) -> Result<UdpRun> {
    // Started per measurement: it spins on the receiver CPU, which is
    // also iperf3's server's, and the TCP measurements must not share that
    // CPU with it.
    let receiver = Receiver::start(bench)?;
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let tid = Arc::new(AtomicI32::new(0));
    let sender = udp_sender(
        bench,
        UDP_PORT,
        Arc::clone(&stop),
        Arc::clone(&sent),
        Arc::clone(&tid),
    )?;
    thread::sleep(warmup);
    let tid = tid.load(Ordering::Acquire);
    ensure!(tid != 0, "the UDP sender did not start within the warm-up");
    let (received0, sent0, cpu0, start) = (
        receiver.count(),
        sent.load(Ordering::Relaxed),
        thread_runtime_ns(tid)?,
        Instant::now(),
    );
    thread::sleep(window);
    let (received1, sent1, cpu1, elapsed) = (
        receiver.count(),
        sent.load(Ordering::Relaxed),
        thread_runtime_ns(tid)?,
        start.elapsed(),
    );
    stop.store(true, Ordering::Relaxed);
    match sender.join() {
        Ok(result) => result?,
        Err(_) => bail!("the UDP sender panicked"),
    }
    let secs = elapsed.as_secs_f64();
    let sent = (sent1 - sent0) as f64;
    Ok(UdpRun {
        received_pps: (received1 - received0) as f64 / secs,
        sent_pps: sent / secs,
        cpu_ns_per_packet: (cpu1 - cpu0) as f64 / sent,
    })
}

/// The small-packet sender aimed at a closed port of P for `window`: P's
/// kernel drops every datagram, so the kernel drop program runs once per
/// packet, warm, its whole way (C's address is guarded). Returns the
/// datagrams sent.
fn udp_to_closed_port(bench: &Bench, window: Duration) -> Result<u64> {
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let sender = udp_sender(
        bench,
        UDP_CLOSED_PORT,
        Arc::clone(&stop),
        Arc::clone(&sent),
        Arc::new(AtomicI32::new(0)),
    )?;
    thread::sleep(window);
    stop.store(true, Ordering::Relaxed);
    match sender.join() {
        Ok(result) => result?,
        Err(_) => bail!("the UDP sender panicked"),
    }
    Ok(sent.load(Ordering::Relaxed))
}

/// Past this share of steal over a round, the round's figures are left
/// out (as `cargo xtask bench` reruns the datapath section past it).
const STEAL_LIMIT: f64 = 0.03;

/// "TCP: 8 of 9 rounds kept." and the like, for `keep` from
/// [`Rounds::calm`] with [`STEAL_LIMIT`].
fn kept_text(load: &str, rounds: &Rounds, keep: &[bool]) -> String {
    let kept = keep.iter().filter(|&&k| k).count();
    let stolen = rounds.steal.iter().flatten().any(|&s| s > STEAL_LIMIT);
    if kept < keep.len() {
        format!("{load}: {kept} of {} rounds kept.", keep.len())
    } else if stolen {
        format!("{load}: all {kept} rounds kept, too few were calm (the figures read slow).")
    } else {
        format!("{load}: all {kept} rounds kept.")
    }
}

/// Each round's steal share, in order ("0.4%, 12.1%, unknown").
fn steal_text(rounds: &Rounds) -> String {
    rounds
        .steal
        .iter()
        .map(|s| s.map_or("unknown".to_owned(), |s| format!("{:.1}%", s * 100.0)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Medians of one metric per configuration, as a table with ratios to no
/// program, and whether the goals hold.
struct Metric {
    name: &'static str,
    unit: &'static str,
    digits: usize,
    samples: Vec<Vec<f64>>,
    /// Lower is better (CPU time per unit): verdicts use the throughput
    /// the same CPU would give, `no program's cost / this cost`.
    cost: bool,
}

impl Metric {
    fn samples(&self, config: Config) -> &[f64] {
        let index = Config::ALL
            .iter()
            .position(|c| *c == config)
            .expect("known");
        &self.samples[index]
    }

    fn median(&self, config: Config) -> f64 {
        median(self.samples(config))
    }

    /// `config` relative to `other`: the median over rounds of the ratio
    /// of their two measurements in the same round (neighbours in time), so
    /// that slow drifts of the machine cancel out.
    fn share(&self, config: Config, other: Config) -> f64 {
        median(&self.ratios(config, other))
    }

    fn ratios(&self, config: Config, other: Config) -> Vec<f64> {
        self.samples(config)
            .iter()
            .zip(self.samples(other))
            .map(|(a, b)| a / b)
            .collect()
    }

    /// The smallest and largest round ratio of `config` to no program, as
    /// `min – max` percentages: how much the machine's noise moved them.
    fn ratio_range(&self, config: Config) -> String {
        let ratios = self.ratios(config, Config::NoProgram);
        let (min, max) = min_max(&ratios);
        format!("{:.0}% – {:.0}%", 100.0 * min, 100.0 * max)
    }

    fn table(&self) -> Table {
        let mut table = Table::new(&[
            "configuration",
            &format!("{} (median)", self.unit),
            "min – max",
            "vs no program (median of round ratios)",
            "round ratios (min – max)",
        ]);
        for (config, samples) in Config::ALL.iter().zip(&self.samples) {
            let (min, max) = min_max(samples);
            let d = self.digits;
            table.row(vec![
                config.label().to_owned(),
                format!("{:.d$}", self.median(*config)),
                format!("{min:.d$} – {max:.d$}"),
                format!("{:.1}%", 100.0 * self.share(*config, Config::NoProgram)),
                self.ratio_range(*config),
            ]);
        }
        table
    }

    /// "met"/"missed" for `config` ≥ `goal` × no program and better than
    /// tcpdump.
    fn verdict(&self, config: Config, goal: f64) -> String {
        let (mut share, mut vs_tcpdump) = (
            self.share(config, Config::NoProgram),
            self.share(config, Config::Tcpdump),
        );
        if self.cost {
            (share, vs_tcpdump) = (1.0 / share, 1.0 / vs_tcpdump);
        }
        let ratio_goal = if share >= goal {
            format!("met ({:.1}% ≥ {:.0}%)", 100.0 * share, 100.0 * goal)
        } else {
            // A miss under a tenth of a point would read "missed by 0.0
            // points (97.0% < 97%)" with one decimal.
            let points = 100.0 * (goal - share);
            let digits = if points < 0.1 { 2 } else { 1 };
            format!(
                "missed by {points:.digits$} points ({:.digits$}% < {:.0}%)",
                100.0 * share,
                100.0 * goal
            )
        };
        let tcpdump_goal = format!(
            "{} tcpdump ({:.1}% of it)",
            if vs_tcpdump > 1.0 {
                "better than"
            } else {
                "not better than"
            },
            100.0 * vs_tcpdump
        );
        format!(
            "{}{} with {}: ≥ {:.0}% of no program {ratio_goal} (round ratios {}); {tcpdump_goal}",
            self.name,
            if self.cost {
                " (as the throughput that CPU time allows)"
            } else {
                ""
            },
            config.label(),
            100.0 * goal,
            self.ratio_range(config)
        )
    }
}

fn min_max(values: &[f64]) -> (f64, f64) {
    values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(*v), hi.max(*v))
        })
}

fn main() -> Result<()> {
    let args = BenchArgs::from_env();
    raise_priority().context("raising the benchmark's priority to nice -20")?;
    netwatch_tests::fixture::require_root();
    let (tcp_rounds, udp_rounds) = args.pick((9, 11), (1, 1));
    let tcp_secs: u32 = args.pick(3, 1);
    let live_rounds: usize = args.pick(3, 1);
    // `--live-only`: only the live-cost measurements, printed; for profiling
    // the programs on real traffic (e.g. `perf record -a` beside it), with
    // `--live-secs N` for a longer TCP run.
    let live_only = args.rest.iter().any(|a| a == "--live-only");
    let live_secs: u32 = match args.rest.iter().position(|a| a == "--live-secs") {
        Some(at) => args
            .rest
            .get(at + 1)
            .and_then(|n| n.parse().ok())
            .context("--live-secs needs a number of seconds")?,
        None => tcp_secs,
    };
    if let Some(unknown) = args
        .rest
        .iter()
        .enumerate()
        .find(|(i, a)| {
            *a != "--live-only"
                && *a != "--live-secs"
                && (*i == 0 || args.rest[i - 1] != "--live-secs")
        })
        .map(|(_, a)| a)
    {
        bail!(
            "unknown argument {unknown:?} (known: --smoke, --section FILE, --live-only, --live-secs N)"
        );
    }
    let (tcp_rounds, udp_rounds) = if live_only {
        (0, 0)
    } else {
        (tcp_rounds, udp_rounds)
    };
    let (udp_warmup, udp_window) = args.pick(
        (Duration::from_millis(300), Duration::from_millis(1500)),
        (Duration::from_millis(100), Duration::from_millis(300)),
    );
    let mut bench = Bench::create()?;
    let _iperf_server = start_iperf_server(&bench.host.peer_ns())?;

    // Every measurement applies its configuration, measures, checks that
    // netwatch saw the traffic when it was attached, and undoes it.
    let mut measure =
        |config: Config, what: &mut dyn FnMut(&Bench) -> Result<f64>| -> Result<f64> {
            let applied = bench.apply(config)?;
            let before = bench.forwarded(&applied)?;
            let value = what(&bench)?;
            if let (Some(before), Some(after)) = (before, bench.forwarded(&applied)?) {
                ensure!(
                    after > before,
                    "{config:?}: netwatch forwarded no packet during the measurement"
                );
            }
            let mut applied = applied;
            if let Applied::PinnedWithKernelDrops {
                kernel_drops,
                reasons,
                ..
            } = &mut applied
            {
                let (events, _) = kernel_drops.drain_kernel_drops()?;
                bench.kernel_drop_records += events.len() as u64;
                for event in &events {
                    let name = reasons.name(event.key.reason).to_string();
                    if !bench.kernel_drop_reasons.contains(&name) {
                        bench.kernel_drop_reasons.push(name);
                    }
                }
            }
            drop(applied);
            Ok(value)
        };
    let index = |config: Config| {
        Config::ALL
            .iter()
            .position(|c| *c == config)
            .expect("known")
    };
    let mut tcp_cost = vec![Vec::new(); Config::ALL.len()];
    let tcp = interleaved_rounds(&Config::ALL, tcp_rounds, |&config| {
        measure(config, &mut |bench| {
            let (gbps, cost) = iperf(bench, tcp_secs)?;
            tcp_cost[index(config)].push(cost);
            Ok(gbps)
        })
    })?;
    let mut sent = vec![Vec::new(); Config::ALL.len()];
    let mut udp_cost = vec![Vec::new(); Config::ALL.len()];
    let udp = interleaved_rounds(&Config::ALL, udp_rounds, |&config| {
        measure(config, &mut |bench| {
            let run = udp_pps(bench, udp_warmup, udp_window)?;
            sent[index(config)].push(run.sent_pps);
            udp_cost[index(config)].push(run.cpu_ns_per_packet);
            Ok(run.received_pps)
        })
    })?;
    // Each program's own time, measured apart (run-time statistics slow
    // every BPF program a little, so not during the rounds above): one TCP
    // and one UDP measurement with everything the agent runs attached.
    let mut program_runs: Vec<ProgramRuns> = Vec::new();
    let run_load = |bench: &Bench, load: &str| -> Result<()> {
        match load {
            LOAD_TCP => {
                iperf(bench, live_secs)?;
            }
            LOAD_UDP => {
                udp_pps(bench, udp_warmup, udp_window)?;
            }
            _ => {
                let sent = udp_to_closed_port(bench, udp_window)?;
                ensure!(sent > 0, "no datagram sent to P's closed port");
            }
        }
        Ok(())
    };
    {
        let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime)
            .context("enabling BPF run-time statistics")?;
        // Netwatch's programs and the references take turns, round by
        // round: the machine's slow and fast phases (docs/testing.md) then
        // hit both alike.
        for _ in 0..live_rounds {
            for load in [LOAD_TCP, LOAD_UDP, LOAD_DROPS] {
                let applied = bench.apply(Config::EnforceObserveKernelDrops)?;
                let Applied::PinnedWithKernelDrops { kernel_drops, .. } = &applied else {
                    bail!("the kernel drop configuration holds no kernel drop program");
                };
                // Each program and the load that holds it.
                let netwatch = [
                    (names::PROG_FROM_CONTAINER, &bench.enforcing),
                    (names::PROG_TO_CONTAINER, &bench.enforcing),
                    (names::PROG_KERNEL_DROPS, kernel_drops),
                ];
                program_runs.extend(runs_under_load(
                    load,
                    &netwatch.map(|(name, _)| name),
                    false,
                    || run_load(&bench, load),
                    || {
                        netwatch
                            .iter()
                            .map(|(name, holder)| Ok(holder.program_runs(name)?))
                            .collect()
                    },
                )?);
                drop(applied);
                // Floors under the same load, on the same two hooks, with the
                // same statistics: the cheapest program that does anything, one
                // that reads the headers as netwatch's programs do, and one that
                // also keeps per-flow counters.
                for which in [Reference::Counter, Reference::Headers, Reference::Flow] {
                    let mut reference = BenchPrograms::load()?;
                    bench
                        .h
                        .run(|| reference.attach_both_ways(which, TestHost::CONTAINER_VETH))?;
                    ensure!(
                        bench.programs_on_vc() == (1, 1),
                        "the reference program is not on both of vc's hooks"
                    );
                    program_runs.extend(runs_under_load(
                        load,
                        &[which.program_name()],
                        true,
                        || run_load(&bench, load),
                        || Ok(vec![reference.program_runs(which)?]),
                    )?);
                    ensure!(
                        reference.counted()? > 0,
                        "the reference program {} counted no packet",
                        which.program_name()
                    );
                }
                // The kernel drop program's hook, with a counter alone on it.
                let mut reference = BenchPrograms::load()?;
                reference.attach_kfree_counter()?;
                program_runs.extend(runs_under_load(
                    load,
                    &[names::PROG_BENCH_KFREE],
                    true,
                    || run_load(&bench, load),
                    || Ok(vec![reference.kfree_counter_runs()?]),
                )?);
                drop(reference);
            }
        }
    }
    ensure!(
        bench.programs_on_vc() == (0, 0),
        "programs left on vc after the benchmark"
    );
    let program_runs = summed_by_program(program_runs);
    let live_measurements = if live_rounds == 1 {
        "one more measurement".to_owned()
    } else {
        format!("{live_rounds} more measurements")
    };
    if live_only {
        for r in &program_runs {
            println!(
                "{} {:<16} {:>9} runs {:>6.0} ns/run {:.3}% of a CPU",
                r.load,
                r.program,
                r.runs,
                r.per_run_ns(),
                r.cpu_share() * 100.0
            );
        }
        return Ok(());
    }

    // Rounds the hypervisor stole from are left out of every figure, the
    // CPU costs and offered rates measured in them too.
    let tcp_keep = tcp.calm(STEAL_LIMIT, tcp_rounds.div_ceil(2));
    let udp_keep = udp.calm(STEAL_LIMIT, udp_rounds.div_ceil(2));
    let steal_note = format!(
        "Rounds during which the hypervisor took more than {:.0}% of this machine's CPU \
         time (steal, `/proc/stat`) are left out of every figure below, as long as at \
         least half the rounds remain: {} {} Steal per round, TCP: {}; UDP: {}.",
        STEAL_LIMIT * 100.0,
        kept_text("TCP", &tcp, &tcp_keep),
        kept_text("UDP", &udp, &udp_keep),
        steal_text(&tcp),
        steal_text(&udp),
    );
    let tcp_cost = keep_rounds(&tcp_cost, &tcp_keep);
    let tcp = keep_rounds(&tcp.samples, &tcp_keep);
    let udp_cost = keep_rounds(&udp_cost, &udp_keep);
    let sent = keep_rounds(&sent, &udp_keep);
    let udp = keep_rounds(&udp.samples, &udp_keep);
    let tcp = Metric {
        name: "TCP throughput",
        unit: "Gbit/s",
        digits: 2,
        samples: tcp,
        cost: false,
    };
    let udp = Metric {
        name: "Small-packet UDP",
        unit: "packets/s received",
        digits: 0,
        samples: udp,
        cost: false,
    };
    let tcp_cost = Metric {
        name: "TCP CPU cost",
        unit: "CPU ns per KB",
        digits: 0,
        samples: tcp_cost,
        cost: true,
    };
    let udp_cost = Metric {
        name: "Small-packet UDP CPU cost",
        unit: "sender CPU ns per packet",
        digits: 0,
        samples: udp_cost,
        cost: true,
    };
    let offered: Vec<String> = Config::ALL
        .iter()
        .zip(&sent)
        .map(|(config, sent)| format!("{}: {:.0}", config.label(), median(sent)))
        .collect();

    let mut section = Section::new("Throughput through a container veth (`throughput`)");
    section.text(&format!(
        "Namespaces this benchmark creates, wired like a Docker host: a container C and \
         a peer P on a bridge, C's host-side veth `vc`. Traffic goes from C to P, so \
         each packet C sends passes `vc`'s ingress (netwatch's `from_container`) and \
         each reply `vc`'s egress (`to_container`). The five configurations alternate \
         round by round ({tcp_rounds} rounds for TCP, {udp_rounds} for UDP; each applied \
         just before its measurement and removed after it): no program; netwatch enforce+observe attached and pinned as \
         the agent attaches it (`Datapath::attach_veth`, C on an internal network); \
         the same plus the kernel drop program on `kfree_skb` with C's address guarded, \
         as the agent runs it (`Datapath::attach_kernel_drops`); \
         netwatch observe-only as a standalone session attaches it \
         (`attach_veth_for_session`, policy without enforcement, nothing pinned); \
         tcpdump capturing on `vc` (`tcpdump -i vc -n -w /dev/null`). Netwatch's \
         counters are checked to have moved during each of its measurements. Senders \
         are pinned to CPU {SENDER_CPU}, receivers to CPU {RECEIVER_CPU}; on a veth \
         the softirq work of the whole path, programs included, runs on the sender's CPU. \
         Everything runs at nice -20, so that other work on the machine disturbs it less. \
         *vs no program* is the median over rounds of each round's ratio to the \
         no-program measurement next to it, which cancels slow drifts of the machine; \
         the goals are judged on it. {steal_note}"
    ));
    section.text(&format!(
        "TCP: one iperf3 stream from C to P, {tcp_secs} s per measurement, received \
         bit rate."
    ));
    section.table(&tcp.table());
    section.text(
        "The same runs by CPU time (client and server together, as iperf3 reports \
         them, softirq work in their context included): what each byte costs, which \
         other work on the machine disturbs far less than the bit rate. A program that \
         adds x% CPU per byte allows 1/(1+x) of the throughput where CPU is the limit.",
    );
    section.table(&tcp_cost.table());
    section.text(&format!(
        "Small-packet UDP: this binary's own sender in C, {UDP_FLOWS} sockets (one \
         source port, so one flow, each) sending {UDP_PAYLOAD}-byte payloads to one \
         port of P in `sendmmsg` batches of {UDP_BATCH}, round robin, as fast as it \
         can for {:.1} s after {:.1} s of warm-up; packets per second counted by the \
         receiving socket in P (non-blocking `recvmmsg` in a loop that spins on CPU \
         {RECEIVER_CPU}, so no wake-up IPIs, which are costly VM exits here, blur the \
         sender's path). Offered rates (median packets/s sent): {}.",
        udp_window.as_secs_f64(),
        udp_warmup.as_secs_f64(),
        offered.join("; ")
    ));
    section.table(&udp.table());
    section.text(
        "The same runs by the sender thread's CPU time per packet sent \
         (/proc/self/task/TID/schedstat; on this kernel, without IRQ time accounting, \
         it includes the softirq work of the whole path done in its context, netwatch's \
         program among it):",
    );
    section.table(&udp_cost.table());
    for (what, tcp, udp) in [
        ("the bit and packet rates", &tcp, &udp),
        ("CPU cost", &tcp_cost, &udp_cost),
    ] {
        section.text(&format!(
            "Goals, on {what}: {}. {}. {}. {}.",
            tcp.verdict(Config::EnforceObserve, 0.97),
            udp.verdict(Config::EnforceObserve, 0.90),
            tcp.verdict(Config::ObserveOnly, 0.97),
            udp.verdict(Config::ObserveOnly, 0.90),
        ));
    }
    let spread = |metric: &Metric| {
        let (min, max) = min_max(&metric.ratios(Config::EnforceObserve, Config::NoProgram));
        max - min
    };
    let (tcp_spread, udp_spread) = (spread(&tcp), spread(&udp));
    if tcp_spread > 0.10 || udp_spread > 0.10 {
        section.text(&format!(
            "Noise: the round ratios of enforce+observe to no program spread over {:.0} \
             points (TCP) and {:.0} points (UDP), more than the 3- and 10-point margins the \
             goals allow; the machine was busy during this run (see the load average in the \
             header), so verdicts this close to a goal are not settled by it. Re-run on a \
             quiet machine.",
            100.0 * tcp_spread,
            100.0 * udp_spread
        ));
    }
    section.text(&format!(
        "Kernel drop program: its cost is the difference between the enforce+observe \
         rows with and without it. It runs on every `kfree_skb` of the machine, not per \
         packet forwarded: a TCP stream frees little through it (old data and \
         sequences, purged queues), and the UDP flood, whose receiver keeps up, \
         almost nothing. A drop of C's packets (C is guarded) goes the program's \
         whole way: address lookups, per-key counter, a record at most once a second \
         per key. During this run it reported {} such drops, with the kernel's reason \
         of each ({}). Its own time, by the kernel's run-time statistics in \
         {} of each kind after the rounds, and under a load of drops (the \
         small-packet sender's {UDP_FLOWS} source ports, as many keys, aimed at a \
         port of P where nothing listens, so that P's kernel frees every datagram with \
         `NO_SOCKET`): {}.",
        bench.kernel_drop_records,
        if bench.kernel_drop_reasons.is_empty() {
            "none".to_string()
        } else {
            bench.kernel_drop_reasons.join(", ")
        },
        live_measurements,
        program_runs
            .iter()
            .filter(|r| r.program == names::PROG_KERNEL_DROPS)
            .map(|r| format!(
                "{}: {} runs in {:.1} s, {:.0} ns each, {:.4}% of one CPU",
                r.load,
                r.runs,
                r.elapsed.as_secs_f64(),
                r.per_run_ns(),
                r.cpu_share() * 100.0
            ))
            .collect::<Vec<_>>()
            .join("; ")
    ));
    section.text(&format!(
        "Live cost per packet: each program's run time divided by its run count, as \
         the kernel's run-time statistics (`kernel.bpf_stats_enabled`, turned on for \
         these measurements only) count them, summed over {} of TCP and of \
         small-packet UDP with everything the agent runs attached (the veth \
         programs and the kernel drop program), and the load of drops described above \
         (no goal of its own: it is there for the kernel drop program's cost per run \
         when it runs warm). Unlike the `datapath` section's test \
         runs, this is the programs' time on real packets, cold caches and all. The \
         reference rows are the benchmark's own programs on the same two hooks under the \
         same load, measured right after netwatch's in each round: the counter-only program \
         (`bench_counter`, one per-CPU counter increment), the floor any program pays \
         there, run-time statistics included; and `bench_headers`, netwatch's own header \
         parse (skb facts, the per-CPU summary, Ethernet, IP and transport headers) and \
         the counter, without flow table or policy: the floor for a program that judges \
         a packet by its headers; and `bench_flow`, that parse plus one lookup in an LRU \
         table under netwatch's flow keys (20 bytes for IPv4 flows, 48 for the others; \
         with a value of netwatch's size) and two atomic \
         adds to the flow's counters (an insert for a new flow), without policy, clock or \
         records: the floor for a program that keeps netwatch's per-flow state; and `bench_kfree`, one \
         counter increment on the kernel drop program's `kfree_skb` tracepoint, which \
         runs on every free of the machine as `kernel_drops` does. Goal: \
         ≤ {LIVE_GOAL_NS:.0} ns per run for each program under each load: {}.",
        live_measurements,
        program_runs
            .iter()
            .filter(|r| r.runs > 0 && !r.reference && r.load != LOAD_DROPS)
            .map(|r| {
                let verdict = if r.per_run_ns() <= LIVE_GOAL_NS {
                    "met"
                } else {
                    "missed"
                };
                format!("{} {}: {verdict}", r.load, r.program)
            })
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let mut live = Table::new(&["load", "program", "runs", "ns per run", "share of one CPU"]);
    for r in &program_runs {
        live.row(vec![
            r.load.to_string(),
            if r.reference {
                format!("`{}` (reference)", r.program)
            } else {
                format!("`{}`", r.program)
            },
            r.runs.to_string(),
            if r.runs == 0 {
                "-".to_string()
            } else {
                format!("{:.0}", r.per_run_ns())
            },
            format!("{:.3}%", r.cpu_share() * 100.0),
        ]);
    }
    section.table(&live);
    section.text(&floors_text(&program_runs));
    section.text(
        "XDP on the veth: netwatch offers no XDP mode for container veths (its XDP \
         program is the uplink shield, for the host's uplink interfaces only), so there \
         is no such row. The design notes measured a native XDP program on a container \
         veth cutting TCP throughput about 4x on this kind of machine, which is why.",
    );
    if args.smoke {
        section.text("Smoke run: numbers are meaningless.");
    }
    section.emit(&args).context("writing the section")?;
    Ok(())
}
