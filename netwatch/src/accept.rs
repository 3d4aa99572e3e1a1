//! The accept loop both of the agent's HTTP servers run: the API on its
//! unix socket and `/metrics` on TCP. One loop, so that they treat a full
//! house, a failing `accept` and a stop alike:
//!
//! - at most `max_connections` are served at once; a connection beyond
//!   that is closed on accept (and counted by the caller);
//! - an error that concerns one connection (reset or aborted before it was
//!   accepted, an interrupted call) is passed over;
//! - running out of file descriptors or memory is waited out, 100 ms at a
//!   time, with one warning until an accept succeeds again, instead of
//!   spinning;
//! - any other error makes the listener unusable: the loop ends and says
//!   so;
//! - a handler that panics closes its connection only, and is counted.
//!
//! What happens to the connections still open when the loop ends is the
//! caller's choice: it gets them back.

use std::{future::Future, io, time::Duration};

use log::{debug, warn};
use tokio::{
    net::{TcpListener, TcpStream, UnixListener, UnixStream},
    task::JoinSet,
};

/// A listening socket the loop can take connections from.
pub trait Listener: Send + Sync {
    type Stream: Send + 'static;

    fn accept_stream(&self) -> impl Future<Output = io::Result<Self::Stream>> + Send;
}

impl Listener for UnixListener {
    type Stream = UnixStream;

    async fn accept_stream(&self) -> io::Result<UnixStream> {
        self.accept().await.map(|(stream, _)| stream)
    }
}

impl Listener for TcpListener {
    type Stream = TcpStream;

    async fn accept_stream(&self) -> io::Result<TcpStream> {
        self.accept().await.map(|(stream, _)| stream)
    }
}

/// What the loop tells its server about: a connection closed for being
/// one too many, a handler that panicked.
pub trait AcceptEvents {
    fn refused(&self) {}
    fn panicked(&self) {}
}

/// A server that counts nothing.
impl AcceptEvents for () {}

/// How the loop ended, and the connections still open.
pub struct Ended {
    /// `Ok` when `stop` completed; the error that made the listener
    /// unusable otherwise.
    pub result: io::Result<()>,
    pub connections: JoinSet<()>,
}

/// Accepts connections on `listener` and runs `serve` on each, as a task,
/// until `stop` completes or the listener fails. `name` starts the loop's
/// log lines (`API`, `metrics`).
pub async fn accept_connections<L, S, F>(
    name: &'static str,
    listener: &L,
    max_connections: usize,
    stop: impl Future<Output = ()>,
    events: &impl AcceptEvents,
    mut serve: S,
) -> Ended
where
    L: Listener,
    S: FnMut(L::Stream) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let mut connections = JoinSet::new();
    let mut accept_failing = false;
    let mut stop = std::pin::pin!(stop);
    let result = loop {
        tokio::select! {
            () = &mut stop => break Ok(()),
            accepted = listener.accept_stream() => match accepted {
                Ok(stream) => {
                    accept_failing = false;
                    if connections.len() >= max_connections {
                        events.refused();
                        debug!("{name}: {max_connections} connections open, closing a new one");
                        continue;
                    }
                    connections.spawn(serve(stream));
                }
                Err(e) if per_connection(&e) => {}
                Err(e) if transient(&e) => {
                    if !accept_failing {
                        warn!("{name}: cannot accept connections: {e}; retrying");
                        accept_failing = true;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => break Err(e),
            },
            Some(done) = connections.join_next() => {
                if let Err(e) = done && e.is_panic() {
                    events.panicked();
                    warn!("{name}: a request handler panicked; its connection was closed");
                }
            }
        }
    };
    Ended {
        result,
        connections,
    }
}

/// An error about one connection, not the listener.
fn per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
    )
}

/// Out of file descriptors or memory: may pass.
fn transient(e: &io::Error) -> bool {
    use nix::errno::Errno;
    e.kind() == io::ErrorKind::OutOfMemory
        || e.raw_os_error().is_some_and(|code| {
            matches!(
                Errno::from_raw(code),
                Errno::EMFILE | Errno::ENFILE | Errno::ENOBUFS | Errno::ENOMEM
            )
        })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::sync::Notify;

    use super::*;

    /// Counts events and wakes whoever waits for one.
    #[derive(Default)]
    struct Counted {
        refused: AtomicUsize,
        panicked: AtomicUsize,
        changed: Notify,
    }

    impl AcceptEvents for Counted {
        fn refused(&self) {
            self.refused.fetch_add(1, Ordering::Relaxed);
            self.changed.notify_waiters();
        }
        fn panicked(&self) {
            self.panicked.fetch_add(1, Ordering::Relaxed);
            self.changed.notify_waiters();
        }
    }

    impl Counted {
        async fn until(&self, done: impl Fn(&Counted) -> bool) {
            loop {
                let changed = self.changed.notified();
                if done(self) {
                    return;
                }
                changed.await;
            }
        }
    }

    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn one_too_many_is_closed_and_counted_and_stop_hands_back_the_open_ones() {
        block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let events = Counted::default();
            let _first = TcpStream::connect(addr).await.unwrap();
            let _second = TcpStream::connect(addr).await.unwrap();
            let ended = accept_connections(
                "test",
                &listener,
                1,
                events.until(|c| c.refused.load(Ordering::Relaxed) == 1),
                &events,
                |stream: TcpStream| async move {
                    // Held open until the loop's caller lets it go.
                    let _stream = stream;
                    std::future::pending::<()>().await;
                },
            )
            .await;
            assert!(ended.result.is_ok());
            assert_eq!(ended.connections.len(), 1, "the first, still open");
        });
    }

    #[test]
    fn a_panicking_handler_closes_its_connection_only_and_is_counted() {
        block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let events = Counted::default();
            let _client = TcpStream::connect(addr).await.unwrap();
            let ended = accept_connections(
                "test",
                &listener,
                4,
                events.until(|c| c.panicked.load(Ordering::Relaxed) == 1),
                &events,
                |_stream: TcpStream| async move { panic!("a handler bug") },
            )
            .await;
            assert!(ended.result.is_ok(), "the loop went on");
            assert_eq!(events.refused.load(Ordering::Relaxed), 0);
            assert!(ended.connections.is_empty());
        });
    }

    #[test]
    fn errors_of_one_connection_and_exhaustion_are_not_the_listeners_end() {
        use nix::errno::Errno;
        assert!(per_connection(&io::Error::from(
            io::ErrorKind::ConnectionAborted
        )));
        assert!(transient(&io::Error::from_raw_os_error(
            Errno::EMFILE as i32
        )));
        let closed = io::Error::from_raw_os_error(Errno::EBADF as i32);
        assert!(!per_connection(&closed) && !transient(&closed));
    }
}
