//! The flow table and ring buffer records, through the real programs:
//! records on open, close and drop, none for established packets, periodic
//! export, rate-limited drop records, and counted losses when the ring
//! buffer is full.

use netwatch::{
    datapath::{Hook, TEST_RUN_IFINDEX},
    flows::Pipeline,
};
use netwatch_common::{
    endpoint::DatapathConfig,
    event::{EventKind, FlowEvent},
    flow::{COARSE_LAG_NS, tcp_flags::*},
    reason::{Direction, DropReason},
};
use netwatch_tests::{fixture::*, packets::Frame, schema, start_window::monotonic_ns};

fn kinds(events: &[FlowEvent]) -> Vec<Option<EventKind>> {
    events.iter().map(|e| EventKind::from_u8(e.kind)).collect()
}

fn tcp_to_peer(flags: u8) -> Vec<u8> {
    Frame::eth(EP_MAC, PEER_MAC)
        .ipv4(EP_V4, PEER_V4)
        .tcp(40000, 80, flags)
        .payload(&[0; 100])
        .build()
}

#[test]
fn established_packets_emit_no_records_between_open_and_close() {
    let mut h = Harness::standard();
    let frames = [
        tcp_to_peer(SYN),
        tcp_to_peer(ACK),
        tcp_to_peer(PSH | ACK),
        tcp_to_peer(ACK),
        tcp_to_peer(FIN | ACK),
        tcp_to_peer(FIN | ACK),
        tcp_to_peer(ACK),
    ];
    let mut per_packet = Vec::new();
    for frame in &frames {
        h.kernel(Hook::FromContainer, frame).unwrap();
        per_packet.push(kinds(&h.datapath.drain_events().unwrap().0));
    }
    assert_eq!(
        per_packet,
        vec![
            vec![Some(EventKind::FlowOpen)],
            vec![],
            vec![],
            vec![],
            vec![Some(EventKind::FlowClose)],
            vec![],
            vec![],
        ]
    );
    let flows = h.datapath.flows().unwrap();
    assert_eq!(flows.len(), 1);
    let stats = flows[0].1;
    assert_eq!(stats.packets, frames.len() as u64);
    assert_eq!(
        stats.bytes,
        frames.iter().map(|f| f.len() as u64).sum::<u64>()
    );
    assert_eq!(stats.tcp_flags, SYN | ACK | PSH | FIN);
    assert!(stats.first_seen_ns <= stats.last_seen_ns);
}

#[test]
fn an_established_flows_last_seen_follows_the_clock_to_within_a_tick() {
    // On one CPU (a test run runs the program on the caller's), whose tick
    // clock the first ACK fills.
    netwatch_tests::rawframe::pin_to_this_cpu();
    let mut h = Harness::standard();
    h.kernel(Hook::FromContainer, &tcp_to_peer(SYN)).unwrap();
    h.kernel(Hook::FromContainer, &tcp_to_peer(ACK)).unwrap();
    // Several ticks (4 ms at HZ=250, 10 ms at HZ=100) later, the clock that
    // ACK filled is out of date.
    std::thread::sleep(std::time::Duration::from_millis(30));
    let before = monotonic_ns().unwrap();
    h.kernel(Hook::FromContainer, &tcp_to_peer(ACK)).unwrap();
    let after = monotonic_ns().unwrap();
    let flows = h.datapath.flows().unwrap();
    let stats = flows[0].1;
    assert!(
        stats.last_seen_ns <= after,
        "last seen {} ns after the packet",
        stats.last_seen_ns - after
    );
    assert!(
        stats.last_seen_ns + COARSE_LAG_NS >= before,
        "last seen {} ms before the packet: the tick clock did not move",
        (before - stats.last_seen_ns) / 1_000_000
    );
}

/// The standard harness with an export interval of 1 ns: an established
/// flow is exported by the first packet after the tick clock moves.
fn exporting_at_every_clock_tick() -> Harness {
    let mut h = Harness::standard();
    h.datapath
        .set_config(DatapathConfig {
            export_interval_ns: 1,
            ..DatapathConfig::default()
        })
        .unwrap();
    h
}

