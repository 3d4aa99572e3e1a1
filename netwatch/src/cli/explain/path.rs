//! The path of one packet through netwatch's hooks on this host, and what
//! the reference model decides at each.
//!
//! A packet from a container first meets `from_container` on the host veth
//! of the endpoint its own routing picks; a packet from outside first meets
//! the uplink shield; a packet for a container last meets `to_container` on
//! the host veth of that container's endpoint. Only these hooks are judged,
//! on the packet as it is sent: Docker's NAT (published ports,
//! masquerading) and iptables rules are not modelled.

use std::{net::IpAddr, path::Path as FsPath};

use anyhow::{Context as _, Result, anyhow, bail};
use etherparse::PacketBuilder;
use netwatch_common::{
    packet::{IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP},
    reason::{Direction, Verdict},
    verdict::Decision,
};

use super::{
    Destination,
    ends::{Source, address, destination, family_name, gateway, not_a_container},
};
use crate::{
    agent::{HostState, Plan},
    datapath::{Hook, TEST_RUN_IFINDEX},
    docker::{Container, Endpoint, Snapshot},
    host::interfaces::{EndpointError, Route, Unroutable},
    policy::{
        Cidr, InterfacePolicy, ReferenceModel,
        explain::{Judged, ProtectedPrefix, uplink_decision, uplink_rule, verdict_rule},
    },
};

/// The source port of every probe: an ephemeral port, as a client's is.
/// Allow rules match it on ingress (it is the remote's port there).
pub const CLIENT_PORT: u16 = 40000;

/// The MAC of whatever sits at the other end of an Ethernet hop (the
/// bridge, a router): the programs never judge it.
const OTHER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];

/// What netwatch knows of this host.
pub struct Topology<'a> {
    pub snapshot: &'a Snapshot,
    pub state: &'a HostState,
    pub plan: &'a Plan,
    /// The interface the uplink shield is attached to, if it is.
    pub uplink: Option<String>,
    /// Where the uplink's pin was looked for.
    pub pin_root: &'a FsPath,
}

/// One hook on the path.
pub struct Hop {
    pub hook: Hook,
    pub interface: Option<String>,
    pub container: Option<String>,
    pub network: Option<String>,
    /// `None`: the hook is not on this host (no uplink shield attached).
    pub decision: Option<Decision>,
    pub rule: String,
    /// How to ask the kernel program the same question.
    pub probe: Option<Probe>,
}

/// A frame and the policy a kernel program needs to judge it.
pub enum Probe {
    /// A veth program, with the endpoint's policy moved to the test-run
    /// ifindex.
    Veth {
        hook: Hook,
        spec: InterfacePolicy,
        frame: Vec<u8>,
    },
    Uplink {
        protected: Vec<Cidr>,
        frame: Vec<u8>,
    },
    Macvlan(Box<MacvlanProbe>),
}

/// A macvlan program judging endpoint `judged` (whose MAC is `mac`):
/// `macvlan_parent` (its egress towards the LAN), `macvlan_child` on its own
/// interface (its ingress), or `macvlan_child` on a sibling's interface,
/// `receiver` (its egress to that sibling).
pub struct MacvlanProbe {
    pub hook: Hook,
    pub judged: InterfacePolicy,
    pub parent: InterfacePolicy,
    pub receiver: Option<InterfacePolicy>,
    pub mac: [u8; 6],
    pub frame: Vec<u8>,
}

/// The packet and its path.
pub struct PacketPath {
    pub source: String,
    /// `None` when the source container has no route (no endpoint, so no
    /// address, was picked).
    pub src: Option<IpAddr>,
    pub dst: IpAddr,
    pub proto: u8,
    pub port: Option<u16>,
    /// Why the packet never leaves its source container, when it does not.
    pub unroutable: Option<String>,
    /// What answers it inside the source container, when something does
    /// (Docker's embedded resolver), so that it never leaves.
    pub inside: Option<String>,
    pub hops: Vec<Hop>,
}

impl PacketPath {
    /// The first hop that drops the packet, else the last that judged it.
    pub fn deciding_hop(&self) -> Option<&Hop> {
        self.hops
            .iter()
            .find(|hop| hop.decision.is_some_and(|d| d.verdict == Verdict::Dropped))
            .or_else(|| self.hops.iter().rev().find(|hop| hop.decision.is_some()))
    }
}

