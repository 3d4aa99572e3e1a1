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
    net::IpAddr,
    path::PathBuf,
    pin::Pin,
    sync::Arc,
    time::Duration,
};

use anyhow::Result;
use futures_util::{Stream, StreamExt as _};
use jiff::Timestamp;
use netwatch_common::{
    protocol::Protocol,
    reason::{Direction, Verdict},
};

use crate::{
    api::{
        ApiClient, ClientError, DEFAULT_SOCKET, DropGroup, FlowsAnswer, Layout, StreamItem,
        drop_groups,
        query::{self, parse_proto, parse_since},
    },
    flows::{
        FlowEntry, FlowFilter, FlowReason, Pipeline, RecordReader,
        filter::{Match, Term, history_events},
        pipeline::DEFAULT_FLOW_LIMIT,
    },
    policy::cidr::Cidr,
    standalone::Session,
};

/// Which containers: shared by the flow filters and `dns`. Each flag may be
/// given several times: any of its values matches.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct PlaceArgs {
    /// Only this container: its name, as `docker ps` shows it, or a
    /// prefix of its id (`3f2a`; an error if two containers' flows have
    /// it).
    #[arg(long, value_name = "NAME|ID")]
    pub container: Vec<String>,
    /// Only containers of this service (compose service, or swarm service).
    #[arg(long, value_name = "SERVICE")]
    pub service: Vec<String>,
    /// Only this Docker network (its name).
    #[arg(long, value_name = "NAME")]
    pub network: Vec<String>,
}

impl PlaceArgs {
    /// The terms these flags make, none negated.
    pub fn terms(&self) -> Vec<Term> {
        let names = [
            (&self.container, Match::Container as fn(String) -> Match),
            (&self.service, Match::Service),
            (&self.network, Match::Network),
        ];
        names
            .into_iter()
            .flat_map(|(values, what)| values.iter().cloned().map(what))
            .map(|what| Term {
                negated: false,
                what,
            })
            .collect()
    }
}

