//! Putting names on kernel flow keys: which container, on which network,
//! through which interface.
//!
//! A key carries the ifindex of the interface whose program saw the packet.
//! On a container's veth that names the endpoint directly. On a network's
//! bridge (network-wide policy) or an uplink, the container is the one whose
//! address the packet carries: the source for packets the container sent
//! (egress), the destination for packets aimed at it (ingress).
//!
//! The other end (the peer) is a container on this host when its address
//! is one, and the host when its address is one of the host's: then the
//! socket's owner names it, a `--network host` container or `host`
//! ([`super::host_peer`]).

use std::{
    net::{IpAddr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

// Looked up for every new flow (its owner, peer and published port).
use foldhash::{HashMap, HashMapExt as _, HashSet};

use netwatch_common::{
    flow::FlowKey,
    reason::{Direction, DropReason},
};

use super::host_peer::{HostPeer, HostPeers, Outcome};
use super::record::key_addresses;
use crate::agent::{HostState, Target};
use crate::docker::{PublishedPort, project_of, service_of};
use crate::policy::labels::{NetworkLabels, container_labels, network_labels};

/// The names a flow key resolves to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowOwner {
    pub container: Option<String>,
    /// The container's full id (names are reused; ids are not).
    pub container_id: Option<String>,
    /// The container's compose project ([`crate::docker::project_of`]).
    pub project: Option<String>,
    /// The container's compose service, or swarm service
    /// ([`crate::docker::service_of`]).
    pub service: Option<String>,
    pub network: Option<String>,
    /// The interface whose program saw the packet.
    pub interface: Option<String>,
    /// What asks for the owner's network's policy (see
    /// [`FlowNames::new`]): what a drop's `rule` names.
    pub policy: Option<String>,
}

/// Where the rule that dropped (or would have dropped) a packet comes from,
/// for a flow on `network`, whose policy `policy` asks for, dropped for
/// `reason` (a netwatch reason name):
/// the built-in anti-spoofing and parsing rules, or what asked for the
/// network's policy (`internal: true`, a label, `agent --audit`). `None`
/// for reasons that are not netwatch's, and for a policy's reasons when
/// the network is not known.
pub fn rule_of(network: Option<&str>, policy: Option<&str>, reason: DropReason) -> Option<String> {
    Some(match reason {
        DropReason::SpoofedSource | DropReason::SpoofedMac => "built-in: anti-spoofing".to_owned(),
        DropReason::InvalidHeader
        | DropReason::UnsupportedProtocol
        | DropReason::ExtensionHeaderLimit => "built-in: packets netwatch cannot parse".to_owned(),
        DropReason::ProtectedPrefix => {
            format!("uplink shield: a prefix of network {}", network?)
        }
        DropReason::NotInNetwork | DropReason::HostAccess | DropReason::BroadcastMulticast => {
            format!("{} on network {}", policy?, network?)
        }
        DropReason::None => return None,
    })
}

/// What a flow's peer is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PeerKind {
    /// A container on one of this host's guarded networks (by address).
    Container,
    /// A `--network host` container: the socket at the host's end is its.
    HostMode,
    /// The host's own stack, when no host-mode container owns the socket
    /// (or the socket is gone, or it cannot be told).
    Host,
}

impl PeerKind {
    /// As `peer_kind` says it: `container`, `host-mode` or `host`.
    pub fn name(self) -> &'static str {
        match self {
            PeerKind::Container => "container",
            PeerKind::HostMode => "host-mode",
            PeerKind::Host => "host",
        }
    }
}

/// The other end of a flow, named.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Peer {
    /// The container's name; `host` for the host.
    pub name: String,
    /// Its compose or swarm service.
    pub service: Option<String>,
    pub kind: PeerKind,
}

/// The name of the host as a peer.
pub const HOST_PEER: &str = "host";

#[derive(Clone, Debug)]
struct Endpoint {
    container: String,
    container_id: String,
    service: Option<String>,
    project: Option<String>,
    network: String,
    /// The container's published ports (shared by its endpoints).
    published: Arc<[PublishedPort]>,
    /// What asks for this endpoint's policy when it is not its network's:
    /// the container's own `netwatch.egress=audit`.
    policy: Option<String>,
}

