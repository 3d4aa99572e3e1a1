//! The standard test topology and a harness that runs frames through the
//! real kernel programs (BPF_PROG_TEST_RUN) and the reference model side by
//! side.
//!
//! Addresses here are only ever written into maps and test frames; no packet
//! built from them leaves the test process.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netwatch::{
    datapath::{Datapath, DatapathError, Hook, LoadOptions, ReasonCounts, TEST_RUN_IFINDEX},
    policy::{AllowRule, Cidr, InterfacePolicy, ReferenceModel, compile},
};
use netwatch_common::{
    endpoint::{EndpointPolicy, policy_flags},
    packet::{IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP},
    reason::{Direction, DropReason},
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

/// The host's own addresses in the standard topology.
pub fn host_addresses() -> Vec<IpAddr> {
    vec![
        IpAddr::V4(HOST_V4),
        IpAddr::V4(DOCKER0_V4),
        IpAddr::V6(BRIDGE_LL),
        IpAddr::V6(HOST_V6),
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

/// Loaded programs with a policy, plus the reference model of that policy.
pub struct Harness {
    pub datapath: Datapath,
    pub model: ReferenceModel,
    veth_counts: ReasonCounts,
    uplink_counts: ReasonCounts,
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
        Harness {
            datapath,
            model: ReferenceModel::new(endpoints, host),
            veth_counts,
            uplink_counts,
        }
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

    /// The reference model's decision for a veth program's frame.
    pub fn model(&self, hook: Hook, frame: &[u8]) -> Option<Decision> {
        let direction = match hook {
            Hook::FromContainer => Direction::Egress,
            Hook::ToContainer => Direction::Ingress,
            // The macvlan programs find their endpoint by MAC and namespace,
            // which this single-endpoint fixture does not model.
            Hook::Uplink | Hook::MacvlanParent | Hook::MacvlanChild => {
                return None;
            }
        };
        self.model.decide(TEST_RUN_IFINDEX, direction, frame)
    }
}
