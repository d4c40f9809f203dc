//! `sensor advise`: ready-to-apply hardening from what the node recorded (the journal through
//! the daemon, or an exported JSON-lines file). The decisions are in
//! [`crate::hardening::advise`], the output in [`crate::hardening::render`].

use std::{path::PathBuf, process::ExitCode, time::SystemTime};

use clap::{Args, ValueEnum};

use super::{DaemonAddr, EXIT_FAILURE, EXIT_USAGE, tail::parse_since};
use crate::{
    event::time::now_unix_ns,
    hardening::{
        advise::{SYSTEM_NAMESPACES, advise},
        render,
    },
};

#[derive(Debug, Args)]
pub struct AdviseArgs {
    /// How far back: a duration (`24h`, `7d`) or an RFC 3339 time.
    #[arg(long, default_value = "24h")]
    pub since: String,
    /// Read the events from an exported JSON-lines file (`--export file:PATH`, `sensor tail -o
    /// json`) instead of the daemon's journal.
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// `report`: readable text; `json`: one JSON object.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = AdviseFormat::Report)]
    pub output: AdviseFormat,
    /// Also write the ready-to-apply files (NetworkPolicies, seccomp profile, patches, a
    /// README) into this directory (created when missing).
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
    /// More namespaces that get no Kubernetes advice (repeatable or comma-separated), beside
    /// kube-system, kube-public and kube-node-lease, which never get any.
    #[arg(long, value_name = "NS", value_delimiter = ',')]
    pub exclude_namespace: Vec<String>,
    #[command(flatten)]
    pub daemon: DaemonAddr,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AdviseFormat {
    Report,
    Json,
}

pub fn main(args: &AdviseArgs) -> ExitCode {
    let fail = |msg: String, code: u8| {
        eprintln!("sensor advise: error: {msg}");
        ExitCode::from(code)
    };
    let since = match parse_since(&args.since, SystemTime::now()) {
        Ok(t) => t,
        Err(e) => return fail(e.to_string(), EXIT_USAGE),
    };
    let events = match super::recorded::events(args.file.as_deref(), &args.daemon, since) {
        Ok(e) => e,
        Err((msg, code)) => return fail(msg, code),
    };
    let excluded: Vec<String> = SYSTEM_NAMESPACES
        .iter()
        .map(|n| (*n).to_owned())
        .chain(args.exclude_namespace.iter().cloned())
        .collect();
    let advice = advise(&events, since, now_unix_ns(), &excluded);
    if let Some(dir) = &args.out_dir {
        match render::write_dir(&advice, dir) {
            Ok(files) => eprintln!(
                "sensor advise: wrote {} file(s) to {}",
                files.len(),
                dir.display()
            ),
            Err(e) => return fail(e.to_string(), EXIT_FAILURE),
        }
    }
    match args.output {
        AdviseFormat::Report => print!("{}", render::report(&advice)),
        AdviseFormat::Json => println!("{}", render::to_json(&advice)),
    }
    ExitCode::SUCCESS
}
