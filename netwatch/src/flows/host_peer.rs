//! Naming the host end of a flow: which `--network host` container owns
//! the socket, or else `host`.
//!
//! A container in host mode shares the host's network stack, so its
//! packets towards a guarded container carry a host address (the bridge's
//! gateway, usually) and nothing in them says who sent them. The socket
//! does: when a flow's other end is one of the host's own addresses, the
//! agent asks the kernel for the socket with that exact tuple in the host
//! namespace (`NETLINK_SOCK_DIAG`, an inet_diag request for one socket)
//! and reads the cgroup id the kernel answers with (`INET_DIAG_CGROUP_ID`,
//! Linux ≥ 5.7; the socket's cgroup v2 cgroup, taken from the process that
//! created it). A container's cgroup v2 directory (found from
//! `/proc/<its pid>/cgroup`, under the `cgroup2` mount) has that number as
//! its inode, so the id names the container.
//!
//! Done in user space once per new flow (the aggregate keeps the name for
//! the flow's life), so the datapath and its benchmarks are untouched.
//! What cannot be told is named `host`: a socket gone before the lookup (a
//! short UDP exchange, a closed connection in `TIME_WAIT`, which keeps no
//! cgroup), a protocol without sockets (ICMP), a socket of a process in no
//! container, or an answer that does not parse. Why this design and what
//! was measured: docs/drivers.md, "host and none".

use std::{
    collections::{HashMap, HashSet},
    fmt, io,
    net::{IpAddr, SocketAddr},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use log::{debug, warn};
use netlink_packet_core::{NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload};
use netlink_packet_sock_diag::{
    SockDiagMessage,
    constants::{AF_INET, AF_INET6},
    inet::{ExtensionFlags, InetRequest, SocketId, StateFlags, nlas::Nla},
};
use netlink_sys::{Socket, SocketAddr as NetlinkAddr, protocols::NETLINK_SOCK_DIAG};
use netwatch_common::packet::{IPPROTO_TCP, IPPROTO_UDP};

/// `INET_DIAG_CGROUP_ID` (include/uapi/linux/inet_diag.h): the socket's
/// cgroup v2 id, a u64 in host byte order. The kernel adds it to every
/// answer; it needs no extension flag.
pub const INET_DIAG_CGROUP_ID: u16 = 21;

/// How deep below a container's cgroup directory its sub-cgroups are
/// indexed (a container that runs systemd or its own containers puts its
/// processes there), and how many at most per container.
const SUBTREE_DEPTH: usize = 4;
const SUBTREE_LIMIT: usize = 256;

/// The host's end of a flow, as a socket of the host's stack sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostSocket {
    /// `IPPROTO_TCP` or `IPPROTO_UDP`.
    pub proto: u8,
    /// The host's address and port.
    pub local: SocketAddr,
    /// The container's address and port.
    pub remote: SocketAddr,
}

/// What the kernel says about a socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// The socket exists and belongs to this cgroup v2 cgroup.
    Cgroup(u64),
    /// The socket exists but its answer carries no cgroup (a `TIME_WAIT`
    /// or request socket, a kernel without `INET_DIAG_CGROUP_ID`).
    NoCgroup,
    /// No socket has that tuple (any more).
    Gone,
}

/// Finds the owner of a host socket; [`SockDiag`] asks the kernel.
pub trait SocketOwners: Send + Sync {
    /// # Errors
    /// The question could not be asked or the answer not read; the text
    /// says why (for the log).
    fn lookup(&self, socket: &HostSocket) -> Result<Lookup, String>;
}

/// A `NETLINK_SOCK_DIAG` socket of the namespace it was opened in (open
/// it in the host's).
pub struct SockDiag {
    socket: Mutex<(Socket, u32)>,
}

impl SockDiag {
    /// Opens the socket in the calling thread's network namespace.
    ///
    /// # Errors
    /// The kernel refuses the socket, the bind or the connect.
    pub fn open() -> io::Result<SockDiag> {
        let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
        socket.bind_auto()?;
        socket.connect(&NetlinkAddr::new(0, 0))?;
        // The kernel answers within the send (sock_diag handles a request
        // synchronously): a reply that is not there then never comes, and
        // the pipeline must never wait.
        socket.set_non_blocking(true)?;
        Ok(SockDiag {
            socket: Mutex::new((socket, 0)),
        })
    }
}

