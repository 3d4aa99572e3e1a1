//! Reachability probes and listeners that run inside network namespaces,
//! from the test process itself: every probe and every listener socket is
//! created on a thread that first `setns`es into its namespace (a socket
//! stays in the namespace it was created in, whichever thread uses it).
//!
//! - [`Netns`]: an open handle to a network namespace (a container's, one
//!   under /run/netns, or the test process's own).
//! - [`Listeners`]: TCP (accept, write one byte, close) and UDP echo on some
//!   addresses of a namespace; ICMP echo is answered by the kernel.
//! - [`probe_all`]: TCP, UDP and ICMP probes run concurrently, one thread
//!   each, so a batch costs about one timeout however many are blocked.
//! - [`assert_route_via`]: `ip route get` inside a namespace, so a test can
//!   check that a target is reached through an interface it created
//!   *before* sending anything (see the network safety rule in TESTING.md).
//!
//! IPv4 and IPv6 are both handled (ICMPv6 echo included); the tests use
//! IPv4.

use std::{
    fmt,
    fs::File,
    io::{ErrorKind, IoSlice, IoSliceMut, Read},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket},
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    process::{Command, Output},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use nix::{
    libc,
    sched::{CloneFlags, setns},
    sys::socket::{
        ControlMessage, ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, sendmsg,
        setsockopt, sockopt,
    },
};
use socket2::{Domain, Protocol, Socket, Type};

// ---------------------------------------------------------------------------
// Namespaces

/// An open handle to a network namespace. Holding it keeps the namespace
/// alive (like any open nsfs file); clones share the handle.
#[derive(Clone)]
pub struct Netns(Arc<NetnsInner>);

struct NetnsInner {
    file: File,
    what: String,
}

impl Netns {
    /// The network namespace of process `pid` (e.g. a container's init,
    /// `TestContainer::pid()`), through /proc/PID/ns/net.
    pub fn of_pid(pid: u32) -> Netns {
        Netns::open(
            &format!("/proc/{pid}/ns/net"),
            format!("netns of pid {pid}"),
        )
    }

    /// The namespace `ip netns` knows as `name` (/run/netns/NAME).
    pub fn named(name: &str) -> Netns {
        Netns::open(&format!("/run/netns/{name}"), format!("netns {name}"))
    }

    /// The calling thread's namespace now: for a test's own thread, the
    /// machine's host namespace.
    pub fn host() -> Netns {
        Netns::open("/proc/thread-self/ns/net", "host netns".to_owned())
    }

    fn open(path: &str, what: String) -> Netns {
        let file = File::open(path)
            .unwrap_or_else(|e| panic!("cannot open {path} ({what}): {e}; is it still there?"));
        Netns(Arc::new(NetnsInner { file, what }))
    }

    /// A short description (`netns NAME`, `netns of pid PID`, `host netns`).
    pub fn describe(&self) -> &str {
        &self.0.what
    }

    /// The namespace's inode number (what `ip netns identify`, `lsns` and
    /// /proc/PID/ns/net's link show).
    pub fn inode(&self) -> u64 {
        self.0.file.metadata().map(|m| m.ino()).unwrap_or(0)
    }

    /// Moves the calling thread into this namespace. Only for threads this
    /// module spawns for that purpose.
    fn enter(&self) {
        setns(&self.0.file, CloneFlags::CLONE_NEWNET)
            .unwrap_or_else(|e| panic!("setns into {}: {e}", self.0.what));
    }

