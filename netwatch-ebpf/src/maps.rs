//! Every map of the object. Sizes are defaults; user space may resize the
//! flow table before loading (`EbpfLoader::set_max_entries`).

use crate::clock::TickClock;
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
};
use netwatch_common::{
    dns::{DnsBucket, DnsConfig, counter as dns_counter},
    endpoint::{
        AllowRules, DatapathConfig, EndpointPolicy, MacvlanPort, MacvlanPortKey, PublishedKey,
        ScopedV4, ScopedV6,
    },
    flow::{FlowKey, FlowKey4, FlowStats},
    kdrop::{GuardedAddr, KernelDropConfig, KernelDropKey, KernelDropStats},
    names,
    packet::PacketSummary,
    reason::DROP_REASON_COUNT,
};

/// Policy per host-side veth ifindex. Kernel ≥ 3.19.
#[map]
pub static ENDPOINTS: HashMap<u32, EndpointPolicy> =
    HashMap::with_max_entries(names::ENDPOINTS_MAX_ENTRIES, 0);

/// The network's own prefixes, per scope. Kernel ≥ 4.11.
#[map]
pub static NET_V4: LpmTrie<ScopedV4, u32> = LpmTrie::with_max_entries(names::PREFIX_MAX_ENTRIES, 0);
#[map]
pub static NET_V6: LpmTrie<ScopedV6, u32> = LpmTrie::with_max_entries(names::PREFIX_MAX_ENTRIES, 0);

/// Allow-listed prefixes with their port rules, per scope. Kernel ≥ 4.11.
#[map]
pub static ALLOW_V4: LpmTrie<ScopedV4, AllowRules> =
    LpmTrie::with_max_entries(names::PREFIX_MAX_ENTRIES, 0);
#[map]
pub static ALLOW_V6: LpmTrie<ScopedV6, AllowRules> =
    LpmTrie::with_max_entries(names::PREFIX_MAX_ENTRIES, 0);

/// The host's own addresses (every interface, not only gateways).
#[map]
pub static HOST_V4: HashMap<[u8; 4], u32> =
    HashMap::with_max_entries(names::HOST_ADDR_MAX_ENTRIES, 0);
#[map]
pub static HOST_V6: HashMap<[u8; 16], u32> =
    HashMap::with_max_entries(names::HOST_ADDR_MAX_ENTRIES, 0);

/// Per-flow counters. LRU: a full table evicts the least recently used
/// flows. Verdicts depend on it only for endpoints with published ports
/// open (`PUBLISHED`): an answer from such a port passes when its inbound
/// flow's entry says forwarded, so an evicted entry drops the answer,
/// never opens anything. Kernel ≥ 4.10.
///
/// IPv4 flows are kept in `FLOWS4` instead, under a 20-byte key; this
/// table keeps IPv6 and non-IP flows.
#[map]
pub static FLOWS: LruHashMap<FlowKey, FlowStats> =
    LruHashMap::with_max_entries(names::FLOWS_MAX_ENTRIES, 0);

/// Per-flow counters of IPv4 flows, as `FLOWS` keeps the others: the same
/// value, the same rules, a key of 20 bytes that the kernel hashes and
/// compares faster on every packet (see `FlowKey4`). Kernel ≥ 4.10.
#[map]
pub static FLOWS4: LruHashMap<FlowKey4, FlowStats> =
    LruHashMap::with_max_entries(names::FLOWS_MAX_ENTRIES, 0);

/// The policy generation (see `names::MAP_POLICY_GEN`), one entry.
/// Kernel ≥ 3.19.
#[map]
pub static POLICY_GEN: Array<u64> = Array::with_max_entries(1, 0);

/// Each CPU's packet summary (see `names::MAP_PACKET_SUMMARY`): the TC
/// programs parse into it. A program runs to its end on one CPU before
/// that CPU runs another, so the entry is the running program's alone.
/// Kernel ≥ 4.6 (≥ 6.10 inlines its lookup).
#[map]
pub static PACKET_SUMMARY: PerCpuArray<PacketSummary> = PerCpuArray::with_max_entries(1, 0);