#[test]
fn active_flows_are_exported_once_per_interval() {
    let mut h = exporting_at_every_clock_tick();
    h.kernel(Hook::FromContainer, &tcp_to_peer(SYN)).unwrap();
    let events = h.datapath.drain_events().unwrap().0;
    assert_eq!(kinds(&events), vec![Some(EventKind::FlowOpen)]);
    // Established packets read the tick clock (a jiffy's resolution,
    // never before the flow's precise first_seen), so the export comes with
    // the first packet after the tick clock has moved: packets until then
    // record nothing, and the export counts them all.
    let mut sent = 1u64;
    let export = loop {
        assert!(sent < 1_000_000, "no export while the tick clock moved on");
        h.kernel(Hook::FromContainer, &tcp_to_peer(ACK)).unwrap();
        sent += 1;
        let events = h.datapath.drain_events().unwrap().0;
        match kinds(&events)[..] {
            [] => continue,
            [Some(EventKind::FlowExport)] => break events[0],
            ref other => panic!("expected one export, got {other:?}"),
        }
    };
    assert_eq!(export.packets, sent);

    // With the default interval (10 s) the same flow stays quiet.
    h.datapath.set_config(DatapathConfig::default()).unwrap();
    h.kernel(Hook::FromContainer, &tcp_to_peer(ACK)).unwrap();
    assert!(h.datapath.drain_events().unwrap().0.is_empty());
}

#[test]
fn the_deltas_of_a_flows_events_sum_to_what_it_carried_and_each_event_meets_the_schema() {
    let mut h = exporting_at_every_clock_tick();
    let pipeline = Pipeline::new(100, Box::new(|| Ok(Vec::new())));
    let mut observed = pipeline.subscribe();
    let mut send = |h: &mut Harness, frame: &[u8]| {
        h.kernel(Hook::FromContainer, frame).unwrap();
        let records = h.datapath.drain_events().unwrap().0;
        pipeline.ingest(&records);
        let mut events = Vec::new();
        while let Ok(event) = observed.try_recv() {
            events.push(event);
        }
        events
    };
    let mut events = send(&mut h, &tcp_to_peer(SYN));
    // Until two exports have come (each needs the tick clock to move).
    let mut sent = 1u64;
    while events.len() < 3 {
        assert!(sent < 1_000_000, "no exports while the tick clock moved on");
        events.extend(send(&mut h, &tcp_to_peer(ACK)));
        sent += 1;
    }
    events.extend(send(&mut h, &tcp_to_peer(FIN | ACK)));
    sent += 1;
    let kinds: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(
        kinds,
        ["flow-open", "flow-export", "flow-export", "flow-close"]
    );
    let deltas: u64 = events.iter().map(|e| e.delta_packets).sum();
    let totals: u64 = events.iter().map(|e| e.flow.packets).sum();
    assert_eq!(deltas, sent, "the deltas sum to the packets sent");
    assert!(
        totals > sent,
        "the running totals ({totals}) would count some twice"
    );
    assert_eq!(
        events.iter().map(|e| e.delta_bytes).sum::<u64>(),
        h.datapath.flows().unwrap()[0].1.bytes
    );
    for event in &events {
        let json = serde_json::to_value(&**event).unwrap();
        schema::assert_valid(schema::Record::Event, &json);
        schema::assert_valid(schema::Record::FlowLogLine, &json);
        assert_eq!(json["schema_version"], netwatch::flows::SCHEMA_VERSION);
        // The schema can fail: an event without its delta is not one, nor
        // is a flow with an event's fields.
        let mut without_delta = json.clone();
        without_delta
            .as_object_mut()
            .unwrap()
            .remove("delta_packets");
        assert!(!schema::violations(schema::Record::Event, &without_delta).is_empty());
        assert!(!schema::violations(schema::Record::Flow, &json).is_empty());
        let flow = serde_json::to_value(&event.flow).unwrap();
        schema::assert_valid(schema::Record::Flow, &flow);
    }
}

#[test]
fn drop_records_are_rate_limited_per_flow() {
    let mut h = Harness::standard();
    let to_outside = Frame::eth(EP_MAC, GW_MAC)
        .ipv4(EP_V4, OUTSIDE_V4)
        .tcp(40000, 443, SYN)
        .build();
    for _ in 0..50 {
        let got = h.kernel(Hook::FromContainer, &to_outside).unwrap();
        assert_eq!(got.action, TC_DROP);
    }
    let events = h.datapath.drain_events().unwrap().0;
    assert_eq!(kinds(&events), vec![Some(EventKind::Drop)]);
    let flows = h.datapath.flows().unwrap();
    assert_eq!(
        flows[0].1.packets, 50,
        "every dropped packet is still counted"
    );
    assert_eq!(h.datapath.verdict_counts().unwrap()[1], 50);
}

