//! Names of programs and maps, shared so that user space never spells them.
//!
//! Minimum kernels: TCX attachment 6.6; ring buffer 5.8; `bpf_jiffies64`
//! 5.5; LPM trie 4.11;
//! LRU hash 4.10; per-CPU array 4.6; XDP 4.8. The programs themselves use
//! bounded loops (5.3).

/// TC program for traffic sent by the container (host veth ingress).
pub const PROG_FROM_CONTAINER: &str = "from_container";
/// TC program for traffic delivered to the container (host veth egress).
pub const PROG_TO_CONTAINER: &str = "to_container";
/// XDP program for the host uplink.
pub const PROG_UPLINK: &str = "uplink";
/// TC program on a macvlan parent's egress: what the network's children
/// send towards the LAN, judged by their source MAC.
pub const PROG_MACVLAN_PARENT: &str = "macvlan_parent";
/// TC program on a macvlan child's ingress (in its container's namespace):
/// what the child receives, and what a sibling sends it.
pub const PROG_MACVLAN_CHILD: &str = "macvlan_child";
/// Empty TC program, the benchmark's baseline. In the benchmark's own
/// object (`netwatch-bench`), never in the one netwatch loads.
pub const PROG_BENCH_BASELINE: &str = "bench_baseline";
/// TC program that only increments a per-CPU counter and lets the packet
/// continue: the benchmark's "cheapest useful program". In the benchmark's
/// own object, like `bench_baseline`.
pub const PROG_BENCH_COUNTER: &str = "bench_counter";
/// TC program that parses the packet's headers with netwatch's own parser
/// (as the veth programs do, into the same per-CPU summary), counts the
/// packet and lets it continue: what reading a packet's headers costs, with
/// no flow table and no policy. In the benchmark's own object.
pub const PROG_BENCH_HEADERS: &str = "bench_headers";
/// TC program that parses like `bench_headers` and counts the packet into
/// its flow in an LRU table under netwatch's flow key (one lookup, two
/// atomic adds): what keeping per-flow state costs, with no policy and no
/// records. In the benchmark's own object.
pub const PROG_BENCH_FLOW: &str = "bench_flow";
/// `tp_btf/kfree_skb` program that only increments the counter: the floor
/// on the kernel drop program's hook. In the benchmark's own object.
pub const PROG_BENCH_KFREE: &str = "bench_kfree";

/// `tp_btf/kfree_skb` program recording the kernel's own drops of guarded
/// containers' packets (see `kdrop`). Linux ≥ 5.17 (drop reasons).
pub const PROG_KERNEL_DROPS: &str = "kernel_drops";
/// The BTF tracepoint `kernel_drops` attaches to.
pub const TRACEPOINT_KFREE_SKB: &str = "kfree_skb";

