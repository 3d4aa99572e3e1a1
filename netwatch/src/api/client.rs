//! The CLI's side of the API: one HTTP/1.1 connection per request over the
//! agent's unix socket, JSON answers decoded into the types the server
//! sends, and live streams read line by line.

use std::{io, path::PathBuf, pin::Pin};

use futures_util::Stream;
use http_body_util::{BodyExt as _, Empty};
use hyper::{
    Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header::HOST,
};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;

use super::{
    query::filter_query,
    types::{ApiStatus, DropGroup, ErrorBody, LAYOUT_HEADER, Layout, StreamItem},
};
use crate::flows::{FlowEntry, FlowFilter, dns::DnsEntry};

/// Where `netwatch agent` serves by default (`<run dir>/api.sock`).
pub const DEFAULT_SOCKET: &str = "/run/netwatch/api.sock";

/// A stream line longer than this is refused rather than buffered forever.
const MAX_LINE: usize = 1 << 20;

/// Why a request to the agent failed; each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "no netwatch agent answers at {socket} ({why}): start one with `sudo netwatch agent`, or point --socket at its socket"
    )]
    NoAgent { socket: PathBuf, why: &'static str },
    #[error(
        "permission denied on {0}: the agent's API is root-only; use sudo, or start the agent with --api-group GROUP and join that group"
    )]
    PermissionDenied(PathBuf),
    #[error("cannot connect to the agent at {socket}")]
    Connect {
        socket: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the agent at {socket} broke off the answer")]
    Http {
        socket: PathBuf,
        #[source]
        source: hyper::Error,
    },
    #[error("the agent refused the request: {0}")]
    Refused(String),
    #[error(
        "the agent's answer is not what this netwatch expects ({0}); are the agent and this command the same version?"
    )]
    Decode(String),
    #[error("cannot write the agent's answer")]
    Output(#[source] io::Error),
}

/// Live events, as [`ApiClient::observe`] returns them; the stream ends
/// when the agent ends it (it stopped).
pub type EventStream = Pin<Box<dyn Stream<Item = Result<StreamItem, ClientError>> + Send>>;

/// Live DNS entries, as [`ApiClient::dns_live`] returns them.
pub type DnsStream = Pin<Box<dyn Stream<Item = Result<DnsEntry, ClientError>> + Send>>;

/// What [`ApiClient::flows_laid_out`] got.
#[derive(Debug)]
pub enum FlowsAnswer {
    /// The flows in the layout asked for, to print as they are, as they
    /// come ([`LaidOut::copy_to`]).
    LaidOut(LaidOut),
    /// The flows, from an agent that does not lay them out.
    Entries(Vec<FlowEntry>),
}

/// An answer the agent laid out, still coming.
#[derive(Debug)]
pub struct LaidOut {
    body: Incoming,
    socket: PathBuf,
}

impl LaidOut {
    /// Writes the answer to `out` piece by piece as it comes, and flushes
    /// it: at 100,000 flows (~80 MiB) the CLI gathered the whole answer
    /// into one buffer before it printed a byte. Returns false when `out`
    /// is a pipe whose reader went away (`| head`): not an error.
    ///
    /// # Errors
    /// The agent broke off, or `out` refused a write.
    pub async fn copy_to(mut self, out: &mut impl io::Write) -> Result<bool, ClientError> {
        let written = |result: io::Result<()>| match result {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(false),
            Err(e) => Err(ClientError::Output(e)),
        };
        while let Some(frame) = self.body.frame().await {
            let frame = frame.map_err(|source| ClientError::Http {
                socket: self.socket.clone(),
                source,
            })?;
            if let Some(data) = frame.data_ref()
                && !written(out.write_all(data))?
            {
                return Ok(false);
            }
        }
        written(out.flush())
    }
}

/// A client of one agent's API.
#[derive(Clone, Debug)]
pub struct ApiClient {
    socket: PathBuf,
}

