//! Reading what an agent pinned, without loading anything: for `status`,
//! whether or not the agent is running.

use std::{
    ffi::CString,
    io,
    os::{
        fd::{FromRawFd as _, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::Path,
};

use nix::libc;

use aya::maps::{Map, MapData};
use netwatch_common::{
    flow::{FlowKey, FlowStats},
    names,
};

use super::{
    DatapathError,
    dns::{DnsKernelCounts, dns_counts},
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
    /// Packets audit let through, per reason enforcement would have
    /// dropped them for (`None`: pins of a netwatch without audit).
    pub audited: Option<ReasonCounts>,
    /// Ring buffer records lost because the buffer was full.
    pub ringbuf_lost: u64,
    /// Entries the programs inserted into the flow table (`None`: pins of a
    /// netwatch that did not count them).
    pub flows_inserted: Option<u64>,
    /// DNS records (`None`: pins of a netwatch without them).
    pub dns: Option<DnsKernelCounts>,
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
        audited: open(root, names::MAP_AUDIT_COUNTERS)?
            .map(|map| reason_counts(&map, names::MAP_AUDIT_COUNTERS))
            .transpose()?,
        ringbuf_lost: per_cpu_sum(&lost, names::MAP_RINGBUF_LOST, 0)?,
        flows_inserted: open(root, names::MAP_FLOWS_INSERTED)?
            .map(|map| per_cpu_sum(&map, names::MAP_FLOWS_INSERTED, 0))
            .transpose()?,
        dns: open(root, names::MAP_DNS_COUNTERS)?
            .map(|map| dns_counts(&map))
            .transpose()?,
    }))
}

/// Every entry of the flow tables pinned under `root`; empty when nothing
/// is pinned (pins of a netwatch from before `FLOWS4` have `FLOWS` alone).
///
/// # Errors
/// A pinned map exists but cannot be opened or iterated.
pub fn read_flows(root: &Path) -> Result<Vec<(FlowKey, FlowStats)>, DatapathError> {
    let v4 = open(root, names::MAP_FLOWS4)?;
    let other = open(root, names::MAP_FLOWS)?;
    flow_entries(v4.as_ref(), other.as_ref())
}

/// What the kernel says of the link pinned at `path`: its id (kept for the
/// link's life, whatever program it runs) and the id of the program it
/// runs now.
///
/// # Errors
/// No link is pinned there.
pub fn link_ids(path: &Path) -> Result<(u32, u32), DatapathError> {
    let info = link_info(path).map_err(|source| DatapathError::Pin {
        path: path.to_path_buf(),
        source,
    })?;
    Ok((info.id, info.prog_id))
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

// One reader of pinned links, by hand: aya's `LinkInfo` gives a link's id
// and program but not the `tcx` part of `bpf_link_info` (the device's
// ifindex now, and the attach type), which provisional links need.

/// `enum bpf_cmd` (include/uapi/linux/bpf.h).
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
/// `enum bpf_link_type`: `BPF_LINK_TYPE_TCX`.
const BPF_LINK_TYPE_TCX: u32 = 11;
/// `enum bpf_attach_type`: `BPF_TCX_INGRESS`.
const BPF_TCX_INGRESS: u32 = 46;

/// The head of `struct bpf_link_info` and its `tcx` member (the union
/// starts at offset 16, aligned for its u64 members).
#[repr(C)]
#[derive(Default)]
struct TcxLinkInfo {
    link_type: u32,
    id: u32,
    prog_id: u32,
    _pad: u32,
    ifindex: u32,
    attach_type: u32,
}

/// What the kernel says of one pinned TCX link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcxLink {
    pub id: u32,
    pub prog_id: u32,
    /// The device's current ifindex, in the namespace the device is in
    /// now; 0 once the device is gone (the link is defunct).
    pub ifindex: u32,
    pub ingress: bool,
}

/// Reads the pinned link at `path`; `None` when it is not a TCX link.
///
/// # Errors
/// The pin cannot be opened or the kernel refuses the query.
pub fn tcx_link(path: &Path) -> io::Result<Option<TcxLink>> {
    let info = link_info(path)?;
    if info.link_type != BPF_LINK_TYPE_TCX {
        return Ok(None);
    }
    Ok(Some(TcxLink {
        id: info.id,
        prog_id: info.prog_id,
        ifindex: info.ifindex,
        ingress: info.attach_type == BPF_TCX_INGRESS,
    }))
}