/// Ifindex and address → names, rebuilt from each snapshot.
#[derive(Clone, Debug, Default)]
pub struct FlowNames {
    veths: HashMap<u32, (String, Endpoint)>,
    bridges: HashMap<u32, (String, String)>,
    uplinks: HashMap<u32, String>,
    addresses: HashMap<IpAddr, Endpoint>,
    host: HostPeers,
    /// Network name → what asks for its policy.
    policies: HashMap<String, String>,
    /// Network name → what asks for its bridge's policy, where that is not
    /// the network's: a container of it audited by its own label.
    bridge_policies: HashMap<String, String>,
    /// The containers of the snapshot; `None` before the first one (when
    /// no container is known to be gone).
    containers: Option<HashSet<String>>,
    /// See [`FlowNames::generation`]; 0 for every default (empty) one.
    generation: u64,
}

/// The next [`FlowNames::generation`].
static GENERATIONS: AtomicU64 = AtomicU64::new(1);

impl FlowNames {
    /// The names of everything in `state`, plus the uplinks.
    pub fn new(state: &HostState, uplinks: &[Target]) -> FlowNames {
        let mut names = FlowNames {
            containers: Some(
                state
                    .endpoints
                    .iter()
                    .map(|e| e.container.clone())
                    .collect(),
            ),
            generation: GENERATIONS.fetch_add(1, Ordering::Relaxed),
            ..FlowNames::default()
        };
        // Network name → what it asks for (with `agent --audit`) and
        // whether it is internal, for its containers' own audit labels.
        let mut asked_of: HashMap<&str, (NetworkLabels, bool)> = HashMap::new();
        for network in &state.networks {
            let asked = network_labels(
                &network.name,
                network.internal,
                &network.labels,
                &mut Vec::new(),
            );
            let source = if network.internal {
                "internal: true"
            } else if asked.audit {
                "label netwatch.egress=audit"
            } else if asked.deny_egress {
                "label netwatch.egress=deny"
            } else {
                "nothing (observed)"
            };
            let policy = if state.audit_all && asked.deny_egress && !asked.audit {
                format!("{source}, audited (agent --audit)")
            } else {
                source.to_owned()
            };
            names.policies.insert(network.name.clone(), policy);
            asked_of.insert(
                network.name.as_str(),
                (asked.with_agent_audit(state.audit_all), network.internal),
            );
            if let Some((ifname, ifindex)) =
                network.bridge.as_ref().or(network.macvlan_parent.as_ref())
            {
                names
                    .bridges
                    .insert(*ifindex, (ifname.clone(), network.name.clone()));
            }
        }
        let mut audited_containers: HashMap<&str, Vec<&str>> = HashMap::new();
        for endpoint in &state.endpoints {
            let own_audit =
                asked_of
                    .get(endpoint.network.as_str())
                    .is_some_and(|(asked, internal)| {
                        container_labels(
                            &endpoint.container,
                            &endpoint.container_labels,
                            &mut Vec::new(),
                        )
                        .audits_on(asked, *internal)
                    });
            if own_audit {
                audited_containers
                    .entry(endpoint.network.as_str())
                    .or_default()
                    .push(endpoint.container.as_str());
            }
            let owner = Endpoint {
                container: endpoint.container.clone(),
                container_id: endpoint.container_id.clone(),
                service: service_of(&endpoint.container_labels).map(str::to_owned),
                project: project_of(&endpoint.container_labels).map(str::to_owned),
                network: endpoint.network.clone(),
                published: endpoint.published.clone().into(),
                policy: own_audit
                    .then(|| names.policies.get(&endpoint.network))
                    .flatten()
                    .map(|network_policy| {
                        format!(
                            "{network_policy}, audited (label netwatch.egress=audit on container {})",
                            endpoint.container
                        )
                    }),
            };
            for ip in [endpoint.ipv4.map(IpAddr::V4), endpoint.ipv6.map(IpAddr::V6)]
                .into_iter()
                .flatten()
            {
                names.addresses.insert(ip, owner.clone());
            }
            names
                .veths
                .insert(endpoint.host_ifindex, (endpoint.host_ifname.clone(), owner));
        }
        for (network, mut containers) in audited_containers {
            containers.sort_unstable();
            containers.dedup();
            if let Some(network_policy) = names.policies.get(network) {
                let policy = format!(
                    "{network_policy}, audited at the bridge (label netwatch.egress=audit on \
                     container {})",
                    containers.join(", ")
                );
                names.bridge_policies.insert(network.to_owned(), policy);
            }
        }
        for uplink in uplinks {
            names.uplinks.insert(uplink.ifindex, uplink.ifname.clone());
        }
        names.host = HostPeers::new(state.host_addrs.iter().copied(), Default::default(), None);
        names
    }

