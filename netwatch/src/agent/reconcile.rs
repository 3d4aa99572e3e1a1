//! Making the kernel match a plan, from whatever is pinned.
//!
//! Order matters for enforcement: policy is written before anything is
//! attached (an attached program with no policy entry lets traffic pass),
//! bridges are attached before veths, the protected prefixes are written
//! before the uplink shield goes on, and links of interfaces that left the
//! plan are removed before their policy entries. Running it twice in a row
//! changes nothing the second time.

use std::collections::{BTreeSet, HashMap};

use log::{info, warn};

use super::{
    Plan,
    plan::{ChildTarget, SandboxTarget, Target},
};
use crate::{
    datapath::{
        Attachment, Datapath, DatapathError, detach_interface, detach_macvlan_child,
        detach_sandbox_veth, detach_uplink, pins,
    },
    policy::{CompileError, compile},
};

#[derive(Clone, Copy)]
enum Kind {
    Bridge,
    Veth,
    MacvlanParent,
    Uplink,
}

/// What one reconciliation changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Interfaces attached now.
    pub attached: Vec<Target>,
    /// Of those, interfaces the previous reconciliation had left attached:
    /// their pinned links were removed behind the agent's back (which
    /// detaches the programs) and are now attached again.
    pub repaired: Vec<Target>,
    /// Maps whose pins were removed behind the agent's back, pinned again.
    pub repinned_maps: Vec<&'static str>,
    /// Interfaces whose links were removed (ifindex).
    pub detached: Vec<u32>,
    /// Interfaces that could not be attached, with the reason. The rest of
    /// the plan is still applied.
    pub failed: Vec<(Target, String)>,
    /// macvlan children that could not be attached, with the reason.
    pub failed_children: Vec<(ChildTarget, String)>,
    /// Overlay sandbox veths that could not be attached, with the reason.
    pub failed_sandbox: Vec<(SandboxTarget, String)>,
}

impl ReconcileReport {
    /// Every interface that could not be attached: the target, the cookie
    /// of the namespace it is in (`None`: the host's), and why.
    pub fn failures(&self) -> impl Iterator<Item = (&Target, Option<u64>, &str)> {
        let host = self.failed.iter().map(|(t, why)| (t, None, why.as_str()));
        let children = self
            .failed_children
            .iter()
            .map(|(c, why)| (&c.target, Some(c.netns_cookie), why.as_str()));
        let sandboxed = self
            .failed_sandbox
            .iter()
            .map(|(v, why)| (&v.target, Some(v.netns_cookie), why.as_str()));
        host.chain(children).chain(sandboxed)
    }
}

