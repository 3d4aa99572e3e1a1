//! DNS records from the veth programs (see netwatch-common's `dns`):
//! turning them on with a rate, draining them, and their counters.
//!
//! The maps are pinned with the others, so the programs a previous agent
//! left attached keep writing into the same ring buffer; a datapath nobody
//! turned records on for (`check`, benchmarks) records nothing.
//!
//! Minimum kernel: 5.8 (ring buffer).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use aya::maps::{Array, MapData};
use netwatch_common::{
    dns::{DnsConfig, DnsRecordHeader, counter},
    flow::family,
    names,
};

use super::{Datapath, DatapathError, maps::per_cpu_sum};

/// One DNS datagram as the kernel handed it over: its facts and the bytes
/// captured (at most `DNS_PAYLOAD_MAX`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CapturedDns {
    pub header: DnsRecordHeader,
    pub payload: Vec<u8>,
}

impl CapturedDns {
    /// Decodes a ring buffer record; `None` for one of another size or kind.
    pub fn from_bytes(bytes: &[u8]) -> Option<CapturedDns> {
        let (header, payload) = DnsRecordHeader::from_bytes(bytes)?;
        Some(CapturedDns {
            header,
            payload: payload.to_vec(),
        })
    }

    /// The datagram's source and destination addresses.
    pub fn addresses(&self) -> Option<(IpAddr, IpAddr)> {
        let h = &self.header;
        let ip = |bytes: &[u8; 16]| match h.family {
            family::IPV4 => Some(IpAddr::V4(Ipv4Addr::new(
                bytes[0], bytes[1], bytes[2], bytes[3],
            ))),
            family::IPV6 => Some(IpAddr::V6(Ipv6Addr::from(*bytes))),
            _ => None,
        };
        Some((ip(&h.src)?, ip(&h.dst)?))
    }
}

/// What the kernel counted of DNS records, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DnsKernelCounts {
    pub submitted: u64,
    /// Not recorded: the CPU's token bucket was empty.
    pub rate_limited: u64,
    /// Not recorded: the ring buffer was full.
    pub lost: u64,
    /// Recorded with their payload cut at `DNS_PAYLOAD_MAX`.
    pub truncated: u64,
}

impl Datapath {
    /// Turns DNS records on at `rate` records per second per CPU with
    /// bursts of `burst` (0: the defaults).
    ///
    /// # Errors
    /// The kernel refuses the update.
    pub fn enable_dns_records(&mut self, rate: u64, burst: u64) -> Result<(), DatapathError> {
        self.write_dns_config(DnsConfig::new(rate, burst))
    }

    /// Turns DNS records off.
    ///
    /// # Errors
    /// The kernel refuses the update.
    pub fn disable_dns_records(&mut self) -> Result<(), DatapathError> {
        self.write_dns_config(DnsConfig::default())
    }

    fn write_dns_config(&mut self, config: DnsConfig) -> Result<(), DatapathError> {
        let name = names::MAP_DNS_CONFIG;
        let mut map: Array<&mut MapData, DnsConfig> = self
            .ebpf
            .map_mut(name)
            .ok_or(DatapathError::MissingMap(name))?
            .try_into()
            .map_err(DatapathError::map(name))?;
        map.set(0, config, 0).map_err(DatapathError::map(name))
    }

    /// Takes every DNS record waiting; records of the wrong size or kind
    /// are counted in the second value.
    ///
    /// # Errors
    /// The ring buffer map cannot be opened.
    pub fn drain_dns(&mut self) -> Result<(Vec<CapturedDns>, u64), DatapathError> {
        self.drain_ring(names::MAP_DNS_EVENTS, CapturedDns::from_bytes)
    }

    /// The kernel's DNS record counters.
    ///
    /// # Errors
    /// The kernel refuses the lookup.
    pub fn dns_counts(&self) -> Result<DnsKernelCounts, DatapathError> {
        let name = names::MAP_DNS_COUNTERS;
        dns_counts(self.ebpf.map(name).ok_or(DatapathError::MissingMap(name))?)
    }
}

/// The counters in `DNS_COUNTERS` (this datapath's, or the pinned map).
pub(super) fn dns_counts(map: &aya::maps::Map) -> Result<DnsKernelCounts, DatapathError> {
    let name = names::MAP_DNS_COUNTERS;
    let at = |index| per_cpu_sum(map, name, index);
    Ok(DnsKernelCounts {
        submitted: at(counter::SUBMITTED)?,
        rate_limited: at(counter::RATE_LIMITED)?,
        lost: at(counter::LOST)?,
        truncated: at(counter::TRUNCATED)?,
    })
}
