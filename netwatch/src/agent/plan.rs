//! From a snapshot of the host's Docker networks to the datapath's desired
//! state.
//!
//! Every endpoint of a bridge network gets both veth programs: enforced on
//! an `internal` network, observed only elsewhere. The bridge of every
//! internal network gets a network-wide policy, attached as soon as the
//! network exists, so routed and host paths are held before any of its
//! containers' veths are known. Scopes are ifindexes: unique per interface
//! on the host, so no two policies share trie entries.
//!
//! An overlay endpoint gets the same two programs on its veth's end in the
//! network's sandbox namespace. An overlay has no host-side device for a
//! network-wide policy. A container on a non-internal overlay leaves it
//! through its leg on `docker_gwbridge` (its default route), so when an
//! overlay denies egress, the leg of each of its containers is enforced
//! too, with nothing inside (every destination is outside the overlay)
//! and the overlay's allow-list.

use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
};

use netwatch_common::{
    endpoint::{EndpointPolicy, MAX_PORT_RULES, MacvlanPort, MacvlanPortKey, policy_flags},
    packet::{IPPROTO_TCP, IPPROTO_UDP},
};

use crate::docker::{GATEWAY_BRIDGE, PublishedPort};
use crate::policy::{
    AllowRule, Cidr, InterfacePolicy, PublishedRule,
    labels::{
        ContainerLabels, LabelProblem, NetworkLabels, container_audit_refused, container_labels,
        network_labels,
    },
};

/// A Docker network as the agent needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkState {
    pub name: String,
    /// `bridge`, `macvlan` or `overlay`.
    pub driver: String,
    pub internal: bool,
    /// The bridge device (name, ifindex), when it exists.
    pub bridge: Option<(String, u32)>,
    /// For a macvlan network: its parent device on the host (name,
    /// ifindex), when it exists.
    pub macvlan_parent: Option<(String, u32)>,
    /// For an overlay network: the file name of its sandbox namespace on
    /// this host (`1-<network id[:10]>`, under Docker's exec-root), which
    /// exists once a container of this host joins it.
    pub overlay_sandbox: Option<String>,
    pub subnets: Vec<Cidr>,
    pub gateways: Vec<IpAddr>,
    /// The network's Docker labels (`netwatch.*` ones are policy).
    pub labels: BTreeMap<String, String>,
}

impl NetworkState {
    /// Docker's `docker_gwbridge`, which carries the way out of every
    /// container on a non-internal overlay network.
    pub fn is_gateway_bridge(&self) -> bool {
        self.name == GATEWAY_BRIDGE && self.driver == "bridge"
    }
}

/// One container endpoint on one network, with its host-side veth.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerInterface {
    pub container: String,
    /// The container's full id.
    pub container_id: String,
    /// Name of the network (a key into [`HostState::networks`]).
    pub network: String,
    pub host_ifname: String,
    pub host_ifindex: u32,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    pub mac: [u8; 6],
    /// The container's Docker labels (`netwatch.allow` is policy).
    pub container_labels: BTreeMap<String, String>,
    /// The container's published ports.
    pub published: Vec<PublishedPort>,
    /// For an endpoint of a macvlan network: where its child lives.
    /// `host_ifname`/`host_ifindex` are then the child's, inside the
    /// container's namespace.
    pub macvlan: Option<MacvlanEndpoint>,
    /// For an endpoint of an overlay network: the sandbox its veth ends in.
    /// `host_ifname`/`host_ifindex` are then that end's, inside the
    /// sandbox.
    pub overlay: Option<OverlayEndpoint>,
}

/// Where an overlay endpoint's veth ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OverlayEndpoint {
    /// The network's sandbox namespace file (`<exec-root>/netns/1-<id>`).
    pub sandbox: PathBuf,
    /// That namespace's cookie.
    pub netns_cookie: u64,
}

/// An overlay endpoint's veth to attach to, in its network's sandbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SandboxTarget {
    pub target: Target,
    pub sandbox: PathBuf,
    pub netns_cookie: u64,
}

/// Where a macvlan endpoint's child interface lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MacvlanEndpoint {
    /// A process in the container's network namespace (its init).
    pub pid: u32,
    /// That namespace's cookie.
    pub netns_cookie: u64,
    /// The parent's ifindex on the host.
    pub parent_ifindex: u32,
}

/// A macvlan child to attach to, in its container's namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChildTarget {
    pub target: Target,
    pub pid: u32,
    pub netns_cookie: u64,
}

/// Everything the agent derives its plan from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostState {
    /// `agent --audit`: every network whose policy denies something is
    /// audited instead of enforced. Not derived from Docker: the agent sets
    /// it from its flag.
    pub audit_all: bool,
    pub networks: Vec<NetworkState>,
    pub endpoints: Vec<ContainerInterface>,
    /// Every (container, network) attachment to an overlay network that
    /// Docker reports, whether or not its sandbox veth was found: what
    /// decides whether a container's docker_gwbridge leg is held.
    pub overlay_members: Vec<(String, String)>,
    /// Every address of the host's own interfaces.
    pub host_addrs: Vec<IpAddr>,
    /// Every interface enslaved to a network's bridge. Those that are no
    /// endpoint's veth (a container Docker has not named yet, or one whose
    /// veth could not be resolved) are guarded with their network's
    /// network-wide policy.
    pub bridge_ports: Vec<BridgePort>,
    /// macvlan children that got `macvlan_child` as they appeared in the
    /// host namespace, before Docker moved them into their containers
    /// (provisional links, wherever the device is now). Those that no
    /// endpoint accounts for keep their network's network-wide policy.
    pub provisional_children: Vec<ProvisionalChild>,
    /// Every veth enslaved to a bridge in an overlay network's sandbox.
    /// Those that are no endpoint's (a container Docker has not named yet)
    /// are guarded with their network's network-wide policy.
    pub sandbox_ports: Vec<SandboxPort>,
}

/// A veth enslaved to a bridge (`br0`, …) in an overlay network's sandbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SandboxPort {
    /// Name of the network (a key into [`HostState::networks`]).
    pub network: String,
    pub sandbox: PathBuf,
    pub netns_cookie: u64,
    pub ifname: String,
    /// Its ifindex in the sandbox.
    pub ifindex: u32,
}

/// A macvlan child with a provisional link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProvisionalChild {
    /// Its parent's ifindex on the host.
    pub parent: u32,
    /// Its ifindex now, in whatever namespace it is (the policy's key).
    pub ifindex: u32,
}

/// An interface enslaved to a network's bridge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BridgePort {
    /// Name of the network (a key into [`HostState::networks`]).
    pub network: String,
    pub ifname: String,
    pub ifindex: u32,
}

/// An interface the programs go on, and what it is, for the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub ifname: String,
    pub ifindex: u32,
    /// e.g. `bridge of network backend` or `veth of web on backend`.
    pub what: String,
}

/// What the datapath should hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Policies for bridges and veths, keyed by their ifindex.
    pub specs: Vec<InterfacePolicy>,
    /// Bridges that get the network-wide programs.
    pub bridges: Vec<Target>,
    /// Veths that get the endpoint programs.
    pub veths: Vec<Target>,
    /// macvlan parents that get `macvlan_parent`.
    pub macvlan_parents: Vec<Target>,
    /// macvlan children that get `macvlan_child`.
    pub macvlan_children: Vec<ChildTarget>,
    /// Which endpoint owns which MAC on which parent.
    pub macvlan_ports: Vec<(MacvlanPortKey, MacvlanPort)>,
    /// Overlay endpoints' veths that get the endpoint programs, in their
    /// sandboxes.
    pub sandbox_veths: Vec<SandboxTarget>,
    /// Interfaces that get the uplink shield. Not derived from Docker: the
    /// agent fills it in from `--uplink` before reconciling.
    pub uplinks: Vec<Target>,
    pub host_addrs: Vec<IpAddr>,
    /// Subnets of the networks whose egress is denied: the uplink shield
    /// drops inbound packets aimed at them (and packets claiming to come
    /// from them).
    pub protected: Vec<Cidr>,
    /// Labels netwatch refused, with what it did instead.
    pub label_problems: Vec<LabelProblem>,
    /// Published ports whose clients the plan drops: a container that
    /// publishes ports on a network that denies egress (Docker publishes
    /// through a non-internal network; the answers to clients outside it
    /// are egress), one line each.
    pub published_dropped: Vec<String>,
    /// Interfaces left out of the plan, with why (reported as failed).
    pub refused: Vec<(Target, String)>,
}

