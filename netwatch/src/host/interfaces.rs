//! Endpoint → host veth: which host interface carries a container's endpoint.
//!
//! Docker connects a container to a bridge network with a veth pair: one end
//! (`eth0`, `eth1`, …) inside the container's network namespace, carrying
//! the endpoint's MAC address, the other on the host, enslaved to the
//! network's bridge. netwatch's programs attach to the host end.
//!
//! [`host_veths`] finds it without parsing any command's output: a dedicated
//! thread enters the container's namespace (`/proc/<pid>/ns/net`, `setns`),
//! asks netlink for the interface that carries the MAC and reads its peer's
//! ifindex (`IFLA_LINK`), switches back, and asks netlink in the host
//! namespace for that ifindex. Only that thread ever changes namespace, and
//! it ends right after, so no error path can leave a caller's thread in the
//! container's namespace. Both ends must be veths and point at each other;
//! anything else (a macvlan, an interface of another namespace) is an error,
//! never a guess.
//!
//! An overlay network's container end is a veth too, but its peer lives in
//! the overlay's sandbox namespace (one per network and node, a file Docker
//! bind-mounts at `<exec-root>/netns/1-<network id[:10]>`), enslaved to the
//! sandbox's `br0`: [`overlay_veths`] finds the sandbox among the host's
//! nsfs mounts and the peer inside it, and reads the sandbox's cookie.
//!
//! [`route_to`] asks the same way which interface a container's own routing
//! would send a packet out of (`RTM_GETROUTE`, what `ip route get` asks), so
//! `netwatch explain` follows the route the container really has.
//!
//! Needs `CAP_SYS_ADMIN` (entering a namespace) and `CAP_SYS_PTRACE` or the
//! same user as the container's process (opening its namespace): run as root.

use std::fmt;
use std::fs::File;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use netlink_packet_route::link::{LinkAttribute, LinkInfo, LinkMessage};
use nix::sched::{CloneFlags, setns};

pub use crate::host::routes::Unroutable;
use crate::host::routes::{self, RouteAnswer};
use crate::host::rtnetlink::{Ask, RtNetlink};

/// An Ethernet MAC address, written `02:42:ac:11:00:02`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

/// A MAC address that is not six colon-separated hex bytes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid MAC address {0:?}: expected six hex bytes like 02:42:ac:11:00:02")]
pub struct MacAddrError(pub String);

impl FromStr for MacAddr {
    type Err = MacAddrError;

