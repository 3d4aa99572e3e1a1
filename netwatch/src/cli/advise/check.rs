//! `netwatch advise --check FILE`: which of the flows netwatch saw would
//! change verdict if the labels of a compose file were applied.
//!
//! The file is read as compose writes it (what `advise` prints is one):
//! `services.<name>.labels` and `networks.<name>.labels`, as a map or as a
//! list of `key=value`, and `networks.<name>.internal`. A service's labels
//! go to its running containers (a name that is no service is taken as a
//! container's name, as `advise` writes containers without one); a
//! network's to the network compose created for it (its
//! `com.docker.compose.network` label) or, failing that, the network of
//! that name. With a top-level `name:` only that compose project is
//! touched. Labels the file names are set; the others are kept.
//!
//! Each flow is then judged again by the reference model, on the policy
//! the changed labels compile to for the interface that saw it, as a
//! packet of the flow's addresses, ports and protocol. Docker's NAT and
//! iptables are not modelled (as in `explain`), and the kernel's own
//! drops are not netwatch's to change.

use std::{collections::BTreeMap, net::IpAddr};

use anyhow::{Context as _, Result, bail};
use etherparse::{Icmpv4Type, Icmpv6Type, PacketBuilder};
use netwatch_common::{
    packet::{ICMPV6_NEIGHBOR_ADVERT, ICMPV6_NEIGHBOR_SOLICIT, IPPROTO_ICMP},
    protocol::Protocol,
    reason::{Direction, Verdict},
};
use serde::Serialize;
use serde_yaml_ng::Value;

use crate::{
    agent::Plan,
    docker::{COMPOSE_NETWORK_LABEL, Inventory, Labels},
    flows::{FlowEntry, FlowReason},
    policy::{
        ReferenceModel,
        explain::{Judged, verdict_rule},
    },
};

/// The MAC of whatever sits at the other end of the endpoint's link.
const OTHER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];

/// What a compose file proposes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Proposal {
    /// The top-level `name:`, when given: only that project is touched.
    pub project: Option<String>,
    pub services: BTreeMap<String, Labels>,
    pub networks: BTreeMap<String, NetworkProposal>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetworkProposal {
    pub labels: Labels,
    pub internal: Option<bool>,
}

/// Reads `text` (a compose file, or a part of one such as `advise`'s
/// snippet).
///
/// # Errors
/// Not YAML, or labels that are neither a map nor a list of `key=value`.
pub fn parse_proposal(text: &str) -> Result<Proposal> {
    let doc: Value = serde_yaml_ng::from_str(text).context("not a compose file (YAML)")?;
    let mut proposal = Proposal {
        project: doc.get("name").and_then(Value::as_str).map(str::to_owned),
        ..Proposal::default()
    };
    for (name, service) in entries(&doc, "services")? {
        proposal
            .services
            .insert(name.clone(), labels(service, &format!("services.{name}"))?);
    }
    for (name, network) in entries(&doc, "networks")? {
        let internal = match network.get("internal") {
            None => None,
            Some(value) => Some(value.as_bool().with_context(|| {
                format!("networks.{name}.internal must be true or false, not {value:?}")
            })?),
        };
        proposal.networks.insert(
            name.clone(),
            NetworkProposal {
                labels: labels(network, &format!("networks.{name}"))?,
                internal,
            },
        );
    }
    if proposal.services.is_empty() && proposal.networks.is_empty() {
        bail!(
            "no services or networks in the file: give a compose file (or `netwatch advise`'s snippet)"
        );
    }
    Ok(proposal)
}

/// The `key: value` pairs under the top-level `section`.
fn entries<'a>(doc: &'a Value, section: &str) -> Result<Vec<(String, &'a Value)>> {
    match doc.get(section) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Mapping(map)) => map
            .iter()
            .map(|(k, v)| {
                let key = k
                    .as_str()
                    .with_context(|| format!("a key under {section} is not a name: {k:?}"))?;
                Ok((key.to_owned(), v))
            })
            .collect(),
        Some(other) => bail!("{section} must be a map of names, not {other:?}"),
    }
}

