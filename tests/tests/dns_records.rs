//! DNS records from the veth programs, through the real programs with
//! `BPF_PROG_TEST_RUN`: a DNS datagram in either direction is copied to
//! `DNS_EVENTS` with its facts and payload, whatever the verdict; other
//! packets are not; long answers are cut and counted; a flood is
//! rate-limited and counted, and flow records still flow.

use netwatch::datapath::{CapturedDns, Hook, TEST_RUN_IFINDEX};
use netwatch_common::{
    dns::DNS_PAYLOAD_MAX,
    event::EventKind,
    flow::family,
    reason::{Direction, DropReason, Verdict},
};
use netwatch_tests::{fixture::*, packets::Frame};

/// A DNS answer's bytes (its content does not matter to the kernel).
fn answer_payload(len: usize) -> Vec<u8> {
    let mut payload = vec![0x12, 0x34, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0];
    payload.extend((0..len.saturating_sub(12)).map(|i| i as u8));
    payload
}

fn answer_from_outside(payload: &[u8]) -> Vec<u8> {
    Frame::eth(GW_MAC, EP_MAC)
        .ipv4(OUTSIDE_V4, EP_V4)
        .udp(53, 40000)
        .payload(payload)
        .build()
}

fn query_to_outside() -> Vec<u8> {
    Frame::eth(EP_MAC, GW_MAC)
        .ipv4(EP_V4, OUTSIDE_V4)
        .udp(40000, 53)
        .payload(&answer_payload(30))
        .build()
}

fn drain(h: &mut Harness) -> Vec<CapturedDns> {
    let (records, malformed) = h.datapath.drain_dns().expect("drain");
    assert_eq!(malformed, 0);
    records
}

#[test]
fn dns_in_both_directions_is_recorded_with_its_facts_and_other_packets_are_not() {
    let mut h = Harness::standard();
    h.datapath.enable_dns_records(0, 0).unwrap();
    let payload = answer_payload(80);
    let outcome = h
        .kernel(Hook::ToContainer, &answer_from_outside(&payload))
        .unwrap();
    let records = drain(&mut h);
    assert_eq!(records.len(), 1, "{records:?}");
    let answer = &records[0];
    assert_eq!(answer.payload, payload);
    let header = answer.header;
    assert_eq!(header.endpoint, TEST_RUN_IFINDEX);
    assert_eq!(header.direction, Direction::Ingress as u8);
    assert_eq!(header.family, family::IPV4);
    assert_eq!((header.src_port, header.dst_port), (53, 40000));
    assert_eq!(usize::from(header.message_len), payload.len());
    assert_eq!(answer.addresses(), Some((OUTSIDE_V4.into(), EP_V4.into())));
    assert_eq!(
        header.verdict,
        outcome.decision().expect("counted").verdict as u8
    );
    assert!(header.time_ns > 0);

    // The enforced endpoint may not ask the outside: the query is dropped
    // and still recorded, with netwatch's reason.
    let outcome = h.kernel(Hook::FromContainer, &query_to_outside()).unwrap();
    assert_eq!(outcome.action, TC_DROP);
    let records = drain(&mut h);
    assert_eq!(records.len(), 1, "{records:?}");
    let query = records[0].header;
    assert_eq!(query.direction, Direction::Egress as u8);
    assert_eq!(query.verdict, Verdict::Dropped as u8);
    assert_eq!(query.reason, outcome.reason.unwrap() as u8);
    assert_ne!(query.reason, DropReason::None as u8);

    // Not port 53 either way, or not UDP: nothing.
    for frame in [
        Frame::eth(GW_MAC, EP_MAC)
            .ipv4(OUTSIDE_V4, EP_V4)
            .udp(5353, 40000)
            .payload(&payload)
            .build(),
        Frame::eth(GW_MAC, EP_MAC)
            .ipv4(OUTSIDE_V4, EP_V4)
            .tcp(53, 40000, 0x10)
            .payload(&payload)
            .build(),
    ] {
        h.kernel(Hook::ToContainer, &frame).unwrap();
    }
    assert_eq!(drain(&mut h), Vec::new());
    let counts = h.datapath.dns_counts().unwrap();
    assert_eq!(counts.submitted, 2);
    assert_eq!(
        (counts.rate_limited, counts.lost, counts.truncated),
        (0, 0, 0)
    );
}

#[test]
fn an_ipv6_answer_is_recorded_with_its_addresses() {
    let mut h = Harness::standard();
    h.datapath.enable_dns_records(0, 0).unwrap();
    let payload = answer_payload(60);
    let frame = Frame::eth(GW_MAC, EP_MAC)
        .ipv6(OUTSIDE_V6, EP_V6)
        .udp(53, 40000)
        .payload(&payload)
        .build();
    h.kernel(Hook::ToContainer, &frame).unwrap();
    let records = drain(&mut h);
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].header.family, family::IPV6);
    assert_eq!(records[0].payload, payload);
    assert_eq!(
        records[0].addresses(),
        Some((OUTSIDE_V6.into(), EP_V6.into()))
    );
}

#[test]
fn nothing_is_recorded_until_records_are_turned_on() {
    let mut h = Harness::standard();
    h.kernel(Hook::ToContainer, &answer_from_outside(&answer_payload(40)))
        .unwrap();
    assert_eq!(drain(&mut h), Vec::new());
    h.datapath.enable_dns_records(0, 0).unwrap();
    h.datapath.disable_dns_records().unwrap();
    h.kernel(Hook::ToContainer, &answer_from_outside(&answer_payload(40)))
        .unwrap();
    assert_eq!(drain(&mut h), Vec::new());
}

#[test]
fn a_long_answer_is_cut_at_the_cap_and_counted() {
    let mut h = Harness::standard();
    h.datapath.enable_dns_records(0, 0).unwrap();
    let payload = answer_payload(1200);
    h.kernel(Hook::ToContainer, &answer_from_outside(&payload))
        .unwrap();
    let records = drain(&mut h);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].payload, payload[..DNS_PAYLOAD_MAX]);
    assert_eq!(usize::from(records[0].header.message_len), payload.len());
    assert_eq!(h.datapath.dns_counts().unwrap().truncated, 1);
}

#[test]
fn a_dns_flood_is_rate_limited_and_counted_and_flow_records_still_flow() {
    let mut h = Harness::standard();
    // Ten a second with bursts of five: a run of 500 takes far less than
    // the tenth of a second one more token needs, on any machine that
    // runs this at all; the bound below allows many more anyway.
    h.datapath.enable_dns_records(10, 5).unwrap();
    let flood = 500;
    h.datapath
        .test_run(
            Hook::ToContainer,
            &answer_from_outside(&answer_payload(60)),
            flood,
        )
        .unwrap();
    let records = drain(&mut h);
    let counts = h.datapath.dns_counts().unwrap();
    assert_eq!(counts.submitted, records.len() as u64);
    assert_eq!(counts.submitted + counts.rate_limited, u64::from(flood));
    assert!(
        (5..50).contains(&counts.submitted),
        "the burst, and not much more: {counts:?}"
    );
    assert_eq!(counts.lost, 0);
    // The flood's own flow has its record in the flow records' ring
    // buffer (a drop record: the enforced endpoint takes nothing from the
    // outside).
    let (events, _) = h.datapath.drain_events().unwrap();
    assert!(
        events
            .iter()
            .any(|e| EventKind::from_u8(e.kind) == Some(EventKind::Drop)),
        "{events:?}"
    );
}