impl fmt::Debug for SockDiag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SockDiag")
    }
}

impl SocketOwners for SockDiag {
    fn lookup(&self, socket: &HostSocket) -> Result<Lookup, String> {
        let mut guard = self.socket.lock().unwrap_or_else(|e| e.into_inner());
        let (netlink, sequence) = &mut *guard;
        *sequence = sequence.wrapping_add(1);
        let request = request(socket, *sequence)?;
        netlink
            .send(&request, 0)
            .map_err(|e| format!("sock_diag request: {e}"))?;
        loop {
            let (datagram, _) = match netlink.recv_from_full() {
                Ok(answer) => answer,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Err("sock_diag gave no answer".to_owned());
                }
                Err(e) => return Err(format!("sock_diag answer: {e}")),
            };
            if let Some(lookup) = parse_answer(&datagram, *sequence)? {
                return Ok(lookup);
            }
        }
    }
}

/// The inet_diag request for the one socket with `socket`'s tuple.
fn request(socket: &HostSocket, sequence: u32) -> Result<Vec<u8>, String> {
    let family = match (socket.local, socket.remote) {
        (SocketAddr::V4(_), SocketAddr::V4(_)) => AF_INET,
        (SocketAddr::V6(_), SocketAddr::V6(_)) => AF_INET6,
        _ => return Err("a socket of two address families".to_owned()),
    };
    // The kernel's TCP lookup reads `src` as the socket's local end; its
    // UDP lookup (udp_dump_one: "src and dst are swapped for historical
    // reasons") reads `src` as the remote end. Measured both ways here
    // (tests/tests/docker_host_peers.rs, the unit test below).
    let (source, destination) = if socket.proto == IPPROTO_UDP {
        (socket.remote, socket.local)
    } else {
        (socket.local, socket.remote)
    };
    let mut packet = NetlinkMessage::new(
        NetlinkHeader::default(),
        SockDiagMessage::InetRequest(InetRequest {
            family,
            protocol: socket.proto,
            extensions: ExtensionFlags::empty(),
            states: StateFlags::all(),
            socket_id: SocketId {
                source_port: source.port(),
                destination_port: destination.port(),
                source_address: source.ip(),
                destination_address: destination.ip(),
                interface_id: 0,
                // INET_DIAG_NOCOOKIE: any socket with the tuple.
                cookie: [0xff; 8],
            },
        })
        .into(),
    );
    packet.header.flags = NLM_F_REQUEST;
    packet.header.sequence_number = sequence;
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf);
    Ok(buf)
}

/// Reads one datagram of answers: `Some` once the answer to `sequence` is
/// in it, `None` when it holds only other messages.
///
/// # Errors
/// An answer that does not parse, or a refusal other than "no such
/// socket".
fn parse_answer(datagram: &[u8], sequence: u32) -> Result<Option<Lookup>, String> {
    let mut offset = 0;
    while offset < datagram.len() {
        let message: NetlinkMessage<SockDiagMessage> =
            NetlinkMessage::deserialize(&datagram[offset..])
                .map_err(|e| format!("unreadable sock_diag answer: {e}"))?;
        let length = message.header.length as usize;
        if message.header.sequence_number == sequence {
            match message.payload {
                NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(response)) => {
                    return Ok(Some(cgroup_of(&response.nlas)));
                }
                NetlinkPayload::Error(error) => {
                    let errno = error.raw_code().abs();
                    return if errno == nix::libc::ENOENT {
                        Ok(Some(Lookup::Gone))
                    } else {
                        Err(format!("sock_diag refused: {}", error.to_io()))
                    };
                }
                _ => {}
            }
        }
        if length == 0 {
            break;
        }
        offset += length;
    }
    Ok(None)
}

fn cgroup_of(nlas: &[Nla]) -> Lookup {
    use netlink_packet_core::Nla as _;
    for nla in nlas {
        if let Nla::Other(other) = nla
            && other.kind() == INET_DIAG_CGROUP_ID
            && other.value_len() == 8
        {
            let mut value = [0u8; 8];
            other.emit_value(&mut value);
            return Lookup::Cgroup(u64::from_ne_bytes(value));
        }
    }
    Lookup::NoCgroup
}

