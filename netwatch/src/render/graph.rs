//! Who talks to whom on this host, built from flow entries: the model that
//! `netwatch map` draws as DOT ([`super::dot`]) or SVG ([`super::svg`]).
//!
//! # Nodes
//!
//! - **Containers, one node per (network, container).** A container on two
//!   networks appears in both networks' groups, and each flow attaches to the
//!   copy on the network it was seen on (the entry's `network`, which is the
//!   network of the veth or bridge whose program saw it). Each network is a
//!   separate interface with its own policy, so this keeps isolation
//!   boundaries visible: an edge between two groups is traffic between
//!   networks. Containers whose network is unknown form a group without a
//!   name.
//! - **External endpoint classes**, so that the picture stays readable:
//!   `host` (an address in [`GraphOptions::host_addrs`], loopback, or any
//!   remote of a `host-access` drop), `multicast/broadcast`, `link-local`
//!   (also the unspecified address), one node per outside /24 (IPv4) or /64
//!   (IPv6), and beyond [`GraphOptions::max_outside`] prefixes the smallest
//!   (by bytes) folded into one "other outside" node. Non-IP flows (ARP) go
//!   to a `non-IP` node, and summaries of idle flows (whose addresses the
//!   agent no longer keeps) to an `idle flows` node, so every byte in the
//!   entries is on some edge.
//!
//! # Edges
//!
//! One edge per (from, to, dropped, reason), weighted by bytes, in the
//! direction the packets went: an egress entry gives container → its
//! destination, an ingress entry gives its source → container. Dropped
//! traffic gets its own edge, carrying the drop reason.
//!
//! Traffic between two containers on this host is seen twice: as egress at
//! the sender and as ingress at the receiver, with the same 5-tuple. The
//! sender's egress record is used, except when the receiver dropped the
//! traffic that the sender's hook let through: then the receiver's record
//! is used, because the picture should show where traffic stopped. An
//! ingress record whose sender was not observed (e.g. `observe --container`
//! attaches to one container only) is used as it is.
//!
//! Remote addresses are recognised as containers on this host by the
//! addresses the entries themselves show for each container (the source of
//! its egress, the destination of its ingress), then by the entry's `peer`.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use netwatch_common::{
    protocol::Protocol,
    reason::{Direction, DropReason},
};
use serde::Serialize;

use crate::flows::{FlowEntry, FlowReason};

/// What [`Graph::from_flows`] knows beyond the entries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GraphOptions {
    /// The host's own addresses (including Docker's gateway addresses):
    /// traffic to them goes to the `host` node.
    pub host_addrs: Vec<IpAddr>,
    /// Networks to mark as `internal` in their group's label.
    pub internal_networks: BTreeSet<String>,
    /// At most this many outside nodes: the prefixes beyond it with the
    /// fewest bytes fold into one "other outside" node (0 or 1: a single
    /// "outside" node).
    pub max_outside: usize,
    /// A line drawn above the picture.
    pub title: Option<String>,
}

impl Default for GraphOptions {
    fn default() -> GraphOptions {
        GraphOptions {
            host_addrs: Vec::new(),
            internal_networks: BTreeSet::new(),
            max_outside: 8,
            title: None,
        }
    }
}

/// What a node stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodeKind {
    Container,
    /// The host itself.
    Host,
    /// One outside prefix (/24 or /64).
    Outside,
    /// Outside prefixes folded together.
    OtherOutside,
    Multicast,
    LinkLocal,
    /// ARP and other non-IP traffic.
    NonIp,
    /// Summaries of idle flows (no addresses kept).
    IdleFlows,
}

/// One box or ellipse in the picture.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Node {
    /// Stable and unique: `container:NETWORK/NAME`, `host`,
    /// `outside:203.0.113.0/24`, …
    pub id: String,
    pub kind: NodeKind,
    /// The main text: a container name, `host`, a prefix.
    pub label: String,
    /// A second, smaller line: `service web`, `3 addresses`, …
    pub detail: Option<String>,
    /// For containers, the network of this copy.
    pub network: Option<String>,
    /// Bytes on edges leaving this node.
    pub sent: u64,
    /// Bytes on edges arriving at this node.
    pub received: u64,
}

/// A group of containers: one Docker network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Network {
    /// `None`: containers whose network is unknown.
    pub name: Option<String>,
    pub internal: bool,
    /// Indexes into [`Graph::nodes`], by container name.
    pub nodes: Vec<usize>,
}

