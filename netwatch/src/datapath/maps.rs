//! Writing policy into the maps and reading counters, flows and records.

use std::{collections::HashSet, hash::Hash, net::IpAddr, os::fd::AsFd as _};

use aya::maps::{Array, HashMap, LpmTrie, MapData, PerCpuArray, RingBuf, lpm_trie::Key};
use netwatch_common::{
    endpoint::{
        AllowRules, DatapathConfig, EndpointPolicy, NET_MEMBER, ScopedV4, ScopedV6, policy_flags,
    },
    event::FlowEvent,
    flow::{FlowKey, FlowKey4, FlowStats, family},
    kdrop::GuardedAddr,
    names,
    reason::{DROP_REASON_COUNT, DropReason},
};

use super::{Datapath, DatapathError};
use crate::policy::{Cidr, CompiledTables};

/// Per-reason packet counts summed over CPUs; index = `DropReason as usize`,
/// index 0 = forwarded (or, for the uplink, passed).
pub type ReasonCounts = [u64; DROP_REASON_COUNT as usize];

impl Datapath {
    pub(super) fn map_mut(
        &mut self,
        name: &'static str,
    ) -> Result<&mut aya::maps::Map, DatapathError> {
        self.ebpf
            .map_mut(name)
            .ok_or(DatapathError::MissingMap(name))
    }

    pub(super) fn map(&self, name: &'static str) -> Result<&aya::maps::Map, DatapathError> {
        self.ebpf.map(name).ok_or(DatapathError::MissingMap(name))
    }

    /// Writes compiled policy into the maps (insert or overwrite; nothing is
    /// removed here).
    ///
    /// # Errors
    /// A map is full or the kernel refuses an update.
    pub fn apply(&mut self, tables: &CompiledTables) -> Result<(), DatapathError> {
        self.write_tables(tables, Stale::Keep)
    }

    /// Makes the policy maps hold exactly `tables`: new and changed entries
    /// are written first, then entries `tables` no longer has are removed,
    /// so a policy that stays never has a gap.
    ///
    /// # Errors
    /// A map is full or the kernel refuses an update or a deletion.
    pub fn replace(&mut self, tables: &CompiledTables) -> Result<(), DatapathError> {
        self.write_tables(tables, Stale::Remove)
    }

    fn write_tables(&mut self, tables: &CompiledTables, stale: Stale) -> Result<(), DatapathError> {
        write_hash(
            self,
            names::MAP_ENDPOINTS,
            tables.endpoints.iter().copied(),
            stale,
        )?;
        let member = |(len, key): &(u32, ScopedV4)| (*len, *key, NET_MEMBER);
        write_lpm(
            self,
            names::MAP_NET_V4,
            tables.net_v4.iter().map(member),
            stale,
        )?;
        let member = |(len, key): &(u32, ScopedV6)| (*len, *key, NET_MEMBER);
        write_lpm(
            self,
            names::MAP_NET_V6,
            tables.net_v6.iter().map(member),
            stale,
        )?;
        write_lpm::<ScopedV4, AllowRules>(
            self,
            names::MAP_ALLOW_V4,
            tables.allow_v4.iter().copied(),
            stale,
        )?;
        write_lpm::<ScopedV6, AllowRules>(
            self,
            names::MAP_ALLOW_V6,
            tables.allow_v6.iter().copied(),
            stale,
        )?;
        write_hash(
            self,
            names::MAP_HOST_V4,
            tables.host_v4.iter().map(|addr| (*addr, NET_MEMBER)),
            stale,
        )?;
        write_hash(
            self,
            names::MAP_HOST_V6,
            tables.host_v6.iter().map(|addr| (*addr, NET_MEMBER)),
            stale,
        )?;
        write_hash(
            self,
            names::MAP_MACVLAN_PORTS,
            tables.macvlan_ports.iter().copied(),
            stale,
        )?;
        write_hash(
            self,
            names::MAP_PUBLISHED,
            tables.published.iter().copied(),
            stale,
        )?;
        write_hash(
            self,
            names::MAP_GUARDED,
            guarded_addresses(&tables.endpoints).into_iter(),
            stale,
        )?;
        self.raise_policy_generation().map(|_| ())
    }