    /// Whether `container` is gone: named by none of the snapshot's
    /// endpoints. Before the first snapshot, nothing is.
    pub fn is_gone(&self, container: &str) -> bool {
        self.containers
            .as_ref()
            .is_some_and(|present| !present.contains(container))
    }

    /// How peers at the host's addresses are named (by default, all
    /// `host`).
    pub fn with_host_peers(mut self, host: HostPeers) -> FlowNames {
        self.host = host;
        self
    }

    /// Tells these names from others: names built from another snapshot
    /// have another generation (clones share theirs), so what was derived
    /// from one set of names can be kept until the generation changes.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether [`FlowNames::owner`] of a flow seen at `ifindex` depends on
    /// the interface alone (a container's veth), not on the flow's
    /// addresses.
    pub fn owner_by_interface(&self, ifindex: u32) -> bool {
        self.veths.contains_key(&ifindex)
    }

    /// The container, network and interface of a flow key.
    pub fn owner(&self, key: &FlowKey) -> FlowOwner {
        if let Some((ifname, endpoint)) = self.veths.get(&key.ifindex) {
            return FlowOwner {
                container: Some(endpoint.container.clone()),
                container_id: Some(endpoint.container_id.clone()),
                service: endpoint.service.clone(),
                project: endpoint.project.clone(),
                network: Some(endpoint.network.clone()),
                interface: Some(ifname.clone()),
                policy: endpoint
                    .policy
                    .clone()
                    .or_else(|| self.policies.get(&endpoint.network).cloned()),
            };
        }
        let (src, dst) = key_addresses(key);
        let inside = match Direction::from_u8(key.direction) {
            Some(Direction::Egress) => src,
            _ => dst,
        };
        let endpoint = inside.and_then(|ip| self.addresses.get(&ip));
        let interface = self
            .bridges
            .get(&key.ifindex)
            .map(|(ifname, _)| ifname.clone())
            .or_else(|| self.uplinks.get(&key.ifindex).cloned());
        let network = endpoint.map(|e| e.network.clone()).or_else(|| {
            self.bridges
                .get(&key.ifindex)
                .map(|(_, network)| network.clone())
        });
        FlowOwner {
            container: endpoint.map(|e| e.container.clone()),
            container_id: endpoint.map(|e| e.container_id.clone()),
            service: endpoint.and_then(|e| e.service.clone()),
            project: endpoint.and_then(|e| e.project.clone()),
            policy: network.as_ref().and_then(|n| {
                self.bridges
                    .contains_key(&key.ifindex)
                    .then(|| self.bridge_policies.get(n))
                    .flatten()
                    .or_else(|| self.policies.get(n))
                    .cloned()
            }),
            network,
            interface,
        }
    }

    /// Who is at the other end of a flow: the destination of what an
    /// endpoint sends, the source of what it receives. A container on this
    /// host by its address; at one of the host's addresses, the
    /// `--network host` container that owns the host's socket, or `host`.
    /// The outcome says whether the socket was looked up (for counters).
    pub fn peer(&self, key: &FlowKey) -> (Option<Peer>, Outcome) {
        let (src, dst) = key_addresses(key);
        let egress = Direction::from_u8(key.direction) == Some(Direction::Egress);
        let (other, other_port, inside, inside_port) = if egress {
            (dst, key.dst_port, src, key.src_port)
        } else {
            (src, key.src_port, dst, key.dst_port)
        };
        let Some(other) = other else {
            return (None, Outcome::NotAsked);
        };
        if let Some(endpoint) = self.addresses.get(&other) {
            let peer = Peer {
                name: endpoint.container.clone(),
                service: endpoint.service.clone(),
                kind: PeerKind::Container,
            };
            return (Some(peer), Outcome::NotAsked);
        }
        if !self.host.is_host(other) {
            return (None, Outcome::NotAsked);
        }
        let (owner, outcome) = match inside {
            Some(inside) => self.host.owner(
                key.proto,
                SocketAddr::new(other, other_port),
                SocketAddr::new(inside, inside_port),
            ),
            None => (HostPeer::Host, Outcome::NotAsked),
        };
        let peer = match owner {
            HostPeer::Container(c) => Peer {
                name: c.name,
                service: c.service,
                kind: PeerKind::HostMode,
            },
            HostPeer::Host => Peer {
                name: HOST_PEER.to_owned(),
                service: None,
                kind: PeerKind::Host,
            },
        };
        (Some(peer), outcome)
    }

