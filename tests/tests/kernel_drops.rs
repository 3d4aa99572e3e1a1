//! The kernel drop program (`kernel_drops` on `kfree_skb`), on the kernel,
//! without Docker: the kernel's own drops of a guarded address's packets
//! are recorded with the kernel's reason; drops of other packets are not;
//! and over random, mutated and malformed frames the program records
//! exactly what its reference model says.

use std::{
    net::{Ipv4Addr, UdpSocket},
    time::{Duration, Instant},
};

use netwatch::{
    datapath::{Datapath, LoadOptions, read_kernel_layout},
    policy::compile,
};
use netwatch_common::{
    flow::family,
    kdrop::{KernelDropConfig, KernelDropEvent},
    packet::IPPROTO_UDP,
};
use netwatch_tests::{
    fixture::{endpoint_spec, require_root},
    netns::TestHost,
};
use rand::{SeedableRng, rngs::StdRng};

/// Sends one UDP datagram from namespace `ns` to `dst:port` (a closed port:
/// the receiving kernel drops it with `NO_SOCKET`). `dst` is on the
/// namespace's own /24, which the test created. Always from port 40123, so
/// that repeated datagrams share a rate-limiting key.
fn udp_from(host: &TestHost, ns: &str, dst: Ipv4Addr, port: u16) {
    assert_eq!(dst.octets()[..3], [10, 231, host.subnet], "not ours: {dst}");
    host.in_ns(ns, || {
        let socket = UdpSocket::bind("0.0.0.0:40123").expect("udp socket");
        socket.send_to(b"netwatch", (dst, port)).expect("send");
    });
}

