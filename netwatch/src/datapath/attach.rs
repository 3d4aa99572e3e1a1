//! Attaching the programs to interfaces, pinning the links, and detaching.
//!
//! Facts this depends on (checked on Linux 6.18 with aya 0.14):
//! - a TCX link whose last fd closes detaches at once (fail-open), so every
//!   link is turned into an `FdLink` and pinned under [`pins::links_dir`]
//!   before the agent may exit; a pinned link keeps enforcing after the
//!   process that made it is gone, and removing the pin detaches it;
//! - when an interface is deleted the kernel detaches its TCX links; their
//!   pins stay until netwatch removes them.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use aya::programs::{
    SchedClassifier, TcAttachType, Xdp, XdpMode,
    links::{FdLink, PinnedLink},
};
use log::{debug, info};

use super::{Datapath, DatapathError, Hook, pins};

/// What `attach_*` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attachment {
    /// The programs were attached and pinned now.
    Attached,
    /// Pinned links for the interface already existed; nothing was done.
    AlreadyAttached,
}

impl Datapath {
    fn pin_root_or_err(&self) -> Result<&Path, DatapathError> {
        self.pin_root().ok_or(DatapathError::NotPinned)
    }

    /// Where this datapath pins its links and maps, if anywhere.
    pub fn pin_root(&self) -> Option<&Path> {
        self.pin_root.as_deref()
    }

    /// Attaches `from_container` (TCX ingress) and `to_container` (TCX
    /// egress) to a container's host-side veth and pins both links. If the
    /// second attachment fails the first is removed again: an interface is
    /// never left half-attached.
    ///
    /// Minimum kernel: 6.6 (TCX).
    ///
    /// # Errors
    /// The datapath was loaded without a pin root, the interface does not
    /// exist or is not `ifindex`, or the kernel refuses.
    pub fn attach_veth(&mut self, ifname: &str, ifindex: u32) -> Result<Attachment, DatapathError> {
        self.attach_tc_pair("veth", ifname, ifindex)
    }

    /// Attaches the same two programs to a network's bridge device, for a
    /// policy with `NETWORK_WIDE` keyed by the bridge's ifindex: its TCX
    /// ingress sees what the network's containers send to the host (routed
    /// or not), its egress what the host sends into the network. Attached
    /// when the network appears, it holds those paths before any
    /// container's veth is known.
    ///
    /// Minimum kernel: 6.6 (TCX).
    ///
    /// # Errors
    /// As for [`Datapath::attach_veth`].
    pub fn attach_bridge(
        &mut self,
        ifname: &str,
        ifindex: u32,
    ) -> Result<Attachment, DatapathError> {
        self.attach_tc_pair("bridge", ifname, ifindex)
    }

    fn attach_tc_pair(
        &mut self,
        role: &str,
        ifname: &str,
        ifindex: u32,
    ) -> Result<Attachment, DatapathError> {
        let root = self.pin_root_or_err()?.to_path_buf();
        if pins::veth_attached(&root, ifindex) {
            return Ok(Attachment::AlreadyAttached);
        }
        check_ifindex(ifname, ifindex)?;
        pins::create_private_dir(&pins::links_dir(&root)).map_err(DatapathError::pin(&root))?;
        let mut pinned: Vec<PathBuf> = Vec::new();
        for (hook, attach_type) in [
            (Hook::FromContainer, TcAttachType::Ingress),
            (Hook::ToContainer, TcAttachType::Egress),
        ] {
            let path = pins::link_path(&root, hook, ifindex);
            if path.exists() {
                continue;
            }
            if let Err(e) = self.attach_tc(hook, attach_type, ifname, &path) {
                for done in &pinned {
                    let _ = remove_link_pin(done);
                }
                return Err(e);
            }
            pinned.push(path);
        }
        debug!("attached from_container/to_container to {role} {ifname} (ifindex {ifindex})");
        Ok(Attachment::Attached)
    }

