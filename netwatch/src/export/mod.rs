//! Export for fleets: what the agent observes, in the forms a fleet's
//! existing pipeline collects from every host.
//!
//! - [`metrics`]: Prometheus metrics over HTTP (`GET /metrics`, loopback
//!   port 9469 by default): [`serve_metrics`] with a [`MetricsSource`].
//! - [`flowlog`]: a JSON-lines flow log with size-based rotation as
//!   Docker's `json-file` driver does it: [`write_flow_log`] with
//!   [`FlowLogOptions`] (`--flow-log PATH --max-size 10m --max-file 3`).
//! - [`replay`]: the flow log read back, for `netwatch flows --from-log`.
//!
//! Both read the agent's [`Pipeline`](crate::flows::Pipeline); neither
//! needs anything from the kernel beyond what the pipeline and the pins
//! already hold, so both are tested without root.

pub mod exposition;
pub mod flowlog;
pub mod metrics;
pub mod process;
pub mod replay;

pub use flowlog::{
    DEFAULT_MAX_FILE, DEFAULT_MAX_SIZE, FlowLog, FlowLogCounters, FlowLogLine, FlowLogOptions,
    FlowLogStats, parse_max_file, parse_size, write_flow_log,
};
pub use metrics::{
    AttachCounts, DEFAULT_METRICS_ADDR, METRICS_PATH, MetricsSnapshot, MetricsSource,
    PipelineStats, render, serve_metrics,
};
