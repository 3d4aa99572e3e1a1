//! The agent's API server: HTTP/1.1 over the unix socket, one tokio task
//! per connection, GET only.
//!
//! Robustness: every request gets an answer (a JSON error for a bad query,
//! an unknown path or another method); a client that is not speaking HTTP
//! gets hyper's own 400 and its connection closed; a header that does not
//! arrive within [`HEADER_TIMEOUT`] closes the connection; at most
//! [`MAX_CONNECTIONS`] are served at once. All of it is counted
//! ([`ApiCounters`]) and none of it can stop the agent: a connection task
//! that panicked ends alone and is counted too.
//!
//! The agent serves it on a thread and runtime of its own
//! ([`crate::agent`]'s serving thread, with `/metrics` and the flow log), so
//! no Docker call or attach delays an answer. Queries that sweep the
//! kernel's flow table run on tokio's blocking pool, so a large table does
//! not hold up the other connections either.

use std::{
    collections::VecDeque,
    convert::Infallible,
    io,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use http_body_util::{BodyExt as _, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Frame, Incoming},
    header::{CONTENT_TYPE, HeaderValue},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use jiff::Timestamp;
use log::{debug, error, warn};
use serde::Serialize;
use tokio::{
    net::UnixStream,
    sync::{broadcast, oneshot, watch},
    task::JoinHandle,
};

use super::{
    query::{QueryError, parse_filter},
    socket::{BoundSocket, SocketError, SocketFile, bind},
    types::{ApiCounters, ApiStatus, ErrorBody, LAYOUT_HEADER, Layout, StreamItem, drop_groups},
};
use crate::{
    accept::{AcceptEvents, accept_connections},
    flows::{
        EventFeed, FlowFilter, ObservedEvent, Pipeline,
        filter::{AmbiguousContainer, history_events},
    },
};

/// Connections served at once; more are closed at once and counted.
pub const MAX_CONNECTIONS: usize = 128;

/// A request's header must arrive within this.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The endpoints, for the 404 message.
const ENDPOINTS: &str = "/v1/flows, /v1/drops, /v1/observe, /v1/dns, /v1/dns/live or /v1/status";

type Body = UnsyncBoxBody<Bytes, Infallible>;

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    bad_requests: AtomicU64,
    malformed_requests: AtomicU64,
    connection_errors: AtomicU64,
    refused_connections: AtomicU64,
    panics: AtomicU64,
    observers: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> ApiCounters {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ApiCounters {
            requests: get(&self.requests),
            bad_requests: get(&self.bad_requests),
            malformed_requests: get(&self.malformed_requests),
            connection_errors: get(&self.connection_errors),
            refused_connections: get(&self.refused_connections),
            panics: get(&self.panics),
            observers: get(&self.observers),
        }
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

struct State {
    pipeline: Arc<Pipeline>,
    /// Turns true when the server stops: streams end, connections close
    /// after their answer.
    stopping: watch::Receiver<bool>,
    counters: Counters,
    started_at: Timestamp,
    socket: String,
    flow_limit: usize,
}

/// The socket, bound and given its mode, not yet served. Binding first lets
/// the agent refuse a bad `--api-group` or a taken socket before it loads
/// anything.
#[derive(Debug)]
pub struct ApiListener {
    bound: BoundSocket,
}

impl ApiListener {
    /// Binds the socket at `path`: root-only (0600), or 0660 for `group`.
    ///
    /// # Errors
    /// See [`bind`].
    pub fn bind(path: &Path, group: Option<&str>) -> Result<ApiListener, SocketError> {
        bind(path, group).map(|bound| ApiListener { bound })
    }

    /// Where and for whom: `/run/netwatch/api.sock (mode 0600, root only)`.
    pub fn describe(&self) -> String {
        let who = match &self.bound.group {
            Some(group) => format!("root and group {group}"),
            None => "root only".to_string(),
        };
        format!(
            "{} (mode {:04o}, {who})",
            self.bound.file.path().display(),
            self.bound.mode
        )
    }

    /// Starts serving on the current tokio runtime.
    ///
    /// # Errors
    /// The socket cannot be registered with the runtime.
    pub fn serve(self, pipeline: Arc<Pipeline>, flow_limit: usize) -> io::Result<ApiServer> {
        let BoundSocket { listener, file, .. } = self.bound;
        listener.set_nonblocking(true)?;
        let listener = tokio::net::UnixListener::from_std(listener)?;
        let (stop_streams, stopping) = watch::channel(false);
        let state = Arc::new(State {
            pipeline,
            stopping,
            counters: Counters::default(),
            started_at: Timestamp::now(),
            socket: file.path().display().to_string(),
            flow_limit,
        });
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            // The file goes when the server stops (and also when the task is
            // dropped with the runtime).
            accept_loop(listener, file, state, stopped, stop_streams).await;
        });
        Ok(ApiServer {
            stop: Some(stop),
            task,
        })
    }
}