/// Derives the plan for a snapshot. Endpoints whose network is unknown are
/// left out (the next snapshot will have it).
pub fn plan(state: &HostState) -> Plan {
    let mut out = Plan {
        host_addrs: state.host_addrs.clone(),
        ..Plan::default()
    };
    let mut problems = Vec::new();
    let policies: HashMap<&str, NetworkLabels> = state
        .networks
        .iter()
        .map(|n| {
            let asked = network_labels(&n.name, n.internal, &n.labels, &mut problems)
                .with_agent_audit(state.audit_all);
            (n.name.as_str(), asked)
        })
        .collect();
    for network in &state.networks {
        let asked = &policies[network.name.as_str()];
        let network_wide = |ifname: &str, ifindex: u32, what: String| {
            let mut policy = network_policy(network, asked, ifindex, policy_flags::NETWORK_WIDE);
            let published: Vec<PublishedRule> = if network.bridge.is_some() {
                state
                    .endpoints
                    .iter()
                    .filter(|e| e.network == network.name)
                    .flat_map(|e| admitted_published(e, network, asked))
                    .collect()
            } else {
                Vec::new()
            };
            if !published.is_empty() {
                policy.flags |= policy_flags::PUBLISHED;
            }
            // The bridge judges the routed traffic of every container of
            // the network after (egress) or before (ingress) its veth, so
            // it allows what any of them may: each veth still holds its
            // own container to its own rules.
            //
            // Likewise it records, and does not drop, when one of them is
            // audited by its own label (`netwatch.egress=audit` on the
            // container): the audited container's routed traffic passes
            // its veth and must pass the bridge too, while every other
            // container's veth still drops what its policy denies.
            let mut allow = asked.allow.clone();
            if network.bridge.is_some() {
                for endpoint in state.endpoints.iter().filter(|e| e.network == network.name) {
                    let own = container_labels(
                        &endpoint.container,
                        &endpoint.container_labels,
                        &mut Vec::new(),
                    );
                    if own.audits_on(asked, network.internal) {
                        policy.flags |= policy_flags::AUDIT;
                    }
                    allow.extend(own.allow);
                }
            }
            let spec = InterfacePolicy {
                ifindex,
                policy,
                networks: network.subnets.clone(),
                published,
                allow: fit_port_rules(allow),
            };
            let target = Target {
                ifname: ifname.to_owned(),
                ifindex,
                what,
            };
            (spec, target)
        };
        if let Some((ifname, ifindex)) = &network.macvlan_parent {
            // The parent's policy names the network in drop records and
            // says whether frames of unknown MACs from containers are
            // dropped there. The uplink shield does not protect a macvlan
            // network's subnet: it is the LAN's, and LAN hosts in it are
            // inside the network.
            let what = format!("parent of macvlan network {}", network.name);
            let (spec, target) = network_wide(ifname, *ifindex, what);
            out.specs.push(spec);
            out.macvlan_parents.push(target);
            continue;
        }
        if network.driver == "overlay" {
            // No network-wide hook, and no shield on the uplink: overlay
            // subnets are not routed by the host (nothing arriving on an
            // uplink reaches them through it), and a swarm's default pool
            // (10.0.0.0/8) often overlaps the LAN, where the shield would
            // drop real neighbours' traffic.
            continue;
        }
        // The uplink shield has no audit: an audited network's subnets are
        // not shielded.
        if asked.deny_egress && !asked.audit {
            out.protected.extend(network.subnets.iter().copied());
        }
        if let (true, Some((ifname, ifindex))) = (asked.deny_egress, &network.bridge) {
            let what = format!("bridge of network {}", network.name);
            let (spec, target) = network_wide(ifname, *ifindex, what);
            out.specs.push(spec);
            out.bridges.push(target);
        }
    }
    let held_legs = held_gateway_legs(state, &policies);
    let mut container_rules: HashMap<&str, ContainerLabels> = HashMap::new();
    let mut children: Vec<PlannedChild> = Vec::new();
    let mut sandboxed: Vec<PlannedSandbox> = Vec::new();
    for endpoint in &state.endpoints {
        let Some(network) = state.networks.iter().find(|n| n.name == endpoint.network) else {
            continue;
        };
        let overlay = match (&endpoint.overlay, network.driver == "overlay") {
            (Some(overlay), true) => Some(overlay),
            (None, false) => None,
            // An overlay endpoint without its sandbox (or a sandbox veth of
            // another driver's network): nothing sound to attach.
            _ => continue,
        };
        let asked = &policies[network.name.as_str()];
        let held = held_legs
            .get(endpoint.container.as_str())
            .filter(|_| network.is_gateway_bridge());
        let own_rules = container_rules
            .entry(endpoint.container.as_str())
            .or_insert_with(|| {
                container_labels(
                    &endpoint.container,
                    &endpoint.container_labels,
                    &mut problems,
                )
            });
        let own_audit = own_rules.audits_on(asked, network.internal);
        if own_rules.audit && network.internal && !asked.audit {
            problems.push(container_audit_refused(&endpoint.container, &network.name));
        }
        let macvlan = match (&endpoint.macvlan, &network.macvlan_parent) {
            (Some(child), Some((_, parent))) if child.parent_ifindex == *parent => Some(child),
            (None, None) => None,
            // A macvlan endpoint whose parent is not its network's (or a
            // network whose parent is gone): nothing sound to attach.
            _ => continue,
        };
        let extra = if macvlan.is_some() {
            policy_flags::MACVLAN
        } else {
            0
        };
        let mut policy = network_policy(network, asked, endpoint.host_ifindex, extra);
        policy.mac = endpoint.mac;
        if let Some(child) = macvlan {
            policy.parent = child.parent_ifindex;
        }
        if let Some(v4) = endpoint.ipv4 {
            policy.ipv4 = v4.octets();
        } else {
            policy.flags &= !policy_flags::HAS_IPV4;
        }
        if let Some(v6) = endpoint.ipv6 {
            policy.ipv6 = v6.octets();
        } else {
            policy.flags &= !policy_flags::HAS_IPV6;
        }
        if own_audit {
            policy.flags |= policy_flags::AUDIT;
        }
        let mut allow = asked.allow.clone();
        allow.extend(own_rules.allow.iter().copied());
        let mut networks = network.subnets.clone();
        if let Some(held) = held {
            // The leg is the way out of an overlay that denies egress:
            // every destination is outside that overlay.
            policy.flags |= policy_flags::ENFORCE;
            if held.audited_by_network || (own_rules.audit && !held.any_internal) {
                policy.flags |= policy_flags::AUDIT;
            }
            networks.clear();
            allow.extend(held.allow.iter().copied());
        }
        let published = if held.is_none() {
            admitted_published(endpoint, network, asked)
        } else {
            Vec::new()
        };
        if !published.is_empty() {
            policy.flags |= policy_flags::PUBLISHED;
        }
        let mode = match held {
            Some(held) if policy.has(policy_flags::AUDIT) => format!(
                "audited: the way out of {}, nothing dropped",
                held.overlays.join(", ")
            ),
            Some(held) => format!("enforced: the way out of {}", held.overlays.join(", ")),
            None if asked.audit => "audited: nothing dropped".to_owned(),
            None if own_audit => {
                "audited by its label netwatch.egress=audit: nothing dropped".to_owned()
            }
            None if asked.deny_egress && !published.is_empty() => {
                "enforced, published ports open".to_owned()
            }
            None if asked.deny_egress => "enforced".to_owned(),
            None => "observed".to_owned(),
        };
        let spec = InterfacePolicy {
            ifindex: endpoint.host_ifindex,
            policy,
            networks,
            published,
            allow,
        };
        if let Some(overlay) = overlay {
            sandboxed.push(PlannedSandbox {
                target: SandboxTarget {
                    target: Target {
                        ifname: endpoint.host_ifname.clone(),
                        ifindex: endpoint.host_ifindex,
                        what: format!(
                            "sandbox veth {} of {} on {} ({mode})",
                            endpoint.host_ifname, endpoint.container, network.name
                        ),
                    },
                    sandbox: overlay.sandbox.clone(),
                    netns_cookie: overlay.netns_cookie,
                },
                spec,
            });
            continue;
        }
        match macvlan {
            Some(child) => children.push(PlannedChild {
                port: (
                    MacvlanPortKey {
                        parent: child.parent_ifindex,
                        mac: endpoint.mac,
                        _pad: [0; 2],
                    },
                    MacvlanPort {
                        endpoint: endpoint.host_ifindex,
                        _pad: 0,
                        netns_cookie: child.netns_cookie,
                    },
                ),
                target: ChildTarget {
                    target: Target {
                        ifname: endpoint.host_ifname.clone(),
                        ifindex: endpoint.host_ifindex,
                        what: format!(
                            "macvlan {} of {} on {} ({mode})",
                            endpoint.host_ifname, endpoint.container, network.name
                        ),
                    },
                    pid: child.pid,
                    netns_cookie: child.netns_cookie,
                },
                spec,
            }),
            None => {
                out.specs.push(spec);
                out.veths.push(Target {
                    ifname: endpoint.host_ifname.clone(),
                    ifindex: endpoint.host_ifindex,
                    what: format!(
                        "veth of {} on {} ({mode})",
                        endpoint.container, network.name
                    ),
                });
            }
        }
    }
    add_unnamed_ports(&mut out, state, &policies);
    out.label_problems = problems;
    out.published_dropped = published_dropped(state, &policies);
    sandboxed.extend(unnamed_sandbox_ports(state, &policies));
    add_namespaced(&mut out, children, sandboxed);
    add_provisional_children(&mut out, state, &policies);
    out
}

