//! Command-line interface (clap derive). Every flag a DaemonSet sets also reads `SENSOR_*`.

use std::{path::PathBuf, process::ExitCode};

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Exit code for bad flags and unusable input (nothing was attached).
pub const EXIT_USAGE: u8 = 2;
/// Exit code for a runtime failure (kernel refused, I/O error).
pub const EXIT_FAILURE: u8 = 1;

#[derive(Debug, Parser)]
#[command(
    name = "sensor",
    version,
    about = "eBPF runtime enforcement and telemetry agent"
)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "SENSOR_LOG_FORMAT")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load the kernel programs, enforce, and print one JSON object per event on stdout.
    Run(RunArgs),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// cgroup v2 directory to protect, with everything below it (repeatable, or comma-separated
    /// in the environment). The cgroup2 root itself is refused.
    #[arg(
        long = "scope-cgroup",
        value_name = "PATH",
        required = true,
        env = "SENSOR_SCOPE_CGROUP",
        value_delimiter = ','
    )]
    pub scope_cgroups: Vec<PathBuf>,
    /// What a match on a blocked destination does: `enforce` denies the call (EPERM),
    /// `audit` allows it and reports it.
    #[arg(long, value_enum, default_value_t = Mode::Enforce, env = "SENSOR_MODE")]
    pub mode: Mode,
    /// Upper bound on the delay between a kernel event and its output, in milliseconds
    /// (the reader's timer drain; the kernel wakes the reader earlier once
    /// --wakeup-bytes are waiting).
    #[arg(long, value_name = "MS", default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=1000), env = "SENSOR_DRAIN_INTERVAL_MS")]
    pub drain_interval_ms: u64,
    /// Unconsumed ring buffer bytes at which the kernel wakes the reader.
    #[arg(long, value_name = "BYTES", default_value_t = 256 * 1024, env = "SENSOR_WAKEUP_BYTES")]
    pub wakeup_bytes: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Deny: the caller gets EPERM, and the event says `blocked`.
    Enforce,
    /// Allow, and report: the event says `audited`.
    Audit,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Print a clap error as one line (help and version print in full) and pick the exit code.
pub fn usage_error(err: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match err.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = err.print();
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!(
                "sensor: error: {} (see 'sensor --help')",
                one_line(&err.render().to_string())
            );
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// The first paragraph of a clap error on one line, without the `error: ` prefix.
fn one_line(rendered: &str) -> String {
    let text: Vec<&str> = rendered
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect();
    let text = text.join(" ");
    text.strip_prefix("error: ").unwrap_or(&text).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_is_required_and_mode_defaults_to_enforce() {
        assert!(Cli::try_parse_from(["sensor", "run"]).is_err());
        let cli = Cli::try_parse_from([
            "sensor",
            "run",
            "--scope-cgroup",
            "/a",
            "--scope-cgroup",
            "/b",
        ])
        .unwrap();
        let Command::Run(args) = cli.command;
        assert_eq!(
            args.scope_cgroups,
            [PathBuf::from("/a"), PathBuf::from("/b")]
        );
        assert_eq!(args.mode, Mode::Enforce);
    }

    #[test]
    fn usage_errors_fit_on_one_line() {
        let err = Cli::try_parse_from(["sensor", "run"]).unwrap_err();
        let line = one_line(&err.render().to_string());
        assert!(line.contains("--scope-cgroup"), "{line}");
        assert!(!line.contains('\n') && !line.starts_with("error"), "{line}");
    }

    #[test]
    fn bad_mode_is_a_usage_error() {
        let err = Cli::try_parse_from(["sensor", "run", "--scope-cgroup", "/a", "--mode", "block"])
            .unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::InvalidValue);
    }
}