/// Traffic from one node to another with one fate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Edge {
    /// Index into [`Graph::nodes`].
    pub from: usize,
    pub to: usize,
    pub bytes: u64,
    pub packets: u64,
    /// Flows folded into this edge.
    pub flows: u64,
    pub dropped: bool,
    /// The drop reason (`None` when forwarded).
    pub reason: Option<FlowReason>,
    /// `tcp/5432`, `udp/53`, `icmp`, … busiest first. The port of a TCP or
    /// UDP flow is the lower of its two ports (the usual service side).
    pub services: Vec<String>,
}

/// The picture: networks with their containers, external nodes, edges.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Graph {
    pub title: Option<String>,
    /// Named networks by name, then the unnamed group (if any).
    pub networks: Vec<Network>,
    /// Containers (in network order, by name), then external nodes.
    pub nodes: Vec<Node>,
    /// Ordered by (from, to, dropped, reason).
    pub edges: Vec<Edge>,
}

impl Graph {
    /// Builds the picture from `entries` (see the module docs for the rules).
    pub fn from_flows(entries: &[FlowEntry], options: &GraphOptions) -> Graph {
        Builder::new(entries, options).build()
    }

    /// Nodes that are not containers, in drawing order.
    pub fn externals(&self) -> impl Iterator<Item = usize> + '_ {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.kind != NodeKind::Container)
            .map(|(i, _)| i)
    }

    pub fn total_bytes(&self) -> u64 {
        self.edges.iter().map(|e| e.bytes).sum()
    }

    pub fn dropped_bytes(&self) -> u64 {
        self.edges
            .iter()
            .filter(|e| e.dropped)
            .map(|e| e.bytes)
            .sum()
    }
}

/// An outside prefix: the address with host bits cleared, and its length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Prefix {
    addr: IpAddr,
    len: u8,
}

impl Prefix {
    /// The /24 or /64 holding `ip`.
    fn of(ip: IpAddr) -> Prefix {
        match ip {
            IpAddr::V4(v4) => Prefix {
                addr: IpAddr::V4(Ipv4Addr::from(v4.to_bits() & !0xff)),
                len: 24,
            },
            IpAddr::V6(v6) => Prefix {
                addr: IpAddr::V6(Ipv6Addr::from(v6.to_bits() & !u128::from(u64::MAX))),
                len: 64,
            },
        }
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// A node's identity while building; its derived order is the drawing order.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Key {
    /// (network, container): `None` networks sort first here and are moved
    /// last when the groups are made.
    Container(Option<String>, String),
    Host,
    Prefix(Prefix),
    OtherOutside,
    Multicast,
    LinkLocal,
    NonIp,
    IdleFlows,
}

type EdgeKey = (Key, Key, bool, Option<FlowReason>);

#[derive(Default)]
struct EdgeSum {
    bytes: u64,
    packets: u64,
    flows: u64,
    services: BTreeMap<String, u64>,
}

/// The 5-tuple that identifies the same packets at both ends.
type Tuple = (IpAddr, IpAddr, u16, u16, Protocol);

fn tuple(e: &FlowEntry) -> Option<Tuple> {
    if e.flows != 1 || e.container.is_none() {
        return None;
    }
    Some((e.src?, e.dst?, e.src_port, e.dst_port, e.proto))
}

/// Dropped, or audited (what enforcement would drop): drawn as a drop, so
/// that an audit shows the map enforcement would give.
fn is_dropped(e: &FlowEntry) -> bool {
    e.verdict.is_drop_like()
}

fn is_ingress(e: &FlowEntry) -> bool {
    e.direction == Direction::Ingress
}

fn is_summary(e: &FlowEntry) -> bool {
    e.flows > 1 || e.proto == Protocol::Any
}

struct Builder<'a> {
    entries: &'a [FlowEntry],
    options: &'a GraphOptions,
    /// Container addresses as the entries show them: ip → (network, name).
    book: HashMap<IpAddr, (Option<String>, String)>,
    /// container → networks it was seen on.
    networks_of: BTreeMap<String, BTreeSet<Option<String>>>,
    services: BTreeMap<(Option<String>, String), String>,
}