/// A `--network host` container, as a peer is named.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostContainer {
    pub name: String,
    /// Its compose or swarm service ([`crate::docker::service_of`]).
    pub service: Option<String>,
}

/// The running `--network host` containers of `inventory`, each with its
/// init process's pid (one Docker reported no pid for is left out).
pub fn host_mode_containers(inventory: &crate::docker::Inventory) -> Vec<(HostContainer, u32)> {
    inventory
        .containers
        .iter()
        .filter(|c| c.network_mode == "host")
        .filter_map(|c| {
            let pid = c.pid?;
            let container = HostContainer {
                name: c.name.clone(),
                service: c.service.clone(),
            };
            Some((container, pid))
        })
        .collect()
}

/// The host peers of a snapshot: the host's addresses, the cgroups of its
/// host-mode containers (read now), and `sockets` to ask.
pub fn host_peers(
    inventory: &crate::docker::Inventory,
    host_addrs: &[IpAddr],
    sockets: Option<Arc<dyn SocketOwners>>,
) -> HostPeers {
    let cgroups = match &sockets {
        Some(_) => CgroupIndex::build(&host_mode_containers(inventory), &CgroupFs::host()),
        None => CgroupIndex::default(),
    };
    HostPeers::new(host_addrs.iter().copied(), cgroups, sockets)
}

/// Opens the host's sock_diag socket, or says why not (then every host
/// peer is named `host`). Call in the host's network namespace.
pub fn open_socket_owners() -> Option<Arc<dyn SocketOwners>> {
    match SockDiag::open() {
        Ok(diag) => Some(Arc::new(diag)),
        Err(e) => {
            warn!(
                "cannot open a sock_diag socket ({e}): traffic of --network host containers is named `host`"
            );
            None
        }
    }
}

/// Where the kernel's process and cgroup files are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupFs {
    /// `/proc`.
    pub proc: PathBuf,
    /// The `cgroup2` mount: `/sys/fs/cgroup` on a cgroup v2 host,
    /// `/sys/fs/cgroup/unified` on a hybrid one (as here); `None` when
    /// nothing mounts it.
    pub cgroup2: Option<PathBuf>,
}

impl CgroupFs {
    /// This host's, from `/proc/self/mountinfo`.
    pub fn host() -> CgroupFs {
        let cgroup2 = std::fs::read_to_string("/proc/self/mountinfo")
            .ok()
            .and_then(|m| cgroup2_mount(&m));
        CgroupFs {
            proc: PathBuf::from("/proc"),
            cgroup2,
        }
    }
}

/// The mount point of the first `cgroup2` file system in a mountinfo.
fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        // "36 25 0:30 / /sys/fs/cgroup/unified rw,… shared:9 - cgroup2 cgroup2 rw,…"
        let (mount, fs) = line.split_once(" - ")?;
        if fs.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let point = mount.split_whitespace().nth(4)?;
        // mountinfo escapes space, tab, newline and backslash as octal.
        Some(PathBuf::from(
            point
                .replace("\\040", " ")
                .replace("\\011", "\t")
                .replace("\\012", "\n")
                .replace("\\134", "\\"),
        ))
    })
}

/// The cgroup v2 path in a `/proc/<pid>/cgroup` (its `0::` line).
fn unified_path(proc_cgroup: &str) -> Option<&str> {
    proc_cgroup
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .map(str::trim_end)
        .filter(|path| path.starts_with('/'))
}

/// Cgroup id → the host-mode container whose cgroup (or sub-cgroup) it
/// is.
#[derive(Clone, Debug, Default)]
pub struct CgroupIndex {
    by_id: HashMap<u64, Arc<HostContainer>>,
}