/// macvlan children attached as they appeared and not yet named by Docker
/// get their network's network-wide policy (flagged as macvlan, with their
/// parent), keyed by their ifindex now: a new container's child is judged
/// from its first frame, before its own MAC, addresses and labels replace
/// that. One whose number is already a planned child's is that child (its
/// own policy wins); one whose number is another interface's is refused,
/// as in [`add_namespaced`].
fn add_provisional_children(
    out: &mut Plan,
    state: &HostState,
    policies: &HashMap<&str, NetworkLabels>,
) {
    for child in &state.provisional_children {
        if out
            .macvlan_children
            .iter()
            .any(|c| c.target.ifindex == child.ifindex)
        {
            continue;
        }
        let Some(network) = state.networks.iter().find(|n| {
            n.macvlan_parent
                .as_ref()
                .is_some_and(|(_, p)| *p == child.parent)
        }) else {
            continue;
        };
        let what = format!(
            "new macvlan child of {}, no container named yet",
            network.name
        );
        if let Some(keeper) = out.specs.iter().find(|s| s.ifindex == child.ifindex) {
            let keeper = out
                .bridges
                .iter()
                .chain(&out.veths)
                .chain(&out.macvlan_parents)
                .chain(out.sandbox_veths.iter().map(|v| &v.target))
                .find(|t| t.ifindex == keeper.ifindex)
                .map_or_else(|| "another interface".to_owned(), |t| t.what.clone());
            out.refused.push((
                Target {
                    ifname: String::new(),
                    ifindex: child.ifindex,
                    what,
                },
                format!(
                    "its ifindex {} is also that of {keeper}; netwatch keys policies by \
                     ifindex, so it cannot guard both",
                    child.ifindex
                ),
            ));
            continue;
        }
        let asked = &policies[network.name.as_str()];
        let mut policy = network_policy(
            network,
            asked,
            child.ifindex,
            policy_flags::NETWORK_WIDE | policy_flags::MACVLAN,
        );
        policy.parent = child.parent;
        out.specs.push(InterfacePolicy {
            ifindex: child.ifindex,
            policy,
            networks: network.subnets.clone(),
            published: Vec::new(),
            allow: asked.allow.clone(),
        });
    }
}

/// The ports of a bridge that no endpoint accounts for get their network's
/// network-wide policy, keyed by their own ifindex: a veth Docker has just
/// enslaved is guarded before its container runs (sources must lie in the
/// network, as on the bridge; its container's own addresses and labels
/// replace that once Docker names it), and a port enslaved behind Docker's
/// back is no way around the network's policy.
fn add_unnamed_ports(out: &mut Plan, state: &HostState, policies: &HashMap<&str, NetworkLabels>) {
    for port in &state.bridge_ports {
        if out.veths.iter().any(|v| v.ifindex == port.ifindex)
            || state.endpoints.iter().any(|e| {
                e.macvlan.is_none() && e.overlay.is_none() && e.host_ifindex == port.ifindex
            })
        {
            continue;
        }
        let Some(network) = state
            .networks
            .iter()
            .find(|n| n.name == port.network && n.bridge.is_some())
        else {
            continue;
        };
        let asked = &policies[network.name.as_str()];
        let policy = network_policy(network, asked, port.ifindex, policy_flags::NETWORK_WIDE);
        out.specs.push(InterfacePolicy {
            ifindex: port.ifindex,
            policy,
            networks: network.subnets.clone(),
            published: Vec::new(),
            allow: asked.allow.clone(),
        });
        let mode = if asked.audit {
            "audited network-wide"
        } else if asked.deny_egress {
            "enforced network-wide"
        } else {
            "observed"
        };
        out.veths.push(Target {
            ifname: port.ifname.clone(),
            ifindex: port.ifindex,
            what: format!(
                "port {} of network {}'s bridge, no container named yet ({mode})",
                port.ifname, network.name
            ),
        });
    }
}

/// `allow` with the rules of any prefix that has more than a trie entry
/// holds ([`MAX_PORT_RULES`]) folded into one rule for any port and
/// protocol: for a bridge, whose list is the union of its containers' own,
/// where many containers reaching one address on different ports would
/// otherwise make the whole plan fail to compile. Each container's veth
/// still holds it to its exact rules.
fn fit_port_rules(mut allow: Vec<AllowRule>) -> Vec<AllowRule> {
    allow.sort_unstable();
    allow.dedup();
    let mut per_prefix: BTreeMap<Cidr, usize> = BTreeMap::new();
    for rule in &allow {
        *per_prefix.entry(rule.cidr).or_default() += 1;
    }
    let crowded: Vec<Cidr> = per_prefix
        .into_iter()
        .filter(|(_, count)| *count > MAX_PORT_RULES)
        .map(|(cidr, _)| cidr)
        .collect();
    allow.retain(|rule| !crowded.contains(&rule.cidr));
    allow.extend(crowded.into_iter().map(|cidr| AllowRule {
        cidr,
        proto: 0,
        port: 0,
    }));
    allow
}

/// The datapath's rules for the published ports of `endpoint` that its
/// network admits (`netwatch.ingress=published` on a bridge network; Docker
/// publishes on no other kind here), one per address of the endpoint. A port
/// bound to loopback only admits the host; one bound anywhere else admits
/// anyone. SCTP ports stay closed: the datapath reads the ports of TCP and
/// UDP only.
fn admitted_published(
    endpoint: &ContainerInterface,
    network: &NetworkState,
    asked: &NetworkLabels,
) -> Vec<PublishedRule> {
    if !asked.published_ingress
        || network.internal
        || network.bridge.is_none()
        || endpoint.macvlan.is_some()
        || endpoint.overlay.is_some()
    {
        return Vec::new();
    }
    let addrs: Vec<IpAddr> = endpoint
        .ipv4
        .map(IpAddr::from)
        .into_iter()
        .chain(endpoint.ipv6.map(IpAddr::from))
        .collect();
    let mut rules: Vec<PublishedRule> = endpoint
        .published
        .iter()
        .filter_map(|p| match p.protocol.as_str() {
            "tcp" => Some((IPPROTO_TCP, p)),
            "udp" => Some((IPPROTO_UDP, p)),
            _ => None,
        })
        .flat_map(|(proto, p)| {
            addrs.iter().map(move |&addr| PublishedRule {
                addr,
                proto,
                port: p.container_port,
                from_anywhere: !p.host_ip.is_loopback(),
            })
        })
        .collect();
    rules.sort_unstable();
    rules.dedup();
    rules
}

/// The published ports whose clients the plan drops: those of containers
/// attached to a non-internal network (Docker publishes through one) that
/// denies egress. Answers to a client outside the network leave through it.
fn published_dropped(state: &HostState, policies: &HashMap<&str, NetworkLabels>) -> Vec<String> {
    let mut dropped = Vec::new();
    for endpoint in state.endpoints.iter().filter(|e| !e.published.is_empty()) {
        let Some(network) = state.networks.iter().find(|n| n.name == endpoint.network) else {
            continue;
        };
        let asked = &policies[network.name.as_str()];
        if network.internal || !asked.deny_egress || asked.published_ingress {
            continue;
        }
        dropped.push(format!(
            "container {} publishes {} but network {} denies egress: clients outside {} get no \
             answer through it",
            endpoint.container,
            endpoint
                .published
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            network.name,
            network.name
        ));
    }
    dropped.sort();
    dropped.dedup();
    dropped
}

