//! The standard test topology and a harness that runs frames through the
//! real kernel programs (BPF_PROG_TEST_RUN) and the reference model side by
//! side.
//!
//! Addresses here are only ever written into maps and test frames; no packet
//! built from them leaves the test process.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netwatch::{
    datapath::{Datapath, DatapathError, Hook, LoadOptions, ReasonCounts, TEST_RUN_IFINDEX},
    policy::{
        AllowRule, Cidr, InterfacePolicy, PublishedRule, ReferenceModel, compile,
        model::macvlan::{Cookies, HookVerdict},
    },
};
use netwatch_common::{
    endpoint::{DatapathConfig, EndpointPolicy, MacvlanPort, MacvlanPortKey, policy_flags},
    packet::{IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP},
    reason::{Direction, DropReason, Verdict},
    verdict::Decision,
};

use crate::packets::Mac;

/// The endpoint under test (its policy sits on the test-run ifindex).
pub const EP_MAC: Mac = [0x02, 0x42, 0xac, 0x1e, 0x00, 0x02];
pub const EP_V4: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 2);
pub const EP_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x30, 0, 0, 0, 0, 0, 2);
/// The kernel-chosen link-local address of the endpoint (EUI-64 of EP_MAC).
pub const EP_LL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0x42, 0xacff, 0xfe1e, 0x2);
pub const GW_MAC: Mac = [0x02, 0x42, 0x9e, 0x00, 0x00, 0x01];
pub const GW_V4: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 1);
pub const GW_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x30, 0, 0, 0, 0, 0, 1);
/// Another container on the same network.
pub const PEER_MAC: Mac = [0x02, 0x42, 0xac, 0x1e, 0x00, 0x03];
pub const PEER_V4: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 3);
pub const PEER_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x30, 0, 0, 0, 0, 0, 3);
/// Other addresses of the host: an uplink address, docker0, the bridge's
/// link-local address, a global IPv6 address.
pub const HOST_V4: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
pub const DOCKER0_V4: Ipv4Addr = Ipv4Addr::new(172, 17, 0, 1);
pub const BRIDGE_LL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
pub const HOST_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 1);
/// Host addresses inside the endpoint's network that are not its gateway
/// (as a macvlan parent's address sits in its network): host access, not a
/// peer, though the network's prefix covers them.
pub const HOST_IN_NET_V4: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 250);
pub const HOST_IN_NET_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x30, 0, 0, 0, 0, 0, 0xfa);
/// A container on another Docker network.
pub const OTHER_NET_V4: Ipv4Addr = Ipv4Addr::new(172, 31, 0, 5);
/// "The outside world" (documentation ranges).
pub const OUTSIDE_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);
pub const OUTSIDE_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xbeef, 0, 0, 0, 0, 7);
/// Allow-listed: 198.51.100.0/24 on 443/tcp, 198.51.100.53 on 53/udp,
/// 192.0.2.0/24 for ICMP, 2001:db8:a110::/48 for anything.
pub const ALLOWED_NET_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 20);
pub const ALLOWED_DNS_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 53);
pub const ALLOWED_ICMP_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 9);
pub const ALLOWED_ANY_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xa110, 0, 0, 0, 0, 5);
pub const SCOPE: u32 = 7;

fn cidr(text: &str) -> Cidr {
    text.parse().expect("fixture CIDR")
}

fn allow(text: &str, proto: u8, port: u16) -> AllowRule {
    AllowRule {
        cidr: cidr(text),
        proto,
        port,
    }
}