impl CgroupIndex {
    /// The cgroups of `containers` (each with its init process's pid).
    /// A container whose cgroup cannot be read is left out with a debug
    /// line (it stopped, or the host has no cgroup v2 hierarchy): its
    /// sockets are then named `host`. The cgroup v2 root is never
    /// indexed: every process in no container shares it.
    pub fn build(containers: &[(HostContainer, u32)], fs: &CgroupFs) -> CgroupIndex {
        let mut index = CgroupIndex::default();
        let Some(root) = &fs.cgroup2 else {
            if !containers.is_empty() {
                debug!(
                    "no cgroup2 mount: host-mode containers' traffic is named `host` (their sockets cannot be told apart)"
                );
            }
            return index;
        };
        for (container, pid) in containers {
            let path = fs.proc.join(pid.to_string()).join("cgroup");
            let dir = match std::fs::read_to_string(&path) {
                Ok(text) => match unified_path(&text) {
                    Some("/") | None => {
                        debug!(
                            "host-mode container {}: its process {pid} has no cgroup v2 of its own",
                            container.name
                        );
                        continue;
                    }
                    Some(dir) => root.join(dir.trim_start_matches('/')),
                },
                Err(e) => {
                    debug!(
                        "host-mode container {}: {}: {e}",
                        container.name,
                        path.display()
                    );
                    continue;
                }
            };
            let shared = Arc::new(container.clone());
            for id in subtree_ids(&dir) {
                index.by_id.insert(id, Arc::clone(&shared));
            }
        }
        index
    }

    /// Names `id` after `container` (tests).
    pub fn insert(&mut self, id: u64, container: HostContainer) {
        self.by_id.insert(id, Arc::new(container));
    }

    /// The container whose cgroup `id` is.
    pub fn container(&self, id: u64) -> Option<&HostContainer> {
        self.by_id.get(&id).map(|c| &**c)
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

/// The inode numbers (= cgroup ids) of `dir` and its sub-cgroups, bounded.
fn subtree_ids(dir: &Path) -> Vec<u64> {
    let mut ids = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), 0)];
    while let Some((dir, depth)) = stack.pop() {
        if ids.len() >= SUBTREE_LIMIT {
            break;
        }
        let Ok(meta) = std::fs::metadata(&dir) else {
            continue;
        };
        ids.push(meta.ino());
        if depth >= SUBTREE_DEPTH {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push((entry.path(), depth + 1));
            }
        }
    }
    ids
}

/// Who is at the host's end of a flow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostPeer {
    /// A `--network host` container's socket.
    Container(HostContainer),
    /// The host itself, or someone the kernel's answer cannot tell.
    Host,
}

/// How a host peer was named, for the pipeline's counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// No lookup: not TCP or UDP, or no sock_diag socket.
    NotAsked,
    /// The socket's cgroup is a host-mode container's.
    Named,
    /// The socket is gone, carries no cgroup, or its cgroup is no
    /// container's.
    Host,
    /// The lookup failed (logged).
    Failed,
}

/// The host's addresses and how to tell who owns a host socket; part of
/// [`super::FlowNames`].
#[derive(Clone, Default)]
pub struct HostPeers {
    addrs: HashSet<IpAddr>,
    cgroups: CgroupIndex,
    sockets: Option<Arc<dyn SocketOwners>>,
}

impl fmt::Debug for HostPeers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostPeers")
            .field("addrs", &self.addrs)
            .field("cgroups", &self.cgroups)
            .field("sockets", &self.sockets.is_some())
            .finish()
    }
}

impl HostPeers {
    /// `addrs`: every address of the host's own interfaces; `sockets`:
    /// `None` names every host peer `host`.
    pub fn new(
        addrs: impl IntoIterator<Item = IpAddr>,
        cgroups: CgroupIndex,
        sockets: Option<Arc<dyn SocketOwners>>,
    ) -> HostPeers {
        HostPeers {
            addrs: addrs.into_iter().collect(),
            cgroups,
            sockets,
        }
    }

    /// One of the host's own addresses.
    pub fn is_host(&self, ip: IpAddr) -> bool {
        self.addrs.contains(&ip)
    }