    /// Raises the policy generation (`POLICY_GEN`) once the policy maps
    /// hold what was written: the programs cache a flow's verdict under the
    /// generation they read before deciding, so every verdict decided from
    /// the maps before or during the write stops counting here, and the
    /// next packet of every flow is judged by the policy as written.
    ///
    /// Generations are CLOCK_MONOTONIC nanoseconds (or the previous one
    /// plus one, if larger), not a count from 1: the flow table can outlive
    /// the generation map (an upgrade that replaces one pinned map and
    /// adopts the other), and a count restarting from 1 could meet a stale
    /// entry's old generation again.
    ///
    /// # Errors
    /// The kernel refuses reading or updating the map.
    pub fn raise_policy_generation(&mut self) -> Result<u64, DatapathError> {
        let name = names::MAP_POLICY_GEN;
        let mut map: Array<&mut MapData, u64> = self
            .map_mut(name)?
            .try_into()
            .map_err(DatapathError::map(name))?;
        let current = map.get(&0, 0).map_err(DatapathError::map(name))?;
        let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .map(|t| (t.tv_sec() as u64) * 1_000_000_000 + t.tv_nsec() as u64)
            .unwrap_or(0);
        let next = now.max(current + 1);
        map.set(0, next, 0).map_err(DatapathError::map(name))?;
        Ok(next)
    }

    /// Sets the global datapath settings.
    ///
    /// # Errors
    /// The kernel refuses the update.
    pub fn set_config(&mut self, config: DatapathConfig) -> Result<(), DatapathError> {
        let name = names::MAP_CONFIG;
        let mut map: Array<&mut MapData, DatapathConfig> = self
            .map_mut(name)?
            .try_into()
            .map_err(DatapathError::map(name))?;
        map.set(0, config, 0).map_err(DatapathError::map(name))
    }

    /// Writes this process's network namespace cookie into the settings
    /// (keeping the rest): the macvlan programs tell the host's frames from a
    /// container's by it. Left 0 (nothing judged by it) when the kernel
    /// cannot tell the cookie.
    ///
    /// # Errors
    /// The kernel refuses reading or updating the settings.
    pub fn set_host_netns_cookie(&mut self) -> Result<(), DatapathError> {
        let Some(cookie) = crate::host::netns_cookie() else {
            return Ok(());
        };
        let name = names::MAP_CONFIG;
        let mut map: Array<&mut MapData, DatapathConfig> = self
            .map_mut(name)?
            .try_into()
            .map_err(DatapathError::map(name))?;
        let mut config = map.get(&0, 0).map_err(DatapathError::map(name))?;
        if config.host_netns_cookie != cookie {
            config.host_netns_cookie = cookie;
            map.set(0, config, 0).map_err(DatapathError::map(name))?;
        }
        Ok(())
    }

    /// Sets the prefixes the uplink program protects: adds the new ones,
    /// then removes those not in `prefixes` (so a prefix that stays is never
    /// missing for a moment).
    ///
    /// # Errors
    /// The map is full or the kernel refuses an update.
    pub fn protect(&mut self, prefixes: &[Cidr]) -> Result<(), DatapathError> {
        let v4 = prefixes.iter().filter_map(|cidr| match cidr.addr() {
            IpAddr::V4(addr) => Some((u32::from(cidr.prefix_len()), addr.octets(), NET_MEMBER)),
            IpAddr::V6(_) => None,
        });
        write_lpm(self, names::MAP_PROTECTED_V4, v4, Stale::Remove)?;
        let v6 = prefixes.iter().filter_map(|cidr| match cidr.addr() {
            IpAddr::V6(addr) => Some((u32::from(cidr.prefix_len()), addr.octets(), NET_MEMBER)),
            IpAddr::V4(_) => None,
        });
        write_lpm(self, names::MAP_PROTECTED_V6, v6, Stale::Remove)
    }