/// The policy of the endpoint under test with the given flags.
pub fn endpoint_spec(flags: u32) -> InterfacePolicy {
    InterfacePolicy {
        ifindex: TEST_RUN_IFINDEX,
        policy: EndpointPolicy {
            flags: flags | policy_flags::HAS_IPV4 | policy_flags::HAS_IPV6,
            scope: SCOPE,
            ipv4: EP_V4.octets(),
            gateway_v4: GW_V4.octets(),
            ipv6: EP_V6.octets(),
            gateway_v6: GW_V6.octets(),
            mac: EP_MAC,
            _pad: [0; 2],
            parent: 0,
        },
        networks: vec![cidr("172.30.0.0/16"), cidr("fd00:30::/64")],
        published: Vec::new(),
        allow: vec![
            allow("198.51.100.0/24", IPPROTO_TCP, 443),
            allow("198.51.100.53/32", IPPROTO_UDP, 53),
            allow("192.0.2.0/24", IPPROTO_ICMP, 0),
            allow("2001:db8:a110::/48", 0, 0),
        ],
    }
}

/// The network-wide policy of the endpoint's network, as the agent puts it
/// on the network's bridge (keyed here by the test-run ifindex).
pub fn bridge_spec() -> InterfacePolicy {
    let mut spec = endpoint_spec(policy_flags::ENFORCE | policy_flags::NETWORK_WIDE);
    spec.policy.ipv4 = [0; 4];
    spec.policy.ipv6 = [0; 16];
    spec.policy.mac = [0; 6];
    spec
}

/// Another endpoint (on an ifindex no test runs on) whose network and
/// allow-list cover the outside world: if scopes leaked into each other in
/// the tries, the endpoint under test would reach the outside through it.
pub fn decoy_spec() -> InterfacePolicy {
    let mut spec = endpoint_spec(policy_flags::ENFORCE);
    spec.ifindex = 4242;
    spec.policy.scope = SCOPE + 1;
    spec.networks = vec![cidr("203.0.113.0/24"), cidr("2001:db8:beef::/48")];
    spec.allow = vec![allow("0.0.0.0/0", 0, 0), allow("::/0", 0, 0)];
    spec
}

/// The macvlan topology: the test-run ifindex is either the parent (for
/// `macvlan_parent`) or a child on parent [`MACVLAN_PARENT`] (for
/// `macvlan_child`), whose siblings are: [`PEER_MAC`] enforcing, with the
/// peer's addresses; [`AUDITED_MAC`] under audit; [`UNMANAGED_MAC`] a port
/// whose endpoint has no policy; [`OBSERVED_MAC`] observed only. The same
/// children on another parent must never match.
pub const MACVLAN_PARENT: u32 = 50;
pub const OTHER_PARENT: u32 = 77;
pub const ENFORCED_SIBLING: u32 = 11;
pub const AUDITED_SIBLING: u32 = 12;
pub const AUDITED_MAC: Mac = [0x02, 0x42, 0xac, 0x1e, 0x00, 0x04];
pub const AUDITED_V4: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 4);
pub const AUDITED_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x30, 0, 0, 0, 0, 0, 4);
pub const UNMANAGED_SIBLING: u32 = 13;
pub const UNMANAGED_MAC: Mac = [0x02, 0x42, 0xac, 0x1e, 0x00, 0x05];
pub const OBSERVED_SIBLING: u32 = 14;
pub const OBSERVED_MAC: Mac = [0x02, 0x42, 0xac, 0x1e, 0x00, 0x06];

/// A macvlan child's policy on parent `parent`.
fn child_spec(
    ifindex: u32,
    flags: u32,
    parent: u32,
    mac: Mac,
    v4: Ipv4Addr,
    v6: Ipv6Addr,
) -> InterfacePolicy {
    let mut spec = endpoint_spec(flags);
    spec.ifindex = ifindex;
    spec.policy.parent = parent;
    spec.policy.mac = mac;
    spec.policy.ipv4 = v4.octets();
    spec.policy.ipv6 = v6.octets();
    spec
}

fn port(parent: u32, mac: Mac, endpoint: u32, netns_cookie: u64) -> (MacvlanPortKey, MacvlanPort) {
    (
        MacvlanPortKey::new(parent, mac),
        MacvlanPort::new(endpoint, netns_cookie),
    )
}

