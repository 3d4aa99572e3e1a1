//! `cargo xtask bench scale`: how netwatch scales with endpoints and flows,
//! and how quickly enforcement follows containers.
//!
//! - Attach time and memory for 10, 100 and 500 endpoints: veth pairs on a
//!   bridge in a namespace this benchmark creates, planned and reconciled
//!   with the agent's own `plan` and `reconcile`.
//! - The agent as a process (this binary re-executed as `netwatch`, see
//!   [`AS_NETWATCH`]) against the main dockerd: its RSS and CPU idle and
//!   after 100,000 real flows from a container, and the start-to-enforced
//!   window over container starts on an internal network.
//! - Reconcile time after a restart of a private dockerd holding
//!   `--restart always` containers.
//!
//! Traffic goes only to containers and namespaces it creates: the flow
//! sender writes to an address of its own test network (checked with `ip
//! route get` inside the container first) through a static neighbour entry,
//! and the window probes connect to their network's gateway, where this
//! process listens.

use std::{
    collections::BTreeSet,
    io::Read as _,
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    process::{Command, ExitCode, Stdio},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use netwatch::{
    agent::{
        ContainerInterface, HostState, NetworkState, plan, reconcile, status_file::AgentStatus,
    },
    datapath::{Datapath, LoadOptions, pins},
    policy::Cidr,
};
use netwatch_tests::{
    agent::{AgentProcess, wait_for},
    bench::{BenchArgs, Section, Table, interleaved, median, percentile},
    docker::{TestContainer, TestNetwork, docker_ok, require_dockerd},
    dockerd::PrivateDockerd,
    netns::PinDir,
    start_window::{StartWindow, probe_start, probe_start_enforced},
};
use nix::sched::{CloneFlags, setns};

/// When set, this binary is `netwatch` (`netwatch::cli::command::main`):
/// how the benchmark runs the agent as a process of its own, since `cargo
/// run --bin bench-scale` builds no other binary.
const AS_NETWATCH: &str = "NETWATCH_BENCH_AS_NETWATCH";
/// Kernel flow table of the agent under test: room for 100,000 live flows.
const AGENT_FLOW_TABLE: &str = "262144";
/// Flows the agent under test keeps one by one (`--flow-limit`): the
/// benchmark's 100,000 and the few hundred of the start-to-enforced probes
/// before them. At the default (100,000) the agent folded the 10,000
/// longest idle flows into summaries once the sender's flows passed the
/// limit (by design, a tenth of the limit at a time), and the rows showed
/// ~90,700 flows tracked of 100,000 sent.
const AGENT_FLOW_LIMIT: &str = "131072";
/// Records/s the flow sender is paced to: below the ring buffer's loss
/// rate at the agent's 250 ms drain (bench pipeline measures it).
const SENDER_RATE: u32 = 20_000;
/// How many flows queries and scrapes the agent benchmark times at 100,000 flows.
const QUERY_SAMPLES: usize = 3;

fn main() -> ExitCode {
    if std::env::var_os(AS_NETWATCH).is_some() {
        return netwatch::cli::command::main();
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-scale: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let args = BenchArgs::from_env();
    ensure!(
        netwatch::host::is_root(),
        "bench-scale loads BPF programs and runs dockerd: run it as root (cargo xtask bench scale)"
    );
    // SAFETY: no other thread exists yet; children (the agent) inherit it.
    unsafe { std::env::set_var(AS_NETWATCH, "1") };
    let mut section = Section::new("Scale");
    section.text(
        "Attach time and memory by number of endpoints; the agent's memory and CPU idle and \
         with 100,000 flows; how long after a container starts its veth is enforced; how \
         long after a dockerd restart every container is enforced again.",
    );
    // `--only attach|stalls|agent|restart` (repeatable) runs some parts only.
    let mut only = Vec::new();
    let mut rest = args.rest.iter();
    while let Some(arg) = rest.next() {
        match (arg.as_str(), rest.next()) {
            ("--only", Some(part))
                if ["attach", "stalls", "agent", "restart"].contains(&part.as_str()) =>
            {
                only.push(part.clone());
            }
            _ => bail!(
                "unknown argument {arg:?}; bench-scale takes --smoke, --section FILE and --only attach|stalls|agent|restart"
            ),
        }
    }
    let wanted = |part: &str| only.is_empty() || only.iter().any(|p| p == part);
    if wanted("attach") {
        attach_section(&args, &mut section)?;
    }
    if wanted("stalls") {
        stalls_section(&args, &mut section)?;
    }
    if !wanted("agent") && !wanted("restart") {
        section.emit(&args)?;
        return Ok(());
    }
    // Everything with Docker runs on a private dockerd: an agent following
    // the main one (someone's `netwatch agent` on this host) would enforce
    // the benchmark's networks too and hide its probes from the agent
    // under test.
    let mut daemon = PrivateDockerd::start(&["--iptables=false"]);
    let host = daemon.activate();
    if wanted("agent") {
        agent_sections(&args, &mut section)?;
    }
    if wanted("restart") {
        restart_section(&args, &mut section, &mut daemon)?;
    }
    drop(host);
    section.emit(&args)?;
    Ok(())
}

// ---------------------------------------------------------------------------
// Attach time and memory

/// A network namespace this benchmark created; deleted on drop, with its
/// links deleted first: deleting a namespace that still holds a thousand
/// interfaces leaves the kernel tearing them down in a worker, holding the
/// rtnl lock, well into the next round's attach.
struct Namespace {
    name: String,
    links: Vec<String>,
}

impl Namespace {
    fn create(tag: &str) -> Result<Namespace> {
        let name = format!("nwt{}s{tag}", std::process::id());
        sh(&["ip", "netns", "add", &name])?;
        Ok(Namespace {
            name,
            links: Vec::new(),
        })
    }

    /// A namespace that will hold `br0` and the veths `v0`… `v{n-1}`
    /// (deleted before it), with IPv6 off: 1,000 interfaces coming up at
    /// once start as many duplicate-address-detection and
    /// router-solicitation works, which take the rtnl lock and walk an IPv6
    /// route list that grows with the interfaces, for seconds; that is this
    /// setup's cost, not the attach's (Docker starts containers one by
    /// one).
    fn for_veths(tag: &str, n: usize) -> Result<Namespace> {
        let mut ns = Namespace::create(tag)?;
        ns.links = (0..n).map(|i| format!("v{i}")).collect();
        ns.links.push("br0".into());
        for key in ["all", "default"] {
            sh(&[
                "ip",
                "netns",
                "exec",
                &ns.name,
                "sysctl",
                "-qw",
                &format!("net.ipv6.conf.{key}.disable_ipv6=1"),
            ])?;
        }
        Ok(ns)
    }

    fn enter(&self) -> Result<()> {
        let file = std::fs::File::open(format!("/var/run/netns/{}", self.name))?;
        setns(file, CloneFlags::CLONE_NEWNET).context("entering the benchmark's namespace")?;
        Ok(())
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let batch: String = self
            .links
            .iter()
            .map(|l| format!("link del {l}\n"))
            .collect();
        let file = std::env::temp_dir().join(format!("{}.del", self.name));
        if !batch.is_empty() && std::fs::write(&file, batch).is_ok() {
            let _ = Command::new("ip")
                .args(["-n", &self.name, "-force", "-batch"])
                .arg(&file)
                .output();
            let _ = std::fs::remove_file(&file);
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Runs a command; its stdout, or an error with its stderr.
fn sh(args: &[&str]) -> Result<String> {
    let output = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("running {args:?}"))?;
    ensure!(
        output.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// What one attach round measured.
#[derive(Clone, Copy, Debug)]
struct AttachSample {
    /// The first reconcile: policy written, bridge and every veth attached
    /// and pinned.
    attach: f64,
    /// A second reconcile with nothing to change (what every resync costs).
    resync: f64,
    /// `memlock` of this process's BPF maps and programs (kernel memory).
    memlock: u64,
}

fn attach_round(n: usize, round: usize, rcu: Rcu) -> Result<AttachSample> {
    let ns = Namespace::for_veths(&format!("{n}r{round}"), n)?;
    let mut batch = String::from("link add br0 type bridge\nlink set br0 up\n");
    for i in 0..n {
        batch.push_str(&format!(
            "link add v{i} type veth peer name p{i}\nlink set v{i} master br0 up\nlink set p{i} up\n"
        ));
    }
    let file = std::env::temp_dir().join(format!("{}.batch", ns.name));
    std::fs::write(&file, batch)?;
    let made = sh(&["ip", "-n", &ns.name, "-batch", &file.display().to_string()]);
    let _ = std::fs::remove_file(&file);
    made?;
    let links = sh(&["ip", "-n", &ns.name, "-o", "link", "show"])?;
    let ifindex = |name: &str| -> Result<u32> {
        links
            .lines()
            .find_map(|line| {
                let (index, rest) = line.split_once(": ")?;
                let ifname = rest.split([':', '@']).next()?;
                (ifname == name).then(|| index.parse().ok()).flatten()
            })
            .ok_or_else(|| anyhow!("no {name} in {}", ns.name))
    };
    let subnet: Cidr = "10.250.0.0/16".parse().map_err(|e| anyhow!("{e:?}"))?;
    let mut state = HostState {
        networks: vec![NetworkState {
            name: "bench".into(),
            driver: "bridge".into(),
            internal: true,
            bridge: Some(("br0".into(), ifindex("br0")?)),
            macvlan_parent: None,
            overlay_sandbox: None,
            subnets: vec![subnet],
            gateways: vec![IpAddr::V4(Ipv4Addr::new(10, 250, 0, 1))],
            labels: Default::default(),
        }],
        ..HostState::default()
    };
    for i in 0..n {
        let (hi, lo) = ((i / 250) as u8, (i % 250) as u8 + 2);
        state.endpoints.push(ContainerInterface {
            container: format!("c{i}"),
            container_id: String::new(),
            network: "bench".into(),
            host_ifname: format!("v{i}"),
            host_ifindex: ifindex(&format!("v{i}"))?,
            ipv4: Some(Ipv4Addr::new(10, 250, hi, lo)),
            ipv6: None,
            mac: [0x02, 0x42, 10, 250, hi, lo],
            container_labels: Default::default(),
            published: Vec::new(),
            macvlan: None,
            overlay: None,
        });
    }
    let plan = plan(&state);
    ensure!(
        plan.veths.len() == n,
        "the plan has {} veths",
        plan.veths.len()
    );
    let pins = PinDir::create();
    // The agent's netns is the host's; here the attaching thread enters
    // the benchmark's namespace, where the veths are.
    std::thread::scope(|scope| {
        scope
            .spawn(|| -> Result<AttachSample> {
                ns.enter()?;
                let mut datapath = Datapath::load(&LoadOptions {
                    pin_root: Some(pins.0.clone()),
                    ..LoadOptions::default()
                })?;
                let expedited = match rcu {
                    Rcu::AsIs => None,
                    Rcu::Expedited => expedite("the benchmark's attach")?,
                };
                let start = Instant::now();
                let report = reconcile(&mut datapath, &plan);
                let attach = start.elapsed().as_secs_f64();
                drop(expedited);
                let report = report?;
                ensure!(
                    report.failed.is_empty() && report.attached.len() == n + 1,
                    "attached {} of {} interfaces; failed: {:?}",
                    report.attached.len(),
                    n + 1,
                    report.failed
                );
                let start = Instant::now();
                let again = reconcile(&mut datapath, &plan)?;
                let resync = start.elapsed().as_secs_f64();
                ensure!(
                    again.attached.is_empty(),
                    "a second reconcile attached again"
                );
                ensure!(
                    pins::attached_tc_ifindexes(&pins.0).len() == n + 1,
                    "pins do not match"
                );
                Ok(AttachSample {
                    attach,
                    resync,
                    memlock: bpf_memlock()?,
                })
            })
            .join()
            .map_err(|_| anyhow!("the attaching thread panicked"))?
    })
}

/// Sum of `memlock` over this process's BPF map and program fds (what the
/// kernel charges for them).
fn bpf_memlock() -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir("/proc/self/fdinfo")?.flatten() {
        let Ok(info) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        if !(info.contains("map_type:") || info.contains("prog_type:")) {
            continue;
        }
        total += info
            .lines()
            .find_map(|l| l.strip_prefix("memlock:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
    }
    Ok(total)
}

/// How the kernel waits for RCU grace periods while attaching.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rcu {
    /// As the machine is set up.
    AsIs,
    /// `/sys/kernel/rcu_expedited` = 1 during the attach (restored after),
    /// as `agent --expedite-attach` sets it.
    Expedited,
}

/// The agent's own `--expedite-attach` guard (`netwatch::host::rcu`), its
/// saved value kept in the temporary directory.
fn expedite(what: &str) -> Result<Option<netwatch::host::rcu::Expedited>> {
    Ok(netwatch::host::rcu::RcuKnob::host(&std::env::temp_dir()).expedite(what)?)
}

fn attach_section(args: &BenchArgs, section: &mut Section) -> Result<()> {
    let sizes: Vec<usize> = args.pick(vec![10, 100, 500], vec![10]);
    let configs: Vec<(usize, Rcu)> = sizes
        .iter()
        .flat_map(|&n| [(n, Rcu::AsIs), (n, Rcu::Expedited)])
        .collect();
    let rounds = args.pick(3, 1);
    let mut samples: Vec<Vec<AttachSample>> = vec![Vec::new(); configs.len()];
    let mut round = 0;
    interleaved(&configs, rounds, |&(n, rcu)| -> Result<f64> {
        round += 1;
        let sample = attach_round(n, round, rcu)?;
        eprintln!("attach {n} endpoints ({rcu:?}): {sample:?}");
        let i = configs
            .iter()
            .position(|c| *c == (n, rcu))
            .expect("a config");
        samples[i].push(sample);
        Ok(sample.attach)
    })?;
    let mut table = Table::new(&[
        "endpoints",
        "RCU grace periods",
        "attach (first reconcile)",
        "per endpoint",
        "resync, nothing to change",
        "kernel memlock (maps + programs)",
        "TCX links",
    ]);
    for ((n, rcu), runs) in configs.iter().zip(&samples) {
        let attach = median(&runs.iter().map(|s| s.attach).collect::<Vec<_>>());
        let resync = median(&runs.iter().map(|s| s.resync).collect::<Vec<_>>());
        table.row(vec![
            n.to_string(),
            match rcu {
                Rcu::AsIs => "normal (as the host is set up)".into(),
                Rcu::Expedited => "expedited (`rcu_expedited=1`)".into(),
            },
            format!("{:.0} ms", attach * 1e3),
            format!("{:.2} ms", attach * 1e3 / *n as f64),
            format!("{:.1} ms", resync * 1e3),
            format!("{:.1} MiB", runs[0].memlock as f64 / (1 << 20) as f64),
            (2 * (n + 1)).to_string(),
        ]);
    }
    section.text(&format!(
        "**Attach.** Veth pairs on a bridge in a namespace of the benchmark's own; the \
         agent's `plan` and `reconcile` write the policy and attach and pin both TCX \
         programs on the bridge and on every veth, one after another, from a fresh pin \
         directory. IPv6 is off in that namespace: with it on, a thousand interfaces \
         brought up at once start as many duplicate-address-detection and \
         router-solicitation works, which take the rtnl lock and walk an IPv6 route list \
         that grows with the interfaces, and 500 endpoints took about twice as long here \
         (the same storm would hit a host starting hundreds of containers at once; Docker \
         starting them one by one does not). Medians of {rounds} interleaved rounds. \
         Kernel memory is the `memlock` \
         the kernel charges for the loaded maps and programs (preallocated, so it hardly \
         grows with endpoints; each link adds a small kernel object not counted there). \
         Where the time goes: the first TCX program on a device's hook makes the kernel swap \
         the hook's program array and wait for an RCU grace period \
         (`tcx_entry_sync()` → `synchronize_rcu()`) while holding `rtnl_lock`; `strace -T` \
         shows each `BPF_LINK_CREATE` blocking 5–18 ms here, twice per veth, and the rtnl \
         lock serializes them, so attaching from several threads would not overlap them. \
         The second row of each size sets `/sys/kernel/rcu_expedited` for the attach only \
         (a host-wide knob, restored right after): that is what closes the gap, or the \
         kernel's `rcupdate.rcu_expedited=1` boot option on hosts with many containers. \
         Goal: 500 endpoints in under 5 s."
    ));
    section.table(&table);
    Ok(())
}

// ---------------------------------------------------------------------------
// Stalls: the API and the ring reader while the agent attaches

/// How often the stalls prober asks the API and scrapes `/metrics`.
const PROBE_EVERY: Duration = Duration::from_millis(10);

/// What one stalls run measured.
struct StallRun {
    attached_after: Duration,
    answers: Vec<f64>,
    scrapes: Vec<f64>,
    /// The agent's own measure (`/v1/status`, `drains`).
    longest_drain_gap_ms: f64,
    drains: u64,
}

/// `GET path` on the agent's API socket: the body, and how long the answer
/// took from connecting to its last byte.
fn api_get(socket: &std::path::Path, path: &str) -> Result<(Duration, String)> {
    use std::io::Write as _;
    let start = Instant::now();
    let mut stream = std::os::unix::net::UnixStream::connect(socket)
        .with_context(|| format!("connecting to {}", socket.display()))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: netwatch\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let took = start.elapsed();
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .ok_or_else(|| anyhow!("no HTTP answer to {path}: {answer:?}"))?;
    Ok((took, body))
}

/// `GET /metrics` over TCP: how long it took.
fn scrape(addr: SocketAddr) -> Result<Duration> {
    use std::io::Write as _;
    let start = Instant::now();
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    write!(
        stream,
        "GET /metrics HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut body = Vec::new();
    stream.read_to_end(&mut body)?;
    let status_line = body.split(|&b| b == b'\r').next().unwrap_or_default();
    ensure!(
        status_line.ends_with(b" 200 OK"),
        "a scrape was answered {:?}",
        String::from_utf8_lossy(status_line)
    );
    Ok(start.elapsed())
}

/// The agent in a namespace of the benchmark's own, with dockerd away (a
/// `DOCKER_HOST` no one serves) and a saved plan naming the namespace's
/// bridge, guards `n` veths that appear at once, as at boot when dockerd
/// restores its containers. Meanwhile a prober asks `/v1/status` and
/// scrapes `/metrics` every [`PROBE_EVERY`], and the agent's ring reader measures
/// its own gaps between drains.
fn stall_run(n: usize, rcu: Rcu) -> Result<StallRun> {
    let exe = std::env::current_exe()?;
    let exe = exe.to_str().ok_or_else(|| anyhow!("odd executable path"))?;
    let ns = Namespace::for_veths(&format!("stall{n}{rcu:?}"), n)?;
    sh(&["ip", "-n", &ns.name, "link", "set", "lo", "up"])?;
    sh(&["ip", "-n", &ns.name, "link", "add", "br0", "type", "bridge"])?;
    sh(&["ip", "-n", &ns.name, "link", "set", "br0", "up"])?;
    let nowhere = std::env::temp_dir().join(format!("{}-no-dockerd.sock", ns.name));
    let docker_host = format!("unix://{}", nowhere.display());
    let mut args = vec!["--resync-secs", "3600"];
    if rcu == Rcu::Expedited {
        args.push("--expedite-attach");
    }
    let mut agent = AgentProcess::start_in_netns_with(
        exe,
        &ns.name,
        &[],
        &args,
        &[("DOCKER_HOST", &docker_host)],
    );
    // The plan an earlier agent would have saved (the first start made the
    // directories).
    agent.kill();
    let plan = serde_json::json!({
        "format": 1,
        "written_by": "bench-scale",
        "networks": [{
            "name": "stalls", "bridge": "br0", "internal": true,
            "deny_egress": true, "subnets": ["10.251.0.0/16"],
            "gateways": ["10.251.0.1"], "labels": {}
        }]
    });
    std::fs::create_dir_all(&agent.state_dir)?;
    std::fs::write(agent.state_dir.join("plan.json"), plan.to_string())?;
    agent.restart();
    let pins = agent.pins.0.clone();
    wait_for(
        "the agent to guard the saved plan's bridge",
        Duration::from_secs(30),
        || pins::attached_tc_ifindexes(&pins).len() == 1,
    );
    let socket = agent.api_socket();
    wait_for("the agent's API", Duration::from_secs(30), || {
        api_get(&socket, "/v1/status").is_ok()
    });
    let metrics: SocketAddr = agent_status(&agent)?
        .metrics_addr
        .ok_or_else(|| anyhow!("the agent serves no metrics"))?
        .parse()?;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let prober = {
        let stop = stop.clone();
        let socket = socket.clone();
        let netns = format!("/var/run/netns/{}", ns.name);
        std::thread::spawn(move || -> Result<(Vec<f64>, Vec<f64>)> {
            // The metrics listen on the namespace's loopback.
            setns(std::fs::File::open(netns)?, CloneFlags::CLONE_NEWNET)?;
            let (mut answers, mut scrapes) = (Vec::new(), Vec::new());
            // Paced, as a user and a Prometheus would ask (many times
            // more often): back to back, the prober and the answers would
            // take both cores and measure the machine's starvation
            // instead of the agent's stalls.
            let mut next = Instant::now();
            while !stop.load(Ordering::SeqCst) {
                answers.push(api_get(&socket, "/v1/status")?.0.as_secs_f64() * 1e3);
                scrapes.push(scrape(metrics)?.as_secs_f64() * 1e3);
                next += PROBE_EVERY;
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
            Ok((answers, scrapes))
        })
    };
    let mut batch = String::new();
    for i in 0..n {
        batch.push_str(&format!(
            "link add v{i} type veth peer name p{i}\nlink set v{i} master br0 up\nlink set p{i} up\n"
        ));
    }
    let file = std::env::temp_dir().join(format!("{}.batch", ns.name));
    std::fs::write(&file, batch)?;
    let start = Instant::now();
    let made = sh(&["ip", "-n", &ns.name, "-batch", &file.display().to_string()]);
    let _ = std::fs::remove_file(&file);
    made?;
    wait_for(
        &format!("the agent to attach {n} veths"),
        Duration::from_secs(120),
        || pins::attached_tc_ifindexes(&pins).len() == n + 1,
    );
    let attached_after = start.elapsed();
    stop.store(true, Ordering::SeqCst);
    let (answers, scrapes) = prober
        .join()
        .map_err(|_| anyhow!("the prober panicked"))??;
    let status: serde_json::Value = serde_json::from_str(&api_get(&socket, "/v1/status")?.1)?;
    let gaps = &status["drains"];
    let longest_drain_gap_ms = gaps["longest_gap_us"]
        .as_f64()
        .ok_or_else(|| anyhow!("/v1/status has no drains.longest_gap_us: {status}"))?
        / 1e3;
    let drains = gaps["drains"].as_u64().unwrap_or(0);
    ensure!(
        agent.log().contains("lost Docker"),
        "the agent should have found Docker away:\n{}",
        agent.log()
    );
    agent.stop();
    // The agent's pins go with its pin directory; the links with the
    // namespace.
    Ok(StallRun {
        attached_after,
        answers,
        scrapes,
        longest_drain_gap_ms,
        drains,
    })
}

fn stalls_section(args: &BenchArgs, section: &mut Section) -> Result<()> {
    let n = args.pick(500, 10);
    let mut table = Table::new(&[
        "RCU grace periods",
        "veths appearing at once",
        "all attached after",
        "API answers (`/v1/status`) during the attach",
        "API median / p99 / slowest",
        "`/metrics` scrapes",
        "scrape median / p99 / slowest",
        "longest gap between two ring drains",
    ]);
    for rcu in [Rcu::AsIs, Rcu::Expedited] {
        let run = stall_run(n, rcu)?;
        eprintln!(
            "stalls {n} ({rcu:?}): attached after {:?}; API slowest {:.1} ms of {}; scrape slowest {:.1} ms of {}; drain gap {:.1} ms over {} drains",
            run.attached_after,
            run.answers.iter().copied().fold(0.0, f64::max),
            run.answers.len(),
            run.scrapes.iter().copied().fold(0.0, f64::max),
            run.scrapes.len(),
            run.longest_drain_gap_ms,
            run.drains,
        );
        let spread = |v: &[f64]| {
            format!(
                "{:.1} / {:.1} / {:.1} ms",
                median(v),
                percentile(v, 99.0),
                v.iter().copied().fold(0.0, f64::max)
            )
        };
        table.row(vec![
            match rcu {
                Rcu::AsIs => "normal (as the host is set up)".into(),
                Rcu::Expedited => "expedited (`--expedite-attach`)".into(),
            },
            n.to_string(),
            format!("{:.2} s", run.attached_after.as_secs_f64()),
            run.answers.len().to_string(),
            spread(&run.answers),
            run.scrapes.len().to_string(),
            spread(&run.scrapes),
            format!("{:.1} ms", run.longest_drain_gap_ms),
        ]);
    }
    section.text(&format!(
        "**Stalls.** The agent as a process in a namespace of the benchmark's own, with \
         dockerd away (its `DOCKER_HOST` a socket no one serves: it retries with backoff) \
         and a saved plan naming the namespace's bridge; {n} veths are created on the \
         bridge at once (one `ip -batch`), as when dockerd restores its containers at boot, \
         and the agent guards each as it appears. Meanwhile a prober asks `/v1/status` and \
         scrapes `/metrics` every {probe_ms} ms, from the first veth until every one is \
         attached; \
         the ring reader's longest gap between two drains is the agent's own measure \
         (`/v1/status`, `drains`, over the agent's whole run). Goal: the slowest API answer \
         and the longest gap under 50 ms.",
        probe_ms = PROBE_EVERY.as_millis()
    ));
    section.table(&table);
    Ok(())
}

// ---------------------------------------------------------------------------
// The agent as a process: resources, flows, start-to-enforced window

/// A process's resident memory from /proc/PID/status, kB: the total and
/// the part that is its own heap and stacks (`RssAnon`). The rest is
/// mapped: the binary and libraries, and the BPF ring buffers the reader
/// maps (their pages count once the kernel has written them).
#[derive(Clone, Copy)]
struct Rss {
    total_kib: u64,
    anon_kib: u64,
}

impl Rss {
    fn text(self) -> String {
        let mib = |kib: u64| kib as f64 / 1024.0;
        format!(
            "{:.1} MiB ({:.1} heap, {:.1} mapped)",
            mib(self.total_kib),
            mib(self.anon_kib),
            mib(self.total_kib.saturating_sub(self.anon_kib))
        )
    }
}

fn rss(pid: u32) -> Rss {
    let [total_kib, anon_kib] = netwatch_tests::flood::proc_status_kibs(pid, ["VmRSS", "RssAnon"]);
    Rss {
        total_kib,
        anon_kib,
    }
}

/// User + system CPU seconds of `pid` so far.
fn cpu_secs(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields: Vec<&str> = stat
        .rsplit_once(") ")
        .ok_or_else(|| anyhow!("odd /proc/{pid}/stat"))?
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    Ok(ticks as f64 / clock_ticks()?)
}

fn clock_ticks() -> Result<f64> {
    Ok(sh(&["getconf", "CLK_TCK"])?.trim().parse()?)
}

/// CPU share of `pid` over `secs` (1.0 = one core).
fn cpu_over(pid: u32, secs: f64) -> Result<f64> {
    let before = cpu_secs(pid)?;
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(secs));
    Ok((cpu_secs(pid)? - before) / start.elapsed().as_secs_f64())
}

/// One metric of the agent's Prometheus endpoint (summed over label sets).
fn metric(addr: &str, name: &str) -> Result<f64> {
    let addr: SocketAddr = addr.parse()?;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    use std::io::Write as _;
    write!(
        stream,
        "GET /metrics HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut body = String::new();
    stream.read_to_string(&mut body)?;
    let values: Vec<f64> = body
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    ensure!(!values.is_empty(), "the agent's metrics have no {name}");
    Ok(values.iter().sum())
}

fn agent_status(agent: &AgentProcess) -> Result<AgentStatus> {
    AgentStatus::read(&agent.run_dir).ok_or_else(|| anyhow!("no agent status file"))
}

/// `docker network inspect` of one field of the first IPAM config.
fn network_field(network: &TestNetwork, field: &str) -> String {
    docker_ok(&[
        "network",
        "inspect",
        "--format",
        &format!("{{{{range .IPAM.Config}}}}{{{{.{field}}}}}{{{{end}}}}"),
        &network.id,
    ])
}

fn agent_sections(args: &BenchArgs, section: &mut Section) -> Result<()> {
    require_dockerd();
    let exe = std::env::current_exe()?;
    let exe = exe.to_str().ok_or_else(|| anyhow!("odd executable path"))?;
    let internal = TestNetwork::create("scale-int", &["--internal"]);
    let observed = TestNetwork::create("scale-obs", &[]);
    let gateway: Ipv4Addr = network_field(&internal, "Gateway")
        .parse()
        .context("the internal network's gateway")?;
    let listener = TcpListener::bind((gateway, 0)).context("listening on the gateway")?;
    let port = listener.local_addr()?.port();
    let connections = count_connections(listener);

    // Docker alone first: the same probe reaches the host (the measurement
    // can see an escape).
    let baseline_starts = args.pick(30, 1);
    let mut baseline_run_ms = Vec::new();
    for _ in 0..baseline_starts {
        baseline_run_ms.push(probe_start(&internal, gateway, port)?.1);
    }
    // A connection is counted once the accepting thread got to it.
    std::thread::sleep(Duration::from_millis(100));
    let baseline_escapes = connections.swap(0, Ordering::SeqCst);
    eprintln!("Docker alone: {baseline_escapes} of {baseline_starts} probes reached the host");

    let agent = AgentProcess::start_with_args(
        exe,
        &[&internal.name, &observed.name],
        &[],
        &[
            "--flow-table-entries",
            AGENT_FLOW_TABLE,
            "--flow-limit",
            AGENT_FLOW_LIMIT,
        ],
    );
    wait_for("the agent's first sync", Duration::from_secs(30), || {
        agent.synced()
    });
    let status = agent_status(&agent)?;
    let pid = status.pid;
    let metrics = status
        .metrics_addr
        .clone()
        .ok_or_else(|| anyhow!("the agent serves no metrics"))?;
    std::thread::sleep(Duration::from_secs(1));
    let idle_secs = args.pick(10.0, 0.5);
    let rss_idle = rss(pid);
    let cpu_idle = cpu_over(pid, idle_secs)?;

    // Start-to-enforced window: as the host is set up, then with expedited
    // RCU grace periods (what each TCX attach waits for).
    let mut window_runs = Vec::new();
    for (rcu, starts) in [
        (Rcu::AsIs, args.pick(100, 2)),
        (Rcu::Expedited, args.pick(30, 1)),
    ] {
        let expedited = match rcu {
            Rcu::AsIs => None,
            Rcu::Expedited => expedite("the start-to-enforced runs")?,
        };
        let mut run = WindowRun {
            rcu,
            starts,
            ..WindowRun::default()
        };
        for i in 0..starts {
            match probe_start_enforced(&internal, gateway, port, agent.pin_root())? {
                Some(StartWindow {
                    window_us,
                    first_on_veth,
                    run_ms,
                }) => {
                    run.windows_us.push(window_us);
                    run.run_ms.push(run_ms);
                    if !first_on_veth {
                        run.first_at_bridge += 1;
                    }
                }
                None => run.no_packet += 1,
            }
            if i % 10 == 9 {
                eprintln!("{} container starts probed ({rcu:?})", i + 1);
            }
        }
        drop(expedited);
        std::thread::sleep(Duration::from_millis(100));
        run.escapes = connections.swap(0, Ordering::SeqCst);
        ensure!(
            !run.windows_us.is_empty(),
            "no probe's first packet was seen by netwatch"
        );
        window_runs.push(run);
    }

    // 100,000 flows from a container on the observed network.
    let flows = args.pick(100_000, 2_000);
    let (sender, run) = send_flows(&agent, pid, &metrics, &observed, "scale-sender", flows)?;
    let FlowRun {
        lost,
        tracked,
        summarised,
        cpu_ingest,
    } = run;
    let rss_flows = rss(pid);
    // Three of each, alternated, each past the pipeline's minimum interval
    // between two sweeps (so none is answered from the one before): one
    // sample of a quarter-second query on this machine is not a figure.
    let (mut scrapes, mut queries) = (Vec::new(), Vec::new());
    for _ in 0..QUERY_SAMPLES {
        std::thread::sleep(Duration::from_millis(200));
        let scrape_start = Instant::now();
        metric(&metrics, "netwatch_tracked_flows")?;
        scrapes.push(scrape_start.elapsed().as_secs_f64());
        std::thread::sleep(Duration::from_millis(200));
        queries.push(timed_flows_query(exe, &agent)?);
    }
    let (query, scrape) = (median(&queries), median(&scrapes));
    // "median s, lowest–highest"
    let spread = |median: f64, samples: &[f64]| {
        let (lo, hi) = samples
            .iter()
            .fold((f64::MAX, 0.0f64), |(lo, hi), s| (lo.min(*s), hi.max(*s)));
        format!("{median:.2} s, {lo:.2}–{hi:.2}")
    };
    let rss_query = rss(pid);
    let cpu_flows = cpu_over(pid, idle_secs)?;
    let rss_after = rss(pid);
    let tracked_after = metric(&metrics, "netwatch_tracked_flows")?;
    drop(sender);

    // Churn with the defaults: a fresh agent that keeps at most 100,000
    // flows one by one (and a kernel table of 65,536) takes three times as
    // many, so it folds the longest idle into summaries and remembers which
    // it folded (its largest state): its memory of folded flows fills after
    // 200,000, and only churn past that showed the table of it doubling.
    drop(agent);
    let churn_flows = args.pick(300_000, 4_000);
    let agent = AgentProcess::start_with_args(exe, &[&internal.name, &observed.name], &[], &[]);
    wait_for(
        "the default-limit agent's first sync",
        Duration::from_secs(30),
        || agent.synced(),
    );
    let status = agent_status(&agent)?;
    let churn_metrics = status
        .metrics_addr
        .clone()
        .ok_or_else(|| anyhow!("the default-limit agent serves no metrics"))?;
    let (churner, churn) = send_flows(
        &agent,
        status.pid,
        &churn_metrics,
        &observed,
        "scale-churn",
        churn_flows,
    )?;
    let rss_churn = rss(status.pid);
    let churn_query = timed_flows_query(exe, &agent)?;
    let rss_churn_query = rss(status.pid);
    drop(churner);
    drop(agent);
    let churn_peak_kib = rss_churn.total_kib.max(rss_churn_query.total_kib);

    let peak_rss_kib = [rss_flows, rss_query, rss_after]
        .iter()
        .map(|r| r.total_kib)
        .max()
        .unwrap_or(0);
    let met = |met: bool| if met { "met" } else { "missed" };
    let mut table = Table::new(&["agent", "RSS", "CPU (1.0 = one core)"]);
    table.row(vec![
        "idle, 2 networks, after its first sync".into(),
        rss_idle.text(),
        format!("{cpu_idle:.3} over {idle_secs} s"),
    ]);
    table.row(vec![
        format!(
            "taking {flows} new-flow records at {SENDER_RATE}/s ({lost} lost, {tracked} flows \
             tracked, {summarised} folded into summaries)"
        ),
        rss_flows.text(),
        format!("{cpu_ingest:.3}"),
    ]);
    table.row(vec![
        format!(
            "after {QUERY_SAMPLES} `netwatch flows -o json` (median {}) and {QUERY_SAMPLES} \
             /metrics scrapes (median {}): each sweeps the kernel flow table",
            spread(query, &queries),
            spread(scrape, &scrapes)
        ),
        rss_query.text(),
        "-".into(),
    ]);
    table.row(vec![
        format!("{idle_secs} s later, idle, {tracked_after} flows tracked"),
        rss_after.text(),
        format!("{cpu_flows:.3} over {idle_secs} s"),
    ]);
    table.row(vec![
        format!(
            "a fresh agent with the default flow limit and table (100,000 and 65,536), \
             taking {churn_flows} new-flow records at {SENDER_RATE}/s ({} lost, {} flows tracked, {} folded into \
             summaries)",
            churn.lost, churn.tracked, churn.summarised
        ),
        rss_churn.text(),
        format!("{:.3}", churn.cpu_ingest),
    ]);
    table.row(vec![
        format!("the same after one `netwatch flows -o json` ({churn_query:.2} s)"),
        rss_churn_query.text(),
        "-".into(),
    ]);
    section.text(&format!(
        "**Agent resources.** The agent as a process (this binary re-executed as `netwatch \
         agent`, default settings except `--flow-table-entries {AGENT_FLOW_TABLE}` so that \
         100,000 flows fit in the kernel table, `--flow-limit {AGENT_FLOW_LIMIT}` so that the \
         agent keeps them one by one (at the default 100,000 the few hundred flows of the \
         start-to-enforced probes before them pushed it past the limit, and it folded the \
         10,000 longest idle into summaries), and the test agent's 2 s resync) managing an \
         internal and a normal network on a private dockerd (`--iptables=false`). The flows are real: a \
         container on the normal network sends one UDP datagram per 5-tuple ({flows} source \
         and destination port pairs) through its veth to an address of its own network \
         (a static neighbour entry; no host answers), paced at {SENDER_RATE}/s by a raw \
         socket (python3 run in the container's namespace with nsenter). RSS from \
         /proc/PID/status, CPU from /proc/PID/stat; the CPU of the second row is over the \
         sender's run. Every `/metrics` scrape and flows query sweeps the kernel table \
         (read into one buffer of all its entries) and the query writes its JSON in 1 MiB \
         pieces, each sent as it is written (~80 MiB in all at 100,000 flows); \
         the benchmark scraped every 50 ms while waiting for the records. The agent maps \
         such buffers on their own and unmaps them when freed, so the rows show what it \
         keeps, not the peak of a query. The heap is the agent's own (`RssAnon`); the \
         mapped rest is its binary and libraries and the ring buffers' pages (the flow \
         records' 4 MiB ring is mapped twice, so that a record may wrap). Goals: RSS \
         under 64 MiB at 100,000 flows (here {}, highest of the rows after the records); \
         the flows query and the scrape under 0.25 s each (here {}, median of \
         {QUERY_SAMPLES}). The last two rows are a fresh agent with every default taking \
         three times as many flows from a second container, so that it folds flows past its \
         limit into summaries and remembers which it folded, its largest state: {:.1} MiB \
         at its highest ({} the same 64 MiB). It keeps no more flows, but it also \
         remembers the folded ones (an id and their counts at folding) and holds their \
         summaries. Its maps of flows and of folded flows keep no room for removed entries: \
         Rust's `HashMap` (hashbrown) marked them deleted rather than empty and doubled its \
         table under this churn (the flows' from 131,072 slots of ~177 bytes to 262,144): \
         89.3 MiB at its highest after 200,000 flows on 07605a9. Both are now `IndexMap`s \
         that forget in batches, each rebuilding the index table.",
        met(peak_rss_kib < 64 * 1024),
        met(query <= 0.25 && scrape <= 0.25),
        churn_peak_kib as f64 / 1024.0,
        if churn_peak_kib < 64 * 1024 { "under" } else { "over" },
    ));
    section.table(&table);

    let mut window = Table::new(&[
        "container starts",
        "probes that reached the host",
        "veth enforced before the first packet",
        "first packet dropped by the bridge's policy",
        "window median",
        "window p99",
        "window max",
        "`docker run -d` median",
    ]);
    for run in &window_runs {
        let attached_first = run.windows_us.iter().filter(|w| **w <= 0.0).count();
        let positive: Vec<f64> = run.windows_us.iter().map(|w| w.max(0.0)).collect();
        window.row(vec![
            format!(
                "{} (netwatch agent, {} RCU grace periods)",
                run.starts,
                match run.rcu {
                    Rcu::AsIs => "normal",
                    Rcu::Expedited => "expedited",
                }
            ),
            run.escapes.to_string(),
            format!("{attached_first} of {}", run.windows_us.len()),
            format!("{} of {}", run.first_at_bridge, run.windows_us.len()),
            format!("{:.1} ms", median(&positive) / 1e3),
            format!("{:.1} ms", percentile(&positive, 99.0) / 1e3),
            format!(
                "{:.1} ms",
                positive.iter().copied().fold(0.0, f64::max) / 1e3
            ),
            format!("{:.0} ms", median(&run.run_ms)),
        ]);
    }
    window.row(vec![
        format!("{baseline_starts} (Docker alone: the same dockerd, before the agent started)"),
        baseline_escapes.to_string(),
        "-".into(),
        "-".into(),
        "-".into(),
        "-".into(),
        "-".into(),
        format!("{:.0} ms", median(&baseline_run_ms)),
    ]);
    section.text(&format!(
        "**Start-to-enforced window.** Containers started one after another on an \
         `internal: true` network managed by the agent; each one's first act is a TCP \
         connection to the network's gateway (the host), where this benchmark listens: \
         Docker allows it, netwatch must not. A probe \"reached the host\" when the \
         listener accepted its connection. The window is the time from the container's \
         first packet (the earliest `first_seen` of its flows in the kernel's flow table, \
         whichever program saw it: the veth's, or the bridge's network-wide policy that \
         is in place before any container starts) to its veth's programs being attached \
         (the modification time of the link's pin, which is written right after the \
         attach: an upper bound), both on the kernel's clocks; a window ≤ 0 means the veth \
         was enforced before the container sent anything, counted as 0 in the median and \
         p99. Probes with no packet in the flow table: {}. Goal: no escape, window \
         zero or p99 under 1 ms.",
        window_runs
            .iter()
            .map(|r| r.no_packet.to_string())
            .collect::<Vec<_>>()
            .join(" and ")
    ));
    section.table(&window);
    section.text(
        "Why the window is zero: Docker creates a container's veth pair and enslaves the \
         host end to the network's bridge before it starts the container's process; the \
         agent listens for that (an RTM_NEWLINK with IFLA_MASTER, on rtnetlink's link group) \
         and attaches the veth programs with the network's network-wide policy right away \
         (sources must lie in the network), to be replaced by the container's own addresses \
         and labels once Docker's `start` event and a snapshot name it. The last column \
         compares how long `docker run -d` takes to return with the agent and without it \
         (the Docker-alone row): the attach runs in the agent, beside Docker, not in its \
         way.",
    );
    let escapes: usize = window_runs.iter().map(|r| r.escapes).sum();
    ensure!(
        escapes == 0,
        "{escapes} probes reached the host with netwatch enforcing"
    );
    Ok(())
}

/// The start-to-enforced probes of one configuration.
#[derive(Debug)]
struct WindowRun {
    rcu: Rcu,
    starts: usize,
    /// Attach time − first packet, µs, per probe whose packet was seen.
    windows_us: Vec<f64>,
    escapes: usize,
    no_packet: usize,
    /// Probes whose first packet the bridge's policy saw (the veth's
    /// programs were not there yet).
    first_at_bridge: usize,
    /// How long each `docker run -d` took to return, ms.
    run_ms: Vec<f64>,
}

impl Default for WindowRun {
    fn default() -> WindowRun {
        WindowRun {
            rcu: Rcu::AsIs,
            starts: 0,
            windows_us: Vec::new(),
            escapes: 0,
            no_packet: 0,
            first_at_bridge: 0,
            run_ms: Vec::new(),
        }
    }
}

/// The flow sender (argv: address, flows, rate): one UDP datagram per
/// flow from a raw socket, paced.
const SENDER: &str = r#"
import socket, struct, sys, time
dst, n, rate = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
t0 = time.monotonic()
i = 0
while i < n:
    due = min(n, int((time.monotonic() - t0) * rate) + 1)
    while i < due:
        s.sendto(struct.pack("!HHHH", 1024 + i % 60000, 1000 + i // 60000, 8, 0), (dst, 0))
        i += 1
    time.sleep(0.002)
"#;

/// Seconds `netwatch flows -o json` took against `agent`.
fn timed_flows_query(exe: &str, agent: &AgentProcess) -> Result<f64> {
    let start = Instant::now();
    let out = Command::new(exe)
        .args(["flows", "-o", "json", "--socket"])
        .arg(agent.api_socket())
        .stderr(Stdio::inherit())
        .output()?;
    ensure!(out.status.success(), "netwatch flows failed");
    Ok(start.elapsed().as_secs_f64())
}

/// What the agent made of one run of the flow sender.
struct FlowRun {
    lost: f64,
    tracked: f64,
    summarised: f64,
    /// The agent's CPU over the sender's run (1.0 = one core).
    cpu_ingest: f64,
}

/// Sends `flows` new flows from a new container `name` on `observed` (one
/// UDP datagram per 5-tuple, to an address of its own network that nobody
/// answers, paced at [`SENDER_RATE`]), and waits until the agent (`pid`,
/// serving `metrics`) took every record. The container goes when the
/// caller drops it.
fn send_flows(
    agent: &AgentProcess,
    pid: u32,
    metrics: &str,
    observed: &TestNetwork,
    name: &str,
    flows: usize,
) -> Result<(TestContainer, FlowRun)> {
    let sender = TestContainer::run(name, &["--network", &observed.name]);
    let sender_pid = sender.pid().to_string();
    // `eth0@if<host veth ifindex>` (sysfs would show the host's eth0:
    // nsenter does not remount it).
    let link = sh(&[
        "nsenter",
        "-t",
        &sender_pid,
        "-n",
        "ip",
        "-o",
        "link",
        "show",
        "eth0",
    ])?;
    let veth: u32 = link
        .split_once("eth0@if")
        .and_then(|(_, rest)| rest.split(':').next()?.parse().ok())
        .ok_or_else(|| anyhow!("no peer ifindex in {link:?}"))?;
    wait_for(
        "the sender's veth attached",
        Duration::from_secs(30),
        || pins::veth_attached(agent.pin_root(), veth),
    );
    let subnet = network_field(observed, "Subnet");
    let target = sink_address(&subnet)?;
    let target_s = target.to_string();
    sh(&[
        "nsenter",
        "-t",
        &sender_pid,
        "-n",
        "ip",
        "neigh",
        "replace",
        &target_s,
        "lladdr",
        "02:00:00:00:00:fe",
        "dev",
        "eth0",
        "nud",
        "permanent",
    ])?;
    let route = sh(&[
        "nsenter",
        "-t",
        &sender_pid,
        "-n",
        "ip",
        "route",
        "get",
        &target_s,
    ])?;
    ensure!(
        route.contains("dev eth0") && !route.contains(" via "),
        "{target} is not on the sender's own network: {route}"
    );
    let records_before = metric(metrics, "netwatch_pipeline_records_total")?;
    let lost_before = metric(metrics, "netwatch_ringbuf_lost_records_total")?;
    let cpu_before = cpu_secs(pid)?;
    let start = Instant::now();
    sh(&[
        "nsenter",
        "-t",
        &sender_pid,
        "-n",
        "python3",
        "-c",
        SENDER,
        &target_s,
        &flows.to_string(),
        &SENDER_RATE.to_string(),
    ])?;
    // CPU over the sender's run only: polling the metrics below makes the
    // agent sweep its kernel flow table on every scrape.
    let cpu_ingest = (cpu_secs(pid)? - cpu_before) / start.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(500));
    wait_for(
        "the agent took every record",
        Duration::from_secs(30),
        || {
            metric(metrics, "netwatch_pipeline_records_total")
                .is_ok_and(|r| r >= records_before + flows as f64)
        },
    );
    let lost = metric(metrics, "netwatch_ringbuf_lost_records_total")? - lost_before;
    let tracked = metric(metrics, "netwatch_tracked_flows")?;
    let summarised = metric(metrics, "netwatch_flows_summarised_total")?;
    Ok((
        sender,
        FlowRun {
            lost,
            tracked,
            summarised,
            cpu_ingest,
        },
    ))
}

/// An address inside `subnet` (a /16../24 Docker gave the test network)
/// that no container holds: the network's .200 host.
fn sink_address(subnet: &str) -> Result<Ipv4Addr> {
    let (base, len) = subnet
        .split_once('/')
        .ok_or_else(|| anyhow!("odd subnet {subnet}"))?;
    let len: u32 = len.parse()?;
    ensure!(len <= 24, "subnet {subnet} is too small");
    let base: Ipv4Addr = base.parse()?;
    Ok(Ipv4Addr::from(u32::from(base) + 200))
}

/// Accepts and closes every connection to `listener` on a thread of its
/// own (so a probe that got through returns at once); the count of
/// connections so far.
fn count_connections(listener: TcpListener) -> Arc<AtomicUsize> {
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            drop(stream);
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });
    count
}

// ---------------------------------------------------------------------------
// Reconcile after a dockerd restart

/// Host veths on `bridge` with their ifindexes.
fn bridge_ports(bridge: &str) -> BTreeSet<u32> {
    std::fs::read_dir(format!("/sys/class/net/{bridge}/brif"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            std::fs::read_to_string(format!(
                "/sys/class/net/{}/ifindex",
                e.file_name().to_string_lossy()
            ))
            .ok()?
            .trim()
            .parse()
            .ok()
        })
        .collect()
}

/// What one restart measured, in seconds from SIGTERM to the old dockerd.
#[derive(Clone, Copy, Debug)]
struct RestartSample {
    down: f64,
    up: f64,
    veths_back: f64,
    attached: f64,
}

fn restart_section(
    args: &BenchArgs,
    section: &mut Section,
    daemon: &mut PrivateDockerd,
) -> Result<()> {
    let n = args.pick(20, 2);
    let restarts = args.pick(3, 1);
    let exe = std::env::current_exe()?;
    let exe = exe.to_str().ok_or_else(|| anyhow!("odd executable path"))?;
    let network = TestNetwork::create("scale-restart", &["--internal"]);
    let bridge = network.bridge();
    let mut containers = Vec::new();
    for _ in 0..n {
        let container = TestContainer::try_run_command(
            "restart",
            &["--restart", "always", "--network", &network.name],
            &[
                "sh",
                "-c",
                "trap 'exit 0' TERM; while true; do sleep 1; done",
            ],
        )
        .map_err(|e| anyhow!(e))?;
        containers.push(container);
    }
    let agent = AgentProcess::start(exe, &[&network.name]);
    let all_attached = |old: &BTreeSet<u32>| {
        let ports = bridge_ports(&bridge);
        ports.len() == n
            && ports.is_disjoint(old)
            && ports
                .iter()
                .all(|i| pins::veth_attached(agent.pin_root(), *i))
    };
    wait_for("every container attached", Duration::from_secs(60), || {
        all_attached(&BTreeSet::new())
    });
    let mut samples = Vec::new();
    for _ in 0..restarts {
        let old = bridge_ports(&bridge);
        let start = Instant::now();
        daemon.stop_daemon();
        let down = start.elapsed().as_secs_f64();
        daemon.start_again();
        let up = start.elapsed().as_secs_f64();
        let mut veths_back = None;
        let deadline = Instant::now() + Duration::from_secs(120);
        let attached = loop {
            let ports = bridge_ports(&bridge);
            if veths_back.is_none() && ports.len() == n && ports.is_disjoint(&old) {
                veths_back = Some(start.elapsed().as_secs_f64());
            }
            if all_attached(&old) {
                break start.elapsed().as_secs_f64();
            }
            if Instant::now() > deadline {
                bail!(
                    "not every container was attached again within 120 s of the restart\n{}",
                    agent.log()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let sample = RestartSample {
            down,
            up,
            veths_back: veths_back.unwrap_or(attached),
            attached,
        };
        eprintln!("dockerd restart: {sample:?}");
        samples.push(sample);
    }
    drop(agent);
    drop(containers);
    drop(network);
    let col = |f: fn(&RestartSample) -> f64| {
        format!(
            "{:.2} s",
            median(&samples.iter().map(f).collect::<Vec<_>>())
        )
    };
    let mut table = Table::new(&[
        "containers",
        "old dockerd stopped",
        "new dockerd answers",
        "every container's new veth exists",
        "every new veth enforced",
        "enforced after veths existed",
    ]);
    table.row(vec![
        n.to_string(),
        col(|s| s.down),
        col(|s| s.up),
        col(|s| s.veths_back),
        col(|s| s.attached),
        col(|s| s.attached - s.veths_back),
    ]);
    section.text(&format!(
        "**Reconcile after a dockerd restart.** A private dockerd (`--iptables=false`) with \
         {n} `--restart always` containers on an internal network and the agent following \
         it; dockerd gets SIGTERM (its containers stop) and is started again with the same \
         directories, which restarts the containers on new veths. Seconds from the SIGTERM, \
         medians of {restarts} restarts. While dockerd is away the agent retries with \
         backoff (1 s, doubling) and the old veths' pins stay until it reconciles."
    ));
    section.table(&table);
    Ok(())
}
