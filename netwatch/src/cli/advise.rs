//! `netwatch advise`: the labels that would let the traffic netwatch saw
//! pass under enforcement, read from the flows the agent holds.
//!
//! It proposes only what was seen, as narrowly as a label can say it: one
//! `netwatch.allow` rule per destination address, port and protocol a
//! service reached, on that service (a container label, not the network's,
//! so one service's needs do not open another's). What it will not propose
//! it lists with why: traffic to the host (what internal networks exist to
//! close), connections opened from outside, forged or malformed packets,
//! and destinations seen in a single flow, which look like one-offs.

mod check;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    path::Path,
    process::ExitCode,
};

use anyhow::{Context as _, Result};
use netwatch_common::{
    protocol::Protocol,
    reason::{Direction, DropReason},
};
use serde::Serialize;

use super::source::{FilterArgs, FlowOutput, FlowSource as _, SourceArgs, open_source};
use crate::{
    agent::{docker_state::host_state, plan},
    flows::{FlowEntry, FlowReason},
    policy::{AllowRule, Cidr, labels},
};

/// What `advise` proposes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Advice {
    /// Labels per service (or container without one).
    pub services: Vec<ServiceAdvice>,
    /// Labels per network.
    pub networks: Vec<NetworkAdvice>,
    /// Observed would-be drops no label is proposed for, with why.
    pub not_advised: Vec<NotAdvised>,
    /// How many dropped or audited flows the advice was read from.
    pub flows_read: u64,
}

/// The labels one service (or container) needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServiceAdvice {
    /// The compose or swarm service; `None` for a container without one.
    pub service: Option<String>,
    /// The containers whose flows asked for it.
    pub containers: Vec<String>,
    /// `netwatch.allow` rules, each as the label spells it.
    pub allow: Vec<String>,
}

/// The labels one network needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NetworkAdvice {
    /// Docker's name of the network.
    pub network: String,
    /// Its key in the compose file that created it (compose names the
    /// network `<project>_<key>`), when compose did: the snippet's key.
    pub compose_key: Option<String>,
    pub labels: BTreeMap<String, String>,
}

/// An observed would-be drop that no proposed label lets through.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct NotAdvised {
    pub container: Option<String>,
    pub network: Option<String>,
    pub direction: Direction,
    /// The other end, `address[:port]/proto`.
    pub remote: String,
    pub reason: FlowReason,
    pub why: String,
}

/// A destination a holder reached: address, protocol, port.
type Destination = (IpAddr, Protocol, u16);

/// The rules each holder (service, or container without one) needs, with
/// the container whose flow asked for each.
type HolderRules = BTreeMap<(Option<String>, String), BTreeSet<(String, AllowRule)>>;

/// Reads the advice from `entries` (any flows; only netwatch's own drops
/// and audits count).
pub fn advise(entries: &[FlowEntry]) -> Advice {
    let judged: Vec<&FlowEntry> = entries
        .iter()
        .filter(|e| e.verdict.is_drop_like() && !e.is_kernel_drop())
        .collect();
    // How many flows went to each destination, across holders: one flow is
    // a one-off. A connection judged on two interfaces (the container's
    // veth and its bridge, for routed traffic) counts once.
    let mut to_destination: BTreeMap<Destination, Vec<&FlowEntry>> = BTreeMap::new();
    for entry in &judged {
        if let Some(destination) = destination(entry) {
            to_destination.entry(destination).or_default().push(entry);
        }
    }
    let seen: BTreeMap<Destination, u64> = to_destination
        .into_iter()
        .map(|(destination, entries)| (destination, distinct_flows(&entries)))
        .collect();
    let mut holders = HolderRules::new();
    let mut networks: BTreeSet<String> = BTreeSet::new();
    let mut not_advised = BTreeSet::new();
    for entry in judged.iter().filter(|e| !answers_advised(e, &seen)) {
        let reason = entry.reason.clone().unwrap_or(FlowReason::Unknown);
        let refuse = |why: String| NotAdvised {
            container: entry.container.clone(),
            network: entry.network.clone(),
            direction: entry.direction,
            remote: remote(entry),
            reason: reason.clone(),
            why,
        };
        match why_not(entry, &reason, &seen) {
            Some(why) => {
                not_advised.insert(refuse(why));
            }
            None => {
                let (Some(container), Some((addr, proto, port))) =
                    (entry.container.clone(), destination(entry))
                else {
                    continue;
                };
                let Some(rule) = allow_rule(addr, proto, port) else {
                    not_advised.insert(refuse(format!(
                        "protocol {proto} cannot be written as a netwatch.allow rule"
                    )));
                    continue;
                };
                if let Some(network) = &entry.network {
                    networks.insert(network.clone());
                }
                holders
                    .entry((entry.service.clone(), holder_key(entry, &container)))
                    .or_default()
                    .insert((container, rule));
            }
        }
    }
    let services = holders
        .into_iter()
        .map(|((service, _), rules)| {
            let containers: BTreeSet<String> = rules.iter().map(|(c, _)| c.clone()).collect();
            let allow: BTreeSet<AllowRule> = rules.into_iter().map(|(_, r)| r).collect();
            ServiceAdvice {
                service,
                containers: containers.into_iter().collect(),
                allow: allow.iter().map(ToString::to_string).collect(),
            }
        })
        .collect();
    Advice {
        services,
        networks: networks
            .into_iter()
            .map(|network| NetworkAdvice {
                network,
                compose_key: None,
                labels: BTreeMap::from([(labels::EGRESS.to_owned(), "deny".to_owned())]),
            })
            .collect(),
        not_advised: not_advised.into_iter().collect(),
        flows_read: distinct_flows(&judged),
    }
}