/// Drains the kernel drop records for up to `wait`, until one matches.
fn drain_until(
    datapath: &mut Datapath,
    wait: Duration,
    mut wanted: impl FnMut(&KernelDropEvent) -> bool,
) -> Vec<KernelDropEvent> {
    let start = Instant::now();
    let mut all = Vec::new();
    loop {
        let (events, malformed) = datapath.drain_kernel_drops().expect("drain");
        assert_eq!(malformed, 0);
        all.extend(events);
        if all.iter().any(&mut wanted) || start.elapsed() > wait {
            return all;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_guarded_addresses_packet_dropped_for_no_socket_is_recorded_with_the_kernels_reason() {
    require_root();
    let (layout, reasons) = read_kernel_layout().expect("the kernel's BTF");
    // The program reads protocol, network_header and head with one helper
    // call where they lie close together (Linux 6.18); the event below
    // proves that path read them right.
    assert_eq!(
        layout.enabled,
        KernelDropConfig::ENABLED_SPAN,
        "sk_buff's protocol, network_header and head ({}, {}, {}) do not fit one span",
        layout.skb_protocol,
        layout.skb_network_header,
        layout.skb_head
    );
    let no_socket = (0..200u32)
        .find(|v| reasons.name(*v).to_string() == "kernel:no_socket")
        .expect("the kernel names NO_SOCKET");
    let host = TestHost::create();
    let mut spec = endpoint_spec(0);
    spec.ifindex = 4242;
    spec.policy.ipv4 = host.container_ip().octets();
    let tables = compile(&[spec], &[]).expect("compiles");
    let mut datapath = Datapath::load(&LoadOptions::default()).expect("programs load");
    datapath.apply(&tables).expect("maps");
    datapath.attach_kernel_drops().expect("attach kfree_skb");
    assert!(datapath.kernel_drops_attached());

    // Unguarded both ways: the gateway drops a datagram from the peer.
    udp_from(&host, &host.peer_ns(), host.gateway(), 9);
    // Guarded destination: the container drops one from the peer.
    udp_from(&host, &host.peer_ns(), host.container_ip(), 9);
    let is_ours = |e: &KernelDropEvent| {
        e.dst_endpoint == 4242 && e.key.reason == no_socket && e.key.proto == IPPROTO_UDP
    };
    let events = drain_until(&mut datapath, Duration::from_secs(3), is_ours);
    let ours: Vec<&KernelDropEvent> = events.iter().filter(|e| is_ours(e)).collect();
    assert_eq!(ours.len(), 1, "{events:#?}");
    let event = ours[0];
    assert_eq!(event.key.family, family::IPV4);
    assert_eq!(event.key.src[..4], host.peer_ip().octets());
    assert_eq!(event.key.dst[..4], host.container_ip().octets());
    assert_eq!((event.key.dst_port, event.src_endpoint), (9, 0));
    assert_eq!(event.packets, 1);
    // The IP packet: 20 + 8 + 8 bytes.
    assert_eq!(event.bytes, 36, "{event:?}");
    assert_ne!(event.location, 0);
    // Read only when a record is due: the interface the container's kernel
    // dropped it on, its own eth0.
    let container_eth0 = host.in_ns(&host.container_ns(), || {
        nix::net::if_::if_nametoindex("eth0").expect("the container's eth0")
    });
    assert_eq!(event.dev_ifindex, container_eth0, "{event:?}");
    assert!(
        events
            .iter()
            .all(|e| e.key.dst[..4] != host.gateway().octets()),
        "a drop between unguarded addresses was recorded: {events:#?}"
    );

    // Rate-limited per key: a second drop within the report interval is
    // counted, not recorded; the next record carries both.
    udp_from(&host, &host.peer_ns(), host.container_ip(), 9);
    std::thread::sleep(Duration::from_millis(300));
    let again = drain_until(&mut datapath, Duration::ZERO, is_ours);
    assert!(again.iter().all(|e| !is_ours(e)), "{again:#?}");
    std::thread::sleep(Duration::from_millis(800));
    udp_from(&host, &host.peer_ns(), host.container_ip(), 9);
    let later = drain_until(&mut datapath, Duration::from_secs(3), is_ours);
    let counted: Vec<u64> = later
        .iter()
        .filter(|e| is_ours(e))
        .map(|e| e.packets)
        .collect();
    assert_eq!(counted, vec![3], "{later:#?}");

    // Detached: nothing more.
    datapath.detach_kernel_drops().expect("detach");
    std::thread::sleep(Duration::from_millis(1100));
    udp_from(&host, &host.peer_ns(), host.container_ip(), 10);
    let after = drain_until(&mut datapath, Duration::from_millis(500), |_| false);
    assert!(after.is_empty(), "{after:#?}");
}

/// Frames per run of the oracle test, from `NETWATCH_KDROP_FRAMES`
/// (random and mutated frames dropped on arrival; the malformed corpus and
/// the frames delivered to the stack come on top).
fn oracle_frames() -> usize {
    std::env::var("NETWATCH_KDROP_FRAMES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

/// The oracle: random, mutated and malformed frames that the kernel of a
/// namespace of the test's own drops, recorded as the reference model
/// (`netwatch::policy::model::kdrop`) says — every key it predicts, with its
/// packets and bytes and its endpoints, and nothing else.
///
/// Two lanes, each of which the kernel drops whole:
/// - "otherhost": frames for a MAC that is not the receiving veth's.
///   `ip_rcv_core` and `ip6_rcv_core` free them (`OTHERHOST`) before they
///   look at the header, whatever it holds, so every IPv4 or IPv6 frame of
///   any shape reaches `kfree_skb` with its network header where the frame
///   put it;
/// - "delivered": well-formed and header-broken UDP and TCP for the
///   receiving namespace's own address (closed ports: `NO_SOCKET`) or for
///   addresses it does not route (forwarding off), dropped after the stack
///   pulled the headers, so the program is checked where `skb->data` has
///   moved on from the network header. The namespace has no route to any
///   address, so no reply (port unreachable, reset) is ever sent.
///
/// Each batch starts from an empty `KDROPS` and ends with a sentinel frame
/// sent last from one CPU (the receive path runs in order from that CPU's
/// backlog): once the sentinel's key is counted, so is every frame before
/// it.
#[test]
fn kernel_drops_of_random_and_malformed_frames_are_recorded_as_the_model_says() {
    require_root();
    let started = Instant::now();
    let (_, reasons) = read_kernel_layout().expect("the kernel's BTF");
    let otherhost = (0..400u32)
        .find(|v| reasons.name(*v).to_string() == "kernel:otherhost")
        .expect("the kernel names OTHERHOST");
    let lab = oracle::DropLab::create();
    let guarded = lab.guarded();
    let tables = compile(&lab.endpoint_specs(), &[]).expect("compiles");
    let mut datapath = Datapath::load(&LoadOptions::default()).expect("programs load");
    datapath.apply(&tables).expect("maps");
    datapath.attach_kernel_drops().expect("attach kfree_skb");

    let seed: u64 = std::env::var("NETWATCH_DIFF_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random);
    println!("kernel drop oracle seed {seed} (replay with NETWATCH_DIFF_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut lanes = vec![(oracle::Lane::Otherhost, lab.malformed_frames())];
    let random: Vec<Vec<u8>> = (0..oracle_frames())
        .map(|_| lab.random_frame(&mut rng))
        .collect();
    lanes.push((oracle::Lane::Otherhost, random));
    let delivered: Vec<Vec<u8>> = (0..oracle_frames() / 4)
        .map(|_| lab.delivered_frame(&mut rng))
        .collect();
    lanes.push((oracle::Lane::Delivered, delivered));

    let mut tally = oracle::Tally::default();
    let mut batch_no = 0u16;
    'lanes: for (lane, frames) in &lanes {
        // 256 frames and a sentinel: far fewer keys than the LRU map holds,
        // so nothing is evicted before it is read.
        for chunk in frames.chunks(256) {
            batch_no += 1;
            let batch = oracle::Batch::judge(*lane, chunk, &guarded, &mut tally);
            datapath.clear_kernel_drop_counts().expect("clear KDROPS");
            let _ = datapath.drain_kernel_drops().expect("drain");
            let sentinel = lab.sentinel(batch_no);
            lab.send_from_one_cpu(&batch.sent, &sentinel);
            let (counts, complete) = oracle::wait_for_sentinel(&datapath, &sentinel, &guarded);
            let (events, malformed) = datapath.drain_kernel_drops().expect("drain");
            assert_eq!(malformed, 0);
            if !complete {
                // The batch may not all be counted yet; what is counted is
                // still compared, as it says where the program went wrong.
                tally.failures.push(format!(
                    "batch {batch_no}: the sentinel's key was never counted (5 s)"
                ));
            }
            batch.compare(
                &counts, &events, &lab, &sentinel, &guarded, otherhost, &reasons, &mut tally,
            );
            if !complete || tally.failures.len() >= 20 {
                break 'lanes;
            }
        }
    }
    tally.finish(seed, started.elapsed());
}

/// The oracle test's namespaces, frames and bookkeeping.
mod oracle {
    use std::{
        collections::{BTreeMap, HashMap},
        net::{IpAddr, Ipv4Addr, Ipv6Addr},
        process::Command,
        time::{Duration, Instant},
    };

    use netwatch::{
        datapath::{Datapath, DropReasonNames},
        policy::{
            model::kdrop::{Guarded, KernelDropOutcome, NotRecorded, kernel_drop},
            spec::InterfacePolicy,
        },
    };
    use netwatch_common::{
        flow::{family, tcp_flags},
        kdrop::{KernelDropEvent, KernelDropKey, KernelDropStats},
        packet::{ETHERTYPE_IPV4, ETHERTYPE_QINQ, ETHERTYPE_VLAN},
    };
    use netwatch_tests::{
        corpus::{fragment_cases, malformed_corpus, mutate, random_valid_frame},
        fixture::endpoint_spec,
        netns::run,
        packets::{Frame, Mac, fix_ipv4_checksum, hex},
        rawframe::{PacketSocket, pin_to_this_cpu},
        reach::Netns,
    };
    use rand::{Rng, seq::IndexedRandom};

    /// The receiving veth's MAC, and the one "otherhost" frames go to.
    const RX_MAC: Mac = [0x02, 0x6b, 0x64, 0x00, 0x00, 0x02];
    const OTHER_MAC: Mac = [0x02, 0x6b, 0x64, 0x00, 0x00, 0x77];
    const SENDER_MAC: Mac = [0x02, 0x6b, 0x64, 0x00, 0x00, 0x01];
    /// Fake host-side ifindexes of the guarded endpoints; the last one owns
    /// the sentinel address.
    const ENDPOINTS: [u32; 4] = [4301, 4302, 4303, 4399];

    /// How the kernel drops a lane's frames (see the test's doc).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Lane {
        Otherhost,
        Delivered,
    }

    impl Lane {
        fn name(self) -> &'static str {
            match self {
                Lane::Otherhost => "otherhost",
                Lane::Delivered => "delivered",
            }
        }
    }

    /// Two namespaces of the test's own joined by a veth: frames go in at
    /// `tx0` (namespace `tx`), the kernel of namespace `rx` drops them as
    /// `rx0` receives them. `rx` holds one IPv4 and one IPv6 address and
    /// no route at all, so it answers nothing anywhere; both are deleted
    /// (with the veth) on drop.
    pub struct DropLab {
        tx: String,
        rx: String,
        /// Third octet of 10.232.N.0/24 and fd00:6b64:N::/64.
        subnet: u8,
        rx_ifindex: u32,
    }

    impl DropLab {
        pub fn create() -> DropLab {
            let pid = std::process::id();
            let mut lab = DropLab {
                tx: format!("nwt{pid}kdt"),
                rx: format!("nwt{pid}kdr"),
                subnet: (pid % 200 + 10) as u8,
                rx_ifindex: 0,
            };
            for ns in [&lab.tx, &lab.rx] {
                // Left by an earlier run of a process with the same pid.
                let _ = Command::new("ip").args(["netns", "del", ns]).output();
            }
            // The guard exists before the namespaces: half-made is deleted too.
            run(&["ip", "netns", "add", &lab.tx]);
            run(&["ip", "netns", "add", &lab.rx]);
            let mac = |m: Mac| {
                m.iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(":")
            };
            let (tx, rx) = (lab.tx.clone(), lab.rx.clone());
            let sh = |ns: &str, cmd: &str| {
                let mut args = vec!["ip", "-n", ns];
                args.extend(cmd.split_whitespace());
                run(&args);
            };
            sh(
                &tx,
                &format!(
                    "link add tx0 address {} type veth peer name rx0 address {} netns {rx}",
                    mac(SENDER_MAC),
                    mac(RX_MAC)
                ),
            );
            // No IPv6 link-local address on either end: nothing of the
            // namespaces' own (DAD, router solicitations) crosses the veth.
            sh(&tx, "link set tx0 addrgenmode none");
            sh(&rx, "link set rx0 addrgenmode none");
            sh(&rx, &format!("addr add {}/32 dev rx0", lab.own_v4()));
            sh(
                &rx,
                &format!("addr add {}/128 dev rx0 nodad noprefixroute", lab.own_v6()),
            );
            sh(&tx, "link set tx0 up");
            sh(&rx, "link set rx0 up");
            sh(&rx, "link set lo up");
            // A new namespace may inherit forwarding from the machine's.
            run(&[
                "ip",
                "netns",
                "exec",
                &rx,
                "sysctl",
                "-q",
                "-w",
                "net.ipv4.ip_forward=0",
                "net.ipv6.conf.all.forwarding=0",
            ]);
            lab.rx_ifindex = lab.ifindex(&rx, "rx0");
            lab.check_isolated();
            lab
        }

        fn ifindex(&self, ns: &str, name: &str) -> u32 {
            Netns::named(ns).run(|| nix::net::if_::if_nametoindex(name).expect(name))
        }

        /// The network safety rule, checked: `rx` routes nowhere (so no
        /// frame it receives is forwarded and no reply leaves), forwards
        /// nothing, and `tx` has no address.
        fn check_isolated(&self) {
            let out = |args: &[&str]| {
                let output = Command::new("ip").args(args).output().expect("ip");
                String::from_utf8_lossy(&output.stdout).trim().to_owned()
            };
            for v in ["-4", "-6"] {
                let routes = out(&["-n", &self.rx, v, "route", "show", "table", "main"]);
                assert!(routes.is_empty(), "{} has routes ({v}): {routes}", self.rx);
                let addrs = out(&["-n", &self.tx, v, "addr", "show", "dev", "tx0"]);
                assert!(
                    !addrs.contains("inet"),
                    "{} has addresses: {addrs}",
                    self.tx
                );
            }
            for addr in self.guarded().keys() {
                let route = Command::new("ip")
                    .args(["-n", &self.rx, "route", "get", &addr.to_string()])
                    .output()
                    .expect("ip");
                assert!(
                    !route.status.success(),
                    "{} routes {addr}: {}",
                    self.rx,
                    String::from_utf8_lossy(&route.stdout)
                );
            }
            for key in ["net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"] {
                let value = out(&["netns", "exec", &self.rx, "sysctl", "-n", key]);
                assert_eq!(value, "0", "{key} in {}", self.rx);
            }
        }

        fn own_v4(&self) -> Ipv4Addr {
            Ipv4Addr::new(10, 232, self.subnet, 1)
        }
        fn own_v6(&self) -> Ipv6Addr {
            Ipv6Addr::new(0xfd00, 0x6b64, u16::from(self.subnet), 0, 0, 0, 0, 1)
        }
        fn v4(&self, host: u8) -> Ipv4Addr {
            Ipv4Addr::new(10, 232, self.subnet, host)
        }
        fn v6(&self, host: u8) -> Ipv6Addr {
            Ipv6Addr::new(
                0xfd00,
                0x6b64,
                u16::from(self.subnet),
                0,
                0,
                0,
                0,
                u16::from(host),
            )
        }

        /// Guarded endpoints own .10, .11, .12 (and the sentinel's .99):
        /// none is the receiving namespace's own address.
        fn guarded_hosts() -> [u8; 4] {
            [10, 11, 12, 99]
        }

        pub fn endpoint_specs(&self) -> Vec<InterfacePolicy> {
            ENDPOINTS
                .iter()
                .zip(Self::guarded_hosts())
                .map(|(ifindex, host)| {
                    let mut spec = endpoint_spec(0);
                    spec.ifindex = *ifindex;
                    spec.policy.ipv4 = self.v4(host).octets();
                    spec.policy.ipv6 = self.v6(host).octets();
                    spec.policy.gateway_v4 = self.v4(254).octets();
                    spec.policy.gateway_v6 = self.v6(254).octets();
                    spec
                })
                .collect()
        }

        /// What `GUARDED` holds, as the model takes it.
        pub fn guarded(&self) -> Guarded {
            ENDPOINTS
                .iter()
                .zip(Self::guarded_hosts())
                .flat_map(|(ifindex, host)| {
                    [
                        (IpAddr::from(self.v4(host)), *ifindex),
                        (IpAddr::from(self.v6(host)), *ifindex),
                    ]
                })
                .collect()
        }

        /// Guarded, the receiving namespace's own and other addresses.
        fn pools(&self) -> (Vec<Ipv4Addr>, Vec<Ipv6Addr>) {
            let hosts = [10, 11, 12, 1, 20, 21];
            (
                hosts.iter().map(|h| self.v4(*h)).collect(),
                hosts.iter().map(|h| self.v6(*h)).collect(),
            )
        }

        /// The malformed corpus and the non-first fragments, from guarded
        /// endpoint .11 to an unguarded peer.
        pub fn malformed_frames(&self) -> Vec<Vec<u8>> {
            let (v4, v6) = (self.v4(11), self.v6(11));
            malformed_corpus(SENDER_MAC, v4, v6)
                .into_iter()
                .chain(fragment_cases(SENDER_MAC, v4, v6))
                .map(|(_, f)| f)
                .collect()
        }

        /// A random well-formed frame (IPv4, IPv6, ARP, tagged or not, other
        /// ethertypes), mutated half of the time.
        pub fn random_frame(&self, rng: &mut impl Rng) -> Vec<u8> {
            let (v4s, v6s) = self.pools();
            let frame = random_valid_frame(rng, &[SENDER_MAC, RX_MAC, OTHER_MAC], &v4s, &v6s);
            if rng.random_bool(0.5) {
                mutate(&frame, rng)
            } else {
                frame
            }
        }

        /// A UDP or TCP packet for the receiving stack: to its own address
        /// (a closed port) or to one it does not route, from a guarded or
        /// another address; a quarter with a broken IP header.
        pub fn delivered_frame(&self, rng: &mut impl Rng) -> Vec<u8> {
            let (v4s, v6s) = self.pools();
            let eth = Frame::eth(SENDER_MAC, RX_MAC);
            let to_own = rng.random_ratio(3, 4);
            let ipv4 = rng.random_bool(0.5);
            let f = if ipv4 {
                let dst = if to_own {
                    self.own_v4()
                } else {
                    *v4s.choose(rng).unwrap()
                };
                eth.ipv4(*v4s.choose(rng).unwrap(), dst)
            } else {
                let dst = if to_own {
                    self.own_v6()
                } else {
                    *v6s.choose(rng).unwrap()
                };
                eth.ipv6(*v6s.choose(rng).unwrap(), dst)
            };
            let (sport, dport) = (rng.random_range(1024..65535), rng.random_range(1..1024));
            let f = if rng.random_bool(0.5) {
                f.udp(sport, dport)
            } else {
                let flags = *[
                    tcp_flags::SYN,
                    tcp_flags::ACK,
                    tcp_flags::RST,
                    tcp_flags::FIN,
                ]
                .choose(rng)
                .unwrap();
                f.tcp(sport, dport, flags)
            };
            let mut frame = f.payload_len(rng.random_range(0..64)).build();
            if rng.random_ratio(1, 4) {
                match (ipv4, rng.random_range(0..3)) {
                    // A header checksum that does not add up.
                    (true, 0) => frame[24] ^= 0x5a,
                    // A total length past the frame.
                    (true, 1) => {
                        let len = u16::from_be_bytes([frame[16], frame[17]]) + 9;
                        frame[16..18].copy_from_slice(&len.to_be_bytes());
                        fix_ipv4_checksum(&mut frame, 14);
                    }
                    // An IHL below 5.
                    (true, _) => {
                        frame[14] = 0x43;
                        fix_ipv4_checksum(&mut frame, 14);
                    }
                    // A payload length past the frame.
                    (false, _) => {
                        let len = u16::from_be_bytes([frame[18], frame[19]]) + 9;
                        frame[18..20].copy_from_slice(&len.to_be_bytes());
                    }
                }
            }
            frame
        }

        /// The batch's last frame: from the sentinel endpoint's address,
        /// dropped as otherhost, keyed by the batch number.
        pub fn sentinel(&self, batch: u16) -> Vec<u8> {
            Frame::eth(SENDER_MAC, OTHER_MAC)
                .ipv4(self.v4(99), self.v4(98))
                .udp(batch, 9)
                .build()
        }

        /// Sends `frames`, then `sentinel`, from one thread held on one CPU,
        /// so that the receive path (the CPU's backlog, in order) has
        /// handled every frame once it handled the sentinel.
        pub fn send_from_one_cpu(&self, frames: &[Vec<u8>], sentinel: &[u8]) {
            Netns::named(&self.tx).run(|| {
                pin_to_this_cpu();
                let socket = PacketSocket::sender("tx0").expect("AF_PACKET socket");
                for frame in frames.iter().map(Vec::as_slice).chain([sentinel]) {
                    socket
                        .send(frame)
                        .unwrap_or_else(|e| panic!("send failed: {e}\n  frame: {}", hex(frame)));
                }
            });
        }

        /// Where the receiving kernel puts `frame`'s network header and
        /// which protocol the skb gets: `eth_type_trans` (an ethertype below
        /// 0x600 is an 802.3 length: not IP), then, for one 802.1Q or
        /// 802.1ad tag, `skb_vlan_untag` (the inner type, 4 bytes on; a
        /// frame too short for it is freed still tagged). `None` for two
        /// tags, which the kernel's VLAN-0 handling may untag again: not
        /// judged here.
        fn received(frame: &[u8]) -> Option<(u16, usize)> {
            const NOT_IP: u16 = 0x0004; // ETH_P_802_2
            let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
            if ethertype < 0x600 {
                return Some((NOT_IP, 14));
            }
            if !matches!(ethertype, ETHERTYPE_VLAN | ETHERTYPE_QINQ) {
                return Some((ethertype, 14));
            }
            if frame.len() < 18 {
                return Some((ethertype, 14));
            }
            match u16::from_be_bytes([frame[16], frame[17]]) {
                ETHERTYPE_VLAN | ETHERTYPE_QINQ => None,
                inner if inner < 0x600 => Some((NOT_IP, 18)),
                inner => Some((inner, 18)),
            }
        }
    }

    impl Drop for DropLab {
        fn drop(&mut self) {
            // Deleting a namespace deletes its end of the veth, and the
            // pair with it.
            for ns in [&self.tx, &self.rx] {
                let _ = Command::new("ip").args(["netns", "del", ns]).output();
            }
        }
    }

    /// A key's addresses and protocol: counts are compared per tuple, so
    /// that a key with wrong ports shows beside the model's.
    type Tuple = (u8, u8, [u8; 16], [u8; 16]);

    fn tuple(key: &KernelDropKey) -> Tuple {
        (key.family, key.proto, key.src, key.dst)
    }

    /// The key without the kernel's reason, as the model gives it.
    fn reasonless(key: &KernelDropKey) -> KernelDropKey {
        KernelDropKey { reason: 0, ..*key }
    }

    /// Packets and bytes.
    type Counts = (u64, u64);

    fn add(to: &mut Counts, packets: u64, bytes: u64) {
        to.0 += packets;
        to.1 += bytes;
    }

    /// What a run saw: model outcomes by name, frames not sent and why,
    /// and the disagreements.
    #[derive(Default)]
    pub struct Tally {
        outcomes: BTreeMap<&'static str, usize>,
        not_sent: BTreeMap<&'static str, usize>,
        reasons: BTreeMap<String, u64>,
        sent: usize,
        /// Per lane: frames sent, and those the model says are recorded.
        lanes: BTreeMap<&'static str, (usize, usize)>,
        pub failures: Vec<String>,
    }

    impl Tally {
        pub fn finish(&self, seed: u64, elapsed: Duration) {
            let (sent, outcomes) = (self.sent, &self.outcomes);
            println!(
                "sent {sent} frames in {:.1} s; model outcomes {outcomes:?}; per lane (sent, \
                 recorded) {:?}; not sent {:?}; kernel reasons (packets) {:?}",
                elapsed.as_secs_f64(),
                self.lanes,
                self.not_sent,
                self.reasons
            );
            assert!(
                self.failures.is_empty(),
                "seed {seed}: the kernel drop program and its model disagree:\n{}",
                self.failures.join("\n")
            );
            // An oracle whose frames all land in one class proves little:
            // each outcome must be a real share of the run.
            let share = |names: &[&str]| -> f64 {
                let n: usize = names
                    .iter()
                    .map(|n| outcomes.get(n).copied().unwrap_or(0))
                    .sum();
                n as f64 / sent.max(1) as f64
            };
            let required: [(&[&str], f64); 6] = [
                (&["recorded ipv4"], 0.10),
                (&["recorded ipv6"], 0.10),
                (&["not recorded: unguarded"], 0.05),
                (
                    &["not recorded: not ip", "not recorded: wrong version"],
                    0.02,
                ),
                (&["not recorded: truncated"], 0.005),
                (&["recorded, ports past the data"], 0.002),
            ];
            for (names, least) in required {
                let got = share(names);
                assert!(
                    got >= least,
                    "seed {seed}: {names:?} is {:.2}% of {sent} frames, below {:.1}% ({outcomes:?})",
                    got * 100.0,
                    least * 100.0
                );
            }
            // Both drop points, not one: a lane whose frames are mostly
            // not recorded would leave that drop point unchecked.
            for lane in [Lane::Otherhost, Lane::Delivered] {
                let (sent, recorded) = self.lanes.get(lane.name()).copied().unwrap_or_default();
                assert!(
                    sent >= 500 && recorded * 5 >= sent,
                    "seed {seed}: the {} lane sent {sent} frames, {recorded} recorded by the \
                     model: too few to check that drop point",
                    lane.name()
                );
            }
            assert!(sent >= 5_000, "too few frames were sent: {sent}");
        }
    }

    /// One batch's frames as sent, with what the model says of each.
    pub struct Batch {
        lane: Lane,
        pub sent: Vec<Vec<u8>>,
        /// Per frame sent (the sentinel aside): the model's outcome.
        outcomes: Vec<KernelDropOutcome>,
    }

    impl Batch {
        /// Judges `frames` with the model; leaves out (and counts) those
        /// the model cannot judge.
        pub fn judge(
            lane: Lane,
            frames: &[Vec<u8>],
            guarded: &Guarded,
            tally: &mut Tally,
        ) -> Batch {
            let mut batch = Batch {
                lane,
                sent: Vec::new(),
                outcomes: Vec::new(),
            };
            for frame in frames {
                let mut frame = frame.clone();
                if frame.len() < 14 {
                    // AF_PACKET pads a frame shorter than the link header
                    // with zeros (for CAP_SYS_RAWIO) or refuses it.
                    *tally
                        .not_sent
                        .entry("shorter than an Ethernet header")
                        .or_insert(0) += 1;
                    continue;
                }
                if frame.len() > 1514 {
                    // Past the veth's MTU: AF_PACKET refuses it.
                    *tally.not_sent.entry("longer than the MTU").or_insert(0) += 1;
                    continue;
                }
                if lane == Lane::Otherhost {
                    frame[..6].copy_from_slice(&OTHER_MAC);
                }
                let Some((protocol, network)) = DropLab::received(&frame) else {
                    *tally.not_sent.entry("two VLAN tags").or_insert(0) += 1;
                    continue;
                };
                let outcome = kernel_drop(protocol, &frame[network..], guarded);
                let name = match outcome {
                    KernelDropOutcome::Recorded(drop) if !drop.ports_in_data => {
                        "recorded, ports past the data"
                    }
                    KernelDropOutcome::Recorded(drop) if drop.key.family == family::IPV4 => {
                        "recorded ipv4"
                    }
                    KernelDropOutcome::Recorded(_) => "recorded ipv6",
                    KernelDropOutcome::NotRecorded(NotRecorded::Unguarded) => {
                        "not recorded: unguarded"
                    }
                    KernelDropOutcome::NotRecorded(NotRecorded::NotIp) => "not recorded: not ip",
                    KernelDropOutcome::NotRecorded(NotRecorded::Truncated) => {
                        "not recorded: truncated"
                    }
                    KernelDropOutcome::NotRecorded(NotRecorded::WrongVersion) => {
                        "not recorded: wrong version"
                    }
                };
                *tally.outcomes.entry(name).or_insert(0) += 1;
                tally.sent += 1;
                let in_lane = tally.lanes.entry(lane.name()).or_default();
                in_lane.0 += 1;
                in_lane.1 += usize::from(matches!(outcome, KernelDropOutcome::Recorded(_)));
                batch.sent.push(frame);
                batch.outcomes.push(outcome);
            }
            batch
        }

        /// Compares what the program counted (and reported) for this batch
        /// with the model, adding every disagreement to `tally`.
        #[expect(clippy::too_many_arguments, reason = "one comparison, all its inputs")]
        pub fn compare(
            &self,
            counts: &[(KernelDropKey, KernelDropStats)],
            events: &[KernelDropEvent],
            lab: &DropLab,
            sentinel: &[u8],
            guarded: &Guarded,
            otherhost: u32,
            reasons: &DropReasonNames,
            tally: &mut Tally,
        ) {
            let mut exact: HashMap<KernelDropKey, Counts> = HashMap::new();
            let mut endpoints: HashMap<Tuple, (u32, u32)> = HashMap::new();
            let mut contributors: HashMap<Tuple, Vec<usize>> = HashMap::new();
            let sentinel_outcome = kernel_drop(ETHERTYPE_IPV4, &sentinel[14..], guarded);
            for (i, outcome) in self.outcomes.iter().chain([&sentinel_outcome]).enumerate() {
                let KernelDropOutcome::Recorded(drop) = outcome else {
                    continue;
                };
                let t = tuple(&drop.key);
                endpoints.insert(t, (drop.src_endpoint, drop.dst_endpoint));
                contributors.entry(t).or_default().push(i);
                add(exact.entry(drop.key).or_default(), 1, drop.bytes);
            }
            let mut actual: HashMap<KernelDropKey, Counts> = HashMap::new();
            for (key, stats) in counts {
                add(
                    actual.entry(reasonless(key)).or_default(),
                    stats.packets,
                    stats.bytes,
                );
                *tally
                    .reasons
                    .entry(reasons.name(key.reason).to_string())
                    .or_insert(0) += stats.packets;
                // The lanes are built for these drop points; a frame
                // dropped elsewhere (a full backlog, say) is not what the
                // model was asked about.
                let at_otherhost = key.reason == otherhost;
                let sentinel = key.src[..4] == lab.v4(99).octets();
                if at_otherhost != (self.lane == Lane::Otherhost) && !sentinel {
                    tally.failures.push(format!(
                        "{:?} lane: a drop for {} ({key:?})",
                        self.lane,
                        reasons.name(key.reason)
                    ));
                }
            }
            let mut tuples: Vec<Tuple> = actual.keys().map(tuple).collect();
            tuples.extend(exact.keys().map(tuple));
            tuples.sort();
            tuples.dedup();
            for t in tuples {
                let mut got = (0, 0);
                let mut want = (0, 0);
                let mut short = Vec::new();
                for (_, c) in actual.iter().filter(|(k, _)| tuple(k) == t) {
                    add(&mut got, c.0, c.1);
                }
                for (key, c) in exact.iter().filter(|(k, _)| tuple(k) == t) {
                    add(&mut want, c.0, c.1);
                    let have = actual.get(key).copied().unwrap_or_default();
                    if have.0 < c.0 || have.1 < c.1 {
                        short.push(format!("{key:?}: counted {have:?}, model {c:?}"));
                    }
                }
                if got != want || !short.is_empty() {
                    let frames: Vec<String> = contributors
                        .get(&t)
                        .into_iter()
                        .flatten()
                        .take(5)
                        .map(|i| {
                            self.sent
                                .get(*i)
                                .map_or_else(|| "sentinel".to_owned(), |f| hex(f))
                        })
                        .collect();
                    let kernel: Vec<_> = actual.iter().filter(|(k, _)| tuple(k) == t).collect();
                    tally.failures.push(format!(
                        "{:?} lane, {}: counted {got:?} (packets, bytes), model {want:?}; \
                         {short:?}\n  kernel keys: {kernel:?}\n  frames the model keys here: {frames:?}",
                        self.lane,
                        describe(&t),
                    ));
                }
            }
            for event in events {
                let t = tuple(&event.key);
                let wanted = endpoints.get(&t);
                if wanted != Some(&(event.src_endpoint, event.dst_endpoint))
                    || event.dev_ifindex != lab.rx_ifindex
                    || event.location == 0
                {
                    tally.failures.push(format!(
                        "{:?} lane: record {event:?}; model endpoints {wanted:?}, \
                         receiving ifindex {}",
                        self.lane, lab.rx_ifindex
                    ));
                }
            }
        }
    }

    fn describe(t: &Tuple) -> String {
        let addr = |a: &[u8; 16]| -> IpAddr {
            if t.0 == family::IPV4 {
                IpAddr::from(<[u8; 4]>::try_from(&a[..4]).unwrap_or_default())
            } else {
                IpAddr::from(*a)
            }
        };
        format!(
            "family {} proto {} {} -> {}",
            t.0,
            t.1,
            addr(&t.2),
            addr(&t.3)
        )
    }

    /// `KDROPS` once the sentinel of `sentinel` is counted in it, and
    /// `true`; what it holds after 5 s (the receive path handles a batch in
    /// milliseconds) and `false` if the sentinel is not counted by then (a
    /// program that misreads the sentinel's key too, or that is not there).
    pub fn wait_for_sentinel(
        datapath: &Datapath,
        sentinel: &[u8],
        guarded: &Guarded,
    ) -> (Vec<(KernelDropKey, KernelDropStats)>, bool) {
        let KernelDropOutcome::Recorded(wanted) =
            kernel_drop(ETHERTYPE_IPV4, &sentinel[14..], guarded)
        else {
            panic!("the sentinel is not recorded by the model");
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let counts = datapath.kernel_drop_counts().expect("read KDROPS");
            if counts.iter().any(|(k, _)| reasonless(k) == wanted.key) {
                return (counts, true);
            }
            if Instant::now() > deadline {
                return (counts, false);
            }
            // Polls the map: the record is what is waited for.
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}
