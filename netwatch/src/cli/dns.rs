//! `netwatch dns`: the DNS queries containers sent across their veths and
//! the answers they got, from the running agent.

use std::{path::PathBuf, process::ExitCode};

use anyhow::{Result, bail};
use futures_util::StreamExt as _;
use jiff::{Timestamp, tz::TimeZone};
use netwatch_common::{protocol::Protocol, reason::Verdict};

use super::{
    signals,
    source::{FlowOutput, PlaceArgs, print, print_list},
    table,
};
use crate::{
    api::{ApiClient, DEFAULT_SOCKET},
    flows::{FlowFilter, dns::DnsEntry},
};

/// What `dns` cannot see, said under its table: Docker's embedded
/// resolver answers inside the container's own namespace.
pub const EMBEDDED_RESOLVER_NOTE: &str = "\
Containers on user-defined networks ask Docker's embedded resolver at 127.0.0.11 inside \
their own namespace: that never crosses an interface and is not listed. It answers container \
names and aliases itself; other names it forwards to the upstream resolvers from the \
container's namespace, with the container's address: those queries are listed, with that \
resolver.";

/// Only the filters that apply to DNS queries.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct DnsFilterArgs {
    #[command(flatten)]
    pub place: PlaceArgs,
    /// Only queries sent in the last DURATION (30s, 5m), or since an RFC
    /// 3339 time.
    #[arg(long, value_name = "DURATION|TIME", value_parser = super::source::since_arg)]
    pub since: Option<Timestamp>,
}

impl DnsFilterArgs {
    pub fn filter(&self) -> FlowFilter {
        FlowFilter {
            terms: self.place.terms(),
            since: self.since,
            ..FlowFilter::default()
        }
    }
}