    /// Attaches `macvlan_parent` (TCX egress) to a macvlan network's parent
    /// device on the host and pins the link: everything the network's
    /// children send towards the LAN passes there, whatever they do inside
    /// their namespaces.
    ///
    /// Minimum kernel: 6.6 (TCX); the program itself loads on 6.14.
    ///
    /// # Errors
    /// The macvlan programs are not loaded (see
    /// [`Datapath::macvlan_support`]), or as for [`Datapath::attach_veth`].
    pub fn attach_macvlan_parent(
        &mut self,
        ifname: &str,
        ifindex: u32,
    ) -> Result<Attachment, DatapathError> {
        let root = self.pin_root_or_err()?.to_path_buf();
        let path = pins::link_path(&root, Hook::MacvlanParent, ifindex);
        if path.exists() {
            return Ok(Attachment::AlreadyAttached);
        }
        self.require_macvlan()?;
        check_ifindex(ifname, ifindex)?;
        pins::create_private_dir(&pins::links_dir(&root)).map_err(DatapathError::pin(&root))?;
        self.attach_tc(Hook::MacvlanParent, TcAttachType::Egress, ifname, &path)?;
        debug!("attached macvlan_parent to {ifname} (ifindex {ifindex})");
        Ok(Attachment::Attached)
    }

