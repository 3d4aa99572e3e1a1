//! The agent's API: HTTP/1.1 + JSON over a unix socket, like the Docker
//! Engine API, so that `curl` works as well as the CLI:
//!
//! ```text
//! curl --unix-socket /run/netwatch/api.sock 'http://localhost/v1/flows?container=web&since=5m'
//! ```
//!
//! | Endpoint | Answer |
//! |---|---|
//! | `GET /v1/flows?FILTER` | JSON array of [`FlowEntry`](crate::flows::FlowEntry), busiest first |
//! | `GET /v1/drops?FILTER` | JSON array of [`DropGroup`]: dropped flows by container, network and reason |
//! | `GET /v1/observe?FILTER` | JSON lines, one [`ObservedEvent`](crate::flows::ObservedEvent) each, until the client goes away; `{"event":"lost","count":N}` when the client fell behind; with `since`, the flows seen since then come first (`"event":"flow"`) |
//! | `GET /v1/status` | [`ApiStatus`]: pid, tracked flows, pipeline and API counters |
//!
//! FILTER: `container`, `service`, `network`, `verdict`, `reason`, `proto`,
//! `port`, `since` (see [`query`]). Errors are JSON `{"error": "…"}` with a
//! 400 (bad filter), 404 (unknown path) or 405 (not GET).
//!
//! The socket is `<run dir>/api.sock` (`/run/netwatch/api.sock`), mode 0600
//! (root only), or 0660 with the group given by `netwatch agent
//! --api-group`. The agent removes it when it stops; a socket left by a
//! killed agent is replaced at the next start.
//!
//! - [`server`]: [`ApiListener`] (bind early) → [`ApiServer`] (serving).
//! - [`client`]: [`ApiClient`], used by `netwatch flows`, `drops` and
//!   `observe`.

pub mod client;
pub mod query;
pub mod server;
pub mod socket;
pub mod types;

pub use client::{ApiClient, ClientError, DEFAULT_SOCKET, EventStream, FlowsAnswer};
pub use query::{QueryError, filter_query, parse_filter, parse_since};
pub use server::{ApiListener, ApiServer};
pub use socket::SocketError;
pub use types::{
    ApiCounters, ApiStatus, DropGroup, ErrorBody, LAYOUT_HEADER, Layout, StreamItem, drop_groups,
};
