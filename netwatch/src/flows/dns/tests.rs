use netwatch_common::{
    dns::{DnsRecordHeader, KIND_DNS},
    flow::family,
    packet::IPPROTO_UDP,
    reason::DropReason,
};
use rand::{Rng as _, SeedableRng as _, rngs::StdRng};
use simple_dns::{
    CLASS, Name, Packet, Question, RCODE, ResourceRecord, TYPE,
    rdata::{A, AAAA, CNAME},
};

use super::*;

const CLIENT: [u8; 4] = [172, 30, 0, 2];
const RESOLVER: [u8; 4] = [203, 0, 113, 7];

pub(crate) fn query(id: u16, name: &str) -> Vec<u8> {
    let mut packet = Packet::new_query(id);
    packet.questions.push(Question::new(
        Name::new_unchecked(name),
        TYPE::A.into(),
        CLASS::IN.into(),
        false,
    ));
    packet.build_bytes_vec().unwrap()
}

pub(crate) fn answer(
    id: u16,
    name: &str,
    rcode: RCODE,
    records: Vec<ResourceRecord<'_>>,
) -> Vec<u8> {
    let mut packet = Packet::new_reply(id);
    packet.questions.push(Question::new(
        Name::new_unchecked(name),
        TYPE::A.into(),
        CLASS::IN.into(),
        false,
    ));
    *packet.rcode_mut() = rcode;
    packet.answers = records;
    packet.build_bytes_vec().unwrap()
}

pub(crate) fn a(name: &str, addr: [u8; 4], ttl: u32) -> ResourceRecord<'_> {
    ResourceRecord::new(
        Name::new_unchecked(name),
        CLASS::IN,
        ttl,
        RData::A(A::from(Ipv4Addr::from(addr))),
    )
}

fn cname<'a>(name: &'a str, target: &'a str) -> ResourceRecord<'a> {
    ResourceRecord::new(
        Name::new_unchecked(name),
        CLASS::IN,
        60,
        RData::CNAME(CNAME(Name::new_unchecked(target))),
    )
}

/// What the kernel hands over for a datagram the container sends (a
/// query) or receives (an answer), at `time_ns`.
pub(crate) fn captured(payload: Vec<u8>, egress: bool, time_ns: u64) -> CapturedDns {
    let (mut src, mut dst) = ([0; 16], [0; 16]);
    let (from, to, sport, dport) = if egress {
        (CLIENT, RESOLVER, 40000, 53)
    } else {
        (RESOLVER, CLIENT, 53, 40000)
    };
    src[..4].copy_from_slice(&from);
    dst[..4].copy_from_slice(&to);
    CapturedDns {
        header: DnsRecordHeader {
            kind: KIND_DNS,
            direction: if egress {
                Direction::Egress
            } else {
                Direction::Ingress
            } as u8,
            verdict: Verdict::Forwarded as u8,
            family: family::IPV4,
            endpoint: 3,
            time_ns,
            src,
            dst,
            src_port: sport,
            dst_port: dport,
            proto: IPPROTO_UDP,
            captured: payload.len() as u16,
            message_len: payload.len() as u16,
            reason: DropReason::None as u8,
            ..DnsRecordHeader::default()
        },
        payload,
    }
}

fn log_with(records: &[CapturedDns]) -> (DnsLog, Vec<Recorded>) {
    let mut log = DnsLog::default();
    let names = FlowNames::default();
    let clock = Clock::at(Timestamp::from_second(1_000_000).unwrap());
    let out = records
        .iter()
        .filter_map(|r| log.record(r, &names, &clock))
        .collect();
    (log, out)
}

#[test]
fn an_answer_completes_its_query_with_latency_rcode_and_resolver() {
    let (log, recorded) = log_with(&[
        captured(query(7, "svc.netwatch.test"), true, 1_000_000_000),
        captured(
            answer(
                7,
                "svc.netwatch.test",
                RCODE::NoError,
                vec![a("svc.netwatch.test", [203, 0, 113, 7], 300)],
            ),
            false,
            1_002_500_000,
        ),
    ]);
    assert_eq!(recorded.len(), 2);
    let entries: Vec<&DnsEntry> = log.entries().collect();
    assert_eq!(entries.len(), 1);
    let entry = entries[0];
    assert_eq!(entry.name.as_deref(), Some("svc.netwatch.test"));
    assert_eq!(entry.qtype.as_deref(), Some("A"));
    assert_eq!(entry.rcode.as_deref(), Some("NOERROR"));
    assert_eq!(entry.latency_us, Some(2_500));
    assert_eq!(entry.resolver, IpAddr::from(RESOLVER));
    assert_eq!(entry.client, IpAddr::from(CLIENT));
    assert_eq!(entry.addresses(), vec![IpAddr::from([203, 0, 113, 7])]);
    assert_eq!(log.counters.unmatched_answers, 0);
}

