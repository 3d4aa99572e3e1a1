//! What `flows`, `drops` and `observe` share: the filter flags, the output
//! formats, and where the flows come from.
//!
//! A [`FlowSource`] answers the three questions; [`AgentSource`] (the
//! running agent, through its API socket) is the one there is. A
//! standalone session (the command attaching observe-only programs for its
//! own lifetime) becomes a second implementation, chosen in
//! [`open_source`] when no agent answers.

use std::{
    io::{self, Write as _},
    path::PathBuf,
    pin::Pin,
    sync::Arc,
    time::Duration,
};

use anyhow::Result;
use futures_util::{Stream, StreamExt as _};
use jiff::Timestamp;
use netwatch_common::{protocol::Protocol, reason::Verdict};

use crate::{
    api::{
        ApiClient, DEFAULT_SOCKET, DropGroup, StreamItem, drop_groups,
        query::{self, parse_proto, parse_since},
    },
    flows::{
        FlowEntry, FlowFilter, FlowReason, Pipeline, RecordReader, pipeline::DEFAULT_FLOW_LIMIT,
    },
    standalone::Session,
};

/// Which containers: shared by the flow filters and `dns`.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct PlaceArgs {
    /// Only this container (its name, as `docker ps` shows it).
    #[arg(long, value_name = "NAME")]
    pub container: Option<String>,
    /// Only containers of this service (compose service, or swarm service).
    #[arg(long, value_name = "SERVICE")]
    pub service: Option<String>,
    /// Only this Docker network (its name).
    #[arg(long, value_name = "NAME")]
    pub network: Option<String>,
}

/// The filter flags, shared by `flows`, `drops` and `observe`.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct FilterArgs {
    #[command(flatten)]
    pub place: PlaceArgs,
    /// Only flows whose latest packet was forwarded, dropped, or audited
    /// (forwarded under audit mode, which enforcement would have dropped).
    #[arg(long, value_parser = verdict_arg())]
    pub verdict: Option<Verdict>,
    /// Only flows dropped for this reason: one of netwatch's (not-in-network,
    /// host-access, spoofed-source, …) or, for the kernel's own drops,
    /// `kernel:` and the kernel's reason name in lower case
    /// (kernel:netfilter_drop, kernel:no_socket, …).
    #[arg(long, value_name = "REASON", value_parser = reason_arg)]
    pub reason: Option<FlowReason>,
    /// Only this protocol: tcp, udp, icmp, icmpv6, or an IP protocol
    /// number.
    #[arg(long, value_name = "PROTO", value_parser = proto_arg)]
    pub proto: Option<Protocol>,
    /// Only flows with this port at either end.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub port: Option<u16>,
    /// Only flows seen in the last DURATION (30s, 5m, 1h30m), or since an
    /// RFC 3339 time (2025-11-27T22:10:00Z).
    #[arg(long, value_name = "DURATION|TIME", value_parser = since_arg)]
    pub since: Option<Timestamp>,
}

/// The verdicts by name, listed as possible values in `--help`.
fn verdict_arg() -> impl clap::builder::TypedValueParser<Value = Verdict> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(Verdict::ALL.map(Verdict::name))
        .try_map(|name| name.parse::<Verdict>())
}

fn proto_arg(text: &str) -> Result<Protocol, String> {
    parse_proto(text).map_err(|e| e.to_string())
}

fn reason_arg(text: &str) -> Result<FlowReason, String> {
    query::parse_reason(text).map_err(|e| e.to_string())
}

pub(crate) fn since_arg(text: &str) -> Result<Timestamp, String> {
    parse_since(text, Timestamp::now()).map_err(|e| e.to_string())
}

impl FilterArgs {
    pub fn filter(&self) -> FlowFilter {
        FlowFilter {
            container: self.place.container.clone(),
            service: self.place.service.clone(),
            network: self.place.network.clone(),
            verdict: self.verdict,
            reason: self.reason.clone(),
            proto: self.proto,
            port: self.port,
            since: self.since,
        }
    }
}

