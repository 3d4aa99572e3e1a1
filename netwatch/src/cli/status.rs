//! `netwatch status`: the agent, the kernel side, what is attached and
//! what was dropped.

use std::{
    collections::BTreeMap,
    path::Path,
    process::ExitCode,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::Result;
use netwatch_common::reason::DropReason;
use netwatch_common::reason::Verdict;
use serde::Serialize;

use super::OutputFormat;
use crate::{
    agent::{lock, status_file::AgentStatus},
    api::{ApiClient, DEFAULT_SOCKET, types::ApiStatus},
    datapath::{
        pinned::{FlowTableCounts, PinnedCounters, read_counters, read_flows},
        pins,
    },
    docker::{Client, Snapshot},
    guard::{self, AgentView, Alarm},
    host,
};

#[derive(Serialize)]
struct Status {
    agent_running: bool,
    agent: Option<AgentStatus>,
    kernel: Option<String>,
    attach_mode: &'static str,
    bpffs: bool,
    pin_root: String,
    attached: Vec<AttachedInterface>,
    pinned_objects: usize,
    forwarded: u64,
    drops: BTreeMap<&'static str, u64>,
    /// Packets audit let through, by the reason enforcement would have
    /// dropped them for.
    audited: BTreeMap<&'static str, u64>,
    uplink_passed: u64,
    uplink_drops: BTreeMap<&'static str, u64>,
    ringbuf_lost: u64,
    /// DNS records, as the kernel counted them (`None`: not pinned).
    #[serde(skip_serializing_if = "Option::is_none")]
    dns: Option<crate::datapath::DnsKernelCounts>,
    /// The kernel's flow table (`None` when nothing is pinned).
    flow_table: Option<FlowTableCounts>,
    /// The running agent's flow pipeline, from its API.
    pipeline: Option<ApiStatus>,
    /// Why the pipeline's counters could not be read from a running agent.
    pipeline_error: Option<String>,
    /// Networks and endpoints whose policy denies something (internal,
    /// `netwatch.egress=deny`) but that netwatch does not enforce. Any of
    /// them makes `status` exit with [`EXIT_UNGUARDED`].
    unguarded: Vec<Alarm>,
    /// Unguarded networks and endpoints whose policy denies nothing (host
    /// networking, a macvlan network nobody asked to isolate…): told, not
    /// alarming.
    unguarded_by_choice: Vec<Alarm>,
    /// Where the two lists above come from: `docker` (judged now, from
    /// Docker and the pins), `agent` (the running agent's last sync, when
    /// this command could not judge itself) or `none`.
    guard_source: &'static str,
    /// Why `status` could not judge for itself, if it could not.
    guard_error: Option<String>,
}

/// `status`'s exit status when a network or endpoint whose policy denies
/// something is not enforced.
pub const EXIT_UNGUARDED: u8 = 3;
/// `status`'s exit status when it cannot tell what is guarded: Docker does
/// not answer and no agent gave an account.
pub const EXIT_CANNOT_TELL: u8 = 4;

/// How long `status` waits for Docker's answers.
const DOCKER_TIMEOUT: Duration = Duration::from_secs(10);

/// The guard alarms of this host: judged now when Docker answers (and this
/// process can resolve veths), else the running agent's last account.
struct GuardReport {
    alarms: Vec<Alarm>,
    by_choice: Vec<Alarm>,
    source: &'static str,
    error: Option<String>,
    /// What each interface netwatch attaches to is, by
    /// [`guard::attach_key`]: (its name where it lives, whose it is). Empty
    /// when Docker was not asked.
    interfaces: BTreeMap<String, (String, String)>,
}

/// By [`guard::attach_key`]: the name of each endpoint's interface where it
/// lives, and whose endpoint it is (`web on backend`), so that `status`
/// names interfaces in containers and overlay sandboxes, whose ifindexes
/// mean nothing in the host's namespace.
fn interfaces_of(assessment: &guard::Assessment) -> BTreeMap<String, (String, String)> {
    let mut named = BTreeMap::new();
    for network in &assessment.networks {
        for endpoint in &network.endpoints {
            let whose = format!("{} on {}", endpoint.container, network.name);
            let keyed = [
                endpoint
                    .veth
                    .as_ref()
                    .map(|v| (guard::attach_key(None, v.ifindex), v.ifname.clone())),
                endpoint.macvlan.as_ref().map(|m| {
                    let key = guard::attach_key(Some(m.netns_cookie), m.ifindex);
                    (key, format!("{} (in container)", m.ifname))
                }),
                endpoint.overlay.as_ref().map(|v| {
                    let key = guard::attach_key(Some(v.netns_cookie), v.ifindex);
                    (key, format!("{} (in sandbox)", v.ifname))
                }),
            ];
            for (key, ifname) in keyed.into_iter().flatten() {
                named.insert(key, (ifname, whose.clone()));
            }
        }
    }
    named
}

fn guard_report(
    root: &Path,
    run_dir: &Path,
    agent: Option<&AgentStatus>,
    only: &[String],
) -> Result<GuardReport> {
    let judged = if host::is_root() {
        super::block_on(async {
            let snapshot = async {
                let client = Client::connect().await?;
                Ok::<_, anyhow::Error>(Snapshot::take(&client).await?)
            };
            match tokio::time::timeout(DOCKER_TIMEOUT, snapshot).await {
                Ok(result) => result,
                Err(_) => anyhow::bail!(
                    "Docker did not answer within {} s",
                    DOCKER_TIMEOUT.as_secs()
                ),
            }
        })
        .map_err(|e| super::one_line(&e))
    } else {
        Err("not root: veths cannot be looked up".to_owned())
    };
    match judged {
        Ok(snapshot) => {
            for wanted in only {
                if snapshot.inventory.network(wanted).is_none() {
                    anyhow::bail!("no network named {wanted:?}; `docker network ls` lists them");
                }
            }
            let mut assessment =
                guard::assess(&snapshot, &guard::Pins(root), &AgentView::read(run_dir));
            let interfaces = interfaces_of(&assessment);
            assessment
                .networks
                .retain(|n| selected(only, &n.name, &n.id));
            Ok(GuardReport {
                alarms: assessment.alarms(),
                by_choice: assessment.unguarded_by_choice(),
                source: "docker",
                error: None,
                interfaces,
            })
        }
        Err(error) => Ok(match agent.filter(|a| a.last_sync.is_some()) {
            Some(agent) => GuardReport {
                alarms: agent
                    .unguarded
                    .iter()
                    .filter(|a| selected(only, &a.network, &a.network))
                    .cloned()
                    .collect(),
                by_choice: Vec::new(),
                source: "agent",
                error: Some(error),
                interfaces: BTreeMap::new(),
            },
            None => GuardReport {
                alarms: Vec::new(),
                by_choice: Vec::new(),
                source: "none",
                error: Some(error),
                interfaces: BTreeMap::new(),
            },
        }),
    }
}

/// Whether network `name` (id `id`) is one of `only` (all when empty).
fn selected(only: &[String], name: &str, id: &str) -> bool {
    only.is_empty() || only.iter().any(|w| w == name || w == id)
}

#[derive(Serialize)]
struct AttachedInterface {
    ifindex: u32,
    /// For an interface in a container's or an overlay sandbox's
    /// namespace: that namespace's cookie (the ifindex is its); `None`:
    /// the host's.
    netns: Option<u64>,
    /// None when the interface is gone (its pins are stale) or, in another
    /// namespace, when Docker did not say whose it is.
    ifname: Option<String>,
    /// Whose endpoint it is (`web on backend`), when Docker said.
    endpoint: Option<String>,
    programs: Vec<String>,
}

fn drops(counts: &[u64]) -> BTreeMap<&'static str, u64> {
    DropReason::ALL
        .iter()
        .filter(|r| **r != DropReason::None && counts[**r as usize] > 0)
        .map(|r| (r.name(), counts[*r as usize]))
        .collect()
}