/// The filter flags' definitions (see [`FilterArgs`]).
#[derive(Clone, Debug, Default, clap::Args)]
#[command(
    next_help_heading = "Filters (a flag given twice matches either value; different flags must all match)"
)]
pub struct FilterFlags {
    #[command(flatten)]
    pub place: PlaceArgs,
    /// Only containers of this compose project (com.docker.compose.project).
    #[arg(long, value_name = "NAME")]
    pub project: Vec<String>,
    /// Only flows seen by this host (its kernel hostname, as each flow's
    /// `host` field has it): for `--from-log` on a log gathered from
    /// several hosts; live, only the agent's own host matches.
    #[arg(long, value_name = "NAME")]
    pub host: Vec<String>,
    /// Only flows whose latest packet was forwarded, dropped, or audited
    /// (forwarded under audit mode, which enforcement would have dropped).
    #[arg(long, value_parser = verdict_arg())]
    pub verdict: Vec<Verdict>,
    /// Only flows dropped for this reason: one of netwatch's (not-in-network,
    /// host-access, spoofed-source, …) or, for the kernel's own drops,
    /// `kernel:` and the kernel's reason name in lower case
    /// (kernel:netfilter_drop, kernel:no_socket, …).
    #[arg(long, value_name = "REASON", value_parser = reason_arg)]
    pub reason: Vec<FlowReason>,
    /// Only this protocol: tcp, udp, icmp, icmpv6, or an IP protocol
    /// number.
    #[arg(long, value_name = "PROTO", value_parser = proto_arg)]
    pub proto: Vec<Protocol>,
    /// Only flows with this port at either end.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub port: Vec<u16>,
    /// Only what containers sent (egress) or received (ingress).
    #[arg(long, value_name = "DIR", value_parser = direction_arg())]
    pub direction: Vec<Direction>,
    /// Only flows with this address at either end.
    #[arg(long, value_name = "ADDR", value_parser = ip_arg)]
    pub ip: Vec<IpAddr>,
    /// Only flows with an end in this network (10.0.0.0/8, fd00::/64).
    #[arg(long, value_name = "NET", value_parser = |s: &str| cidr_arg("cidr", s))]
    pub cidr: Vec<Cidr>,
    /// Only flows from this address or network (their source).
    #[arg(long, value_name = "ADDR|NET", value_parser = |s: &str| cidr_arg("from-ip", s))]
    pub from_ip: Vec<Cidr>,
    /// Only flows to this address or network (their destination).
    #[arg(long, value_name = "ADDR|NET", value_parser = |s: &str| cidr_arg("to-ip", s))]
    pub to_ip: Vec<Cidr>,
    /// Leave out what the filter flag right after it matches, as `hubble
    /// observe --not` does: `--not --cidr 10.0.0.0/8` leaves out flows
    /// with an end in 10.0.0.0/8. Given before several values, each is
    /// left out (`--not --port 53 --not --port 123`: neither). Not for
    /// --since, --until or --last.
    #[arg(long, num_args = 0, default_missing_value = "true", value_parser = clap::value_parser!(bool))]
    pub not: Vec<bool>,
    /// Only flows seen in the last DURATION (30s, 5m, 1h30m), or since an
    /// RFC 3339 time (2025-11-27T22:10:00Z): their last packet.
    #[arg(long, value_name = "DURATION|TIME", value_parser = since_arg)]
    pub since: Option<Timestamp>,
    /// Only flows seen before DURATION ago, or before an RFC 3339 time:
    /// their first packet. With --since: flows active in the window
    /// (their counts are their totals, not the window's).
    #[arg(long, value_name = "DURATION|TIME", value_parser = until_arg)]
    pub until: Option<Timestamp>,
    /// Of the flows selected, only the N seen most recently, oldest first.
    #[arg(long, value_name = "N", value_parser = |s: &str| query::parse_last(s).map_err(|e| e.to_string()))]
    pub last: Option<usize>,
}

/// The filter flags, shared by `flows`, `drops`, `observe`, `top`, `map`
/// and `advise`: the flags of [`FilterFlags`], read into a [`FlowFilter`]
/// with each `--not` applied to the flag after it.
#[derive(Clone, Debug, Default)]
pub struct FilterArgs {
    pub filter: FlowFilter,
}

/// The verdicts by name, listed as possible values in `--help`.
fn verdict_arg() -> impl clap::builder::TypedValueParser<Value = Verdict> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(Verdict::ALL.map(Verdict::name))
        .try_map(|name| name.parse::<Verdict>())
}

/// The directions by name, listed as possible values in `--help`.
fn direction_arg() -> impl clap::builder::TypedValueParser<Value = Direction> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(Direction::ALL.map(Direction::name))
        .try_map(|name| name.parse::<Direction>())
}

fn proto_arg(text: &str) -> Result<Protocol, String> {
    parse_proto(text).map_err(|e| e.to_string())
}

fn reason_arg(text: &str) -> Result<FlowReason, String> {
    query::parse_reason(text).map_err(|e| e.to_string())
}

fn ip_arg(text: &str) -> Result<IpAddr, String> {
    query::parse_ip(text).map_err(|e| e.to_string())
}

fn cidr_arg(key: &'static str, text: &str) -> Result<Cidr, String> {
    query::parse_cidr(key, text).map_err(|e| e.to_string())
}

pub(crate) fn since_arg(text: &str) -> Result<Timestamp, String> {
    parse_since(text, Timestamp::now()).map_err(|e| e.to_string())
}

fn until_arg(text: &str) -> Result<Timestamp, String> {
    query::parse_time("until", text, Timestamp::now()).map_err(|e| e.to_string())
}

