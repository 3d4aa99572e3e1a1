//! Rewriting the policy maps of loaded programs: `replace` leaves exactly
//! the new policy (removed endpoints, prefixes and host addresses are gone,
//! kept ones never disappear), checked through the programs themselves.

use std::net::IpAddr;

use netwatch::{datapath::Hook, policy::compile};
use netwatch_common::{
    endpoint::policy_flags,
    flow::tcp_flags::{ACK, SYN},
    reason::DropReason,
};
use netwatch_tests::{fixture::*, packets::Frame};

fn verdict(h: &mut Harness, frame: &[u8]) -> Option<DropReason> {
    h.kernel(Hook::FromContainer, frame).unwrap().reason
}

#[test]
fn replacing_the_policy_removes_what_the_new_policy_no_longer_holds() {
    let mut h = Harness::standard();
    let to_allowed = Frame::eth(EP_MAC, GW_MAC)
        .ipv4(EP_V4, ALLOWED_NET_V4)
        .tcp(40000, 443, SYN)
        .build();
    let to_host = Frame::eth(EP_MAC, GW_MAC)
        .ipv4(EP_V4, HOST_V4)
        .tcp(40000, 22, SYN)
        .build();
    let to_peer = Frame::eth(EP_MAC, PEER_MAC)
        .ipv4(EP_V4, PEER_V4)
        .tcp(40000, 80, SYN)
        .build();
    assert_eq!(verdict(&mut h, &to_allowed), Some(DropReason::None));
    assert_eq!(verdict(&mut h, &to_host), Some(DropReason::HostAccess));

    // Same endpoint without its allow-list, and no host addresses: the
    // allow-listed service is gone, the former host address is now just
    // outside the network.
    let mut spec = endpoint_spec(policy_flags::ENFORCE);
    spec.allow.clear();
    h.datapath.replace(&compile(&[spec], &[]).unwrap()).unwrap();
    assert_eq!(verdict(&mut h, &to_allowed), Some(DropReason::NotInNetwork));
    assert_eq!(verdict(&mut h, &to_host), Some(DropReason::NotInNetwork));
    assert_eq!(verdict(&mut h, &to_peer), Some(DropReason::None));

    // No endpoints at all: the interface is no longer managed.
    h.datapath.replace(&compile(&[], &[]).unwrap()).unwrap();
    assert_eq!(verdict(&mut h, &to_peer), None);

    // `apply` adds without removing.
    h.datapath
        .apply(&compile(&[endpoint_spec(policy_flags::ENFORCE)], &[]).unwrap())
        .unwrap();
    h.datapath
        .apply(&compile(&[], &[IpAddr::V4(HOST_V4)]).unwrap())
        .unwrap();
    assert_eq!(verdict(&mut h, &to_allowed), Some(DropReason::None));
    assert_eq!(verdict(&mut h, &to_host), Some(DropReason::HostAccess));
}

/// An established flow's verdict is cached in its flow entry, and the
/// cache never outlives the policy that made it: the very next packet
/// after a policy write is judged by the new policy, either way round.
#[test]
fn the_next_packet_of_a_live_flow_is_judged_by_the_new_policy() {
    let mut h = Harness::standard();
    let to_allowed = Frame::eth(EP_MAC, GW_MAC)
        .ipv4(EP_V4, ALLOWED_NET_V4)
        .tcp(40000, 443, ACK)
        .payload(&[0; 100])
        .build();
    // Several packets: the first decides and caches, the others hit the
    // cache.
    for _ in 0..3 {
        assert_eq!(verdict(&mut h, &to_allowed), Some(DropReason::None));
    }

    let mut without_allow = endpoint_spec(policy_flags::ENFORCE);
    without_allow.allow.clear();
    h.datapath
        .replace(&compile(&[without_allow], &host_addresses()).unwrap())
        .unwrap();
    assert_eq!(verdict(&mut h, &to_allowed), Some(DropReason::NotInNetwork));
    assert_eq!(verdict(&mut h, &to_allowed), Some(DropReason::NotInNetwork));

    h.datapath
        .replace(&compile(&[endpoint_spec(policy_flags::ENFORCE)], &host_addresses()).unwrap())
        .unwrap();
    assert_eq!(verdict(&mut h, &to_allowed), Some(DropReason::None));

    // Audit: the same flow, now forwarded under audit, counted as audited
    // (no verdict counter moves).
    let mut audited = endpoint_spec(policy_flags::ENFORCE | policy_flags::AUDIT);
    audited.allow.clear();
    h.datapath
        .replace(&compile(&[audited], &host_addresses()).unwrap())
        .unwrap();
    let outcome = h.kernel(Hook::FromContainer, &to_allowed).unwrap();
    assert_eq!((outcome.action, outcome.reason), (TC_CONTINUE, None));

    // The endpoint's policy removed: the interface is no longer managed,
    // whatever its flows cached.
    h.datapath.replace(&compile(&[], &[]).unwrap()).unwrap();
    assert_eq!(verdict(&mut h, &to_allowed), None);
}

