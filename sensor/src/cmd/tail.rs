//! `sensor tail`: stream live events, replay stored ones (journal, through the daemon), or
//! replay a JSON-lines file offline; filters and json/compact output either way.
//!
//! While following, a broken stream (daemon restart) is reconnected with backoff and resumed
//! after the last sequence number printed: no gap, no duplicate.

use std::{
    io::{self, BufRead as _, IsTerminal as _, Write as _},
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Duration, SystemTime},
};

use clap::{Args, ValueEnum};
use futures_util::FutureExt as _;
use sensor_proto::v1::{self as pb, get_events_request::Start};
use tonic::Code;

use super::{DaemonAddr, EXIT_FAILURE, EXIT_USAGE};
use crate::{
    event::compact::to_compact,
    event::filter,
    event::json::{from_json, to_json},
    event::proto::kind_of,
};

#[derive(Debug, Args)]
pub struct TailArgs {
    #[command(flatten)]
    pub daemon: DaemonAddr,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = TailFormat::Compact)]
    pub output: TailFormat,
    /// Keep streaming new events (reconnecting, without gap or duplicate, if the daemon restarts).
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Start with stored events from this long ago (`10m`, `2h`) or this time (RFC 3339).
    #[arg(long, value_name = "DURATION|TIME", conflicts_with = "from_seq")]
    pub since: Option<String>,
    /// Start with the stored event of this sequence number.
    #[arg(long, value_name = "N")]
    pub from_seq: Option<u64>,
    /// Only these kinds (connect, chmod, privilege, exec, exit, policy, posture, lost);
    /// repeatable or comma-separated.
    #[arg(long, value_name = "KIND")]
    pub kind: Vec<String>,
    /// Only events from pods in these namespaces.
    #[arg(short = 'n', long = "namespace", value_name = "NS")]
    pub namespace: Vec<String>,
    /// Only events from these pods (by name).
    #[arg(long, value_name = "POD")]
    pub pod: Vec<String>,
    /// Only events from pods with this label (KEY=VALUE); repeatable, all must match.
    #[arg(long, value_name = "KEY=VALUE")]
    pub label: Vec<String>,
    /// Only these verdicts (blocked, audited, allowed, killed).
    #[arg(long, value_name = "VERDICT")]
    pub verdict: Vec<String>,
    /// Every event, telemetry too (exec, exit, allowed, policy changes, posture records). Without it, and
    /// without --kind or --verdict, only decisions (blocked, killed, audited) and loss records
    /// are shown.
    #[arg(short = 'a', long, conflicts_with_all = ["kind", "verdict"])]
    pub all: bool,
    /// Stop after N events (loss records are always printed and not counted).
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,
    /// Replay a JSON-lines file (from `-o json` or `sensor run --stdout-events`) instead of
    /// asking a daemon (`--server` is then not used).
    #[arg(long, value_name = "PATH", conflicts_with = "follow")]
    pub file: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TailFormat {
    /// One JSON object per line (the stable event format).
    Json,
    /// One readable line per event, coloured on a terminal.
    Compact,
    /// One OCSF 1.5.0 object per line (as `sensor run --export-format ocsf`).
    Ocsf,
    /// One ArcSight CEF line per event (as `sensor run --export-format cef`).
    Cef,
}

/// How many stored events `sensor tail` without `-f`, `--since` or `--from-seq` prints.
const DEFAULT_LAST: u64 = 10;
const BACKOFF_MAX: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum TailError {
    #[error("{0}")]
    Usage(String),
    #[error("cannot connect to the sensor at {server}: {reason} (is the daemon running?)")]
    Connect { server: String, reason: String },
    #[error("the sensor refused the request: {0}")]
    Refused(String),
    #[error("stream from the sensor broke: {0}")]
    Stream(String),
    #[error("{path}:{line}: {msg}")]
    File {
        path: PathBuf,
        line: usize,
        msg: String,
    },
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// stdout closed (e.g. piped into `head`): not an error for the user.
    #[error("stdout closed")]
    StdoutClosed,
}

pub fn main(args: TailArgs) -> ExitCode {
    match tail(&args) {
        Ok(()) | Err(TailError::StdoutClosed) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("sensor tail: error: {}", crate::error_chain(&err));
            let code = match err {
                TailError::Usage(_) | TailError::File { .. } => EXIT_USAGE,
                _ => EXIT_FAILURE,
            };
            ExitCode::from(code)
        }
    }
}

/// `--since`: a duration back from now (`10m`) or an RFC 3339 time.
pub fn parse_since(s: &str, now: SystemTime) -> Result<i64, TailError> {
    let bad = || {
        TailError::Usage(format!(
            "--since '{s}': expected a duration like 10m or 2h, or an RFC 3339 time"
        ))
    };
    let t = match humantime::parse_duration(s) {
        Ok(d) => now.checked_sub(d).ok_or_else(bad)?,
        Err(_) => humantime::parse_rfc3339_weak(s).map_err(|_| bad())?,
    };
    let ns = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_err(|_| bad())?
        .as_nanos();
    i64::try_from(ns).map_err(|_| bad())
}