#[test]
fn nxdomain_is_listed_as_such_and_names_nothing() {
    let (log, recorded) = log_with(&[
        captured(query(9, "nope.netwatch.test"), true, 10),
        captured(
            answer(9, "nope.netwatch.test", RCODE::NameError, vec![]),
            false,
            20,
        ),
    ]);
    let entry = log.entries().next().unwrap();
    assert_eq!(entry.rcode.as_deref(), Some("NXDOMAIN"));
    assert!(recorded.iter().all(|r| r.learned.is_none()));
}

#[test]
fn an_answer_without_its_query_is_listed_alone_without_latency() {
    let (log, _) = log_with(&[captured(
        answer(3, "svc.netwatch.test", RCODE::NoError, vec![]),
        false,
        20,
    )]);
    let entry = log.entries().next().unwrap();
    assert_eq!(entry.latency_us, None);
    assert_eq!(log.counters.unmatched_answers, 1);
    // Another id is another query.
    let (log, _) = log_with(&[
        captured(query(4, "svc.netwatch.test"), true, 10),
        captured(
            answer(5, "svc.netwatch.test", RCODE::NoError, vec![]),
            false,
            20,
        ),
    ]);
    assert_eq!(log.entries().count(), 2);
}

#[test]
fn cname_chains_are_followed_to_their_addresses_and_loops_end() {
    let answers = parse_message(&answer(
        1,
        "www.netwatch.test",
        RCODE::NoError,
        vec![
            cname("www.netwatch.test", "edge.netwatch.test"),
            cname("edge.netwatch.test", "origin.netwatch.test"),
            a("origin.netwatch.test", [203, 0, 113, 9], 30),
            a("unrelated.netwatch.test", [203, 0, 113, 10], 30),
        ],
    ))
    .unwrap()
    .answers;
    assert_eq!(
        resolved_addresses("WWW.netwatch.test.", &answers),
        vec![(IpAddr::from([203, 0, 113, 9]), 30)]
    );
    let looped = parse_message(&answer(
        1,
        "a.test",
        RCODE::NoError,
        vec![cname("a.test", "b.test"), cname("b.test", "a.test")],
    ))
    .unwrap()
    .answers;
    assert_eq!(resolved_addresses("a.test", &looped), Vec::new());
}

#[test]
fn aaaa_answers_name_ipv6_addresses() {
    let v6: Ipv6Addr = "2001:db8:beef::7".parse().unwrap();
    let bytes = answer(
        1,
        "v6.netwatch.test",
        RCODE::NoError,
        vec![ResourceRecord::new(
            Name::new_unchecked("v6.netwatch.test"),
            CLASS::IN,
            10,
            RData::AAAA(AAAA::from(v6)),
        )],
    );
    let message = parse_message(&bytes).unwrap();
    assert_eq!(
        resolved_addresses("v6.netwatch.test", &message.answers),
        vec![(IpAddr::V6(v6), 10)]
    );
}

/// `svc.netwatch.test` is 203.0.113.7 for 300 s and 203.0.113.8 for 0.
fn two_address_answer(time_ns: u64) -> CapturedDns {
    captured(
        answer(
            7,
            "svc.netwatch.test",
            RCODE::NoError,
            vec![
                a("svc.netwatch.test", [203, 0, 113, 7], 300),
                a("svc.netwatch.test", [203, 0, 113, 8], 0),
            ],
        ),
        false,
        time_ns,
    )
}

#[test]
fn without_a_known_container_an_answer_teaches_nothing() {
    let (_, recorded) = log_with(&[
        captured(query(7, "svc.netwatch.test"), true, 0),
        two_address_answer(1_000),
    ]);
    assert_eq!(recorded.len(), 2);
    assert!(recorded.iter().all(|r| r.learned.is_none()));
}

#[test]
fn names_expire_after_their_ttl_but_not_before_the_minimum() {
    let mut names = DnsNames::default();
    let address = IpAddr::from([203, 0, 113, 7]);
    names.learn("web", address, "svc.netwatch.test", 300_000_000_000);
    assert_eq!(
        names.lookup("web", address, 299_000_000_000).as_deref(),
        Some("svc.netwatch.test")
    );
    assert_eq!(names.lookup("web", address, 300_000_000_001), None);
    assert_eq!(names.lookup("db", address, 1), None, "per container");
}

/// A flow's ends are named from what its own container resolved, each
/// end on its own, until the name expires.
#[test]
fn a_flows_ends_take_the_names_its_container_resolved() {
    let mut names = DnsNames::default();
    let (src, dst) = ([172, 30, 0, 2], [203, 0, 113, 7]);
    let mut key = FlowKey {
        family: family::IPV4,
        ..FlowKey::default()
    };
    key.src[..4].copy_from_slice(&src);
    key.dst[..4].copy_from_slice(&dst);
    let text = |(s, d): (Option<Arc<str>>, Option<Arc<str>>)| {
        (s.map(|s| s.to_string()), d.map(|d| d.to_string()))
    };
    assert_eq!(text(names.ends(Some("web"), &key, 1)), (None, None));
    names.learn("web", IpAddr::from(dst), "svc.netwatch.test", 1_000);
    names.learn("db", IpAddr::from(src), "db.netwatch.test", 1_000);
    assert_eq!(
        text(names.ends(Some("web"), &key, 1_000)),
        (None, Some("svc.netwatch.test".into()))
    );
    names.learn("web", IpAddr::from(src), "self.netwatch.test", 2_000);
    assert_eq!(
        text(names.ends(Some("web"), &key, 1_500)),
        (Some("self.netwatch.test".into()), None),
        "one end expired"
    );
    assert_eq!(
        text(names.ends(Some("db"), &key, 1)),
        (Some("db.netwatch.test".into()), None)
    );
    assert_eq!(text(names.ends(Some("cache"), &key, 1)), (None, None));
    assert_eq!(text(names.ends(None, &key, 1)), (None, None));
}