fn interface_name(ifindex: u32) -> Option<String> {
    nix::net::if_::if_indextoname(ifindex)
        .ok()
        .and_then(|name| name.into_string().ok())
}

/// The pinned links under `root`, one entry per interface, named from
/// `interfaces` ([`GuardReport::interfaces`]) or, on the host, the kernel.
fn attached_interfaces(
    root: &Path,
    interfaces: &BTreeMap<String, (String, String)>,
) -> Vec<AttachedInterface> {
    let mut links = pins::pinned_links(root);
    links.sort_by_key(|l| (l.netns.is_some(), l.ifindex, l.netns));
    let mut attached: Vec<AttachedInterface> = Vec::new();
    for link in links {
        match attached.last_mut() {
            Some(last) if (last.netns, last.ifindex) == (link.netns, link.ifindex) => {
                last.programs.push(link.program)
            }
            _ => {
                let named = interfaces.get(&guard::attach_key(link.netns, link.ifindex));
                let ifname = match (named, link.netns) {
                    (Some((ifname, _)), _) => Some(ifname.clone()),
                    (None, None) => interface_name(link.ifindex),
                    (None, Some(_)) => None,
                };
                attached.push(AttachedInterface {
                    ifindex: link.ifindex,
                    netns: link.netns,
                    ifname,
                    endpoint: named.map(|(_, whose)| whose.clone()),
                    programs: vec![link.program],
                });
            }
        }
    }
    attached
}