/// Which agent to ask, or whether to observe on our own.
#[derive(Clone, Debug, clap::Args)]
pub struct SourceArgs {
    /// The running agent's API socket (`netwatch agent --api-socket`);
    /// default /run/netwatch/api.sock. Given explicitly, an agent must
    /// answer there.
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Observe without the agent: attach observe-only programs to every
    /// container veth for the life of this command (nothing is pinned;
    /// they go when it exits or is killed). Chosen on its own when no
    /// agent answers at the default socket. Sees only traffic from now on.
    #[arg(long)]
    pub standalone: bool,
    /// Standalone, for commands that print once (`flows`, `drops`, `map`):
    /// how long to watch before printing.
    #[arg(long, value_name = "SECONDS", default_value_t = 5.0)]
    pub watch: f64,
}

/// How `flows`, `drops` and `observe` print.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FlowOutput {
    /// Aligned columns (`observe`: one line per event) for people.
    Table,
    /// One JSON document (`observe`: the same as jsonl).
    Json,
    /// One JSON object per line.
    Jsonl,
}

/// Live events from a source; ends when the source does.
pub type Events = Pin<Box<dyn Stream<Item = Result<StreamItem>> + Send>>;

/// Where flows come from.
pub(crate) trait FlowSource {
    /// The flows `filter` selects, busiest first.
    async fn flows(&self, filter: &FlowFilter) -> Result<Vec<FlowEntry>>;

    /// Dropped and audited flows grouped by container, network, reason and
    /// verdict.
    async fn drops(&self, filter: &FlowFilter) -> Result<Vec<DropGroup>> {
        Ok(drop_groups(&self.flows(filter).await?))
    }

    /// Records as they come, from now on (with `since`: the flows seen
    /// since then first).
    async fn observe(&self, filter: &FlowFilter) -> Result<Events>;
}

/// The running agent, through its API socket.
pub(crate) struct AgentSource(ApiClient);

impl FlowSource for AgentSource {
    async fn flows(&self, filter: &FlowFilter) -> Result<Vec<FlowEntry>> {
        Ok(self.0.flows(filter).await?)
    }

    async fn drops(&self, filter: &FlowFilter) -> Result<Vec<DropGroup>> {
        Ok(self.0.drops(filter).await?)
    }

    async fn observe(&self, filter: &FlowFilter) -> Result<Events> {
        let events = self.0.observe(filter).await?;
        Ok(Box::pin(
            events.map(|item| item.map_err(anyhow::Error::from)),
        ))
    }
}

/// A standalone observing session, read by a thread of its own.
pub(crate) struct StandaloneSource {
    pipeline: Arc<Pipeline>,
    // Dropped first: the reader stops before the session detaches its
    // programs and closes its maps.
    _reader: RecordReader,
    // Boxed: the datapath is large, and the source is an enum variant
    // beside a small one.
    _session: Box<Session>,
}

impl StandaloneSource {
    async fn start(watch: Duration) -> Result<StandaloneSource> {
        let session = Session::start(&[], DEFAULT_FLOW_LIMIT).await?;
        eprintln!(
            "netwatch: observing {} veths on our own until this command exits (no agent; nothing pinned)",
            session.attached().len()
        );
        let pipeline = session.pipeline();
        let reader = session.start_reader()?;
        tokio::time::sleep(watch).await;
        Ok(StandaloneSource {
            pipeline,
            _reader: reader,
            _session: Box::new(session),
        })
    }
}

impl FlowSource for StandaloneSource {
    async fn flows(&self, filter: &FlowFilter) -> Result<Vec<FlowEntry>> {
        Ok(self.pipeline.flows(filter))
    }

    async fn observe(&self, filter: &FlowFilter) -> Result<Events> {
        let filter = filter.clone();
        let events = tokio_stream_from(self.pipeline.subscribe());
        Ok(Box::pin(events.filter_map(move |item| {
            let keep = match &item {
                Ok(StreamItem::Event(e)) => filter.matches(&e.flow),
                _ => true,
            };
            std::future::ready(keep.then_some(item))
        })))
    }
}

