//! The kernel's own drops of guarded containers' packets (records of the
//! `kernel_drops` program, see netwatch-common's `kdrop`), as flow entries:
//! `verdict` = `dropped`, `dropped_by` = `kernel`, `reason` = `kernel:` and
//! the kernel's reason name in lower case (`kernel:netfilter_drop`).
//!
//! A record names the guarded endpoint at either end: a drop of a packet a
//! guarded container sent is its egress; of one sent to a guarded
//! container, its ingress; between two guarded containers, both (each
//! container's `drops` shows it, with the other as the peer).
//!
//! They are kept apart from netwatch's own flows: the packet may well have
//! been forwarded by netwatch first (Docker's isolation rules drop it a
//! moment later in the bridge's FORWARD chain), and its flow keeps that
//! verdict. Counts are the kernel's per-key counters as of the latest
//! record (at most one per key per drop-report interval, so up to that
//! interval behind). Memory is bounded: beyond [`KERNEL_DROPS_LIMIT`]
//! entries, the tenth seen longest ago are forgotten.

use jiff::Timestamp;
use netwatch_common::{
    flow::FlowKey,
    kdrop::{KIND_KERNEL_DROP, KernelDropEvent},
    packet::{IPPROTO_ICMP, IPPROTO_ICMPV6},
    protocol::Protocol,
    reason::{Direction, Verdict},
};

use super::{
    aggregate::{Clock, Delta, DeltasFrom, FlowEntry, Oldest, Reported},
    dns::DnsNames,
    names::FlowNames,
    reason::FlowReason,
    record::key_addresses,
};
use crate::datapath::DropReasonNames;

/// Kernel drop entries kept at most.
pub const KERNEL_DROPS_LIMIT: usize = 10_000;

/// `dropped_by` of the kernel's drops.
pub const DROPPED_BY_KERNEL: &str = "kernel";
/// `dropped_by` of netwatch's own drops.
pub const DROPPED_BY_NETWATCH: &str = "netwatch";

#[derive(Clone, Debug)]
struct Kept {
    /// Boxed: an entry of the map is ~130 bytes instead of ~600, and the
    /// map has room for up to 1.4 times the entries it holds (at the limit,
    /// 14,336 for 10,000: ~8 MiB unboxed, which a port scan's drops fill).
    entry: Box<FlowEntry>,
    /// First-seen time of the kernel's counter entry the counts come from.
    kernel_first_ns: u64,
    kernel_packets: u64,
    kernel_bytes: u64,
    /// Counts of earlier kernel entries (the kernel's table is an LRU).
    base_packets: u64,
    base_bytes: u64,
    /// The totals as of the latest event.
    reported: Reported,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct KernelDrops {
    reasons: DropReasonNames,
    /// An `IndexMap` whose longest unseen go in one pass that rebuilds its
    /// index table: removed one by one from a `HashMap`, they left deleted
    /// slots that doubled its table under churn (see `aggregate::FlowMap`).
    kept: indexmap::IndexMap<(FlowKey, u32), Kept>,
    /// Records with an unknown kind or no guarded end.
    pub malformed: u64,
    /// Echo replies the kernel freed for `no_socket` after a raw socket
    /// took its copy (see [`is_raw_ping_reply`]): not kept.
    pub raw_ping_replies: u64,
    /// Packets a socket's owner never read, freed when it closed (see
    /// [`is_socket_purge`]): not kept.
    pub socket_purges: u64,
    deltas_from: DeltasFrom,
}

/// `SKB_DROP_REASON_QUEUE_PURGE`: a socket's queue freed in bulk, as when
/// a program closes a connection with data it never read. The packet
/// crossed the network and reached its socket; nothing between the
/// containers dropped it. Measured (docker_adoption): a client that closes
/// after reading a server's greeting leaves a purge for both containers of
/// every such connection, which `drops` would otherwise list as drops.
pub fn is_socket_purge(reason: &FlowReason) -> bool {
    // The kernel's reasons are read from its BTF at run time: an open set
    // of names, not netwatch's.
    matches!(reason, FlowReason::Kernel(name) if name == "queue_purge")
}

/// An ICMP or ICMPv6 echo reply freed with `NO_SOCKET`: what every reply
/// to a ping from a raw socket (busybox's `ping`, iputils without ping
/// sockets) looks like. The kernel delivers a copy to raw sockets first,
/// then `ping_rcv` finds no ping socket and frees the original with
/// `SKB_DROP_REASON_NO_SOCKET` (measured on 6.18: every answered ping
/// between two containers showed as such a "drop"). The ping got its
/// reply, so it is no drop; an unsolicited reply has no one to miss it.
pub fn is_raw_ping_reply(reason: &FlowReason, proto: u8, icmp_type: u16) -> bool {
    matches!(reason, FlowReason::Kernel(name) if name == "no_socket")
        && matches!(
            (proto, icmp_type),
            (IPPROTO_ICMP, ICMP_ECHO_REPLY) | (IPPROTO_ICMPV6, ICMPV6_ECHO_REPLY)
        )
}

const ICMP_ECHO_REPLY: u16 = 0;
const ICMPV6_ECHO_REPLY: u16 = 129;

impl KernelDrops {
    /// Names reasons as `reasons` does (the running kernel's).
    pub fn set_reasons(&mut self, reasons: DropReasonNames) {
        self.reasons = reasons;
    }