impl ApiClient {
    pub fn new(socket: impl Into<PathBuf>) -> ApiClient {
        ApiClient {
            socket: socket.into(),
        }
    }

    pub fn socket(&self) -> &std::path::Path {
        &self.socket
    }

    fn http_error(&self, source: hyper::Error) -> ClientError {
        ClientError::Http {
            socket: self.socket.clone(),
            source,
        }
    }

    fn connect_error(&self, source: io::Error) -> ClientError {
        let socket = self.socket.clone();
        match source.kind() {
            io::ErrorKind::NotFound => ClientError::NoAgent {
                socket,
                why: "no such socket",
            },
            io::ErrorKind::ConnectionRefused => ClientError::NoAgent {
                socket,
                why: "nothing listens there; a socket left by a stopped agent?",
            },
            io::ErrorKind::PermissionDenied => ClientError::PermissionDenied(socket),
            _ => ClientError::Connect { socket, source },
        }
    }

    /// `GET path_and_query`; the response when it is a success, else the
    /// agent's error message.
    async fn get(&self, path_and_query: &str) -> Result<Response<Incoming>, ClientError> {
        self.get_laid_out(path_and_query, None).await
    }

    /// [`ApiClient::get`], asking for `layout` ([`LAYOUT_HEADER`]).
    async fn get_laid_out(
        &self,
        path_and_query: &str,
        layout: Option<Layout>,
    ) -> Result<Response<Incoming>, ClientError> {
        let stream = UnixStream::connect(&self.socket)
            .await
            .map_err(|e| self.connect_error(e))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.http_error(e))?;
        // Drives the connection until the answer is read (errors show up
        // in the request or the body).
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let mut request = Request::get(path_and_query).header(HOST, "localhost");
        if let Some(layout) = layout {
            request = request.header(LAYOUT_HEADER, layout.name());
        }
        let request = request
            .body(Empty::<Bytes>::new())
            .map_err(|e| ClientError::Decode(format!("cannot build a request: {e}")))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| self.http_error(e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = self.body(response).await?;
        Err(ClientError::Refused(
            serde_json::from_slice::<ErrorBody>(&body)
                .map(|b| b.error)
                .unwrap_or_else(|_| error_text(status, &body)),
        ))
    }

    async fn body(&self, response: Response<Incoming>) -> Result<Bytes, ClientError> {
        Ok(response
            .into_body()
            .collect()
            .await
            .map_err(|e| self.http_error(e))?
            .to_bytes())
    }

