//! DNS as the containers saw it: the kernel's DNS records (see
//! netwatch-common's `dns`) parsed, queries matched with their answers
//! for latency, and per container which names resolved to which
//! addresses, so that flows can name their outside peers.
//!
//! Everything here reads bytes a container controls: parsing never
//! panics (simple-dns returns errors; nothing here indexes unchecked),
//! failures are counted and the message skipped.
//!
//! Memory is bounded: at most [`HISTORY_CAP`] queries listed, at most
//! [`PENDING_CAP`] queries waiting for an answer, and at most
//! [`NAMES_PER_CONTAINER`] addresses per container for at most
//! [`NAMED_CONTAINERS_CAP`] containers; beyond each cap the oldest goes
//! first.

use std::{
    collections::{HashMap, VecDeque},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::Arc,
};

use jiff::Timestamp;
use netwatch_common::{
    flow::FlowKey,
    reason::{Direction, DropReason, Verdict},
};
use serde::{Deserialize, Serialize};
use simple_dns::{PacketFlag, QTYPE, rdata::RData};

use super::{Clock, FlowNames, FlowReason};
use crate::datapath::CapturedDns;

/// Queries (with their answers) kept for `netwatch dns`.
pub const HISTORY_CAP: usize = 10_000;
/// Queries waiting for their answer; an older one is forgotten (its
/// answer, if it comes, is listed without latency).
pub const PENDING_CAP: usize = 4_096;
/// Addresses whose name is kept per container.
pub const NAMES_PER_CONTAINER: usize = 4_096;
/// Containers whose names are kept (the least recently resolving first
/// forgotten).
pub const NAMED_CONTAINERS_CAP: usize = 4_096;
/// Shortest time a name is kept after its answer, whatever its TTL: a
/// connection made right after a TTL-0 answer is still named.
pub const MIN_NAME_LIFETIME_NS: u64 = 60_000_000_000;
/// Most CNAMEs followed from the question's name.
const MAX_CNAME_HOPS: usize = 16;

/// One resource record of an answer, as users read it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsAnswer {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// The address, the CNAME's target, or the record's type again for
    /// records shown by type only.
    pub data: String,
    pub ttl: u32,
}

/// A parsed DNS message: what netwatch uses of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsMessage {
    pub id: u16,
    pub response: bool,
    /// `NOERROR`, `NXDOMAIN`, …
    pub rcode: String,
    /// The first question's name (lower case, no final dot) and type.
    pub question: Option<(String, String)>,
    pub answers: Vec<DnsAnswer>,
}

fn rcode_name(rcode: simple_dns::RCODE) -> String {
    use simple_dns::RCODE;
    match rcode {
        RCODE::NoError => "NOERROR".into(),
        RCODE::FormatError => "FORMERR".into(),
        RCODE::ServerFailure => "SERVFAIL".into(),
        RCODE::NameError => "NXDOMAIN".into(),
        RCODE::NotImplemented => "NOTIMP".into(),
        RCODE::Refused => "REFUSED".into(),
        other => format!("RCODE{}", other as u16),
    }
}

fn type_name(qtype: QTYPE) -> String {
    match qtype {
        QTYPE::TYPE(t) => format!("{t:?}"),
        other => format!("{other:?}"),
    }
}