/// The terms of the flags in `matches`, each with the index of its value
/// on the command line.
fn indexed_terms(matches: &clap::ArgMatches) -> Vec<(usize, Match)> {
    fn add<T: Clone + Send + Sync + 'static>(
        matches: &clap::ArgMatches,
        id: &str,
        what: impl Fn(T) -> Match,
        out: &mut Vec<(usize, Match)>,
    ) {
        if let (Ok(Some(values)), Some(indices)) =
            (matches.try_get_many::<T>(id), matches.indices_of(id))
        {
            out.extend(indices.zip(values.cloned().map(what)));
        }
    }
    let mut out = Vec::new();
    add(matches, "container", Match::Container, &mut out);
    add(matches, "service", Match::Service, &mut out);
    add(matches, "network", Match::Network, &mut out);
    add(matches, "project", Match::Project, &mut out);
    add(matches, "host", Match::Host, &mut out);
    add(matches, "verdict", Match::Verdict, &mut out);
    add(matches, "reason", Match::Reason, &mut out);
    add(matches, "proto", Match::Proto, &mut out);
    add(matches, "port", Match::Port, &mut out);
    add(matches, "direction", Match::Direction, &mut out);
    add(matches, "ip", Match::Ip, &mut out);
    add(matches, "cidr", Match::Cidr, &mut out);
    add(matches, "from_ip", Match::FromIp, &mut out);
    add(matches, "to_ip", Match::ToIp, &mut out);
    out.sort_by_key(|(index, _)| *index);
    out
}

/// The filter of the command line: the flags' terms in the order given,
/// each one right after a `--not` negated.
///
/// # Errors
/// A `--not` that no filter flag follows.
fn filter_from(matches: &clap::ArgMatches, flags: &FilterFlags) -> Result<FlowFilter, clap::Error> {
    // Each --not appends a value, at the index of the flag.
    let nots: Vec<usize> = matches
        .indices_of("not")
        .map(Iterator::collect)
        .unwrap_or_default();
    let mut terms: Vec<Term> = Vec::new();
    let mut used = 0;
    for (index, what) in indexed_terms(matches) {
        // `--not --cidr X`: --not at n, --cidr at n + 1, X at n + 2 (clap
        // counts `--cidr=X` as two as well).
        let negated = index >= 2 && nots.contains(&(index - 2));
        used += usize::from(negated);
        terms.push(Term { negated, what });
    }
    if used < nots.len() {
        return Err(clap::Error::raw(
            clap::error::ErrorKind::ArgumentConflict,
            "--not must come right before a filter flag (--not --cidr 10.0.0.0/8); it does not \
             go with --since, --until or --last\n",
        ));
    }
    Ok(FlowFilter {
        terms,
        since: flags.since,
        until: flags.until,
        last: flags.last,
    })
}

impl clap::Args for FilterArgs {
    fn augment_args(command: clap::Command) -> clap::Command {
        FilterFlags::augment_args(command)
    }

    fn augment_args_for_update(command: clap::Command) -> clap::Command {
        FilterFlags::augment_args_for_update(command)
    }
}

impl clap::FromArgMatches for FilterArgs {
    fn from_arg_matches(matches: &clap::ArgMatches) -> Result<FilterArgs, clap::Error> {
        let flags = FilterFlags::from_arg_matches(matches)?;
        if let (Some(since), Some(until)) = (flags.since, flags.until)
            && until < since
        {
            return Err(clap::Error::raw(
                clap::error::ErrorKind::ArgumentConflict,
                "--until is before --since: give the window's start to --since and its end to \
                 --until\n",
            ));
        }
        Ok(FilterArgs {
            filter: filter_from(matches, &flags)?,
        })
    }

    fn update_from_arg_matches(&mut self, matches: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = FilterArgs::from_arg_matches(matches)?;
        Ok(())
    }
}