/// `HashMap<u32 ifindex, EndpointPolicy>`.
pub const MAP_ENDPOINTS: &str = "ENDPOINTS";
/// `LpmTrie<ScopedV4, u32>`: the network's own IPv4 prefixes per scope.
pub const MAP_NET_V4: &str = "NET_V4";
/// `LpmTrie<ScopedV6, u32>`.
pub const MAP_NET_V6: &str = "NET_V6";
/// `LpmTrie<ScopedV4, AllowRules>`: allow-listed IPv4 prefixes per scope.
pub const MAP_ALLOW_V4: &str = "ALLOW_V4";
/// `LpmTrie<ScopedV6, AllowRules>`.
pub const MAP_ALLOW_V6: &str = "ALLOW_V6";
/// `HashMap<[u8; 4], u32>`: the host's own IPv4 addresses.
pub const MAP_HOST_V4: &str = "HOST_V4";
/// `HashMap<[u8; 16], u32>`: the host's own IPv6 addresses.
pub const MAP_HOST_V6: &str = "HOST_V6";
/// `LruHashMap<FlowKey, FlowStats>`: the flows of IPv6 and non-IP packets.
pub const MAP_FLOWS: &str = "FLOWS";
/// `LruHashMap<FlowKey4, FlowStats>`: the flows of IPv4 packets, under a
/// key of 20 bytes rather than 48 (see `flow::FlowKey4`).
pub const MAP_FLOWS4: &str = "FLOWS4";
/// The two flow tables, which share the flow-table capacity option (each
/// gets it whole).
pub const FLOW_TABLES: [&str; 2] = [MAP_FLOWS4, MAP_FLOWS];
/// Ring buffer of `FlowEvent`s.
pub const MAP_EVENTS: &str = "EVENTS";
/// `PerCpuArray<u64>` indexed by `DropReason`; index 0 counts forwarded packets.
pub const MAP_VERDICT_COUNTERS: &str = "VERDICT_COUNTERS";
/// `PerCpuArray<u64>` indexed by `DropReason`: packets audit let through,
/// by the reason enforcement would have dropped them for.
pub const MAP_AUDIT_COUNTERS: &str = "AUDIT_COUNTERS";
/// `PerCpuArray<u64>` indexed by `DropReason`, for the uplink program;
/// index 0 counts passed packets.
pub const MAP_UPLINK_COUNTERS: &str = "UPLINK_COUNTERS";
/// `PerCpuArray<u64>` with one entry: ring buffer reservations that failed.
pub const MAP_RINGBUF_LOST: &str = "RINGBUF_LOST";
/// `PerCpuArray<u64>` with one entry: entries the programs inserted into
/// the flow table. Nothing but the LRU deletes from it, so the table's
/// evictions are this minus the entries it holds.
pub const MAP_FLOWS_INSERTED: &str = "FLOWS_INSERTED";
/// `PerCpuArray<u64>` with one entry, written only by `bench_counter` (in
/// the benchmark's object; not one of [`ALL_MAPS`]).
pub const MAP_BENCH_COUNTER: &str = "BENCH_COUNTER";
/// `Array<DatapathConfig>` with one entry.
pub const MAP_CONFIG: &str = "CONFIG";
/// `LpmTrie<[u8; 4], u32>` (prefix length = CIDR bits): prefixes the uplink protects.
pub const MAP_PROTECTED_V4: &str = "PROTECTED_V4";
/// `LpmTrie<[u8; 16], u32>`.
pub const MAP_PROTECTED_V6: &str = "PROTECTED_V6";
/// `HashMap<MacvlanPortKey, MacvlanPort>`: macvlan children by parent and MAC.
pub const MAP_MACVLAN_PORTS: &str = "MACVLAN_PORTS";

/// `HashMap<PublishedKey, u32>`: ports endpoints publish that their
/// network admits inbound connections to, with `published_access` bits.
pub const MAP_PUBLISHED: &str = "PUBLISHED";

/// `Array<u64>` with one entry: the policy generation, which user space
/// raises after every write of the policy maps (`ENDPOINTS`, `NET_*`,
/// `ALLOW_*`, `HOST_*`, `MACVLAN_PORTS`, `PUBLISHED`). A verdict cached in
/// a flow entry counts only under the generation it was decided in, so it
/// never outlives the policy that made it. 0: nothing is cached.
pub const MAP_POLICY_GEN: &str = "POLICY_GEN";

/// `PerCpuArray<PacketSummary>` with one entry: where the TC programs
/// parse each packet into. Kept in a map rather than on the stack so that
/// the verifier does not track the summary's fields: every path through
/// the parser then ends in one state, and what follows the parser is
/// verified once instead of once per kind of packet. Nothing outside the
/// running program reads it.
pub const MAP_PACKET_SUMMARY: &str = "PACKET_SUMMARY";

/// `PerCpuArray` with one entry: each CPU's jiffy and the CLOCK_MONOTONIC
/// time it read in it, which established flows' packets read instead of
/// calling a clock helper (netwatch-ebpf `clock`). Nothing outside the
/// running programs reads it.
pub const MAP_TICK_CLOCK: &str = "TICK_CLOCK";

/// `HashMap<GuardedAddr, u32>`: guarded containers' addresses → their
/// endpoint's ifindex (the `ENDPOINTS` key).
pub const MAP_GUARDED: &str = "GUARDED";
/// `LruHashMap<KernelDropKey, KernelDropStats>`: kernel drops counted and
/// rate-limited per addresses, protocol, ports and reason.
pub const MAP_KDROPS: &str = "KDROPS";
/// Ring buffer of `KernelDropEvent`s (its own, so that a storm of kernel
/// drops cannot crowd out flow records).
pub const MAP_KDROP_EVENTS: &str = "KDROP_EVENTS";
/// `Array<KernelDropConfig>` with one entry.
pub const MAP_KDROP_CONFIG: &str = "KDROP_CONFIG";