    /// The published port a flow came through (or answers), as `docker
    /// port` prints its host side (`0.0.0.0:8080/tcp`): a flow into a
    /// container that publishes its destination port and protocol, or the
    /// container's answers from that port. Docker delivers a published
    /// port's connections to the container's own address and port (its
    /// DNAT, or `docker-proxy` connecting from the network's gateway), so
    /// nothing in the packet says it came through the host port: a
    /// neighbour on the same network reaching the container directly is
    /// therefore not counted as published. With several bindings of the
    /// port, the peer picks: from one of the host's addresses (the gateway:
    /// `docker-proxy` relaying a connection to a loopback binding, which
    /// Docker's DNAT does not serve) a loopback binding first, from
    /// elsewhere (DNAT keeps the client's address) another; then the flow's
    /// family (`0.0.0.0` or `::`).
    pub fn published(&self, key: &FlowKey) -> Option<String> {
        let (src, dst) = key_addresses(key);
        let (inside, port, other) = match Direction::from_u8(key.direction)? {
            Direction::Egress => (src?, key.src_port, dst?),
            Direction::Ingress => (dst?, key.dst_port, src?),
        };
        let endpoint = self
            .veths
            .get(&key.ifindex)
            .map(|(_, e)| e)
            .or_else(|| self.addresses.get(&inside))?;
        if self
            .addresses
            .get(&other)
            .is_some_and(|peer| peer.network == endpoint.network)
        {
            return None;
        }
        let proto = match key.proto {
            6 => "tcp",
            17 => "udp",
            132 => "sctp",
            _ => return None,
        };
        let relayed = self.host.is_host(other);
        endpoint
            .published
            .iter()
            .filter(|p| p.container_port == port && p.protocol == proto)
            .min_by_key(|p| {
                (
                    p.host_ip.is_loopback() != relayed,
                    p.host_ip.is_ipv4() != other.is_ipv4(),
                )
            })
            .map(ToString::to_string)
    }