/// The macvlan topology for `hook` in fifteen variants that between them
/// take every branch of the programs' namespace test: `CONFIG`'s host
/// cookie is the sender's (`own`: "the host sent it"), 0 (unknown) or
/// another namespace's ("a container sent it"), and each port's namespace
/// cookie is 0, the sender's or another one, rotating.
///
/// The first nine rotate the policy on the test-run ifindex through
/// enforcing, audited and observed (and, for a child, enforcing without
/// `MACVLAN`, which must not judge siblings). Three leave the test-run
/// ifindex without a policy (a child whose port is known but whose endpoint
/// has none, or a parent without its network's policy: see
/// [`macvlan_is_policy_less`]). Three publish ports
/// (`netwatch.ingress=published`, see [`macvlan_published`]): on the
/// enforcing sibling and on the test-run child, or on the parent's
/// network-wide policy.
pub fn macvlan_configs(hook: Hook, own: u64) -> Vec<MacvlanConfig> {
    let elsewhere = own ^ 0x5eed_0000_0000_0001;
    let cookies = [0, own, elsewhere];
    let (parent, test_run) = match hook {
        Hook::MacvlanParent => (TEST_RUN_IFINDEX, None),
        Hook::MacvlanChild => (MACVLAN_PARENT, Some(TEST_RUN_IFINDEX)),
        _ => panic!("{hook:?} is not a macvlan program"),
    };
    let macvlan = policy_flags::MACVLAN;
    let published = policy_flags::PUBLISHED;
    let mut configs = Vec::new();
    for kind in [
        UnderTest::Rotating,
        UnderTest::PolicyLess,
        UnderTest::Published,
    ] {
        for (h, host) in [own, 0, elsewhere].into_iter().enumerate() {
            // The nine rotating variants take every pair of host and port
            // cookies; the others one rotation per host cookie.
            let rotations = match kind {
                UnderTest::Rotating => 0..3,
                _ => h..h + 1,
            };
            for r in rotations {
                let cookie = |i: usize| cookies[(r + i) % 3];
                let mut sibling = child_spec(
                    ENFORCED_SIBLING,
                    policy_flags::ENFORCE | macvlan,
                    parent,
                    PEER_MAC,
                    PEER_V4,
                    PEER_V6,
                );
                if kind == UnderTest::Published {
                    sibling = macvlan_published(sibling, PEER_V4, PEER_V6);
                }
                let mut endpoints = vec![
                    sibling,
                    child_spec(
                        AUDITED_SIBLING,
                        policy_flags::ENFORCE | policy_flags::AUDIT | macvlan,
                        parent,
                        AUDITED_MAC,
                        AUDITED_V4,
                        AUDITED_V6,
                    ),
                    child_spec(
                        OBSERVED_SIBLING,
                        macvlan,
                        parent,
                        OBSERVED_MAC,
                        PEER_V4,
                        PEER_V6,
                    ),
                ];
                let mut ports = vec![
                    port(parent, PEER_MAC, ENFORCED_SIBLING, cookie(0)),
                    port(parent, AUDITED_MAC, AUDITED_SIBLING, cookie(1)),
                    port(parent, UNMANAGED_MAC, UNMANAGED_SIBLING, cookie(2)),
                    port(parent, OBSERVED_MAC, OBSERVED_SIBLING, cookie(1)),
                    port(OTHER_PARENT, EP_MAC, ENFORCED_SIBLING, elsewhere),
                    port(OTHER_PARENT, GW_MAC, AUDITED_SIBLING, elsewhere),
                ];
                match (test_run, kind) {
                    (None, UnderTest::PolicyLess) => {}
                    (None, _) => {
                        let mut parent_spec = bridge_spec();
                        if kind == UnderTest::Published {
                            // Every container's published ports, as the
                            // agent writes them on the network's bridge.
                            parent_spec = macvlan_published(parent_spec, PEER_V4, PEER_V6);
                            parent_spec.published.extend(
                                macvlan_published(bridge_spec(), AUDITED_V4, AUDITED_V6).published,
                            );
                        } else {
                            parent_spec.policy.flags ^=
                                [0, policy_flags::AUDIT, policy_flags::ENFORCE][r];
                        }
                        endpoints.push(parent_spec);
                    }
                    (Some(child), _) => {
                        let flags = [
                            policy_flags::ENFORCE | macvlan,
                            policy_flags::ENFORCE | policy_flags::AUDIT | macvlan,
                            macvlan,
                            policy_flags::ENFORCE,
                        ][(r + h) % 4];
                        let spec = child_spec(child, flags, parent, EP_MAC, EP_V4, EP_V6);
                        match kind {
                            UnderTest::Rotating => endpoints.push(spec),
                            UnderTest::PolicyLess => {}
                            UnderTest::Published => {
                                let mut spec = macvlan_published(spec, EP_V4, EP_V6);
                                spec.policy.flags |= policy_flags::ENFORCE | macvlan | published;
                                endpoints.push(spec);
                            }
                        }
                        ports.push(port(parent, EP_MAC, child, cookie(2)));
                    }
                }
                configs.push(MacvlanConfig {
                    endpoints,
                    ports,
                    host_netns_cookie: host,
                });
            }
        }
    }
    configs
}

