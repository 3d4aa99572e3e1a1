//! Guarding an overlay's sandbox veths as they appear, without waiting for
//! Docker.
//!
//! libnetwork creates a container's veth pair in the host namespace, moves
//! one end into the overlay's sandbox and enslaves it to `br0` there
//! 206–296 ms before the container's first packet, and nothing in the
//! host namespace names the network (measured, docs/drivers.md). The host's
//! link listener hears the sandbox's events tagged with the host's id for
//! that namespace (nsid, [`crate::host::links::LinkEvent::ChangedIn`]); this
//! guard maps the id to a guarded overlay's sandbox (by asking the host's
//! id for each sandbox file Docker has mounted, cached, asked again when an
//! id is unknown) and attaches both veth programs there with the overlay's
//! network-wide policy, under the identity the reconcile uses (sandbox
//! cookie and ifindex), so nothing needs adopting once Docker names the
//! container: the next sync replaces the policy with the container's own.
//!
//! Within a sandbox only `br0` (one per subnet) has ports: every veth with
//! a master there is a container's end. Like [`super::port_guard`], it only
//! adds.

use std::{collections::HashMap, net::IpAddr, path::PathBuf};

use log::{info, warn};

use super::{AttachPace, HostState, NetworkState, SandboxPort, docker_state, plan};
use crate::{
    datapath::{Attachment, Datapath, pins},
    host::links::LinkState,
    policy::compile,
};

/// A guarded overlay's sandbox as last looked up.
#[derive(Clone, Debug)]
struct KnownSandbox {
    network: String,
    path: PathBuf,
    netns_cookie: u64,
}

/// The overlay networks to guard, and their sandboxes by the host's nsid.
#[derive(Debug, Default)]
pub struct SandboxGuard {
    overlays: Vec<NetworkState>,
    by_nsid: HashMap<i32, KnownSandbox>,
}

impl SandboxGuard {
    /// Replaces the networks (after a sync with Docker); only overlays whose
    /// sandbox name is known are kept.
    pub fn set_networks(&mut self, networks: &[NetworkState]) {
        self.overlays = networks
            .iter()
            .filter(|n| n.driver == "overlay" && n.overlay_sandbox.is_some())
            .cloned()
            .collect();
        self.by_nsid.clear();
    }

    /// Guards the veths that `events` (links of other namespaces, by nsid)
    /// show enslaved in a guarded overlay's sandbox; returns the names
    /// attached.
    pub fn guard(
        &mut self,
        events: &[(i32, LinkState)],
        datapath: &mut Datapath,
        host_addrs: &[IpAddr],
        pace: &AttachPace,
    ) -> Vec<String> {
        if self.overlays.is_empty() {
            return Vec::new();
        }
        let enslaved: Vec<&(i32, LinkState)> = events
            .iter()
            .filter(|(_, l)| l.kind.as_deref() == Some("veth") && l.master.is_some())
            .collect();
        if enslaved.is_empty() {
            return Vec::new();
        }
        if enslaved
            .iter()
            .any(|(nsid, _)| !self.by_nsid.contains_key(nsid))
        {
            self.look_up_sandboxes();
        }
        let ports: Vec<SandboxPort> = enslaved
            .into_iter()
            .filter_map(|(nsid, link)| {
                // Another namespace's (a container's own, say): not ours.
                let sandbox = self.by_nsid.get(nsid)?;
                Some(SandboxPort {
                    network: sandbox.network.clone(),
                    sandbox: sandbox.path.clone(),
                    netns_cookie: sandbox.netns_cookie,
                    ifname: link.ifname.clone(),
                    ifindex: link.ifindex,
                })
            })
            .collect();
        self.attach(ports, datapath, host_addrs, pace, "as it appeared")
    }

    /// Guards every port of every guarded sandbox that exists now (after
    /// the kernel dropped notifications).
    pub fn guard_existing(
        &mut self,
        datapath: &mut Datapath,
        host_addrs: &[IpAddr],
        pace: &AttachPace,
    ) -> Vec<String> {
        if self.overlays.is_empty() {
            return Vec::new();
        }
        let ports = docker_state::sandbox_ports(&self.overlays);
        self.attach(ports, datapath, host_addrs, pace, "found in its sandbox")
    }