struct Printer {
    format: TailFormat,
    colour: bool,
    out: io::BufWriter<io::Stdout>,
    /// Events printed (loss records not counted).
    printed: u64,
    limit: Option<u64>,
    last_seq: Option<u64>,
}

impl Printer {
    fn new(args: &TailArgs) -> Self {
        let colour = args.output == TailFormat::Compact
            && io::stdout().is_terminal()
            && std::env::var_os("NO_COLOR").is_none();
        Self {
            format: args.output,
            colour,
            out: io::BufWriter::new(io::stdout()),
            printed: 0,
            limit: args.limit,
            last_seq: None,
        }
    }

    fn done(&self) -> bool {
        self.limit.is_some_and(|l| self.printed >= l)
    }

    fn print(&mut self, event: &pb::Event) -> Result<(), TailError> {
        let line = match self.format {
            TailFormat::Json => to_json(event),
            TailFormat::Compact => to_compact(event, self.colour),
            TailFormat::Ocsf => crate::sinks::export::ocsf::to_ocsf(event).to_string(),
            TailFormat::Cef => crate::sinks::export::cef::to_cef(event),
        };
        writeln!(self.out, "{line}").map_err(|_| TailError::StdoutClosed)?;
        if kind_of(event) != pb::EventKind::Lost {
            self.printed += 1;
        }
        if event.seq != 0 {
            self.last_seq = Some(event.seq);
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), TailError> {
        self.out.flush().map_err(|_| TailError::StdoutClosed)
    }
}

/// The verdicts `sensor tail` shows without --all, --kind or --verdict: the decisions.
const DECISIONS: [&str; 3] = ["blocked", "killed", "audited"];

fn tail(args: &TailArgs) -> Result<(), TailError> {
    let decisions_only = !args.all && args.kind.is_empty() && args.verdict.is_empty();
    let verdicts = if decisions_only {
        DECISIONS.map(str::to_owned).to_vec()
    } else {
        args.verdict.clone()
    };
    let filter = filter::build(
        &args.kind,
        &args.namespace,
        &args.pod,
        &args.label,
        &verdicts,
    )
    .map_err(|e| TailError::Usage(e.to_string()))?;
    let since = args
        .since
        .as_deref()
        .map(|s| parse_since(s, SystemTime::now()))
        .transpose()?;
    let mut printer = Printer::new(args);
    if let Some(path) = &args.file {
        return replay_file(path, &filter, since, args.from_seq, &mut printer);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| TailError::Stream(e.to_string()))?;
    let start = match (since, args.from_seq) {
        (Some(t), _) => Some(Start::SinceUnixNs(t)),
        (None, Some(seq)) => Some(Start::FromSeq(seq)),
        (None, None) => None,
    };
    runtime.block_on(follow(args, filter, start, &mut printer))
}

fn replay_file(
    path: &Path,
    filter: &pb::Filter,
    since: Option<i64>,
    from_seq: Option<u64>,
    printer: &mut Printer,
) -> Result<(), TailError> {
    let read_err = |source| TailError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    for (i, line) in io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(read_err)?;
        if line.trim().is_empty() {
            continue;
        }
        let event = from_json(&line).map_err(|msg| TailError::File {
            path: path.to_owned(),
            line: i + 1,
            msg,
        })?;
        let is_lost = kind_of(&event) == pb::EventKind::Lost;
        let in_range = since.is_none_or(|t| event.time_unix_ns >= t)
            && from_seq.is_none_or(|s| event.seq >= s);
        if (is_lost || in_range) && filter::matches(filter, &event) {
            printer.print(&event)?;
            if printer.done() {
                break;
            }
        }
    }
    printer.flush()
}

/// Journal records looked at, from the end, before giving up on finding [`DEFAULT_LAST`]
/// events that pass the filter: wider each time.
const LOOK_BACK: [u64; 3] = [1_000, 100_000, u64::MAX];

