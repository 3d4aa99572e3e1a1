//! Test fixtures: dockerd answers captured on this project's test machine
//! (`testdata/`, see its README), parsed with bollard's models.
//!
//! Two captured topologies: the top-level items are the bridge one
//! (compose labels, an internal IPv6 bridge, `container:`, `host` and `none`
//! containers); [`drivers`] is the macvlan, ipvlan, overlay (swarm), `host`
//! and `none` one.

use bollard::models::{ContainerInspectResponse, Network};

use super::Inventory;

pub const NETWORKS: &str = include_str!("testdata/networks.json");

/// `GET /containers/{id}/json` of each captured container, by short name
/// (`app` is container `nwcap-app`).
pub const CONTAINERS: [(&str, &str); 6] = [
    ("app", include_str!("testdata/container-app.json")),
    ("static", include_str!("testdata/container-static.json")),
    ("default", include_str!("testdata/container-default.json")),
    ("sidecar", include_str!("testdata/container-sidecar.json")),
    ("hostnet", include_str!("testdata/container-hostnet.json")),
    ("none", include_str!("testdata/container-none.json")),
];

pub fn networks() -> Vec<Network> {
    parse_networks(NETWORKS)
}

pub fn container(name: &str) -> ContainerInspectResponse {
    container_in(&CONTAINERS, name)
}

/// The inventory of every captured network and the named containers.
pub fn inventory(containers: &[&str]) -> Inventory {
    inventory_of(&networks(), &CONTAINERS, containers)
}

fn parse_networks(json: &str) -> Vec<Network> {
    serde_json::from_str(json).expect("a networks list parses as bollard's model")
}

fn parse_network(json: &str) -> Network {
    serde_json::from_str(json).expect("a network parses as bollard's model")
}

fn container_in(set: &[(&str, &str)], name: &str) -> ContainerInspectResponse {
    let (_, json) = set
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no captured container {name:?}"));
    serde_json::from_str(json).expect("container JSON parses as bollard's model")
}

fn inventory_of(networks: &[Network], set: &[(&str, &str)], names: &[&str]) -> Inventory {
    let containers: Vec<_> = names.iter().map(|name| container_in(set, name)).collect();
    Inventory::from_api(networks, &containers)
}

/// The macvlan, ipvlan, overlay, `host` and `none` topology, captured from
/// a private dockerd 20.10.24 in a single-node swarm
/// (`testdata/drivers/`, see `testdata/README.md`).
pub mod drivers {
    use super::*;
    use crate::docker::Snapshot;
    use crate::host::interfaces::SandboxVeth;

    /// `GET /networks`. It has no `nwcap-ipvlan`: that network was removed
    /// (its container could not start) before the list was taken.
    pub const NETWORKS: &str = include_str!("testdata/drivers/networks.json");

    /// `GET /networks/nwcap-ipvlan`, taken while it existed.
    pub const IPVLAN_NETWORK: &str = include_str!("testdata/drivers/network-nwcap-ipvlan.json");

    /// `GET /networks/{name}?verbose=true` of the networks whose
    /// `Containers` maps hold entries that are not containers
    /// (`lb-<network>`, `ingress-sbox`) or legs that no container's
    /// `NetworkSettings` lists (docker_gwbridge's `gateway_<sandbox>`).
    pub const INSPECTED_NETWORKS: [(&str, &str); 4] = [
        (
            "nwcap-ovl",
            include_str!("testdata/drivers/network-nwcap-ovl.json"),
        ),
        (
            "nwcap-ovl-int",
            include_str!("testdata/drivers/network-nwcap-ovl-int.json"),
        ),
        (
            "ingress",
            include_str!("testdata/drivers/network-ingress.json"),
        ),
        (
            "docker_gwbridge",
            include_str!("testdata/drivers/network-docker_gwbridge.json"),
        ),
    ];

