//! From a Docker snapshot to the agent's [`HostState`].

use std::net::IpAddr;

use log::warn;

use super::{EndpointState, HostState, NetworkState};
use crate::docker::Snapshot;

/// The bridge networks and their endpoints whose veths are known. Networks of
/// other drivers have no veth to attach to and are left out (the guard
/// assessment, [`crate::guard`], names them unguarded); an endpoint
/// whose veth could not be resolved is left out with a warning (the snapshot
/// already logged why), and picked up by the next resync.
pub fn host_state(snapshot: &Snapshot, host_addrs: Vec<IpAddr>) -> HostState {
    let inventory = &snapshot.inventory;
    let networks = inventory
        .networks
        .iter()
        .filter(|n| n.driver == "bridge")
        .map(|n| NetworkState {
            name: n.name.clone(),
            internal: n.internal,
            bridge: n.bridge.as_ref().and_then(|name| {
                let ifindex = nix::net::if_::if_nametoindex(name.as_str()).ok()?;
                Some((name.clone(), ifindex))
            }),
            subnets: n.subnets.iter().map(|s| s.cidr).collect(),
            gateways: n.subnets.iter().filter_map(|s| s.gateway).collect(),
            labels: n.labels.clone(),
        })
        .collect();
    let mut endpoints = Vec::new();
    for container in &inventory.containers {
        for endpoint in container.endpoints.iter().filter(|e| e.driver == "bridge") {
            match snapshot.veth(container, endpoint) {
                Ok(veth) => endpoints.push(EndpointState {
                    container: container.name.clone(),
                    network: endpoint.network.clone(),
                    host_ifname: veth.ifname.clone(),
                    host_ifindex: veth.ifindex,
                    ipv4: endpoint.ipv4,
                    ipv6: endpoint.ipv6,
                    mac: endpoint.mac.0,
                    container_labels: container.labels.clone(),
                }),
                Err(e) => warn!(
                    "not attaching to {} on {}: its host veth is unknown ({e})",
                    container.name, endpoint.network
                ),
            }
        }
    }
    HostState {
        networks,
        endpoints,
        host_addrs,
    }
}