    /// Runs `f` on a new thread inside this namespace and returns its
    /// result (a panic in `f` is passed on). The calling thread's namespace
    /// never changes.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        thread::scope(|scope| {
            let handle = thread::Builder::new()
                .name(format!("in {}", self.0.what))
                .spawn_scoped(scope, || {
                    self.enter();
                    f()
                })
                .expect("spawn a thread");
            match handle.join() {
                Ok(value) => value,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// Runs a command inside this namespace (a child inherits the network
    /// namespace of the thread that forks it; the mount namespace, and so
    /// /sys, stays the host's). Returns its output whatever the exit status.
    pub fn output(&self, program: &str, args: &[&str]) -> std::io::Result<Output> {
        self.run(|| Command::new(program).args(args).output())
    }

    /// [`Netns::output`], panicking with stderr unless the command succeeds;
    /// its stdout.
    pub fn run_ok(&self, program: &str, args: &[&str]) -> String {
        let output = self
            .output(program, args)
            .unwrap_or_else(|e| panic!("cannot run {program} {args:?} in {}: {e}", self.0.what));
        assert!(
            output.status.success(),
            "{program} {args:?} in {} failed ({}): {}{}",
            self.0.what,
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

/// A lock held by a test while it uses something of a namespace that only
/// one test at a time may use (see [`Netns::lock`]); released on drop, or
/// by the kernel when the process dies.
pub struct NsLock {
    _socket: std::os::unix::net::UnixListener,
}

impl Netns {
    /// Takes the lock `name` of this namespace, shared by every process of
    /// the machine: an abstract unix socket bound inside the namespace (so
    /// nothing on disk to clean up, and freed when its holder dies). Waits
    /// up to `wait` for another holder, then panics naming `what`.
    pub fn lock(&self, name: &str, what: &str, wait: Duration) -> NsLock {
        use std::os::{linux::net::SocketAddrExt, unix::net::SocketAddr as UnixAddr};
        let address = UnixAddr::from_abstract_name(format!("netwatch-tests-{name}").as_bytes())
            .expect("abstract socket name");
        let start = Instant::now();
        let mut said = false;
        loop {
            match self.run(|| std::os::unix::net::UnixListener::bind_addr(&address)) {
                Ok(socket) => {
                    if said {
                        eprintln!("got {what} after {:?}", start.elapsed());
                    }
                    return NsLock { _socket: socket };
                }
                Err(e) if e.kind() == ErrorKind::AddrInUse => {
                    assert!(
                        start.elapsed() < wait,
                        "another test has held {what} ({self:?}) for {wait:?}"
                    );
                    if !said {
                        eprintln!("waiting for another test to release {what} ({self:?})");
                        said = true;
                    }
                    thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!("cannot take the lock for {what} in {self:?}: {e}"),
            }
        }
    }
}

impl fmt::Debug for Netns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.what)
    }
}

impl PartialEq for Netns {
    fn eq(&self, other: &Netns) -> bool {
        let (a, b) = (self.0.file.metadata(), other.0.file.metadata());
        matches!((a, b), (Ok(a), Ok(b)) if a.dev() == b.dev() && a.ino() == b.ino())
    }
}

// ---------------------------------------------------------------------------
// Routes

/// What `ip route get DST` says inside a namespace.
#[derive(Clone, Debug)]
pub struct RouteInfo {
    /// The output interface (`lo` for the namespace's own addresses).
    pub dev: String,
    /// `via` gateway, if any.
    pub via: Option<IpAddr>,
    /// The whole first line, for messages.
    pub text: String,
}

/// `ip route get dst` inside `ns`: the route the kernel would use, or the
/// error `ip` printed (e.g. `Network is unreachable`).
pub fn route_get(ns: &Netns, dst: IpAddr) -> Result<RouteInfo, String> {
    let dst_text = dst.to_string();
    let output = ns
        .output("ip", &["route", "get", &dst_text])
        .map_err(|e| format!("cannot run `ip route get {dst}` in {ns:?}: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "`ip route get {dst}` in {ns:?} failed: {}{}",
            stdout.trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let text = stdout.lines().next().unwrap_or_default().trim().to_owned();
    let word_after = |key: &str| {
        let mut words = text.split_whitespace();
        words.find(|w| *w == key)?;
        words.next().map(str::to_owned)
    };
    let dev = word_after("dev")
        .ok_or_else(|| format!("`ip route get {dst}` in {ns:?} names no device: {text}"))?;
    let via = word_after("via").and_then(|v| v.parse().ok());
    Ok(RouteInfo { dev, via, text })
}

/// The interface through which `ns` would send to `dst`.
pub fn route_dev(ns: &Netns, dst: IpAddr) -> Result<String, String> {
    route_get(ns, dst).map(|route| route.dev)
}

/// Panics unless `ns` sends to `dst` through an interface whose name starts
/// with one of `expected_dev_prefixes` (interfaces the test created, or
/// `lo` for the namespace's own addresses). Call it before sending anything
/// to `dst`. Returns the interface.
pub fn assert_route_via(ns: &Netns, dst: IpAddr, expected_dev_prefixes: &[&str]) -> String {
    let route =
        route_get(ns, dst).unwrap_or_else(|e| panic!("refusing to send to {dst} from {ns:?}: {e}"));
    assert!(
        expected_dev_prefixes
            .iter()
            .any(|prefix| route.dev.starts_with(prefix)),
        "refusing to send to {dst} from {ns:?}: the route leaves through {}, not through \
         an interface of the test ({expected_dev_prefixes:?}); `ip route get` says: {}",
        route.dev,
        route.text
    );
    route.dev
}

// ---------------------------------------------------------------------------
// Listeners

/// A counter of /proc/net/snmp in `ns`, read from a thread inside the
/// namespace: `snmp(ns, ("Tcp", "RetransSegs"))`, `("Icmp", "InEchos")`…
pub fn snmp(ns: &Netns, (group, name): (&str, &str)) -> u64 {
    let text = ns
        .run(|| std::fs::read_to_string("/proc/thread-self/net/snmp"))
        .expect("read /proc/thread-self/net/snmp");
    let prefix = format!("{group}:");
    let mut rows = text.lines().filter(|l| l.starts_with(&prefix));
    let (Some(names), Some(values)) = (rows.next(), rows.next()) else {
        panic!("no {group} rows in /proc/net/snmp");
    };
    let column = names
        .split_whitespace()
        .position(|n| n == name)
        .unwrap_or_else(|| panic!("no {group} {name} in /proc/net/snmp"));
    values
        .split_whitespace()
        .nth(column)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{group} {name} in /proc/net/snmp is not a number"))
}

/// How long a listener thread blocks before looking at its stop flag.
const POLL: Duration = Duration::from_millis(50);

/// TCP listeners (accept, write one byte, close) and UDP echo servers on
/// some addresses and one port of a namespace. Stopped and joined on drop.
pub struct Listeners {
    ns: Netns,
    addrs: Vec<IpAddr>,
    port: u16,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    tcp_accepted: Arc<AtomicUsize>,
    udp_received: Arc<AtomicUsize>,
}

/// The byte a TCP listener writes to every connection.
pub const TCP_GREETING: u8 = b'+';

impl Listeners {
    /// Listens on TCP and UDP `port` of each of `addrs` inside `ns`
    /// (`0.0.0.0` / `::` mean every address of the namespace; `::` is
    /// IPv6-only so both can be given). Panics, naming the address, when a
    /// socket cannot be bound (address not in the namespace, port taken).
    pub fn start(ns: &Netns, addrs: &[IpAddr], port: u16) -> Listeners {
        assert!(port != 0, "Listeners need a fixed port");
        let sockets: Vec<(Proto, IpAddr, Socket)> = ns.run(|| {
            let mut sockets = Vec::new();
            for &addr in addrs {
                let bind = |proto: Proto| {
                    bind_listener(addr, port, proto).unwrap_or_else(|e| {
                        panic!("cannot listen on {proto} {addr} port {port} in {ns:?}: {e}")
                    })
                };
                sockets.push((Proto::Tcp, addr, bind(Proto::Tcp)));
                sockets.push((Proto::Udp, addr, bind(Proto::Udp)));
            }
            sockets
        });
        let mut listeners = Listeners {
            ns: ns.clone(),
            addrs: addrs.to_vec(),
            port,
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
            tcp_accepted: Arc::new(AtomicUsize::new(0)),
            udp_received: Arc::new(AtomicUsize::new(0)),
        };
        for (proto, addr, socket) in sockets {
            let stop = listeners.stop.clone();
            let name = format!("{proto} {addr} port {port}");
            let thread = match proto {
                Proto::Tcp => {
                    let count = listeners.tcp_accepted.clone();
                    thread::Builder::new()
                        .name(name)
                        .spawn(move || serve_tcp(socket, &stop, &count))
                }
                _ => {
                    let count = listeners.udp_received.clone();
                    let wildcard = addr.is_unspecified();
                    thread::Builder::new()
                        .name(name)
                        .spawn(move || serve_udp(socket, wildcard, &stop, &count))
                }
            };
            listeners
                .threads
                .push(thread.expect("spawn a listener thread"));
        }
        listeners
    }

    pub fn netns(&self) -> &Netns {
        &self.ns
    }

    pub fn addrs(&self) -> &[IpAddr] {
        &self.addrs
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// TCP connections accepted so far.
    pub fn tcp_accepted(&self) -> usize {
        self.tcp_accepted.load(Ordering::Relaxed)
    }

    /// UDP datagrams received (and echoed) so far.
    pub fn udp_received(&self) -> usize {
        self.udp_received.load(Ordering::Relaxed)
    }
}

impl Drop for Listeners {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            // A listener thread that panicked has already printed why.
            let _ = thread.join();
        }
    }
}

/// The "any address" of `addr`'s family.
fn unspecified(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        IpAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    }
}

fn domain(addr: IpAddr) -> Domain {
    if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    }
}

fn bind_listener(addr: IpAddr, port: u16, proto: Proto) -> std::io::Result<Socket> {
    let socket = match proto {
        Proto::Tcp => Socket::new(domain(addr), Type::STREAM, Some(Protocol::TCP))?,
        _ => Socket::new(domain(addr), Type::DGRAM, Some(Protocol::UDP))?,
    };
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    if addr.is_unspecified() && proto == Proto::Udp {
        // Learn each datagram's destination address, to reply from it.
        if addr.is_ipv4() {
            setsockopt(&socket, sockopt::Ipv4PacketInfo, &true)?;
        } else {
            setsockopt(&socket, sockopt::Ipv6RecvPacketInfo, &true)?;
        }
    }
    socket.bind(&SocketAddr::new(addr, port).into())?;
    if proto == Proto::Tcp {
        socket.listen(1024)?;
    }
    // accept() and recv() honour SO_RCVTIMEO: the serving loops wake up
    // every POLL to look at the stop flag.
    socket.set_read_timeout(Some(POLL))?;
    Ok(socket)
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

fn serve_tcp(listener: Socket, stop: &AtomicBool, count: &AtomicUsize) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((connection, _)) => {
                // Counted before the byte goes out, so a prober that read it
                // sees the count.
                count.fetch_add(1, Ordering::Relaxed);
                let _ = connection.set_write_timeout(Some(Duration::from_secs(1)));
                let _ = connection.send(&[TCP_GREETING]);
                // Dropping closes: FIN after the byte.
            }
            Err(e) if is_timeout(&e) || e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                eprintln!("TCP listener: accept failed: {e}");
                thread::sleep(POLL);
            }
        }
    }
}