/// A running server; [`ApiServer::stop`] ends it, closes every connection
/// (live `observe` streams included) and removes the socket file.
pub struct ApiServer {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl ApiServer {
    /// Stops serving and waits until the socket file is gone.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

/// How long connections get to finish when the server stops (a live
/// stream ends at once, with a proper end of body).
const STOP_GRACE: Duration = Duration::from_secs(2);

async fn accept_loop(
    listener: tokio::net::UnixListener,
    file: SocketFile,
    state: Arc<State>,
    stopped: oneshot::Receiver<()>,
    stop_streams: watch::Sender<bool>,
) {
    let ended = accept_connections(
        "API",
        &listener,
        MAX_CONNECTIONS,
        async {
            let _ = stopped.await;
        },
        &state.counters,
        |stream| serve_connection(stream, state.clone()),
    )
    .await;
    if let Err(e) = ended.result {
        error!(
            "API: stopped serving on {}: {e}; restart the agent to serve it again",
            state.socket
        );
    }
    let mut connections = ended.connections;
    drop(listener);
    drop(file);
    let _ = stop_streams.send(true);
    let drained = tokio::time::timeout(STOP_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        debug!(
            "API: closing {} connections that did not finish",
            connections.len()
        );
    }
    connections.shutdown().await;
}

impl AcceptEvents for Counters {
    fn refused(&self) {
        bump(&self.refused_connections);
    }
    fn panicked(&self) {
        bump(&self.panics);
    }
}

async fn serve_connection(stream: UnixStream, state: Arc<State>) {
    let service_state = state.clone();
    let service = service_fn(move |request: Request<Incoming>| {
        let state = service_state.clone();
        async move {
            let response = handle(&request, &state).await;
            bump(&state.counters.requests);
            if response.status().is_client_error() {
                bump(&state.counters.bad_requests);
            }
            Ok::<_, Infallible>(response)
        }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service);
    let mut connection = std::pin::pin!(connection);
    let mut stopping = state.stopping.clone();
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = stopped(&mut stopping) => {
            // Finish the answer in progress (a stream ends by itself), then
            // close.
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        match classify(&e) {
            Ending::Malformed => bump(&state.counters.malformed_requests),
            Ending::ClientGone => {}
            Ending::Failed => bump(&state.counters.connection_errors),
        }
        debug!("API connection: {e}");
    }
}

/// How a connection that ended with an error ended.
#[derive(Debug, PartialEq, Eq)]
enum Ending {
    /// Not HTTP, too large, or too slow.
    Malformed,
    /// The client closed its end, mid-request or mid-answer (the normal
    /// end of an `observe` stream).
    ClientGone,
    Failed,
}

fn classify(e: &hyper::Error) -> Ending {
    if e.is_parse() || e.is_parse_too_large() || e.is_timeout() {
        return Ending::Malformed;
    }
    let io_gone = std::error::Error::source(e)
        .and_then(|source| source.downcast_ref::<io::Error>())
        .is_some_and(|io| {
            matches!(
                io.kind(),
                io::ErrorKind::BrokenPipe
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::UnexpectedEof
            )
        });
    if io_gone
        || e.is_incomplete_message()
        || e.is_body_write_aborted()
        || e.is_canceled()
        || e.is_closed()
    {
        Ending::ClientGone
    } else {
        Ending::Failed
    }
}

fn full(bytes: Vec<u8>) -> Body {
    Full::new(Bytes::from(bytes)).boxed_unsync()
}

/// `value` as JSON, with a newline (so `curl` leaves the prompt alone).
fn json_bytes<T: Serialize>(value: &T) -> Vec<u8> {
    // Plain data: serialising cannot fail.
    let mut body = serde_json::to_vec(value).unwrap_or_default();
    body.push(b'\n');
    body
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    json_response(status, json_bytes(value))
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response<Body> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn error(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    json(
        status,
        &ErrorBody {
            error: message.into(),
        },
    )
}

fn bad_query(e: &QueryError) -> Response<Body> {
    error(StatusCode::BAD_REQUEST, e.to_string())
}

async fn handle(request: &Request<Incoming>, state: &Arc<State>) -> Response<Body> {
    let path = request.uri().path();
    let path = if path.len() > 1 {
        path.trim_end_matches('/')
    } else {
        path
    };
    if !matches!(
        path,
        "/v1/flows" | "/v1/drops" | "/v1/observe" | "/v1/dns" | "/v1/dns/live" | "/v1/status"
    ) {
        return error(
            StatusCode::NOT_FOUND,
            format!("no endpoint {path}: use {ENDPOINTS}"),
        );
    }
    if request.method() != Method::GET {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!(
                "{} is not served: the API answers GET (e.g. curl --unix-socket {} http://localhost{path})",
                request.method(),
                state.socket
            ),
        );
    }
    if path == "/v1/status" {
        return json(StatusCode::OK, &status(state));
    }
    let filter = match parse_filter(request.uri().query().unwrap_or(""), Timestamp::now()) {
        Ok(filter) => filter,
        Err(e) => return bad_query(&e),
    };
    match path {
        "/v1/flows" => {
            let layout = request
                .headers()
                .get(LAYOUT_HEADER)
                .and_then(|v| v.to_str().ok())
                .and_then(Layout::from_name)
                .unwrap_or(Layout::Compact);
            let mut response = flows_streamed(state, filter, layout).await;
            if response.status().is_success() {
                response
                    .headers_mut()
                    .insert(LAYOUT_HEADER, HeaderValue::from_static(layout.name()));
                if layout == Layout::Lines {
                    response.headers_mut().insert(
                        CONTENT_TYPE,
                        HeaderValue::from_static("application/x-ndjson"),
                    );
                }
            }
            response
        }
        "/v1/drops" => {
            if filter.only_forwarded() {
                return error(
                    StatusCode::BAD_REQUEST,
                    "drops lists dropped and audited flows only: leave out verdict=forwarded \
                     (or ask /v1/flows)",
                );
            }
            query(state, move |pipeline| {
                filter
                    .finish(pipeline.flows(&filter))
                    .map(|entries| json_bytes(&drop_groups(&entries)))
            })
            .await
        }
        "/v1/dns" => {
            query(state, move |pipeline| {
                Ok(json_bytes(&pipeline.dns_entries(&filter)))
            })
            .await
        }
        "/v1/dns/live" => dns_live(state, filter),
        _ => observe(state, filter).await,
    }
}

fn status(state: &State) -> ApiStatus {
    ApiStatus {
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        started_at: state.started_at,
        socket: state.socket.clone(),
        tracked_flows: state.pipeline.tracked_flows(),
        flow_limit: state.flow_limit,
        counters: state.pipeline.counters(),
        api: state.counters.snapshot(),
        dns: state.pipeline.dns_counters(),
        drains: state.pipeline.drain_clock().gaps(),
    }
}

/// Runs `work` on the pipeline on tokio's blocking pool: a query sweeps
/// the kernel table and may serialise a hundred thousand flows, which must
/// not hold up the other connections on the runtime thread. `None` if it
/// panicked (counted).
async fn blocking<T: Send + 'static>(
    state: &Arc<State>,
    work: impl FnOnce(&Pipeline) -> T + Send + 'static,
) -> Option<T> {
    let pipeline = state.pipeline.clone();
    match tokio::task::spawn_blocking(move || work(&pipeline)).await {
        Ok(value) => Some(value),
        Err(e) => {
            bump(&state.counters.panics);
            warn!("API: a flow query failed: {e}");
            None
        }
    }
}

/// A JSON answer made by `work` on the blocking pool; a filter that turns
/// out ambiguous (a container id prefix) is the client's error.
async fn query(
    state: &Arc<State>,
    work: impl FnOnce(&Pipeline) -> Result<Vec<u8>, AmbiguousContainer> + Send + 'static,
) -> Response<Body> {
    match blocking(state, work).await {
        Some(Ok(body)) => json_response(StatusCode::OK, body),
        Some(Err(e)) => error(StatusCode::BAD_REQUEST, e.to_string()),
        None => query_failed(),
    }
}

/// `/v1/flows`, sent while it is written: the query writes the flows in
/// pieces ([`Layout::stream_flows`]) on a blocking thread and hands each to
/// the connection at once, so the client reads (and the CLI prints) the
/// first flows while the agent writes the rest. At 100,000 flows (~80 MiB
/// pretty) the whole answer was written before its first byte went out.
///
/// The pieces wait in an unbounded channel: the query runs as fast as when
/// it wrote one buffer (the aggregate stays locked no longer, whatever the
/// client does), and holds at most that buffer's memory for a slow client.
/// A query that panics midway ends the answer early (counted in `panics`).
async fn flows_streamed(state: &Arc<State>, filter: FlowFilter, layout: Layout) -> Response<Body> {
    let (pieces, received) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    let (started, is_started) = oneshot::channel::<Result<(), AmbiguousContainer>>();
    let pipeline = state.pipeline.clone();
    let task = tokio::task::spawn_blocking(move || {
        let mut started = Some(started);
        let shown = pipeline.show_flows(&filter, |flows| {
            if let Some(started) = started.take() {
                let _ = started.send(Ok(()));
            }
            // A client gone meanwhile is not an error.
            layout.stream_flows(&flows, |piece| {
                let _ = pieces.send(piece);
            });
        });
        if let (Err(e), Some(started)) = (shown, started.take()) {
            let _ = started.send(Err(e));
        }
    });
    let watched = state.clone();
    tokio::spawn(async move {
        if let Err(e) = task.await {
            bump(&watched.counters.panics);
            warn!("API: a flow query failed: {e}");
        }
    });
    match is_started.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return error(StatusCode::BAD_REQUEST, e.to_string()),
        Err(_) => return query_failed(),
    }
    let body = futures_util::stream::unfold(received, |mut received| async move {
        let piece = received.recv().await?;
        Some((
            Ok::<_, Infallible>(Frame::data(Bytes::from(piece))),
            received,
        ))
    });
    let mut response = Response::new(StreamBody::new(body).boxed_unsync());
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn query_failed() -> Response<Body> {
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "the flow query failed; see the agent's log",
    )
}

/// Resolves once the server stops.
async fn stopped(stopping: &mut watch::Receiver<bool>) {
    // An error means the sender is gone: the server stopped too. (The
    // guard `wait_for` returns is not `Send`: dropped here.)
    let _ = stopping.wait_for(|stop| *stop).await;
}

/// Counts a live stream for as long as it exists.
struct ObserverGauge(Arc<State>);

impl ObserverGauge {
    fn new(state: &Arc<State>) -> ObserverGauge {
        bump(&state.counters.observers);
        ObserverGauge(state.clone())
    }
}

impl Drop for ObserverGauge {
    fn drop(&mut self) {
        self.0.counters.observers.fetch_sub(1, Ordering::Relaxed);
    }
}

struct Observer {
    receiver: EventFeed,
    filter: FlowFilter,
    /// With `since` or `last`: flows seen before the stream began, oldest
    /// first.
    history: VecDeque<ObservedEvent>,
    /// Whether live records follow the history (not with `until`).
    live: bool,
    stopping: watch::Receiver<bool>,
    _gauge: ObserverGauge,
}

impl Observer {
    async fn next(&mut self) -> Option<StreamItem> {
        if let Some(event) = self.history.pop_front() {
            return Some(StreamItem::Event(Box::new(event)));
        }
        if !self.live {
            return None;
        }
        loop {
            let received = tokio::select! {
                received = self.receiver.recv() => received,
                () = stopped(&mut self.stopping) => return None,
            };
            match received {
                Ok(event) if self.filter.matches(&event.flow) => {
                    return Some(StreamItem::Event(Box::new(Arc::unwrap_or_clone(event))));
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(count)) => {
                    return Some(StreamItem::Lost(count));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

/// A stream of JSON lines, one frame (and so one chunk, written at once)
/// per line, until the client goes away: hyper then drops the body, and
/// with it the subscription.
async fn observe(state: &Arc<State>, filter: FlowFilter) -> Response<Body> {
    // Subscribe before reading the history: nothing falls in between
    // (a flow may then show twice, never not at all).
    let receiver = state.pipeline.subscribe();
    let history = if filter.wants_history() {
        let history_filter = filter.clone();
        let Some(entries) = blocking(state, move |pipeline| {
            history_filter.finish(pipeline.flows(&history_filter))
        })
        .await
        else {
            return query_failed();
        };
        match entries {
            Ok(entries) => history_events(entries).into(),
            Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
        }
    } else {
        VecDeque::new()
    };
    let observer = Observer {
        receiver,
        live: filter.wants_live(),
        filter,
        history,
        stopping: state.stopping.clone(),
        _gauge: ObserverGauge::new(state),
    };
    let lines = futures_util::stream::unfold(observer, |mut observer| async move {
        let item = observer.next().await?;
        let mut line = item.to_line().into_bytes();
        line.push(b'\n');
        Some((
            Ok::<_, Infallible>(Frame::data(Bytes::from(line))),
            observer,
        ))
    });
    let mut response = Response::new(StreamBody::new(lines).boxed_unsync());
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    response
}

/// DNS queries and answers as they come, one JSON line each (an answer
/// comes as its query's entry again, completed), until the client goes
/// away. A client too slow for the agent misses entries; the stream goes
/// on with the next.
fn dns_live(state: &Arc<State>, filter: FlowFilter) -> Response<Body> {
    let receiver = state.pipeline.subscribe_dns();
    let stream = (
        receiver,
        filter,
        state.stopping.clone(),
        ObserverGauge::new(state),
    );
    let lines = futures_util::stream::unfold(stream, |mut stream| async move {
        let (receiver, filter, stopping, _) = &mut stream;
        loop {
            let received = tokio::select! {
                received = receiver.recv() => received,
                () = stopped(stopping) => return None,
            };
            match received {
                Ok(entry) if filter.matches_dns(&entry) => {
                    let mut line = serde_json::to_vec(&*entry).unwrap_or_default();
                    line.push(b'\n');
                    return Some((Ok::<_, Infallible>(Frame::data(Bytes::from(line))), stream));
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    let mut response = Response::new(StreamBody::new(lines).boxed_unsync());
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    response
}