impl<'a> Builder<'a> {
    fn new(entries: &'a [FlowEntry], options: &'a GraphOptions) -> Builder<'a> {
        let mut builder = Builder {
            entries,
            options,
            book: HashMap::new(),
            networks_of: BTreeMap::new(),
            services: BTreeMap::new(),
        };
        for e in entries {
            let Some(name) = &e.container else { continue };
            builder
                .networks_of
                .entry(name.clone())
                .or_default()
                .insert(e.network.clone());
            if let Some(service) = &e.service {
                builder
                    .services
                    .insert((e.network.clone(), name.clone()), service.clone());
            }
            if is_summary(e) {
                continue;
            }
            let own = if is_ingress(e) { e.dst } else { e.src };
            if let Some(ip) = own {
                builder
                    .book
                    .entry(ip)
                    .or_insert_with(|| (e.network.clone(), name.clone()));
            }
        }
        builder
    }

    /// The entries that count, without the second sighting of traffic
    /// between two local containers.
    fn counted(&self) -> Vec<&'a FlowEntry> {
        let mut egress: HashMap<Tuple, bool> = HashMap::new();
        let mut ingress: HashMap<Tuple, bool> = HashMap::new();
        for e in self.entries {
            if let Some(t) = tuple(e) {
                let seen = if is_ingress(e) {
                    &mut ingress
                } else {
                    &mut egress
                };
                // Any drop among duplicates of a tuple counts as dropped.
                *seen.entry(t).or_default() |= is_dropped(e);
            }
        }
        self.entries
            .iter()
            .filter(|e| {
                let Some(t) = tuple(e) else { return true };
                if is_ingress(e) {
                    match egress.get(&t) {
                        // The receiver stopped what the sender let through.
                        Some(&sender_dropped) => is_dropped(e) && !sender_dropped,
                        None => true,
                    }
                } else {
                    // Give way to the receiver's record of a drop.
                    ingress.get(&t) != Some(&true) || is_dropped(e)
                }
            })
            .collect()
    }

    fn classify(&self, ip: IpAddr, host_hint: bool) -> Key {
        if host_hint || ip.is_loopback() || self.options.host_addrs.contains(&ip) {
            return Key::Host;
        }
        let (multicast, link_local) = match ip {
            IpAddr::V4(v4) => (
                v4.is_multicast() || v4.is_broadcast(),
                v4.is_link_local() || v4.is_unspecified(),
            ),
            IpAddr::V6(v6) => (
                v6.is_multicast(),
                v6.is_unicast_link_local() || v6.is_unspecified(),
            ),
        };
        if multicast {
            Key::Multicast
        } else if link_local {
            Key::LinkLocal
        } else {
            Key::Prefix(Prefix::of(ip))
        }
    }

    /// The node of the container end (or, without a container, of its
    /// address).
    fn local(&self, e: &FlowEntry) -> Key {
        match &e.container {
            Some(name) => Key::Container(e.network.clone(), name.clone()),
            None if is_summary(e) => Key::IdleFlows,
            None => match if is_ingress(e) { e.dst } else { e.src } {
                Some(ip) => self.classify(ip, false),
                None => Key::NonIp,
            },
        }
    }

    /// The node of the other end.
    fn remote(&self, e: &FlowEntry) -> Key {
        if is_summary(e) {
            return Key::IdleFlows;
        }
        let Some(ip) = (if is_ingress(e) { e.src } else { e.dst }) else {
            return Key::NonIp;
        };
        if let Some((network, name)) = self.book.get(&ip) {
            return Key::Container(network.clone(), name.clone());
        }
        // The host and `--network host` containers are the host's node.
        if let Some(peer) = e.peer.as_ref().filter(|_| e.peer_is_networked_container()) {
            let seen = self.networks_of.get(peer);
            let network = if seen.is_none_or(|s| s.contains(&e.network)) {
                e.network.clone()
            } else {
                seen.and_then(|s| s.iter().flatten().next().cloned())
            };
            return Key::Container(network, peer.clone());
        }
        self.classify(
            ip,
            e.reason == Some(FlowReason::Netwatch(DropReason::HostAccess)),
        )
    }

    fn build(self) -> Graph {
        let mut sums: BTreeMap<EdgeKey, EdgeSum> = BTreeMap::new();
        let mut containers: BTreeSet<Key> = BTreeSet::new();
        for e in self.entries {
            if let Some(name) = &e.container {
                containers.insert(Key::Container(e.network.clone(), name.clone()));
            }
        }
        let mut prefixes: BTreeMap<Prefix, (u64, BTreeSet<IpAddr>)> = BTreeMap::new();
        // The DNS names containers resolved to the outside addresses.
        let mut names: BTreeMap<Prefix, BTreeSet<String>> = BTreeMap::new();
        for e in self.counted() {
            let (local, remote) = (self.local(e), self.remote(e));
            let remote_name = if is_ingress(e) {
                &e.src_name
            } else {
                &e.dst_name
            };
            if let (Key::Prefix(p), Some(name)) = (&remote, remote_name) {
                names.entry(*p).or_default().insert(name.clone());
            }
            let (local_ip, remote_ip) = if is_ingress(e) {
                (e.dst, e.src)
            } else {
                (e.src, e.dst)
            };
            for (key, ip) in [(&local, local_ip), (&remote, remote_ip)] {
                if let Key::Prefix(p) = key {
                    let (bytes, addrs) = prefixes.entry(*p).or_default();
                    *bytes += e.bytes;
                    addrs.extend(ip);
                }
            }
            let (from, to) = if is_ingress(e) {
                (remote, local)
            } else {
                (local, remote)
            };
            let dropped = is_dropped(e);
            let reason = if dropped {
                Some(e.reason.clone().unwrap_or(FlowReason::Unknown))
            } else {
                None
            };
            let sum = sums.entry((from, to, dropped, reason)).or_default();
            sum.bytes += e.bytes;
            sum.packets += e.packets;
            sum.flows += e.flows.max(1);
            if let Some(service) = service_of(e) {
                *sum.services.entry(service).or_default() += e.bytes;
            }
        }
        let folded = self.fold_outside(&prefixes);
        let fold = |key: Key| match key {
            Key::Prefix(p) if folded.contains(&p) => Key::OtherOutside,
            other => other,
        };
        let mut merged: BTreeMap<EdgeKey, EdgeSum> = BTreeMap::new();
        for ((from, to, dropped, reason), sum) in sums {
            let into = merged
                .entry((fold(from), fold(to), dropped, reason))
                .or_default();
            into.bytes += sum.bytes;
            into.packets += sum.packets;
            into.flows += sum.flows;
            for (service, bytes) in sum.services {
                *into.services.entry(service).or_default() += bytes;
            }
        }
        let mut keys: BTreeSet<Key> = containers;
        for (from, to, _, _) in merged.keys() {
            keys.insert(from.clone());
            keys.insert(to.clone());
        }
        // Named networks first, by name; the unnamed group last.
        let mut ordered: Vec<Key> = keys.into_iter().collect();
        let group = |k: &Key| match k {
            Key::Container(Some(_), _) => 0,
            Key::Container(None, _) => 1,
            _ => 2,
        };
        ordered.sort_by(|a, b| group(a).cmp(&group(b)).then(a.cmp(b)));
        let index: HashMap<&Key, usize> = ordered.iter().enumerate().map(|(i, k)| (k, i)).collect();
        let mut nodes: Vec<Node> = ordered
            .iter()
            .map(|k| self.node(k, &prefixes, &names, &folded))
            .collect();
        let mut edges = Vec::with_capacity(merged.len());
        for ((from, to, dropped, reason), sum) in &merged {
            let (from, to) = (index[from], index[to]);
            nodes[from].sent += sum.bytes;
            nodes[to].received += sum.bytes;
            let mut services: Vec<(&String, &u64)> = sum.services.iter().collect();
            services.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            edges.push(Edge {
                from,
                to,
                bytes: sum.bytes,
                packets: sum.packets,
                flows: sum.flows,
                dropped: *dropped,
                reason: reason.clone(),
                services: services.into_iter().map(|(s, _)| s.clone()).collect(),
            });
        }
        edges.sort_by(|a, b| {
            (a.from, a.to, a.dropped, &a.reason).cmp(&(b.from, b.to, b.dropped, &b.reason))
        });
        let mut networks: Vec<Network> = Vec::new();
        for (i, key) in ordered.iter().enumerate() {
            let Key::Container(network, _) = key else {
                continue;
            };
            match networks.last_mut() {
                Some(last) if last.name == *network => last.nodes.push(i),
                _ => networks.push(Network {
                    name: network.clone(),
                    internal: network
                        .as_ref()
                        .is_some_and(|n| self.options.internal_networks.contains(n)),
                    nodes: vec![i],
                }),
            }
        }
        Graph {
            title: self.options.title.clone(),
            networks,
            nodes,
            edges,
        }
    }

    /// The prefixes that go into the "other outside" node.
    fn fold_outside(
        &self,
        prefixes: &BTreeMap<Prefix, (u64, BTreeSet<IpAddr>)>,
    ) -> BTreeSet<Prefix> {
        let max = self.options.max_outside;
        if prefixes.len() <= max.max(1) {
            return BTreeSet::new();
        }
        let mut by_bytes: Vec<(&Prefix, u64)> =
            prefixes.iter().map(|(p, (b, _))| (p, *b)).collect();
        by_bytes.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let keep = max.saturating_sub(1);
        by_bytes.into_iter().skip(keep).map(|(p, _)| *p).collect()
    }

    fn node(
        &self,
        key: &Key,
        prefixes: &BTreeMap<Prefix, (u64, BTreeSet<IpAddr>)>,
        names: &BTreeMap<Prefix, BTreeSet<String>>,
        folded: &BTreeSet<Prefix>,
    ) -> Node {
        let plain = |id: &str, kind, label: &str, detail: Option<String>| Node {
            id: id.to_string(),
            kind,
            label: label.to_string(),
            detail,
            network: None,
            sent: 0,
            received: 0,
        };
        match key {
            Key::Container(network, name) => Node {
                id: format!("container:{}/{name}", network.as_deref().unwrap_or("")),
                kind: NodeKind::Container,
                label: name.clone(),
                detail: self
                    .services
                    .get(&(network.clone(), name.clone()))
                    .filter(|s| *s != name)
                    .map(|s| format!("service {s}")),
                network: network.clone(),
                sent: 0,
                received: 0,
            },
            Key::Host => plain("host", NodeKind::Host, "host", None),
            Key::Prefix(p) => {
                let n = prefixes.get(p).map_or(0, |(_, a)| a.len());
                let text = p.to_string();
                let mut detail = plural(n, "address", "addresses");
                if let Some(names) = names.get(p) {
                    detail.push_str(&format!(" · {}", names_text(names)));
                }
                plain(
                    &format!("outside:{text}"),
                    NodeKind::Outside,
                    &text,
                    Some(detail),
                )
            }
            Key::OtherOutside => {
                let addresses: usize = folded
                    .iter()
                    .filter_map(|p| prefixes.get(p))
                    .map(|(_, a)| a.len())
                    .sum();
                let label = if folded.len() == prefixes.len() {
                    "outside"
                } else {
                    "other outside"
                };
                plain(
                    "outside:other",
                    NodeKind::OtherOutside,
                    label,
                    Some(format!(
                        "{} · {}",
                        plural(folded.len(), "prefix", "prefixes"),
                        plural(addresses, "address", "addresses")
                    )),
                )
            }
            Key::Multicast => plain(
                "multicast",
                NodeKind::Multicast,
                "multicast/broadcast",
                None,
            ),
            Key::LinkLocal => plain("link-local", NodeKind::LinkLocal, "link-local", None),
            Key::NonIp => plain(
                "non-ip",
                NodeKind::NonIp,
                "non-IP",
                Some("ARP, …".to_string()),
            ),
            Key::IdleFlows => plain(
                "idle-flows",
                NodeKind::IdleFlows,
                "idle flows",
                Some("summarised by the agent".to_string()),
            ),
        }
    }
}