/// The last [`DEFAULT_LAST`] stored events before `next` that pass `filter` (loss records
/// among them included).
async fn last_matching(
    client: &mut pb::sensor_client::SensorClient<tonic::transport::Channel>,
    filter: &pb::Filter,
    next: u64,
) -> Result<Vec<pb::Event>, TailError> {
    let mut found = std::collections::VecDeque::new();
    for window in LOOK_BACK {
        let from = next.saturating_sub(window).max(1);
        let request = pb::GetEventsRequest {
            start: Some(Start::FromSeq(from)),
            follow: false,
            filter: Some(filter.clone()),
            limit: 0,
        };
        let mut stream = client
            .get_events(request)
            .await
            .map_err(|s| TailError::Refused(s.message().to_owned()))?
            .into_inner();
        found.clear();
        while let Some(event) = stream
            .message()
            .await
            .map_err(|s| TailError::Stream(s.message().to_owned()))?
        {
            if event.seq != 0 && event.seq >= next {
                break;
            }
            found.push_back(event);
            if found.len() > DEFAULT_LAST as usize {
                found.pop_front();
            }
        }
        let events = found
            .iter()
            .filter(|e| kind_of(e) != pb::EventKind::Lost)
            .count();
        if events >= DEFAULT_LAST as usize || from == 1 {
            break;
        }
    }
    Ok(found.into())
}

async fn follow(
    args: &TailArgs,
    filter: pb::Filter,
    start: Option<Start>,
    printer: &mut Printer,
) -> Result<(), TailError> {
    let mut start = start;
    let mut backoff = Duration::from_millis(100);
    let mut connected_once = false;
    // A stream was open before: what follows is a resumption.
    let mut resuming = false;
    loop {
        let mut client =
            match crate::cmd::client::connect(&args.daemon.server, &args.daemon.tls).await {
                Ok(c) => c,
                Err(reason) if !connected_once || !args.follow => {
                    return Err(TailError::Connect {
                        server: args.daemon.server.clone(),
                        reason,
                    });
                }
                Err(_) => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            };
        if start.is_none() {
            // Without a start: the last few stored events that pass the filter (like
            // tail(1)), or with -f only what comes next. Resolved to a sequence number so a
            // reconnect has no gap.
            let status = client
                .get_status(pb::GetStatusRequest {})
                .await
                .map_err(|s| TailError::Refused(s.message().to_owned()))?;
            let journal = status.into_inner().journal.unwrap_or_default();
            let next = journal.next_seq.max(1);
            if !args.follow {
                for event in last_matching(&mut client, &filter, next).await? {
                    printer.print(&event)?;
                }
                return printer.flush();
            }
            start = Some(Start::FromSeq(next));
        }
        connected_once = true;
        let request = pb::GetEventsRequest {
            start,
            follow: args.follow,
            filter: Some(filter.clone()),
            limit: printer.limit.map_or(0, |l| l - printer.printed),
        };
        let mut stream = match client.get_events(request).await {
            Ok(r) => r.into_inner(),
            Err(s) if s.code() == Code::InvalidArgument => {
                return Err(TailError::Usage(format!(
                    "the sensor rejected the request: {}",
                    s.message()
                )));
            }
            Err(s) if args.follow && s.code() == Code::Unavailable => {
                tokio::time::sleep(backoff).await;
                continue;
            }
            // Resuming after the daemon's journal started over (its directory was lost): say
            // so, and go on from what it has now.
            Err(s) if resuming && s.code() == Code::OutOfRange => {
                eprintln!(
                    "sensor tail: {}; the daemon's journal started over, continuing from its next event (events in between may be missing)",
                    s.message()
                );
                start = None;
                continue;
            }
            // Resuming while the daemon serves as many streams as it will: wait for a place.
            Err(s) if resuming && s.code() == Code::ResourceExhausted => {
                eprintln!("sensor tail: {}; retrying", s.message());
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
            Err(s) => return Err(TailError::Refused(s.message().to_owned())),
        };
        resuming = args.follow;
        backoff = Duration::from_millis(100);
        loop {
            // Flush whenever the stream has nothing more ready: lines appear as events come,
            // without a write per event under load.
            let next = match stream.message().now_or_never() {
                Some(next) => next,
                None => {
                    printer.flush()?;
                    stream.message().await
                }
            };
            match next {
                Ok(Some(event)) => {
                    printer.print(&event)?;
                    if printer.done() {
                        return printer.flush();
                    }
                    if let Some(seq) = printer.last_seq {
                        start = Some(Start::FromSeq(seq + 1));
                    }
                }
                Ok(None) if !args.follow => return printer.flush(),
                Ok(None) => break,
                Err(s) if !args.follow => return Err(TailError::Stream(s.message().to_owned())),
                Err(_) => break,
            }
        }
        printer.flush()?;
        eprintln!(
            "sensor tail: stream ended; reconnecting to {}",
            args.daemon.server
        );
        tokio::time::sleep(backoff).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_durations_and_times_and_says_what_is_wrong() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(10_000);
        assert_eq!(parse_since("10m", now).unwrap(), 9_400_000_000_000);
        assert_eq!(
            parse_since("1970-01-01T00:00:05Z", now).unwrap(),
            5_000_000_000
        );
        let err = parse_since("yesterday", now).unwrap_err().to_string();
        assert!(err.contains("--since 'yesterday'"), "{err}");
    }
}
