//! From a Docker snapshot to the agent's [`HostState`].

use std::net::IpAddr;

use log::warn;

use super::{
    BridgePort, ContainerInterface, HostState, NetworkState, OverlayEndpoint, SandboxPort,
    plan::MacvlanEndpoint,
};
use crate::docker::{Container, Endpoint, Network, Snapshot};
use crate::guard;

/// The drivers whose networks netwatch attaches to.
fn guardable(network: &Network) -> bool {
    matches!(network.driver.as_str(), "bridge" | "macvlan" | "overlay")
}

/// The bridge, macvlan and overlay networks, and their endpoints whose
/// interface is known: the host veth of a bridge endpoint, the child of a
/// macvlan one, the sandbox end of an overlay one's veth.
/// Networks of other drivers have nothing to attach to and are left out (the
/// guard assessment, [`crate::guard`], names them unguarded); an endpoint
/// whose interface could not be resolved is left out with a warning (the
/// snapshot already logged why), and picked up by the next resync.
pub fn host_state(snapshot: &Snapshot, host_addrs: Vec<IpAddr>) -> HostState {
    let inventory = &snapshot.inventory;
    let mut endpoints = Vec::new();
    let mut overlay_members = Vec::new();
    for container in &inventory.containers {
        for endpoint in &container.endpoints {
            let Some(network) = inventory.network(&endpoint.network_id) else {
                continue;
            };
            if !guardable(network) {
                continue;
            }
            if network.driver == "overlay" {
                overlay_members.push((container.name.clone(), network.name.clone()));
            }
            match endpoint_state(snapshot, container, endpoint) {
                Ok(state) => endpoints.push(state),
                Err(why) => warn!(
                    "not attaching to {} on {}: {why}",
                    container.name, endpoint.network
                ),
            }
        }
    }
    let networks: Vec<NetworkState> = inventory
        .networks
        .iter()
        .filter(|n| guardable(n))
        .map(|n| NetworkState {
            name: n.name.clone(),
            driver: n.driver.clone(),
            internal: n.internal,
            bridge: n.bridge.as_ref().and_then(|name| {
                let ifindex = nix::net::if_::if_nametoindex(name.as_str()).ok()?;
                Some((name.clone(), ifindex))
            }),
            macvlan_parent: guard::macvlan_parent_name(n).and_then(|name| {
                let ifindex = nix::net::if_::if_nametoindex(name.as_str()).ok()?;
                Some((name, ifindex))
            }),
            overlay_sandbox: (n.driver == "overlay")
                .then(|| crate::host::interfaces::sandbox_name(&n.id)),
            subnets: n.subnets.iter().map(|s| s.cidr).collect(),
            gateways: n.subnets.iter().filter_map(|s| s.gateway).collect(),
            labels: n.labels.clone(),
        })
        .collect();
    let bridge_ports = bridge_ports(&networks);
    let sandbox_ports = sandbox_ports(&networks);
    HostState {
        audit_all: false,
        networks,
        endpoints,
        host_addrs,
        overlay_members,
        bridge_ports,
        provisional_children: Vec::new(),
        sandbox_ports,
    }
}

/// Every veth enslaved to a bridge in the sandboxes of `networks`'
/// overlays, now. A sandbox that cannot be looked into is left out with a
/// warning: the endpoints Docker names are still planned.
pub fn sandbox_ports(networks: &[NetworkState]) -> Vec<SandboxPort> {
    let mut ports = Vec::new();
    for network in networks {
        let Some(name) = &network.overlay_sandbox else {
            continue;
        };
        for sandbox in crate::host::interfaces::sandboxes_named(name) {
            match sandbox {
                Ok(sandbox) => ports.extend(sandbox.ports.into_iter().map(|link| SandboxPort {
                    network: network.name.clone(),
                    sandbox: sandbox.path.clone(),
                    netns_cookie: sandbox.netns_cookie,
                    ifname: link.ifname,
                    ifindex: link.ifindex,
                })),
                Err(e) => warn!(
                    "cannot list the ports in {}'s sandbox ({e}); only endpoints Docker names \
                     are guarded there",
                    network.name
                ),
            }
        }
    }
    ports
}

/// Every interface enslaved to one of `networks`' bridges, now. A failed
/// listing leaves them out with a warning: the endpoints Docker names are
/// still planned.
fn bridge_ports(networks: &[NetworkState]) -> Vec<BridgePort> {
    let bridges: Vec<(u32, &str)> = networks
        .iter()
        .filter_map(|n| Some((n.bridge.as_ref()?.1, n.name.as_str())))
        .collect();
    if bridges.is_empty() {
        return Vec::new();
    }
    let links = match crate::host::links::links_now() {
        Ok(links) => links,
        Err(e) => {
            warn!("cannot list the bridges' ports ({e}); only endpoints Docker names are guarded");
            return Vec::new();
        }
    };
    links
        .into_iter()
        .filter_map(|link| {
            let master = link.master?;
            let (_, network) = bridges.iter().find(|(ifindex, _)| *ifindex == master)?;
            Some(BridgePort {
                network: (*network).to_owned(),
                ifname: link.ifname,
                ifindex: link.ifindex,
            })
        })
        .collect()
}

fn endpoint_state(
    snapshot: &Snapshot,
    container: &Container,
    endpoint: &Endpoint,
) -> Result<ContainerInterface, String> {
    let mut overlay = None;
    let (ifname, ifindex, macvlan) = if endpoint.driver == "overlay" {
        let veth = snapshot
            .sandbox_veth(container, endpoint)
            .map_err(|e| format!("its sandbox veth is unknown ({e})"))?;
        overlay = Some(OverlayEndpoint {
            sandbox: veth.sandbox.clone(),
            netns_cookie: veth.netns_cookie,
        });
        (veth.ifname.clone(), veth.ifindex, None)
    } else if endpoint.driver == "macvlan" {
        let child = snapshot
            .macvlan_child(container, endpoint)
            .map_err(|e| format!("its macvlan interface is unknown ({e})"))?;
        let pid = container
            .pid
            .ok_or_else(|| "dockerd reports no pid for it".to_owned())?;
        let macvlan = MacvlanEndpoint {
            pid,
            netns_cookie: child.netns_cookie,
            parent_ifindex: child.parent_ifindex,
        };
        (child.ifname.clone(), child.ifindex, Some(macvlan))
    } else {
        let veth = snapshot
            .veth(container, endpoint)
            .map_err(|e| format!("its host veth is unknown ({e})"))?;
        (veth.ifname.clone(), veth.ifindex, None)
    };
    Ok(ContainerInterface {
        container: container.name.clone(),
        container_id: container.id.clone(),
        network: endpoint.network.clone(),
        host_ifname: ifname,
        host_ifindex: ifindex,
        ipv4: endpoint.ipv4,
        ipv6: endpoint.ipv6,
        mac: endpoint.mac.0,
        container_labels: container.labels.clone(),
        published: container.published.clone(),
        macvlan,
        overlay,
    })
}