/// The veths in an overlay's sandbox that no endpoint accounts for, with
/// their network's network-wide policy, as [`add_unnamed_ports`] does for
/// a bridge's ports: a container's sandbox end is guarded from its
/// enslaving to `br0`, before its container runs. They come after the
/// endpoints' veths in [`add_namespaced`], so a number already claimed is
/// refused, not merged.
fn unnamed_sandbox_ports(
    state: &HostState,
    policies: &HashMap<&str, NetworkLabels>,
) -> Vec<PlannedSandbox> {
    let mut planned = Vec::new();
    for port in &state.sandbox_ports {
        if state.endpoints.iter().any(|e| {
            e.host_ifindex == port.ifindex
                && e.overlay
                    .as_ref()
                    .is_some_and(|o| o.netns_cookie == port.netns_cookie)
        }) {
            continue;
        }
        let Some(network) = state
            .networks
            .iter()
            .find(|n| n.name == port.network && n.driver == "overlay")
        else {
            continue;
        };
        let asked = &policies[network.name.as_str()];
        let policy = network_policy(network, asked, port.ifindex, policy_flags::NETWORK_WIDE);
        let mode = if asked.audit {
            "audited network-wide"
        } else if asked.deny_egress {
            "enforced network-wide"
        } else {
            "observed"
        };
        planned.push(PlannedSandbox {
            target: SandboxTarget {
                target: Target {
                    ifname: port.ifname.clone(),
                    ifindex: port.ifindex,
                    what: format!(
                        "sandbox veth {} of network {}, no container named yet ({mode})",
                        port.ifname, network.name
                    ),
                },
                sandbox: port.sandbox.clone(),
                netns_cookie: port.netns_cookie,
            },
            spec: InterfacePolicy {
                ifindex: port.ifindex,
                policy,
                networks: network.subnets.clone(),
                published: Vec::new(),
                allow: asked.allow.clone(),
            },
        });
    }
    planned
}

/// Why a container's `docker_gwbridge` leg is enforced: the overlays it is
/// the way out of that deny egress, and their allow-lists.
struct HeldLeg<'a> {
    overlays: Vec<&'a str>,
    allow: Vec<AllowRule>,
    /// Every one of the overlays is audited (`netwatch.egress=audit` or
    /// `agent --audit`): the leg records, and does not drop, too.
    audited_by_network: bool,
    /// One of the overlays is internal: no container label may audit the
    /// leg then.
    any_internal: bool,
}

/// The containers on an overlay network that denies egress, by name: their
/// `docker_gwbridge` leg (their default route) must deny it too, or the
/// overlay's "no egress" holds only towards the overlay itself.
fn held_gateway_legs<'a>(
    state: &'a HostState,
    policies: &HashMap<&str, NetworkLabels>,
) -> HashMap<&'a str, HeldLeg<'a>> {
    let mut held: HashMap<&str, HeldLeg> = HashMap::new();
    for (container, network) in &state.overlay_members {
        let Some(network) = state.networks.iter().find(|n| n.name == *network) else {
            continue;
        };
        let asked = &policies[network.name.as_str()];
        if network.driver != "overlay" || !asked.deny_egress {
            continue;
        }
        let leg = held.entry(container.as_str()).or_insert_with(|| HeldLeg {
            overlays: Vec::new(),
            allow: Vec::new(),
            audited_by_network: true,
            any_internal: false,
        });
        leg.overlays.push(network.name.as_str());
        leg.allow.extend(asked.allow.iter().copied());
        leg.audited_by_network &= asked.audit;
        leg.any_internal |= network.internal;
    }
    held
}

/// Policies are keyed by ifindex, and the ifindex of a macvlan child or of
/// an overlay endpoint's sandbox veth is its namespace's: it may equal a
/// host interface's or another namespace's interface's (the kernel
/// renumbers an interface moved into a namespace that already uses its
/// number). Host interfaces keep their key, then children, then sandbox
/// veths, in order; one whose key is taken is left out of the plan (spec,
/// target and MAC entry) and refused, loudly.
fn add_namespaced(plan: &mut Plan, children: Vec<PlannedChild>, sandboxed: Vec<PlannedSandbox>) {
    let mut owners: HashMap<u32, String> = plan
        .bridges
        .iter()
        .chain(&plan.veths)
        .chain(&plan.macvlan_parents)
        .map(|t| (t.ifindex, t.what.clone()))
        .collect();
    let mut claim = |plan: &mut Plan, target: &Target, place: &str| {
        let ifindex = target.ifindex;
        if let Some(keeper) = owners.get(&ifindex) {
            plan.refused.push((
                target.clone(),
                format!(
                    "its ifindex {ifindex} ({place}) is also that of {keeper}; netwatch keys \
                     policies by ifindex, so it cannot guard both"
                ),
            ));
            return false;
        }
        owners.insert(ifindex, target.what.clone());
        true
    };
    for child in children {
        if claim(plan, &child.target.target, "inside the container") {
            plan.specs.push(child.spec);
            plan.macvlan_ports.push(child.port);
            plan.macvlan_children.push(child.target);
        }
    }
    for veth in sandboxed {
        if claim(plan, &veth.target.target, "inside the overlay's sandbox") {
            plan.specs.push(veth.spec);
            plan.sandbox_veths.push(veth.target);
        }
    }
}

/// A macvlan child's part of the plan, before its ifindex is known to be
/// free.
struct PlannedChild {
    target: ChildTarget,
    spec: InterfacePolicy,
    port: (MacvlanPortKey, MacvlanPort),
}

/// An overlay endpoint's part of the plan, before its ifindex is known to
/// be free.
struct PlannedSandbox {
    target: SandboxTarget,
    spec: InterfacePolicy,
}

/// The part of a policy that comes from the network: enforcement, gateways,
/// which families it has.
fn network_policy(
    network: &NetworkState,
    asked: &NetworkLabels,
    scope: u32,
    extra_flags: u32,
) -> EndpointPolicy {
    let mut policy = EndpointPolicy {
        flags: extra_flags,
        scope,
        ..EndpointPolicy::default()
    };
    if asked.deny_egress {
        policy.flags |= policy_flags::ENFORCE;
    }
    if asked.audit {
        policy.flags |= policy_flags::AUDIT;
    }
    if asked.gateway_access {
        policy.flags |= policy_flags::GATEWAY_ACCESS;
    }
    if network.subnets.iter().any(Cidr::is_ipv4) {
        policy.flags |= policy_flags::HAS_IPV4;
    }
    if network.subnets.iter().any(|c| !c.is_ipv4()) {
        policy.flags |= policy_flags::HAS_IPV6;
    }
    for gateway in &network.gateways {
        match gateway {
            IpAddr::V4(v4) => policy.gateway_v4 = v4.octets(),
            IpAddr::V6(v6) => policy.gateway_v6 = v6.octets(),
        }
    }
    policy
}

#[cfg(test)]
mod tests {
    use super::*;

    fn network(
        name: &str,
        internal: bool,
        bridge: (&str, u32),
        subnet: &str,
        gw: &str,
    ) -> NetworkState {
        NetworkState {
            name: name.into(),
            driver: "bridge".into(),
            internal,
            bridge: Some((bridge.0.into(), bridge.1)),
            macvlan_parent: None,
            overlay_sandbox: None,
            subnets: vec![subnet.parse().unwrap()],
            gateways: vec![gw.parse().unwrap()],
            labels: BTreeMap::new(),
        }
    }

    fn endpoint(container: &str, network: &str, veth: (&str, u32), ip: &str) -> ContainerInterface {
        ContainerInterface {
            container: container.into(),
            container_id: String::new(),
            network: network.into(),
            host_ifname: veth.0.into(),
            host_ifindex: veth.1,
            ipv4: Some(ip.parse().unwrap()),
            ipv6: None,
            mac: [2, 0x42, 0, 0, 0, veth.1 as u8],
            container_labels: BTreeMap::new(),
            published: Vec::new(),
            macvlan: None,
            overlay: None,
        }
    }