/// The `labels` of one service or network, in either of compose's forms.
fn labels(item: &Value, at: &str) -> Result<Labels> {
    let scalar = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::Null => Some(String::new()),
        _ => None,
    };
    match item.get("labels") {
        None | Some(Value::Null) => Ok(Labels::new()),
        Some(Value::Mapping(map)) => map
            .iter()
            .map(|(k, v)| match (k.as_str(), scalar(v)) {
                (Some(k), Some(v)) => Ok((k.to_owned(), v)),
                _ => bail!("{at}.labels: {k:?}: {v:?} is not a label"),
            })
            .collect(),
        Some(Value::Sequence(list)) => list
            .iter()
            .map(|entry| {
                let text = entry
                    .as_str()
                    .with_context(|| format!("{at}.labels: {entry:?} is not key=value"))?;
                let (k, v) = text.split_once('=').unwrap_or((text, ""));
                Ok((k.to_owned(), v.to_owned()))
            })
            .collect(),
        Some(other) => bail!("{at}.labels must be a map or a list of key=value, not {other:?}"),
    }
}

/// Sets the proposal's labels on what it names in `inventory`; returns
/// the names that matched nothing running.
pub fn apply(proposal: &Proposal, inventory: &mut Inventory) -> Vec<String> {
    let in_project = |project: &Option<String>| {
        proposal.project.is_none() || project.as_ref() == proposal.project.as_ref()
    };
    let mut unmatched = Vec::new();
    for (name, proposed) in &proposal.networks {
        let by_compose: Vec<usize> = (0..inventory.networks.len())
            .filter(|&i| {
                let n = &inventory.networks[i];
                n.labels.get(COMPOSE_NETWORK_LABEL) == Some(name) && in_project(&n.compose_project)
            })
            .collect();
        let matched = if by_compose.is_empty() {
            (0..inventory.networks.len())
                .filter(|&i| &inventory.networks[i].name == name)
                .collect()
        } else {
            by_compose
        };
        if matched.is_empty() {
            unmatched.push(format!("network {name}"));
        }
        for i in matched {
            let network = &mut inventory.networks[i];
            network.labels.extend(proposed.labels.clone());
            if let Some(internal) = proposed.internal {
                network.internal = internal;
            }
        }
    }
    for (name, labels) in &proposal.services {
        let mut any = false;
        for container in inventory.containers.iter_mut().filter(|c| {
            (c.service.as_ref() == Some(name) && in_project(&c.compose_project))
                || (&c.name == name && proposal.project.is_none())
        }) {
            container.labels.extend(labels.clone());
            any = true;
        }
        if !any {
            unmatched.push(format!("service {name}"));
        }
    }
    unmatched
}

/// One group of observed flows whose verdict would change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Change {
    pub container: Option<String>,
    pub network: Option<String>,
    pub direction: Direction,
    /// The other end, `address[:port]/proto`.
    pub remote: String,
    pub flows: u64,
    /// The verdict the flow has now (`forwarded`, `dropped`, `audited`).
    pub now: Verdict,
    pub now_reason: Option<FlowReason>,
    /// The verdict it would have with the file applied.
    pub then: Verdict,
    pub then_reason: Option<FlowReason>,
    /// The rule or label that would decide it.
    pub rule: String,
}

impl Change {
    /// It passes now (forwarded, or audited) and would be dropped.
    pub fn breaks(&self) -> bool {
        self.now != Verdict::Dropped && self.then == Verdict::Dropped
    }
}

/// What `advise --check` found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    /// Flows judged again (kernel drops and flows of unknown interfaces
    /// left out).
    pub flows_read: u64,
    pub changes: Vec<Change>,
    /// Flows that could not be judged again, with why.
    pub not_judged: Vec<String>,
    /// Names in the file that match nothing running.
    pub unmatched: Vec<String>,
}

impl CheckReport {
    /// How many flows would go from passing to dropped.
    pub fn breaking(&self) -> u64 {
        self.changes
            .iter()
            .filter(|c| c.breaks())
            .map(|c| c.flows)
            .sum()
    }
}