    fn from_str(text: &str) -> Result<MacAddr, MacAddrError> {
        let mut bytes = [0u8; 6];
        let mut parts = text.split(':');
        for byte in &mut bytes {
            let part = parts
                .next()
                .filter(|p| p.len() == 2)
                .ok_or_else(|| MacAddrError(text.to_owned()))?;
            *byte = u8::from_str_radix(part, 16).map_err(|_| MacAddrError(text.to_owned()))?;
        }
        if parts.next().is_some() {
            return Err(MacAddrError(text.to_owned()));
        }
        Ok(MacAddr(bytes))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl serde::Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Both ends of an endpoint's veth pair.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct HostVeth {
    /// The host end's name, e.g. `veth3f2a1b0`.
    pub ifname: String,
    /// The host end's ifindex in the host namespace: what netwatch attaches to.
    pub ifindex: u32,
    /// The container end's name inside the container (`eth0`, `eth1`, …).
    pub container_ifname: String,
    /// The container end's ifindex inside the container's namespace.
    pub container_ifindex: u32,
}

/// Why an endpoint's host veth could not be found. One line each, naming
/// the container process and what to check.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error(
        "cannot open the network namespace of pid {pid} (/proc/{pid}/ns/net): {source}; \
         the container may have stopped, or netwatch is not root"
    )]
    OpenNamespace {
        pid: u32,
        #[source]
        source: io::Error,
    },
    #[error("cannot enter the network namespace of pid {pid}: {source}; netwatch must run as root")]
    EnterNamespace {
        pid: u32,
        #[source]
        source: nix::Error,
    },
    #[error("cannot switch back to the host network namespace after visiting pid {pid}: {source}")]
    LeaveNamespace {
        pid: u32,
        #[source]
        source: nix::Error,
    },
    #[error("netlink ({what}): {source}")]
    Netlink {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("no interface with MAC {mac} in the network namespace of pid {pid}")]
    NoSuchMac { pid: u32, mac: MacAddr },
    #[error(
        "interface {ifname} (MAC {mac}) in the network namespace of pid {pid} is a {kind}, \
         not a veth; netwatch only handles Docker bridge endpoints"
    )]
    NotVeth {
        pid: u32,
        mac: MacAddr,
        ifname: String,
        kind: String,
    },
    #[error(
        "the host end of {ifname} in pid {pid}'s namespace (ifindex {peer_ifindex}) is not a veth \
         in netwatch's network namespace pointing back at it; is netwatch running in dockerd's \
         network namespace?"
    )]
    PeerNotHere {
        pid: u32,
        ifname: String,
        peer_ifindex: u32,
    },
    #[error(
        "pid {pid} is in netwatch's own network namespace, not a container's; dockerd's answer \
         is wrong or the container runs with --network host"
    )]
    HostNamespace { pid: u32 },
    #[error("the thread that visits pid {pid}'s network namespace panicked")]
    Panicked { pid: u32 },
    #[error(
        "dockerd reports no pid for container {container}, so its network namespace is unknown"
    )]
    NoPid { container: String },
    #[error("host veths are only looked up as root (entering a container's network namespace)")]
    NotRoot,
    #[error("this endpoint's interface was not looked up")]
    NotResolved,
    #[error(
        "interface {ifname} (MAC {mac}) in the network namespace of pid {pid} is a {kind}, \
         not a macvlan child"
    )]
    NotMacvlan {
        pid: u32,
        mac: MacAddr,
        ifname: String,
        kind: String,
    },
    #[error("a {driver} network's endpoint has no host veth (only bridge networks have one)")]
    NoHostVeth { driver: String },
    #[error(
        "no overlay sandbox namespace of network {network} on this host (no nsfs mount named \
         {sandbox} in netwatch's mount namespace); netwatch must run in dockerd's mount namespace"
    )]
    NoSandbox { network: String, sandbox: String },
    #[error("cannot open the overlay sandbox namespace {}: {source}", path.display())]
    OpenSandbox {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot enter the overlay sandbox namespace {}: {source}", path.display())]
    EnterSandbox {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error(
        "cannot switch back to the host network namespace after visiting {}: {source}",
        path.display()
    )]
    LeaveSandbox {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("{} is netwatch's own network namespace, not an overlay sandbox", path.display())]
    SandboxIsHost { path: PathBuf },
    #[error("the thread that visits {} panicked", path.display())]
    SandboxPanicked { path: PathBuf },
    #[error(
        "the sandbox end of {ifname} in pid {pid}'s namespace (ifindex {peer_ifindex}) is not a \
         veth pointing back at it in the overlay sandbox of network {network}"
    )]
    SandboxPeerNotFound {
        pid: u32,
        ifname: String,
        peer_ifindex: u32,
        network: String,
    },
    #[error(
        "the sandbox end of {ifname} in pid {pid}'s namespace is in {count} namespaces named like \
         network {network}'s sandbox; netwatch does not guess which"
    )]
    SandboxAmbiguous {
        pid: u32,
        ifname: String,
        count: usize,
        network: String,
    },
}

/// Finds the host end of the veth carrying each of `macs` in the network
/// namespace of process `pid` (a container's init process, from `docker
/// inspect`'s `State.Pid`).
///
/// The outer error covers the namespace as a whole (cannot enter it, cannot
/// talk netlink); each MAC then gets its own answer, in the order given.
///
/// # Errors
///
/// [`EndpointError::OpenNamespace`] or [`EndpointError::EnterNamespace`]
/// when the namespace cannot be entered (the container stopped, or not
/// root), [`EndpointError::Netlink`] when the kernel refuses a query, and
/// [`EndpointError::LeaveNamespace`] in the unlikely case that the visiting
/// thread cannot return (it is discarded; the caller's thread never moved).
pub fn host_veths(
    pid: u32,
    macs: &[MacAddr],
) -> Result<Vec<Result<HostVeth, EndpointError>>, EndpointError> {
    let netns = File::open(format!("/proc/{pid}/ns/net"))
        .map_err(|source| EndpointError::OpenNamespace { pid, source })?;
    // A pid in our own namespace (dockerd naming a host process, e.g. pid 1)
    // would make a host interface look like a container's end: the peer
    // check below would then judge host veths against each other.
    if same_namespace(&netns, "/proc/thread-self/ns/net") {
        return Err(EndpointError::HostNamespace { pid });
    }
    let container_ends = std::thread::scope(|scope| {
        scope
            .spawn(|| visit(pid, &netns, macs))
            .join()
            .map_err(|_| EndpointError::Panicked { pid })
    })??;
    // Back in the caller's (host) namespace: name the peers.
    let host = Netlink::open()?;
    Ok(container_ends
        .into_iter()
        .map(|end| {
            let end = end?;
            let peer = host
                .link_by_index(end.peer_ifindex)?
                .filter(|peer| {
                    peer.kind.as_deref() == Some("veth") && peer.link == Some(end.ifindex)
                })
                .ok_or_else(|| EndpointError::PeerNotHere {
                    pid,
                    ifname: end.ifname.clone(),
                    peer_ifindex: end.peer_ifindex,
                })?;
            Ok(HostVeth {
                ifname: peer.name,
                ifindex: peer.ifindex,
                container_ifname: end.ifname,
                container_ifindex: end.ifindex,
            })
        })
        .collect())
}