#[test]
fn a_full_ring_buffer_counts_lost_records() {
    let mut h = Harness::standard();
    // Each new flow emits one 88-byte record (96 with the ring header):
    // some thousands more than the ring holds.
    let flows = netwatch_common::names::EVENTS_BYTES / 96 + 3_000;
    for i in 0..flows {
        let port = 1024 + (i % 60_000) as u16;
        let frame = Frame::eth(EP_MAC, PEER_MAC)
            .ipv4(EP_V4, PEER_V4)
            .udp(port, 1 + (i / 60_000) as u16)
            .build();
        h.kernel(Hook::FromContainer, &frame).unwrap();
    }
    let lost = h.datapath.ringbuf_lost().unwrap();
    let (events, malformed) = h.datapath.drain_events().unwrap();
    assert_eq!(malformed, 0);
    assert!(lost > 0, "the ring buffer never filled");
    assert_eq!(events.len() as u64 + lost, u64::from(flows));
}

#[test]
fn uplink_drops_leave_a_rate_limited_drop_record_naming_the_target() {
    let mut h = Harness::standard();
    h.datapath
        .protect(&["172.30.0.0/16".parse().unwrap()])
        .unwrap();
    let inbound = Frame::eth([2, 0x11, 0x22, 0x33, 0x44, 0x55], EP_MAC)
        .ipv4(OUTSIDE_V4, EP_V4)
        .tcp(443, 5432, SYN)
        .build();
    for _ in 0..20 {
        assert_eq!(h.kernel(Hook::Uplink, &inbound).unwrap().action, XDP_DROP);
    }
    let passing = Frame::eth([2, 0x11, 0x22, 0x33, 0x44, 0x55], EP_MAC)
        .ipv4(OUTSIDE_V4, std::net::Ipv4Addr::new(198, 51, 100, 1))
        .tcp(443, 5432, SYN)
        .build();
    assert_eq!(h.kernel(Hook::Uplink, &passing).unwrap().action, XDP_PASS);

    let events = h.datapath.drain_events().unwrap().0;
    assert_eq!(kinds(&events), vec![Some(EventKind::Drop)]);
    let record = events[0];
    assert_eq!(
        DropReason::from_u8(record.reason),
        Some(DropReason::ProtectedPrefix)
    );
    assert_eq!(record.key.direction, Direction::Ingress as u8);
    assert_eq!(record.key.ifindex, TEST_RUN_IFINDEX, "the uplink's ifindex");
    assert_eq!(
        &record.key.dst[..4],
        &EP_V4.octets(),
        "the container aimed at"
    );
    assert_eq!(record.key.dst_port, 5432);
    let flows = h.datapath.flows().unwrap();
    assert_eq!(flows.len(), 1, "passing packets are not accounted");
    assert_eq!(flows[0].1.packets, 20, "every dropped packet is counted");
}

/// The flow table is read in batches of thousands of entries (one system
/// call each): a table of several batches comes back whole, each flow
/// once, with its own counts.
#[test]
fn a_flow_table_of_many_batches_reads_back_every_flow_once_with_its_counts() {
    let mut h = Harness::standard();
    const FLOWS: u16 = 10_000;
    for port in 0..FLOWS {
        let frame = Frame::eth(EP_MAC, PEER_MAC)
            .ipv4(EP_V4, PEER_V4)
            .udp(20_000 + port, 53)
            .build();
        for _ in 0..=(port % 3) {
            h.kernel(Hook::FromContainer, &frame).unwrap();
        }
        if port % 1_000 == 0 {
            h.datapath.drain_events().unwrap();
        }
    }
    let flows = h.datapath.flows().unwrap();
    let mut seen = std::collections::BTreeMap::new();
    for (key, stats) in &flows {
        assert_eq!(key.dst_port, 53, "only this test's flows: {key:?}");
        let port = key.src_port - 20_000;
        assert!(
            seen.insert(port, stats.packets).is_none(),
            "flow from port {} read twice",
            key.src_port
        );
    }
    assert_eq!(seen.len(), usize::from(FLOWS), "every flow read back");
    for (port, packets) in seen {
        assert_eq!(packets, u64::from(port % 3) + 1, "port {port}'s count");
    }
}