/// Judges `entries` again under `plan`; `ifindex_of` answers an
/// interface's index on this host.
pub fn check(
    entries: &[FlowEntry],
    plan: &Plan,
    ifindex_of: impl Fn(&str) -> Option<u32>,
) -> CheckReport {
    let model = ReferenceModel::new(plan.specs.iter().cloned(), plan.host_addrs.iter().copied());
    let mut report = CheckReport::default();
    // Outbound before inbound: an answer is judged after what it answers,
    // as the kernel's flow table would have it.
    let mut ordered: Vec<&FlowEntry> = entries.iter().filter(|e| !e.is_kernel_drop()).collect();
    // A connection judged on two interfaces (veth and bridge) counts once,
    // as its container's: entries that name one come first.
    ordered.sort_by_key(|e| (e.direction != Direction::Egress, e.container.is_none()));
    let mut counted = std::collections::BTreeSet::new();
    ordered.retain(|e| counted.insert(super::connection(e)));
    let mut changes: BTreeMap<(Option<String>, Direction, String, Verdict, Verdict), Change> =
        BTreeMap::new();
    for entry in ordered {
        let judged = match judge(entry, plan, &model, &ifindex_of) {
            Ok(judged) => judged,
            Err(why) => {
                report.not_judged.push(format!(
                    "{} {} {}: {why}",
                    entry.container.as_deref().unwrap_or("?"),
                    entry.direction,
                    super::remote(entry)
                ));
                continue;
            }
        };
        let flows = entry.flows;
        report.flows_read += flows;
        let (then, then_reason, rule) = judged;
        if then == entry.verdict && (then != Verdict::Dropped || then_reason == entry.reason) {
            continue;
        }
        let key = (
            entry.container.clone(),
            entry.direction,
            super::remote(entry),
            entry.verdict,
            then,
        );
        changes
            .entry(key)
            .and_modify(|c| c.flows += flows)
            .or_insert_with(|| Change {
                container: entry.container.clone(),
                network: entry.network.clone(),
                direction: entry.direction,
                remote: super::remote(entry),
                flows,
                now: entry.verdict,
                now_reason: entry.reason.clone(),
                then,
                then_reason,
                rule,
            });
    }
    report.changes = changes.into_values().collect();
    report
}

/// The verdict, reason and rule `entry` would get under `plan`.
fn judge(
    entry: &FlowEntry,
    plan: &Plan,
    model: &ReferenceModel,
    ifindex_of: &impl Fn(&str) -> Option<u32>,
) -> Result<(Verdict, Option<FlowReason>, String), String> {
    let interface = entry
        .interface
        .as_deref()
        .ok_or("the flow does not say which interface saw it")?;
    let ifindex = ifindex_of(interface).ok_or_else(|| format!("{interface} is gone"))?;
    let spec = plan
        .specs
        .iter()
        .find(|s| s.ifindex == ifindex)
        .ok_or_else(|| format!("{interface} has no policy under the file"))?;
    let (Some(src), Some(dst)) = (entry.src, entry.dst) else {
        return Err("the flow has no addresses".into());
    };
    let direction = entry.direction;
    let mac = spec.policy.mac;
    let (src_mac, dst_mac) = match direction {
        Direction::Egress => (mac, OTHER_MAC),
        Direction::Ingress => (OTHER_MAC, mac),
    };
    let frame = frame(entry, src_mac, dst_mac, src, dst)?;
    let decision = model
        .decide(ifindex, direction, &frame)
        .ok_or_else(|| format!("{interface} has no policy under the file"))?;
    let ports = super::has_ports(entry.proto);
    let (remote, remote_port, local_port) = match direction {
        Direction::Egress => (dst, entry.dst_port, entry.src_port),
        Direction::Ingress => (src, entry.src_port, entry.dst_port),
    };
    let judged = Judged {
        direction,
        remote,
        // `frame` refused every protocol but these four.
        proto: super::proto_number(entry.proto).unwrap_or(IPPROTO_ICMP),
        remote_port: ports.then_some(remote_port),
        local_port: ports.then_some(local_port),
        decision,
    };
    let network = entry.network.as_deref().unwrap_or(interface);
    let rule = verdict_rule(spec, network, &plan.host_addrs, &judged);
    Ok((decision.verdict, FlowReason::of(decision.reason), rule))
}