    /// Attaches `macvlan_child` (TCX ingress) to a macvlan child, interface
    /// `ifname`/`ifindex` of the network namespace of process `pid` (the
    /// container's), and pins the link in this host's bpffs: a TCX link
    /// holds its device wherever the device lives, and the pin keeps it after
    /// the agent. Only a dedicated thread enters the namespace; it checks
    /// there that the namespace is the one whose cookie is `netns` (the pid
    /// was not reused) and that the interface is still `ifindex`.
    ///
    /// Minimum kernel: 6.6 (TCX); the program itself loads on 6.14.
    ///
    /// # Errors
    /// The macvlan programs are not loaded, the namespace cannot be entered
    /// or is another one, the interface is gone, or the kernel refuses.
    pub fn attach_macvlan_child(
        &mut self,
        pid: u32,
        netns: u64,
        ifname: &str,
        ifindex: u32,
    ) -> Result<Attachment, DatapathError> {
        let root = self.pin_root_or_err()?.to_path_buf();
        let path = pins::child_link_path(&root, netns, ifindex);
        if path.exists() {
            return Ok(Attachment::AlreadyAttached);
        }
        self.require_macvlan()?;
        pins::create_private_dir(&pins::links_dir(&root)).map_err(DatapathError::pin(&root))?;
        let name = Hook::MacvlanChild.program_name();
        let program: &mut SchedClassifier = self.program_mut(name)?;
        let prog_id = program.info().map_err(DatapathError::program(name))?.id();
        // A link attached as the child appeared, in the host namespace,
        // that went with it into the container: adopted, not doubled.
        let (live, _) = super::provisional::provisional_links(&root);
        let candidate = super::provisional::adoptable(&live, ifindex, prog_id).cloned();
        let namespace =
            crate::host::interfaces::open_namespace(pid).map_err(DatapathError::Namespace)?;
        let outcome = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    crate::host::interfaces::in_namespace(pid, &namespace, || {
                        let here = crate::host::netns_cookie();
                        if here != Some(netns) {
                            return Err(DatapathError::NamespaceChanged { pid, netns });
                        }
                        check_ifindex(ifname, ifindex)?;
                        if candidate.is_some() {
                            let (_, running) =
                                SchedClassifier::query_tcx(ifname, TcAttachType::Ingress)
                                    .map_err(DatapathError::program(name))?;
                            if running.iter().any(|p| p.id() == prog_id) {
                                return Ok(None);
                            }
                        }
                        let id = program
                            .attach(ifname, TcAttachType::Ingress)
                            .map_err(DatapathError::program(name))?;
                        program
                            .take_link(id)
                            .map(Some)
                            .map_err(DatapathError::program(name))
                    })
                    .map_err(DatapathError::Namespace)?
                })
                .join()
                .unwrap_or(Err(DatapathError::NamespaceChanged { pid, netns }))
        })?;
        match (outcome, candidate) {
            (Some(link), _) => {
                pin_link(link, &path)?;
                debug!(
                    "attached macvlan_child to {ifname} (ifindex {ifindex}) in pid {pid}'s \
                     namespace"
                );
                Ok(Attachment::Attached)
            }
            (None, Some(provisional)) => {
                // Renaming a pin keeps the link (and its inode's times).
                fs::rename(&provisional.pin.path, &path).map_err(|e| DatapathError::Pin {
                    path: provisional.pin.path.clone(),
                    source: e,
                })?;
                info!(
                    "adopted the link attached to macvlan child ifindex {} of parent {} as it \
                     appeared: it is {ifname} (ifindex {ifindex}) in pid {pid}'s namespace now",
                    provisional.pin.ifindex, provisional.pin.parent
                );
                Ok(Attachment::AlreadyAttached)
            }
            (None, None) => unreachable!("a child is only left alone when a link is adopted"),
        }
    }

    /// Attaches `macvlan_child` (TCX ingress) to a macvlan child of parent
    /// `parent` that has just appeared in the calling thread's namespace
    /// (the host's), before Docker moves it into its container's, and pins
    /// the link as provisional ([`pins::provisional_child_path`]): the link
    /// goes with the device, and [`Datapath::attach_macvlan_child`] adopts it
    /// once its container is known.
    ///
    /// Minimum kernel: 6.6 (TCX); the program itself loads on 6.14.
    ///
    /// # Errors
    /// The macvlan programs are not loaded, the interface is gone or was
    /// moved already, or the kernel refuses.
    pub fn attach_provisional_child(
        &mut self,
        ifname: &str,
        ifindex: u32,
        parent: u32,
    ) -> Result<Attachment, DatapathError> {
        let root = self.pin_root_or_err()?.to_path_buf();
        let path = pins::provisional_child_path(&root, parent, ifindex);
        if path.exists() {
            return Ok(Attachment::AlreadyAttached);
        }
        self.require_macvlan()?;
        check_ifindex(ifname, ifindex)?;
        pins::create_private_dir(&pins::links_dir(&root)).map_err(DatapathError::pin(&root))?;
        self.attach_tc(Hook::MacvlanChild, TcAttachType::Ingress, ifname, &path)?;
        debug!(
            "attached macvlan_child to new child {ifname} (ifindex {ifindex}) of parent {parent}"
        );
        Ok(Attachment::Attached)
    }

    /// Attaches `from_container` (TCX ingress) and `to_container` (TCX
    /// egress) to an overlay endpoint's veth, interface `ifname`/`ifindex`
    /// of the overlay sandbox namespace bind-mounted at `sandbox`, and pins
    /// both links in this host's bpffs: the sandbox end is to an overlay
    /// container what the host end of its veth is to a bridge container
    /// (what it sends arrives there, whatever it does inside its own
    /// namespace). Only dedicated threads enter the sandbox; each checks
    /// there that it is the namespace whose cookie is `netns` (the network
    /// was not removed and made again meanwhile) and that the interface is
    /// still `ifindex`. If the second link fails the first is removed
    /// again.
    ///
    /// Minimum kernel: 6.6 (TCX).
    ///
    /// # Errors
    /// The sandbox cannot be entered or is another one, the interface is
    /// gone, or the kernel refuses.
    pub fn attach_sandbox_veth(
        &mut self,
        sandbox: &Path,
        netns: u64,
        ifname: &str,
        ifindex: u32,
    ) -> Result<Attachment, DatapathError> {
        let root = self.pin_root_or_err()?.to_path_buf();
        if pins::sandbox_veth_attached(&root, netns, ifindex) {
            return Ok(Attachment::AlreadyAttached);
        }
        pins::create_private_dir(&pins::links_dir(&root)).map_err(DatapathError::pin(&root))?;
        let namespace = crate::host::interfaces::open_namespace_at(sandbox)
            .map_err(DatapathError::Namespace)?;
        let mut pinned: Vec<PathBuf> = Vec::new();
        for (hook, attach_type) in [
            (Hook::FromContainer, TcAttachType::Ingress),
            (Hook::ToContainer, TcAttachType::Egress),
        ] {
            let path = pins::sandbox_link_path(&root, hook, netns, ifindex);
            if path.exists() {
                continue;
            }
            let name = hook.program_name();
            let program: &mut SchedClassifier = self.program_mut(name)?;
            let attached = std::thread::scope(|scope| {
                scope
                    .spawn(|| {
                        crate::host::interfaces::in_namespace_at(sandbox, &namespace, || {
                            if crate::host::netns_cookie() != Some(netns) {
                                return Err(sandbox_changed(sandbox, netns));
                            }
                            check_ifindex(ifname, ifindex)?;
                            attach_and_pin(program, name, ifname, attach_type, &path)
                        })
                        .map_err(DatapathError::Namespace)?
                    })
                    .join()
                    .unwrap_or_else(|_| {
                        Err(DatapathError::Namespace(
                            crate::host::interfaces::EndpointError::SandboxPanicked {
                                path: sandbox.to_path_buf(),
                            },
                        ))
                    })
            });
            if let Err(e) = attached {
                for done in &pinned {
                    let _ = remove_link_pin(done);
                }
                return Err(e);
            }
            pinned.push(path);
        }
        debug!(
            "attached from_container/to_container to {ifname} (ifindex {ifindex}) in {}",
            sandbox.display()
        );
        Ok(Attachment::Attached)
    }

    fn require_macvlan(&self) -> Result<(), DatapathError> {
        self.macvlan
            .clone()
            .map_err(DatapathError::MacvlanUnsupported)
    }

    /// Attaches both TC programs to a veth for the lifetime of this
    /// datapath only: nothing is pinned, and the links go when the datapath
    /// is dropped or the process dies (the kernel closes its fds), which is
    /// what a standalone observing session wants. If the second attachment
    /// fails the first is removed again.
    ///
    /// Minimum kernel: 6.6 (TCX).
    ///
    /// # Errors
    /// The interface does not exist or is not `ifindex`, or the kernel
    /// refuses.
    pub fn attach_veth_for_session(
        &mut self,
        ifname: &str,
        ifindex: u32,
    ) -> Result<(), DatapathError> {
        check_ifindex(ifname, ifindex)?;
        let ingress = Hook::FromContainer.program_name();
        let program: &mut SchedClassifier = self.program_mut(ingress)?;
        let first = program
            .attach(ifname, TcAttachType::Ingress)
            .map_err(DatapathError::program(ingress))?;
        let egress = Hook::ToContainer.program_name();
        let attached = self.program_mut::<SchedClassifier>(egress).and_then(|p| {
            p.attach(ifname, TcAttachType::Egress)
                .map_err(DatapathError::program(egress))
        });
        if let Err(e) = attached {
            if let Ok(program) = self.program_mut::<SchedClassifier>(ingress) {
                let _ = program.detach(first);
            }
            return Err(e);
        }
        debug!(
            "attached from_container/to_container to {ifname} (ifindex {ifindex}) for this session"
        );
        Ok(())
    }

    fn attach_tc(
        &mut self,
        hook: Hook,
        attach_type: TcAttachType,
        ifname: &str,
        path: &Path,
    ) -> Result<(), DatapathError> {
        let name = hook.program_name();
        let program: &mut SchedClassifier = self.program_mut(name)?;
        attach_and_pin(program, name, ifname, attach_type, path)
    }

    fn program_mut<'a, T>(&'a mut self, name: &'static str) -> Result<&'a mut T, DatapathError>
    where
        &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
    {
        self.ebpf
            .program_mut(name)
            .ok_or(DatapathError::MissingProgram(name))?
            .try_into()
            .map_err(DatapathError::program(name))
    }

    /// Attaches the uplink program (XDP, driver mode where the driver has
    /// it, else generic) to an uplink interface and pins the link.
    ///
    /// Minimum kernel: 5.9 (XDP bpf links).
    ///
    /// # Errors
    /// As for [`Datapath::attach_veth`].
    pub fn attach_uplink(
        &mut self,
        ifname: &str,
        ifindex: u32,
    ) -> Result<Attachment, DatapathError> {
        let root = self.pin_root_or_err()?.to_path_buf();
        let path = pins::link_path(&root, Hook::Uplink, ifindex);
        if path.exists() {
            return Ok(Attachment::AlreadyAttached);
        }
        check_ifindex(ifname, ifindex)?;
        pins::create_private_dir(&pins::links_dir(&root)).map_err(DatapathError::pin(&root))?;
        let name = Hook::Uplink.program_name();
        let program: &mut Xdp = self.program_mut(name)?;
        let id = program
            .attach(ifname, XdpMode::Default)
            .map_err(DatapathError::program(name))?;
        let link = program
            .take_link(id)
            .map_err(DatapathError::program(name))?;
        pin_link(link, &path)?;
        debug!("attached uplink to {ifname} (ifindex {ifindex})");
        Ok(Attachment::Attached)
    }
}

