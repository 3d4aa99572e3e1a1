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