/// Follows the packet from `source` to `wanted`; `route` answers which
/// interface a container's own routing sends it out of.
///
/// # Errors
/// Unknown containers, a destination of another family than the source, a
/// source outside containers aimed at something that is not a container,
/// an endpoint whose host veth is unknown.
pub fn trace(
    topology: &Topology,
    source: Source,
    wanted: &Destination,
    route: impl Fn(&Container, IpAddr) -> Result<Route, EndpointError>,
) -> Result<PacketPath> {
    let (dst, target) = destination(topology, source, wanted)?;
    let proto = match (wanted.proto, dst) {
        (0, IpAddr::V4(_)) => IPPROTO_ICMP,
        (0, IpAddr::V6(_)) => IPPROTO_ICMPV6,
        (p, _) => p,
    };
    let mut path = PacketPath {
        source: source.name(),
        src: None,
        dst,
        proto,
        port: wanted.port,
        unroutable: None,
        inside: None,
        hops: Vec::new(),
    };
    if dst == EMBEDDED_RESOLVER {
        let Source::Container(container) = source else {
            bail!(
                "{EMBEDDED_RESOLVER} is Docker's embedded DNS resolver, inside each container's own \
                 network namespace: give a container as the source"
            );
        };
        path.inside = Some(embedded_resolver_path(&container.name));
        return Ok(path);
    }
    let src = match source {
        Source::Container(container) => {
            let endpoint = match route(container, dst)
                .with_context(|| format!("looking up {}'s route to {dst}", container.name))?
            {
                Route::Via { ifname, mac, .. } => container
                    .endpoints
                    .iter()
                    .find(|e| Some(e.mac) == mac)
                    .ok_or_else(|| {
                        anyhow!(
                            "{} sends packets for {dst} out of {ifname}, which is not one of its Docker bridge endpoints; netwatch has no hook there",
                            container.name
                        )
                    })?,
                Route::Local => bail!(
                    "{dst} is an address of {} itself: the packet never leaves the container",
                    container.name
                ),
                Route::Unroutable(why) => {
                    path.unroutable = Some(unroutable(&container.name, dst, why));
                    return Ok(path);
                }
            };
            let src = address(endpoint, Some(dst.is_ipv4())).ok_or_else(|| {
                anyhow!(
                    "{} sends packets for {dst} out of its endpoint on {}, which has no {} address",
                    container.name,
                    endpoint.network,
                    family_name(dst)
                )
            })?;
            // Bridge-mode macvlan siblings reach each other without the
            // parent's egress: what one sends the other is judged, as the
            // sender's egress, on the receiver's own hook.
            let sibling = target
                .as_ref()
                .filter(|t| {
                    endpoint.driver == "macvlan" && t.endpoint.network_id == endpoint.network_id
                })
                .map(|t| (t.container, t.endpoint));
            let hop = veth_hop(
                topology,
                (container, endpoint),
                Direction::Egress,
                sibling,
                src,
                &path,
            )?;
            path.hops.push(hop);
            src
        }
        Source::Outside(src) => {
            path.hops.push(uplink_hop(topology, src, &path));
            src
        }
        Source::Host(Some(src)) => src,
        Source::Host(None) => match &target {
            Some(target) => gateway(topology.snapshot, target.endpoint, dst)?,
            None => bail!("{}", not_a_container(topology, dst)),
        },
    };
    path.src = Some(src);
    match (&target, source) {
        (Some(target), _) => {
            let hop = veth_hop(
                topology,
                (target.container, target.endpoint),
                Direction::Ingress,
                None,
                src,
                &path,
            )?;
            path.hops.push(hop);
        }
        (None, Source::Container(_)) => {}
        (None, _) => bail!("{}", not_a_container(topology, dst)),
    }
    Ok(path)
}