/// Attaches `program` (named `name`) to `ifname` of the calling thread's
/// network namespace and pins the link at `path`.
fn attach_and_pin(
    program: &mut SchedClassifier,
    name: &'static str,
    ifname: &str,
    attach_type: TcAttachType,
    path: &Path,
) -> Result<(), DatapathError> {
    let id = program
        .attach(ifname, attach_type)
        .map_err(DatapathError::program(name))?;
    let link = program
        .take_link(id)
        .map_err(DatapathError::program(name))?;
    pin_link(link, path)
}

/// Pins a link so that it outlives this process. Only bpf links can be
/// pinned: TCX (kernel ≥ 6.6) and XDP (≥ 5.9) links are; a netlink
/// attachment, which would die with the agent, is refused (dropping it here
/// detaches it again).
fn pin_link<L: TryInto<FdLink>>(link: L, path: &Path) -> Result<(), DatapathError> {
    let link: FdLink = link.try_into().map_err(|_| DatapathError::NotALink)?;
    link.pin(path).map_err(|e| DatapathError::Pin {
        path: path.to_path_buf(),
        source: io::Error::other(e),
    })?;
    Ok(())
}

/// Removes a link's pin and detaches the link before returning.
///
/// Unlinking a pin alone drops the kernel's reference through
/// `bpf_link_put`, which frees the link from a workqueue, so the program can
/// stay attached for a moment after the pin is gone. Opening the link
/// first, unlinking, then closing our fd makes that close the last reference,
/// and closing a link fd frees it at once (`bpf_link_put_direct`).
fn remove_link_pin(path: &Path) -> io::Result<()> {
    match PinnedLink::from_pin(path) {
        Ok(link) => {
            let fd = link.unpin()?;
            drop(fd);
            Ok(())
        }
        // Not a link (or unreadable): remove it as a file.
        Err(_) => fs::remove_file(path),
    }
}

