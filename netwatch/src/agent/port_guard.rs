//! Guarding bridges and their ports as they appear, without waiting for
//! Docker.
//!
//! The agent knows which bridge device belongs to which network, and with
//! what policy: from its saved plan at start ([`super::saved_plan`]), from
//! each sync afterwards. When the kernel announces a bridge of such a
//! network, or an interface enslaved to one ([`crate::host::links`]), the guard
//! writes the network-wide policy for it and attaches at once — the
//! bridge's own programs, or the veth programs on the port. It only ever
//! adds: an interface already attached keeps what it has (a previous
//! agent's full policy is better than a provisional one), and nothing is
//! detached here; the next sync with Docker replaces provisional policies
//! with each container's own and removes what left.
//!
//! macvlan networks the same way: libnetwork creates a container's child
//! of the network's parent in the host namespace some 200 ms before it
//! moves it into the container's and the container can send (measured,
//! docs/drivers.md). The guard attaches `macvlan_child` to a new child of a
//! guarded parent at once, with the network's network-wide policy keyed by
//! the child's ifindex ([`Datapath::attach_provisional_child`]); the link
//! goes with the device, and the reconcile adopts it once Docker names the
//! container.

use std::{collections::HashMap, net::IpAddr};

use log::{info, warn};

use super::{AttachPace, BridgePort, HostState, NetworkState, ProvisionalChild, plan};
use crate::{
    datapath::{Attachment, Datapath, pins},
    host::links::LinkState,
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
    /// macvlan networks whose parent is known (ifindex ≠ 0).
    macvlan: Vec<NetworkState>,
    source: Source,
    /// Bridge device name → ifindex.
    bridges: HashMap<String, u32>,
}

/// What one pass attached, for tests and the log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Guarded {
    pub bridges: Vec<String>,
    pub ports: Vec<String>,
    /// New macvlan children attached in the host namespace.
    pub children: Vec<String>,
    pub failed: Vec<(String, String)>,
}

impl PortGuard {
    /// A guard for `networks` (bridge networks; their bridges' ifindexes
    /// may be unknown, 0).
    pub fn new(networks: Vec<NetworkState>, source: Source) -> PortGuard {
        let mut guard = PortGuard {
            networks: Vec::new(),
            macvlan: Vec::new(),
            source,
            bridges: HashMap::new(),
        };
        guard.set_networks(networks, source);
        guard
    }

    /// Replaces the networks (after a sync with Docker).
    pub fn set_networks(&mut self, networks: Vec<NetworkState>, source: Source) {
        self.macvlan = networks
            .iter()
            .filter(|n| {
                n.driver == "macvlan" && n.macvlan_parent.as_ref().is_some_and(|(_, i)| *i != 0)
            })
            .cloned()
            .collect();
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
        self.networks.is_empty() && self.macvlan.is_empty()
    }