    async fn get_json<T: DeserializeOwned>(&self, path_and_query: &str) -> Result<T, ClientError> {
        let body = self.body(self.get(path_and_query).await?).await?;
        serde_json::from_slice(&body).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// `GET /v1/flows`.
    ///
    /// # Errors
    /// No agent, or the agent refused or broke off.
    pub async fn flows(&self, filter: &FlowFilter) -> Result<Vec<FlowEntry>, ClientError> {
        self.get_json(&with_query("/v1/flows", filter)).await
    }

    /// `GET /v1/flows`, laid out by the agent as `layout`: what `flows -o
    /// json|jsonl` prints, as it comes. An agent that predates layouts
    /// answers compact JSON, which comes back parsed.
    ///
    /// # Errors
    /// As [`ApiClient::flows`].
    pub async fn flows_laid_out(
        &self,
        filter: &FlowFilter,
        layout: Layout,
    ) -> Result<FlowsAnswer, ClientError> {
        let response = self
            .get_laid_out(&with_query("/v1/flows", filter), Some(layout))
            .await?;
        let laid_out = response
            .headers()
            .get(LAYOUT_HEADER)
            .and_then(|v| v.to_str().ok())
            == Some(layout.name());
        if laid_out {
            return Ok(FlowsAnswer::LaidOut(LaidOut {
                body: response.into_body(),
                socket: self.socket.clone(),
            }));
        }
        let body = self.body(response).await?;
        serde_json::from_slice(&body)
            .map(FlowsAnswer::Entries)
            .map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// `GET /v1/drops`.
    ///
    /// # Errors
    /// As [`ApiClient::flows`].
    pub async fn drops(&self, filter: &FlowFilter) -> Result<Vec<DropGroup>, ClientError> {
        self.get_json(&with_query("/v1/drops", filter)).await
    }

    /// `GET /v1/dns`: the DNS queries kept, oldest first.
    ///
    /// # Errors
    /// As [`ApiClient::flows`].
    pub async fn dns(&self, filter: &FlowFilter) -> Result<Vec<DnsEntry>, ClientError> {
        self.get_json(&with_query("/v1/dns", filter)).await
    }

    /// `GET /v1/dns/live`: DNS queries and answers as they come.
    ///
    /// # Errors
    /// As [`ApiClient::observe`].
    pub async fn dns_live(&self, filter: &FlowFilter) -> Result<DnsStream, ClientError> {
        let lines = self.lines(&with_query("/v1/dns/live", filter)).await?;
        Ok(Box::pin(futures_util::stream::unfold(
            lines,
            |(mut lines, client)| async move {
                let line = lines.next_line(&client).await?;
                let entry = line.and_then(|line| {
                    serde_json::from_str(&line).map_err(|e| ClientError::Decode(e.to_string()))
                });
                Some((entry, (lines, client)))
            },
        )))
    }

    async fn lines(&self, path_and_query: &str) -> Result<(LineReader, ApiClient), ClientError> {
        let body = self.get(path_and_query).await?.into_body();
        let lines = LineReader {
            body,
            buffer: Vec::new(),
            done: false,
        };
        Ok((lines, self.clone()))
    }

    /// `GET /v1/status`.
    ///
    /// # Errors
    /// As [`ApiClient::flows`].
    pub async fn status(&self) -> Result<ApiStatus, ClientError> {
        self.get_json("/v1/status").await
    }

    /// `GET /v1/observe`: the live stream.
    ///
    /// # Errors
    /// As [`ApiClient::flows`], for the start of the stream; later errors
    /// come as items.
    pub async fn observe(&self, filter: &FlowFilter) -> Result<EventStream, ClientError> {
        let lines = self.lines(&with_query("/v1/observe", filter)).await?;
        Ok(Box::pin(futures_util::stream::unfold(
            lines,
            |(mut lines, client)| async move {
                let line = lines.next_line(&client).await?;
                let item = line.and_then(|line| {
                    StreamItem::from_line(&line).map_err(|e| ClientError::Decode(e.to_string()))
                });
                Some((item, (lines, client)))
            },
        )))
    }
}

fn with_query(path: &str, filter: &FlowFilter) -> String {
    let query = filter_query(filter);
    if query.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{query}")
    }
}

/// An error answer that is not the API's JSON (another server on the
/// socket?): its status and the start of its text.
fn error_text(status: StatusCode, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let first = text.lines().next().unwrap_or("").trim();
    let first: String = first.chars().take(200).collect();
    if first.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {first}")
    }
}

struct LineReader {
    body: Incoming,
    buffer: Vec<u8>,
    done: bool,
}

impl LineReader {
    /// The next non-empty line, trimmed.
    async fn next_line(&mut self, client: &ApiClient) -> Option<Result<String, ClientError>> {
        loop {
            if let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                let line = String::from_utf8_lossy(&line);
                let line = line.trim();
                if line.is_empty() {
                    continue;
                }
                return Some(Ok(line.to_string()));
            }
            if self.done {
                return None;
            }
            if self.buffer.len() > MAX_LINE {
                self.done = true;
                return Some(Err(ClientError::Decode(format!(
                    "a stream line longer than {MAX_LINE} bytes"
                ))));
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buffer.extend_from_slice(&data);
                    }
                }
                Some(Err(e)) => {
                    self.done = true;
                    return Some(Err(client.http_error(e)));
                }
                None => self.done = true,
            }
        }
    }
}