    /// Packets per reason on the veth programs.
    ///
    /// # Errors
    /// The kernel refuses the lookup.
    pub fn verdict_counts(&self) -> Result<ReasonCounts, DatapathError> {
        self.reason_counts(names::MAP_VERDICT_COUNTERS)
    }

    /// Packets audit let through on the veth programs, per reason
    /// enforcement would have dropped them for.
    ///
    /// # Errors
    /// The kernel refuses the lookup.
    pub fn audit_counts(&self) -> Result<ReasonCounts, DatapathError> {
        self.reason_counts(names::MAP_AUDIT_COUNTERS)
    }

    /// Packets per reason on the uplink program.
    ///
    /// # Errors
    /// The kernel refuses the lookup.
    pub fn uplink_counts(&self) -> Result<ReasonCounts, DatapathError> {
        self.reason_counts(names::MAP_UPLINK_COUNTERS)
    }

    fn reason_counts(&self, name: &'static str) -> Result<ReasonCounts, DatapathError> {
        reason_counts(self.map(name)?, name)
    }

    /// Ring buffer records that could not be reserved (the buffer was full).
    ///
    /// # Errors
    /// The kernel refuses the lookup.
    pub fn ringbuf_lost(&self) -> Result<u64, DatapathError> {
        let name = names::MAP_RINGBUF_LOST;
        per_cpu_sum(self.map(name)?, name, 0)
    }

    /// Entries the programs inserted into the flow table (see
    /// [`super::pinned::FlowTableCounts`]).
    ///
    /// # Errors
    /// The kernel refuses the lookup.
    pub fn flows_inserted(&self) -> Result<u64, DatapathError> {
        let name = names::MAP_FLOWS_INSERTED;
        per_cpu_sum(self.map(name)?, name, 0)
    }

    /// Every entry of the flow tables (IPv4 flows under their full key).
    ///
    /// # Errors
    /// The kernel refuses the iteration.
    pub fn flows(&self) -> Result<Vec<(FlowKey, FlowStats)>, DatapathError> {
        flow_entries(
            Some(self.map(names::MAP_FLOWS4)?),
            Some(self.map(names::MAP_FLOWS)?),
        )
    }

    /// Empties the flow tables, so that the next packet of every flow is
    /// its first again (tests run many cases through one load this way:
    /// loading costs the verifier's walk of every program).
    ///
    /// # Errors
    /// The kernel refuses the iteration or a delete.
    pub fn clear_flows(&mut self) -> Result<(), DatapathError> {
        self.clear_hash_map::<FlowKey4, FlowStats>(names::MAP_FLOWS4)?;
        self.clear_hash_map::<FlowKey, FlowStats>(names::MAP_FLOWS)
    }

    /// Removes every entry of the hash (or LRU hash) map `name`.
    pub(super) fn clear_hash_map<K: aya::Pod, V: aya::Pod>(
        &mut self,
        name: &'static str,
    ) -> Result<(), DatapathError> {
        let mut map: HashMap<&mut MapData, K, V> = self
            .map_mut(name)?
            .try_into()
            .map_err(DatapathError::map(name))?;
        let keys = map
            .keys()
            .collect::<Result<Vec<_>, _>>()
            .map_err(DatapathError::map(name))?;
        for key in keys {
            map.remove(&key).map_err(DatapathError::map(name))?;
        }
        Ok(())
    }