/// A packet of the flow: a TCP segment (SYN outbound, ACK inbound, as a
/// connection's first packets are), a UDP datagram, or an ICMP message of
/// the flow's type and code.
fn frame(
    entry: &FlowEntry,
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: IpAddr,
    dst: IpAddr,
) -> Result<Vec<u8>, String> {
    let eth = PacketBuilder::ethernet2(src_mac, dst_mac);
    let ip = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => eth.ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d)) => eth.ipv6(s.octets(), d.octets(), 64),
        _ => return Err("source and destination are of different families".into()),
    };
    let mut out = Vec::new();
    let written = match entry.proto {
        Protocol::Tcp if entry.direction == Direction::Egress => ip
            .tcp(entry.src_port, entry.dst_port, 1, 64240)
            .syn()
            .write(&mut out, &[]),
        Protocol::Tcp => ip
            .tcp(entry.src_port, entry.dst_port, 1, 64240)
            .ack(1)
            .write(&mut out, &[]),
        Protocol::Udp => ip.udp(entry.src_port, entry.dst_port).write(&mut out, &[]),
        // A flow of ICMP carries its type and code where ports would be.
        Protocol::Icmp | Protocol::Icmpv6 => {
            let (type_u8, code_u8) = (entry.src_port as u8, entry.dst_port as u8);
            match src {
                IpAddr::V4(_) => ip
                    .icmpv4(Icmpv4Type::Unknown {
                        type_u8,
                        code_u8,
                        bytes5to8: [0; 4],
                    })
                    .write(&mut out, &[]),
                IpAddr::V6(own) => {
                    // Neighbour solicitations and adverts name their target
                    // after the reserved word: the sender's own address, as
                    // an honest one does (the record keeps no target).
                    let target =
                        if matches!(type_u8, ICMPV6_NEIGHBOR_SOLICIT | ICMPV6_NEIGHBOR_ADVERT) {
                            own.octets().to_vec()
                        } else {
                            Vec::new()
                        };
                    ip.icmpv6(Icmpv6Type::Unknown {
                        type_u8,
                        code_u8,
                        bytes5to8: [0; 4],
                    })
                    .write(&mut out, &target)
                }
            }
        }
        other => return Err(format!("protocol {other} cannot be judged again")),
    };
    written.map_err(|e| format!("building the packet: {e}"))?;
    Ok(out)
}

/// The report as a table: what would change, then what was not judged.
pub fn render(report: &CheckReport, file: &str) -> String {
    let changed: u64 = report.changes.iter().map(|c| c.flows).sum();
    let mut out = format!(
        "# netwatch advise --check {file}: {} flows judged again, {changed} would change verdict, \
         {} would be dropped that pass now\n",
        report.flows_read,
        report.breaking()
    );
    for name in &report.unmatched {
        out.push_str(&format!("# {name} in the file matches nothing running\n"));
    }
    if !report.changes.is_empty() {
        let with_reason = |verdict: Verdict, reason: &Option<FlowReason>| match reason {
            Some(reason) if verdict.is_drop_like() => format!("{verdict} ({reason})"),
            _ => verdict.to_string(),
        };
        let rows: Vec<Vec<String>> = report
            .changes
            .iter()
            .map(|c| {
                vec![
                    c.container.clone().unwrap_or_else(|| "?".into()),
                    c.network.clone().unwrap_or_default(),
                    c.direction.to_string(),
                    c.remote.clone(),
                    c.flows.to_string(),
                    with_reason(c.now, &c.now_reason),
                    with_reason(c.then, &c.then_reason),
                    c.rule.clone(),
                ]
            })
            .collect();
        out.push_str(&super::super::table(
            &[
                "CONTAINER",
                "NETWORK",
                "DIRECTION",
                "REMOTE",
                "FLOWS",
                "NOW",
                "WITH THE FILE",
                "RULE",
            ],
            &rows,
        ));
    }
    for why in &report.not_judged {
        out.push_str(&format!("# not judged: {why}\n"));
    }
    out
}

#[cfg(test)]
mod tests;
