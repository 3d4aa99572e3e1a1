//! Shutdown on SIGTERM or SIGINT.

use tokio::signal::unix::{SignalKind, signal};

/// Installs the SIGTERM and SIGINT handlers now and returns a future that
/// resolves at the first of them. Call it first thing inside the runtime:
/// until the handlers are installed a SIGTERM kills the process by its
/// default action (found by a test that stopped an agent just after its
/// API came up, while it was still connecting to Docker).
///
/// # Errors
/// The handlers cannot be installed.
pub fn install() -> std::io::Result<impl Future<Output = ()>> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

/// Resolves at the first SIGTERM or SIGINT after the first poll. If the
/// handlers cannot be installed it never resolves (the process then stops
/// by the default action of those signals).
pub async fn terminated() {
    match install() {
        Ok(signalled) => signalled.await,
        Err(_) => std::future::pending().await,
    }
}