    /// An independent handle on the flow tables (second fds on the same
    /// maps), so another thread can read them while this datapath is in
    /// use.
    ///
    /// # Errors
    /// An fd cannot be duplicated.
    pub fn flow_table_handle(&self) -> Result<FlowTableHandle, DatapathError> {
        let again = |name: &'static str| match self.map(name)? {
            aya::maps::Map::LruHashMap(data) | aya::maps::Map::HashMap(data) => {
                second_handle(name, data)
            }
            _ => Err(DatapathError::MissingMap(name)),
        };
        Ok(FlowTableHandle {
            v4: again(names::MAP_FLOWS4)?,
            other: again(names::MAP_FLOWS)?,
        })
    }

    /// Takes every record waiting in the ring buffer. Records of the wrong
    /// size (a kernel/user mismatch) are skipped and counted in the second
    /// value.
    ///
    /// # Errors
    /// The ring buffer map cannot be opened.
    pub fn drain_events(&mut self) -> Result<(Vec<FlowEvent>, u64), DatapathError> {
        self.drain_ring(names::MAP_EVENTS, FlowEvent::from_bytes)
    }

    /// Takes every record waiting in ring buffer `name`, decoded by
    /// `decode`; records it refuses are counted in the second value.
    pub(super) fn drain_ring<T>(
        &mut self,
        name: &'static str,
        decode: fn(&[u8]) -> Option<T>,
    ) -> Result<(Vec<T>, u64), DatapathError> {
        let mut ring: RingBuf<&mut MapData> = self
            .map_mut(name)?
            .try_into()
            .map_err(DatapathError::map(name))?;
        let mut events = Vec::new();
        let mut malformed = 0;
        while let Some(item) = ring.next() {
            match decode(&item) {
                Some(event) => events.push(event),
                None => malformed += 1,
            }
        }
        Ok((events, malformed))
    }
}

/// A second handle on map `name` (a second fd on the same map), for
/// another thread to use while the datapath is in use.
pub(super) fn second_handle(
    name: &'static str,
    data: &MapData,
) -> Result<aya::maps::Map, DatapathError> {
    let fd = data
        .fd()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|source| DatapathError::DuplicateFd { name, source })?;
    let data = MapData::from_fd(fd).map_err(DatapathError::map(name))?;
    aya::maps::Map::from_map_data(data).map_err(DatapathError::map(name))
}

/// A second handle on a datapath's flow tables; see
/// [`Datapath::flow_table_handle`].
pub struct FlowTableHandle {
    v4: aya::maps::Map,
    other: aya::maps::Map,
}

impl FlowTableHandle {
    /// Every entry of the flow tables now.
    ///
    /// # Errors
    /// The kernel refuses the iteration.
    pub fn read(&self) -> Result<Vec<(FlowKey, FlowStats)>, DatapathError> {
        flow_entries(Some(&self.v4), Some(&self.other))
    }
}

/// `GUARDED`'s entries: each endpoint's own addresses → its ifindex (the
/// kernel drop program's filter). Network-wide policies (a bridge's) have
/// no address of their own.
pub(crate) fn guarded_addresses(endpoints: &[(u32, EndpointPolicy)]) -> Vec<(GuardedAddr, u32)> {
    let mut out = Vec::new();
    for (ifindex, policy) in endpoints {
        if policy.has(policy_flags::NETWORK_WIDE) {
            continue;
        }
        if policy.has(policy_flags::HAS_IPV4) {
            let mut addr = [0; 16];
            addr[..4].copy_from_slice(&policy.ipv4);
            out.push((GuardedAddr::new(family::IPV4, addr), *ifindex));
        }
        if policy.has(policy_flags::HAS_IPV6) {
            out.push((GuardedAddr::new(family::IPV6, policy.ipv6), *ifindex));
        }
    }
    out
}

/// Whether writing tables removes map entries they do not hold.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stale {
    Keep,
    Remove,
}

fn write_lpm<K: aya::Pod + Eq + Hash, V: aya::Pod>(
    datapath: &mut Datapath,
    name: &'static str,
    entries: impl Iterator<Item = (u32, K, V)>,
    stale: Stale,
) -> Result<(), DatapathError> {
    let mut map: LpmTrie<&mut MapData, K, V> = datapath
        .map_mut(name)?
        .try_into()
        .map_err(DatapathError::map(name))?;
    let mut wanted = HashSet::new();
    for (prefix_len, data, value) in entries {
        map.insert(&Key::new(prefix_len, data), value, 0)
            .map_err(DatapathError::map(name))?;
        wanted.insert((prefix_len, data));
    }
    if stale == Stale::Remove {
        let existing: Vec<Key<K>> = map
            .keys()
            .collect::<Result<_, _>>()
            .map_err(DatapathError::map(name))?;
        for key in existing {
            if !wanted.contains(&(key.prefix_len(), key.data())) {
                map.remove(&key).map_err(DatapathError::map(name))?;
            }
        }
    }
    Ok(())
}