/// Errors that stop a reconciliation before it touches the kernel.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("the policy does not compile: {0}")]
    Compile(#[from] CompileError),
    #[error(transparent)]
    Datapath(#[from] DatapathError),
}

/// What the previous reconciliation left attached, so that the next one
/// can tell an interface whose pins were removed behind the agent's back
/// from a new one.
#[derive(Clone, Debug, Default)]
pub struct ReconcileMemory {
    attached: BTreeSet<u32>,
    /// Whether the links found pinned run this process's programs (see
    /// [`Datapath::take_over_links`]).
    taken_over: bool,
    /// What each host interface was planned as: a veth first attached as
    /// a bridge port no container was named for yet, or an endpoint
    /// switched between audit and enforcement, keeps its links and changes
    /// only its policy, which the log says too.
    described: HashMap<u32, String>,
}

/// How many interfaces of `plan` have no links pinned under `root`: the
/// attaches a reconciliation is about to make (each waits for an RCU grace
/// period, see [`crate::host::rcu`]). Counted from the pins, as the
/// reconciliation itself decides.
pub fn pending_attaches(root: &std::path::Path, plan: &Plan) -> usize {
    let on_host = pins::attached_tc_ifindexes(root);
    let uplinks = pins::attached_uplink_ifindexes(root);
    let children = pins::attached_children(root);
    let sandboxed = pins::attached_sandbox_veths(root);
    let host = plan
        .bridges
        .iter()
        .chain(&plan.veths)
        .chain(&plan.macvlan_parents)
        .filter(|t| !on_host.contains(&t.ifindex))
        .count();
    let uplink = plan
        .uplinks
        .iter()
        .filter(|t| !uplinks.contains(&t.ifindex))
        .count();
    let child = plan
        .macvlan_children
        .iter()
        .filter(|c| !children.contains(&(c.netns_cookie, c.target.ifindex)))
        .count();
    let sandbox = plan
        .sandbox_veths
        .iter()
        .filter(|v| !sandboxed.contains(&(v.netns_cookie, v.target.ifindex)))
        .count();
    host + uplink + child + sandbox
}

/// Makes the datapath match `plan`, with no memory of earlier runs (see
/// [`reconcile_remembering`]).
///
/// # Errors
/// As [`reconcile_remembering`].
pub fn reconcile(datapath: &mut Datapath, plan: &Plan) -> Result<ReconcileReport, ReconcileError> {
    reconcile_remembering(datapath, plan, &mut ReconcileMemory::default())
}

/// Makes the datapath match `plan`. Per-interface failures (an interface
/// that vanished meanwhile) are reported, logged and skipped. Pins removed
/// behind the agent's back — links (which detaches the programs) or maps —
/// are put back and reported.
///
/// # Errors
/// The plan does not compile, the datapath has no pin root, or the maps
/// refuse the policy.
pub fn reconcile_remembering(
    datapath: &mut Datapath,
    plan: &Plan,
    memory: &mut ReconcileMemory,
) -> Result<ReconcileReport, ReconcileError> {
    let root = datapath
        .pin_root()
        .ok_or(DatapathError::NotPinned)?
        .to_path_buf();
    let tables = compile(&plan.specs, &plan.host_addrs)?.with_macvlan_ports(&plan.macvlan_ports)?;
    let mut report = ReconcileReport {
        repinned_maps: datapath.repin_missing_maps()?,
        ..ReconcileReport::default()
    };
    if !report.repinned_maps.is_empty() {
        warn!(
            "pinned again maps whose pins were removed behind the agent's back: {}",
            report.repinned_maps.join(", ")
        );
    }

    let wanted: BTreeSet<u32> = plan
        .bridges
        .iter()
        .chain(&plan.veths)
        .chain(&plan.macvlan_parents)
        .map(|target| target.ifindex)
        .collect();
    // Interfaces in other namespaces (macvlan children in containers,
    // overlay veths in sandboxes): their ifindex is only unique with the
    // namespace's cookie.
    type Detach = fn(&std::path::Path, u64, u32) -> Result<bool, DatapathError>;
    type InNamespaces = BTreeSet<(u64, u32)>;
    let namespaced: [(&str, InNamespaces, InNamespaces, Detach); 2] = [
        (
            "macvlan child",
            plan.macvlan_children
                .iter()
                .map(|child| (child.netns_cookie, child.target.ifindex))
                .collect(),
            pins::attached_children(&root),
            detach_macvlan_child,
        ),
        (
            "sandbox veth",
            plan.sandbox_veths
                .iter()
                .map(|veth| (veth.netns_cookie, veth.target.ifindex))
                .collect(),
            pins::attached_sandbox_veths(&root),
            detach_sandbox_veth,
        ),
    ];
    for (what, wanted, attached, detach) in namespaced {
        for (netns, ifindex) in attached.difference(&wanted) {
            detach(&root, *netns, *ifindex)?;
            info!(
                "detached netwatch from {what} ifindex {ifindex} of namespace {netns}: it left \
                 the plan"
            );
        }
    }
    for ifindex in pins::attached_tc_ifindexes(&root) {
        if !wanted.contains(&ifindex) {
            detach_interface(&root, ifindex)?;
            info!("detached netwatch from ifindex {ifindex}: it left the plan");
            report.detached.push(ifindex);
        }
    }
    let wanted_uplinks: BTreeSet<u32> = plan.uplinks.iter().map(|t| t.ifindex).collect();
    for ifindex in pins::attached_uplink_ifindexes(&root) {
        if !wanted_uplinks.contains(&ifindex) {
            detach_uplink(&root, ifindex)?;
            info!("detached the uplink shield from ifindex {ifindex}: it is no longer an uplink");
            report.detached.push(ifindex);
        }
    }
    datapath.replace(&tables)?;
    datapath.protect(&plan.protected)?;
    for (target, why) in &plan.refused {
        warn!(
            "refused to attach to {} ({}, ifindex {}): {why}",
            target.what, target.ifname, target.ifindex
        );
        report.failed.push((target.clone(), why.clone()));
    }
    for (kind, list) in [
        (Kind::Bridge, &plan.bridges),
        (Kind::Veth, &plan.veths),
        (Kind::MacvlanParent, &plan.macvlan_parents),
        (Kind::Uplink, &plan.uplinks),
    ] {
        for target in list {
            let result = match kind {
                Kind::Bridge => datapath.attach_bridge(&target.ifname, target.ifindex),
                Kind::Veth => datapath.attach_veth(&target.ifname, target.ifindex),
                Kind::MacvlanParent => {
                    datapath.attach_macvlan_parent(&target.ifname, target.ifindex)
                }
                Kind::Uplink => datapath.attach_uplink(&target.ifname, target.ifindex),
            };
            match result {
                Ok(Attachment::Attached) if memory.attached.contains(&target.ifindex) => {
                    warn!(
                        "attached again to {} ({}, ifindex {}): its pinned links were removed \
                         behind the agent's back, which detached it",
                        target.what, target.ifname, target.ifindex
                    );
                    report.attached.push(target.clone());
                    report.repaired.push(target.clone());
                }
                Ok(Attachment::Attached) => {
                    info!(
                        "attached to {} ({}, ifindex {})",
                        target.what, target.ifname, target.ifindex
                    );
                    report.attached.push(target.clone());
                }
                Ok(Attachment::AlreadyAttached) => {
                    if let Some(was) = memory.described.get(&target.ifindex)
                        && *was != target.what
                    {
                        info!(
                            "now guarding {} ({}, ifindex {}) as such; it was {was}",
                            target.what, target.ifname, target.ifindex
                        );
                    }
                }
                Err(e) => {
                    warn!(
                        "refused to attach to {} ({}, ifindex {}): {e}",
                        target.what, target.ifname, target.ifindex
                    );
                    report.failed.push((target.clone(), e.to_string()));
                }
            }
        }
    }
    // Children after their parents: a child's frames towards the LAN are
    // judged at its parent, which must hold first.
    for child in &plan.macvlan_children {
        let target = &child.target;
        match datapath.attach_macvlan_child(
            child.pid,
            child.netns_cookie,
            &target.ifname,
            target.ifindex,
        ) {
            Ok(Attachment::Attached) => {
                info!(
                    "attached to {} ({} in pid {}'s namespace, ifindex {})",
                    target.what, target.ifname, child.pid, target.ifindex
                );
                report.attached.push(target.clone());
            }
            Ok(Attachment::AlreadyAttached) => {}
            Err(e) => {
                warn!(
                    "refused to attach to {} ({} in pid {}'s namespace, ifindex {}): {e}",
                    target.what, target.ifname, child.pid, target.ifindex
                );
                report.failed_children.push((child.clone(), e.to_string()));
            }
        }
    }
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
                    "attached to {} ({} in {}, ifindex {})",
                    target.what,
                    target.ifname,
                    veth.sandbox.display(),
                    target.ifindex
                );
                report.attached.push(target.clone());
            }
            Ok(Attachment::AlreadyAttached) => {}
            Err(e) => {
                warn!(
                    "refused to attach to {} ({} in {}, ifindex {}): {e}",
                    target.what,
                    target.ifname,
                    veth.sandbox.display(),
                    target.ifindex
                );
                report.failed_sandbox.push((veth.clone(), e.to_string()));
            }
        }
    }
    // The policy is in this process's maps now: links an earlier agent
    // pinned can run this process's programs, and maps it could not adopt
    // can take the old ones' pins.
    if !memory.taken_over {
        match datapath.take_over_links() {
            Ok(done) => {
                if done.switched > 0 || !done.maps_replaced.is_empty() {
                    info!(
                        "took over {} pinned link(s) in place (each now runs this agent's \
                         program; none was detached){}",
                        done.switched,
                        if done.maps_replaced.is_empty() {
                            String::new()
                        } else {
                            format!("; pinned maps replaced: {}", done.maps_replaced.join(", "))
                        }
                    );
                }
                if done.ipv4_flows_moved > 0 {
                    info!(
                        "moved {} IPv4 flow(s) an earlier netwatch kept in FLOWS into FLOWS4, \
                         where this version's programs count them",
                        done.ipv4_flows_moved
                    );
                }
                memory.taken_over = true;
            }
            Err(e) => warn!(
                "cannot take over the links an earlier agent pinned ({e}); they keep running \
                 its programs, retried at the next sync"
            ),
        }
    }
    memory.described = [
        &plan.bridges,
        &plan.veths,
        &plan.macvlan_parents,
        &plan.uplinks,
    ]
    .into_iter()
    .flatten()
    .map(|t| (t.ifindex, t.what.clone()))
    .collect();
    memory.attached = pins::attached_tc_ifindexes(&root)
        .into_iter()
        .chain(pins::attached_uplink_ifindexes(&root))
        .collect();
    if !report.attached.is_empty() || !report.detached.is_empty() {
        info!(
            "reconciled: {} attached, {} detached, {} failed",
            report.attached.len(),
            report.detached.len(),
            report.failures().count()
        );
    }
    Ok(report)
}