#[test]
fn an_answer_for_a_known_container_learns_its_addresses_with_their_lifetimes() {
    let entry_time = 1_000;
    let mut log = DnsLog::default();
    let clock = Clock::at(Timestamp::from_second(1_000_000).unwrap());
    let names = FlowNames::default();
    log.record(
        &captured(query(7, "svc.netwatch.test"), true, 0),
        &names,
        &clock,
    );
    // The container's name comes from Docker's inventory, which these
    // tests do not have: set it on the listed query.
    log.history[0].1.container = Some("web".into());
    let recorded = log
        .record(&two_address_answer(entry_time), &names, &clock)
        .unwrap();
    let learned = recorded.learned.unwrap();
    assert_eq!(learned.container, "web");
    assert_eq!(learned.name, "svc.netwatch.test");
    assert_eq!(
        learned.addresses,
        vec![
            (IpAddr::from([203, 0, 113, 7]), entry_time + 300_000_000_000),
            (
                IpAddr::from([203, 0, 113, 8]),
                entry_time + MIN_NAME_LIFETIME_NS
            ),
        ]
    );
}

#[test]
fn names_per_container_are_bounded_and_the_oldest_go_first() {
    let mut names = DnsNames::default();
    let extra = 10;
    for i in 0..(NAMES_PER_CONTAINER + extra) as u32 {
        // Re-learning the first address again and again keeps it young.
        names.learn("web", IpAddr::from(i.to_be_bytes()), "n.test", u64::MAX);
        names.learn("web", IpAddr::from([0, 0, 0, 0]), "first.test", u64::MAX);
    }
    assert_eq!(names.len(), NAMES_PER_CONTAINER);
    assert_eq!(
        names.lookup("web", IpAddr::from(1u32.to_be_bytes()), 0),
        None
    );
    assert!(names.lookup("web", IpAddr::from([0, 0, 0, 0]), 0).is_some());
    let last = (NAMES_PER_CONTAINER + extra - 1) as u32;
    assert!(
        names
            .lookup("web", IpAddr::from(last.to_be_bytes()), 0)
            .is_some()
    );
    let order_len = names.containers["web"].order.len();
    assert!(order_len <= 2 * NAMES_PER_CONTAINER + 1, "{order_len}");
}

#[test]
fn history_and_pending_queries_are_bounded() {
    let mut log = DnsLog::default();
    let names = FlowNames::default();
    let clock = Clock::at(Timestamp::from_second(1_000_000).unwrap());
    for id in 0..(HISTORY_CAP + 5) as u16 {
        log.record(&captured(query(id, "x.test"), true, 0), &names, &clock);
    }
    assert_eq!(log.entries().count(), HISTORY_CAP);
    assert!(log.pending.len() <= PENDING_CAP);
    // The first query's answer: its query is gone, listed alone.
    log.record(
        &captured(answer(0, "x.test", RCODE::NoError, vec![]), false, 5),
        &names,
        &clock,
    );
    assert_eq!(log.counters.unmatched_answers, 1);
}

#[test]
fn garbage_and_cut_messages_are_counted_never_a_panic() {
    let good = answer(
        7,
        "svc.netwatch.test",
        RCODE::NoError,
        vec![
            cname("svc.netwatch.test", "x.netwatch.test"),
            a("x.netwatch.test", [203, 0, 113, 7], 300),
        ],
    );
    let mut log = DnsLog::default();
    let names = FlowNames::default();
    let clock = Clock::at(Timestamp::from_second(1_000_000).unwrap());
    let mut failures = 0;
    for cut in 0..good.len() {
        if parse_message(&good[..cut]).is_none() {
            failures += 1;
        }
        log.record(&captured(good[..cut].to_vec(), false, 1), &names, &clock);
    }
    assert!(failures > 0);
    assert_eq!(log.counters.parse_failures, failures);
    let mut rng = StdRng::seed_from_u64(14);
    for _ in 0..20_000 {
        let mut bytes = good.clone();
        for _ in 0..rng.random_range(1..8) {
            let at = rng.random_range(0..bytes.len());
            bytes[at] = rng.random();
        }
        let len = rng.random_range(0..=bytes.len());
        let _ = parse_message(&bytes[..len]);
        let random: Vec<u8> = (0..rng.random_range(0..600))
            .map(|_| rng.random())
            .collect();
        log.record(&captured(random, rng.random(), 1), &names, &clock);
    }
    assert!(log.counters.parse_failures > failures);
}