/// At most three names, then how many more.
fn names_text(names: &BTreeSet<String>) -> String {
    const SHOWN: usize = 3;
    let mut text: Vec<&str> = names.iter().take(SHOWN).map(String::as_str).collect();
    let more = names.len().saturating_sub(SHOWN);
    let more = (more > 0).then(|| format!("+{more} more"));
    text.extend(more.as_deref());
    text.join(", ")
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// `tcp/5432`, `udp/53`, `icmp`; `None` for summaries and non-IP.
fn service_of(e: &FlowEntry) -> Option<String> {
    if is_summary(e) || e.src.is_none() {
        return None;
    }
    // (Flows name TCP and UDP only: SCTP is a number, `132`, shown as is.)
    let ported = matches!(e.proto, Protocol::Tcp | Protocol::Udp);
    match e.proto {
        // The container's port, and the host's side it is published on.
        _ if ported && e.published.is_some() => {
            let port = if e.direction == Direction::Ingress {
                e.dst_port
            } else {
                e.src_port
            };
            let published = e.published.as_deref().unwrap_or_default();
            Some(format!("{}/{port} (published {published})", e.proto))
        }
        _ if ported => {
            let port = match (e.src_port, e.dst_port) {
                (0, p) | (p, 0) => p,
                (a, b) => a.min(b),
            };
            Some(format!("{}/{port}", e.proto))
        }
        other => Some(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::fixtures::*;

    /// web and api on the network `front`: a client and its server.
    const WEB: End<'static> = ("172.20.0.2", 43000);
    const API: End<'static> = ("172.20.0.3", 8080);

    fn graph(entries: &[FlowEntry]) -> Graph {
        Graph::from_flows(entries, &GraphOptions::default())
    }

    fn node<'g>(g: &'g Graph, id: &str) -> (usize, &'g Node) {
        g.nodes
            .iter()
            .enumerate()
            .find(|(_, n)| n.id == id)
            .unwrap_or_else(|| panic!("no node {id} in {:?}", g.nodes))
    }

    fn edges<'g>(g: &'g Graph, from: &str, to: &str) -> Vec<&'g Edge> {
        let (f, t) = (node(g, from).0, node(g, to).0);
        g.edges
            .iter()
            .filter(|e| e.from == f && e.to == t)
            .collect()
    }

    /// The bytes on the one edge from `from` to `to`.
    fn bytes(g: &Graph, from: &str, to: &str) -> u64 {
        let found = edges(g, from, to);
        assert_eq!(found.len(), 1, "{from} -> {to}: {found:?}");
        found[0].bytes
    }

    #[test]
    fn an_edge_through_a_published_port_names_the_host_side() {
        let mut inbound = ingress("web", "n", ("203.0.113.7", 40000), ("172.20.0.2", 80), 300);
        inbound.published = Some("0.0.0.0:8080/tcp".into());
        let mut answer = egress("web", "n", ("172.20.0.2", 80), ("203.0.113.7", 40000), 900);
        answer.published = Some("0.0.0.0:8080/tcp".into());
        let g = graph(&[inbound, answer]);
        let served = "tcp/80 (published 0.0.0.0:8080/tcp)";
        let inbound = edges(&g, "outside:203.0.113.0/24", "container:n/web");
        assert_eq!(inbound[0].services, [served]);
        let answers = edges(&g, "container:n/web", "outside:203.0.113.0/24");
        assert_eq!(answers[0].services, [served]);
    }

    #[test]
    fn an_outside_prefix_lists_the_names_its_containers_resolved() {
        let named = |mut e: FlowEntry, src: Option<&str>, dst: Option<&str>| {
            e.src_name = src.map(String::from);
            e.dst_name = dst.map(String::from);
            e
        };
        let flows: Vec<FlowEntry> = ["a.test", "b.test", "c.test", "d.test"]
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let port = 40000 + i as u16;
                named(
                    egress("a", "n", ("172.20.0.2", port), ("203.0.113.10", 443), 100),
                    None,
                    Some(name),
                )
            })
            .chain([named(
                ingress("a", "n", ("203.0.113.10", 443), ("172.20.0.2", 40000), 100),
                Some("a.test"),
                None,
            )])
            .collect();
        let g = graph(&flows);
        let (_, outside) = node(&g, "outside:203.0.113.0/24");
        assert_eq!(
            outside.detail.as_deref(),
            Some("1 address · a.test, b.test, c.test, +1 more")
        );
    }

    #[test]
    fn outside_addresses_aggregate_by_24_and_64() {
        let g = graph(&[
            egress("a", "n", ("172.20.0.2", 40000), ("203.0.113.10", 443), 100),
            egress("a", "n", ("172.20.0.2", 40001), ("203.0.113.20", 443), 200),
            ingress("a", "n", ("203.0.113.99", 40002), ("172.20.0.2", 22), 300),
            egress("a", "n", ("fd00::2", 40003), ("2001:db8:1:2::5", 443), 400),
            egress(
                "a",
                "n",
                ("fd00::2", 40004),
                ("2001:db8:1:2:ffff::6", 443),
                500,
            ),
        ]);
        let (_, v4) = node(&g, "outside:203.0.113.0/24");
        assert_eq!(v4.kind, NodeKind::Outside);
        assert_eq!(v4.detail.as_deref(), Some("3 addresses"));
        assert_eq!((v4.received, v4.sent), (300, 300));
        let (_, v6) = node(&g, "outside:2001:db8:1:2::/64");
        assert_eq!(v6.detail.as_deref(), Some("2 addresses"));
        assert_eq!(g.nodes.len(), 3);
        let out = edges(&g, "container:n/a", "outside:203.0.113.0/24");
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].bytes, out[0].flows), (300, 2));
        assert_eq!(out[0].services, ["tcp/443"]);
        assert_eq!(bytes(&g, "outside:203.0.113.0/24", "container:n/a"), 300);
    }

    #[test]
    fn beyond_the_limit_the_smallest_prefixes_fold_into_one_outside_node() {
        let entries: Vec<FlowEntry> = (1..=5u64)
            .map(|i| {
                egress(
                    "a",
                    "n",
                    ("172.20.0.2", 40000),
                    (&format!("198.51.{i}.1"), 443),
                    i * 100,
                )
            })
            .collect();
        let options = GraphOptions {
            max_outside: 3,
            ..GraphOptions::default()
        };
        let g = Graph::from_flows(&entries, &options);
        let outside: Vec<&str> = g
            .nodes
            .iter()
            .filter(|n| n.kind != NodeKind::Container)
            .map(|n| n.label.as_str())
            .collect();
        assert_eq!(outside, ["198.51.4.0/24", "198.51.5.0/24", "other outside"]);
        let (_, other) = node(&g, "outside:other");
        assert_eq!(other.detail.as_deref(), Some("3 prefixes · 3 addresses"));
        assert_eq!(other.received, 100 + 200 + 300);
        assert_eq!(g.total_bytes(), 1500, "folding keeps every byte");

        let one = GraphOptions {
            max_outside: 1,
            ..GraphOptions::default()
        };
        let g = Graph::from_flows(&entries, &one);
        let (_, all) = node(&g, "outside:other");
        assert_eq!(all.label, "outside");
        assert_eq!(g.nodes.len(), 2);
    }

    #[test]
    fn traffic_between_local_containers_counts_once_from_the_senders_egress() {
        let g = graph(&[
            egress("web", "front", WEB, API, 1000),
            ingress("api", "front", WEB, API, 990),
            egress("api", "front", API, WEB, 5000),
            ingress("web", "front", API, WEB, 5000),
        ]);
        assert_eq!(g.edges.len(), 2);
        assert_eq!(
            bytes(&g, "container:front/web", "container:front/api"),
            1000
        );
        assert_eq!(
            bytes(&g, "container:front/api", "container:front/web"),
            5000
        );
        assert_eq!(g.total_bytes(), 6000);
        assert!(g.nodes.iter().all(|n| n.kind == NodeKind::Container));
    }

    #[test]
    fn a_drop_at_the_receiver_wins_over_the_senders_forward() {
        let g = graph(&[
            egress(
                "client",
                "open",
                ("172.20.0.2", 43000),
                ("172.21.0.3", 5432),
                600,
            ),
            dropped(
                ingress(
                    "db",
                    "internal",
                    ("172.20.0.2", 43000),
                    ("172.21.0.3", 5432),
                    600,
                ),
                "not-in-network",
            ),
        ]);
        assert_eq!(g.edges.len(), 1);
        let e = &g.edges[0];
        assert!(e.dropped);
        assert_eq!(e.reason, Some("not-in-network".parse().unwrap()));
        assert_eq!(g.nodes[e.from].id, "container:open/client");
        assert_eq!(g.nodes[e.to].id, "container:internal/db");
    }

    #[test]
    fn an_ingress_record_whose_sender_was_not_observed_is_used() {
        let g = graph(&[with_peer(ingress("web", "front", API, WEB, 5000), "api")]);
        assert_eq!(
            bytes(&g, "container:front/api", "container:front/web"),
            5000
        );
    }

    #[test]
    fn dropped_traffic_gets_its_own_marked_edge() {
        let g = graph(&[
            egress("a", "n", ("172.20.0.2", 40000), ("203.0.113.10", 443), 700),
            dropped(
                egress("a", "n", ("172.20.0.2", 40001), ("203.0.113.11", 443), 80),
                "not-in-network",
            ),
        ]);
        let both = edges(&g, "container:n/a", "outside:203.0.113.0/24");
        assert_eq!(both.len(), 2);
        assert!(!both[0].dropped && both[0].reason.is_none());
        assert!(both[1].dropped);
        assert_eq!(both[1].reason, Some("not-in-network".parse().unwrap()));
        assert_eq!(g.dropped_bytes(), 80);
    }

    #[test]
    fn endpoint_classes() {
        let options = GraphOptions {
            host_addrs: vec!["10.9.9.9".parse().unwrap()],
            ..GraphOptions::default()
        };
        let g = Graph::from_flows(&shop(), &options);
        assert_eq!(
            edges(&g, "container:shop_backend/shop-db-1", "host")[0].reason,
            Some(FlowReason::Netwatch(DropReason::HostAccess)),
            "the remote of a host-access drop is the host"
        );
        assert!(
            !edges(&g, "container:shop_backend/shop-cache-1", "multicast").is_empty(),
            "ff02::fb"
        );
        assert_eq!(
            bytes(&g, "container:shop_frontend/shop-web-1", "non-ip"),
            420
        );
        let idle = edges(&g, "container:shop_frontend/shop-web-1", "idle-flows");
        assert_eq!((idle[0].bytes, idle[0].flows), (880_000, 40));
        // Without the host's addresses, the gateway is just an address…
        assert!(g.nodes.iter().any(|n| n.id == "outside:172.17.0.0/24"));
        // …with them, it is the host.
        let options = GraphOptions {
            host_addrs: vec![HOST_ADDR.parse().unwrap()],
            max_outside: 10,
            ..GraphOptions::default()
        };
        let g = Graph::from_flows(&shop(), &options);
        assert_eq!(bytes(&g, "container:bridge/monitor", "host"), 8_000);
        assert_eq!(bytes(&g, "host", "container:bridge/monitor"), 640_000);
        // An uplink drop with no container: from its outside source to the
        // prefix it was aimed at.
        let shield = edges(&g, "outside:192.0.2.0/24", "outside:172.21.0.0/24");
        assert_eq!(shield[0].reason, Some("protected-prefix".parse().unwrap()));
    }

    #[test]
    fn a_container_on_two_networks_appears_in_both_groups() {
        let g = graph(&shop());
        let names: Vec<(Option<&str>, Vec<&str>)> = g
            .networks
            .iter()
            .map(|n| {
                (
                    n.name.as_deref(),
                    n.nodes.iter().map(|&i| g.nodes[i].label.as_str()).collect(),
                )
            })
            .collect();
        assert_eq!(
            names,
            [
                (Some("bridge"), vec!["monitor"]),
                (
                    Some("shop_backend"),
                    vec!["shop-api-1", "shop-cache-1", "shop-db-1"]
                ),
                (Some("shop_frontend"), vec!["shop-api-1", "shop-web-1"]),
            ]
        );
        assert_eq!(
            edges(
                &g,
                "container:shop_backend/shop-api-1",
                "container:shop_backend/shop-db-1"
            )[0]
            .services,
            ["tcp/5432"]
        );
        let (_, api) = node(&g, "container:shop_frontend/shop-api-1");
        assert_eq!(api.detail.as_deref(), Some("service api"));
    }

    #[test]
    fn every_counted_byte_is_on_an_edge_and_totals_match_nodes() {
        let entries = shop();
        let g = graph(&entries);
        let duplicates: u64 = 240_000 + 7_600_000; // web ↔ api seen at both ends
        let all: u64 = entries.iter().map(|e| e.bytes).sum();
        assert_eq!(g.total_bytes(), all - duplicates);
        let sent: u64 = g.nodes.iter().map(|n| n.sent).sum();
        let received: u64 = g.nodes.iter().map(|n| n.received).sum();
        assert_eq!((sent, received), (g.total_bytes(), g.total_bytes()));
        for e in &g.edges {
            assert!(e.from < g.nodes.len() && e.to < g.nodes.len());
            assert_eq!(e.dropped, e.reason.is_some());
        }
    }

    #[test]
    fn peers_resolve_by_the_addresses_the_entries_show() {
        // db's own entry shows its address on the backend; api's egress
        // to it has no peer name.
        let g = graph(&[
            egress(
                "api",
                "back",
                ("172.21.0.2", 50500),
                ("172.21.0.3", 5432),
                300,
            ),
            egress(
                "db",
                "back",
                ("172.21.0.3", 5432),
                ("172.21.0.2", 50500),
                900,
            ),
        ]);
        assert_eq!(bytes(&g, "container:back/api", "container:back/db"), 300);
        assert_eq!(g.nodes.len(), 2);
        // A peer known only by name lands on the sender's network.
        let g = graph(&[with_peer(
            egress(
                "api",
                "back",
                ("172.21.0.2", 50500),
                ("172.21.0.7", 5432),
                300,
            ),
            "ghost",
        )]);
        assert_eq!(bytes(&g, "container:back/api", "container:back/ghost"), 300);
    }

    #[test]
    fn the_same_entries_give_the_same_graph_in_any_order() {
        let mut entries = shop();
        let a = graph(&entries);
        entries.reverse();
        assert_eq!(graph(&entries), a);
        assert_eq!(graph(&[]), Graph::default());
    }
}