/// The hop where an endpoint's traffic in `direction` is judged (see
/// [`hooked_interface`]); `sibling`, for what a macvlan endpoint sends a
/// bridge-mode sibling, is the receiver on whose hook that happens.
fn veth_hop(
    topology: &Topology,
    (container, endpoint): (&Container, &Endpoint),
    direction: Direction,
    sibling: Option<(&Container, &Endpoint)>,
    src: IpAddr,
    path: &PacketPath,
) -> Result<Hop> {
    let hooked = hooked_interface(topology, container, endpoint, direction, sibling)?;
    let spec = topology
        .plan
        .specs
        .iter()
        .find(|s| s.ifindex == hooked.key)
        .ok_or_else(|| {
            anyhow!(
                "network {} is not a network netwatch manages",
                endpoint.network
            )
        })?;
    let client_port = matches!(path.proto, IPPROTO_TCP | IPPROTO_UDP).then_some(CLIENT_PORT);
    let (frame, remote, remote_port, local_port) = match direction {
        Direction::Egress => (
            frame(endpoint.mac.0, OTHER_MAC, src, path)?,
            path.dst,
            path.port,
            client_port,
        ),
        Direction::Ingress => (
            frame(OTHER_MAC, endpoint.mac.0, src, path)?,
            src,
            client_port,
            path.port,
        ),
    };
    let hook = hooked.hook;
    let model = ReferenceModel::new([spec.clone()], topology.plan.host_addrs.iter().copied());
    let decision = model
        .decide(spec.ifindex, direction, &frame)
        .ok_or_else(|| anyhow!("no policy for {}", hooked.interface))?;
    let judged = Judged {
        direction,
        remote,
        proto: path.proto,
        remote_port,
        local_port,
        decision,
    };
    let rule = verdict_rule(spec, &endpoint.network, &topology.plan.host_addrs, &judged);
    let probe = match hooked.parent {
        None => {
            let mut probe_spec = spec.clone();
            probe_spec.ifindex = TEST_RUN_IFINDEX;
            Probe::Veth {
                hook,
                spec: probe_spec,
                frame,
            }
        }
        Some(parent) => {
            let policy_of = |ifindex: u32| {
                topology
                    .plan
                    .specs
                    .iter()
                    .find(|s| s.ifindex == ifindex)
                    .cloned()
            };
            Probe::Macvlan(Box::new(MacvlanProbe {
                hook,
                judged: spec.clone(),
                parent: policy_of(parent)
                    .ok_or_else(|| anyhow!("no policy for the parent of {}", endpoint.network))?,
                receiver: match hooked.receiver {
                    Some(key) => Some(policy_of(key).ok_or_else(|| {
                        anyhow!("no policy for the receiver on {}", endpoint.network)
                    })?),
                    None => None,
                },
                mac: endpoint.mac.0,
                frame,
            }))
        }
    };
    Ok(Hop {
        hook,
        interface: Some(hooked.interface),
        container: Some(container.name.clone()),
        network: Some(endpoint.network.clone()),
        decision: Some(decision),
        rule,
        probe: Some(probe),
    })
}

/// Where netwatch judges an endpoint's traffic in one direction.
struct Hooked {
    hook: Hook,
    /// The interface, as a user finds it.
    interface: String,
    /// The endpoint's key in the policy maps.
    key: u32,
    /// For a macvlan endpoint: its parent's ifindex.
    parent: Option<u32>,
    /// For what a macvlan endpoint sends a sibling: the receiver's key.
    receiver: Option<u32>,
}

/// A bridge endpoint's host veth (`from_container`, `to_container`); an
/// overlay endpoint's veth in the network's sandbox (the same programs); a
/// macvlan endpoint's parent (`macvlan_parent`, what it sends) or its own
/// interface in the container (`macvlan_child`, what it receives).
fn hooked_interface(
    topology: &Topology,
    container: &Container,
    endpoint: &Endpoint,
    direction: Direction,
    sibling: Option<(&Container, &Endpoint)>,
) -> Result<Hooked> {
    let egress = direction == Direction::Egress;
    if endpoint.driver == "macvlan" {
        let child_of = |container: &Container, endpoint: &Endpoint| {
            topology
                .snapshot
                .macvlan_child(container, endpoint)
                .cloned()
                .map_err(|e| anyhow!("{} on {}: {e}", container.name, endpoint.network))
        };
        let child = child_of(container, endpoint)?;
        let parent = topology
            .state
            .networks
            .iter()
            .find(|n| n.name == endpoint.network)
            .and_then(|n| n.macvlan_parent.clone())
            .ok_or_else(|| {
                anyhow!(
                    "the parent of macvlan network {} is not on this host",
                    endpoint.network
                )
            })?;
        if let (true, Some((receiver, receiving))) = (egress, sibling) {
            let other = child_of(receiver, receiving)?;
            return Ok(Hooked {
                hook: Hook::MacvlanChild,
                interface: format!("{} (in {})", other.ifname, receiver.name),
                key: child.ifindex,
                parent: Some(parent.1),
                receiver: Some(other.ifindex),
            });
        }
        return Ok(Hooked {
            hook: if egress {
                Hook::MacvlanParent
            } else {
                Hook::MacvlanChild
            },
            interface: if egress {
                parent.0
            } else {
                format!("{} (in {})", child.ifname, container.name)
            },
            key: child.ifindex,
            parent: Some(parent.1),
            receiver: None,
        });
    }
    let unknown = |e: &crate::host::interfaces::EndpointError| {
        anyhow!("{} on {}: {e}", container.name, endpoint.network)
    };
    let (interface, key) = if endpoint.driver == "overlay" {
        let veth = topology
            .snapshot
            .sandbox_veth(container, endpoint)
            .map_err(unknown)?;
        (format!("{} (in sandbox)", veth.ifname), veth.ifindex)
    } else {
        let veth = topology
            .snapshot
            .veth(container, endpoint)
            .map_err(unknown)?;
        (veth.ifname.clone(), veth.ifindex)
    };
    Ok(Hooked {
        hook: if egress {
            Hook::FromContainer
        } else {
            Hook::ToContainer
        },
        interface,
        key,
        parent: None,
        receiver: None,
    })
}