/// Whether `netns` is the namespace at `path` (same device and inode).
fn same_namespace(netns: &File, path: &str) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    match (netns.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// [`host_veths`] for one MAC.
///
/// # Errors
///
/// As [`host_veths`], plus that MAC's own error.
pub fn host_veth(pid: u32, mac: MacAddr) -> Result<HostVeth, EndpointError> {
    host_veths(pid, &[mac])?
        .pop()
        .unwrap_or(Err(EndpointError::NoSuchMac { pid, mac }))
}

/// Opens process `pid`'s network namespace (a container's), refusing
/// netwatch's own: a host process's pid would make host interfaces look
/// like a container's.
///
/// # Errors
/// [`EndpointError::OpenNamespace`] (the process is gone, or not root) or
/// [`EndpointError::HostNamespace`].
pub fn open_namespace(pid: u32) -> Result<File, EndpointError> {
    let netns = File::open(format!("/proc/{pid}/ns/net"))
        .map_err(|source| EndpointError::OpenNamespace { pid, source })?;
    if same_namespace(&netns, "/proc/thread-self/ns/net") {
        return Err(EndpointError::HostNamespace { pid });
    }
    Ok(netns)
}

/// Runs `work` with the calling thread in `netns` (process `pid`'s network
/// namespace, from [`open_namespace`]) and brings the thread back before
/// returning what `work` returned. Call it only on a thread made for the
/// visit (`std::thread::scope`): if the way back fails, that thread must
/// not be reused.
///
/// # Errors
/// The namespace cannot be entered or left; `work`'s own result is inside.
pub fn in_namespace<T>(
    pid: u32,
    netns: &File,
    work: impl FnOnce() -> T,
) -> Result<T, EndpointError> {
    visit_namespace(
        netns,
        work,
        |source| EndpointError::OpenNamespace { pid, source },
        |source| EndpointError::EnterNamespace { pid, source },
        |source| EndpointError::LeaveNamespace { pid, source },
    )
}

/// Opens the network namespace bind-mounted at `path` (an overlay
/// sandbox), refusing netwatch's own.
///
/// # Errors
/// [`EndpointError::OpenSandbox`] or [`EndpointError::SandboxIsHost`].
pub fn open_namespace_at(path: &Path) -> Result<File, EndpointError> {
    let netns = File::open(path).map_err(|source| EndpointError::OpenSandbox {
        path: path.to_path_buf(),
        source,
    })?;
    if same_namespace(&netns, "/proc/thread-self/ns/net") {
        return Err(EndpointError::SandboxIsHost {
            path: path.to_path_buf(),
        });
    }
    Ok(netns)
}

/// [`in_namespace`] for a namespace opened with [`open_namespace_at`]
/// (`path` names it in errors); the same rule: only on a thread made for
/// the visit.
///
/// # Errors
/// The namespace cannot be entered or left; `work`'s own result is inside.
pub fn in_namespace_at<T>(
    path: &Path,
    netns: &File,
    work: impl FnOnce() -> T,
) -> Result<T, EndpointError> {
    let path = || path.to_path_buf();
    visit_namespace(
        netns,
        work,
        |source| EndpointError::OpenSandbox {
            path: path(),
            source,
        },
        |source| EndpointError::EnterSandbox {
            path: path(),
            source,
        },
        |source| EndpointError::LeaveSandbox {
            path: path(),
            source,
        },
    )
}

fn visit_namespace<T>(
    netns: &File,
    work: impl FnOnce() -> T,
    open_error: impl FnOnce(io::Error) -> EndpointError,
    enter_error: impl FnOnce(nix::Error) -> EndpointError,
    leave_error: impl FnOnce(nix::Error) -> EndpointError,
) -> Result<T, EndpointError> {
    let home = File::open("/proc/thread-self/ns/net").map_err(open_error)?;
    setns(netns, CloneFlags::CLONE_NEWNET).map_err(enter_error)?;
    // Whatever happens in there, come back before reporting it.
    let done = work();
    setns(&home, CloneFlags::CLONE_NEWNET).map_err(leave_error)?;
    Ok(done)
}

/// A container's macvlan child: its interface inside the container's
/// namespace, the parent on the host it hangs off, and the namespace's
/// cookie.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct MacvlanChild {
    /// Inside the container (`eth0`, …).
    pub ifname: String,
    /// Inside the container's namespace: only unique there. Docker creates
    /// the child on the host and moves it, so it keeps the host-allocated
    /// ifindex unless the namespace already used it (then the kernel picks
    /// another).
    pub ifindex: u32,
    /// `IFLA_LINK`: the parent's ifindex on the host.
    pub parent_ifindex: u32,
    /// The container namespace's cookie (`SO_NETNS_COOKIE`).
    pub netns_cookie: u64,
}