    fn state() -> HostState {
        HostState {
            audit_all: false,
            networks: vec![
                network(
                    "frontend",
                    false,
                    ("br-front", 10),
                    "172.20.0.0/16",
                    "172.20.0.1",
                ),
                network(
                    "backend",
                    true,
                    ("br-back", 11),
                    "172.21.0.0/16",
                    "172.21.0.1",
                ),
            ],
            endpoints: vec![
                endpoint("web", "frontend", ("vethweb", 20), "172.20.0.2"),
                endpoint("api", "frontend", ("vethapi1", 21), "172.20.0.3"),
                endpoint("api", "backend", ("vethapi2", 22), "172.21.0.3"),
                endpoint("ghost", "gone", ("vethghost", 23), "10.0.0.9"),
            ],
            host_addrs: vec!["10.99.0.1".parse().unwrap()],
            overlay_members: Vec::new(),
            bridge_ports: Vec::new(),
            provisional_children: Vec::new(),
            sandbox_ports: Vec::new(),
        }
    }

    #[test]
    fn labels_enforce_a_normal_network_open_the_gateway_and_add_allow_rules() {
        let mut state = state();
        state.networks[0].labels = BTreeMap::from([
            ("netwatch.egress".to_string(), "deny".to_string()),
            (
                "netwatch.allow".to_string(),
                "203.0.113.0/24:443/tcp".to_string(),
            ),
        ]);
        state.networks[1].labels =
            BTreeMap::from([("netwatch.gateway".to_string(), "allow".to_string())]);
        // Every endpoint of a container carries the container's labels.
        for endpoint in &mut state.endpoints[1..=2] {
            endpoint.container_labels = BTreeMap::from([(
                "netwatch.allow".to_string(),
                "198.51.100.7:53/udp, nonsense".to_string(),
            )]);
        }
        let plan = plan(&state);
        let web = plan.specs.iter().find(|s| s.ifindex == 20).unwrap();
        assert!(web.policy.has(policy_flags::ENFORCE));
        assert_eq!(web.allow.len(), 1);
        assert!(
            plan.bridges.iter().any(|t| t.ifindex == 10),
            "a denied network's bridge is held too"
        );
        let api_backend = plan.specs.iter().find(|s| s.ifindex == 22).unwrap();
        assert!(api_backend.policy.has(policy_flags::GATEWAY_ACCESS));
        assert_eq!(api_backend.allow.len(), 1, "the container's good rule");
        let api_front = plan.specs.iter().find(|s| s.ifindex == 21).unwrap();
        assert_eq!(
            api_front.allow.len(),
            2,
            "network rule plus the container's rule"
        );
        assert_eq!(
            plan.label_problems.len(),
            1,
            "the bad entry, reported once: {:?}",
            plan.label_problems
        );
        crate::policy::compile(&plan.specs, &plan.host_addrs).expect("the plan compiles");
    }

    #[test]
    fn a_bridge_port_docker_has_not_named_gets_its_networks_network_wide_policy() {
        let mut state = state();
        let port = |network: &str, ifname: &str, ifindex| BridgePort {
            network: network.into(),
            ifname: ifname.into(),
            ifindex,
        };
        state.bridge_ports = vec![
            // api's own veth: planned as its endpoint, not twice.
            port("backend", "vethapi2", 22),
            // A veth enslaved before Docker named its container.
            port("backend", "vethnew", 30),
            port("frontend", "vethnew2", 31),
            // A port of a bridge no managed network has.
            port("elsewhere", "vethx", 32),
        ];
        let plan = plan(&state);
        let api = plan.specs.iter().filter(|s| s.ifindex == 22).count();
        assert_eq!(api, 1, "the endpoint's own policy only");
        assert!(
            !plan.specs[..]
                .iter()
                .find(|s| s.ifindex == 22)
                .unwrap()
                .policy
                .has(policy_flags::NETWORK_WIDE)
        );
        let new = plan.specs.iter().find(|s| s.ifindex == 30).unwrap();
        assert!(
            new.policy
                .has(policy_flags::NETWORK_WIDE | policy_flags::ENFORCE),
            "sources must lie in the network, and what leaves it is dropped"
        );
        assert_eq!(new.policy.scope, 30);
        assert_eq!(new.policy.gateway_v4, [172, 21, 0, 1]);
        assert_eq!(new.networks, vec!["172.21.0.0/16".parse().unwrap()]);
        let observed = plan.specs.iter().find(|s| s.ifindex == 31).unwrap();
        assert!(!observed.policy.has(policy_flags::ENFORCE));
        assert!(plan.veths.iter().any(|t| t.ifindex == 30
            && t.what
                == "port vethnew of network backend's bridge, no container named yet \
                          (enforced network-wide)"));
        assert!(!plan.specs.iter().any(|s| s.ifindex == 32));
        crate::policy::compile(&plan.specs, &plan.host_addrs).expect("the plan compiles");
    }

    #[test]
    fn internal_networks_get_a_bridge_policy_and_enforced_endpoints() {
        let plan = plan(&state());
        assert_eq!(plan.bridges.len(), 1);
        assert_eq!(
            (plan.bridges[0].ifname.as_str(), plan.bridges[0].ifindex),
            ("br-back", 11)
        );
        assert_eq!(plan.bridges[0].what, "bridge of network backend");
        assert_eq!(
            plan.protected,
            vec!["172.21.0.0/16".parse().unwrap()],
            "only the internal network's subnet is shielded on the uplink"
        );
        let bridge = plan.specs.iter().find(|s| s.ifindex == 11).unwrap();
        assert!(
            bridge
                .policy
                .has(policy_flags::NETWORK_WIDE | policy_flags::ENFORCE)
        );
        assert_eq!(bridge.policy.scope, 11);
        assert_eq!(bridge.policy.gateway_v4, [172, 21, 0, 1]);
        let api_backend = plan.specs.iter().find(|s| s.ifindex == 22).unwrap();
        assert!(api_backend.policy.has(policy_flags::ENFORCE));
        assert!(!api_backend.policy.has(policy_flags::NETWORK_WIDE));
        assert_eq!(api_backend.policy.ipv4, [172, 21, 0, 3]);
        assert_eq!(api_backend.policy.mac, [2, 0x42, 0, 0, 0, 22]);
        assert!(api_backend.policy.has(policy_flags::HAS_IPV4));
        assert!(!api_backend.policy.has(policy_flags::HAS_IPV6));
    }

    #[test]
    fn endpoints_of_normal_networks_are_observed_not_enforced() {
        let plan = plan(&state());
        for ifindex in [20, 21] {
            let spec = plan.specs.iter().find(|s| s.ifindex == ifindex).unwrap();
            assert_eq!(spec.policy.flags & policy_flags::ENFORCE, 0);
        }
        assert!(!plan.bridges.iter().any(|t| t.ifindex == 10));
    }

    #[test]
    fn a_multi_homed_container_keeps_each_networks_rules_on_that_networks_veth() {
        let plan = plan(&state());
        let front = plan.specs.iter().find(|s| s.ifindex == 21).unwrap();
        let back = plan.specs.iter().find(|s| s.ifindex == 22).unwrap();
        assert_eq!(front.networks, vec!["172.20.0.0/16".parse().unwrap()]);
        assert_eq!(back.networks, vec!["172.21.0.0/16".parse().unwrap()]);
        assert_ne!(front.policy.scope, back.policy.scope);
    }

    #[test]
    fn endpoints_of_unknown_networks_are_left_out_and_the_plan_compiles() {
        let plan = plan(&state());
        assert!(!plan.veths.iter().any(|t| t.ifindex == 23));
        let api = plan.veths.iter().find(|t| t.ifindex == 22).unwrap();
        assert_eq!(api.what, "veth of api on backend (enforced)");
        assert_eq!(plan.veths.len(), 3);
        crate::policy::compile(&plan.specs, &plan.host_addrs).expect("the plan compiles");
    }

    /// `lan`, an internal macvlan network on parent nwlan0 (ifindex 60),
    /// with children of `printer` (ifindex 61 in its namespace) and `scanner`
    /// (ifindex `scanner_ifindex` in its own).
    fn macvlan_state(scanner_ifindex: u32) -> HostState {
        let mut lan = network("lan", true, ("unused", 0), "198.18.60.0/24", "198.18.60.1");
        lan.bridge = None;
        lan.driver = "macvlan".into();
        lan.macvlan_parent = Some(("nwlan0".into(), 60));
        let child = |container: &str, ifindex: u32, netns: u64, ip: &str| ContainerInterface {
            host_ifname: "eth0".into(),
            macvlan: Some(MacvlanEndpoint {
                pid: 1000 + ifindex,
                netns_cookie: netns,
                parent_ifindex: 60,
            }),
            ..endpoint(container, "lan", ("eth0", ifindex), ip)
        };
        let mut state = state();
        state.networks.push(lan);
        state.endpoints.retain(|e| e.network != "gone");
        state
            .endpoints
            .push(child("printer", 61, 9001, "198.18.60.2"));
        state
            .endpoints
            .push(child("scanner", scanner_ifindex, 9002, "198.18.60.3"));
        state
    }

