//! What a running agent tells `netwatch status` (until the API exists): a
//! small JSON file rewritten after every reconciliation.

use std::{
    io,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

/// The agent's own account of itself.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStatus {
    pub pid: u32,
    /// Unix seconds.
    pub started_at: u64,
    /// Unix seconds of the last successful sync with Docker, if any.
    pub last_sync: Option<u64>,
    /// Successful syncs with Docker since the agent started.
    #[serde(default)]
    pub syncs: u64,
    /// The Docker API version negotiated, if connected.
    pub docker_api_version: Option<String>,
    /// The last Docker error, if the last attempt failed.
    pub docker_error: Option<String>,
    /// Interfaces the last reconciliation could not attach, with why.
    pub refused: Vec<String>,
    /// `netwatch.*` labels refused, with what netwatch did instead.
    #[serde(default)]
    pub label_problems: Vec<String>,
    /// Published ports whose clients the plan drops (a container
    /// publishing on a network that denies egress), one line each.
    #[serde(default)]
    pub published_dropped: Vec<String>,
    /// Interfaces carrying the uplink shield, e.g. `eth0 (ifindex 2)`.
    #[serde(default)]
    pub uplinks: Vec<String>,
    /// The kernel's own drops (`kfree_skb`): `recorded (…)`, or why not.
    #[serde(default)]
    pub kernel_drops: Option<String>,
    /// `agent --audit`: nothing is dropped anywhere.
    #[serde(default)]
    pub audit: bool,
    /// Where Prometheus metrics are served, if they are.
    #[serde(default)]
    pub metrics_addr: Option<String>,
    /// The API's unix socket (what `netwatch status` asks for the flow
    /// pipeline's counters).
    #[serde(default)]
    pub api_socket: Option<String>,
    /// Pins removed behind the agent's back that resyncs put back (links,
    /// which detached the programs, and maps), since the agent started.
    #[serde(default)]
    pub repairs: u64,
    /// The networks the agent manages (`--network`); empty: every one.
    #[serde(default)]
    pub managed_networks: Vec<String>,
    /// Interfaces the last reconciliation could not attach, by
    /// [`crate::guard::attach_key`], with why (what [`crate::guard`] names
    /// as the reason they are unguarded).
    #[serde(default)]
    pub attach_failures: std::collections::BTreeMap<String, String>,
    /// Networks and endpoints whose policy denies something but that the
    /// last sync found unguarded (see [`crate::guard::Alarm`]).
    #[serde(default)]
    pub unguarded: Vec<crate::guard::Alarm>,
}

fn path(dir: &Path) -> PathBuf {
    dir.join("agent.json")
}

impl AgentStatus {
    /// Writes the file into `dir` (normally [`super::lock::run_dir`])
    /// atomically: write, then rename.
    ///
    /// # Errors
    /// `dir` is not writable.
    pub fn write(&self, dir: &Path) -> io::Result<()> {
        let tmp = path(dir).with_extension("json.tmp");
        std::fs::create_dir_all(dir)?;
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        std::fs::rename(tmp, path(dir))
    }

    /// Reads the file the agent last wrote into `dir`, if any.
    pub fn read(dir: &Path) -> Option<AgentStatus> {
        serde_json::from_slice(&std::fs::read(path(dir)).ok()?).ok()
    }
}