/// Finds the macvlan child carrying each of `macs` in process `pid`'s
/// network namespace, with the namespace's cookie. Like [`host_veths`],
/// only a dedicated thread enters the namespace.
///
/// # Errors
/// As [`host_veths`] for the namespace as a whole; each MAC gets its own
/// answer ([`EndpointError::NoSuchMac`], [`EndpointError::NotMacvlan`]).
pub fn macvlan_children(
    pid: u32,
    macs: &[MacAddr],
) -> Result<Vec<Result<MacvlanChild, EndpointError>>, EndpointError> {
    let netns = open_namespace(pid)?;
    let (links, cookie) = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                in_namespace(pid, &netns, || {
                    let netlink = Netlink::open()?;
                    Ok((netlink.links()?, netlink.cookie()?))
                })?
            })
            .join()
            .map_err(|_| EndpointError::Panicked { pid })
    })??;
    Ok(macs
        .iter()
        .map(|mac| {
            let (link, parent_ifindex) = linked(&links, pid, *mac, "macvlan")?;
            Ok(MacvlanChild {
                ifname: link.name.clone(),
                ifindex: link.ifindex,
                parent_ifindex,
                netns_cookie: cookie,
            })
        })
        .collect())
}

/// An overlay endpoint's veth: the container's end, and its peer in the
/// overlay network's sandbox namespace, which is what netwatch attaches to.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SandboxVeth {
    /// The sandbox end's name in the sandbox (`veth0`, `veth1`, …).
    pub ifname: String,
    /// The sandbox end's ifindex in the sandbox: only unique there. Docker
    /// creates the pair on the host and moves both ends, so it keeps its
    /// host-allocated number unless the sandbox already used it (then the
    /// kernel picks another).
    pub ifindex: u32,
    /// The container end's name inside the container (`eth0`, …).
    pub container_ifname: String,
    /// The container end's ifindex inside the container's namespace.
    pub container_ifindex: u32,
    /// The sandbox namespace's file, `<exec-root>/netns/1-<network id[:10]>`.
    pub sandbox: PathBuf,
    /// The sandbox namespace's cookie (`SO_NETNS_COOKIE`).
    pub netns_cookie: u64,
}

/// The name Docker gives the sandbox namespace file of overlay network
/// `network_id` on each node: `1-` and the first 10 characters of the id.
pub fn sandbox_name(network_id: &str) -> String {
    format!("1-{}", network_id.get(..10).unwrap_or(network_id))
}

/// The nsfs mounts of `mountinfo` (the text of `/proc/self/mountinfo`)
/// named `name`: Docker's namespace files, wherever its exec-root is (the
/// default `/var/run/docker`, or a daemon's own `--exec-root`).
pub fn nsfs_mounts_named(mountinfo: &str, name: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|line| {
            let (fields, fs) = line.split_once(" - ")?;
            if fs.split(' ').next()? != "nsfs" {
                return None;
            }
            let point = fields.split(' ').nth(4)?.replace("\\040", " ");
            let path = PathBuf::from(point);
            (path.file_name()? == name).then_some(path)
        })
        .collect();
    found.sort();
    // A mount seen twice (propagated into a shared subtree) is one file.
    found.dedup();
    found
}

