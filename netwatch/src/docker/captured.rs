//! Test fixtures: dockerd answers captured on this project's test machine
//! (`testdata/`, see its README), parsed with bollard's models.

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
    serde_json::from_str(NETWORKS).expect("networks.json parses as bollard's model")
}

pub fn container(name: &str) -> ContainerInspectResponse {
    let (_, json) = CONTAINERS
        .iter()
        .find(|(n, _)| *n == name)
        .expect("a captured container");
    serde_json::from_str(json).expect("container JSON parses as bollard's model")
}

/// The inventory of every captured network and the named containers.
pub fn inventory(containers: &[&str]) -> Inventory {
    let containers: Vec<_> = containers.iter().map(|name| container(name)).collect();
    Inventory::from_api(&networks(), &containers)
}