/// A broadcast receiver as a stream of items, lag included.
fn tokio_stream_from(
    receiver: tokio::sync::broadcast::Receiver<crate::flows::ObservedEvent>,
) -> impl Stream<Item = Result<StreamItem>> + Send {
    futures_util::stream::unfold(receiver, |mut receiver| async move {
        use tokio::sync::broadcast::error::RecvError;
        match receiver.recv().await {
            Ok(event) => Some((Ok(StreamItem::Event(Box::new(event))), receiver)),
            Err(RecvError::Lagged(n)) => Some((Ok(StreamItem::Lost(n)), receiver)),
            Err(RecvError::Closed) => None,
        }
    })
}

/// Where this command's flows come from.
pub(crate) enum Source {
    Agent(AgentSource),
    Standalone(StandaloneSource),
}

impl FlowSource for Source {
    async fn flows(&self, filter: &FlowFilter) -> Result<Vec<FlowEntry>> {
        match self {
            Source::Agent(s) => s.flows(filter).await,
            Source::Standalone(s) => s.flows(filter).await,
        }
    }

    async fn drops(&self, filter: &FlowFilter) -> Result<Vec<DropGroup>> {
        match self {
            Source::Agent(s) => s.drops(filter).await,
            Source::Standalone(s) => s.drops(filter).await,
        }
    }

    async fn observe(&self, filter: &FlowFilter) -> Result<Events> {
        match self {
            Source::Agent(s) => s.observe(filter).await,
            Source::Standalone(s) => s.observe(filter).await,
        }
    }
}

/// The source for this command: the agent at `args.socket`, or with
/// `--standalone` or when no agent answers there, a standalone session
/// (watching `watch` before the first answer; live commands pass zero).
///
/// # Errors
/// Neither an agent answers nor can a session start (not root, no Docker).
pub(crate) async fn open_source(args: &SourceArgs, watch: bool) -> Result<Source> {
    let wait = if watch {
        if !(args.watch.is_finite() && args.watch >= 0.0) {
            anyhow::bail!("--watch must be a number of seconds, 0 or more");
        }
        Duration::from_secs_f64(args.watch)
    } else {
        Duration::ZERO
    };
    if !args.standalone {
        let explicit = args.socket.is_some();
        let client = ApiClient::new(
            args.socket
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET)),
        );
        match client.status().await {
            Ok(_) => return Ok(Source::Agent(AgentSource(client))),
            // The agent the user named must answer.
            Err(e) if explicit => return Err(e.into()),
            Err(e) => eprintln!("netwatch: {e}; observing on our own instead"),
        }
    }
    Ok(Source::Standalone(StandaloneSource::start(wait).await?))
}

/// `12s ago`, `5m ago`, `3h ago`, `2d ago`.
pub fn ago(then: Timestamp, now: Timestamp) -> String {
    let seconds = now.duration_since(then).as_secs().max(0);
    match seconds {
        0..60 => format!("{seconds}s ago"),
        60..3600 => format!("{}m ago", seconds / 60),
        3600..86400 => format!("{}h ago", seconds / 3600),
        _ => format!("{}d ago", seconds / 86400),
    }
}

/// Writes `text` to stdout; a reader that went away (`| head`) is not an
/// error: returns `false` then.
pub fn print(text: &str) -> Result<bool> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Prints `items` as the format asks: a pretty JSON array, JSON lines, or
/// the table `table` draws.
pub fn print_list<T: serde::Serialize>(
    items: &[T],
    output: FlowOutput,
    table: impl FnOnce(&[T]) -> String,
) -> Result<()> {
    let text = match output {
        FlowOutput::Table => table(items),
        FlowOutput::Json => serde_json::to_string_pretty(items)? + "\n",
        FlowOutput::Jsonl => {
            let mut text = String::new();
            for item in items {
                text.push_str(&serde_json::to_string(item)?);
                text.push('\n');
            }
            text
        }
    };
    print(&text)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_well() {
        let now = Timestamp::from_second(100_000).unwrap();
        let at = |s: i64| Timestamp::from_second(100_000 - s).unwrap();
        assert_eq!(ago(at(5), now), "5s ago");
        assert_eq!(ago(at(300), now), "5m ago");
        assert_eq!(ago(at(7200), now), "2h ago");
        assert_eq!(ago(at(90000), now), "1d ago");
        assert_eq!(ago(at(-3), now), "0s ago");
    }
}