fn serve_udp(socket: Socket, wildcard: bool, stop: &AtomicBool, count: &AtomicUsize) {
    let socket = UdpSocket::from(socket);
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        let echoed = if wildcard {
            echo_with_pktinfo(&socket, &mut buf, count)
        } else {
            socket.recv_from(&mut buf).and_then(|(n, peer)| {
                count.fetch_add(1, Ordering::Relaxed);
                socket.send_to(&buf[..n], peer).map(|_| ())
            })
        };
        match echoed {
            Ok(()) => {}
            Err(e) if is_timeout(&e) || e.kind() == ErrorKind::Interrupted => {}
            // An ICMP error for an earlier reply, or a reply that cannot be
            // routed: nothing to do for this datagram.
            Err(_) => {}
        }
    }
}

/// Receives one datagram on a wildcard socket and echoes it from the
/// address it was sent to (so that the prober, whose socket is connected to
/// that address, accepts the reply even when routing would pick another
/// source).
fn echo_with_pktinfo(
    socket: &UdpSocket,
    buf: &mut [u8],
    count: &AtomicUsize,
) -> std::io::Result<()> {
    let fd = socket.as_raw_fd();
    let mut cmsg = nix::cmsg_space!(libc::in6_pktinfo);
    let (len, peer, v4_dst, v6_dst) = {
        let mut iov = [IoSliceMut::new(buf)];
        let msg = recvmsg::<SockaddrStorage>(fd, &mut iov, Some(&mut cmsg), MsgFlags::empty())
            .map_err(std::io::Error::from)?;
        let (mut v4_dst, mut v6_dst) = (None, None);
        for c in msg.cmsgs().map_err(std::io::Error::from)? {
            match c {
                ControlMessageOwned::Ipv4PacketInfo(info) => v4_dst = Some(info),
                ControlMessageOwned::Ipv6PacketInfo(info) => v6_dst = Some(info),
                _ => {}
            }
        }
        (msg.bytes, msg.address, v4_dst, v6_dst)
    };
    count.fetch_add(1, Ordering::Relaxed);
    let Some(peer) = peer else {
        return Ok(());
    };
    let data = [IoSlice::new(&buf[..len])];
    let sent = if let Some(info) = v4_dst {
        let reply = libc::in_pktinfo {
            ipi_ifindex: 0,
            ipi_spec_dst: info.ipi_addr,
            ipi_addr: info.ipi_addr,
        };
        let cmsgs = [ControlMessage::Ipv4PacketInfo(&reply)];
        sendmsg(fd, &data, &cmsgs, MsgFlags::empty(), Some(&peer))
    } else if let Some(info) = v6_dst {
        let cmsgs = [ControlMessage::Ipv6PacketInfo(&info)];
        sendmsg(fd, &data, &cmsgs, MsgFlags::empty(), Some(&peer))
    } else {
        sendmsg(fd, &data, &[], MsgFlags::empty(), Some(&peer))
    };
    sent.map(|_| ()).map_err(std::io::Error::from)
}