    #[test]
    fn a_macvlan_network_gets_its_parent_its_children_and_their_macs() {
        let plan = plan(&macvlan_state(62));
        assert_eq!(plan.macvlan_parents.len(), 1);
        assert_eq!(plan.macvlan_parents[0].ifindex, 60);
        assert!(plan.bridges.iter().all(|b| b.ifindex != 60));
        let parent = plan.specs.iter().find(|s| s.ifindex == 60).unwrap();
        assert!(
            parent
                .policy
                .has(policy_flags::NETWORK_WIDE | policy_flags::ENFORCE)
        );
        let children: Vec<(u32, u64)> = plan
            .macvlan_children
            .iter()
            .map(|c| (c.target.ifindex, c.netns_cookie))
            .collect();
        assert_eq!(children, [(61, 9001), (62, 9002)]);
        let printer = plan.specs.iter().find(|s| s.ifindex == 61).unwrap();
        assert!(
            printer
                .policy
                .has(policy_flags::MACVLAN | policy_flags::ENFORCE)
        );
        assert_eq!(printer.policy.parent, 60);
        assert_eq!(plan.macvlan_ports.len(), 2);
        let (key, port) = plan.macvlan_ports[0];
        assert_eq!((key.parent, key.mac), (60, [2, 0x42, 0, 0, 0, 61]));
        assert_eq!((port.endpoint, port.netns_cookie), (61, 9001));
        assert!(
            !plan.protected.contains(&"198.18.60.0/24".parse().unwrap()),
            "a macvlan subnet is the LAN's: the uplink shield leaves it alone"
        );
        assert!(plan.refused.is_empty());
        crate::policy::compile(&plan.specs, &plan.host_addrs).expect("the plan compiles");
    }

    #[test]
    fn a_macvlan_child_whose_ifindex_is_taken_is_refused_not_merged() {
        // scanner's child is ifindex 22 in its namespace: api's host veth.
        let plan = plan(&macvlan_state(22));
        assert_eq!(plan.macvlan_children.len(), 1, "printer only");
        assert_eq!(plan.macvlan_ports.len(), 1);
        assert_eq!(plan.refused.len(), 1);
        let (target, why) = &plan.refused[0];
        assert_eq!(target.what, "macvlan eth0 of scanner on lan (enforced)");
        assert!(
            why.contains("(inside the container) is also that of veth of api on backend"),
            "{why}"
        );
        let api = plan.specs.iter().filter(|s| s.ifindex == 22).count();
        assert_eq!(api, 1, "the veth keeps its policy");
        crate::policy::compile(&plan.specs, &plan.host_addrs).expect("the plan compiles");
    }

    #[test]
    fn a_new_macvlan_child_no_container_accounts_for_gets_the_networks_policy() {
        let mut state = macvlan_state(62);
        state.provisional_children = vec![
            // not named yet
            ProvisionalChild {
                parent: 60,
                ifindex: 63,
            },
            // printer's child: its own policy stands
            ProvisionalChild {
                parent: 60,
                ifindex: 61,
            },
            // no such parent among the networks
            ProvisionalChild {
                parent: 99,
                ifindex: 64,
            },
        ];
        let plan = plan(&state);
        let new = plan.specs.iter().find(|s| s.ifindex == 63).unwrap();
        assert!(
            new.policy
                .has(policy_flags::NETWORK_WIDE | policy_flags::MACVLAN | policy_flags::ENFORCE)
        );
        assert_eq!((new.policy.parent, new.policy.scope), (60, 63));
        assert_eq!(new.policy.gateway_v4, [198, 18, 60, 1]);
        assert_eq!(new.networks, vec!["198.18.60.0/24".parse().unwrap()]);
        let printer: Vec<_> = plan.specs.iter().filter(|s| s.ifindex == 61).collect();
        assert_eq!(printer.len(), 1);
        assert!(!printer[0].policy.has(policy_flags::NETWORK_WIDE));
        assert_eq!(printer[0].policy.mac, [2, 0x42, 0, 0, 0, 61]);
        assert!(!plan.specs.iter().any(|s| s.ifindex == 64));
        assert!(plan.refused.is_empty(), "{:?}", plan.refused);
        crate::policy::compile(&plan.specs, &plan.host_addrs).expect("the plan compiles");
    }

    #[test]
    fn a_new_macvlan_child_whose_number_is_taken_is_refused_not_merged() {
        let mut state = macvlan_state(62);
        // api's host veth is ifindex 22.
        state.provisional_children = vec![ProvisionalChild {
            parent: 60,
            ifindex: 22,
        }];
        let plan = plan(&state);
        let api: Vec<_> = plan.specs.iter().filter(|s| s.ifindex == 22).collect();
        assert_eq!(api.len(), 1);
        assert!(
            !api[0].policy.has(policy_flags::MACVLAN),
            "the veth keeps its policy"
        );
        assert_eq!(plan.refused.len(), 1);
        let (target, why) = &plan.refused[0];
        assert_eq!(
            target.what,
            "new macvlan child of lan, no container named yet"
        );
        assert!(
            why.contains("is also that of veth of api on backend"),
            "{why}"
        );
    }

    /// `ovl` (an overlay, `ovl_labels` on it) with `web` in sandbox 8001
    /// (veth 251), `ovl2` (an overlay denying nothing) with `db` in
    /// sandbox 8002 (veth 252), and docker_gwbridge (bridge 50) carrying
    /// both containers' legs (veths 253 and 254).
    fn overlay_state(ovl_labels: &[(&str, &str)]) -> HostState {
        let overlay = |name: &str, subnet: &str, gw: &str| NetworkState {
            driver: "overlay".into(),
            bridge: None,
            ..network(name, false, ("unused", 0), subnet, gw)
        };
        let mut ovl = overlay("ovl", "198.18.70.0/24", "198.18.70.1");
        ovl.labels = ovl_labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let in_sandbox = |container: &str, network: &str, ifindex: u32, netns: u64, ip: &str| {
            ContainerInterface {
                host_ifname: format!("veth{}", ifindex - 250),
                overlay: Some(OverlayEndpoint {
                    sandbox: format!("/run/docker/netns/1-{network}").into(),
                    netns_cookie: netns,
                }),
                ..endpoint(container, network, ("unused", ifindex), ip)
            }
        };
        let mut state = state();
        state.endpoints.retain(|e| e.network != "gone");
        state.networks.extend([
            ovl,
            overlay("ovl2", "198.18.72.0/24", "198.18.72.1"),
            network(
                "docker_gwbridge",
                false,
                ("docker_gwbridge", 50),
                "198.18.80.0/24",
                "198.18.80.1",
            ),
        ]);
        state.endpoints.extend([
            in_sandbox("web", "ovl", 251, 8001, "198.18.70.2"),
            in_sandbox("db", "ovl2", 252, 8002, "198.18.72.2"),
            endpoint("web", "docker_gwbridge", ("vethweb", 253), "198.18.80.3"),
            endpoint("db", "docker_gwbridge", ("vethdb", 254), "198.18.80.4"),
        ]);
        state.overlay_members = vec![("web".into(), "ovl".into()), ("db".into(), "ovl2".into())];
        state
    }

