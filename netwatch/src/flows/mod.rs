//! Flow records from the kernel, in user-space terms: decoded ring buffer
//! records with container, network and interface names attached.

pub mod names;
pub mod record;

pub use names::{FlowNames, FlowOwner};
pub use record::FlowRecord;