    /// See [`super::Aggregator::count_deltas_from`].
    pub fn count_deltas_from(&mut self, monotonic_ns: u64) {
        self.deltas_from = DeltasFrom(monotonic_ns);
    }

    /// Merges one record; returns the entries it touched as they stand
    /// now (one per guarded end), with what the record added to each.
    pub fn record(
        &mut self,
        event: &KernelDropEvent,
        names: &FlowNames,
        dns: &DnsNames,
        clock: &Clock,
    ) -> Vec<(FlowEntry, Delta)> {
        if event.kind != KIND_KERNEL_DROP || (event.src_endpoint == 0 && event.dst_endpoint == 0) {
            self.malformed += 1;
            return Vec::new();
        }
        let reason_name = self.reasons.name(event.key.reason);
        if is_raw_ping_reply(&reason_name, event.key.proto, event.key.src_port) {
            self.raw_ping_replies += 1;
            return Vec::new();
        }
        if is_socket_purge(&reason_name) {
            self.socket_purges += 1;
            return Vec::new();
        }
        let ends = [
            (event.src_endpoint, Direction::Egress),
            (event.dst_endpoint, Direction::Ingress),
        ];
        let mut out = Vec::new();
        for (endpoint, direction) in ends {
            if endpoint == 0 {
                continue;
            }
            let key = FlowKey {
                ifindex: endpoint,
                direction: direction as u8,
                family: event.key.family,
                proto: event.key.proto,
                _pad: 0,
                ethertype: 0,
                src_port: event.key.src_port,
                dst_port: event.key.dst_port,
                _pad2: [0; 2],
                src: event.key.src,
                dst: event.key.dst,
            };
            let reason = event.key.reason;
            let deltas_from = self.deltas_from;
            let kept = self.kept.entry((key, reason)).or_insert_with(|| Kept {
                entry: Box::new(new_entry(
                    (&key, direction),
                    &reason_name,
                    (names, dns),
                    clock,
                    event,
                )),
                kernel_first_ns: event.first_seen_ns,
                kernel_packets: 0,
                kernel_bytes: 0,
                base_packets: 0,
                base_bytes: 0,
                reported: deltas_from.first_sight(event.first_seen_ns, event.packets, event.bytes),
            });
            if event.first_seen_ns != kept.kernel_first_ns {
                if event.first_seen_ns < kept.kernel_first_ns {
                    continue;
                }
                kept.base_packets += kept.kernel_packets;
                kept.base_bytes += kept.kernel_bytes;
                kept.kernel_first_ns = event.first_seen_ns;
                kept.kernel_packets = 0;
                kept.kernel_bytes = 0;
            }
            kept.kernel_packets = kept.kernel_packets.max(event.packets);
            kept.kernel_bytes = kept.kernel_bytes.max(event.bytes);
            kept.entry.packets = kept.base_packets.saturating_add(kept.kernel_packets);
            kept.entry.bytes = kept.base_bytes.saturating_add(kept.kernel_bytes);
            kept.entry.last_seen = kept.entry.last_seen.max(clock.wall(event.last_seen_ns));
            let delta = kept.reported.advance(kept.entry.packets, kept.entry.bytes);
            out.push(((*kept.entry).clone(), delta));
        }
        self.enforce_limit();
        out
    }