// ---------------------------------------------------------------------------
// Probes

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
    Icmp,
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Icmp => "icmp",
        })
    }
}

/// One probe: from a namespace to `dst` (`port` is ignored for ICMP).
#[derive(Clone, Debug)]
pub struct Probe {
    pub from: Netns,
    pub dst: IpAddr,
    pub proto: Proto,
    pub port: u16,
    /// TCP: the local port to connect from; 0 lets the kernel choose.
    pub src_port: u16,
    /// TCP and UDP: the local address to send from (one the namespace
    /// holds); `None` lets the kernel choose.
    pub src_addr: Option<IpAddr>,
}

impl Probe {
    pub fn tcp(from: &Netns, dst: IpAddr, port: u16) -> Probe {
        Probe {
            from: from.clone(),
            dst,
            proto: Proto::Tcp,
            port,
            src_port: 0,
            src_addr: None,
        }
    }

    pub fn udp(from: &Netns, dst: IpAddr, port: u16) -> Probe {
        Probe {
            from: from.clone(),
            dst,
            proto: Proto::Udp,
            port,
            src_port: 0,
            src_addr: None,
        }
    }

    pub fn icmp(from: &Netns, dst: IpAddr) -> Probe {
        Probe {
            from: from.clone(),
            dst,
            proto: Proto::Icmp,
            port: 0,
            src_port: 0,
            src_addr: None,
        }
    }