/// The head of the kernel's `bpf_link_info` for the link pinned at `path`
/// (its `tcx` part is meaningful for TCX links only).
fn link_info(path: &Path) -> io::Result<TcxLinkInfo> {
    let fd = obj_get(path)?;
    let mut info = TcxLinkInfo::default();
    #[repr(C)]
    struct InfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    use std::os::fd::AsRawFd as _;
    let mut attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: std::mem::size_of::<TcxLinkInfo>() as u32,
        info: (&raw mut info) as u64,
    };
    // SAFETY: `attr` is a BPF_OBJ_GET_INFO_BY_FD attribute; the kernel
    // writes at most `info_len` bytes to `info`, which has them and
    // outlives the call.
    unsafe { bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr) }?;
    Ok(info)
}

fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    let path = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    #[repr(C)]
    struct GetAttr {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
    }
    let mut attr = GetAttr {
        pathname: path.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
    };
    // SAFETY: `attr` is a BPF_OBJ_GET attribute; `pathname` points at a
    // NUL-terminated string that outlives the call.
    let fd = unsafe { bpf(BPF_OBJ_GET, &mut attr) }?;
    // SAFETY: the kernel returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// `BPF_MAP_LOOKUP_BATCH` (include/uapi/linux/bpf.h; kernel ≥ 5.6).
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// Entries fetched per `BPF_MAP_LOOKUP_BATCH` call at first (doubled when a
/// hash bucket holds more, which the kernel answers with ENOSPC).
const BATCH_ENTRIES: usize = 4096;

/// Every entry of the hash map behind `fd`, many per system call.
///
/// Why not aya's iterator: it costs two system calls per entry (next key,
/// then lookup), 105 ms for a flow table of 100,000 entries measured here,
/// which every `flows` query and `/metrics` scrape paid. The kernel walks
/// a hash map bucket by bucket and never splits one between calls, so an
/// entry present for the whole walk is returned exactly once; entries
/// added or evicted meanwhile may or may not be (as with the iterator).
///
/// `K` and `V` must have the map's key and value sizes (the caller checked
/// them) and be plain data any bit pattern of which is valid.
///
/// # Errors
/// The kernel refuses the lookup.
pub(super) fn lookup_batch<K: Copy + Default, V: Copy + Default>(
    fd: std::os::fd::BorrowedFd<'_>,
) -> io::Result<Vec<(K, V)>> {
    use std::os::fd::AsRawFd as _;
    #[repr(C)]
    struct BatchAttr {
        in_batch: u64,
        out_batch: u64,
        keys: u64,
        values: u64,
        count: u32,
        map_fd: u32,
        elem_flags: u64,
        flags: u64,
    }
    let mut capacity = BATCH_ENTRIES;
    let mut keys = vec![K::default(); capacity];
    let mut values = vec![V::default(); capacity];
    // The kernel's position token: a bucket index (u32) for hash maps;
    // room for more, as libbpf leaves.
    let (mut position, mut next) = ([0u8; 16], [0u8; 16]);
    let mut started = false;
    let mut out = Vec::new();
    loop {
        let mut attr = BatchAttr {
            in_batch: if started { position.as_ptr() as u64 } else { 0 },
            out_batch: next.as_mut_ptr() as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: capacity as u32,
            map_fd: fd.as_raw_fd() as u32,
            elem_flags: 0,
            flags: 0,
        };
        // SAFETY: `attr` is a BPF_MAP_LOOKUP_BATCH attribute; the kernel
        // writes at most `count` keys and values of the map's sizes, which
        // are `K`'s and `V`'s (the caller's promise), into vectors of
        // `count` elements, and a hash map's 4-byte position token into
        // the 16-byte buffers; all outlive the call.
        let result = unsafe { bpf(BPF_MAP_LOOKUP_BATCH, &mut attr) };
        let got = (attr.count as usize).min(capacity);
        out.extend(
            keys[..got]
                .iter()
                .copied()
                .zip(values[..got].iter().copied()),
        );
        match result {
            Ok(_) => {
                position = next;
                started = true;
            }
            // The walk is complete (the last batch may hold entries).
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(out),
            // One bucket holds more than fits: ask again with more room.
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) && got == 0 => {
                capacity *= 2;
                keys.resize(capacity, K::default());
                values.resize(capacity, V::default());
            }
            Err(e) => return Err(e),
        }
    }
}

/// The `bpf(2)` system call with `attr` (its size passed as the attribute's
/// size).
///
/// # Safety
/// `attr` must be a valid attribute of `cmd`, and every pointer in it valid
/// for what the kernel reads or writes there during the call.
unsafe fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: as the caller promised; `attr` is `size_of::<T>()` bytes.
    let done = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr).cast::<libc::c_void>(),
            std::mem::size_of::<T>(),
        )
    };
    if done < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(done)
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