impl FilterArgs {
    pub fn filter(&self) -> FlowFilter {
        self.filter.clone()
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

impl FlowOutput {
    /// The JSON layout it prints (`None`: a table).
    pub fn layout(self) -> Option<Layout> {
        match self {
            FlowOutput::Table => None,
            FlowOutput::Json => Some(Layout::Pretty),
            FlowOutput::Jsonl => Some(Layout::Lines),
        }
    }
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

/// The running agent, through its API socket, and the version it said.
pub(crate) struct AgentSource {
    client: ApiClient,
    version: String,
}

impl AgentSource {
    /// `error`, and when an older agent refused a filter it does not know
    /// (one added after it, or a flag given twice), what to do about it.
    fn explain(&self, error: ClientError) -> anyhow::Error {
        let ours = env!("CARGO_PKG_VERSION");
        match &error {
            ClientError::Refused(message)
                if message.starts_with("unknown filter") || message.contains("given twice") =>
            {
                anyhow::anyhow!(
                    "{error}; the agent (netwatch {}) may be older than this command (netwatch \
                     {ours}): upgrade the agent, or leave out the filters it does not know",
                    self.version
                )
            }
            _ => error.into(),
        }
    }
}

impl FlowSource for AgentSource {
    async fn flows(&self, filter: &FlowFilter) -> Result<Vec<FlowEntry>> {
        self.client.flows(filter).await.map_err(|e| self.explain(e))
    }

    async fn drops(&self, filter: &FlowFilter) -> Result<Vec<DropGroup>> {
        self.client.drops(filter).await.map_err(|e| self.explain(e))
    }

    async fn observe(&self, filter: &FlowFilter) -> Result<Events> {
        let events = self
            .client
            .observe(filter)
            .await
            .map_err(|e| self.explain(e))?;
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
        Ok(filter.finish(self.pipeline.flows(filter))?)
    }

    async fn observe(&self, filter: &FlowFilter) -> Result<Events> {
        // Subscribed before the history is read, as the agent does.
        let live = tokio_stream_from(self.pipeline.subscribe());
        let history = if filter.wants_history() {
            history_events(self.flows(filter).await?)
        } else {
            Vec::new()
        };
        let history = futures_util::stream::iter(
            history
                .into_iter()
                .map(|event| Ok(StreamItem::Event(Box::new(event)))),
        );
        let filter = filter.clone();
        let live = live
            .take_while({
                let wanted = filter.wants_live();
                move |_| std::future::ready(wanted)
            })
            .filter_map(move |item| {
                let keep = match &item {
                    Ok(StreamItem::Event(e)) => filter.matches(&e.flow),
                    _ => true,
                };
                std::future::ready(keep.then_some(item))
            });
        Ok(Box::pin(history.chain(live)))
    }
}

/// A broadcast receiver as a stream of items, lag included.
fn tokio_stream_from(
    receiver: crate::flows::EventFeed,
) -> impl Stream<Item = Result<StreamItem>> + Send {
    futures_util::stream::unfold(receiver, |mut receiver| async move {
        use tokio::sync::broadcast::error::RecvError;
        match receiver.recv().await {
            Ok(event) => Some((
                Ok(StreamItem::Event(Box::new(
                    std::sync::Arc::unwrap_or_clone(event),
                ))),
                receiver,
            )),
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

impl Source {
    /// The flows `filter` selects, laid out as `layout` when the agent
    /// lays them out itself (see [`Layout`]), else as entries.
    ///
    /// # Errors
    /// As [`FlowSource::flows`].
    pub(crate) async fn flows_laid_out(
        &self,
        filter: &FlowFilter,
        layout: Layout,
    ) -> Result<FlowsAnswer> {
        match self {
            Source::Agent(s) => s
                .client
                .flows_laid_out(filter, layout)
                .await
                .map_err(|e| s.explain(e)),
            Source::Standalone(s) => Ok(FlowsAnswer::Entries(s.flows(filter).await?)),
        }
    }
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
            Ok(status) => {
                return Ok(Source::Agent(AgentSource {
                    client,
                    version: status.version,
                }));
            }
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
    print_bytes(text.as_bytes())
}

/// [`print`] of text that is already bytes.
///
/// # Errors
/// As [`print`].
pub fn print_bytes(text: &[u8]) -> Result<bool> {
    let mut out = io::stdout().lock();
    match out.write_all(text).and_then(|()| out.flush()) {
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
    let text = match output.layout() {
        None => table(items).into_bytes(),
        Some(layout) => layout.write(items),
    };
    print_bytes(&text)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    struct Command {
        #[command(flatten)]
        filter: FilterArgs,
    }

    fn parse(args: &[&str]) -> Result<FlowFilter, String> {
        use clap::Parser as _;
        Command::try_parse_from(std::iter::once("netwatch").chain(args.iter().copied()))
            .map(|c| c.filter.filter)
            .map_err(|e| e.to_string())
    }

    /// (negated, key, value) of each term, in order.
    fn terms(args: &[&str]) -> Vec<(bool, &'static str, String)> {
        parse(args)
            .unwrap()
            .terms
            .iter()
            .map(|t| (t.negated, t.what.key(), t.what.value_text()))
            .collect()
    }

    #[test]
    fn every_filter_key_of_the_api_is_a_flag_of_the_same_name() {
        let sample = |key: &str| match key {
            "verdict" => "dropped",
            "reason" => "host-access",
            "proto" => "udp",
            "port" => "53",
            "direction" => "egress",
            "ip" => "172.30.0.2",
            "cidr" | "from-ip" | "to-ip" => "10.0.0.0/8",
            _ => "web",
        };
        for key in Match::KEYS {
            let flag = format!("--{key}");
            let got = terms(&[&flag, sample(key)]);
            assert_eq!(got, [(false, key, sample(key).to_string())], "{flag}");
            let negated = terms(&["--not", &flag, sample(key)]);
            assert_eq!(
                negated,
                [(true, key, sample(key).to_string())],
                "--not {flag}"
            );
        }
    }

    #[test]
    fn not_negates_only_the_flag_right_after_it() {
        assert_eq!(
            terms(&[
                "--project",
                "shop",
                "--not",
                "--cidr",
                "10.0.0.0/8",
                "--cidr=172.16.0.0/12",
                "--not",
                "--cidr=192.168.0.0/16",
                "--direction",
                "egress",
            ]),
            [
                (false, "project", "shop".to_string()),
                (true, "cidr", "10.0.0.0/8".to_string()),
                (false, "cidr", "172.16.0.0/12".to_string()),
                (true, "cidr", "192.168.0.0/16".to_string()),
                (false, "direction", "egress".to_string()),
            ]
        );
        assert_eq!(
            terms(&[
                "--not", "--port", "53", "--not", "--port", "123", "--port", "80"
            ]),
            [
                (true, "port", "53".to_string()),
                (true, "port", "123".to_string()),
                (false, "port", "80".to_string()),
            ]
        );
        let window = parse(&["--since", "1h", "--until", "5m", "--last", "3"]).unwrap();
        assert!(window.terms.is_empty());
        assert_eq!(window.last, Some(3));
        assert!(window.since < window.until);
    }

    #[test]
    fn a_not_without_a_filter_flag_after_it_is_an_error_that_says_what_to_do() {
        for args in [
            &["--not"][..],
            &["--port", "53", "--not"],
            &["--not", "--since", "5m"],
            &["--not", "--last", "3"],
            &["--not", "--not", "--port", "53"],
        ] {
            let error = parse(args).unwrap_err();
            assert!(
                error.contains(
                    "--not must come right before a filter flag (--not --cidr 10.0.0.0/8)"
                ),
                "{args:?}: {error}"
            );
        }
        let error = parse(&["--since", "5m", "--until", "1h"]).unwrap_err();
        assert!(error.contains("--until is before --since"), "{error}");
        let error = parse(&["--cidr", "10.0.0.0/33"]).unwrap_err();
        assert!(error.contains("0-32 for IPv4 (10.0.0.0/8)"), "{error}");
    }

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