fn write_hash<K: aya::Pod + Eq + Hash, V: aya::Pod>(
    datapath: &mut Datapath,
    name: &'static str,
    entries: impl Iterator<Item = (K, V)>,
    stale: Stale,
) -> Result<(), DatapathError> {
    let mut map: HashMap<&mut MapData, K, V> = datapath
        .map_mut(name)?
        .try_into()
        .map_err(DatapathError::map(name))?;
    let mut wanted = HashSet::new();
    for (key, value) in entries {
        map.insert(key, value, 0)
            .map_err(DatapathError::map(name))?;
        wanted.insert(key);
    }
    if stale == Stale::Remove {
        let existing: Vec<K> = map
            .keys()
            .collect::<Result<_, _>>()
            .map_err(DatapathError::map(name))?;
        for key in existing.iter().filter(|k| !wanted.contains(*k)) {
            map.remove(key).map_err(DatapathError::map(name))?;
        }
    }
    Ok(())
}

/// Every entry of the two flow table maps, `FLOWS4`'s under the full
/// [`FlowKey`] (IPv4 flows first); a table that is not there (pins of a
/// netwatch from before `FLOWS4`) holds nothing.
pub(super) fn flow_entries(
    v4: Option<&aya::maps::Map>,
    other: Option<&aya::maps::Map>,
) -> Result<Vec<(FlowKey, FlowStats)>, DatapathError> {
    let narrow: Vec<(FlowKey4, FlowStats)> = match v4 {
        Some(map) => table_entries(map, names::MAP_FLOWS4)?,
        None => Vec::new(),
    };
    let wide: Vec<(FlowKey, FlowStats)> = match other {
        Some(map) => table_entries(map, names::MAP_FLOWS)?,
        None => Vec::new(),
    };
    let mut all = Vec::with_capacity(narrow.len() + wide.len());
    all.extend(narrow.into_iter().map(|(key, stats)| (key.widen(), stats)));
    if wide.iter().any(|(key, _)| key.family == family::IPV4) {
        // IPv4 flows in `FLOWS`: an earlier netwatch's programs kept them
        // there until this agent's take-over moves them
        // (`Datapath::move_ipv4_flows`); a flow in both is the newer one's.
        let current: HashSet<FlowKey> = all.iter().map(|(key, _)| *key).collect();
        all.extend(wide.into_iter().filter(|(key, _)| !current.contains(key)));
    } else {
        all.extend(wide);
    }
    Ok(all)
}

/// Every entry of flow table map `name`, whose key is `K`.
fn table_entries<K: aya::Pod + Default>(
    map: &aya::maps::Map,
    name: &'static str,
) -> Result<Vec<(K, FlowStats)>, DatapathError> {
    // Checks the key and value sizes the batch lookup relies on.
    let _sized: HashMap<&MapData, K, FlowStats> =
        map.try_into().map_err(DatapathError::map(name))?;
    let (aya::maps::Map::LruHashMap(data) | aya::maps::Map::HashMap(data)) = map else {
        return Err(DatapathError::MissingMap(name));
    };
    super::pinned::lookup_batch(data.fd().as_fd())
        .map_err(|source| DatapathError::MapRead { name, source })
}

/// Per-reason counts of a per-CPU counter map, summed over CPUs.
pub(super) fn reason_counts(
    map: &aya::maps::Map,
    name: &'static str,
) -> Result<ReasonCounts, DatapathError> {
    let mut counts = [0u64; DROP_REASON_COUNT as usize];
    for reason in DropReason::ALL {
        counts[reason as usize] = per_cpu_sum(map, name, reason as u32)?;
    }
    Ok(counts)
}

/// One slot of a per-CPU `u64` array, summed over CPUs.
pub(super) fn per_cpu_sum(
    map: &aya::maps::Map,
    name: &'static str,
    index: u32,
) -> Result<u64, DatapathError> {
    let map: PerCpuArray<&MapData, u64> = map.try_into().map_err(DatapathError::map(name))?;
    let values = map.get(&index, 0).map_err(DatapathError::map(name))?;
    Ok(values.iter().sum())
}