/// What [`macvlan_configs`] puts on the test-run ifindex.
#[derive(Clone, Copy, PartialEq, Eq)]
enum UnderTest {
    /// Enforcing, audited, observed (or enforcing without `MACVLAN`).
    Rotating,
    /// No policy at all.
    PolicyLess,
    /// Enforcing with published ports.
    Published,
}

/// Whether `config` leaves the test-run ifindex without a policy.
pub fn macvlan_is_policy_less(config: &MacvlanConfig) -> bool {
    config
        .endpoints
        .iter()
        .all(|spec| spec.ifindex != TEST_RUN_IFINDEX)
}

/// `spec` under `netwatch.ingress=published`, publishing ports of `v4`
/// and `v6` that random frames often hit ([`crate::corpus::INTERESTING_PORTS`]):
/// 80/tcp, 53/udp and 22/tcp to anyone, 443/tcp and 123/udp on loopback
/// only (only the host may open connections to those).
pub fn macvlan_published(mut spec: InterfacePolicy, v4: Ipv4Addr, v6: Ipv6Addr) -> InterfacePolicy {
    spec.policy.flags |= policy_flags::PUBLISHED;
    for addr in [IpAddr::from(v4), IpAddr::from(v6)] {
        for (proto, port, from_anywhere) in [
            (IPPROTO_TCP, 80, true),
            (IPPROTO_UDP, 53, true),
            (IPPROTO_TCP, 22, true),
            (IPPROTO_TCP, 443, false),
            (IPPROTO_UDP, 123, false),
        ] {
            spec.published.push(PublishedRule {
                addr,
                proto,
                port,
                from_anywhere,
            });
        }
    }
    spec
}

/// The endpoint under test as an enforcing macvlan child, with a sibling
/// that is not in the frames' way: for `macvlan_parent`, a child on the
/// test-run parent owning [`EP_MAC`] whose frames come from its own
/// namespace (this process's) while the host's is another; for
/// `macvlan_child`, the child itself on the test-run ifindex.
pub fn macvlan_enforced_child(hook: Hook, own: u64) -> MacvlanConfig {
    let enforce = policy_flags::ENFORCE | policy_flags::MACVLAN;
    let (parent, child, mut endpoints) = match hook {
        Hook::MacvlanParent => (TEST_RUN_IFINDEX, ENFORCED_SIBLING, vec![bridge_spec()]),
        Hook::MacvlanChild => (MACVLAN_PARENT, TEST_RUN_IFINDEX, Vec::new()),
        _ => panic!("{hook:?} is not a macvlan program"),
    };
    endpoints.push(child_spec(child, enforce, parent, EP_MAC, EP_V4, EP_V6));
    endpoints.push(child_spec(
        AUDITED_SIBLING,
        enforce | policy_flags::AUDIT,
        parent,
        AUDITED_MAC,
        AUDITED_V4,
        AUDITED_V6,
    ));
    MacvlanConfig {
        endpoints,
        ports: vec![
            port(parent, EP_MAC, child, own),
            port(parent, AUDITED_MAC, AUDITED_SIBLING, own ^ 1),
        ],
        host_netns_cookie: own ^ 0x5eed_0000_0000_0001,
    }
}