/// Finds, for each `(mac, overlay network id, its name)` of process `pid`'s
/// endpoints, the veth carrying `mac` in its namespace and that veth's peer
/// in the network's sandbox namespace, with the sandbox's cookie. Only
/// dedicated threads enter namespaces: one the container's, one each
/// candidate sandbox. A sandbox is a candidate when it is an nsfs mount
/// named [`sandbox_name`]; it is the one when the interface with the
/// container end's `IFLA_LINK` there is a veth whose own `IFLA_LINK` is
/// the container end. A candidate that cannot be visited (a stale mount)
/// does not hide another that fits.
///
/// # Errors
/// As [`host_veths`] for the container's namespace as a whole; each
/// endpoint gets its own answer ([`EndpointError::NoSandbox`],
/// [`EndpointError::SandboxPeerNotFound`], …).
pub fn overlay_veths(
    pid: u32,
    endpoints: &[(MacAddr, &str, &str)],
) -> Result<Vec<Result<SandboxVeth, EndpointError>>, EndpointError> {
    let macs: Vec<MacAddr> = endpoints.iter().map(|(mac, _, _)| *mac).collect();
    let netns = open_namespace(pid)?;
    let ends = std::thread::scope(|scope| {
        scope
            .spawn(|| visit(pid, &netns, &macs))
            .join()
            .map_err(|_| EndpointError::Panicked { pid })
    })??;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    Ok(ends
        .into_iter()
        .zip(endpoints)
        .map(|(end, (_, id, network))| {
            let end = end?;
            let sandbox = sandbox_name(id);
            let candidates = nsfs_mounts_named(&mountinfo, &sandbox);
            if candidates.is_empty() {
                return Err(EndpointError::NoSandbox {
                    network: (*network).to_owned(),
                    sandbox,
                });
            }
            let mut found = Vec::new();
            let mut first_error = None;
            for path in candidates {
                match sandbox_peer(&path, &end) {
                    Ok(Some(veth)) => found.push(veth),
                    Ok(None) => {}
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
            match (found.len(), first_error) {
                (1, _) => Ok(found.remove(0)),
                (0, Some(error)) => Err(error),
                (0, None) => Err(EndpointError::SandboxPeerNotFound {
                    pid,
                    ifname: end.ifname,
                    peer_ifindex: end.peer_ifindex,
                    network: (*network).to_owned(),
                }),
                (count, _) => Err(EndpointError::SandboxAmbiguous {
                    pid,
                    ifname: end.ifname,
                    count,
                    network: (*network).to_owned(),
                }),
            }
        })
        .collect())
}

/// An overlay network's sandbox namespace as the host sees it now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sandbox {
    /// Its namespace file, `<exec-root>/netns/1-<network id[:10]>`.
    pub path: PathBuf,
    /// Its cookie (`SO_NETNS_COOKIE`): the identity pins and reconciles use.
    pub netns_cookie: u64,
    /// The id the host namespace has for it: what the host's link listener
    /// tags its events with ([`crate::host::links::LinkEvent::ChangedIn`]).
    pub nsid: i32,
    /// The veths enslaved to a bridge in it (`br0`, …): every container's
    /// sandbox end, named by Docker or not yet.
    pub ports: Vec<crate::host::links::LinkState>,
}

/// Every sandbox namespace named `name` ([`sandbox_name`]) that the host
/// has mounted, looked into: one answer per mount. Called from a thread in
/// the host namespace (the nsid is that namespace's); blocking; needs root.
pub fn sandboxes_named(name: &str) -> Vec<Result<Sandbox, EndpointError>> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    nsfs_mounts_named(&mountinfo, name)
        .into_iter()
        .map(|path| look_into_sandbox(&path))
        .collect()
}

