//! Guarding bridges and their ports as they appear, without waiting for
//! Docker.
//!
//! The agent knows which bridge device belongs to which network, and with
//! what policy: from its saved plan at start ([`super::saved_plan`]), from
//! each sync afterwards. When the kernel announces a bridge of such a
//! network, or an interface enslaved to one ([`crate::links`]), the guard
//! writes the network-wide policy for it and attaches at once — the
//! bridge's own programs, or the veth programs on the port. It only ever
//! adds: an interface already attached keeps what it has (a previous
//! agent's full policy is better than a provisional one), and nothing is
//! detached here; the next sync with Docker replaces provisional policies
//! with each container's own and removes what left.

use std::{collections::HashMap, net::IpAddr};

use log::{info, warn};

use super::{BridgePort, HostState, NetworkState, plan};
use crate::{
    datapath::{Attachment, Datapath, pins},
    links::LinkState,
    policy::compile,
};

/// Where the guard's networks came from, for the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The plan a previous agent saved: Docker has not answered yet.
    SavedPlan,
    /// This agent's last sync with Docker.
    LastSync,
}

/// The bridge networks to guard, and their bridges' ifindexes as last
/// seen.
#[derive(Debug)]
pub struct PortGuard {
    networks: Vec<NetworkState>,
    source: Source,
    /// Bridge device name → ifindex.
    bridges: HashMap<String, u32>,
}

/// What one pass attached, for tests and the log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Guarded {
    pub bridges: Vec<String>,
    pub ports: Vec<String>,
    pub failed: Vec<(String, String)>,
}

impl PortGuard {
    /// A guard for `networks` (bridge networks; their bridges' ifindexes
    /// may be unknown, 0).
    pub fn new(networks: Vec<NetworkState>, source: Source) -> PortGuard {
        let mut guard = PortGuard {
            networks: Vec::new(),
            source,
            bridges: HashMap::new(),
        };
        guard.set_networks(networks, source);
        guard
    }

    /// Replaces the networks (after a sync with Docker).
    pub fn set_networks(&mut self, networks: Vec<NetworkState>, source: Source) {
        self.networks = networks
            .into_iter()
            .filter(|n| n.driver == "bridge" && n.bridge.is_some())
            .collect();
        self.source = source;
        self.bridges.clear();
        for network in &self.networks {
            if let Some((name, ifindex)) = &network.bridge
                && *ifindex != 0
            {
                self.bridges.insert(name.clone(), *ifindex);
            }
        }
    }

    /// Where the guard's networks came from.
    pub fn source(&self) -> Source {
        self.source
    }

    /// How many networks the guard holds.
    pub fn len(&self) -> usize {
        self.networks.len()
    }

    /// Whether the guard holds no network.
    pub fn is_empty(&self) -> bool {
        self.networks.is_empty()
    }

    /// Guards what `links` show: bridges of the guard's networks and their
    /// ports, attached if they are not already. `links` may be every
    /// interface (a dump) or the ones that changed (notifications).
    pub fn guard(
        &mut self,
        links: &[LinkState],
        datapath: &mut Datapath,
        host_addrs: &[IpAddr],
    ) -> Guarded {
        let mut guarded = Guarded::default();
        if self.networks.is_empty() {
            return guarded;
        }
        for link in links {
            if self.networks.iter().any(|n| {
                n.bridge
                    .as_ref()
                    .is_some_and(|(name, _)| *name == link.ifname)
            }) {
                self.bridges.insert(link.ifname.clone(), link.ifindex);
            }
        }
        let by_ifindex: HashMap<u32, &str> = self
            .networks
            .iter()
            .filter_map(|n| {
                let (name, _) = n.bridge.as_ref()?;
                Some((*self.bridges.get(name)?, n.name.as_str()))
            })
            .collect();
        let bridge_ports: Vec<BridgePort> = links
            .iter()
            .filter_map(|link| {
                let network = by_ifindex.get(&link.master?)?;
                Some(BridgePort {
                    network: (*network).to_owned(),
                    ifname: link.ifname.clone(),
                    ifindex: link.ifindex,
                })
            })
            .collect();
        let bridges_seen: Vec<u32> = links
            .iter()
            .map(|l| l.ifindex)
            .filter(|i| by_ifindex.contains_key(i))
            .collect();
        if bridge_ports.is_empty() && bridges_seen.is_empty() {
            return guarded;
        }
        let state = HostState {
            networks: self
                .networks
                .iter()
                .filter_map(|n| {
                    let (name, _) = n.bridge.as_ref()?;
                    let ifindex = *self.bridges.get(name)?;
                    let mut n = n.clone();
                    n.bridge = Some((name.clone(), ifindex));
                    Some(n)
                })
                .collect(),
            bridge_ports,
            host_addrs: host_addrs.to_vec(),
            ..HostState::default()
        };
        let plan = plan(&state);
        let Some(root) = datapath.pin_root().map(ToOwned::to_owned) else {
            return guarded;
        };
        // Only what `links` showed, and only what is not attached yet.
        let wanted: Vec<(bool, &super::Target)> = plan
            .bridges
            .iter()
            .filter(|t| bridges_seen.contains(&t.ifindex))
            .map(|t| (true, t))
            .chain(plan.veths.iter().map(|t| (false, t)))
            .filter(|(_, t)| !pins::veth_attached(&root, t.ifindex))
            .collect();
        if wanted.is_empty() {
            return guarded;
        }
        let specs: Vec<_> = plan
            .specs
            .iter()
            .filter(|s| wanted.iter().any(|(_, t)| t.ifindex == s.ifindex))
            .cloned()
            .collect();
        let tables = match compile(&specs, host_addrs) {
            Ok(tables) => tables,
            Err(e) => {
                warn!("cannot guard new interfaces before Docker names them: {e}");
                return guarded;
            }
        };
        if let Err(e) = datapath.apply(&tables) {
            warn!("cannot write the policy of new interfaces: {e}");
            return guarded;
        }
        let from = match self.source {
            Source::SavedPlan => "from the saved plan, before Docker answered",
            Source::LastSync => "as it appeared",
        };
        for (is_bridge, target) in wanted {
            let result = if is_bridge {
                datapath.attach_bridge(&target.ifname, target.ifindex)
            } else {
                datapath.attach_veth(&target.ifname, target.ifindex)
            };
            match result {
                Ok(Attachment::Attached) => {
                    info!(
                        "attached to {} ({}, ifindex {}) {from}",
                        target.what, target.ifname, target.ifindex
                    );
                    if is_bridge {
                        guarded.bridges.push(target.ifname.clone());
                    } else {
                        guarded.ports.push(target.ifname.clone());
                    }
                }
                Ok(Attachment::AlreadyAttached) => {}
                Err(e) => {
                    // Often the interface went away again; the next sync
                    // reports what still matters.
                    warn!(
                        "refused to attach to {} ({}, ifindex {}) {from}: {e}",
                        target.what, target.ifname, target.ifindex
                    );
                    guarded.failed.push((target.ifname.clone(), e.to_string()));
                }
            }
        }
        guarded
    }
}