/// Lower case, without the final dot: names compare as DNS compares them.
fn normal(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Parses one message; `None` when it is not a DNS message simple-dns can
/// read (cut short, garbage).
pub fn parse_message(bytes: &[u8]) -> Option<DnsMessage> {
    let packet = simple_dns::Packet::parse(bytes).ok()?;
    let question = packet
        .questions
        .first()
        .map(|q| (normal(&q.qname.to_string()), type_name(q.qtype)));
    let answers = packet
        .answers
        .iter()
        .map(|rr| {
            let (kind, data) = match &rr.rdata {
                RData::A(a) => ("A".to_string(), Ipv4Addr::from(a.address).to_string()),
                RData::AAAA(aaaa) => ("AAAA".to_string(), Ipv6Addr::from(aaaa.address).to_string()),
                RData::CNAME(cname) => ("CNAME".to_string(), normal(&cname.0.to_string())),
                other => {
                    let kind = format!("{:?}", other.type_code());
                    (kind.clone(), kind)
                }
            };
            DnsAnswer {
                name: normal(&rr.name.to_string()),
                kind,
                data,
                ttl: rr.ttl,
            }
        })
        .collect();
    Some(DnsMessage {
        id: packet.id(),
        response: packet.has_flags(PacketFlag::RESPONSE),
        rcode: rcode_name(packet.rcode()),
        question,
        answers,
    })
}

/// The addresses `name` resolved to in `answers`, following CNAMEs (a
/// bounded walk: a loop of CNAMEs ends it), each with its TTL.
pub fn resolved_addresses(name: &str, answers: &[DnsAnswer]) -> Vec<(IpAddr, u32)> {
    let mut chain = vec![normal(name)];
    for _ in 0..MAX_CNAME_HOPS {
        let Some(last) = chain.last() else {
            break;
        };
        let next = answers
            .iter()
            .find(|a| a.kind == "CNAME" && &a.name == last)
            .map(|a| a.data.clone());
        match next {
            Some(target) if !chain.contains(&target) => chain.push(target),
            _ => break,
        }
    }
    answers
        .iter()
        .filter(|a| (a.kind == "A" || a.kind == "AAAA") && chain.contains(&a.name))
        .filter_map(|a| Some((a.data.parse().ok()?, a.ttl)))
        .collect()
}

#[derive(Clone, Debug)]
struct Named {
    name: Arc<str>,
    expires_ns: u64,
    learned: u64,
}

#[derive(Debug, Default)]
struct ContainerNames {
    by_address: HashMap<IpAddr, Named>,
    /// Addresses in the order they were learned, with the learning's
    /// number: an entry whose number is not the address's current one was
    /// learned again since and is skipped.
    order: VecDeque<(IpAddr, u64)>,
    last_learned: u64,
}

impl ContainerNames {
    /// The name resolved to `address`, if still valid at `at_ns`.
    fn name_at(&self, address: IpAddr, at_ns: u64) -> Option<Arc<str>> {
        let named = self.by_address.get(&address)?;
        (at_ns <= named.expires_ns).then(|| Arc::clone(&named.name))
    }
}

/// Which names each container resolved to which addresses.
#[derive(Debug, Default)]
pub struct DnsNames {
    containers: HashMap<String, ContainerNames>,
    learned: u64,
}

impl DnsNames {
    /// Remembers that `container` resolved `name` to `address`, valid
    /// until `expires_ns` (kernel monotonic time).
    pub fn learn(&mut self, container: &str, address: IpAddr, name: &str, expires_ns: u64) {
        self.learned += 1;
        let learned = self.learned;
        if !self.containers.contains_key(container) && self.containers.len() >= NAMED_CONTAINERS_CAP
        {
            let stalest = self
                .containers
                .iter()
                .min_by_key(|(_, c)| c.last_learned)
                .map(|(name, _)| name.clone());
            if let Some(stalest) = stalest {
                self.containers.remove(&stalest);
            }
        }
        let names = self.containers.entry(container.to_string()).or_default();
        names.last_learned = learned;
        names.by_address.insert(
            address,
            Named {
                name: name.into(),
                expires_ns,
                learned,
            },
        );
        names.order.push_back((address, learned));
        while names.by_address.len() > NAMES_PER_CONTAINER {
            let Some((oldest, number)) = names.order.pop_front() else {
                break;
            };
            if names
                .by_address
                .get(&oldest)
                .is_some_and(|n| n.learned == number)
            {
                names.by_address.remove(&oldest);
            }
        }
        // Entries learned again pile up in `order`: drop the stale ones
        // before it outgrows twice the map.
        if names.order.len() > 2 * NAMES_PER_CONTAINER {
            let by_address = &names.by_address;
            names.order.retain(|(addr, number)| {
                by_address.get(addr).is_some_and(|n| n.learned == *number)
            });
        }
    }

    /// The name `container` resolved to `address`, if it was still valid
    /// at `at_ns` (kernel monotonic time).
    pub fn lookup(&self, container: &str, address: IpAddr, at_ns: u64) -> Option<Arc<str>> {
        self.containers.get(container)?.name_at(address, at_ns)
    }

    /// The names `container` resolved to a flow key's source and
    /// destination addresses, valid at `at_ns`.
    pub fn ends(
        &self,
        container: Option<&str>,
        key: &FlowKey,
        at_ns: u64,
    ) -> (Option<Arc<str>>, Option<Arc<str>>) {
        // The container's names looked up once, not per end: this runs for
        // every new flow, most of whose containers resolved nothing.
        let Some(names) = container.and_then(|c| self.containers.get(c)) else {
            return (None, None);
        };
        let (src, dst) = super::record::key_addresses(key);
        let name = |ip: Option<IpAddr>| names.name_at(ip?, at_ns);
        (name(src), name(dst))
    }

    /// Changes whenever a name is learned: a flow that found no name for
    /// its ends need not ask again until it changes (it asked per record,
    /// hashing its container's name twice each time).
    pub fn generation(&self) -> u64 {
        self.learned
    }

    /// Addresses whose name is kept, over all containers.
    pub fn len(&self) -> usize {
        self.containers.values().map(|c| c.by_address.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One query and its answer, as `netwatch dns` lists them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsEntry {
    /// When the query was sent (or, when netwatch saw only the answer,
    /// when that came).
    pub time: Timestamp,
    pub container: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    pub network: Option<String>,
    /// The container's address and port the query came from.
    pub client: IpAddr,
    pub client_port: u16,
    /// The server the container asked.
    pub resolver: IpAddr,
    pub resolver_port: u16,
    pub id: u16,
    /// The question (lower case, without the final dot).
    pub name: Option<String>,
    #[serde(rename = "type")]
    pub qtype: Option<String>,
    /// `None` while no answer was seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rcode: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub answers: Vec<DnsAnswer>,
    /// From the query to its answer, both as the container's veth saw
    /// them; `None` without both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_us: Option<u64>,
    /// What netwatch did with the query (or the answer): `forwarded` or
    /// `dropped`, and why.
    pub verdict: Verdict,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<FlowReason>,
}

impl DnsEntry {
    /// `web` on `front` asked 203.0.113.7 for `svc.netwatch.test` A at
    /// second 100 and got 203.0.113.7 in 1.5 ms (for tests).
    #[cfg(test)]
    pub fn example() -> DnsEntry {
        DnsEntry {
            time: Timestamp::from_second(100).unwrap_or(Timestamp::UNIX_EPOCH),
            container: Some("web".into()),
            service: None,
            network: Some("front".into()),
            client: IpAddr::from([172, 30, 0, 2]),
            client_port: 40000,
            resolver: IpAddr::from([203, 0, 113, 7]),
            resolver_port: 53,
            id: 7,
            name: Some("svc.netwatch.test".into()),
            qtype: Some("A".into()),
            rcode: Some("NOERROR".into()),
            answers: vec![DnsAnswer {
                name: "svc.netwatch.test".into(),
                kind: "A".into(),
                data: "203.0.113.7".into(),
                ttl: 300,
            }],
            latency_us: Some(1500),
            verdict: Verdict::Forwarded,
            reason: None,
        }
    }

    /// The addresses the question's name resolved to.
    pub fn addresses(&self) -> Vec<IpAddr> {
        match &self.name {
            Some(name) => resolved_addresses(name, &self.answers)
                .into_iter()
                .map(|(addr, _)| addr)
                .collect(),
            None => Vec::new(),
        }
    }
}

/// What [`DnsLog`] counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsCounters {
    /// Records taken from the kernel.
    pub records: u64,
    /// Messages simple-dns could not read (garbage, or cut at the kernel's
    /// 512-byte cap).
    pub parse_failures: u64,
    /// Queries and answers listed.
    pub queries: u64,
    pub answers: u64,
    /// Answers whose query was not seen (not recorded, or forgotten).
    pub unmatched_answers: u64,
    /// Messages a container received as a server, or sent as one: not
    /// listed (only what containers ask is).
    pub served: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct PendingKey {
    endpoint: u32,
    client: IpAddr,
    client_port: u16,
    resolver: IpAddr,
    resolver_port: u16,
    id: u16,
}

/// Queries and answers, matched, bounded; see the module documentation.
#[derive(Debug, Default)]
pub struct DnsLog {
    history: VecDeque<(u64, DnsEntry)>,
    next_number: u64,
    /// Unanswered queries: when the kernel saw them, and their number in
    /// `history`.
    pending: HashMap<PendingKey, (u64, u64)>,
    pending_order: VecDeque<(PendingKey, u64)>,
    pub counters: DnsCounters,
}

/// What one record changed, for live observers and the names of flows.
pub struct Recorded {
    pub entry: DnsEntry,
    /// What a successful answer taught.
    pub learned: Option<Learned>,
}

/// A container resolved `name` to `addresses`, each valid until its
/// time (kernel monotonic ns).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Learned {
    pub container: String,
    pub name: String,
    pub addresses: Vec<(IpAddr, u64)>,
}

impl DnsLog {
    /// Takes one kernel record: a query is listed and waits for its
    /// answer, an answer completes its query (or is listed alone).
    /// Returns the entry as it stands, `None` for what is not listed.
    pub fn record(
        &mut self,
        captured: &CapturedDns,
        names: &FlowNames,
        clock: &Clock,
    ) -> Option<Recorded> {
        self.counters.records += 1;
        let h = &captured.header;
        let (Some(message), Some(verdict), Some(reason)) = (
            parse_message(&captured.payload),
            Verdict::from_u8(h.verdict),
            DropReason::from_u8(h.reason),
        ) else {
            // Garbage, or a verdict or reason this version does not know.
            self.counters.parse_failures += 1;
            return None;
        };
        let (src, dst) = captured.addresses()?;
        let egress = h.direction == Direction::Egress as u8;
        // Only what a container asks and what it is answered: a container
        // running a DNS server is not a client.
        if message.response == egress {
            self.counters.served += 1;
            return None;
        }
        let (client, client_port, resolver, resolver_port) = if egress {
            (src, h.src_port, dst, h.dst_port)
        } else {
            (dst, h.dst_port, src, h.src_port)
        };
        let key = PendingKey {
            endpoint: h.endpoint,
            client,
            client_port,
            resolver,
            resolver_port,
            id: message.id,
        };
        if !message.response {
            let entry = listed(captured, &message, key, (verdict, reason), names, clock);
            self.counters.queries += 1;
            let number = self.push(entry.clone());
            self.wait_for_answer(key, h.time_ns, number);
            return Some(Recorded {
                entry,
                learned: None,
            });
        }
        self.counters.answers += 1;
        let waiting = self.pending.remove(&key);
        let entry =
            match waiting.and_then(|(sent_ns, number)| Some((sent_ns, self.get_mut(number)?))) {
                Some((sent_ns, entry)) => {
                    entry.latency_us = Some(h.time_ns.saturating_sub(sent_ns) / 1_000);
                    entry
                }
                None => {
                    self.counters.unmatched_answers += 1;
                    let number = self.push(listed(
                        captured,
                        &message,
                        key,
                        (verdict, reason),
                        names,
                        clock,
                    ));
                    self.get_mut(number)?
                }
            };
        entry.rcode = Some(message.rcode.clone());
        entry.answers = message.answers;
        if entry.verdict == Verdict::Forwarded && verdict != Verdict::Forwarded {
            // The answer was dropped on its way in: say so.
            entry.verdict = verdict;
            entry.reason = FlowReason::of(reason);
        }
        let entry = entry.clone();
        let learned = match (&entry.container, &entry.name) {
            (Some(container), Some(name)) if message.rcode == "NOERROR" => {
                let addresses = resolved_addresses(name, &entry.answers)
                    .into_iter()
                    .map(|(addr, ttl)| {
                        let lifetime = (u64::from(ttl) * 1_000_000_000).max(MIN_NAME_LIFETIME_NS);
                        (addr, h.time_ns.saturating_add(lifetime))
                    })
                    .collect();
                Some(Learned {
                    container: container.clone(),
                    name: name.clone(),
                    addresses,
                })
            }
            _ => None,
        };
        Some(Recorded { entry, learned })
    }

    fn push(&mut self, entry: DnsEntry) -> u64 {
        let number = self.next_number;
        self.next_number += 1;
        self.history.push_back((number, entry));
        while self.history.len() > HISTORY_CAP {
            self.history.pop_front();
        }
        number
    }

    fn get_mut(&mut self, number: u64) -> Option<&mut DnsEntry> {
        let first = self.history.front()?.0;
        let index = usize::try_from(number.checked_sub(first)?).ok()?;
        self.history.get_mut(index).map(|(_, entry)| entry)
    }

    fn wait_for_answer(&mut self, key: PendingKey, sent_ns: u64, number: u64) {
        self.pending.insert(key, (sent_ns, number));
        self.pending_order.push_back((key, number));
        while self.pending.len() > PENDING_CAP {
            let Some((oldest, number)) = self.pending_order.pop_front() else {
                break;
            };
            if self.pending.get(&oldest).is_some_and(|(_, n)| *n == number) {
                self.pending.remove(&oldest);
            }
        }
        if self.pending_order.len() > 2 * PENDING_CAP {
            let pending = &self.pending;
            self.pending_order
                .retain(|(key, number)| pending.get(key).is_some_and(|(_, n)| n == number));
        }
    }

    /// The entries kept, oldest first.
    pub fn entries(&self) -> impl Iterator<Item = &DnsEntry> {
        self.history.iter().map(|(_, entry)| entry)
    }
}

/// A new entry for a query (or an answer whose query was not seen).
fn listed(
    captured: &CapturedDns,
    message: &DnsMessage,
    key: PendingKey,
    (verdict, reason): (Verdict, DropReason),
    names: &FlowNames,
    clock: &Clock,
) -> DnsEntry {
    let h = &captured.header;
    let owner = names.owner(&FlowKey {
        ifindex: h.endpoint,
        direction: h.direction,
        family: h.family,
        proto: h.proto,
        src_port: h.src_port,
        dst_port: h.dst_port,
        src: h.src,
        dst: h.dst,
        ..FlowKey::default()
    });
    DnsEntry {
        time: clock.wall(h.time_ns),
        container: owner.container,
        service: owner.service,
        network: owner.network,
        client: key.client,
        client_port: key.client_port,
        resolver: key.resolver,
        resolver_port: key.resolver_port,
        id: message.id,
        name: message.question.as_ref().map(|q| q.0.clone()),
        qtype: message.question.as_ref().map(|q| q.1.clone()),
        rcode: None,
        answers: Vec::new(),
        latency_us: None,
        verdict,
        reason: FlowReason::of(reason),
    }
}

#[cfg(test)]
pub(crate) mod tests;