    /// The container on this host that owns `ip`, if any.
    pub fn container_of(&self, ip: IpAddr) -> Option<&str> {
        self.addresses.get(&ip).map(|e| e.container.as_str())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;

    use netwatch_common::flow::family;

    use super::*;
    use std::sync::Arc;

    use crate::agent::{ContainerInterface, NetworkState};
    use crate::docker::{COMPOSE_PROJECT_LABEL, COMPOSE_SERVICE_LABEL};
    use crate::flows::host_peer::{CgroupIndex, HostContainer, HostSocket, Lookup, SocketOwners};

    /// `postgres` (service `db`) on internal network `db`: veth1,
    /// ifindex 31, 172.30.0.2.
    pub(crate) fn state() -> HostState {
        HostState {
            audit_all: false,
            networks: vec![NetworkState {
                name: "db".into(),
                driver: "bridge".into(),
                internal: true,
                bridge: Some(("br-db".into(), 30)),
                macvlan_parent: None,
                overlay_sandbox: None,
                subnets: vec!["172.30.0.0/16".parse().unwrap()],
                gateways: vec!["172.30.0.1".parse().unwrap()],
                labels: BTreeMap::new(),
            }],
            endpoints: vec![ContainerInterface {
                container: "postgres".into(),
                container_id: "3f2a9c".into(),
                network: "db".into(),
                host_ifname: "veth1".into(),
                host_ifindex: 31,
                ipv4: Some("172.30.0.2".parse().unwrap()),
                ipv6: None,
                mac: [2, 0x42, 0, 0, 0, 2],
                container_labels: BTreeMap::from([
                    (COMPOSE_SERVICE_LABEL.to_string(), "db".to_string()),
                    (COMPOSE_PROJECT_LABEL.to_string(), "shop".to_string()),
                ]),
                published: Vec::new(),
                macvlan: None,
                overlay: None,
            }],
            host_addrs: vec!["172.30.0.1".parse().unwrap()],
            overlay_members: vec![],
            bridge_ports: vec![],
            provisional_children: Vec::new(),
            sandbox_ports: Vec::new(),
        }
    }

    fn key(ifindex: u32, direction: Direction, src: [u8; 4], dst: [u8; 4]) -> FlowKey {
        let mut key = FlowKey {
            ifindex,
            direction: direction as u8,
            family: family::IPV4,
            ..FlowKey::default()
        };
        key.src[..4].copy_from_slice(&src);
        key.dst[..4].copy_from_slice(&dst);
        key
    }

    #[test]
    fn a_flow_names_its_containers_id_and_compose_project_seen_at_its_veth_or_its_bridge() {
        let names = FlowNames::new(&state(), &[]);
        let at_veth = names.owner(&key(31, Direction::Egress, [172, 30, 0, 2], [1, 2, 3, 4]));
        let at_bridge = names.owner(&key(30, Direction::Egress, [172, 30, 0, 2], [1, 2, 3, 4]));
        for owner in [at_veth, at_bridge] {
            assert_eq!(owner.container_id.as_deref(), Some("3f2a9c"));
            assert_eq!(owner.project.as_deref(), Some("shop"));
        }
        let stranger = names.owner(&key(30, Direction::Egress, [172, 30, 0, 9], [1, 2, 3, 4]));
        assert_eq!((stranger.container_id, stranger.project), (None, None));
    }

    #[test]
    fn veth_keys_name_their_endpoint() {
        let uplink = Target {
            ifname: "eth0".into(),
            ifindex: 2,
            what: "uplink eth0".into(),
        };
        let names = FlowNames::new(&state(), &[uplink]);
        let owner = names.owner(&key(31, Direction::Egress, [172, 30, 0, 2], [1, 2, 3, 4]));
        assert_eq!(owner.container.as_deref(), Some("postgres"));
        assert_eq!(owner.service.as_deref(), Some("db"));
        assert_eq!(owner.interface.as_deref(), Some("veth1"));
    }

    #[test]
    fn a_connection_to_a_published_port_and_its_answers_carry_it_but_a_neighbours_do_not() {
        let mut state = state();
        let binding = |ip: &str, protocol: &str| PublishedPort {
            host_ip: ip.parse().unwrap(),
            host_port: 15432,
            container_port: 5432,
            protocol: protocol.into(),
        };
        state.endpoints[0].published = vec![
            binding("0.0.0.0", "tcp"),
            binding("::", "tcp"),
            binding("127.0.0.1", "tcp"),
            binding("0.0.0.0", "udp"),
        ];
        let mut neighbour = state.endpoints[0].clone();
        neighbour.container = "psql".into();
        neighbour.host_ifindex = 32;
        neighbour.ipv4 = Some("172.30.0.3".parse().unwrap());
        neighbour.published = Vec::new();
        state.endpoints.push(neighbour);
        let names = FlowNames::new(&state, &[]);
        let tcp = |mut key: FlowKey, src_port: u16, dst_port: u16| {
            key.proto = 6;
            key.src_port = src_port;
            key.dst_port = dst_port;
            key
        };
        let client = [203, 0, 113, 7];
        let postgres = [172, 30, 0, 2];
        let inbound = tcp(key(31, Direction::Ingress, client, postgres), 40000, 5432);
        assert_eq!(
            names.published(&inbound).as_deref(),
            Some("0.0.0.0:15432/tcp"),
            "an IPv4 client: the IPv4 binding"
        );
        let answer = tcp(key(31, Direction::Egress, postgres, client), 5432, 40000);
        assert_eq!(
            names.published(&answer).as_deref(),
            Some("0.0.0.0:15432/tcp")
        );
        // docker-proxy relays a loopback binding's connections from the
        // gateway, one of the host's addresses.
        let relayed = tcp(
            key(31, Direction::Ingress, [172, 30, 0, 1], postgres),
            40001,
            5432,
        );
        assert_eq!(
            names.published(&relayed).as_deref(),
            Some("127.0.0.1:15432/tcp")
        );
        let from_neighbour = tcp(
            key(31, Direction::Ingress, [172, 30, 0, 3], postgres),
            40002,
            5432,
        );
        assert_eq!(names.published(&from_neighbour), None, "reached directly");
        let other_port = tcp(key(31, Direction::Ingress, client, postgres), 40003, 5433);
        assert_eq!(names.published(&other_port), None);
        let mut udp = inbound;
        udp.proto = 17;
        assert_eq!(names.published(&udp).as_deref(), Some("0.0.0.0:15432/udp"));
        let mut sctp = inbound;
        sctp.proto = 132;
        assert_eq!(names.published(&sctp), None, "not published for sctp");
        let outbound = tcp(key(31, Direction::Egress, postgres, client), 40004, 5432);
        assert_eq!(
            names.published(&outbound),
            None,
            "the container connecting out to someone's 5432"
        );
    }

    #[test]
    fn a_swarm_task_is_named_by_its_swarm_service() {
        let mut state = state();
        state.endpoints[0].container_labels = BTreeMap::from([(
            crate::docker::SWARM_SERVICE_LABEL.to_string(),
            "nwcap-svc".to_string(),
        )]);
        let names = FlowNames::new(&state, &[]);
        let owner = names.owner(&key(31, Direction::Egress, [172, 30, 0, 2], [1, 2, 3, 4]));
        assert_eq!(owner.service.as_deref(), Some("nwcap-svc"));
    }

    #[test]
    fn uplink_and_bridge_keys_name_the_container_by_address() {
        let uplink = Target {
            ifname: "eth0".into(),
            ifindex: 2,
            what: "uplink eth0".into(),
        };
        let names = FlowNames::new(&state(), &[uplink]);
        let inbound = names.owner(&key(
            2,
            Direction::Ingress,
            [203, 0, 113, 7],
            [172, 30, 0, 2],
        ));
        assert_eq!(inbound.container.as_deref(), Some("postgres"));
        assert_eq!(inbound.network.as_deref(), Some("db"));
        assert_eq!(inbound.interface.as_deref(), Some("eth0"));
        let routed_out = names.owner(&key(30, Direction::Egress, [172, 30, 0, 2], [10, 0, 0, 1]));
        assert_eq!(routed_out.container.as_deref(), Some("postgres"));
        assert_eq!(routed_out.interface.as_deref(), Some("br-db"));
        let unknown = names.owner(&key(30, Direction::Ingress, [10, 0, 0, 1], [172, 30, 0, 9]));
        assert_eq!(unknown.container, None);
        assert_eq!(
            unknown.network.as_deref(),
            Some("db"),
            "the bridge's network"
        );
    }

    #[test]
    fn a_container_audited_by_its_label_names_that_label_on_its_veth_and_its_bridge() {
        let mut state = state();
        state.networks[0].internal = false;
        state.networks[0].labels = BTreeMap::from([(
            crate::policy::labels::EGRESS.to_string(),
            "deny".to_string(),
        )]);
        state.endpoints[0].container_labels.insert(
            crate::policy::labels::EGRESS.to_string(),
            "audit".to_string(),
        );
        let mut other = state.endpoints[0].clone();
        other.container = "pgadmin".into();
        other.container_labels = BTreeMap::new();
        other.host_ifindex = 32;
        other.ipv4 = Some("172.30.0.3".parse().unwrap());
        state.endpoints.push(other);
        let names = FlowNames::new(&state, &[]);
        let policy = |ifindex: u32, src: [u8; 4]| {
            names
                .owner(&key(ifindex, Direction::Egress, src, [203, 0, 113, 7]))
                .policy
        };
        assert_eq!(
            policy(31, [172, 30, 0, 2]).as_deref(),
            Some(
                "label netwatch.egress=deny, audited (label netwatch.egress=audit on container \
                 postgres)"
            )
        );
        assert_eq!(
            policy(32, [172, 30, 0, 3]).as_deref(),
            Some("label netwatch.egress=deny"),
            "its neighbour stays enforced"
        );
        assert_eq!(
            policy(30, [172, 30, 0, 3]).as_deref(),
            Some(
                "label netwatch.egress=deny, audited at the bridge (label netwatch.egress=audit \
                 on container postgres)"
            ),
            "the bridge records for everyone"
        );
        state.networks[0].internal = true;
        let internal = FlowNames::new(&state, &[]);
        assert_eq!(
            internal
                .owner(&key(
                    31,
                    Direction::Egress,
                    [172, 30, 0, 2],
                    [203, 0, 113, 7]
                ))
                .policy
                .as_deref(),
            Some("internal: true"),
            "no label audits an internal network"
        );
    }

    /// Answers every lookup with one cgroup id.
    struct OneCgroup(u64);

    impl SocketOwners for OneCgroup {
        fn lookup(&self, _: &HostSocket) -> Result<Lookup, String> {
            Ok(Lookup::Cgroup(self.0))
        }
    }

    fn named(name: &str, service: Option<&str>, kind: PeerKind) -> Option<Peer> {
        Some(Peer {
            name: name.into(),
            service: service.map(String::from),
            kind,
        })
    }

    fn tcp(key: FlowKey, src_port: u16, dst_port: u16) -> FlowKey {
        FlowKey {
            proto: netwatch_common::packet::IPPROTO_TCP,
            src_port,
            dst_port,
            ..key
        }
    }

    #[test]
    fn the_hosts_end_is_named_after_the_host_mode_container_owning_the_socket() {
        let mut cgroups = CgroupIndex::default();
        cgroups.insert(
            77,
            HostContainer {
                name: "exporter".into(),
                service: Some("metrics".into()),
            },
        );
        let peers = HostPeers::new(
            ["172.30.0.1".parse().unwrap()],
            cgroups.clone(),
            Some(Arc::new(OneCgroup(77))),
        );
        let names = FlowNames::new(&state(), &[]).with_host_peers(peers);
        // The host-mode container connects to postgres: received by it.
        let key = tcp(
            key(31, Direction::Ingress, [172, 30, 0, 1], [172, 30, 0, 2]),
            40000,
            5432,
        );
        let (peer, outcome) = names.peer(&key);
        assert_eq!(outcome, Outcome::Named);
        assert_eq!(peer, named("exporter", Some("metrics"), PeerKind::HostMode));
        // A socket of a process in no container: the host.
        let host_process = HostPeers::new(
            ["172.30.0.1".parse().unwrap()],
            cgroups,
            Some(Arc::new(OneCgroup(1))),
        );
        let names = FlowNames::new(&state(), &[]).with_host_peers(host_process);
        let (peer, outcome) = names.peer(&key);
        assert_eq!(outcome, Outcome::Host);
        assert_eq!(
            peer.map(|p| (p.name, p.kind)),
            Some(("host".into(), PeerKind::Host))
        );
    }

    #[test]
    fn peers_are_containers_by_address_the_host_by_its_addresses_and_nobody_else() {
        let names = FlowNames::new(&state(), &[]);
        // postgres answering the host (no lookup without sock_diag): host.
        let to_gateway = names.peer(&key(
            31,
            Direction::Egress,
            [172, 30, 0, 2],
            [172, 30, 0, 1],
        ));
        assert_eq!(
            to_gateway,
            (named("host", None, PeerKind::Host), Outcome::NotAsked)
        );
        // Seen on the bridge, aimed at postgres: the peer is postgres.
        let (peer, _) = names.peer(&key(
            30,
            Direction::Egress,
            [172, 30, 0, 9],
            [172, 30, 0, 2],
        ));
        assert_eq!(peer, named("postgres", Some("db"), PeerKind::Container));
        // Anyone else (outside) stays unnamed.
        let (peer, _) = names.peer(&key(
            31,
            Direction::Egress,
            [172, 30, 0, 2],
            [203, 0, 113, 7],
        ));
        assert_eq!(peer, None);
    }

    #[test]
    fn a_drop_names_the_rule_behind_it() {
        let on =
            |reason: &str| rule_of(Some("db"), Some("internal: true"), reason.parse().unwrap());
        assert_eq!(
            on("not-in-network").as_deref(),
            Some("internal: true on network db")
        );
        assert_eq!(
            on("host-access").as_deref(),
            Some("internal: true on network db")
        );
        assert_eq!(
            on("spoofed-mac").as_deref(),
            Some("built-in: anti-spoofing")
        );
        assert_eq!(
            on("invalid-header").as_deref(),
            Some("built-in: packets netwatch cannot parse")
        );
        assert_eq!(on("none"), None, "not a drop");
        assert_eq!(
            rule_of(None, None, DropReason::NotInNetwork),
            None,
            "no network known"
        );
    }
}