    /// `GET /containers/{id}/json` of each captured container, by short
    /// name (`mv` is container `nwcap-mv`; `svc` is the task of swarm
    /// service `nwcap-svc`, named `nwcap-svc.1.<task id>`).
    pub const CONTAINERS: [(&str, &str); 9] = [
        ("mv", include_str!("testdata/drivers/container-mv.json")),
        ("mv2", include_str!("testdata/drivers/container-mv2.json")),
        ("mvp", include_str!("testdata/drivers/container-mvp.json")),
        ("mvi", include_str!("testdata/drivers/container-mvi.json")),
        (
            "hostnet2",
            include_str!("testdata/drivers/container-hostnet2.json"),
        ),
        (
            "none2",
            include_str!("testdata/drivers/container-none2.json"),
        ),
        ("ovc", include_str!("testdata/drivers/container-ovc.json")),
        ("ovi", include_str!("testdata/drivers/container-ovi.json")),
        ("svc", include_str!("testdata/drivers/container-svc.json")),
    ];

    /// Every network: the list plus `nwcap-ipvlan`.
    pub fn networks() -> Vec<Network> {
        let mut networks = parse_networks(NETWORKS);
        networks.push(parse_network(IPVLAN_NETWORK));
        networks
    }

    /// As [`networks`], with the answers of [`INSPECTED_NETWORKS`] in place
    /// of their list entries (whose `Containers` are `null` or `{}`).
    pub fn inspected_networks() -> Vec<Network> {
        let mut networks = networks();
        for (name, json) in INSPECTED_NETWORKS {
            let inspected = parse_network(json);
            let listed = networks
                .iter_mut()
                .find(|n| n.name.as_deref() == Some(name))
                .unwrap_or_else(|| panic!("network {name} is in the list"));
            *listed = inspected;
        }
        networks
    }

    pub fn container(name: &str) -> ContainerInspectResponse {
        container_in(&CONTAINERS, name)
    }

    /// `GET /networks/docker_gwbridge`: the overlay containers' second legs.
    pub fn gateway_bridge() -> bollard::models::NetworkInspect {
        let (_, json) = INSPECTED_NETWORKS
            .iter()
            .find(|(name, _)| *name == crate::docker::GATEWAY_BRIDGE)
            .expect("docker_gwbridge was inspected");
        serde_json::from_str(json).expect("an inspected network parses as bollard's model")
    }

    /// The inventory of every network of [`networks`] and the named
    /// containers, with their docker_gwbridge legs, as
    /// [`Inventory::load`] builds it.
    pub fn inventory(containers: &[&str]) -> Inventory {
        let mut inventory = inventory_of(&networks(), &CONTAINERS, containers);
        inventory.add_gateway_legs(&gateway_bridge());
        inventory
    }

    /// The name of the captured service task (service `nwcap-svc`).
    pub const TASK: &str = "nwcap-svc.1.yvjdvx7ds813857f66cmh9jwv";

    /// Sets on `snapshot` the sandbox veths of the captured overlay
    /// endpoints as the capture's topology measured them (nwcap-ovc: veth1
    /// 251, the task: veth2 260, both in nwcap-ovl's sandbox, given cookie
    /// 8001; nwcap-ovi: veth1 258 in nwcap-ovl-int's, 8002). `snapshot`
    /// must hold those three containers.
    pub fn set_sandbox_veths(snapshot: &mut Snapshot) {
        for (container, network, ifname, ifindex, netns) in [
            ("nwcap-ovc", "nwcap-ovl", "veth1", 251, 8001),
            (TASK, "nwcap-ovl", "veth2", 260, 8001),
            ("nwcap-ovi", "nwcap-ovl-int", "veth1", 258, 8002),
        ] {
            let veth = SandboxVeth {
                ifname: ifname.into(),
                ifindex,
                container_ifname: "eth0".into(),
                container_ifindex: ifindex - 1,
                sandbox: format!("/run/docker/netns/1-{netns}").into(),
                netns_cookie: netns,
            };
            snapshot.set_sandbox_veth_for_test(container, network, veth);
        }
    }

    /// The inventory of every network and every captured container.
    pub fn full_inventory() -> Inventory {
        let names: Vec<&str> = CONTAINERS.iter().map(|(name, _)| *name).collect();
        inventory(&names)
    }
}
