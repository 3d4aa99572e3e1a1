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
use serde::Serialize;

use super::OutputFormat;
use crate::{
    agent::{lock, status_file::AgentStatus},
    api::{ApiClient, DEFAULT_SOCKET, types::ApiStatus},
    datapath::{
        pinned::{FlowTableCounts, PinnedCounters, read_counters, read_flows},
        pins,
    },
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
    uplink_passed: u64,
    uplink_drops: BTreeMap<&'static str, u64>,
    ringbuf_lost: u64,
    /// The kernel's flow table (`None` when nothing is pinned).
    flow_table: Option<FlowTableCounts>,
    /// The running agent's flow pipeline, from its API.
    pipeline: Option<ApiStatus>,
    /// Why the pipeline's counters could not be read from a running agent.
    pipeline_error: Option<String>,
}

#[derive(Serialize)]
struct AttachedInterface {
    ifindex: u32,
    /// None when the interface is gone (its pins are stale).
    ifname: Option<String>,
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

fn collect(root: &Path, run_dir: &Path) -> Result<Status> {
    let mut attached: Vec<AttachedInterface> = Vec::new();
    for link in pins::pinned_links(root) {
        match attached.last_mut() {
            Some(last) if last.ifindex == link.ifindex => last.programs.push(link.program),
            _ => attached.push(AttachedInterface {
                ifindex: link.ifindex,
                ifname: interface_name(link.ifindex),
                programs: vec![link.program],
            }),
        }
    }
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
        ringbuf_lost: 0,
        flows_inserted: None,
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
    Ok(Status {
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
        uplink_passed: counters.uplink[DropReason::None as usize],
        uplink_drops: drops(&counters.uplink),
        ringbuf_lost: counters.ringbuf_lost,
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
        let shield = if a.uplinks.is_empty() {
            "none".to_string()
        } else {
            a.uplinks.join(", ")
        };
        println!("{:<14} {shield}", "uplink shield");
        if a.repairs > 0 {
            println!(
                "{:<14} {} pins removed behind the agent's back were put back (see its log)",
                "repaired", a.repairs
            );
        }
    }
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
    for a in &s.attached {
        println!(
            "  {:<16} ifindex {:<6} {}",
            a.ifname.as_deref().unwrap_or("(gone)"),
            a.ifindex,
            a.programs.join(", ")
        );
    }
    println!("{:<14} {}", "forwarded", s.forwarded);
    println!("{:<14} {}", "dropped", summary(&s.drops));
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
            println!(
                "{:<14} {} read, {} lost (ring buffer full), {} malformed, {} live flows evicted and seen again",
                "records", c.records, s.ringbuf_lost, c.malformed, c.kernel_evictions
            );
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
    if let Some(t) = &s.flow_table {
        println!(
            "{:<14} {} entries, {} inserted, {} evicted (least recently used)",
            "flow table", t.entries, t.inserted, t.evicted
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
pub fn run(output: OutputFormat, pin_root: &Path, run_dir: &Path) -> Result<ExitCode> {
    host::require_capabilities("netwatch status", &[host::Capability::Bpf])
        .map_err(anyhow::Error::msg)?;
    let status = collect(pin_root, run_dir)?;
    match output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&status)?),
        OutputFormat::Table => print_table(&status),
    }
    Ok(ExitCode::SUCCESS)
}