/// One connection as both ends' programs see it: direction, addresses,
/// ports, protocol — not the interface that saw it.
type Connection = (
    Direction,
    Option<IpAddr>,
    u16,
    Option<IpAddr>,
    u16,
    Protocol,
);

fn connection(entry: &FlowEntry) -> Connection {
    (
        entry.direction,
        entry.src,
        entry.src_port,
        entry.dst,
        entry.dst_port,
        entry.proto,
    )
}

/// How many flows `entries` hold, a connection seen on several interfaces
/// counted once.
fn distinct_flows(entries: &[&FlowEntry]) -> u64 {
    let mut flows: BTreeMap<Connection, u64> = BTreeMap::new();
    for entry in entries {
        let counted = flows.entry(connection(entry)).or_default();
        *counted = (*counted).max(entry.flows);
    }
    flows.values().sum()
}

/// Whether `entry` is the answer to a destination some container reached:
/// received from that address, port and protocol. The allow rule proposed
/// for the destination lets its answers in too.
fn answers_advised(entry: &FlowEntry, seen: &BTreeMap<Destination, u64>) -> bool {
    if entry.direction != Direction::Ingress {
        return false;
    }
    let Some(src) = entry.src else {
        return false;
    };
    let port = if has_ports(entry.proto) {
        entry.src_port
    } else {
        0
    };
    seen.contains_key(&(src, entry.proto, port))
}

/// Services group their containers; a container without one stands alone.
fn holder_key(entry: &FlowEntry, container: &str) -> String {
    entry
        .service
        .clone()
        .unwrap_or_else(|| container.to_owned())
}

/// Where an egress flow went, when it has an address.
fn destination(entry: &FlowEntry) -> Option<Destination> {
    if entry.direction != Direction::Egress {
        return None;
    }
    let port = has_ports(entry.proto).then_some(entry.dst_port);
    Some((entry.dst?, entry.proto, port.unwrap_or(0)))
}

/// TCP and UDP: the protocols whose ports an allow rule names.
fn has_ports(proto: Protocol) -> bool {
    matches!(proto, Protocol::Tcp | Protocol::Udp)
}

/// The other end as tables show it.
fn remote(entry: &FlowEntry) -> String {
    let (addr, port) = if entry.direction == Direction::Ingress {
        (entry.src, entry.src_port)
    } else {
        (entry.dst, entry.dst_port)
    };
    let Some(addr) = addr else {
        return entry.proto.to_string();
    };
    if has_ports(entry.proto) {
        format!("{}/{}", std::net::SocketAddr::new(addr, port), entry.proto)
    } else {
        format!("{addr}/{}", entry.proto)
    }
}