    /// This TCP probe, connecting from local port `port`.
    pub fn from_port(mut self, port: u16) -> Probe {
        self.src_port = port;
        self
    }

    /// This TCP or UDP probe, sent from `addr` (which its namespace must
    /// hold, or a test add with `nodad` to forge it).
    pub fn from_addr(mut self, addr: IpAddr) -> Probe {
        self.src_addr = Some(addr);
        self
    }

    /// The local address to bind, when the probe asks for one.
    fn source(&self) -> Option<SocketAddr> {
        (self.src_port != 0 || self.src_addr.is_some()).then(|| {
            SocketAddr::new(
                self.src_addr.unwrap_or_else(|| unspecified(self.dst)),
                self.src_port,
            )
        })
    }
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.proto {
            Proto::Icmp => write!(f, "icmp {} from {:?}", self.dst, self.from),
            proto => write!(
                f,
                "{proto} {} from {:?}",
                SocketAddr::new(self.dst, self.port),
                self.from
            ),
        }
    }
}

/// What a probe found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// TCP: connected and read the listener's byte; UDP: the payload came
    /// back from dst:port; ICMP: the matching echo reply came from dst.
    Reached,
    /// Why not: `timeout`, `refused`, `host unreachable`, an ICMP error…
    Blocked(String),
}

impl Outcome {
    pub fn reached(&self) -> bool {
        matches!(self, Outcome::Reached)
    }

    fn blocked(why: impl Into<String>) -> Outcome {
        Outcome::Blocked(why.into())
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Reached => f.write_str("reached"),
            Outcome::Blocked(why) => write!(f, "blocked ({why})"),
        }
    }
}