/// Upgrades from a netwatch that kept IPv4 flows in `FLOWS` (before
/// `FLOWS4`): the flows its programs left in the pinned `FLOWS` read back
/// once each, a flow the newer programs also counted in `FLOWS4` as the
/// newer entry (read from pins without `FLOWS4` too), and the take-over's
/// move puts the others into `FLOWS4` with their counts, leaving `FLOWS`
/// the IPv6 flows alone.
#[test]
fn ipv4_flows_an_older_netwatch_kept_in_the_full_key_table_move_to_their_own_with_their_counts() {
    use aya::maps::{HashMap, Map, MapData};
    use netwatch::datapath::{Datapath, LoadOptions, pins};
    use netwatch_common::{
        flow::{FlowKey, FlowKey4, FlowStats, family},
        names,
        packet::{ETHERTYPE_IPV4, ETHERTYPE_IPV6},
    };
    use netwatch_tests::netns::PinDir;

    require_root();
    let pins = PinDir::create();
    let mut datapath = Datapath::load(&LoadOptions {
        pin_root: Some(pins.0.clone()),
        ..LoadOptions::default()
    })
    .expect("programs load");
    let pinned = |name: &str| -> Map {
        let data = MapData::from_pin(pins::maps_dir(&pins.0).join(name)).expect("pinned map");
        Map::from_map_data(data).expect("a map")
    };
    let mut full: HashMap<MapData, FlowKey, FlowStats> =
        pinned(names::MAP_FLOWS).try_into().unwrap();
    let mut short: HashMap<MapData, FlowKey4, FlowStats> =
        pinned(names::MAP_FLOWS4).try_into().unwrap();
    let v4 = |src_port: u16| {
        let mut key = FlowKey {
            ifindex: 7,
            direction: Direction::Egress as u8,
            family: family::IPV4,
            proto: 6,
            ethertype: ETHERTYPE_IPV4,
            src_port,
            dst_port: 443,
            ..FlowKey::default()
        };
        key.src[..4].copy_from_slice(&[172, 19, 0, 2]);
        key.dst[..4].copy_from_slice(&[172, 19, 0, 3]);
        key
    };
    let (only_old, in_both) = (v4(40000), v4(40001));
    let v6 = FlowKey {
        family: family::IPV6,
        ethertype: ETHERTYPE_IPV6,
        src: [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
        dst: [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3],
        ..v4(40002)
    };
    let counted = |packets: u64| FlowStats {
        packets,
        bytes: packets * 100,
        first_seen_ns: 1,
        last_seen_ns: 2,
        ..FlowStats::default()
    };
    // What the older programs left, and what the newer ones counted since.
    for key in [only_old, in_both, v6] {
        full.insert(key, counted(5), 0).unwrap();
    }
    // Pins as a netwatch from before `FLOWS4` leaves them (no `FLOWS4`):
    // `status` and a later agent still read the flows of `FLOWS`.
    let flows4_pin = pins::maps_dir(&pins.0).join(names::MAP_FLOWS4);
    let aside = pins.0.join("FLOWS4-aside");
    std::fs::rename(&flows4_pin, &aside).unwrap();
    let read = netwatch::datapath::pinned::read_flows(&pins.0);
    std::fs::rename(&aside, &flows4_pin).unwrap();
    assert_eq!(read.unwrap().len(), 3, "the flows of FLOWS alone");
    short
        .insert(in_both.narrow().unwrap(), counted(9), 0)
        .unwrap();

    let packets_of = |flows: &[(FlowKey, FlowStats)], key: FlowKey| -> Vec<u64> {
        flows
            .iter()
            .filter(|(k, _)| *k == key)
            .map(|(_, s)| s.packets)
            .collect()
    };
    let read = |datapath: &Datapath| {
        let flows = datapath.flows().unwrap();
        assert_eq!(flows.len(), 3, "each flow once: {flows:?}");
        assert_eq!(packets_of(&flows, only_old), [5]);
        assert_eq!(packets_of(&flows, in_both), [9], "the newer entry");
        assert_eq!(packets_of(&flows, v6), [5]);
    };
    read(&datapath);

    assert_eq!(datapath.move_ipv4_flows().unwrap(), 1);
    read(&datapath);
    let left: Vec<FlowKey> = full.keys().map(Result::unwrap).collect();
    assert_eq!(left, [v6], "only the IPv6 flow stays in FLOWS");
    assert_eq!(
        short.get(&only_old.narrow().unwrap(), 0).unwrap().packets,
        5,
        "moved with its counts"
    );
    assert_eq!(
        datapath.move_ipv4_flows().unwrap(),
        0,
        "nothing left to move"
    );
}
