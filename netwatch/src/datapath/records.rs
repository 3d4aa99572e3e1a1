//! The ring buffers the programs write records into, held apart from the
//! [`Datapath`] so that a reader thread of its own can wait on them (see
//! `flows::reader`) while the datapath serves attach and policy work.

use std::os::fd::{AsFd as _, BorrowedFd};

use aya::maps::{Map, MapData, RingBuf};
use netwatch_common::{event::FlowEvent, kdrop::KernelDropEvent, names};

use super::{CapturedDns, Datapath, DatapathError};

/// Second handles (duplicated fds, their own mmaps) on the flow, DNS and
/// kernel drop ring buffers of one datapath.
///
/// A ring buffer has a single consumer position, kept in a page the kernel
/// shares with user space; aya's [`RingBuf`] caches it and writes it back
/// per record. Two readers of one ring would hand the same records out
/// twice or skip some, so while a `RecordRings` exists nothing else may
/// drain these rings (`Datapath::drain_events` and its siblings, which the
/// agent no longer calls, remain for tests and single-threaded tools).
pub struct RecordRings {
    events: RingBuf<MapData>,
    dns: RingBuf<MapData>,
    kernel_drops: RingBuf<MapData>,
}

/// What one drain took.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Drained {
    /// Records decoded.
    pub records: usize,
    /// Records of the wrong size or kind (a kernel/user mismatch).
    pub malformed: u64,
}

impl Datapath {
    /// The datapath's ring buffers, for a reader of their own (see
    /// [`RecordRings`]).
    ///
    /// # Errors
    /// An fd cannot be duplicated or a ring cannot be mapped.
    pub fn record_rings(&self) -> Result<RecordRings, DatapathError> {
        Ok(RecordRings {
            events: self.ring_handle(names::MAP_EVENTS)?,
            dns: self.ring_handle(names::MAP_DNS_EVENTS)?,
            kernel_drops: self.ring_handle(names::MAP_KDROP_EVENTS)?,
        })
    }

    fn ring_handle(&self, name: &'static str) -> Result<RingBuf<MapData>, DatapathError> {
        let Some(Map::RingBuf(data)) = self.ebpf.map(name) else {
            return Err(DatapathError::MissingMap(name));
        };
        let map = super::maps::second_handle(name, data)?;
        RingBuf::try_from(map).map_err(DatapathError::map(name))
    }
}

impl RecordRings {
    /// The flow record ring's fd: readable when records wait. The kernel
    /// wakes waiters on it only past the watermark of netwatch-ebpf's
    /// flows.rs, so a reader must also wake on a timeout.
    pub fn events_fd(&self) -> BorrowedFd<'_> {
        self.events.as_fd()
    }

    /// Appends at most `max` flow records to `out`.
    pub fn drain_events(&mut self, out: &mut Vec<FlowEvent>, max: usize) -> Drained {
        drain(&mut self.events, FlowEvent::from_bytes, out, max)
    }

    /// Appends at most `max` DNS records to `out`.
    pub fn drain_dns(&mut self, out: &mut Vec<CapturedDns>, max: usize) -> Drained {
        drain(&mut self.dns, CapturedDns::from_bytes, out, max)
    }

    /// Appends at most `max` kernel drop records to `out`.
    pub fn drain_kernel_drops(&mut self, out: &mut Vec<KernelDropEvent>, max: usize) -> Drained {
        drain(
            &mut self.kernel_drops,
            KernelDropEvent::from_bytes,
            out,
            max,
        )
    }
}

fn drain<T>(
    ring: &mut RingBuf<MapData>,
    decode: fn(&[u8]) -> Option<T>,
    out: &mut Vec<T>,
    max: usize,
) -> Drained {
    let mut drained = Drained::default();
    while drained.records + (drained.malformed as usize) < max {
        let Some(item) = ring.next() else {
            break;
        };
        match decode(&item) {
            Some(record) => {
                out.push(record);
                drained.records += 1;
            }
            None => drained.malformed += 1,
        }
    }
    drained
}