    /// Asks the host's id of every guarded overlay's sandbox.
    fn look_up_sandboxes(&mut self) {
        self.by_nsid.clear();
        for network in &self.overlays {
            let Some(name) = &network.overlay_sandbox else {
                continue;
            };
            for sandbox in crate::host::interfaces::sandboxes_named(name) {
                match sandbox {
                    Ok(sandbox) => {
                        self.by_nsid.insert(
                            sandbox.nsid,
                            KnownSandbox {
                                network: network.name.clone(),
                                path: sandbox.path,
                                netns_cookie: sandbox.netns_cookie,
                            },
                        );
                    }
                    Err(e) => warn!("cannot look into {}'s sandbox: {e}", network.name),
                }
            }
        }
    }

    fn attach(
        &self,
        ports: Vec<SandboxPort>,
        datapath: &mut Datapath,
        host_addrs: &[IpAddr],
        pace: &AttachPace,
        how: &str,
    ) -> Vec<String> {
        let Some(root) = datapath.pin_root().map(ToOwned::to_owned) else {
            return Vec::new();
        };
        let mut ports: Vec<SandboxPort> = ports
            .into_iter()
            .filter(|p| !pins::sandbox_veth_attached(&root, p.netns_cookie, p.ifindex))
            .collect();
        // Policies are keyed by ifindex, and a sandbox's numbers are its
        // own: one that an interface of the host or of another guarded
        // namespace holds is refused here, as the plan refuses it
        // ([`plan`]'s `add_namespaced`).
        ports.retain(|port| match number_taken(&root, port) {
            Some(holder) => {
                warn!(
                    "refused to attach to sandbox veth {} (ifindex {}) of network {} {how}: its \
                     ifindex is also that of {holder}; netwatch keys policies by ifindex",
                    port.ifname, port.ifindex, port.network
                );
                false
            }
            None => true,
        });
        if ports.is_empty() {
            return Vec::new();
        }
        let state = HostState {
            networks: self.overlays.clone(),
            sandbox_ports: ports,
            host_addrs: host_addrs.to_vec(),
            ..HostState::default()
        };
        let plan = plan(&state);
        let tables = match compile(&plan.specs, host_addrs) {
            Ok(tables) => tables,
            Err(e) => {
                warn!("cannot guard new sandbox veths before Docker names them: {e}");
                return Vec::new();
            }
        };
        // Policy first: a link whose ifindex has no policy passes everything.
        if let Err(e) = datapath.apply(&tables) {
            warn!("cannot write the policy of new sandbox veths: {e}");
            return Vec::new();
        }
        let _expedited =
            pace.expedite(|| Some(format!("{} new sandbox veth(s)", plan.sandbox_veths.len())));
        let mut attached = Vec::new();
        for veth in &plan.sandbox_veths {
            let target = &veth.target;
            match datapath.attach_sandbox_veth(
                &veth.sandbox,
                veth.netns_cookie,
                &target.ifname,
                target.ifindex,
            ) {
                Ok(Attachment::Attached) => {
                    info!(
                        "attached to {} (ifindex {}) in {} {how}",
                        target.what,
                        target.ifindex,
                        veth.sandbox.display()
                    );
                    attached.push(target.ifname.clone());
                }
                Ok(Attachment::AlreadyAttached) => {}
                // Often the veth went away again; the next sync reports
                // what still matters.
                Err(e) => warn!(
                    "refused to attach to {} (ifindex {}) in {} {how}: {e}",
                    target.what,
                    target.ifindex,
                    veth.sandbox.display()
                ),
            }
        }
        attached
    }
}

/// What else holds `port`'s ifindex as its policy key: an interface of the
/// host, or an attached interface of another namespace.
fn number_taken(root: &std::path::Path, port: &SandboxPort) -> Option<String> {
    let ifindex = port.ifindex;
    match crate::host::links::link_by_index(ifindex) {
        Ok(Some(link)) => return Some(format!("host interface {}", link.ifname)),
        Ok(None) => {}
        Err(e) => return Some(format!("an unknown host interface ({e})")),
    }
    if pins::attached_children(root)
        .iter()
        .any(|(_, child)| *child == ifindex)
        || pins::provisional_children(root)
            .iter()
            .any(|child| child.ifindex == ifindex)
    {
        return Some("a macvlan child".to_owned());
    }
    pins::attached_sandbox_veths(root)
        .iter()
        .any(|(cookie, veth)| *veth == ifindex && *cookie != port.netns_cookie)
        .then(|| "a veth in another sandbox".to_owned())
}
