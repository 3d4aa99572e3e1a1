//! The two ends of the path: who sends (a container, the host, an outside
//! address) and which address, and which container endpoint, receives.

use std::net::IpAddr;

use anyhow::{Result, anyhow, bail};

use super::{Destination, path::Topology};
use crate::docker::{Container, Endpoint, Snapshot};

/// Who sends the packet.
#[derive(Clone, Copy, Debug)]
pub enum Source<'a> {
    Container(&'a Container),
    /// The host itself, from the address given, else from the gateway of
    /// the destination's network (the address it uses on that bridge).
    Host(Option<IpAddr>),
    /// An address beyond this host.
    Outside(IpAddr),
}

impl Source<'_> {
    /// The source as JSON names it.
    pub fn name(&self) -> String {
        match self {
            Source::Container(container) => container.name.clone(),
            Source::Host(_) => "host".to_string(),
            Source::Outside(ip) => ip.to_string(),
        }
    }

    /// The family the user fixed by giving an address.
    pub fn family(&self) -> Option<bool> {
        match self {
            Source::Host(Some(ip)) | Source::Outside(ip) => Some(ip.is_ipv4()),
            Source::Host(None) | Source::Container(_) => None,
        }
    }
}

/// `host`, an address (a container's endpoint address names that
/// container, one of the host's addresses the host), or a container.
///
/// # Errors
/// An unknown or ambiguous container.
pub fn source<'a>(topology: &Topology<'a>, text: &str) -> Result<Source<'a>> {
    if text == "host" {
        return Ok(Source::Host(None));
    }
    let unbracketed = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    if let Ok(ip) = unbracketed.parse::<IpAddr>() {
        if let Some((container, _)) = endpoint_with_address(topology.snapshot, ip) {
            return Ok(Source::Container(container));
        }
        if topology.plan.host_addrs.contains(&ip) {
            return Ok(Source::Host(Some(ip)));
        }
        return Ok(Source::Outside(ip));
    }
    match find(topology.snapshot, text) {
        Ok(container) => Ok(Source::Container(container)),
        Err(not_found) => match by_alias(topology.snapshot, text, None)? {
            Some((container, _)) => Ok(Source::Container(container)),
            None => Err(not_found),
        },
    }
}

/// The container endpoint a DNS alias (`--network-alias`, a compose
/// service name) names, as Docker's embedded resolver would answer it for
/// `asker`: on the asker's networks only (an alias is resolved on its own
/// network); from the host or outside, on any network. `None` when no
/// endpoint has the alias.
///
/// # Errors
/// The alias is only on networks the asker is not on, or names several
/// containers (Docker answers with all of them: pick one by name).
fn by_alias<'a>(
    snapshot: &'a Snapshot,
    alias: &str,
    asker: Option<&Container>,
) -> Result<Option<(&'a Container, &'a Endpoint)>> {
    let named: Vec<(&Container, &Endpoint)> = snapshot
        .inventory
        .containers
        .iter()
        .flat_map(|c| c.endpoints.iter().map(move |e| (c, e)))
        .filter(|(_, e)| e.aliases.iter().any(|a| a.eq_ignore_ascii_case(alias)))
        .collect();
    if named.is_empty() {
        return Ok(None);
    }
    let reachable: Vec<(&Container, &Endpoint)> = match asker {
        Some(asker) => named
            .iter()
            .copied()
            .filter(|(_, e)| asker.endpoints.iter().any(|m| m.network_id == e.network_id))
            .collect(),
        None => named.clone(),
    };
    let mut containers: Vec<&str> = reachable.iter().map(|(c, _)| c.name.as_str()).collect();
    containers.sort_unstable();
    containers.dedup();
    match (reachable.first(), containers.len()) {
        (Some(one), 1) => Ok(Some(*one)),
        (None, _) => {
            let mut networks: Vec<&str> = named.iter().map(|(_, e)| e.network.as_str()).collect();
            networks.sort_unstable();
            networks.dedup();
            bail!(
                "{alias} is a DNS alias on {}, which {} is not on: Docker's resolver would not answer it there",
                networks.join(", "),
                asker.map_or("the source", |a| a.name.as_str())
            )
        }
        (Some(_), _) => bail!(
            "{alias} is a DNS alias of {} containers ({}): Docker's resolver answers with all of them; explain one by name",
            containers.len(),
            containers.join(", ")
        ),
    }
}

/// A container endpoint the packet is for.
pub struct Target<'a> {
    pub container: &'a Container,
    pub endpoint: &'a Endpoint,
}

