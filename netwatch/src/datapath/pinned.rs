//! Reading what an agent pinned, without loading anything: for `status`,
//! whether or not the agent is running.

use std::path::Path;

use aya::maps::{Map, MapData};
use netwatch_common::{
    flow::{FlowKey, FlowStats},
    names,
};

use super::{
    DatapathError,
    maps::{ReasonCounts, flow_entries, per_cpu_sum, reason_counts},
    pins,
};

/// Counters of the pinned maps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinnedCounters {
    /// Veth and bridge programs, per reason (index 0 = forwarded).
    pub verdicts: ReasonCounts,
    /// Uplink program, per reason (index 0 = passed).
    pub uplink: ReasonCounts,
    /// Ring buffer records lost because the buffer was full.
    pub ringbuf_lost: u64,
    /// Entries the programs inserted into the flow table (`None`: pins of a
    /// netwatch that did not count them).
    pub flows_inserted: Option<u64>,
}

/// The kernel's flow table: the entries it holds and what its LRU evicted.
///
/// An LRU map counts nothing it evicts; the programs count every entry
/// they insert (`FLOWS_INSERTED`) and nothing but the LRU deletes entries,
/// so the evictions are the inserts minus the entries held. Exact when no
/// packet arrives between the two reads; under traffic, off by the inserts
/// in between.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct FlowTableCounts {
    pub entries: u64,
    pub inserted: u64,
    pub evicted: u64,
}

impl FlowTableCounts {
    pub fn new(inserted: u64, entries: u64) -> FlowTableCounts {
        FlowTableCounts {
            entries,
            inserted,
            // The counter is read first: inserts after it can make the
            // table hold more than it counted.
            evicted: inserted.saturating_sub(entries),
        }
    }
}

fn open(root: &Path, name: &'static str) -> Result<Option<Map>, DatapathError> {
    let path = pins::maps_dir(root).join(name);
    if !path.exists() {
        return Ok(None);
    }
    let data = MapData::from_pin(&path).map_err(DatapathError::map(name))?;
    Map::from_map_data(data)
        .map(Some)
        .map_err(DatapathError::map(name))
}

/// Reads the counters pinned under `root`; `None` when nothing is pinned.
///
/// # Errors
/// A pinned map exists but cannot be opened or read.
pub fn read_counters(root: &Path) -> Result<Option<PinnedCounters>, DatapathError> {
    let (Some(verdicts), Some(uplink), Some(lost)) = (
        open(root, names::MAP_VERDICT_COUNTERS)?,
        open(root, names::MAP_UPLINK_COUNTERS)?,
        open(root, names::MAP_RINGBUF_LOST)?,
    ) else {
        return Ok(None);
    };
    Ok(Some(PinnedCounters {
        verdicts: reason_counts(&verdicts, names::MAP_VERDICT_COUNTERS)?,
        uplink: reason_counts(&uplink, names::MAP_UPLINK_COUNTERS)?,
        ringbuf_lost: per_cpu_sum(&lost, names::MAP_RINGBUF_LOST, 0)?,
        flows_inserted: open(root, names::MAP_FLOWS_INSERTED)?
            .map(|map| per_cpu_sum(&map, names::MAP_FLOWS_INSERTED, 0))
            .transpose()?,
    }))
}

/// Every entry of the flow table pinned under `root`; empty when nothing is
/// pinned.
///
/// # Errors
/// The pinned map exists but cannot be opened or iterated.
pub fn read_flows(root: &Path) -> Result<Vec<(FlowKey, FlowStats)>, DatapathError> {
    match open(root, names::MAP_FLOWS)? {
        Some(map) => flow_entries(&map),
        None => Ok(Vec::new()),
    }
}

/// What the kernel says of the link pinned at `path`: its id (kept for the
/// link's life, whatever program it runs) and the id of the program it
/// runs now.
///
/// # Errors
/// No link is pinned there.
pub fn link_ids(path: &Path) -> Result<(u32, u32), DatapathError> {
    let error = |e: &dyn std::fmt::Display| DatapathError::Pin {
        path: path.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    };
    let link: aya::programs::links::FdLink = aya::programs::links::PinnedLink::from_pin(path)
        .map_err(|e| error(&e))?
        .into();
    let info = link.info().map_err(|e| error(&e))?;
    Ok((info.id(), info.program_id()))
}

/// The capacity (max entries) of the map pinned at `path`.
///
/// # Errors
/// No map is pinned there.
pub fn map_capacity(path: &Path) -> Result<u32, DatapathError> {
    aya::maps::MapInfo::from_pin(path)
        .map(|info| info.max_entries())
        .map_err(|e| DatapathError::Pin {
            path: path.to_path_buf(),
            source: std::io::Error::other(e.to_string()),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evictions_are_the_inserts_the_table_no_longer_holds() {
        assert_eq!(
            FlowTableCounts::new(300_000, 1024),
            FlowTableCounts {
                entries: 1024,
                inserted: 300_000,
                evicted: 298_976
            }
        );
        // Inserts between reading the counter and walking the table.
        assert_eq!(FlowTableCounts::new(10, 12).evicted, 0);
    }
}
