//! Running under a service manager: systemd's readiness protocol and
//! SIGHUP.
//!
//! - `READY=1` (sd_notify, to `$NOTIFY_SOCKET`; nothing when it is unset)
//!   after the first reconcile with Docker. The unit orders netwatch
//!   *before* docker.service, so at boot dockerd cannot answer until
//!   netwatch is ready: waiting for Docker then would hold the boot until a
//!   timeout. So the agent is also ready, with a `STATUS=` saying so, when
//!   Docker does not answer its first connection, or has not completed a
//!   sync within [`READY_WITHOUT_DOCKER_AFTER`] (socket activation accepts
//!   the connection and then holds it until docker.service starts, which is
//!   after us). By then the datapath is loaded and what was pinned enforces.
//!   With a saved plan ([`super::saved_plan`]) the agent is ready as soon as
//!   it applied it and listens for new interfaces: that is what boot needs.
//! - `STOPPING=1` as soon as SIGTERM or SIGINT arrives.
//! - SIGHUP: the agent resyncs with Docker and the flow log is reopened (for
//!   logrotate's `postrotate`). Each SIGHUP bumps a counter that the agent's
//!   loop and the flow log writer watch ([`hangups`]).

use std::{
    sync::{
        OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use log::{info, warn};
use sd_notify::NotifyState;
use tokio::sync::watch;

/// How long the agent waits for its first sync with Docker before telling
/// the service manager that it is ready anyway.
pub const READY_WITHOUT_DOCKER_AFTER: Duration = Duration::from_secs(5);

static READY: AtomicBool = AtomicBool::new(false);

fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        warn!("cannot notify the service manager ($NOTIFY_SOCKET): {e}");
    }
}

/// Sends `READY=1` with `STATUS=status`, the first time only.
pub fn ready(status: &str) {
    if READY.swap(true, Ordering::SeqCst) {
        return;
    }
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Whether [`ready`] was sent.
pub fn is_ready() -> bool {
    READY.load(Ordering::SeqCst)
}

/// Sends `READY=1` after [`READY_WITHOUT_DOCKER_AFTER`] unless it was sent
/// before. Spawn it when the datapath is loaded.
pub async fn ready_without_docker_after_timeout() {
    tokio::time::sleep(READY_WITHOUT_DOCKER_AFTER).await;
    if !is_ready() {
        info!(
            "no sync with Docker after {READY_WITHOUT_DOCKER_AFTER:?}: ready anyway (dockerd is \
             ordered after netwatch); enforcing what is pinned until Docker answers"
        );
        ready("waiting for Docker; enforcing what is pinned");
    }
}

/// Sends `STOPPING=1`.
pub fn stopping() {
    notify(&[
        NotifyState::Stopping,
        NotifyState::Status("stopping; enforcement stays pinned"),
    ]);
}

fn hangup_counter() -> &'static watch::Sender<u64> {
    static HANGUPS: OnceLock<watch::Sender<u64>> = OnceLock::new();
    HANGUPS.get_or_init(|| watch::Sender::new(0))
}

/// A receiver that changes at every SIGHUP from now on.
pub fn hangups() -> watch::Receiver<u64> {
    hangup_counter().subscribe()
}

/// Installs the SIGHUP handler (call it first thing inside the runtime:
/// until then SIGHUP would end the process) and counts each SIGHUP.
///
/// # Errors
/// The handler cannot be installed.
pub fn install_hangup_handler() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            info!("SIGHUP: resyncing with Docker and reopening the flow log");
            hangup_counter().send_modify(|n| *n += 1);
        }
    });
    Ok(())
}
