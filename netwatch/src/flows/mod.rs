//! Flow records from the kernel, in user-space terms: decoded ring buffer
//! records with container, network and interface names attached, merged
//! with the kernel's per-flow counters into a bounded aggregate.

/// The layout of flows, events and flow-log lines, as the JSON Schemas in
/// `schema/` describe it. It changes when a field is removed, renamed or
/// changes meaning; new fields may appear without a change, so readers
/// ignore fields they do not know.
pub const SCHEMA_VERSION: u32 = 1;

pub mod aggregate;
pub mod dns;
pub mod filter;
pub mod host_peer;
pub mod json;
pub mod kdrops;
pub mod names;
pub mod pipeline;
pub mod reader;
pub mod reason;
pub mod record;

pub use aggregate::{Aggregator, Clock, FlowEntry, PipelineCounters};
pub use filter::FlowFilter;
pub use names::{FlowNames, FlowOwner, HOST_PEER, Peer, PeerKind};
pub use pipeline::{DnsFeed, EventFeed, FlowTableReader, ObservedEvent, Pipeline};
pub use reader::{ReaderStats, RecordReader};
pub use reason::FlowReason;