    #[test]
    fn an_overlay_endpoint_gets_both_programs_on_its_sandbox_veth_and_no_uplink_shield() {
        let plan = plan(&overlay_state(&[("netwatch.egress", "deny")]));
        let sandboxed: Vec<(u32, u64, &str)> = plan
            .sandbox_veths
            .iter()
            .map(|v| (v.target.ifindex, v.netns_cookie, v.target.what.as_str()))
            .collect();
        assert_eq!(
            sandboxed,
            [
                (251, 8001, "sandbox veth veth1 of web on ovl (enforced)"),
                (252, 8002, "sandbox veth veth2 of db on ovl2 (observed)"),
            ]
        );
        assert_eq!(
            plan.sandbox_veths[0].sandbox,
            PathBuf::from("/run/docker/netns/1-ovl")
        );
        let web = plan.specs.iter().find(|s| s.ifindex == 251).unwrap();
        assert!(web.policy.has(policy_flags::ENFORCE));
        assert!(!web.policy.has(policy_flags::NETWORK_WIDE));
        assert_eq!(web.networks, vec!["198.18.70.0/24".parse().unwrap()]);
        assert_eq!(web.policy.gateway_v4, [198, 18, 70, 1]);
        assert!(
            !plan.protected.contains(&"198.18.70.0/24".parse().unwrap()),
            "overlay subnets are not host-routed: no uplink shield for them"
        );
        assert!(
            plan.veths
                .iter()
                .all(|t| t.ifindex != 251 && t.ifindex != 252),
            "sandbox veths are not host veths"
        );
        assert!(plan.refused.is_empty(), "{:?}", plan.refused);
        crate::policy::compile(&plan.specs, &plan.host_addrs).expect("the plan compiles");
    }

    #[test]
    fn the_gateway_leg_of_a_container_on_an_egress_denied_overlay_denies_egress_too() {
        let mut state = overlay_state(&[
            ("netwatch.egress", "deny"),
            ("netwatch.allow", "198.51.100.7:53/udp"),
        ]);
        // web's sandbox veth was not found: its leg is held all the same.
        state.endpoints.retain(|e| e.host_ifindex != 251);
        let plan = plan(&state);
        let web_leg = plan.specs.iter().find(|s| s.ifindex == 253).unwrap();
        assert!(web_leg.policy.has(policy_flags::ENFORCE));
        assert!(
            web_leg.networks.is_empty(),
            "every destination of the leg is outside the overlay"
        );
        assert_eq!(web_leg.allow.len(), 1, "the overlay's allow-list");
        assert_eq!(web_leg.policy.ipv4, [198, 18, 80, 3]);
        let what = |ifindex: u32| {
            let target = plan.veths.iter().find(|t| t.ifindex == ifindex).unwrap();
            target.what.as_str()
        };
        assert_eq!(
            what(253),
            "veth of web on docker_gwbridge (enforced: the way out of ovl)"
        );
        let db_leg = plan.specs.iter().find(|s| s.ifindex == 254).unwrap();
        assert!(!db_leg.policy.has(policy_flags::ENFORCE));
        assert_eq!(db_leg.networks, vec!["198.18.80.0/24".parse().unwrap()]);
        assert_eq!(what(254), "veth of db on docker_gwbridge (observed)");
        crate::policy::compile(&plan.specs, &plan.host_addrs).expect("the plan compiles");
    }

    #[test]
    fn the_gateway_leg_of_an_audited_overlay_or_audited_container_records_instead_of_dropping() {
        let leg_flags = |state: &HostState| {
            let plan = plan(state);
            let leg = plan.specs.iter().find(|s| s.ifindex == 253).unwrap();
            let what = plan.veths.iter().find(|t| t.ifindex == 253).unwrap();
            (leg.policy.flags, what.what.clone())
        };
        let audited = policy_flags::ENFORCE | policy_flags::AUDIT;
        let (flags, what) = leg_flags(&overlay_state(&[("netwatch.egress", "audit")]));
        assert_eq!(flags & audited, audited, "the overlay is audited: {what}");
        assert_eq!(
            what,
            "veth of web on docker_gwbridge (audited: the way out of ovl, nothing dropped)"
        );
        let mut state = overlay_state(&[("netwatch.egress", "deny")]);
        for endpoint in state.endpoints.iter_mut().filter(|e| e.container == "web") {
            endpoint.container_labels =
                BTreeMap::from([("netwatch.egress".to_string(), "audit".to_string())]);
        }
        let (flags, what) = leg_flags(&state);
        assert_eq!(flags & audited, audited, "web audited by its label: {what}");
        let plan = plan(&state);
        let sandbox = plan.specs.iter().find(|s| s.ifindex == 251).unwrap();
        assert_eq!(
            sandbox.policy.flags & audited,
            audited,
            "and its sandbox veth"
        );
        let (flags, _) = leg_flags(&overlay_state(&[("netwatch.egress", "deny")]));
        assert_eq!(flags & audited, policy_flags::ENFORCE, "no label: enforced");
    }

    #[test]
    fn a_bridge_allows_what_any_of_its_containers_may_and_each_veth_only_its_own() {
        let mut state = state();
        state.networks[0].labels =
            BTreeMap::from([("netwatch.egress".to_string(), "deny".to_string())]);
        state.endpoints[0].container_labels = BTreeMap::from([(
            "netwatch.allow".to_string(),
            "203.0.113.7:443/tcp".to_string(),
        )]);
        let plan = plan(&state);
        let allow = |ifindex: u32| -> Vec<String> {
            plan.specs
                .iter()
                .find(|s| s.ifindex == ifindex)
                .map(|s| s.allow.iter().map(ToString::to_string).collect())
                .unwrap_or_else(|| panic!("no spec for {ifindex}"))
        };
        assert_eq!(allow(10), ["203.0.113.7:443/tcp"], "frontend's bridge");
        assert_eq!(allow(20), ["203.0.113.7:443/tcp"], "web's veth");
        assert!(allow(21).is_empty(), "api's veth: not web's rule");
    }

    #[test]
    fn many_containers_reaching_one_address_on_many_ports_still_compile() {
        let mut state = state();
        state.networks[0].labels =
            BTreeMap::from([("netwatch.egress".to_string(), "deny".to_string())]);
        let template = state.endpoints[0].clone();
        state.endpoints = (0..12u16)
            .map(|i| {
                let mut e = template.clone();
                e.container = format!("worker{i}");
                e.host_ifname = format!("vethw{i}");
                e.host_ifindex = 100 + u32::from(i);
                e.ipv4 = Some(std::net::Ipv4Addr::new(172, 20, 1, i as u8 + 2));
                e.container_labels = BTreeMap::from([(
                    "netwatch.allow".to_string(),
                    format!("203.0.113.7:{}/tcp", 8000 + i),
                )]);
                e
            })
            .collect();
        let plan = plan(&state);
        crate::policy::compile(&plan.specs, &plan.host_addrs).expect("the plan compiles");
        let bridge = plan.specs.iter().find(|s| s.ifindex == 10).expect("bridge");
        assert_eq!(
            bridge
                .allow
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["203.0.113.7"],
            "folded into one rule for the bridge"
        );
        let worker = plan
            .specs
            .iter()
            .find(|s| s.ifindex == 100)
            .expect("worker0");
        assert_eq!(worker.allow.len(), 1, "each veth keeps its exact rule");
    }

    /// The policy flags `plan` gives the interface `ifindex`.
    fn spec_flags(plan: &Plan, ifindex: u32) -> u32 {
        plan.specs
            .iter()
            .find(|s| s.ifindex == ifindex)
            .map(|s| s.policy.flags)
            .unwrap_or_else(|| panic!("no spec for {ifindex}"))
    }

    #[test]
    fn an_audited_network_is_judged_but_unshielded_and_agent_audit_covers_internal_ones() {
        let mut state = state();
        state.networks[0].labels =
            BTreeMap::from([("netwatch.egress".to_string(), "audit".to_string())]);
        let flags = spec_flags;
        let audited = policy_flags::ENFORCE | policy_flags::AUDIT;
        let labelled = plan(&state);
        assert_eq!(flags(&labelled, 20) & audited, audited, "web on frontend");
        assert_eq!(flags(&labelled, 10) & audited, audited, "frontend's bridge");
        assert_eq!(
            flags(&labelled, 22) & audited,
            policy_flags::ENFORCE,
            "internal backend"
        );
        let frontend: Cidr = "172.20.0.0/16".parse().unwrap();
        assert!(
            !labelled.protected.contains(&frontend),
            "the uplink shield has no audit: {:?}",
            labelled.protected
        );
        assert!(
            labelled
                .veths
                .iter()
                .any(|v| v.what.ends_with("(audited: nothing dropped)"))
        );

        state.audit_all = true;
        state.networks[0].labels = BTreeMap::new();
        let everything = plan(&state);
        assert_eq!(
            flags(&everything, 22) & audited,
            audited,
            "--audit: backend too"
        );
        assert_eq!(
            flags(&everything, 20) & audited,
            0,
            "frontend denies nothing"
        );
        assert!(
            everything.protected.is_empty(),
            "{:?}",
            everything.protected
        );
    }

