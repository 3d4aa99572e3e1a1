//! The verdict function's address lookups, answered from the BPF maps.

use netwatch_common::{
    endpoint::{PublishedKey, SCOPE_BITS, ScopedV4, ScopedV6},
    flow::{FlowKey, FlowKey4, family},
    packet::{PacketSummary, RulePort},
    reason::{Direction, Verdict},
    verdict::PolicyTables,
};

use aya_ebpf::maps::lpm_trie::Key;

use crate::{
    flows::TableKey,
    maps::{ALLOW_V4, ALLOW_V6, HOST_V4, HOST_V6, NET_V4, NET_V6, PUBLISHED},
};

/// Lookups in `NET_*`, `ALLOW_*` and `HOST_*`, and for the endpoint whose
/// packet is judged, in `PUBLISHED` and the flow tables.
pub struct KernelTables {
    /// The judged endpoint's `ENDPOINTS` key (the key its flows carry).
    pub endpoint: u32,
}

#[inline(always)]
fn v4(addr: &[u8; 16]) -> [u8; 4] {
    [addr[0], addr[1], addr[2], addr[3]]
}

#[inline(always)]
fn key_v4(scope: u32, addr: &[u8; 16]) -> Key<ScopedV4> {
    Key::new(
        SCOPE_BITS + 32,
        ScopedV4 {
            scope: scope.to_be_bytes(),
            addr: v4(addr),
        },
    )
}

#[inline(always)]
fn key_v6(scope: u32, addr: &[u8; 16]) -> Key<ScopedV6> {
    Key::new(
        SCOPE_BITS + 128,
        ScopedV6 {
            scope: scope.to_be_bytes(),
            addr: *addr,
        },
    )
}

impl PolicyTables for KernelTables {
    #[inline(always)]
    fn in_network(&self, scope: u32, fam: u8, addr: &[u8; 16]) -> bool {
        match fam {
            family::IPV4 => NET_V4.get(key_v4(scope, addr)).is_some(),
            family::IPV6 => NET_V6.get(key_v6(scope, addr)).is_some(),
            _ => false,
        }
    }

    #[inline(always)]
    fn is_host_address(&self, fam: u8, addr: &[u8; 16]) -> bool {
        match fam {
            family::IPV4 => HOST_V4.get_ptr(v4(addr)).is_some(),
            family::IPV6 => HOST_V6.get_ptr(addr).is_some(),
            _ => false,
        }
    }

    #[inline(always)]
    fn allow_listed(
        &self,
        scope: u32,
        fam: u8,
        addr: &[u8; 16],
        proto: u8,
        port: RulePort,
    ) -> bool {
        let rules = match fam {
            family::IPV4 => ALLOW_V4.get(key_v4(scope, addr)),
            family::IPV6 => ALLOW_V6.get(key_v6(scope, addr)),
            _ => None,
        };
        rules.is_some_and(|rules| rules.matches(proto, port))
    }

    #[inline(always)]
    fn published(&self, family: u8, addr: &[u8; 16], proto: u8, port: u16) -> Option<u32> {
        let key = PublishedKey {
            ifindex: self.endpoint,
            port,
            proto,
            family,
            addr: *addr,
        };
        // SAFETY: a hash map lookup whose value is read at once.
        unsafe { PUBLISHED.get(key).copied() }
    }

    #[inline(always)]
    fn answers_forwarded_inbound(&self, pkt: &PacketSummary) -> bool {
        // The table is the key's to choose (`TableKey`), as for every
        // other flow-table access.
        let inbound = if pkt.family == family::IPV4 {
            FlowKey4::new(self.endpoint, Direction::Egress, pkt)
                .answered()
                .lookup()
        } else {
            FlowKey::new(self.endpoint, Direction::Egress, pkt)
                .answered()
                .lookup()
        };
        // SAFETY: a flow table entry whose verdict byte is read at once; a
        // concurrent update can only make it the verdict of a later packet.
        let verdict = inbound.map(|stats| unsafe { (*stats).verdict });
        verdict == Some(Verdict::Forwarded as u8)
    }
}
