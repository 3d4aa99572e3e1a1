//! A standalone observing session, for `flows`, `observe`, `top`, `drops`
//! and `map` when no agent runs: the programs are loaded with maps of their
//! own and attached to every container veth for the life of this process,
//! observing only (nothing is enforced, nothing dropped), and nothing is
//! pinned. The links are held by this process's fds, so they go when the
//! session is dropped, and also when the process is killed: the kernel
//! closes the fds and detaches TCX links whose last fd closes.
//!
//! Enforcement pinned by an agent that is not running stays in place and
//! runs first on each hook (the session's programs are appended after it):
//! what it drops, the session does not see.

use std::sync::Arc;

use anyhow::{Context as _, Result};
use log::{debug, warn};
use netwatch_common::endpoint::policy_flags;

use crate::{
    agent::{Target, docker_state::host_state, plan},
    datapath::{Datapath, LoadOptions},
    docker::{Client, Snapshot},
    flows::{
        FlowNames, Pipeline,
        host_peer::{host_peers, open_socket_owners},
    },
    host,
    policy::compile,
};

/// See the module documentation.
pub struct Session {
    datapath: Datapath,
    pipeline: Arc<Pipeline>,
    attached: Vec<Target>,
}

impl Session {
    /// Loads the programs, attaches them to the veth of every endpoint of
    /// `networks` (every bridge network when empty) and starts a pipeline
    /// keeping at most `flow_limit` flows.
    ///
    /// # Errors
    /// Not root, Docker unreachable, or the programs cannot be loaded.
    /// Endpoints that cannot be attached are skipped with a warning.
    pub async fn start(networks: &[String], flow_limit: usize) -> Result<Session> {
        host::require_capabilities(
            "observing without an agent (standalone)",
            host::ATTACH_CAPABILITIES,
        )
        .map_err(anyhow::Error::msg)?;
        let client = Client::connect().await?;
        let snapshot = Snapshot::take(&client).await?;
        let mut state = host_state(&snapshot, host::addresses());
        if !networks.is_empty() {
            state.networks.retain(|n| networks.contains(&n.name));
        }
        let plan = plan(&state);
        let observe_only: Vec<_> = plan
            .specs
            .iter()
            .filter(|s| plan.veths.iter().any(|t| t.ifindex == s.ifindex))
            .cloned()
            .map(|mut spec| {
                spec.policy.flags &= !policy_flags::ENFORCE;
                spec
            })
            .collect();
        let mut datapath = Datapath::load(&LoadOptions::default())
            .context("loading the programs for this session")?;
        datapath.apply(&compile(&observe_only, &plan.host_addrs)?)?;
        let mut attached = Vec::new();
        for target in &plan.veths {
            match datapath.attach_veth_for_session(&target.ifname, target.ifindex) {
                Ok(()) => {
                    debug!("observing {} ({})", target.what, target.ifname);
                    attached.push(target.clone());
                }
                Err(e) => warn!("not observing {} ({}): {e}", target.what, target.ifname),
            }
        }
        let table = datapath.flow_table_handle()?;
        let pipeline = Arc::new(
            Pipeline::new(flow_limit, Box::new(move || table.read()))
                .with_socket_owners(open_socket_owners()),
        );
        pipeline.set_kernel_table_entries(crate::datapath::kernel_flow_capacity(
            LoadOptions::default().flow_table_entries,
        ));
        let host_peers = host_peers(
            &snapshot.inventory,
            &state.host_addrs,
            pipeline.socket_owners(),
        );
        pipeline.set_names(FlowNames::new(&state, &[]).with_host_peers(host_peers));
        if let Err(e) = datapath.enable_dns_records(0, 0) {
            warn!("DNS is not recorded: {e}");
        }
        // Not pinned: it goes with the session like the veth programs.
        match datapath.attach_kernel_drops() {
            Ok(reasons) => pipeline.set_kernel_drop_reasons(reasons),
            Err(e) => warn!("the kernel's own drops are not recorded: {e}"),
        }
        Ok(Session {
            datapath,
            pipeline,
            attached,
        })
    }

    /// Moves what the kernel recorded into the pipeline; returns how many
    /// records there were.
    ///
    /// # Errors
    /// The ring buffer cannot be read.
    pub fn take_records(&mut self) -> Result<usize> {
        // DNS first, as the agent does: names for the flows that follow.
        let (dns, malformed) = self.datapath.drain_dns()?;
        self.pipeline.count_malformed(malformed);
        self.pipeline.ingest_dns(&dns);
        let (events, malformed) = self.datapath.drain_events()?;
        if malformed > 0 {
            self.pipeline.count_malformed(malformed);
        }
        self.pipeline.ingest(&events);
        let mut records = events.len();
        if self.datapath.kernel_drops_attached() {
            let (events, malformed) = self.datapath.drain_kernel_drops()?;
            self.pipeline.count_malformed(malformed);
            self.pipeline.ingest_kernel_drops(&events);
            records += events.len();
        }
        Ok(records)
    }

    /// A reader of the session's ring buffers on a thread of its own, into
    /// its pipeline (what `flows`, `observe` and `top` use; then
    /// [`Session::take_records`] must not be called: a ring has one
    /// reader).
    ///
    /// # Errors
    /// The rings cannot be opened or the thread cannot start.
    pub fn start_reader(&self) -> Result<crate::flows::RecordReader> {
        let rings = self.datapath.record_rings()?;
        Ok(crate::flows::RecordReader::start(
            rings,
            Arc::clone(&self.pipeline),
            false,
        )?)
    }

    /// The session's pipeline (query it, subscribe to it).
    pub fn pipeline(&self) -> Arc<Pipeline> {
        Arc::clone(&self.pipeline)
    }

    /// The veths observed.
    pub fn attached(&self) -> &[Target] {
        &self.attached
    }
}