/// Each CPU's tick clock (see `names::MAP_TICK_CLOCK` and `clock`), one
/// entry. Kernel ≥ 4.6 (≥ 6.10 inlines its lookup).
#[map]
pub static TICK_CLOCK: PerCpuArray<TickClock> = PerCpuArray::with_max_entries(1, 0);

/// Flow open/close/export and drop records. Kernel ≥ 5.8.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(names::EVENTS_BYTES, 0);

/// Packets per verdict reason (index 0 = forwarded), per CPU.
#[map]
pub static VERDICT_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(DROP_REASON_COUNT, 0);

/// Packets audit let through, per reason enforcement would have dropped
/// them for, per CPU (index 0 unused). Kernel ≥ 4.6.
#[map]
pub static AUDIT_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(DROP_REASON_COUNT, 0);

/// Uplink packets per reason (index 0 = passed), per CPU.
#[map]
pub static UPLINK_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(DROP_REASON_COUNT, 0);

/// Ring buffer reservations that failed (the ring buffer keeps no count).
#[map]
pub static RINGBUF_LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Flow-table entries inserted (the LRU map does not count what it evicts:
/// user space takes the entries it holds from this).
#[map]
pub static FLOWS_INSERTED: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Global settings, one entry.
#[map]
pub static CONFIG: Array<DatapathConfig> = Array::with_max_entries(1, 0);

/// Prefixes the uplink protects (internal networks' subnets); key data is
/// the address, prefix length = CIDR bits.
#[map]
pub static PROTECTED_V4: LpmTrie<[u8; 4], u32> =
    LpmTrie::with_max_entries(names::PREFIX_MAX_ENTRIES, 0);
#[map]
pub static PROTECTED_V6: LpmTrie<[u8; 16], u32> =
    LpmTrie::with_max_entries(names::PREFIX_MAX_ENTRIES, 0);

/// macvlan children by parent and MAC: which endpoint sends with a MAC on a
/// parent, and from which namespace. Kernel ≥ 3.19.
#[map]
pub static MACVLAN_PORTS: HashMap<MacvlanPortKey, MacvlanPort> =
    HashMap::with_max_entries(names::MACVLAN_PORTS_MAX_ENTRIES, 0);

/// Ports endpoints publish on networks that accept inbound connections to
/// them (`netwatch.ingress=published`) → `published_access` bits. Kernel ≥ 3.19.
#[map]
pub static PUBLISHED: HashMap<PublishedKey, u32> =
    HashMap::with_max_entries(names::PUBLISHED_MAX_ENTRIES, 0);

/// Guarded containers' addresses → their endpoint's ifindex, for the
/// kernel drop program. Kernel ≥ 3.19.
#[map]
pub static GUARDED: HashMap<GuardedAddr, u32> =
    HashMap::with_max_entries(names::GUARDED_MAX_ENTRIES, 0);

/// Kernel drops per addresses, protocol, ports and reason: counts and the
/// time of the last record. Kernel ≥ 4.10.
#[map]
pub static KDROPS: LruHashMap<KernelDropKey, KernelDropStats> =
    LruHashMap::with_max_entries(names::KDROPS_MAX_ENTRIES, 0);

/// Kernel drop records. Kernel ≥ 5.8.
#[map]
pub static KDROP_EVENTS: RingBuf = RingBuf::with_byte_size(names::KDROP_EVENTS_BYTES, 0);

/// Offsets and skipped reasons for the kernel drop program, one entry.
#[map]
pub static KDROP_CONFIG: Array<KernelDropConfig> = Array::with_max_entries(1, 0);

/// DNS records (see `dns`). Kernel ≥ 5.8.
#[map]
pub static DNS_EVENTS: RingBuf = RingBuf::with_byte_size(names::DNS_EVENTS_BYTES, 0);

/// DNS record rate and whether records are wanted, one entry. Kernel ≥ 3.19.
#[map]
pub static DNS_CONFIG: Array<DnsConfig> = Array::with_max_entries(1, 0);

/// Each CPU's DNS token bucket. Kernel ≥ 4.6.
#[map]
pub static DNS_BUCKETS: PerCpuArray<DnsBucket> = PerCpuArray::with_max_entries(1, 0);

/// DNS records submitted, rate-limited, lost and truncated, per CPU.
/// Kernel ≥ 4.6.
#[map]
pub static DNS_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(dns_counter::COUNT, 0);