/// Why no label is proposed for `entry`, or `None` when one is.
fn why_not(
    entry: &FlowEntry,
    reason: &FlowReason,
    seen: &BTreeMap<Destination, u64>,
) -> Option<String> {
    match reason.netwatch() {
        Some(DropReason::SpoofedSource | DropReason::SpoofedMac) => {
            return Some("the container forged its source: never allowed".into());
        }
        Some(DropReason::NotInNetwork | DropReason::HostAccess) => {}
        _ => {
            let other = reason;
            return Some(format!(
                "{other} is not a matter of policy: no label lets it through"
            ));
        }
    }
    if entry.direction == Direction::Ingress {
        return Some(
            "a connection opened from outside the network: publish the port and label the \
             network netwatch.ingress=published, or allow the sender with netwatch.allow if \
             you mean to"
                .into(),
        );
    }
    if reason.netwatch() == Some(DropReason::HostAccess) {
        let addr = entry.dst.map(|a| a.to_string()).unwrap_or_default();
        let rule = destination(entry)
            .and_then(|(a, proto, port)| allow_rule(a, proto, port))
            .map_or_else(|| addr.clone(), |r| r.to_string());
        return Some(format!(
            "to the host ({addr}): closing the host is what enforcement is for; if the service \
             needs it, add netwatch.allow: {rule} yourself (or netwatch.gateway=allow on the \
             network for its gateway)"
        ));
    }
    let destination = destination(entry)?;
    if seen.get(&destination).copied().unwrap_or(0) <= 1 {
        return Some(
            "seen in one flow only: looks like a one-off; allow it by hand if it is needed".into(),
        );
    }
    None
}

/// The narrowest rule for one destination.
fn allow_rule(addr: IpAddr, proto: Protocol, port: u16) -> Option<AllowRule> {
    let proto = proto_number(proto)?;
    Some(AllowRule {
        cidr: Cidr::host(addr),
        proto,
        port,
    })
}

/// The IP protocol of a flow's protocol, for the protocols a flow names
/// (others have no number here).
fn proto_number(proto: Protocol) -> Option<u8> {
    use netwatch_common::packet::{IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP};
    match proto {
        Protocol::Tcp => Some(IPPROTO_TCP),
        Protocol::Udp => Some(IPPROTO_UDP),
        Protocol::Icmp => Some(IPPROTO_ICMP),
        Protocol::Icmpv6 => Some(IPPROTO_ICMPV6),
        Protocol::ArpOther | Protocol::Other(_) | Protocol::Any => None,
    }
}

/// The advice as a compose-file snippet, with what is not advised as
/// comments.
pub fn compose_snippet(advice: &Advice) -> String {
    let mut out = format!(
        "# netwatch advise: read from {} dropped or audited flows\n",
        advice.flows_read
    );
    if advice.services.is_empty() && advice.networks.is_empty() {
        out.push_str("# nothing to allow: no would-be drop calls for a label\n");
    }
    if !advice.services.is_empty() {
        out.push_str("services:\n");
        for service in &advice.services {
            let name = match &service.service {
                Some(service) => service.clone(),
                None => {
                    let container = service.containers.join(", ");
                    out.push_str(&format!(
                        "  # container {container} has no compose service: \
                         docker run --label {}=\"{}\"\n",
                        labels::ALLOW,
                        service.allow.join(", ")
                    ));
                    container
                }
            };
            out.push_str(&format!(
                "  {name}:\n    labels:\n      {}: \"{}\"\n",
                labels::ALLOW,
                service.allow.join(", ")
            ));
        }
    }
    if !advice.networks.is_empty() {
        out.push_str("networks:\n");
        for network in &advice.networks {
            match &network.compose_key {
                Some(key) => out.push_str(&format!(
                    "  {key}:  # Docker's network {}\n    labels:\n",
                    network.network
                )),
                None => out.push_str(&format!("  {}:\n    labels:\n", network.network)),
            }
            for (label, value) in &network.labels {
                out.push_str(&format!("      {label}: \"{value}\"\n"));
            }
        }
    }
    if !advice.not_advised.is_empty() {
        out.push_str("# not advised:\n");
        for n in &advice.not_advised {
            out.push_str(&format!(
                "#   {} {} {} ({}): {}\n",
                n.container.as_deref().unwrap_or("?"),
                if n.direction == Direction::Ingress {
                    "<-"
                } else {
                    "->"
                },
                n.remote,
                n.reason,
                n.why
            ));
        }
    }
    out
}

/// Prints the advice for the flows `filter` selects, or with `check` what
/// applying that compose file would change of them.
///
/// # Errors
/// No agent answers, or it refuses the filter; with `check`, a file that
/// cannot be read or is no compose file, or Docker unreachable.
pub fn run(
    filter: &FilterArgs,
    source: &SourceArgs,
    output: FlowOutput,
    check: Option<&Path>,
) -> Result<ExitCode> {
    let entries = super::block_on(async {
        open_source(source, true)
            .await?
            .flows(&filter.filter())
            .await
    })?;
    if let Some(file) = check {
        return run_check(&entries, file, output);
    }
    let mut advice = advise(&entries);
    name_compose_keys(&mut advice);
    let text = match output {
        FlowOutput::Table => compose_snippet(&advice),
        FlowOutput::Json => serde_json::to_string_pretty(&advice)? + "\n",
        FlowOutput::Jsonl => serde_json::to_string(&advice)? + "\n",
    };
    super::source::print(&text)?;
    Ok(ExitCode::SUCCESS)
}