/// Ring buffer of DNS records (`dns::DnsRecord`; its own, so that a DNS
/// flood cannot crowd out flow records).
pub const MAP_DNS_EVENTS: &str = "DNS_EVENTS";
/// `Array<DnsConfig>` with one entry.
pub const MAP_DNS_CONFIG: &str = "DNS_CONFIG";
/// `PerCpuArray<DnsBucket>` with one entry: each CPU's token bucket.
pub const MAP_DNS_BUCKETS: &str = "DNS_BUCKETS";
/// `PerCpuArray<u64>` indexed by `dns::counter`.
pub const MAP_DNS_COUNTERS: &str = "DNS_COUNTERS";

/// Every map of the object netwatch loads.
pub const ALL_MAPS: [&str; 31] = [
    MAP_ENDPOINTS,
    MAP_NET_V4,
    MAP_NET_V6,
    MAP_ALLOW_V4,
    MAP_ALLOW_V6,
    MAP_HOST_V4,
    MAP_HOST_V6,
    MAP_FLOWS,
    MAP_FLOWS4,
    MAP_EVENTS,
    MAP_VERDICT_COUNTERS,
    MAP_AUDIT_COUNTERS,
    MAP_UPLINK_COUNTERS,
    MAP_RINGBUF_LOST,
    MAP_FLOWS_INSERTED,
    MAP_CONFIG,
    MAP_PROTECTED_V4,
    MAP_PROTECTED_V6,
    MAP_MACVLAN_PORTS,
    MAP_PUBLISHED,
    MAP_GUARDED,
    MAP_KDROPS,
    MAP_KDROP_EVENTS,
    MAP_KDROP_CONFIG,
    MAP_DNS_EVENTS,
    MAP_DNS_CONFIG,
    MAP_DNS_BUCKETS,
    MAP_DNS_COUNTERS,
    MAP_POLICY_GEN,
    MAP_PACKET_SUMMARY,
    MAP_TICK_CLOCK,
];

/// Maps that earlier netwatch builds pinned and this one no longer has: an
/// agent removes their pins from its pin root (`BENCH_COUNTER` went to the
/// benchmark's own object, which nothing pins).
pub const RETIRED_MAPS: [&str; 1] = [MAP_BENCH_COUNTER];

/// Size of the ring buffer in bytes (a power of two and page multiple):
/// about 43,690 records of 96 bytes, 145 ms of 300,000 new flows/s, so a
/// reader woken at a sixteenth of it (see netwatch-ebpf flows.rs) has ample
/// room while it ingests a batch. 1 MiB (the size until the reader was
/// woken by the kernel) lost records above 40,000 new flows/s with a 250 ms
/// drain.
pub const EVENTS_BYTES: u32 = 1 << 22;
/// Default capacity of each flow table (`FLOWS4` and `FLOWS`).
pub const FLOWS_MAX_ENTRIES: u32 = 65_536;
pub const ENDPOINTS_MAX_ENTRIES: u32 = 4_096;
pub const MACVLAN_PORTS_MAX_ENTRIES: u32 = 4_096;
pub const PREFIX_MAX_ENTRIES: u32 = 16_384;
pub const HOST_ADDR_MAX_ENTRIES: u32 = 1_024;
pub const GUARDED_MAX_ENTRIES: u32 = 8_192;
pub const PUBLISHED_MAX_ENTRIES: u32 = 4_096;
pub const KDROPS_MAX_ENTRIES: u32 = 4_096;
/// Size of the kernel drop ring buffer in bytes.
pub const KDROP_EVENTS_BYTES: u32 = 1 << 18;
/// Size of the DNS ring buffer in bytes: about 900 records of 576 bytes
/// (plus the ring's 8-byte headers), more than two CPUs at the default
/// rate produce in the 250 ms between drains.
pub const DNS_EVENTS_BYTES: u32 = 1 << 19;

#[cfg(test)]
mod tests {
    use super::*;

    /// An agent removes the pins of retired maps: none may be one it loads.
    #[test]
    fn retired_maps_are_not_in_the_object() {
        for retired in RETIRED_MAPS {
            assert!(!ALL_MAPS.contains(&retired), "{retired}");
        }
    }
}