fn look_into_sandbox(path: &Path) -> Result<Sandbox, EndpointError> {
    let netns = open_namespace_at(path)?;
    let nsid = RtNetlink::open()
        .and_then(|host| host.nsid(&netns))
        .map_err(|source| EndpointError::Netlink {
            what: "asking the host's id for a sandbox namespace",
            source,
        })?;
    let (netns_cookie, links) = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                in_namespace_at(path, &netns, || {
                    let netlink = Netlink::open()?;
                    let links = crate::host::links::links_now().map_err(|source| {
                        EndpointError::Netlink {
                            what: "listing a sandbox's interfaces",
                            source,
                        }
                    })?;
                    Ok((netlink.cookie()?, links))
                })?
            })
            .join()
            .map_err(|_| EndpointError::SandboxPanicked {
                path: path.to_path_buf(),
            })
    })??;
    Ok(Sandbox {
        path: path.to_path_buf(),
        netns_cookie,
        nsid,
        ports: links
            .into_iter()
            .filter(|l| l.kind.as_deref() == Some("veth") && l.master.is_some())
            .collect(),
    })
}

/// In the sandbox at `path`: the veth that is `end`'s peer, if it is there.
fn sandbox_peer(path: &Path, end: &ContainerEnd) -> Result<Option<SandboxVeth>, EndpointError> {
    let netns = open_namespace_at(path)?;
    let (peer, cookie) = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                in_namespace_at(path, &netns, || {
                    let netlink = Netlink::open()?;
                    Ok((netlink.link_by_index(end.peer_ifindex)?, netlink.cookie()?))
                })?
            })
            .join()
            .map_err(|_| EndpointError::SandboxPanicked {
                path: path.to_path_buf(),
            })
    })??;
    Ok(peer
        .filter(|peer| peer.kind.as_deref() == Some("veth") && peer.link == Some(end.ifindex))
        .map(|peer| SandboxVeth {
            ifname: peer.name,
            ifindex: peer.ifindex,
            container_ifname: end.ifname.clone(),
            container_ifindex: end.ifindex,
            sandbox: path.to_path_buf(),
            netns_cookie: cookie,
        }))
}

/// The interface of `links` (process `pid`'s namespace) that carries `mac`,
/// which must be a device of kind `wanted` (`veth` or `macvlan`) naming its
/// peer or parent (`IFLA_LINK`, returned beside it).
fn linked<'a>(
    links: &'a [Link],
    pid: u32,
    mac: MacAddr,
    wanted: &'static str,
) -> Result<(&'a Link, u32), EndpointError> {
    let link = links
        .iter()
        .find(|link| link.mac == Some(mac))
        .ok_or(EndpointError::NoSuchMac { pid, mac })?;
    match (link.kind.as_deref(), link.link) {
        (Some(kind), Some(other)) if kind == wanted && other != 0 => Ok((link, other)),
        (kind, _) => {
            let ifname = link.name.clone();
            let kind = kind.unwrap_or("device without a kind").to_owned();
            Err(if wanted == "veth" {
                EndpointError::NotVeth {
                    pid,
                    mac,
                    ifname,
                    kind,
                }
            } else {
                EndpointError::NotMacvlan {
                    pid,
                    mac,
                    ifname,
                    kind,
                }
            })
        }
    }
}

/// The container's end of one veth, as seen inside its namespace.
struct ContainerEnd {
    ifname: String,
    ifindex: u32,
    /// `IFLA_LINK`: the peer's ifindex in the peer's namespace.
    peer_ifindex: u32,
}

/// Runs on the dedicated thread: enter, query, leave.
type Visit = Result<Vec<Result<ContainerEnd, EndpointError>>, EndpointError>;

fn visit(pid: u32, netns: &File, macs: &[MacAddr]) -> Visit {
    let links = in_namespace(pid, netns, || {
        Netlink::open().and_then(|netlink| netlink.links())
    })??;
    Ok(macs
        .iter()
        .map(|mac| {
            let (link, peer_ifindex) = linked(&links, pid, *mac, "veth")?;
            Ok(ContainerEnd {
                ifname: link.name.clone(),
                ifindex: link.ifindex,
                peer_ifindex,
            })
        })
        .collect())
}

/// What netwatch needs to know of one interface.
#[derive(Debug)]
struct Link {
    ifindex: u32,
    name: String,
    mac: Option<MacAddr>,
    /// `IFLA_INFO_KIND` (`veth`, `bridge`, …).
    kind: Option<String>,
    /// `IFLA_LINK`: for a veth, the peer's ifindex (in the peer's namespace).
    link: Option<u32>,
}

