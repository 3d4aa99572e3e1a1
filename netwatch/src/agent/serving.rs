//! What the agent serves — the API, `/metrics` and the flow log — on a
//! thread and tokio runtime of their own.
//!
//! The agent's loop blocks its thread for as long as Docker, netlink or an
//! attach takes: a reconcile attaches programs one by one, each TCX attach
//! waiting for an RCU grace period under rtnl (about 25 ms each, so 12 s
//! for 500 endpoints, `BENCHMARKS.md`), and interfaces that appear at once
//! are guarded in one batch. When the API shared that thread, a query
//! waited out the whole batch. Here nothing the loop does delays an
//! answer; the records come in on the [`crate::flows::RecordReader`]'s own
//! thread. `bench-scale --only stalls` measures both while 500 endpoints
//! are attached with dockerd away.

use std::{
    sync::{Arc, mpsc},
    thread::JoinHandle,
};

use anyhow::{Context as _, Result, anyhow};
use log::{info, warn};
use tokio::sync::oneshot;

use crate::{
    api::ApiListener,
    export::{FlowLog, MetricsSource, serve_metrics},
    flows::Pipeline,
};

/// What goes on the serving thread.
pub struct Served {
    pub api: ApiListener,
    pub flow_limit: usize,
    /// A bound listener (bound on the caller's thread so that a taken port
    /// stops the agent before anything is loaded) and what it serves.
    pub metrics: Option<(std::net::TcpListener, MetricsSource)>,
    pub flow_log: Option<FlowLog>,
}

/// The running serving thread; [`Serving::stop`] ends it.
pub struct Serving {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Serving {
    /// Starts serving `what` from `pipeline` on a new thread; returns once
    /// the API socket is served (or could not be).
    ///
    /// # Errors
    /// The thread or its runtime cannot be made, or a listener cannot be
    /// registered with it.
    pub fn start(what: Served, pipeline: Arc<Pipeline>) -> Result<Serving> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("netwatch-serve")
            .build()
            .context("building the serving runtime")?;
        let (started, is_started) = mpsc::sync_channel(1);
        let (stop, stopped) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("netwatch-serve".into())
            .spawn(move || runtime.block_on(serve(what, pipeline, started, stopped)))
            .context("starting the serving thread")?;
        match is_started.recv() {
            Ok(Ok(())) => Ok(Serving {
                stop: Some(stop),
                thread: Some(thread),
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = thread.join();
                Err(anyhow!("the serving thread ended before it served"))
            }
        }
    }

    /// Ends live `observe` streams, removes the API socket, stops the
    /// metrics and the flow log, and waits for the thread.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            // Joining blocks: off the caller's runtime thread.
            let joined = tokio::task::spawn_blocking(move || thread.join()).await;
            if !matches!(joined, Ok(Ok(()))) {
                warn!("the serving thread panicked");
            }
        }
    }
}

async fn serve(
    what: Served,
    pipeline: Arc<Pipeline>,
    started: mpsc::SyncSender<Result<()>>,
    stopped: oneshot::Receiver<()>,
) {
    let Served {
        api,
        flow_limit,
        metrics,
        flow_log,
    } = what;
    let describe = api.describe();
    let api = match api.serve(pipeline.clone(), flow_limit) {
        Ok(api) => api,
        Err(e) => {
            let _ = started.send(Err(anyhow!(e).context("serving the API")));
            return;
        }
    };
    info!("API: serving on {describe}");
    let mut exports = Vec::new();
    if let Some((listener, source)) = metrics {
        let listener = match listener
            .set_nonblocking(true)
            .and_then(|()| tokio::net::TcpListener::from_std(listener))
        {
            Ok(listener) => listener,
            Err(e) => {
                api.stop().await;
                let _ = started.send(Err(anyhow!(e).context("serving the metrics")));
                return;
            }
        };
        exports.push(tokio::spawn(async move {
            if let Err(e) = serve_metrics(listener, source).await {
                warn!("metrics: stopped serving: {e}");
            }
        }));
    }
    if let Some(log) = flow_log {
        exports.push(tokio::spawn(log.run(pipeline.subscribe())));
    }
    let _ = started.send(Ok(()));
    // A dropped sender (the agent's loop gone) stops serving too.
    let _ = stopped.await;
    // Ends live `observe` streams and removes the socket.
    api.stop().await;
    // The flow log only ends when the pipeline's broadcast closes, which
    // the API and metrics would hold open: stop them explicitly (each
    // flow-log batch is written whole before the next is awaited).
    for task in exports {
        task.abort();
    }
}