/// The uplink shield, or a note that there is none.
fn uplink_hop(topology: &Topology, src: IpAddr, path: &PacketPath) -> Hop {
    let Some(ifname) = &topology.uplink else {
        return Hop {
            hook: Hook::Uplink,
            interface: None,
            container: None,
            network: None,
            decision: None,
            rule: format!(
                "no uplink shield is attached (no uplink link pinned under {}): nothing stops the packet before the host routes it",
                topology.pin_root.display()
            ),
            probe: None,
        };
    };
    let protected = protected_prefixes(topology);
    let decision = uplink_decision(src, path.dst, &protected);
    let network = [path.dst, src]
        .iter()
        .find_map(|ip| protected.iter().find(|p| p.cidr.contains(ip)))
        .map(|p| p.network.clone());
    // Frames that cannot be built (mixed families) were refused earlier.
    let probe = frame(OTHER_MAC, OTHER_MAC, src, path)
        .ok()
        .map(|frame| Probe::Uplink {
            protected: topology.plan.protected.clone(),
            frame,
        });
    Hop {
        hook: Hook::Uplink,
        interface: Some(ifname.clone()),
        container: None,
        network,
        decision: Some(decision),
        rule: uplink_rule(src, path.dst, &protected, decision),
        probe,
    }
}

/// The plan's protected prefixes with the networks they come from.
fn protected_prefixes(topology: &Topology) -> Vec<ProtectedPrefix> {
    topology
        .plan
        .protected
        .iter()
        .map(|cidr| {
            let network = topology
                .state
                .networks
                .iter()
                .find(|n| n.subnets.contains(cidr));
            ProtectedPrefix {
                cidr: *cidr,
                network: network.map_or_else(|| "?".to_string(), |n| n.name.clone()),
                internal: network.is_some_and(|n| n.internal),
            }
        })
        .collect()
}

/// The frame as it is sent: Ethernet, IP, then a TCP SYN, a UDP datagram or
/// an ICMP echo request from [`CLIENT_PORT`].
fn frame(src_mac: [u8; 6], dst_mac: [u8; 6], src: IpAddr, path: &PacketPath) -> Result<Vec<u8>> {
    let eth = PacketBuilder::ethernet2(src_mac, dst_mac);
    let ip = match (src, path.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => eth.ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d)) => eth.ipv6(s.octets(), d.octets(), 64),
        _ => bail!(
            "source {src} and destination {} are of different families",
            path.dst
        ),
    };
    let port = path.port.unwrap_or(0);
    let mut out = Vec::new();
    match path.proto {
        IPPROTO_TCP => ip
            .tcp(CLIENT_PORT, port, 1, 64240)
            .syn()
            .write(&mut out, &[]),
        IPPROTO_UDP => ip.udp(CLIENT_PORT, port).write(&mut out, &[]),
        _ if path.dst.is_ipv4() => ip.icmpv4_echo_request(1, 1).write(&mut out, &[]),
        _ => ip.icmpv6_echo_request(1, 1).write(&mut out, &[]),
    }
    .context("building the packet")?;
    Ok(out)
}

/// Docker's embedded DNS resolver, as containers on user-defined networks
/// see it.
pub const EMBEDDED_RESOLVER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 11));

/// What becomes of a packet a container sends its embedded resolver.
fn embedded_resolver_path(container: &str) -> String {
    format!(
        "{EMBEDDED_RESOLVER} is Docker's embedded DNS resolver inside {container}'s own network \
         namespace: the packet never crosses an interface and no netwatch hook sees it. It \
         answers container names and network aliases itself (`netwatch explain {container} \
         NAME` follows the answer); other names it forwards to the upstream resolvers from \
         {container}'s namespace, with its address (`netwatch explain {container} \
         UPSTREAM:53/udp` follows that query; `netwatch dns` lists them)"
    )
}

fn unroutable(container: &str, dst: IpAddr, why: Unroutable) -> String {
    match why {
        Unroutable::NoRoute => format!("{container} has no route to {dst}"),
        Unroutable::Unreachable => format!("{container} routes {dst} to an unreachable route"),
        Unroutable::Prohibited => format!("{container} routes {dst} to a prohibit route"),
        Unroutable::Blackhole => format!("{container} routes {dst} into a blackhole"),
    }
}