impl Link {
    fn from_message(message: LinkMessage) -> Link {
        let mut link = Link {
            ifindex: message.header.index,
            name: String::new(),
            mac: None,
            kind: None,
            link: None,
        };
        for attribute in message.attributes {
            match attribute {
                LinkAttribute::IfName(name) => link.name = name,
                LinkAttribute::Address(bytes) => {
                    link.mac = <[u8; 6]>::try_from(bytes.as_slice()).ok().map(MacAddr);
                }
                LinkAttribute::Link(peer) => link.link = Some(peer),
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        if let LinkInfo::Kind(kind) = info {
                            link.kind = Some(crate::host::links::kind_name(&kind));
                        }
                    }
                }
                _ => {}
            }
        }
        link
    }
}

/// An rtnetlink socket in the namespace of the thread that opened it, its
/// refusals worded as [`EndpointError::Netlink`] (what was being asked).
struct Netlink {
    socket: RtNetlink,
}

impl Netlink {
    fn open() -> Result<Netlink, EndpointError> {
        let socket = RtNetlink::open().map_err(|source| EndpointError::Netlink {
            what: "opening a NETLINK_ROUTE socket",
            source,
        })?;
        Ok(Netlink { socket })
    }

    /// The cookie of this socket's namespace (`SO_NETNS_COOKIE`).
    fn cookie(&self) -> Result<u64, EndpointError> {
        self.socket
            .netns_cookie()
            .map_err(|source| EndpointError::Netlink {
                what: "reading the namespace's cookie (SO_NETNS_COOKIE)",
                source,
            })
    }

    /// Every interface of this namespace (`RTM_GETLINK`, dump).
    fn links(&self) -> Result<Vec<Link>, EndpointError> {
        self.request(LinkMessage::default(), Ask::Dump, "listing interfaces")
    }