    /// Who owns the host's end of a flow of protocol `proto` between
    /// `local` (the host's address and port) and `remote`.
    pub fn owner(&self, proto: u8, local: SocketAddr, remote: SocketAddr) -> (HostPeer, Outcome) {
        let Some(sockets) = &self.sockets else {
            return (HostPeer::Host, Outcome::NotAsked);
        };
        if !matches!(proto, IPPROTO_TCP | IPPROTO_UDP) || self.cgroups.is_empty() {
            // No host-mode container: nobody to tell apart from the host.
            return (HostPeer::Host, Outcome::NotAsked);
        }
        let socket = HostSocket {
            proto,
            local,
            remote,
        };
        match sockets.lookup(&socket) {
            Ok(Lookup::Cgroup(id)) => match self.cgroups.container(id) {
                Some(container) => (HostPeer::Container(container.clone()), Outcome::Named),
                None => (HostPeer::Host, Outcome::Host),
            },
            Ok(Lookup::NoCgroup | Lookup::Gone) => (HostPeer::Host, Outcome::Host),
            Err(e) => {
                warn!("cannot tell who owns the host socket {local} ↔ {remote}: {e}; named `host`");
                (HostPeer::Host, Outcome::Failed)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use netlink_packet_core::{ErrorMessage, NetlinkHeader};
    use netlink_packet_sock_diag::inet::{InetResponse, InetResponseHeader};

    use super::*;

    #[derive(Default)]
    struct Answers(HashMap<(u8, SocketAddr, SocketAddr), Result<Lookup, String>>);

    impl SocketOwners for Answers {
        fn lookup(&self, s: &HostSocket) -> Result<Lookup, String> {
            self.0
                .get(&(s.proto, s.local, s.remote))
                .cloned()
                .unwrap_or(Ok(Lookup::Gone))
        }
    }

    fn web() -> HostContainer {
        HostContainer {
            name: "exporter".into(),
            service: Some("metrics".into()),
        }
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn peers(answers: Answers) -> HostPeers {
        let mut cgroups = CgroupIndex::default();
        cgroups.insert(4242, web());
        HostPeers::new(
            ["172.30.0.1".parse().unwrap()],
            cgroups,
            Some(Arc::new(answers)),
        )
    }

    #[test]
    fn a_socket_in_a_host_mode_containers_cgroup_is_named_after_it() {
        let (local, remote) = (addr("172.30.0.1:40000"), addr("172.30.0.2:80"));
        let mut answers = Answers::default();
        answers
            .0
            .insert((IPPROTO_TCP, local, remote), Ok(Lookup::Cgroup(4242)));
        let peers = peers(answers);
        assert!(peers.is_host("172.30.0.1".parse().unwrap()));
        assert_eq!(
            peers.owner(IPPROTO_TCP, local, remote),
            (HostPeer::Container(web()), Outcome::Named)
        );
    }

    #[test]
    fn whatever_cannot_be_told_is_the_host() {
        let (local, remote) = (addr("172.30.0.1:40000"), addr("172.30.0.2:80"));
        let other = addr("172.30.0.1:40001");
        let third = addr("172.30.0.1:40002");
        let mut answers = Answers::default();
        // A cgroup that is no host-mode container's (a host process).
        answers
            .0
            .insert((IPPROTO_TCP, local, remote), Ok(Lookup::Cgroup(1)));
        answers
            .0
            .insert((IPPROTO_TCP, other, remote), Ok(Lookup::NoCgroup));
        answers
            .0
            .insert((IPPROTO_TCP, third, remote), Err("broken".into()));
        let peers = peers(answers);
        assert_eq!(
            peers.owner(IPPROTO_TCP, local, remote),
            (HostPeer::Host, Outcome::Host)
        );
        assert_eq!(
            peers.owner(IPPROTO_TCP, other, remote),
            (HostPeer::Host, Outcome::Host)
        );
        assert_eq!(
            peers.owner(IPPROTO_TCP, third, remote),
            (HostPeer::Host, Outcome::Failed)
        );
        // Gone before the lookup (a short UDP exchange).
        assert_eq!(
            peers.owner(IPPROTO_UDP, addr("172.30.0.1:53"), remote),
            (HostPeer::Host, Outcome::Host)
        );
        // ICMP has no socket to ask about.
        assert_eq!(
            peers.owner(1, addr("172.30.0.1:0"), addr("172.30.0.2:0")),
            (HostPeer::Host, Outcome::NotAsked)
        );
        // Without a sock_diag socket, and without host-mode containers,
        // nothing is asked.
        let blind = HostPeers::new([], CgroupIndex::default(), None);
        assert_eq!(
            blind.owner(IPPROTO_TCP, local, remote),
            (HostPeer::Host, Outcome::NotAsked)
        );
        let nobody = HostPeers::new(
            [],
            CgroupIndex::default(),
            Some(Arc::new(Answers::default())),
        );
        assert_eq!(
            nobody.owner(IPPROTO_TCP, local, remote),
            (HostPeer::Host, Outcome::NotAsked)
        );
    }

    /// A fake /proc and cgroup2 mount in a fresh directory.
    struct Tree(PathBuf);

    impl Tree {
        fn new(name: &str) -> Tree {
            let root = std::env::temp_dir()
                .join(format!("netwatch-host-peer-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&root);
            std::fs::create_dir_all(root.join("proc")).unwrap();
            std::fs::create_dir_all(root.join("cgroup")).unwrap();
            Tree(root)
        }

        fn process(&self, pid: u32, cgroup: &str) {
            let dir = self.0.join("proc").join(pid.to_string());
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("cgroup"), cgroup).unwrap();
        }

        fn cgroup(&self, path: &str) -> u64 {
            let dir = self.0.join("cgroup").join(path);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::metadata(dir).unwrap().ino()
        }

        fn fs(&self) -> CgroupFs {
            CgroupFs {
                proc: self.0.join("proc"),
                cgroup2: Some(self.0.join("cgroup")),
            }
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn cgroup_ids_map_to_the_container_whose_process_lives_there() {
        let tree = Tree::new("map");
        // cgroupfs driver on a hybrid host (as here) and systemd driver.
        tree.process(
            100,
            "4:memory:/docker/abc\n1:cpu:/docker/abc\n0::/docker/abc\n",
        );
        tree.process(200, "0::/system.slice/docker-def.scope\n");
        // A process in the root cgroup: never a container.
        tree.process(300, "0::/\n");
        let abc = tree.cgroup("docker/abc");
        let nested = tree.cgroup("docker/abc/init.scope");
        let def = tree.cgroup("system.slice/docker-def.scope");
        let other = tree.cgroup("docker/zzz");
        let host_proc = HostContainer {
            name: "root-cgroup".into(),
            service: None,
        };
        let second = HostContainer {
            name: "second".into(),
            service: None,
        };
        let index = CgroupIndex::build(
            &[
                (web(), 100),
                (second.clone(), 200),
                (host_proc, 300),
                // Stopped since the snapshot: no /proc entry.
                (web(), 999),
            ],
            &tree.fs(),
        );
        assert_eq!(index.container(abc), Some(&web()));
        assert_eq!(index.container(nested), Some(&web()), "sub-cgroups too");
        assert_eq!(index.container(def), Some(&second));
        assert_eq!(index.container(other), None);
        let root = std::fs::metadata(tree.0.join("cgroup")).unwrap().ino();
        assert_eq!(index.container(root), None, "the root is everyone's");
        assert_eq!(index.len(), 3);
        // No cgroup2 mount: nothing can be told.
        let blind = CgroupIndex::build(
            &[(web(), 100)],
            &CgroupFs {
                cgroup2: None,
                ..tree.fs()
            },
        );
        assert!(blind.is_empty());
    }

    #[test]
    fn the_cgroup2_mount_is_found_in_mountinfo() {
        let hybrid = "25 30 0:23 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755\n\
                      26 25 0:24 / /sys/fs/cgroup/unified rw,nosuid shared:5 - cgroup2 cgroup2 rw,nsdelegate\n\
                      27 25 0:25 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
        assert_eq!(
            cgroup2_mount(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let v2 = "30 1 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw\n";
        assert_eq!(cgroup2_mount(v2), Some(PathBuf::from("/sys/fs/cgroup")));
        assert_eq!(
            cgroup2_mount("27 25 0:25 / /x rw - cgroup cgroup rw\n"),
            None
        );
        assert_eq!(cgroup2_mount("garbage\n\n - \n"), None);
        assert_eq!(unified_path("0::/docker/abc\n"), Some("/docker/abc"));
        assert_eq!(unified_path("1:cpu:/docker/abc\n"), None);
        assert_eq!(unified_path("0::docker\n"), None);
    }

    fn answer(message: NetlinkMessage<SockDiagMessage>) -> Vec<u8> {
        let mut message = message;
        message.finalize();
        let mut buf = vec![0; message.buffer_len()];
        message.serialize(&mut buf);
        buf
    }

    fn response(nlas: Vec<Nla>, sequence: u32) -> Vec<u8> {
        let mut header = NetlinkHeader::default();
        header.sequence_number = sequence;
        let response = InetResponse {
            header: InetResponseHeader {
                family: AF_INET,
                state: 1,
                timer: None,
                socket_id: SocketId::new_v4(),
                recv_queue: 0,
                send_queue: 0,
                uid: 0,
                inode: 7,
            },
            nlas: nlas.into(),
        };
        answer(NetlinkMessage::new(
            header,
            SockDiagMessage::InetResponse(Box::new(response)).into(),
        ))
    }

    #[test]
    fn answers_are_read_and_unreadable_ones_are_errors_not_panics() {
        use netlink_packet_core::DefaultNla;
        let id = 0x1234_5678_9abc_u64;
        let with_id = response(
            vec![Nla::Other(DefaultNla::new(
                INET_DIAG_CGROUP_ID,
                id.to_ne_bytes().to_vec(),
            ))],
            7,
        );
        assert_eq!(parse_answer(&with_id, 7), Ok(Some(Lookup::Cgroup(id))));
        assert_eq!(parse_answer(&with_id, 8), Ok(None), "another request's");
        let without = response(vec![Nla::Mark(3)], 7);
        assert_eq!(parse_answer(&without, 7), Ok(Some(Lookup::NoCgroup)));
        let short = response(
            vec![Nla::Other(DefaultNla::new(INET_DIAG_CGROUP_ID, vec![1, 2]))],
            7,
        );
        assert_eq!(parse_answer(&short, 7), Ok(Some(Lookup::NoCgroup)));
        let mut header = NetlinkHeader::default();
        header.sequence_number = 7;
        let mut gone = ErrorMessage::default();
        gone.code = std::num::NonZeroI32::new(-nix::libc::ENOENT);
        let gone = answer(NetlinkMessage::new(header, NetlinkPayload::Error(gone)));
        assert_eq!(parse_answer(&gone, 7), Ok(Some(Lookup::Gone)));
        let mut refused = ErrorMessage::default();
        refused.code = std::num::NonZeroI32::new(-nix::libc::EPERM);
        let refused = answer(NetlinkMessage::new(header, NetlinkPayload::Error(refused)));
        assert!(parse_answer(&refused, 7).is_err());
        // Every truncation and corruption of a real answer: an error or
        // an answer, never a panic.
        for cut in 0..with_id.len() {
            let _ = parse_answer(&with_id[..cut], 7);
            let mut bent = with_id.clone();
            bent[cut] ^= 0xff;
            let _ = parse_answer(&bent, 7);
        }
    }

    /// Root only (sock_diag answers any user, but the test needs nothing
    /// more): the kernel's answer for a socket of this process carries its
    /// cgroup, and a closed one is gone.
    #[test]
    fn the_kernel_names_this_processs_sockets_cgroup() {
        let diag = SockDiag::open().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let server = listener.local_addr().unwrap();
        let client = std::net::TcpStream::connect(server).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        let local = client.local_addr().unwrap();
        let lookup = |proto, local, remote| {
            diag.lookup(&HostSocket {
                proto,
                local,
                remote,
            })
            .unwrap()
        };
        let mine = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let expected = CgroupFs::host().cgroup2.map(|root| {
            let dir = unified_path(&mine).unwrap().trim_start_matches('/');
            std::fs::metadata(root.join(dir)).unwrap().ino()
        });
        let found = lookup(IPPROTO_TCP, local, server);
        match expected {
            Some(id) => assert_eq!(found, Lookup::Cgroup(id)),
            None => assert!(matches!(found, Lookup::Cgroup(_)), "{found:?}"),
        }
        // The accepted end, from its side.
        assert_eq!(lookup(IPPROTO_TCP, server, local), found);
        // UDP: the kernel reads the tuple the other way round; a bound,
        // unconnected socket answers for any remote.
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let udp_local = udp.local_addr().unwrap();
        assert_eq!(lookup(IPPROTO_UDP, udp_local, local), found);
        drop(udp);
        assert_eq!(lookup(IPPROTO_UDP, udp_local, local), Lookup::Gone);
        drop(accepted);
        drop(client);
        drop(listener);
        // Nothing listens on the server's port any more: no socket with
        // the tuple but one in TIME_WAIT, which keeps no cgroup.
        assert!(
            matches!(
                lookup(IPPROTO_TCP, local, server),
                Lookup::Gone | Lookup::NoCgroup
            ),
            "closed"
        );
    }
}