fn collect(root: &Path, run_dir: &Path, only: &[String]) -> Result<Status> {
    let pinned_objects = [
        pins::links_dir(root),
        pins::maps_dir(root),
        pins::progs_dir(root),
    ]
    .iter()
    .filter_map(|dir| std::fs::read_dir(dir).ok())
    .map(|entries| entries.count())
    .sum();
    let counters = read_counters(root)?.unwrap_or(PinnedCounters {
        verdicts: Default::default(),
        uplink: Default::default(),
        audited: None,
        ringbuf_lost: 0,
        flows_inserted: None,
        dns: None,
    });
    // The insert counter was read first (see `FlowTableCounts::new`); `None`
    // for pins of a netwatch that did not count inserts.
    let flow_table = match counters.flows_inserted {
        Some(inserted) => Some(FlowTableCounts::new(
            inserted,
            read_flows(root)?.len() as u64,
        )),
        None => None,
    };
    let kernel = host::kernel_release();
    let running = lock::agent_running(run_dir);
    let agent = AgentStatus::read(run_dir).filter(|_| running);
    let (pipeline, pipeline_error) = match &agent {
        Some(agent) => {
            let socket = agent.api_socket.as_deref().unwrap_or(DEFAULT_SOCKET);
            match pipeline_status(socket) {
                Ok(status) => (Some(status), None),
                Err(e) => (None, Some(e)),
            }
        }
        None => (None, None),
    };
    let guard = guard_report(root, run_dir, agent.as_ref(), only)?;
    let attached = attached_interfaces(root, &guard.interfaces);
    Ok(Status {
        unguarded: guard.alarms,
        unguarded_by_choice: guard.by_choice,
        guard_source: guard.source,
        guard_error: guard.error,
        agent_running: running,
        agent,
        pipeline,
        pipeline_error,
        attach_mode: if kernel.as_ref().is_some_and(|k| k.at_least(6, 6)) {
            "tcx"
        } else {
            "unsupported (netwatch needs TCX, Linux ≥ 6.6)"
        },
        kernel: kernel.map(|k| k.to_string()),
        bpffs: host::bpffs_mounted(),
        pin_root: root.display().to_string(),
        attached,
        pinned_objects,
        forwarded: counters.verdicts[DropReason::None as usize],
        drops: drops(&counters.verdicts),
        audited: counters
            .audited
            .as_ref()
            .map(|c| drops(c))
            .unwrap_or_default(),
        uplink_passed: counters.uplink[DropReason::None as usize],
        uplink_drops: drops(&counters.uplink),
        ringbuf_lost: counters.ringbuf_lost,
        dns: counters.dns,
        flow_table,
    })
}

/// How long `status` waits for the agent's API.
const API_TIMEOUT: Duration = Duration::from_secs(3);

/// The agent's `/v1/status`, or why it could not be had.
fn pipeline_status(socket: &str) -> Result<ApiStatus, String> {
    let client = ApiClient::new(socket);
    super::block_on(async {
        match tokio::time::timeout(API_TIMEOUT, client.status()).await {
            Ok(Ok(status)) => Ok(status),
            Ok(Err(e)) => anyhow::bail!("the agent's API at {socket} did not answer: {e}"),
            Err(_) => anyhow::bail!(
                "the agent's API at {socket} did not answer within {} s",
                API_TIMEOUT.as_secs()
            ),
        }
    })
    .map_err(|e| super::one_line(&e))
}

fn ago(unix: u64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!("{} s ago", now.saturating_sub(unix))
}