    /// Guards what `links` show: bridges of the guard's networks and their
    /// ports, attached if they are not already. `links` may be every
    /// interface (a dump) or the ones that changed (notifications).
    pub fn guard(
        &mut self,
        links: &[LinkState],
        datapath: &mut Datapath,
        host_addrs: &[IpAddr],
        pace: &AttachPace,
    ) -> Guarded {
        let mut guarded = Guarded::default();
        self.guard_children(links, datapath, host_addrs, pace, &mut guarded);
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
        let _expedited = pace.expedite(|| Some(format!("{} new interface(s)", wanted.len())));
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

    /// Attaches `macvlan_child` to the new macvlan children among `links`
    /// whose parent is a guarded network's, with that network's
    /// network-wide policy, while they are still in the host namespace.
    fn guard_children(
        &self,
        links: &[LinkState],
        datapath: &mut Datapath,
        host_addrs: &[IpAddr],
        pace: &AttachPace,
        guarded: &mut Guarded,
    ) {
        let new = new_children(&self.macvlan, links);
        if new.is_empty() {
            return;
        }
        let Some(root) = datapath.pin_root().map(ToOwned::to_owned) else {
            return;
        };
        let new: Vec<(&LinkState, u32)> = new
            .into_iter()
            .filter(|(link, parent)| {
                !pins::provisional_child_path(&root, *parent, link.ifindex).exists()
            })
            .collect();
        if new.is_empty() {
            return;
        }
        let state = HostState {
            networks: self.macvlan.clone(),
            provisional_children: new
                .iter()
                .map(|(link, parent)| ProvisionalChild {
                    parent: *parent,
                    ifindex: link.ifindex,
                })
                .collect(),
            host_addrs: host_addrs.to_vec(),
            ..HostState::default()
        };
        let plan = plan(&state);
        let specs: Vec<_> = plan
            .specs
            .iter()
            .filter(|s| new.iter().any(|(link, _)| link.ifindex == s.ifindex))
            .cloned()
            .collect();
        let tables = match compile(&specs, host_addrs) {
            Ok(tables) => tables,
            Err(e) => {
                warn!("cannot guard new macvlan children before Docker names them: {e}");
                return;
            }
        };
        // Policy first: a link whose ifindex has no policy passes everything.
        if let Err(e) = datapath.apply(&tables) {
            warn!("cannot write the policy of new macvlan children: {e}");
            return;
        }
        let _expedited = pace.expedite(|| Some(format!("{} new macvlan child(ren)", new.len())));
        for (link, parent) in new {
            if !specs.iter().any(|s| s.ifindex == link.ifindex) {
                continue;
            }
            match datapath.attach_provisional_child(&link.ifname, link.ifindex, parent) {
                Ok(Attachment::Attached) => {
                    info!(
                        "attached to new macvlan child {} (ifindex {}) of parent ifindex {parent} \
                         as it appeared, before it is moved into its container",
                        link.ifname, link.ifindex
                    );
                    guarded.children.push(link.ifname.clone());
                }
                Ok(Attachment::AlreadyAttached) => {}
                Err(e) => {
                    // Moved already (the agent was late), or gone: the
                    // reconcile attaches once Docker names the container.
                    warn!(
                        "refused to attach to new macvlan child {} (ifindex {}) as it \
                         appeared: {e}",
                        link.ifname, link.ifindex
                    );
                    guarded.failed.push((link.ifname.clone(), e.to_string()));
                }
            }
        }
    }
}

/// The macvlan children among `links` (in the host namespace) whose parent
/// is one of `networks`' parents, with that parent's ifindex.
fn new_children<'a>(
    networks: &[NetworkState],
    links: &'a [LinkState],
) -> Vec<(&'a LinkState, u32)> {
    links
        .iter()
        .filter(|link| link.kind.as_deref() == Some("macvlan"))
        .filter_map(|link| {
            let lower = link.lower?;
            networks
                .iter()
                .any(|n| n.macvlan_parent.as_ref().is_some_and(|(_, p)| *p == lower))
                .then_some((link, lower))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(ifindex: u32, kind: &str, lower: Option<u32>) -> LinkState {
        LinkState {
            ifindex,
            ifname: format!("veth{ifindex}"),
            master: None,
            kind: Some(kind.into()),
            lower,
        }
    }

    #[test]
    fn only_macvlan_children_of_guarded_parents_are_new_children() {
        let lan = NetworkState {
            name: "lan".into(),
            driver: "macvlan".into(),
            internal: true,
            bridge: None,
            macvlan_parent: Some(("nwlan0".into(), 60)),
            overlay_sandbox: None,
            subnets: vec!["198.18.60.0/24".parse().unwrap()],
            gateways: Vec::new(),
            labels: Default::default(),
        };
        let links = [
            link(61, "macvlan", Some(60)),
            // a child of another parent
            link(62, "macvlan", Some(70)),
            // a veth whose peer is 60
            link(63, "veth", Some(60)),
            // a macvlan whose lower device is in another namespace
            link(64, "macvlan", None),
        ];
        let found: Vec<(u32, u32)> = new_children(&[lan], &links)
            .into_iter()
            .map(|(l, p)| (l.ifindex, p))
            .collect();
        assert_eq!(found, [(61, 60)]);
    }
}
