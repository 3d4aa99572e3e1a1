//! The agent: turns what Docker says about the host into map entries and
//! attachments, and keeps them right.
//!
//! `plan` derives the desired datapath state from a [`HostState`] snapshot
//! (pure, unit-tested); `reconcile` makes the kernel match a plan,
//! idempotently, from whatever is pinned.

pub mod lock;
mod plan;
mod reconcile;
pub mod status_file;

pub use plan::{EndpointState, HostState, NetworkState, Plan, Target, plan};
pub use reconcile::{ReconcileError, ReconcileReport, reconcile};