fn print_table(s: &Status) {
    let agent = match (&s.agent_running, &s.agent) {
        (true, Some(a)) => format!(
            "running (pid {}, up {})",
            a.pid,
            ago(a.started_at).replace(" ago", "")
        ),
        (true, None) => "running".to_string(),
        (false, _) => "not running".to_string(),
    };
    println!("{:<14} {agent}", "agent");
    if let Some(a) = &s.agent {
        let sync = match (a.last_sync, &a.docker_error) {
            (_, Some(e)) => format!("failing: {e}"),
            (Some(t), None) => format!(
                "{} (Docker API {})",
                ago(t),
                a.docker_api_version.as_deref().unwrap_or("?")
            ),
            (None, None) => "not yet".to_string(),
        };
        println!("{:<14} {sync}", "docker sync");
        for refused in &a.refused {
            println!("{:<14} {refused}", "refused");
        }
        for problem in &a.label_problems {
            println!("{:<14} {problem}", "bad label");
        }
        for dropped in &a.published_dropped {
            println!("{:<14} {dropped}", "published");
        }
        let shield = if a.uplinks.is_empty() {
            "none".to_string()
        } else {
            a.uplinks.join(", ")
        };
        println!("{:<14} {shield}", "uplink shield");
        if a.audit {
            println!(
                "{:<14} ON (--audit): nothing is dropped; would-be drops are recorded as audited",
                "audit"
            );
        }
        if let Some(kernel_drops) = &a.kernel_drops {
            println!("{:<14} {kernel_drops}", "kernel drops");
        }
        if a.repairs > 0 {
            println!(
                "{:<14} {} pins removed behind the agent's back were put back (see its log)",
                "repaired", a.repairs
            );
        }
    }
    print_guard(s);
    println!(
        "{:<14} {} on Linux {}",
        "datapath",
        s.attach_mode,
        s.kernel.as_deref().unwrap_or("?")
    );
    println!(
        "{:<14} {} ({} objects pinned){}",
        "pins",
        s.pin_root,
        s.pinned_objects,
        if s.bpffs { "" } else { "; bpffs NOT mounted" }
    );
    println!("{:<14} {} interfaces", "attached", s.attached.len());
    let name = |a: &AttachedInterface| match (&a.ifname, a.netns) {
        (Some(ifname), _) => ifname.clone(),
        (None, Some(_)) => "(in a container or sandbox)".to_owned(),
        (None, None) => "(gone)".to_owned(),
    };
    let width = s
        .attached
        .iter()
        .map(|a| name(a).len())
        .max()
        .unwrap_or(0)
        .max(16);
    for a in &s.attached {
        let whose = a
            .endpoint
            .as_ref()
            .map(|e| format!("  {e}"))
            .unwrap_or_default();
        println!(
            "  {:<width$} ifindex {:<6} {}{whose}",
            name(a),
            a.ifindex,
            a.programs.join(", ")
        );
    }
    println!("{:<14} {}", Verdict::Forwarded.name(), s.forwarded);
    println!("{:<14} {}", Verdict::Dropped.name(), summary(&s.drops));
    if !s.audited.is_empty() {
        println!(
            "{:<14} {} (forwarded; enforcement would drop them)",
            Verdict::Audited.name(),
            summary(&s.audited)
        );
    }
    println!(
        "{:<14} {} passed; {}",
        "uplink",
        s.uplink_passed,
        summary(&s.uplink_drops)
    );
    match (&s.pipeline, &s.pipeline_error) {
        (Some(p), _) => {
            let c = &p.counters;
            println!(
                "{:<14} {} tracked one by one (limit {}), {} idle flows summarised",
                "flows", p.tracked_flows, p.flow_limit, c.summarised
            );
            // An older agent does not say.
            let gaps = if p.drains.drains > 0 {
                format!(
                    "; longest gap between two reads {:.0} ms",
                    p.drains.longest_gap_us as f64 / 1e3
                )
            } else {
                String::new()
            };
            println!(
                "{:<14} {} read, {} lost (ring buffer full), {} malformed, {} live flows evicted and seen again{gaps}",
                "records", c.records, s.ringbuf_lost, c.malformed, c.kernel_evictions
            );
            if c.host_mode_peers > 0 || c.host_peer_lookup_failures > 0 {
                println!(
                    "{:<14} {} flows named after a --network host container, {} socket lookups failed (named `host`)",
                    "host peers", c.host_mode_peers, c.host_peer_lookup_failures
                );
            }
        }
        (None, Some(error)) => {
            println!("{:<14} {error}", "flows");
            println!(
                "{:<14} {} lost (ring buffer full)",
                "records", s.ringbuf_lost
            );
        }
        (None, None) => {
            println!(
                "{:<14} {} lost (ring buffer full)",
                "records", s.ringbuf_lost
            );
        }
    }
    if let Some(dns) = &s.dns {
        let parsed = s
            .pipeline
            .as_ref()
            .map(|p| {
                format!(
                    "; {} queries and {} answers listed, {} unreadable",
                    p.dns.queries, p.dns.answers, p.dns.parse_failures
                )
            })
            .unwrap_or_default();
        println!(
            "{:<14} {} recorded, {} rate-limited (--dns-rate), {} lost (ring buffer full), {} cut at 512 bytes{parsed}",
            "dns", dns.submitted, dns.rate_limited, dns.lost, dns.truncated
        );
    }
    if let Some(t) = &s.flow_table {
        println!(
            "{:<14} {} entries, {} inserted, {} evicted (least recently used)",
            "flow table", t.entries, t.inserted, t.evicted
        );
    }
}