    /// The interface with `ifindex`, or `None` when there is none.
    fn link_by_index(&self, ifindex: u32) -> Result<Option<Link>, EndpointError> {
        let mut message = LinkMessage::default();
        message.header.index = ifindex;
        match self.request(message, Ask::One, "looking up an interface by index") {
            Ok(mut links) => Ok(links.pop()),
            Err(EndpointError::Netlink { source, .. })
                if source.raw_os_error() == Some(nix::libc::ENODEV) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    fn request(
        &self,
        message: LinkMessage,
        ask: Ask,
        what: &'static str,
    ) -> Result<Vec<Link>, EndpointError> {
        let links = self
            .socket
            .links(message, ask)
            .map_err(|source| EndpointError::Netlink { what, source })?;
        Ok(links.into_iter().map(Link::from_message).collect())
    }

    /// `RTM_GETROUTE` for one address: the route an outgoing packet takes.
    fn route_get(&self, dst: IpAddr) -> Result<RouteAnswer, EndpointError> {
        routes::route_get(&self.socket, dst).map_err(|source| EndpointError::Netlink {
            what: "looking up a route",
            source,
        })
    }
}

/// Where a network namespace's routing sends a packet for one destination,
/// as `ip route get` answers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// Out through this interface of the namespace.
    Via {
        ifname: String,
        ifindex: u32,
        /// The interface's MAC address; `None` for devices without one.
        mac: Option<MacAddr>,
    },
    /// The destination is an address of the namespace itself: the packet
    /// never leaves it.
    Local,
    /// No route takes the packet anywhere.
    Unroutable(Unroutable),
}

/// Asks the routing of process `pid`'s network namespace (a container's)
/// where it would send a packet for `dst`, and names the interface it
/// leaves through. Like [`host_veths`], only a dedicated thread enters the
/// namespace, and it ends right after.
///
/// # Errors
///
/// As [`host_veths`]: the namespace cannot be entered or left, or the
/// kernel refuses the query for a reason other than having no route.
pub fn route_to(pid: u32, dst: IpAddr) -> Result<Route, EndpointError> {
    let netns = File::open(format!("/proc/{pid}/ns/net"))
        .map_err(|source| EndpointError::OpenNamespace { pid, source })?;
    std::thread::scope(|scope| {
        scope
            .spawn(|| visit_route(pid, &netns, dst))
            .join()
            .map_err(|_| EndpointError::Panicked { pid })
    })?
}

fn visit_route(pid: u32, netns: &File, dst: IpAddr) -> Result<Route, EndpointError> {
    in_namespace(pid, netns, || {
        let netlink = Netlink::open()?;
        Ok(match netlink.route_get(dst)? {
            RouteAnswer::Out(ifindex) => match netlink.link_by_index(ifindex)? {
                Some(link) => Route::Via {
                    ifname: link.name,
                    ifindex,
                    mac: link.mac,
                },
                // The interface went away between the two questions.
                None => Route::Unroutable(Unroutable::NoRoute),
            },
            RouteAnswer::Local => Route::Local,
            RouteAnswer::Refused(why) => Route::Unroutable(why),
        })
    })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_round_trips() {
        let mac: MacAddr = "02:42:AC:11:00:02".parse().unwrap();
        assert_eq!(mac, MacAddr([0x02, 0x42, 0xac, 0x11, 0x00, 0x02]));
        assert_eq!(mac.to_string(), "02:42:ac:11:00:02");
        assert_eq!(
            serde_json::to_string(&mac).unwrap(),
            "\"02:42:ac:11:00:02\""
        );
    }

    #[test]
    fn bad_macs_are_rejected() {
        for text in [
            "",
            "02:42:ac:11:00",
            "02:42:ac:11:00:02:03",
            "2:42:ac:11:00:02",
            "zz:42:ac:11:00:02",
        ] {
            assert!(text.parse::<MacAddr>().is_err(), "{text:?}");
        }
    }

    #[test]
    fn overlay_sandboxes_are_found_among_nsfs_mounts_by_name() {
        // Lines as /proc/self/mountinfo has them: the main dockerd's
        // sandbox, a private one's (its own exec-root, with a space), a
        // plain file of the same name that is no namespace, a container's.
        let mountinfo = "\
612 25 0:4 net:[4026532806] /run/docker/netns/1-4w3tamq7me rw shared:5 - nsfs nsfs rw
613 25 0:4 net:[4026532807] /run/nw\\040d/exec/netns/1-4w3tamq7me rw - nsfs nsfs rw
614 25 0:4 net:[4026532806] /run/docker/netns/1-4w3tamq7me rw shared:5 - nsfs nsfs rw
615 25 8:1 /x /tmp/1-4w3tamq7me rw - ext4 /dev/sda1 rw
616 25 0:4 net:[4026532883] /run/docker/netns/15ec940b3bd5 rw - nsfs nsfs rw";
        assert_eq!(sandbox_name("4w3tamq7me8rpukn6gcvur260"), "1-4w3tamq7me");
        assert_eq!(sandbox_name("short"), "1-short");
        assert_eq!(
            nsfs_mounts_named(mountinfo, "1-4w3tamq7me"),
            [
                PathBuf::from("/run/docker/netns/1-4w3tamq7me"),
                PathBuf::from("/run/nw d/exec/netns/1-4w3tamq7me"),
            ]
        );
        assert!(nsfs_mounts_named(mountinfo, "1-gkey06s19o").is_empty());
        assert!(nsfs_mounts_named("garbage\n - \n", "1-x").is_empty());
    }

    #[test]
    fn netwatchs_own_namespace_is_no_sandbox() {
        let error = open_namespace_at(Path::new("/proc/self/ns/net")).unwrap_err();
        assert!(
            matches!(error, EndpointError::SandboxIsHost { .. }),
            "{error}"
        );
        let error = open_namespace_at(Path::new("/nonexistent/1-x")).unwrap_err();
        assert!(
            matches!(error, EndpointError::OpenSandbox { .. }),
            "{error}"
        );
    }

    #[test]
    fn a_pid_in_netwatchs_own_namespace_is_not_taken_for_a_container() {
        // Pid 1 in a hostile answer; our own pid is in the same namespace
        // and visible to unprivileged test runs too.
        let mac: MacAddr = "02:42:ac:11:00:02".parse().unwrap();
        let error = host_veths(std::process::id(), &[mac]).unwrap_err();
        assert!(
            matches!(error, EndpointError::HostNamespace { .. }),
            "{error}"
        );
    }

    #[test]
    fn route_lookup_in_a_missing_process_is_a_clear_error() {
        let error = route_to(0, IpAddr::from([203, 0, 113, 7])).unwrap_err();
        assert!(
            matches!(error, EndpointError::OpenNamespace { pid: 0, .. }),
            "{error}"
        );
    }

    #[test]
    fn missing_process_is_a_clear_error() {
        // pid 0 never has a /proc entry.
        let error = host_veth(0, MacAddr([2, 0, 0, 0, 0, 1])).unwrap_err();
        assert!(
            matches!(error, EndpointError::OpenNamespace { pid: 0, .. }),
            "{error}"
        );
    }
}