/// The host's own addresses in the standard topology.
pub fn host_addresses() -> Vec<IpAddr> {
    vec![
        IpAddr::V4(HOST_V4),
        IpAddr::V4(DOCKER0_V4),
        IpAddr::V6(BRIDGE_LL),
        IpAddr::V6(HOST_V6),
        IpAddr::V4(HOST_IN_NET_V4),
        IpAddr::V6(HOST_IN_NET_V6),
    ]
}

/// How many TCX programs are attached to interface `ifname` of the calling
/// thread's network namespace: (ingress, egress). Asks the kernel, not
/// netwatch's pins.
pub fn tcx_program_counts(ifname: &str) -> (usize, usize) {
    use aya::programs::{SchedClassifier, TcAttachType};
    let count = |t| {
        SchedClassifier::query_tcx(ifname, t)
            .map(|(_, programs)| programs.len())
            .unwrap_or(0)
    };
    (count(TcAttachType::Ingress), count(TcAttachType::Egress))
}

/// Fails the test, loudly, when it cannot load BPF programs.
pub fn require_root() {
    assert!(
        netwatch::host::is_root(),
        "this test loads BPF programs and needs root: run it through `cargo xtask test` as root"
    );
}

/// Frames that BPF_PROG_TEST_RUN refuses (EINVAL) before any skb program
/// runs: shorter than an Ethernet header, or an untagged IPv4/IPv6 ethertype
/// without a whole fixed IP header behind it (net/bpf/test_run.c pulls
/// `struct iphdr`/`struct ipv6hdr` to fill in a fake socket). The real
/// datapath can see such frames; the parser's handling of short IP headers
/// is exercised through the VLAN-tagged truncations, which the kernel does
/// not pull.
pub fn test_run_refuses(frame: &[u8]) -> bool {
    if frame.len() < 14 {
        return true;
    }
    match u16::from_be_bytes([frame[12], frame[13]]) {
        0x0800 => frame.len() < 14 + 20,
        0x86dd => frame.len() < 14 + 40,
        _ => false,
    }
}

/// Whether an error is the kernel's EINVAL.
pub fn is_einval(error: &DatapathError) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return io.raw_os_error() == Some(22);
        }
        source = e.source();
    }
    false
}

/// What the kernel did with one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelOutcome {
    pub action: i32,
    /// The counter that moved, if any (None: the endpoint is not managed).
    pub reason: Option<DropReason>,
}

impl KernelOutcome {
    /// The decision the moved counter stands for (callers compare the
    /// action separately).
    pub fn decision(&self) -> Option<Decision> {
        self.reason.map(Decision::from_reason)
    }
}

/// TC action for a forwarded packet (TCX_NEXT) and a dropped one (TC_ACT_SHOT).
pub const TC_CONTINUE: i32 = -1;
pub const TC_DROP: i32 = 2;
/// XDP actions.
pub const XDP_DROP: i32 = 1;
pub const XDP_PASS: i32 = 2;

/// What a program did with one frame, counted in full: its action and how
/// far every per-reason counter moved (a macvlan child counts a sibling's
/// egress and its own ingress for one frame).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct CountedOutcome {
    pub action: i32,
    /// Moves of the verdict counters (forwarded and dropped), by reason.
    pub verdicts: ReasonCounts,
    /// Moves of the audit counters, by reason.
    pub audits: ReasonCounts,
}

impl CountedOutcome {
    /// What the kernel should report for the model's verdict.
    pub fn expected(model: &HookVerdict) -> CountedOutcome {
        let mut outcome = CountedOutcome {
            action: if model.dropped() {
                TC_DROP
            } else {
                TC_CONTINUE
            },
            verdicts: ReasonCounts::default(),
            audits: ReasonCounts::default(),
        };
        for decision in &model.counted {
            let counters = if decision.verdict == Verdict::Audited {
                &mut outcome.audits
            } else {
                &mut outcome.verdicts
            };
            counters[decision.reason as usize] += 1;
        }
        outcome
    }
}