/// The UNGUARDED heading: what must be enforced and is not, each with why.
fn print_guard(s: &Status) {
    let from_agent = if s.guard_source == "agent" {
        format!(
            " (the agent's last sync; not judged now: {})",
            s.guard_error.as_deref().unwrap_or("?")
        )
    } else {
        String::new()
    };
    match (s.guard_source, s.unguarded.len()) {
        ("none", _) => println!(
            "{:<14} cannot tell: {}",
            "UNGUARDED",
            s.guard_error.as_deref().unwrap_or("?")
        ),
        (_, 0) => println!(
            "{:<14} none: every internal or egress-denied network and endpoint is enforced{from_agent}",
            "unguarded"
        ),
        (_, n) => {
            println!(
                "{:<14} {n} internal or egress-denied {} not enforced{from_agent}:",
                "UNGUARDED",
                if n == 1 {
                    "network or endpoint is"
                } else {
                    "networks and endpoints are"
                }
            );
            for alarm in &s.unguarded {
                println!("  {alarm}");
            }
        }
    }
    if !s.unguarded_by_choice.is_empty() {
        println!(
            "{:<14} {} more unguarded whose policy denies nothing (host networking, other \
             drivers…); `netwatch networks` says why",
            "not guarded",
            s.unguarded_by_choice.len()
        );
    }
}

fn summary(drops: &BTreeMap<&'static str, u64>) -> String {
    if drops.is_empty() {
        return "none".to_string();
    }
    drops
        .iter()
        .map(|(reason, n)| format!("{reason} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Prints the status.
///
/// # Errors
/// Not root (pinned maps need CAP_BPF), or a pinned map cannot be read.
pub fn run(
    output: OutputFormat,
    networks: &[String],
    pin_root: &Path,
    run_dir: &Path,
) -> Result<ExitCode> {
    host::require_capabilities("netwatch status", &[host::Capability::Bpf])
        .map_err(anyhow::Error::msg)?;
    let status = collect(pin_root, run_dir, networks)?;
    match output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&status)?),
        OutputFormat::Table => print_table(&status),
    }
    Ok(ExitCode::from(exit_status(&status)))
}

/// 0, [`EXIT_UNGUARDED`] or [`EXIT_CANNOT_TELL`].
fn exit_status(status: &Status) -> u8 {
    if !status.unguarded.is_empty() {
        EXIT_UNGUARDED
    } else if status.guard_source == "none" {
        EXIT_CANNOT_TELL
    } else {
        0
    }
}

/// Show whether the agent runs, what is unguarded, what is attached
/// where, and what was dropped and why (read from the pinned maps, so it
/// works whether or not the agent is up).
///
/// Under UNGUARDED it lists every network and endpoint whose policy
/// denies something (`internal: true`, `netwatch.egress=deny`) but that
/// netwatch does not enforce, each with why: a driver netwatch has no
/// hook for, a veth not found or not attached, a network the agent does
/// not manage. It judges from Docker and the pins now; when Docker does
/// not answer, it shows the running agent's last account.
///
/// Exit status:
///   0  every internal or egress-denied network and endpoint is enforced
///   1  status could not be read (e.g. not root)
///   3  at least one of them is unguarded (listed under UNGUARDED)
///   4  cannot tell: Docker does not answer and no agent has synced
///
/// Examples:
///   sudo netwatch status
///   sudo netwatch status --network shop_backend || alert
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct StatusArgs {
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = super::OutputFormat::Table)]
    pub output: super::OutputFormat,
    /// Judge only these networks (names or ids; repeat the flag) for
    /// UNGUARDED and the exit status.
    #[arg(long = "network", value_name = "NETWORK")]
    pub networks: Vec<String>,
    /// Where the agent pins its links and maps (a directory in bpffs).
    #[arg(long, hide = true, default_value = "/sys/fs/bpf/netwatch")]
    pub pin_root: std::path::PathBuf,
    /// Where the agent keeps its lock and status file.
    #[arg(long, hide = true, default_value = "/run/netwatch")]
    pub run_dir: std::path::PathBuf,
}