    /// Forgets the entries of containers that are gone and dropped nothing
    /// since `cutoff` (see [`super::Aggregator::forget_gone`]); returns how
    /// many.
    pub fn forget_gone(&mut self, is_present: impl Fn(&str) -> bool, cutoff: Timestamp) -> usize {
        let before = self.kept.len();
        self.kept.retain(|_, kept| {
            kept.entry.container.as_deref().is_none_or(&is_present)
                || kept.entry.last_seen >= cutoff
        });
        before - self.kept.len()
    }

    /// Every entry kept.
    pub fn entries(&self) -> impl Iterator<Item = &FlowEntry> {
        self.kept.values().map(|k| &*k.entry)
    }

    pub fn len(&self) -> usize {
        self.kept.len()
    }

    pub fn is_empty(&self) -> bool {
        self.kept.is_empty()
    }

    fn enforce_limit(&mut self) {
        if self.kept.len() <= KERNEL_DROPS_LIMIT {
            return;
        }
        let excess = self.kept.len() - KERNEL_DROPS_LIMIT + KERNEL_DROPS_LIMIT / 10;
        let mut unseen_longest = Oldest::among(
            self.kept.values().map(|k| k.entry.last_seen).collect(),
            excess,
        );
        self.kept
            .retain(|_, k| !unseen_longest.takes(k.entry.last_seen));
    }
}

fn new_entry(
    (key, direction): (&FlowKey, Direction),
    reason: &FlowReason,
    (names, dns): (&FlowNames, &DnsNames),
    clock: &Clock,
    event: &KernelDropEvent,
) -> FlowEntry {
    let owner = names.owner(key);
    let (src_name, dst_name) = dns.ends(owner.container.as_deref(), key, event.first_seen_ns);
    let (peer, _) = names.peer(key);
    let (src, dst) = key_addresses(key);
    FlowEntry {
        schema_version: super::SCHEMA_VERSION,
        host: crate::host::host_name().to_owned(),
        container: owner.container,
        container_id: owner.container_id,
        project: owner.project,
        service: owner.service,
        network: owner.network,
        direction,
        src,
        dst,
        src_port: key.src_port,
        dst_port: key.dst_port,
        proto: Protocol::of(key.proto, key.family),
        packets: 0,
        bytes: 0,
        verdict: Verdict::Dropped,
        reason: Some(reason.clone()),
        dropped_by: Some(DROPPED_BY_KERNEL.to_string()),
        rule: None,
        peer: peer.as_ref().map(|p| p.name.clone()),
        peer_service: peer.as_ref().and_then(|p| p.service.clone()),
        peer_kind: peer.as_ref().map(|p| p.kind.name().to_owned()),
        published: names.published(key),
        src_name: src_name.as_deref().map(str::to_owned),
        dst_name: dst_name.as_deref().map(str::to_owned),
        first_seen: clock.wall(event.first_seen_ns),
        last_seen: clock.wall(event.last_seen_ns),
        interface: owner.interface,
        flows: 1,
    }
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;
    use netwatch_common::{
        flow::family,
        kdrop::KernelDropKey,
        packet::{IPPROTO_ICMP, IPPROTO_UDP},
    };

    use super::*;

    fn reasons() -> DropReasonNames {
        DropReasonNames::new([(12, "SKB_DROP_REASON_NETFILTER_DROP".to_string())])
    }

    fn clock() -> Clock {
        Clock::at(Timestamp::from_second(1_800_000_000).unwrap())
    }

    fn event(src_endpoint: u32, dst_endpoint: u32, packets: u64, first: u64) -> KernelDropEvent {
        let mut key = KernelDropKey {
            family: family::IPV4,
            proto: IPPROTO_ICMP,
            reason: 12,
            src_port: 8,
            ..KernelDropKey::default()
        };
        key.src[..4].copy_from_slice(&[172, 18, 0, 2]);
        key.dst[..4].copy_from_slice(&[172, 19, 0, 2]);
        KernelDropEvent {
            kind: KIND_KERNEL_DROP,
            src_endpoint,
            dst_endpoint,
            key,
            packets,
            bytes: packets * 84,
            first_seen_ns: first,
            last_seen_ns: first + packets,
            ..KernelDropEvent::default()
        }
    }

    #[test]
    fn a_drop_names_the_outside_end_its_container_resolved() {
        // postgres (veth 31, 172.30.0.2) resolved svc.netwatch.test to
        // 203.0.113.8; the kernel dropped its packet there.
        let names = FlowNames::new(&crate::flows::names::tests::state(), &[]);
        let mut dns = DnsNames::default();
        let outside = std::net::IpAddr::from([203, 0, 113, 8]);
        dns.learn("postgres", outside, "svc.netwatch.test", 1_000);
        let mut drop = event(31, 0, 1, 100);
        drop.key.src[..4].copy_from_slice(&[172, 30, 0, 2]);
        drop.key.dst[..4].copy_from_slice(&[203, 0, 113, 8]);
        let mut drops = KernelDrops::default();
        drops.set_reasons(reasons());
        let entries = drops.record(&drop, &names, &dns, &clock());
        assert_eq!(entries.len(), 1);
        let entry = &entries[0].0;
        assert_eq!(entry.container.as_deref(), Some("postgres"));
        assert_eq!(entry.dst_name.as_deref(), Some("svc.netwatch.test"));
        assert_eq!(entry.src_name, None);
    }

    #[test]
    fn a_drop_between_two_guarded_containers_is_each_ones_with_the_kernels_reason() {
        let mut drops = KernelDrops::default();
        drops.set_reasons(reasons());
        let names = FlowNames::default();
        let entries = drops.record(&event(5, 9, 1, 100), &names, &DnsNames::default(), &clock());
        assert_eq!(entries.len(), 2);
        let directions: Vec<Direction> = entries.iter().map(|(e, _)| e.direction).collect();
        assert_eq!(directions, [Direction::Egress, Direction::Ingress]);
        for (entry, delta) in &entries {
            assert_eq!((delta.packets, delta.bytes), (1, 84));
            assert_eq!(entry.verdict, Verdict::Dropped);
            assert_eq!(entry.reason, Some(FlowReason::kernel("netfilter_drop")));
            assert_eq!(entry.dropped_by.as_deref(), Some("kernel"));
            assert_eq!((entry.proto, entry.src_port), (Protocol::Icmp, 8));
            assert_eq!((entry.packets, entry.bytes), (1, 84));
        }
        // The next record of the key carries the kernel's count so far;
        // each event's delta is what it added, so the deltas sum to it.
        let packets_added = |drops: &mut KernelDrops, event: &KernelDropEvent| -> Vec<u64> {
            drops
                .record(event, &names, &DnsNames::default(), &clock())
                .iter()
                .map(|(_, delta)| delta.packets)
                .collect()
        };
        assert_eq!(packets_added(&mut drops, &event(5, 9, 4, 100)), [3, 3]);
        assert_eq!(drops.len(), 2);
        assert!(drops.entries().all(|e| e.packets == 4));
        // A new kernel entry (the LRU evicted the old) adds to the count.
        assert_eq!(packets_added(&mut drops, &event(5, 9, 2, 500)), [2, 2]);
        assert!(drops.entries().all(|e| e.packets == 6));
        // An older record never lowers it, and is no event.
        assert!(packets_added(&mut drops, &event(5, 9, 1, 100)).is_empty());
        assert!(drops.entries().all(|e| e.packets == 6));
    }

    #[test]
    fn records_without_a_guarded_end_or_of_another_kind_are_counted_not_kept() {
        let mut drops = KernelDrops::default();
        let names = FlowNames::default();
        assert!(
            drops
                .record(&event(0, 0, 1, 1), &names, &DnsNames::default(), &clock())
                .is_empty()
        );
        let mut other = event(5, 0, 1, 1);
        other.kind = 4;
        assert!(
            drops
                .record(&other, &names, &DnsNames::default(), &clock())
                .is_empty()
        );
        assert_eq!((drops.malformed, drops.len()), (2, 0));
        let unnamed = drops.record(&event(5, 0, 1, 1), &names, &DnsNames::default(), &clock());
        assert_eq!(unnamed[0].0.reason, Some(FlowReason::kernel("reason_12")));
    }

    #[test]
    fn unread_data_freed_when_its_socket_closed_is_not_a_drop() {
        let mut drops = KernelDrops::default();
        drops.set_reasons(DropReasonNames::new([(
            7,
            "SKB_DROP_REASON_QUEUE_PURGE".to_string(),
        )]));
        let mut purged = event(5, 0, 1, 1);
        purged.key.reason = 7;
        assert!(
            drops
                .record(
                    &purged,
                    &FlowNames::default(),
                    &DnsNames::default(),
                    &clock()
                )
                .is_empty()
        );
        assert_eq!((drops.socket_purges, drops.len()), (1, 0));
    }

    #[test]
    fn echo_replies_freed_after_a_raw_socket_took_them_are_not_drops() {
        let mut drops = KernelDrops::default();
        drops.set_reasons(DropReasonNames::new([(
            3,
            "SKB_DROP_REASON_NO_SOCKET".to_string(),
        )]));
        let names = FlowNames::default();
        let mut reply = event(5, 0, 1, 1);
        reply.key.reason = 3;
        reply.key.src_port = 0;
        assert!(
            drops
                .record(&reply, &names, &DnsNames::default(), &clock())
                .is_empty()
        );
        assert_eq!(drops.raw_ping_replies, 1);
        // A request dropped for no socket is one.
        reply.key.src_port = 8;
        assert_eq!(
            drops
                .record(&reply, &names, &DnsNames::default(), &clock())
                .len(),
            1
        );
        assert!(is_raw_ping_reply(
            &FlowReason::kernel("no_socket"),
            IPPROTO_ICMPV6,
            129
        ));
        assert!(!is_raw_ping_reply(
            &FlowReason::kernel("netfilter_drop"),
            IPPROTO_ICMP,
            0
        ));
    }

    #[test]
    fn memory_stays_bounded_and_the_longest_unseen_go_first() {
        let mut drops = KernelDrops::default();
        let names = FlowNames::default();
        for port in 0..=KERNEL_DROPS_LIMIT as u64 {
            let mut e = event(5, 0, 1, 1 + port);
            e.key.proto = IPPROTO_UDP;
            e.key.src_port = port as u16;
            drops.record(&e, &names, &DnsNames::default(), &clock());
        }
        assert_eq!(drops.len(), KERNEL_DROPS_LIMIT - KERNEL_DROPS_LIMIT / 10);
        assert!(drops.entries().all(|e| e.src_port > 1000));
    }

    /// As the flows' maps did (see `aggregate::FlowMap`): removed one by
    /// one, the longest unseen left deleted slots that doubled the table.
    #[test]
    fn churn_at_the_limit_never_grows_the_table() {
        let mut drops = KernelDrops::default();
        let names = FlowNames::default();
        let mut capacity_when_full = None;
        for n in 0..200_000_u32 {
            let mut e = event(5, 0, 1, 1 + u64::from(n));
            e.key.proto = IPPROTO_UDP;
            e.key.src_port = n as u16;
            e.key.dst[2..4].copy_from_slice(&((n >> 16) as u16).to_be_bytes());
            drops.record(&e, &names, &DnsNames::default(), &clock());
            if drops.len() == KERNEL_DROPS_LIMIT && capacity_when_full.is_none() {
                capacity_when_full = Some(drops.kept.capacity());
            }
        }
        assert_eq!(Some(drops.kept.capacity()), capacity_when_full);
    }
}