    #[test]
    fn a_containers_audit_label_audits_it_and_its_bridge_but_not_its_neighbours_or_internal_networks()
     {
        let mut state = state();
        state.networks[0].labels =
            BTreeMap::from([("netwatch.egress".to_string(), "deny".to_string())]);
        // api is on frontend (denied by a label) and backend (internal).
        for endpoint in &mut state.endpoints[1..=2] {
            endpoint.container_labels =
                BTreeMap::from([("netwatch.egress".to_string(), "audit".to_string())]);
        }
        let plan = plan(&state);
        let flags = |ifindex: u32| spec_flags(&plan, ifindex);
        let audited = policy_flags::ENFORCE | policy_flags::AUDIT;
        assert_eq!(flags(21) & audited, audited, "api on frontend");
        assert_eq!(
            flags(20) & audited,
            policy_flags::ENFORCE,
            "web stays enforced"
        );
        assert_eq!(
            flags(10) & audited,
            audited,
            "frontend's bridge records api's routed traffic instead of dropping it"
        );
        assert_eq!(
            flags(22) & audited,
            policy_flags::ENFORCE,
            "a label cannot audit an internal network"
        );
        let frontend: Cidr = "172.20.0.0/16".parse().unwrap();
        assert!(
            plan.protected.contains(&frontend),
            "the network is enforced, so its shield stays: {:?}",
            plan.protected
        );
        assert!(
            plan.veths.iter().any(|v| v.ifindex == 21
                && v.what
                    .ends_with("(audited by its label netwatch.egress=audit: nothing dropped)")),
            "{:?}",
            plan.veths
        );
        let said: Vec<String> = plan
            .label_problems
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            said,
            [
                "container api: label netwatch.egress=\"audit\": network backend is internal; \
                 a label cannot turn its enforcement into an audit (agent --audit can, for the \
                 whole host); enforcing there"
            ],
        );
    }

    #[test]
    fn ingress_published_opens_each_published_port_on_its_endpoint_and_its_bridge() {
        let mut state = state();
        let port = |host_ip: &str, container_port: u16, protocol: &str| PublishedPort {
            host_ip: host_ip.parse().unwrap(),
            host_port: 30000 + container_port,
            container_port,
            protocol: protocol.into(),
        };
        for endpoint in &mut state.endpoints {
            endpoint.published = vec![
                port("0.0.0.0", 80, "tcp"),
                port("127.0.0.1", 90, "udp"),
                port("0.0.0.0", 5000, "sctp"),
            ];
        }
        for network in &mut state.networks {
            network.labels = BTreeMap::from([
                ("netwatch.egress".to_string(), "deny".to_string()),
                ("netwatch.ingress".to_string(), "published".to_string()),
            ]);
        }
        let plan = plan(&state);
        assert!(
            plan.published_dropped.is_empty(),
            "{:?}",
            plan.published_dropped
        );
        let spec = |ifindex: u32| {
            plan.specs
                .iter()
                .find(|s| s.ifindex == ifindex)
                .unwrap_or_else(|| panic!("no spec for {ifindex}"))
        };
        let rule = |addr: &str, proto: u8, port: u16, from_anywhere: bool| PublishedRule {
            addr: addr.parse().unwrap(),
            proto,
            port,
            from_anywhere,
        };
        let web = spec(20);
        assert!(web.policy.has(policy_flags::PUBLISHED));
        assert_eq!(
            web.published,
            [
                rule("172.20.0.2", IPPROTO_TCP, 80, true),
                rule("172.20.0.2", IPPROTO_UDP, 90, false),
            ],
            "SCTP stays closed; a loopback binding admits the host only"
        );
        let bridge = spec(10);
        assert!(
            bridge
                .policy
                .has(policy_flags::PUBLISHED | policy_flags::NETWORK_WIDE)
        );
        assert_eq!(
            bridge.published.len(),
            4,
            "web's and api's ports, on the bridge that routes them: {:?}",
            bridge.published
        );
        let internal = spec(22);
        assert!(
            !internal.policy.has(policy_flags::PUBLISHED) && internal.published.is_empty(),
            "Docker publishes nothing on an internal network"
        );
        assert!(
            plan.label_problems
                .iter()
                .any(|p| p.object == "network backend" && p.label == "netwatch.ingress"),
            "{:?}",
            plan.label_problems
        );
    }

    #[test]
    fn a_published_port_on_a_network_that_denies_egress_is_named_as_dropped() {
        let mut state = state();
        for endpoint in &mut state.endpoints {
            endpoint.published = vec![PublishedPort {
                host_ip: std::net::Ipv4Addr::UNSPECIFIED.into(),
                host_port: 8080,
                container_port: 80,
                protocol: "tcp".into(),
            }];
        }
        let labelled = |labels: &[(&str, &str)]| {
            let mut state = state.clone();
            for network in &mut state.networks {
                network.labels = labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect();
            }
            plan(&state).published_dropped
        };
        assert!(labelled(&[]).is_empty(), "no network denies egress here");
        let denied = labelled(&[("netwatch.egress", "deny")]);
        assert!(
            denied.contains(
                &"container web publishes 0.0.0.0:8080/tcp but network frontend denies egress: \
                  clients outside frontend get no answer through it"
                    .to_owned()
            ),
            "{denied:?}"
        );
        assert!(
            denied.iter().all(|d| !d.contains("network backend ")),
            "backend is internal: Docker publishes nothing through it: {denied:?}"
        );
    }

    #[test]
    fn a_new_sandbox_veth_no_container_accounts_for_gets_the_overlays_network_wide_policy() {
        let mut state = overlay_state(&[("netwatch.egress", "deny")]);
        let port = |ifindex: u32, netns: u64| SandboxPort {
            network: "ovl".into(),
            sandbox: "/run/docker/netns/1-ovl".into(),
            netns_cookie: netns,
            ifname: format!("veth{}", ifindex - 250),
            ifindex,
        };
        state.sandbox_ports = vec![
            // web's: its own policy stands
            port(251, 8001),
            // not named yet
            port(255, 8001),
            // the same number in another sandbox (a stale cookie): not web's
            port(251, 9999),
        ];
        let plan = plan(&state);
        let new = plan.specs.iter().find(|s| s.ifindex == 255).unwrap();
        assert!(
            new.policy
                .has(policy_flags::NETWORK_WIDE | policy_flags::ENFORCE)
        );
        assert_eq!(new.policy.gateway_v4, [198, 18, 70, 1]);
        assert_eq!(new.networks, vec!["198.18.70.0/24".parse().unwrap()]);
        let web: Vec<_> = plan.specs.iter().filter(|s| s.ifindex == 251).collect();
        assert_eq!(web.len(), 1, "web's policy only");
        assert!(!web[0].policy.has(policy_flags::NETWORK_WIDE));
        let planned: Vec<(u32, u64, &str)> = plan
            .sandbox_veths
            .iter()
            .map(|v| (v.target.ifindex, v.netns_cookie, v.target.what.as_str()))
            .collect();
        assert!(
            planned.contains(&(
                255,
                8001,
                "sandbox veth veth5 of network ovl, no container named yet (enforced network-wide)"
            )),
            "{planned:?}"
        );
        let (refused, why) = &plan.refused[0];
        assert_eq!((refused.ifindex, plan.refused.len()), (251, 1));
        assert!(
            why.contains("is also that of sandbox veth veth1 of web"),
            "{why}"
        );
        crate::policy::compile(&plan.specs, &plan.host_addrs).expect("the plan compiles");
    }

    #[test]
    fn a_sandbox_veth_whose_ifindex_is_taken_is_refused_not_merged() {
        let mut state = overlay_state(&[]);
        // db's sandbox veth has api's host veth's number.
        for endpoint in &mut state.endpoints {
            if endpoint.host_ifindex == 252 {
                endpoint.host_ifindex = 22;
            }
        }
        let plan = plan(&state);
        assert_eq!(plan.sandbox_veths.len(), 1, "web only");
        let (target, why) = &plan.refused[0];
        assert_eq!(target.what, "sandbox veth veth2 of db on ovl2 (observed)");
        assert!(
            why.contains(
                "(inside the overlay's sandbox) is also that of veth of api on backend (enforced)"
            ),
            "{why}"
        );
        assert_eq!(plan.specs.iter().filter(|s| s.ifindex == 22).count(), 1);
        crate::policy::compile(&plan.specs, &plan.host_addrs).expect("the plan compiles");
    }
}