fn answers_text(entry: &DnsEntry) -> String {
    entry
        .answers
        .iter()
        .map(|a| match a.kind.as_str() {
            "A" | "AAAA" => a.data.clone(),
            "CNAME" => format!("{} (CNAME)", a.data),
            _ => a.kind.clone(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn row(e: &DnsEntry, tz: &TimeZone) -> Vec<String> {
    let resolver = match e.resolver_port {
        53 => e.resolver.to_string(),
        port => crate::flows::record::endpoint_text(Some(e.resolver), port, Protocol::Udp),
    };
    let rcode = match (&e.rcode, e.verdict) {
        (_, Verdict::Dropped) => format!(
            "DROPPED ({})",
            e.reason
                .as_ref()
                .map_or_else(|| "-".to_string(), ToString::to_string)
        ),
        (Some(rcode), _) => rcode.clone(),
        (None, _) => "(no answer)".to_string(),
    };
    vec![
        e.time
            .to_zoned_datetime(tz.clone())
            .strftime("%H:%M:%S%.3f")
            .to_string(),
        e.container.clone().unwrap_or_default(),
        e.name.clone().unwrap_or_default(),
        e.qtype.clone().unwrap_or_default(),
        rcode,
        answers_text(e),
        e.latency_us
            .map(|us| format!("{:.1} ms", us as f64 / 1000.0))
            .unwrap_or_default(),
        resolver,
    ]
}

const HEADERS: [&str; 8] = [
    "TIME",
    "CONTAINER",
    "NAME",
    "TYPE",
    "RCODE",
    "ANSWERS",
    "LATENCY",
    "RESOLVER",
];

/// The table `netwatch dns` prints, with the note on the embedded
/// resolver under it.
pub fn dns_table(entries: &[DnsEntry], tz: &TimeZone) -> String {
    let rows: Vec<Vec<String>> = entries.iter().map(|e| row(e, tz)).collect();
    let mut text = table(&HEADERS, &rows);
    if entries.is_empty() {
        text.push_str("(no DNS query seen)\n");
    }
    text.push('\n');
    text.push_str(EMBEDDED_RESOLVER_NOTE);
    text.push('\n');
    text
}

/// Lists the DNS queries kept, or with `follow`, prints them as they come
/// until Ctrl-C.
///
/// # Errors
/// No agent answers, it refuses the filter, or it ends the stream.
pub fn run(
    filter: &DnsFilterArgs,
    socket: Option<PathBuf>,
    follow: bool,
    output: FlowOutput,
) -> Result<ExitCode> {
    let client = ApiClient::new(socket.unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET)));
    let tz = TimeZone::system();
    let filter = filter.filter();
    super::block_on(async {
        if !follow {
            let entries = client.dns(&filter).await?;
            print_list(&entries, output, |entries| dns_table(entries, &tz))?;
            return Ok(ExitCode::SUCCESS);
        }
        let mut entries = client.dns_live(&filter).await?;
        if output == FlowOutput::Table {
            print(&format!("{EMBEDDED_RESOLVER_NOTE}\n\n"))?;
        }
        let mut stop = std::pin::pin!(signals::terminated());
        loop {
            let entry = tokio::select! {
                entry = entries.next() => entry,
                () = &mut stop => break,
            };
            let Some(entry) = entry else {
                bail!("the agent ended the stream (did it stop?)");
            };
            let entry = entry?;
            let line = match output {
                FlowOutput::Table => row(&entry, &tz).join("  "),
                FlowOutput::Json | FlowOutput::Jsonl => serde_json::to_string(&entry)?,
            };
            if !print(&(line + "\n"))? {
                break;
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// DNS queries the containers sent across their interfaces and the
/// answers they got: time, container, name, type, rcode (NOERROR,
/// NXDOMAIN, SERVFAIL…), answers (CNAMEs followed), latency from the
/// query to its answer as the container's veth saw them, and the
/// resolver asked. A query netwatch dropped says so. From the running
/// agent: the last 10,000 queries, or with --follow, as they come.
///
/// Docker's embedded resolver: containers on user-defined networks ask
/// 127.0.0.11 inside their own namespace. That never crosses an
/// interface, so netwatch cannot see it. The embedded resolver answers
/// container names and network aliases itself (never listed here);
/// other names it forwards to the upstream resolvers (the host's, or
/// `--dns`) from the container's namespace, with the container's
/// address: those forwarded queries are listed, with that upstream as
/// the resolver. Containers on the default bridge ask the upstream
/// directly. Flows name their outside peers (src_name/dst_name) from
/// the answers listed here.
///
/// Examples:
///   sudo netwatch dns
///   sudo netwatch dns --container web --since 5m
///   sudo netwatch dns --follow
///   sudo netwatch dns -o json | jq '.[] | select(.rcode == "NXDOMAIN") | .name'
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct DnsArgs {
    #[command(flatten)]
    pub filter: super::dns::DnsFilterArgs,
    /// The running agent's API socket (`netwatch agent --api-socket`);
    /// default /run/netwatch/api.sock.
    #[arg(long, value_name = "PATH")]
    pub socket: Option<std::path::PathBuf>,
    /// Print queries and answers as they come (an answer as its
    /// query's line again, completed) until Ctrl-C.
    #[arg(short, long)]
    pub follow: bool,
    /// Output format: table, a JSON array of queries (one JSON object
    /// per line with --follow), or one JSON object per line.
    #[arg(short, long, value_enum, default_value_t = super::source::FlowOutput::Table)]
    pub output: super::source::FlowOutput,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_shows_name_answers_latency_resolver_and_the_embedded_resolver_note() {
        let entry = DnsEntry::example();
        let nx = DnsEntry {
            name: Some("nope.netwatch.test".into()),
            rcode: Some("NXDOMAIN".into()),
            answers: Vec::new(),
            ..entry.clone()
        };
        let text = dns_table(&[entry, nx], &TimeZone::UTC);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("TIME"), "{text}");
        assert!(lines[1].contains("svc.netwatch.test"), "{text}");
        assert!(lines[1].contains("1.5 ms"), "{text}");
        assert!(lines[1].ends_with("203.0.113.7"), "{text}");
        assert!(lines[2].contains("NXDOMAIN"), "{text}");
        assert!(text.contains("127.0.0.11"), "{text}");
    }
}