/// The destination address and, when it is one, the container endpoint
/// that holds it.
pub fn destination<'a>(
    topology: &Topology<'a>,
    source: Source,
    wanted: &Destination,
) -> Result<(IpAddr, Option<Target<'a>>)> {
    let family = source.family();
    let (dst, target) = match wanted.host.parse::<IpAddr>() {
        Ok(dst) => {
            let target =
                endpoint_with_address(topology.snapshot, dst).map(|(container, endpoint)| Target {
                    container,
                    endpoint,
                });
            (dst, target)
        }
        Err(_) => {
            let asker = match source {
                Source::Container(from) => Some(from),
                _ => None,
            };
            let (container, endpoint) = match find(topology.snapshot, &wanted.host) {
                Ok(container) => (container, endpoint_for(topology, container, asker)?),
                Err(not_found) => {
                    by_alias(topology.snapshot, &wanted.host, asker)?.ok_or(not_found)?
                }
            };
            let dst = address(endpoint, family).ok_or_else(|| {
                anyhow!(
                    "container {} has no {} address on {}",
                    container.name,
                    family.map_or("IP", |v4| if v4 { "IPv4" } else { "IPv6" }),
                    endpoint.network
                )
            })?;
            (
                dst,
                Some(Target {
                    container,
                    endpoint,
                }),
            )
        }
    };
    checked_family(family, dst, target)
}

fn checked_family(
    family: Option<bool>,
    dst: IpAddr,
    target: Option<Target<'_>>,
) -> Result<(IpAddr, Option<Target<'_>>)> {
    if let Some(v4) = family
        && v4 != dst.is_ipv4()
    {
        bail!(
            "the source is {} and the destination {dst} is {}: give both in one family",
            if v4 { "IPv4" } else { "IPv6" },
            family_name(dst)
        );
    }
    Ok((dst, target))
}

/// The endpoint a container's name resolves to for `asker`, as Docker's
/// DNS resolves it: one on a network they share, else the container's
/// first; never a docker_gwbridge leg (no container lists it, and
/// containers do not talk to each other there).
fn endpoint_for<'a>(
    topology: &Topology<'a>,
    container: &'a Container,
    asker: Option<&Container>,
) -> Result<&'a Endpoint> {
    let shared = |e: &&Endpoint| {
        asker.is_some_and(|from| {
            from.endpoints
                .iter()
                .any(|mine| mine.network_id == e.network_id)
        })
    };
    let named = |e: &&Endpoint| {
        !topology
            .snapshot
            .inventory
            .network(&e.network_id)
            .is_some_and(|n| n.is_gateway_bridge())
    };
    container
        .endpoints
        .iter()
        .filter(named)
        .find(shared)
        .or(container.endpoints.iter().find(named))
        .or(container.endpoints.first())
        .ok_or_else(|| {
            anyhow!(
                "container {} has no address on a bridge network",
                container.name
            )
        })
}

fn find<'a>(snapshot: &'a Snapshot, query: &str) -> Result<&'a Container> {
    let inventory = &snapshot.inventory;
    Ok(inventory.network_owner(inventory.find_container(query)?)?)
}

fn endpoint_with_address(snapshot: &Snapshot, ip: IpAddr) -> Option<(&Container, &Endpoint)> {
    snapshot.inventory.containers.iter().find_map(|container| {
        container
            .endpoints
            .iter()
            .find(|e| address(e, Some(ip.is_ipv4())) == Some(ip))
            .map(|endpoint| (container, endpoint))
    })
}

/// The endpoint's address of one family (`Some(true)`: IPv4), or with
/// `None` its IPv4 address, else its IPv6 address.
pub fn address(endpoint: &Endpoint, ipv4: Option<bool>) -> Option<IpAddr> {
    let v4 = endpoint.ipv4.map(IpAddr::V4);
    let v6 = endpoint.ipv6.map(IpAddr::V6);
    match ipv4 {
        Some(true) => v4,
        Some(false) => v6,
        None => v4.or(v6),
    }
}

/// The address the host sends from into `endpoint`'s network: its gateway.
pub fn gateway(snapshot: &Snapshot, endpoint: &Endpoint, dst: IpAddr) -> Result<IpAddr> {
    snapshot
        .inventory
        .network(&endpoint.network_id)
        .and_then(|network| {
            network
                .subnets
                .iter()
                .filter_map(|s| s.gateway)
                .find(|gw| gw.is_ipv4() == dst.is_ipv4())
        })
        .ok_or_else(|| {
            anyhow!(
                "network {} has no {} gateway for the host to send from; give the host's address as the source",
                endpoint.network,
                family_name(dst)
            )
        })
}

pub fn family_name(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() { "IPv4" } else { "IPv6" }
}

/// Why a packet from the host or from outside has nothing to explain.
pub fn not_a_container(topology: &Topology, dst: IpAddr) -> String {
    let inside = topology
        .state
        .networks
        .iter()
        .find(|n| n.subnets.iter().any(|c| c.contains(&dst)));
    let whose = match inside {
        Some(network) => format!(
            "{dst} is inside network {} but no running container has it",
            network.name
        ),
        None => format!("{dst} is not on any Docker network of this host"),
    };
    format!(
        "{whose}; from the host or from outside, explain a packet to a container: give its name or its address"
    )
}
