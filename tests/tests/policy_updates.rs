//! Rewriting the policy maps of loaded programs: `replace` leaves exactly
//! the new policy (removed endpoints, prefixes and host addresses are gone,
//! kept ones never disappear), checked through the programs themselves.

use std::net::IpAddr;

use netwatch::{datapath::Hook, policy::compile};
use netwatch_common::{endpoint::policy_flags, flow::tcp_flags::SYN, reason::DropReason};
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