/// Refuses to attach when the name no longer denotes the expected interface
/// (it was deleted and the name reused between lookup and attach). Asks the
/// kernel in the calling thread's network namespace: /sys/class/net shows
/// the namespace sysfs was mounted in, not the thread's.
fn check_ifindex(ifname: &str, ifindex: u32) -> Result<(), DatapathError> {
    match nix::net::if_::if_nametoindex(ifname) {
        Ok(actual) if actual == ifindex => Ok(()),
        _ => Err(DatapathError::InterfaceGone {
            ifname: ifname.to_string(),
            ifindex,
        }),
    }
}

/// Removes the pinned TC links of one host interface (veth, bridge or
/// macvlan parent), which detaches them. Returns the pins removed.
///
/// # Errors
/// A pin exists but cannot be removed.
pub fn detach_interface(root: &Path, ifindex: u32) -> Result<Vec<PathBuf>, DatapathError> {
    let mut removed = Vec::new();
    for hook in [Hook::FromContainer, Hook::ToContainer, Hook::MacvlanParent] {
        let path = pins::link_path(root, hook, ifindex);
        match remove_link_pin(&path) {
            Ok(()) => removed.push(path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(DatapathError::Pin { path, source: e }),
        }
    }
    if !removed.is_empty() {
        debug!("detached netwatch from ifindex {ifindex}");
    }
    Ok(removed)
}

/// Removes the pinned link of one macvlan child (interface `ifindex` of the
/// namespace whose cookie is `netns`), which detaches it. Returns whether
/// there was one.
///
/// # Errors
/// The pin exists but cannot be removed.
pub fn detach_macvlan_child(root: &Path, netns: u64, ifindex: u32) -> Result<bool, DatapathError> {
    let path = pins::child_link_path(root, netns, ifindex);
    match remove_link_pin(&path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(DatapathError::Pin { path, source: e }),
    }
}

/// Removes the pinned links of one overlay sandbox veth (interface
/// `ifindex` of the sandbox namespace whose cookie is `netns`), which
/// detaches them. Returns whether there were any.
///
/// # Errors
/// A pin exists but cannot be removed.
pub fn detach_sandbox_veth(root: &Path, netns: u64, ifindex: u32) -> Result<bool, DatapathError> {
    let mut removed = false;
    for hook in [Hook::FromContainer, Hook::ToContainer] {
        let path = pins::sandbox_link_path(root, hook, netns, ifindex);
        match remove_link_pin(&path) {
            Ok(()) => removed = true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(DatapathError::Pin { path, source: e }),
        }
    }
    Ok(removed)
}

/// Removes the pinned uplink link of one interface, which detaches the
/// shield from it. Returns whether there was one.
///
/// # Errors
/// The pin exists but cannot be removed.
pub fn detach_uplink(root: &Path, ifindex: u32) -> Result<bool, DatapathError> {
    let path = pins::link_path(root, Hook::Uplink, ifindex);
    match remove_link_pin(&path) {
        Ok(()) => {
            debug!("detached the uplink shield from ifindex {ifindex}");
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(DatapathError::Pin { path, source: e }),
    }
}

/// Removes everything netwatch pinned under `root` — links first (which
/// detaches them), then programs and maps — and returns what was removed.
///
/// # Errors
/// A pin cannot be removed (the rest is still attempted first).
pub fn detach_all(root: &Path) -> Result<Vec<PathBuf>, DatapathError> {
    let mut removed = Vec::new();
    let mut first_error = None;
    for dir in [
        pins::links_dir(root),
        pins::progs_dir(root),
        pins::maps_dir(root),
    ] {
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                first_error.get_or_insert(DatapathError::Pin {
                    path: dir,
                    source: e,
                });
                continue;
            }
        };
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for path in paths {
            let outcome = if dir == pins::links_dir(root) {
                remove_link_pin(&path)
            } else {
                fs::remove_file(&path)
            };
            match outcome {
                Ok(()) => removed.push(path),
                Err(e) => {
                    first_error.get_or_insert(DatapathError::Pin { path, source: e });
                }
            }
        }
        let _ = fs::remove_dir(&dir);
    }
    super::upgrade::remove_stamps(root);
    let _ = fs::remove_dir(root);
    match first_error {
        Some(e) => Err(e),
        None => Ok(removed),
    }
}

/// The sandbox at `path` is no longer the one whose cookie is `netns`.
fn sandbox_changed(path: &Path, netns: u64) -> DatapathError {
    DatapathError::SandboxChanged {
        path: path.to_path_buf(),
        netns,
    }
}
