//! Ring buffer records.

use crate::{assert_layout, flow::FlowKey, user_pod};

/// `FlowEvent::kind` values.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// First packet of a forwarded flow.
    FlowOpen = 1,
    /// A TCP FIN or RST was seen on the flow.
    FlowClose = 2,
    /// Periodic export of an active flow's counters.
    FlowExport = 3,
    /// A packet was dropped (at most one record per flow per drop-report interval).
    Drop = 4,
}

impl EventKind {
    pub const fn from_u8(value: u8) -> Option<EventKind> {
        match value {
            1 => Some(EventKind::FlowOpen),
            2 => Some(EventKind::FlowClose),
            3 => Some(EventKind::FlowExport),
            4 => Some(EventKind::Drop),
            _ => None,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            EventKind::FlowOpen => "flow-open",
            EventKind::FlowClose => "flow-close",
            EventKind::FlowExport => "flow-export",
            EventKind::Drop => "drop",
        }
    }
}

/// One record of the `EVENTS` ring buffer: the flow's key and counters at
/// the time of the record. 8-byte aligned, as ring buffer reservations are.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowEvent {
    /// [`EventKind`] as u8.
    pub kind: u8,
    /// [`crate::reason::Verdict`] of the packet that caused the record.
    pub verdict: u8,
    /// [`crate::reason::DropReason`] of that packet.
    pub reason: u8,
    /// OR of the flow's TCP flags so far.
    pub tcp_flags: u8,
    pub _pad: [u8; 4],
    pub key: FlowKey,
    pub packets: u64,
    pub bytes: u64,
    pub first_seen_ns: u64,
    pub last_seen_ns: u64,
}
assert_layout!(FlowEvent, size = 88, align = 8);

impl FlowEvent {
    /// Decodes a record read from the ring buffer. Returns `None` when the
    /// record has the wrong size (a kernel/user version mismatch).
    pub fn from_bytes(bytes: &[u8]) -> Option<FlowEvent> {
        if bytes.len() != core::mem::size_of::<FlowEvent>() {
            return None;
        }
        // SAFETY: the length is checked above; FlowEvent is repr(C), made of
        // integers and byte arrays only, so any bit pattern is valid, and
        // read_unaligned has no alignment requirement.
        Some(unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<FlowEvent>()) })
    }
}

user_pod!(FlowEvent);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_decode_only_at_their_exact_size() {
        let event = FlowEvent {
            kind: EventKind::Drop as u8,
            verdict: 1,
            reason: 2,
            tcp_flags: 0x12,
            packets: 3,
            bytes: 4,
            first_seen_ns: 5,
            last_seen_ns: 6,
            ..FlowEvent::default()
        };
        // SAFETY: FlowEvent is repr(C) plain data without padding holes.
        let bytes: [u8; 88] = unsafe { core::mem::transmute(event) };
        assert_eq!(FlowEvent::from_bytes(&bytes), Some(event));
        assert_eq!(FlowEvent::from_bytes(&bytes[..87]), None);
        let mut longer = [0u8; 96];
        longer[..88].copy_from_slice(&bytes);
        assert_eq!(FlowEvent::from_bytes(&longer), None);
    }

    #[test]
    fn event_kinds_round_trip_and_reject_unknown_values() {
        for kind in [
            EventKind::FlowOpen,
            EventKind::FlowClose,
            EventKind::FlowExport,
            EventKind::Drop,
        ] {
            assert_eq!(EventKind::from_u8(kind as u8), Some(kind));
        }
        assert_eq!(EventKind::from_u8(0), None);
        assert_eq!(EventKind::from_u8(5), None);
    }
}
