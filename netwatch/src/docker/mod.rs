//! Docker integration: the Engine API client and the inventory of networks,
//! containers and endpoints.

#[cfg(test)]
pub(crate) mod captured;
mod client;
mod error;
mod inventory;
mod snapshot;

pub use client::{Client, DEFAULT_HOST};
pub use error::DockerError;
pub use inventory::{
    BRIDGE_NAME_OPTION, COMPOSE_NETWORK_LABEL, COMPOSE_PROJECT_LABEL, COMPOSE_SERVICE_LABEL,
    Container, ContainerLookupError, Endpoint, GATEWAY_BRIDGE, Inventory, Labels,
    MACVLAN_MODE_OPTION, Network, PARENT_OPTION, PublishedPort, SWARM_SERVICE_LABEL, Subnet,
    project_of, service_of,
};
pub use snapshot::Snapshot;
