//! The agent: turns what Docker says about the host into map entries and
//! attachments, and keeps them right.
//!
//! `run` is the loop (Docker snapshot and events → plan → reconcile);
//! `plan` derives the desired datapath state from a [`HostState`] snapshot
//! (pure, unit-tested); `reconcile` makes the kernel match a plan,
//! idempotently, from whatever is pinned.

mod attach_pace;
pub mod docker_state;
pub mod guard_watch;
pub mod lock;
mod plan;
pub mod port_guard;
mod reconcile;
mod run;
mod sandbox_guard;
pub mod saved_plan;
pub mod service;
mod serving;
pub mod status_file;
mod uplinks;

pub use attach_pace::AttachPace;
pub use plan::{
    BridgePort, ChildTarget, ContainerInterface, HostState, MacvlanEndpoint, NetworkState,
    OverlayEndpoint, Plan, ProvisionalChild, SandboxPort, SandboxTarget, Target, plan,
};
pub use reconcile::{
    ReconcileError, ReconcileMemory, ReconcileReport, reconcile, reconcile_remembering,
};
pub use run::{AgentOptions, run};
pub use uplinks::{UplinkChoice, UplinkChoiceError};