/// Gives each advised network its compose key, so that the snippet pastes
/// into the compose file that created it. Docker unreachable: the snippet
/// keeps Docker's names, and says so.
fn name_compose_keys(advice: &mut Advice) {
    if advice.networks.is_empty() {
        return;
    }
    let inventory = super::block_on(async {
        let client = crate::docker::Client::connect().await?;
        Ok(crate::docker::Inventory::load(&client).await?)
    });
    let inventory = match inventory {
        Ok(inventory) => inventory,
        Err(e) => {
            log::warn!(
                "Docker did not answer ({e:#}): networks keep Docker's names, which a compose \
                 file calls <project>_<key>"
            );
            return;
        }
    };
    for advised in &mut advice.networks {
        advised.compose_key = inventory
            .networks
            .iter()
            .find(|n| n.name == advised.network && n.compose_project.is_some())
            .and_then(|n| n.labels.get(crate::docker::COMPOSE_NETWORK_LABEL).cloned());
    }
}

/// `advise --check FILE`: exits 1 when a flow that passes now would be
/// dropped.
fn run_check(entries: &[FlowEntry], file: &Path, output: FlowOutput) -> Result<ExitCode> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read {}: give a compose file", file.display()))?;
    let proposal =
        check::parse_proposal(&text).with_context(|| format!("reading {}", file.display()))?;
    let mut snapshot = super::networks::snapshot()?;
    let unmatched = check::apply(&proposal, &mut snapshot.inventory);
    let state = host_state(&snapshot, crate::host::addresses());
    let plan = plan(&state);
    let mut report = check::check(entries, &plan, |name| {
        nix::net::if_::if_nametoindex(name).ok()
    });
    report.unmatched = unmatched;
    let text = match output {
        FlowOutput::Table => check::render(&report, &file.display().to_string()),
        FlowOutput::Json => serde_json::to_string_pretty(&report)? + "\n",
        FlowOutput::Jsonl => serde_json::to_string(&report)? + "\n",
    };
    super::source::print(&text)?;
    Ok(if report.breaking() > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Propose the labels that would let the traffic netwatch saw pass
/// under enforcement, from the dropped and audited flows the agent
/// holds: typically after running a stack with netwatch.egress=audit
/// (or `agent --audit`).
///
/// Each service gets one netwatch.allow rule per destination address,
/// port and protocol it reached (never a wider prefix or another port),
/// and each network netwatch.egress=deny. What it does not propose is
/// listed with why: traffic to the host, connections opened from
/// outside, forged or malformed packets, destinations seen in one flow
/// only (one-offs), and the kernel's own drops.
///
/// Output: a compose-file snippet to paste (what is not advised as
/// comments), or -o json.
///
/// With --check FILE it previews instead: each observed flow judged
/// again as if FILE's labels were applied (the snippet, or your edited
/// compose file), listing the flows whose verdict would change.
///
/// Examples:
///   sudo netwatch advise --network app_back
///   sudo netwatch advise --service api --since 1h -o json
///   sudo netwatch advise > advised.yml; sudo netwatch advise --check advised.yml
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct AdviseArgs {
    #[command(flatten)]
    pub filter: super::source::FilterArgs,
    #[command(flatten)]
    pub source: super::source::SourceArgs,
    /// Output format: a compose snippet (table), or JSON.
    #[arg(short, long, value_enum, default_value_t = super::source::FlowOutput::Table)]
    pub output: super::source::FlowOutput,
    /// Instead of advice: which of the observed flows would change
    /// verdict if this compose file's labels (services.*.labels,
    /// networks.*.labels and .internal) were applied to what runs now,
    /// each judged again by the reference model. Exits 1 when a flow
    /// that passes now (forwarded or audited) would be dropped.
    #[arg(long, value_name = "FILE")]
    pub check: Option<std::path::PathBuf>,
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;

    use super::*;

    /// Each flow a connection of its own: its own client port.
    fn flow(service: &str, dst: &str, port: u16, verdict: &str, reason: &str) -> FlowEntry {
        static NEXT_PORT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(40000);
        FlowEntry {
            schema_version: crate::flows::SCHEMA_VERSION,
            host: String::new(),
            rule: None,
            container: Some(format!("{service}-1")),
            container_id: None,
            project: None,
            service: Some(service.into()),
            network: Some("app_back".into()),
            direction: Direction::Egress,
            src: Some("172.30.0.2".parse().unwrap()),
            dst: Some(dst.parse().unwrap()),
            src_name: None,
            dst_name: None,
            src_port: NEXT_PORT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            dst_port: port,
            proto: Protocol::Tcp,
            packets: 3,
            bytes: 180,
            verdict: verdict.parse().unwrap(),
            reason: reason.parse().ok(),
            dropped_by: None,
            peer: None,
            peer_service: None,
            peer_kind: None,
            published: None,
            first_seen: Timestamp::from_second(100).unwrap(),
            last_seen: Timestamp::from_second(200).unwrap(),
            interface: None,
            flows: 1,
        }
    }

    /// `entry` as the network's bridge saw it.
    fn on_bridge(mut entry: FlowEntry) -> FlowEntry {
        entry.interface = Some("br-nwtest".into());
        entry
    }

    /// The flow answering `egress`: received from its destination.
    fn answer(mut egress: FlowEntry) -> FlowEntry {
        egress.direction = Direction::Ingress;
        std::mem::swap(&mut egress.src, &mut egress.dst);
        std::mem::swap(&mut egress.src_port, &mut egress.dst_port);
        egress
    }

    #[test]
    fn each_service_gets_exactly_the_destinations_it_reached_more_than_once() {
        let once = flow("api", "198.51.100.9", 25, "audited", "not-in-network");
        let entries = vec![
            flow("api", "203.0.113.7", 443, "audited", "not-in-network"),
            flow("api", "203.0.113.7", 443, "audited", "not-in-network"),
            once.clone(),
            // The same connection, judged again on the network's bridge:
            // still a one-off.
            on_bridge(once),
            flow("worker", "203.0.113.7", 443, "dropped", "not-in-network"),
            flow("api", "172.30.0.3", 5432, "forwarded", ""),
            answer(flow("api", "203.0.113.7", 443, "audited", "not-in-network")),
        ];
        let advice = advise(&entries);
        assert_eq!(advice.flows_read, 5);
        let allow: Vec<(Option<&str>, &[String])> = advice
            .services
            .iter()
            .map(|s| (s.service.as_deref(), s.allow.as_slice()))
            .collect();
        assert_eq!(
            allow,
            [
                (Some("api"), &["203.0.113.7:443/tcp".to_owned()][..]),
                (Some("worker"), &["203.0.113.7:443/tcp".to_owned()][..]),
            ],
            "no port or address beyond what was seen"
        );
        assert_eq!(advice.networks.len(), 1);
        assert_eq!(advice.networks[0].labels[labels::EGRESS], "deny");
        assert_eq!(
            advice.not_advised.len(),
            1,
            "the answer is covered by its destination's rule: {:?}",
            advice.not_advised
        );
        assert!(advice.not_advised[0].why.contains("one-off"));
        assert_eq!(advice.not_advised[0].remote, "198.51.100.9:25/tcp");
        let snippet = compose_snippet(&advice);
        assert!(
            snippet.contains("  api:\n    labels:\n      netwatch.allow: \"203.0.113.7:443/tcp\""),
            "{snippet}"
        );
    }

    #[test]
    fn the_host_inbound_connections_forgeries_and_kernel_drops_are_not_advised() {
        let mut to_host = flow("api", "172.30.0.1", 53, "audited", "host-access");
        to_host.proto = Protocol::Udp;
        let mut inbound = flow("api", "172.30.0.2", 80, "audited", "not-in-network");
        inbound.direction = Direction::Ingress;
        inbound.src = Some("203.0.113.7".parse().unwrap());
        let forged = flow("api", "203.0.113.7", 443, "dropped", "spoofed-source");
        let mut kernel = flow(
            "api",
            "203.0.113.8",
            443,
            "dropped",
            "kernel:netfilter_drop",
        );
        kernel.dropped_by = Some("kernel".into());
        let advice = advise(&[to_host.clone(), to_host, inbound, forged, kernel]);
        assert!(advice.services.is_empty(), "{:?}", advice.services);
        let why: Vec<&str> = advice.not_advised.iter().map(|n| n.why.as_str()).collect();
        assert_eq!(why.len(), 3, "{why:?}");
        assert!(
            why.iter()
                .any(|w| w.contains("netwatch.allow: 172.30.0.1:53/udp"))
        );
        assert!(why.iter().any(|w| w.contains("netwatch.ingress=published")));
        assert!(why.iter().any(|w| w.contains("forged")));
    }
}
