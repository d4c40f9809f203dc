//! `sensor status`: what the daemon runs (programs and their tier), its counters and journal.

use std::process::ExitCode;

use clap::{Args, ValueEnum};
use sensor_proto::v1 as pb;

use super::{DaemonAddr, EXIT_FAILURE};
use crate::{
    event::time::rfc3339,
    kernel::catalog::{protection_tiers, tier_name},
};

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub daemon: DaemonAddr,
    /// Output format: readable text, or one JSON object.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = StatusFormat::Text)]
    pub output: StatusFormat,
    /// The same as `-o json`.
    #[arg(long, hide = true)]
    pub json: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StatusFormat {
    Text,
    Json,
}

pub fn main(args: StatusArgs) -> ExitCode {
    match status(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("sensor status: error: {msg}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// `GetStatus` of the daemon at `server`.
pub fn fetch(daemon: &DaemonAddr) -> Result<pb::GetStatusResponse, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let mut client = pb::sensor_client::SensorClient::new(
            super::client::daemon_channel(&daemon.server, &daemon.tls).await?,
        );
        client
            .get_status(pb::GetStatusRequest {})
            .await
            .map(|r| r.into_inner())
            .map_err(|s| s.message().to_owned())
    })
}

fn status(args: &StatusArgs) -> Result<(), String> {
    let status = fetch(&args.daemon)?;
    if args.json || args.output == StatusFormat::Json {
        println!("{}", to_json(&status));
    } else {
        print!("{}", to_text(&status));
    }
    Ok(())
}

fn to_json(s: &pb::GetStatusResponse) -> serde_json::Value {
    let journal = s.journal.clone().unwrap_or_default();
    serde_json::json!({
        "version": s.version,
        "node": s.node,
        "cluster": s.cluster,
        "subscribers": s.subscribers,
        "attachments": s.attachments.iter().map(|a| serde_json::json!({"program": a.program, "target": a.target, "tier": a.tier})).collect::<Vec<_>>(),
        "protections": protection_tiers(s.attachments.iter().map(|a| a.program.as_str()))
            .into_iter()
            .map(|(what, tier)| (what, tier_name(tier)))
            .collect::<std::collections::BTreeMap<_, _>>(),
        "counters": s.counters.iter().collect::<std::collections::BTreeMap<_, _>>(),
        "journal": {
            "first_seq": journal.first_seq, "last_seq": journal.last_seq, "next_seq": journal.next_seq,
            "state": if journal.error.is_empty() { "ok" } else { "failing" }, "error": journal.error,
        },
        "scopes": s.scopes.iter().map(|sc| serde_json::json!({"path": sc.path, "cgroup_id": sc.cgroup_id, "created": sc.created})).collect::<Vec<_>>(),
        "exports": s.exports.iter().map(|e| serde_json::json!({
            "destination": e.destination, "format": e.format, "delivered": e.delivered,
            "failures": e.failures, "retried": e.retried, "rejected": e.rejected,
            "lost": e.lost, "lag": e.lag, "error": e.error,
        })).collect::<Vec<_>>(),
    })
}

fn to_text(s: &pb::GetStatusResponse) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let cluster = if s.cluster.is_empty() {
        String::new()
    } else {
        format!(" in cluster {}", s.cluster)
    };
    let _ = writeln!(
        out,
        "sensor {} on {}{cluster} ({} subscriber(s))",
        s.version, s.node, s.subscribers
    );
    let _ = writeln!(out, "\nscope:");
    for sc in &s.scopes {
        let own = if sc.created {
            " (made by the sensor; `sensor exec -- COMMAND` runs a command in it)"
        } else {
            ""
        };
        let _ = writeln!(out, "  {}{own}", sc.path);
    }
    let _ = writeln!(out, "\nprotections (tier):");
    for (what, tier) in protection_tiers(s.attachments.iter().map(|a| a.program.as_str())) {
        let _ = writeln!(out, "  {what:<22} {}", tier_name(tier));
    }
    let _ = writeln!(out, "\nprograms:");
    for a in &s.attachments {
        let _ = writeln!(out, "  {:<18} {:<11} {}", a.program, a.tier, a.target);
    }
    let j = s.journal.clone().unwrap_or_default();
    let _ = writeln!(out, "\njournal:");
    if !j.error.is_empty() {
        let _ = writeln!(
            out,
            "  FAILING (events go out live without a sequence number, counted as \
             journal_unjournaled): {}",
            j.error
        );
    }
    if j.last_seq == 0 {
        let _ = writeln!(out, "  empty (next seq {})", j.next_seq);
    } else {
        let _ = writeln!(
            out,
            "  seq {}..={} ({} .. {}), next {}",
            j.first_seq,
            j.last_seq,
            rfc3339(j.first_time_unix_ns),
            rfc3339(j.last_time_unix_ns),
            j.next_seq
        );
    }
    if !s.exports.is_empty() {
        let _ = writeln!(out, "\nexports:");
        for e in &s.exports {
            let state = if e.error.is_empty() {
                "ok".to_owned()
            } else {
                format!("failing: {}", e.error)
            };
            let _ = writeln!(
                out,
                "  {} ({}): {state}; delivered {}, behind {}, lost {}, failures {}, retried {}, rejected {}",
                e.destination,
                e.format,
                e.delivered,
                e.lag,
                e.lost,
                e.failures,
                e.retried,
                e.rejected
            );
        }
    }
    let _ = writeln!(out, "\ncounters:");
    let counters: std::collections::BTreeMap<_, _> = s.counters.iter().collect();
    for (k, v) in counters {
        let _ = writeln!(out, "  {k:<36} {v}");
    }
    out
}