impl std::fmt::Debug for CountedOutcome {
    /// The action and the counters that moved, by name.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let moved = |counts: &ReasonCounts, what: &str| -> Vec<String> {
            DropReason::ALL
                .into_iter()
                .filter(|r| counts[*r as usize] != 0)
                .map(|r| format!("{what} {} +{}", r.name(), counts[r as usize]))
                .collect()
        };
        let mut all = moved(&self.verdicts, "verdict");
        all.extend(moved(&self.audits, "audit"));
        write!(f, "action {} counted [{}]", self.action, all.join(", "))
    }
}

/// A macvlan topology for the macvlan programs' test runs: the policies
/// (one of them on the test-run ifindex, which the program takes for the
/// parent or the child it guards), the `MACVLAN_PORTS` entries and the
/// host's namespace cookie in `CONFIG`.
#[derive(Clone, Debug)]
pub struct MacvlanConfig {
    pub endpoints: Vec<InterfacePolicy>,
    pub ports: Vec<(MacvlanPortKey, MacvlanPort)>,
    pub host_netns_cookie: u64,
}

/// Loaded programs with a policy, plus the reference model of that policy.
pub struct Harness {
    pub datapath: Datapath,
    pub model: ReferenceModel,
    veth_counts: ReasonCounts,
    uplink_counts: ReasonCounts,
    /// The host namespace cookie `CONFIG` holds (the loader writes this
    /// process's own).
    host_netns_cookie: u64,
    /// The namespace the macvlan programs see as the sender's in a test
    /// run: the one this harness was made in (see [`own_netns_cookie`]),
    /// read once rather than per frame.
    sender_netns_cookie: u64,
}

impl Harness {
    /// Loads the programs and writes `endpoints` and `host` into the maps.
    pub fn new(endpoints: Vec<InterfacePolicy>, host: Vec<IpAddr>) -> Harness {
        require_root();
        let tables = compile(&endpoints, &host).expect("fixture policy compiles");
        let mut datapath = Datapath::load(&LoadOptions::default()).expect("programs load");
        datapath
            .apply(&tables)
            .expect("policy maps accept the fixture");
        let veth_counts = datapath.verdict_counts().expect("counters");
        let uplink_counts = datapath.uplink_counts().expect("counters");
        let own = netwatch::host::netns_cookie().unwrap_or(0);
        Harness {
            datapath,
            model: ReferenceModel::new(endpoints, host),
            veth_counts,
            uplink_counts,
            host_netns_cookie: own,
            sender_netns_cookie: own,
        }
    }

    /// Loads the programs with a macvlan topology; fails loudly when the
    /// kernel refused the macvlan programs.
    pub fn macvlan(config: &MacvlanConfig) -> Harness {
        let mut harness = Harness::new(Vec::new(), host_addresses());
        harness.sender_netns_cookie = own_netns_cookie();
        if let Err(why) = harness.datapath.macvlan_support() {
            panic!("the macvlan programs did not load: {why}");
        }
        harness.reconfigure(config);
        harness
    }

    /// Makes the maps, `CONFIG`'s host cookie and the model hold exactly
    /// `config` (the counters and the flow table carry on).
    pub fn reconfigure(&mut self, config: &MacvlanConfig) {
        let tables = compile(&config.endpoints, &host_addresses())
            .and_then(|tables| tables.with_macvlan_ports(&config.ports))
            .expect("fixture policy compiles");
        self.datapath
            .replace(&tables)
            .expect("policy maps accept the fixture");
        self.datapath
            .set_config(DatapathConfig {
                host_netns_cookie: config.host_netns_cookie,
                ..DatapathConfig::default()
            })
            .expect("CONFIG accepts the host cookie");
        self.host_netns_cookie = config.host_netns_cookie;
        self.model = ReferenceModel::new(config.endpoints.clone(), host_addresses())
            .with_macvlan_ports(config.ports.iter().copied());
    }