/// The cache is keyed by the source MAC too: a frame with a cached flow's
/// addresses and ports but another sender's MAC is judged afresh.
#[test]
fn a_spoofed_mac_on_a_cached_flow_is_judged_afresh() {
    let mut h = Harness::standard();
    let own = Frame::eth(EP_MAC, PEER_MAC)
        .ipv4(EP_V4, PEER_V4)
        .tcp(40000, 80, ACK)
        .build();
    let spoofed = Frame::eth(PEER_MAC, PEER_MAC)
        .ipv4(EP_V4, PEER_V4)
        .tcp(40000, 80, ACK)
        .build();
    for _ in 0..2 {
        assert_eq!(verdict(&mut h, &own), Some(DropReason::None));
    }
    assert_eq!(verdict(&mut h, &spoofed), Some(DropReason::SpoofedMac));
    assert_eq!(verdict(&mut h, &own), Some(DropReason::None));
    assert_eq!(verdict(&mut h, &own), Some(DropReason::None));
}

/// Switching an endpoint from audit to enforcement (the agent's resync
/// after a label change, or a restart without `--audit`) is one rewrite of
/// its policy entry: a live flow's packets are audited up to the write and
/// the very next one is dropped; no packet in between goes unjudged. And
/// back: the very next packet is audited again.
#[test]
fn switching_audit_to_enforcement_drops_the_very_next_packet_of_a_live_flow() {
    let mut h = Harness::standard();
    // Without the fixture's allow-list, so that its destination is one
    // enforcement drops.
    let mut enforced_spec = endpoint_spec(policy_flags::ENFORCE);
    enforced_spec.allow.clear();
    let mut audited_spec = endpoint_spec(policy_flags::ENFORCE | policy_flags::AUDIT);
    audited_spec.allow.clear();
    let hosts = host_addresses();
    h.datapath
        .replace(&compile(&[audited_spec.clone()], &hosts).unwrap())
        .unwrap();
    // A live connection to a destination enforcement denies: its opening
    // and then data packets.
    let open = Frame::eth(EP_MAC, GW_MAC)
        .ipv4(EP_V4, ALLOWED_NET_V4)
        .tcp(40001, 443, SYN)
        .build();
    let data = Frame::eth(EP_MAC, GW_MAC)
        .ipv4(EP_V4, ALLOWED_NET_V4)
        .tcp(40001, 443, ACK)
        .payload(&[0; 100])
        .build();
    let audited_not_in_network = |h: &mut Harness, frame: &[u8], what: &str| {
        let before = h.datapath.audit_counts().unwrap();
        let outcome = h.kernel(Hook::FromContainer, frame).unwrap();
        let after = h.datapath.audit_counts().unwrap();
        assert_eq!(outcome.action, TC_CONTINUE, "audit forwards: {what}");
        assert_eq!(outcome.reason, None, "no verdict counter moves: {what}");
        let reason = DropReason::NotInNetwork as usize;
        assert_eq!(
            after[reason],
            before[reason] + 1,
            "recorded as audited not-in-network: {what}"
        );
    };
    audited_not_in_network(&mut h, &open, "the opening packet");
    for i in 0..3 {
        audited_not_in_network(&mut h, &data, &format!("data packet {i} under audit"));
    }

    h.datapath
        .replace(&compile(&[enforced_spec], &hosts).unwrap())
        .unwrap();
    let next = h.kernel(Hook::FromContainer, &data).unwrap();
    assert_eq!(
        (next.action, next.reason),
        (TC_DROP, Some(DropReason::NotInNetwork)),
        "the very next packet after the switch is dropped"
    );

    h.datapath
        .replace(&compile(&[audited_spec], &hosts).unwrap())
        .unwrap();
    audited_not_in_network(&mut h, &data, "the very next packet after switching back");
}