/// Runs all `probes` at once (one thread each, in the probe's namespace)
/// and returns their outcomes in order. Every probe gives up `timeout`
/// after the batch started, so a batch takes about one timeout.
pub fn probe_all(probes: &[Probe], timeout: Duration) -> Vec<Outcome> {
    let deadline = Instant::now() + timeout;
    thread::scope(|scope| {
        let handles: Vec<_> = probes
            .iter()
            .map(|probe| {
                thread::Builder::new()
                    .name(format!("probe {}", probe.proto))
                    .stack_size(256 * 1024)
                    .spawn_scoped(scope, move || {
                        probe.from.enter();
                        run_probe(probe, deadline)
                    })
                    .expect("spawn a probe thread")
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| match handle.join() {
                Ok(outcome) => outcome,
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect()
    })
}

/// One path of a reachability matrix: its probes, and whether they should
/// get through.
#[derive(Clone, Debug)]
pub struct PathCheck {
    pub name: &'static str,
    pub probes: Vec<Probe>,
    pub open: bool,
}

impl PathCheck {
    /// TCP and UDP to `port` and an ICMP echo, from `from` to each of `to`.
    pub fn every_protocol(
        name: &'static str,
        from: &Netns,
        to: &[IpAddr],
        port: u16,
        open: bool,
    ) -> PathCheck {
        let probes = to
            .iter()
            .flat_map(|&dst| {
                [
                    Probe::tcp(from, dst, port),
                    Probe::udp(from, dst, port),
                    Probe::icmp(from, dst),
                ]
            })
            .collect();
        PathCheck { name, probes, open }
    }
}

/// Runs the probes of every path at once and asserts that each is reached
/// when its path is open, and blocked for a reason `blocked` accepts (a
/// timeout: the path exists and something drops it silently) when not.
/// Panics, in `state`'s name, listing every probe that was not as expected.
pub fn assert_paths(
    state: &str,
    paths: &[PathCheck],
    timeout: Duration,
    blocked: impl Fn(&str) -> bool,
) {
    let flat: Vec<Probe> = paths.iter().flat_map(|p| p.probes.clone()).collect();
    let mut outcomes = probe_all(&flat, timeout).into_iter();
    let mut wrong = Vec::new();
    for path in paths {
        for probe in &path.probes {
            let outcome = outcomes.next().expect("one outcome per probe");
            let ok = match &outcome {
                Outcome::Reached => path.open,
                Outcome::Blocked(why) => !path.open && blocked(why),
            };
            if !ok {
                wrong.push(format!("{}: {probe}: {outcome}", path.name));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{state}: {} probes not as expected:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

/// One probe on its own (on a thread in its namespace).
pub fn probe(probe: &Probe, timeout: Duration) -> Outcome {
    probe_all(std::slice::from_ref(probe), timeout)
        .pop()
        .expect("one outcome")
}

fn run_probe(probe: &Probe, deadline: Instant) -> Outcome {
    match probe.proto {
        Proto::Tcp => probe_tcp(probe, deadline),
        Proto::Udp => probe_udp(probe, deadline),
        Proto::Icmp => probe_icmp(probe, deadline),
    }
}

/// Time left until `deadline`, never zero (a zero timeout means "block
/// forever" to SO_RCVTIMEO and is refused by connect_timeout).
fn remaining(deadline: Instant) -> Option<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    (left >= Duration::from_millis(1)).then_some(left)
}

/// A short reason for a socket error.
fn why(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ECONNREFUSED) => "refused".into(),
        Some(libc::EHOSTUNREACH) => "host unreachable".into(),
        Some(libc::ENETUNREACH) => "network unreachable".into(),
        Some(libc::ETIMEDOUT) => "timeout".into(),
        Some(libc::EACCES) | Some(libc::EPERM) => format!("not permitted ({e})"),
        Some(libc::ECONNRESET) => "reset".into(),
        _ if is_timeout(e) => "timeout".into(),
        _ => e.to_string(),
    }
}

static NEXT_PROBE: AtomicU64 = AtomicU64::new(0);

/// A payload unique to one probe: this process, a counter, a random nonce.
fn unique_token() -> (u64, Vec<u8>) {
    let n = NEXT_PROBE.fetch_add(1, Ordering::Relaxed);
    let nonce: u64 = rand::random();
    let token = format!("nwprobe {} {n} {nonce:016x}", std::process::id());
    (n, token.into_bytes())
}

fn probe_tcp(probe: &Probe, deadline: Instant) -> Outcome {
    let dst = SocketAddr::new(probe.dst, probe.port);
    let socket = Socket::new(domain(probe.dst), Type::STREAM, Some(Protocol::TCP))
        .unwrap_or_else(|e| panic!("cannot create a TCP socket in {:?}: {e}", probe.from));
    if let Some(local) = probe.source()
        && let Err(e) = socket
            .set_reuse_address(true)
            .and_then(|()| socket.bind(&local.into()))
    {
        panic!("cannot bind TCP {local} in {:?}: {e}", probe.from);
    }
    let Some(left) = remaining(deadline) else {
        return Outcome::blocked("timeout (before connecting)");
    };
    if let Err(e) = socket.connect_timeout(&dst.into(), left) {
        return Outcome::Blocked(why(&e));
    }
    let mut stream = TcpStream::from(socket);
    let Some(left) = remaining(deadline) else {
        return Outcome::blocked("connected, but no time left to read the byte");
    };
    let _ = stream.set_read_timeout(Some(left));
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(1) if byte[0] == TCP_GREETING => Outcome::Reached,
        Ok(1) => Outcome::Blocked(format!("connected, but read {:#04x}", byte[0])),
        Ok(_) => Outcome::blocked("connected, but closed without the byte"),
        Err(e) => Outcome::Blocked(format!("connected, but reading the byte: {}", why(&e))),
    }
}

/// How often UDP and ICMP probes send again while waiting.
fn resend_interval(deadline: Instant) -> Duration {
    let total = deadline.saturating_duration_since(Instant::now());
    (total / 3).max(Duration::from_millis(100))
}

/// The UDP and ICMP probes' loop: `send`s now and again every
/// [`resend_interval`], and in between `receive`s on `socket` (its read
/// timeout bounded by `deadline` and the next send) until `receive` judges
/// what it read (`Some`), sending or receiving fails, or `deadline` passes.
/// `receive` returns `None` for what is not ours; its timeouts and
/// interruptions only wait on.
fn resend_until(
    socket: &UdpSocket,
    deadline: Instant,
    mut send: impl FnMut() -> std::io::Result<usize>,
    mut receive: impl FnMut() -> std::io::Result<Option<Outcome>>,
) -> Outcome {
    let interval = resend_interval(deadline);
    let mut next_send = Instant::now();
    loop {
        if Instant::now() >= next_send {
            if let Err(e) = send() {
                return Outcome::Blocked(why(&e));
            }
            next_send = Instant::now() + interval;
        }
        let Some(left) = remaining(deadline) else {
            return Outcome::blocked("timeout");
        };
        let wait = left.min(next_send.saturating_duration_since(Instant::now()));
        let _ = socket.set_read_timeout(Some(wait.max(Duration::from_millis(1))));
        match receive() {
            Ok(Some(outcome)) => return outcome,
            Ok(None) => {}
            Err(e) if is_timeout(&e) || e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Outcome::Blocked(why(&e)),
        }
    }
}

fn probe_udp(probe: &Probe, deadline: Instant) -> Outcome {
    let dst = SocketAddr::new(probe.dst, probe.port);
    let local = probe
        .source()
        .unwrap_or_else(|| SocketAddr::new(unspecified(probe.dst), 0));
    let socket = UdpSocket::bind(local)
        .unwrap_or_else(|e| panic!("cannot create a UDP socket in {:?}: {e}", probe.from));
    // Connected: only datagrams from dst:port are received, and ICMP
    // errors come back as errors.
    if let Err(e) = socket.connect(dst) {
        return Outcome::Blocked(why(&e));
    }
    let (_, payload) = unique_token();
    let mut buf = [0u8; 2048];
    resend_until(
        &socket,
        deadline,
        || socket.send(&payload),
        || {
            let n = socket.recv(&mut buf)?;
            // Anything else is not ours (a late echo of nothing we sent).
            Ok((buf[..n] == payload[..]).then_some(Outcome::Reached))
        },
    )
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// ICMP types (v4, v6).
const ECHO_REQUEST: (u8, u8) = (8, 128);
const ECHO_REPLY: (u8, u8) = (0, 129);

/// What a received ICMP message says about our probe.
enum IcmpSeen {
    Ours,
    Error(String),
    Other,
}

fn probe_icmp(probe: &Probe, deadline: Instant) -> Outcome {
    let v4 = probe.dst.is_ipv4();
    let (domain, protocol) = if v4 {
        (Domain::IPV4, Protocol::ICMPV4)
    } else {
        (Domain::IPV6, Protocol::ICMPV6)
    };
    let socket = Socket::new(domain, Type::RAW, Some(protocol)).unwrap_or_else(|e| {
        panic!(
            "cannot create a raw ICMP socket in {:?} (needs root): {e}",
            probe.from
        )
    });
    // A raw socket sees every ICMP packet of the namespace: replies are
    // matched by source, type, identifier, sequence and payload.
    let socket = UdpSocket::from(socket);
    let (n, payload) = unique_token();
    let id = (std::process::id() ^ (std::process::id() >> 16)) as u16;
    let seq = n as u16;
    let mut request = vec![if v4 { ECHO_REQUEST.0 } else { ECHO_REQUEST.1 }, 0, 0, 0];
    request.extend_from_slice(&id.to_be_bytes());
    request.extend_from_slice(&seq.to_be_bytes());
    request.extend_from_slice(&payload);
    if v4 {
        // (The kernel computes ICMPv6 checksums on raw sockets itself.)
        let sum = checksum(&request);
        request[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    let dst = SocketAddr::new(probe.dst, 0);
    let mut buf = [0u8; 4096];
    resend_until(
        &socket,
        deadline,
        || socket.send_to(&request, dst),
        || {
            let (len, from) = socket.recv_from(&mut buf)?;
            let seen = if v4 {
                icmp4_seen(&buf[..len], probe.dst, id, seq, &payload)
            } else {
                icmp6_seen(&buf[..len], from.ip(), probe.dst, id, seq, &payload)
            };
            Ok(match seen {
                IcmpSeen::Ours => Some(Outcome::Reached),
                IcmpSeen::Error(why) => Some(Outcome::Blocked(why)),
                IcmpSeen::Other => None,
            })
        },
    )
}

/// Whether `icmp` (an ICMP header and what follows) is the echo reply to
/// our request.
fn is_our_reply(icmp: &[u8], reply_type: u8, id: u16, seq: u16, payload: &[u8]) -> bool {
    icmp.len() >= 8 + payload.len()
        && icmp[0] == reply_type
        && icmp[1] == 0
        && icmp[4..6] == id.to_be_bytes()
        && icmp[6..8] == seq.to_be_bytes()
        && &icmp[8..8 + payload.len()] == payload
}

/// Whether `quoted` (the first bytes of an ICMP message quoted in an error)
/// is our echo request.
fn is_our_request(quoted: &[u8], request_type: u8, id: u16, seq: u16) -> bool {
    quoted.len() >= 8
        && quoted[0] == request_type
        && quoted[4..6] == id.to_be_bytes()
        && quoted[6..8] == seq.to_be_bytes()
}

fn icmp4_seen(packet: &[u8], dst: IpAddr, id: u16, seq: u16, payload: &[u8]) -> IcmpSeen {
    // A raw IPv4 socket receives the IP header too.
    if packet.len() < 20 || packet[0] >> 4 != 4 || packet[9] != 1 {
        return IcmpSeen::Other;
    }
    let ihl = usize::from(packet[0] & 0x0f) * 4;
    let Some(icmp) = packet.get(ihl..) else {
        return IcmpSeen::Other;
    };
    let src = IpAddr::from([packet[12], packet[13], packet[14], packet[15]]);
    if src == dst && is_our_reply(icmp, ECHO_REPLY.0, id, seq, payload) {
        return IcmpSeen::Ours;
    }
    // Destination unreachable (3) or time exceeded (11) quoting our request.
    if icmp.len() >= 8 + 20 && matches!(icmp[0], 3 | 11) {
        let inner = &icmp[8..];
        let inner_ihl = usize::from(inner[0] & 0x0f) * 4;
        let inner_dst = IpAddr::from([inner[16], inner[17], inner[18], inner[19]]);
        if inner[0] >> 4 == 4
            && inner[9] == 1
            && inner_dst == dst
            && inner
                .get(inner_ihl..)
                .is_some_and(|q| is_our_request(q, ECHO_REQUEST.0, id, seq))
        {
            return IcmpSeen::Error(icmp4_error(icmp[0], icmp[1], src));
        }
    }
    IcmpSeen::Other
}

fn icmp4_error(kind: u8, code: u8, from: IpAddr) -> String {
    let what = match (kind, code) {
        (3, 0) => "network unreachable",
        (3, 1) => "host unreachable",
        (3, 3) => "port unreachable",
        (3, 9 | 10 | 13) => "administratively prohibited",
        (3, _) => "destination unreachable",
        _ => "time exceeded",
    };
    format!("{what} (ICMP type {kind} code {code} from {from})")
}

fn icmp6_seen(
    icmp: &[u8],
    src: IpAddr,
    dst: IpAddr,
    id: u16,
    seq: u16,
    payload: &[u8],
) -> IcmpSeen {
    // A raw ICMPv6 socket receives the ICMPv6 message only.
    if src == dst && is_our_reply(icmp, ECHO_REPLY.1, id, seq, payload) {
        return IcmpSeen::Ours;
    }
    // Destination unreachable (1) or time exceeded (3) quoting our request.
    if icmp.len() >= 8 + 40 + 8 && matches!(icmp[0], 1 | 3) {
        let inner = &icmp[8..];
        let mut inner_dst = [0u8; 16];
        inner_dst.copy_from_slice(&inner[24..40]);
        if inner[0] >> 4 == 6
            && inner[6] == 58
            && IpAddr::from(inner_dst) == dst
            && is_our_request(&inner[40..], ECHO_REQUEST.1, id, seq)
        {
            let (kind, code) = (icmp[0], icmp[1]);
            let what = match (kind, code) {
                (1, 1) => "administratively prohibited",
                (1, 3) => "address unreachable",
                (1, 4) => "port unreachable",
                (1, _) => "destination unreachable",
                _ => "time exceeded",
            };
            return IcmpSeen::Error(format!(
                "{what} (ICMPv6 type {kind} code {code} from {src})"
            ));
        }
    }
    IcmpSeen::Other
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_of_an_echo_request() {
        // An echo request with id 1, seq 1 and no payload: 0xf7fd.
        let packet = [8, 0, 0, 0, 0, 1, 0, 1];
        assert_eq!(checksum(&packet), 0xf7fd);
        let mut with_sum = packet;
        with_sum[2..4].copy_from_slice(&0xf7fdu16.to_be_bytes());
        assert_eq!(checksum(&with_sum), 0);
        // Odd lengths pad with a zero byte.
        assert_eq!(checksum(&[1]), !0x0100);
    }

    #[test]
    fn replies_are_matched_on_source_id_seq_and_payload() {
        let dst: IpAddr = "10.232.1.1".parse().unwrap();
        let payload = b"nwprobe 1 2 3";
        let mut packet = vec![
            0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0, 10, 232, 1, 1, 10, 232, 1, 2,
        ];
        packet.extend_from_slice(&[0, 0, 0, 0, 0x12, 0x34, 0, 7]);
        packet.extend_from_slice(payload);
        assert!(matches!(
            icmp4_seen(&packet, dst, 0x1234, 7, payload),
            IcmpSeen::Ours
        ));
        assert!(matches!(
            icmp4_seen(&packet, dst, 0x1234, 8, payload),
            IcmpSeen::Other
        ));
        assert!(matches!(
            icmp4_seen(&packet, "10.232.1.3".parse().unwrap(), 0x1234, 7, payload),
            IcmpSeen::Other
        ));
        assert!(matches!(
            icmp4_seen(&packet, dst, 0x1234, 7, b"nwprobe 1 2 4"),
            IcmpSeen::Other
        ));
        // Our own request, looped back, is not a reply.
        packet[20] = 8;
        assert!(matches!(
            icmp4_seen(&packet, dst, 0x1234, 7, payload),
            IcmpSeen::Other
        ));
    }

    #[test]
    fn unreachable_quoting_our_request_is_an_error() {
        let dst: IpAddr = "10.232.1.9".parse().unwrap();
        let mut packet = vec![
            0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0, 10, 232, 1, 2, 10, 232, 1, 2,
        ];
        packet.extend_from_slice(&[3, 1, 0, 0, 0, 0, 0, 0]);
        packet.extend_from_slice(&[0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0, 10, 232, 1, 2]);
        packet.extend_from_slice(&[10, 232, 1, 9, 8, 0, 0, 0, 0x12, 0x34, 0, 7]);
        match icmp4_seen(&packet, dst, 0x1234, 7, b"x") {
            IcmpSeen::Error(why) => assert!(why.starts_with("host unreachable"), "{why}"),
            _ => panic!("not recognised as an error for our probe"),
        }
        assert!(matches!(
            icmp4_seen(&packet, dst, 0x1234, 6, b"x"),
            IcmpSeen::Other
        ));
    }
}