    /// The standard topology with the endpoint enforced.
    pub fn standard() -> Harness {
        Harness::new(vec![endpoint_spec(policy_flags::ENFORCE)], host_addresses())
    }

    /// Runs one frame through a program and reports the action and which
    /// per-reason counter moved.
    pub fn kernel(&mut self, hook: Hook, frame: &[u8]) -> Result<KernelOutcome, DatapathError> {
        let outcome = self.datapath.test_run(hook, frame, 1)?;
        let (counts, previous) = match hook {
            Hook::Uplink => (self.datapath.uplink_counts()?, &mut self.uplink_counts),
            _ => (self.datapath.verdict_counts()?, &mut self.veth_counts),
        };
        let moved: Vec<DropReason> = DropReason::ALL
            .into_iter()
            .filter(|r| counts[*r as usize] != previous[*r as usize])
            .collect();
        assert!(
            moved.len() <= 1,
            "one packet moved several counters: {moved:?}"
        );
        for reason in &moved {
            assert_eq!(
                counts[*reason as usize],
                previous[*reason as usize] + 1,
                "counter {} moved by more than one",
                reason.name()
            );
        }
        *previous = counts;
        Ok(KernelOutcome {
            action: outcome.action,
            reason: moved.first().copied(),
        })
    }

    /// Runs one frame through a program and reports its action and every
    /// counter move, verdict and audit counters alike.
    pub fn kernel_counted(
        &mut self,
        hook: Hook,
        frame: &[u8],
    ) -> Result<CountedOutcome, DatapathError> {
        let audits_before = self.datapath.audit_counts()?;
        let outcome = self.datapath.test_run(hook, frame, 1)?;
        let verdicts = self.datapath.verdict_counts()?;
        let audits = self.datapath.audit_counts()?;
        let moved = |now: &ReasonCounts, before: &ReasonCounts| -> ReasonCounts {
            std::array::from_fn(|i| now[i] - before[i])
        };
        let counted = CountedOutcome {
            action: outcome.action,
            verdicts: moved(&verdicts, &self.veth_counts),
            audits: moved(&audits, &audits_before),
        };
        self.veth_counts = verdicts;
        Ok(counted)
    }

    /// The reference model's verdict for a macvlan program's frame. The
    /// test run's socket lives in this process's namespace, so that is the
    /// sender the program sees; the host's is what `CONFIG` holds.
    pub fn macvlan_model(&self, hook: Hook, frame: &[u8]) -> HookVerdict {
        let cookies = Cookies {
            sender: self.sender_netns_cookie,
            host: self.host_netns_cookie,
        };
        match hook {
            Hook::MacvlanParent => self.model.macvlan_parent(TEST_RUN_IFINDEX, frame, cookies),
            Hook::MacvlanChild => self.model.macvlan_child(TEST_RUN_IFINDEX, frame, cookies),
            _ => panic!("{hook:?} is not a macvlan program"),
        }
    }

    /// The reference model's decision for a veth program's frame.
    pub fn model(&self, hook: Hook, frame: &[u8]) -> Option<Decision> {
        let direction = match hook {
            Hook::FromContainer => Direction::Egress,
            Hook::ToContainer => Direction::Ingress,
            // The macvlan programs find their endpoint by MAC and namespace:
            // see `macvlan_model`.
            Hook::Uplink | Hook::MacvlanParent | Hook::MacvlanChild => {
                return None;
            }
        };
        self.model.decide(TEST_RUN_IFINDEX, direction, frame)
    }
}

/// The cookie of this process's network namespace: the sender namespace
/// the macvlan programs see in a test run (net/bpf/test_run.c gives the
/// skb a socket of the caller's namespace).
pub fn own_netns_cookie() -> u64 {
    netwatch::host::netns_cookie()
        .expect("SO_NETNS_COOKIE answers (Linux >= 5.14): the macvlan tests need it")
}
