//! Command-line interface (clap derive). Every flag a DaemonSet sets also reads `SENSOR_*`.

pub mod client;
pub mod logging;
pub mod status;
pub mod tail;

use std::{path::PathBuf, process::ExitCode};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::sinks::export::{self, Destination, Format};

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
    /// Load the kernel programs, enforce, journal every event and serve the event stream.
    Run(RunArgs),
    /// Stream live events from the daemon, replay stored ones, or replay a JSON-lines file.
    Tail(TailArgs),
    /// Show the daemon's version, attached programs and their tier, counters and journal range.
    Status(StatusArgs),
    /// Policy files (format: docs/policy.md).
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Remove everything a `sensor run --pin-dir` left pinned: its links detach and
    /// enforcement ends. Stop the daemon first (a running one still holds its programs).
    Uninstall(UninstallArgs),
    /// Ask the daemon's gRPC health service (exit 0 when SERVING, else 1): for exec probes.
    Health(HealthArgs),
}

/// Where a pinned daemon keeps its links by default (the DaemonSet's `--pin-dir`).
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/sensor";

#[derive(Debug, Args)]
pub struct UninstallArgs {
    /// The bpffs directory given to `sensor run --pin-dir`.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_PIN_DIR, env = "SENSOR_PIN_DIR")]
    pub pin_dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct HealthArgs {
    /// Daemon to ask: a unix socket path (`unix:PATH` or `/PATH`) or `https://HOST:PORT`.
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_SOCKET, env = "SENSOR_SERVER")]
    pub server: String,
    /// Service to check: `` (empty, the default) is liveness, `sensor.v1.Sensor` is readiness
    /// (programs attached and, on Kubernetes, the pod cache synced).
    #[arg(long, value_name = "NAME", default_value = "")]
    pub service: String,
    /// Give up (exit 1) after this long.
    #[arg(long, value_name = "MS", default_value_t = 3000)]
    pub timeout_ms: u64,
    #[command(flatten)]
    pub tls: ClientTls,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Check policy files: exit 0 when all are valid, else every error as
    /// `file:line:column: what is wrong` and exit 2.
    Check {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Print the built-in default policy.
    Default,
    /// Print the policy the running daemon enforces (name, source, text).
    Show(StatusArgs),
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Daemon to ask: a unix socket path (`unix:PATH` or `/PATH`) or `https://HOST:PORT`.
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_SOCKET, env = "SENSOR_SERVER")]
    pub server: String,
    /// Print the status as one JSON object.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub tls: ClientTls,
}

/// TLS settings of a client of an `https://` daemon.
#[derive(Debug, Args, Clone, Default)]
pub struct ClientTls {
    /// CA certificate to verify an https server.
    #[arg(long, value_name = "PATH", env = "SENSOR_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate for mutual TLS.
    #[arg(
        long,
        value_name = "PATH",
        env = "SENSOR_TLS_CLIENT_CERT",
        requires = "tls_client_key"
    )]
    pub tls_client_cert: Option<PathBuf>,
    /// Client key for mutual TLS.
    #[arg(
        long,
        value_name = "PATH",
        env = "SENSOR_TLS_CLIENT_KEY",
        requires = "tls_client_cert"
    )]
    pub tls_client_key: Option<PathBuf>,
}

/// The daemon's default API socket.
pub const DEFAULT_SOCKET: &str = "/run/sensor/sensor.sock";

#[derive(Debug, Args)]
pub struct RunArgs {
    /// cgroup v2 directory to protect, with everything below it (repeatable, or comma-separated
    /// in the environment). The cgroup2 root itself is refused. Default: the policy's
    /// scope.cgroups, else the kubelet's pod parent cgroup on a Kubernetes node.
    #[arg(
        long = "scope-cgroup",
        value_name = "PATH",
        env = "SENSOR_SCOPE_CGROUP",
        value_delimiter = ','
    )]
    pub scope_cgroups: Vec<PathBuf>,
    /// Without --policy: the action of every rule of the built-in default policy. `enforce`
    /// (the default) denies a listed destination (EPERM) and kills a set-id chmod's caller,
    /// `audit` allows and reports both.
    #[arg(long, value_enum, env = "SENSOR_MODE", conflicts_with = "policy")]
    pub mode: Option<Mode>,
    /// Policy file (docs/policy.md): its metadata rules, each enforce or audit, and its
    /// scope.cgroups. Reloaded on change and on SIGHUP; an invalid new file is rejected and the
    /// active rules stay.
    #[arg(long, value_name = "FILE", env = "SENSOR_POLICY")]
    pub policy: Option<PathBuf>,
    /// Upper bound on the delay between a kernel event and its output, in milliseconds
    /// (the reader's timer drain; the kernel wakes the reader earlier once
    /// --wakeup-bytes are waiting).
    #[arg(long, value_name = "MS", default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=1000), env = "SENSOR_DRAIN_INTERVAL_MS")]
    pub drain_interval_ms: u64,
    /// Unconsumed ring buffer bytes at which the kernel wakes the reader.
    #[arg(long, value_name = "BYTES", default_value_t = 256 * 1024, env = "SENSOR_WAKEUP_BYTES")]
    pub wakeup_bytes: u64,
    /// Also print every event as one JSON object per line on stdout.
    #[arg(long, env = "SENSOR_STDOUT_EVENTS")]
    pub stdout_events: bool,
    /// Unix socket of the gRPC API (created mode 0600, root only).
    #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET, env = "SENSOR_SOCKET")]
    pub socket: PathBuf,
    /// Also serve the gRPC API on TCP. Needs --tls-cert and --tls-key: plain TCP is refused.
    #[arg(long, value_name = "ADDR:PORT", env = "SENSOR_LISTEN_TCP")]
    pub listen_tcp: Option<std::net::SocketAddr>,
    /// PEM certificate (chain) of the TCP listener.
    #[arg(long, value_name = "PATH", env = "SENSOR_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of the TCP listener.
    #[arg(long, value_name = "PATH", env = "SENSOR_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA that client certificates must chain to (turns on mutual TLS).
    #[arg(long, value_name = "PATH", env = "SENSOR_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
    /// Directory of the event journal.
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/var/lib/sensor/journal",
        env = "SENSOR_JOURNAL_DIR"
    )]
    pub journal_dir: PathBuf,
    /// Journal size bound; the oldest segments are dropped (and counted) beyond it.
    #[arg(long, value_name = "BYTES", default_value_t = 256 << 20, env = "SENSOR_JOURNAL_MAX_BYTES")]
    pub journal_max_bytes: u64,
    /// Journal segment size.
    #[arg(long, value_name = "BYTES", default_value_t = 8 << 20, env = "SENSOR_JOURNAL_SEGMENT_BYTES")]
    pub journal_segment_bytes: u64,
    /// Journal age bound (e.g. `7d`); older segments are dropped (and counted).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, env = "SENSOR_JOURNAL_MAX_AGE")]
    pub journal_max_age: Option<std::time::Duration>,
    /// Events a gRPC subscriber may have queued before it starts losing them (each loss is
    /// counted and reported to it in-band).
    #[arg(long, value_name = "N", default_value_t = 4096, value_parser = clap::value_parser!(u64).range(2..=1_000_000), env = "SENSOR_SUBSCRIBER_QUEUE")]
    pub subscriber_queue: u64,
    /// Kubeconfig for the pod watcher (otherwise $KUBECONFIG, the in-cluster service account,
    /// ~/.kube/config; with none of them the sensor runs in host mode: no pod attribution).
    #[arg(long, value_name = "PATH", env = "SENSOR_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// How long an event whose pod is not known yet waits for it before it goes out `partial`.
    #[arg(
        long,
        value_name = "MS",
        default_value_t = 2000,
        env = "SENSOR_ENRICHMENT_WAIT_MS"
    )]
    pub enrichment_wait_ms: u64,
    /// Events that may wait for their pod at once; beyond, they go out `partial` (counted).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 10_000,
        env = "SENSOR_ENRICHMENT_QUEUE"
    )]
    pub enrichment_queue: usize,
    /// Node name reported in events (on Kubernetes, from the downward API).
    #[arg(long, value_name = "NAME", env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// Pin every link (and the event ring buffer) under this bpffs directory, so that
    /// enforcement survives the daemon: a crash, a stop or an upgrade leaves the kernel
    /// enforcing, and the next daemon attaches its own programs before it retires the pinned
    /// ones (no gap) and reads the events the kernel queued meanwhile. `sensor uninstall`
    /// removes the pins. Without it, enforcement ends with the process.
    #[arg(long, value_name = "DIR", env = "SENSOR_PIN_DIR")]
    pub pin_dir: Option<PathBuf>,
    /// Enforcement tier of the privilege hooks (chmod family, set-id file creation, set*id,
    /// capset, set-id exec, file capabilities). `auto`: BPF LSM for every hook the running
    /// kernel accepts (the call fails with EPERM, nothing changes), the kill tier (syscall
    /// tracepoints, SIGKILL) for the others. `lsm`: LSM or fail at start-up. `kill`: the kill
    /// tier only. `sensor status` names the tier of every hook.
    #[arg(long, value_enum, default_value_t, env = "SENSOR_TIER")]
    pub tier: crate::kernel::TierChoice,
    /// Serve Prometheus metrics (`/metrics`) and `/healthz`, `/readyz` over plain HTTP on this
    /// address. Off by default; the DaemonSet sets it for scraping.
    #[arg(long, value_name = "ADDR:PORT", env = "SENSOR_METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// The host's /proc (process details and file names of events); in a container, a
    /// read-only mount of the host's /proc (the DaemonSet uses /host/proc).
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/proc",
        env = "SENSOR_PROC_ROOT"
    )]
    pub proc_root: PathBuf,
    #[command(flatten)]
    pub export: ExportArgs,
}

/// SIEM export (docs/export.md).
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Export events from the journal: `stdout` or `file:PATH` (repeatable, or comma-separated
    /// in the environment). Resumes after a restart where it stopped.
    #[arg(long = "export", value_name = "DEST", value_parser = Destination::parse, env = "SENSOR_EXPORT", value_delimiter = ',')]
    pub destinations: Vec<Destination>,
    /// Format of exported lines: `json` (the event format) or `ocsf` (OCSF 1.5.0 objects).
    #[arg(long = "export-format", value_enum, default_value_t = Format::Json, env = "SENSOR_EXPORT_FORMAT")]
    pub format: Format,
    /// Rotate an export file when it reaches this size (bytes).
    #[arg(long = "export-max-bytes", value_name = "BYTES", default_value_t = export::DEFAULT_MAX_BYTES, value_parser = clap::value_parser!(u64).range(4096..), env = "SENSOR_EXPORT_MAX_BYTES")]
    pub max_bytes: u64,
    /// Export files kept: the active one and N-1 rotated ones (PATH.1 newest); older ones are
    /// deleted.
    #[arg(long = "export-max-files", value_name = "N", default_value_t = export::DEFAULT_MAX_FILES, value_parser = clap::value_parser!(u32).range(2..=1000), env = "SENSOR_EXPORT_MAX_FILES")]
    pub max_files: u32,
    /// Flood control: identical events within this window are exported as one record with a
    /// count (the first of each window at once); `0s` turns it off. At most 1h.
    #[arg(long = "export-fold-window", value_name = "DURATION", default_value = export::DEFAULT_FOLD_WINDOW, value_parser = parse_fold_window, env = "SENSOR_EXPORT_FOLD_WINDOW")]
    pub fold_window: std::time::Duration,
    /// Where exporters keep their cursors. Default: `export` beside the journal directory.
    #[arg(
        long = "export-state-dir",
        value_name = "DIR",
        env = "SENSOR_EXPORT_STATE_DIR"
    )]
    pub state_dir: Option<PathBuf>,
}

fn parse_fold_window(s: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("'{s}': {e} (e.g. 10s, 1m, 0s)"))?;
    if d > std::time::Duration::from_secs(3600) {
        return Err(format!("'{s}': at most 1h"));
    }
    Ok(d)
}

#[derive(Debug, Args)]
pub struct TailArgs {
    /// Daemon to read from: a unix socket path (`unix:PATH` or `/PATH`) or `https://HOST:PORT`.
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_SOCKET, env = "SENSOR_SERVER")]
    pub server: String,
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
    /// Only these kinds (connect, chmod, privilege, exec, exit, lost); repeatable or comma-separated.
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
    /// Stop after N events (loss records are always printed and not counted).
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,
    /// Replay a JSON-lines file (from `-o json` or `sensor run --stdout-events`) instead of
    /// asking a daemon.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["follow", "server"])]
    pub file: Option<PathBuf>,
    #[command(flatten)]
    pub tls: ClientTls,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TailFormat {
    /// One JSON object per line (the stable event format).
    Json,
    /// One readable line per event, coloured on a terminal.
    Compact,
    /// One OCSF 1.5.0 object per line (as `sensor run --export-format ocsf`).
    Ocsf,
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
    fn scopes_repeat_and_the_mode_is_optional() {
        assert!(
            Cli::try_parse_from(["sensor", "run", "--policy", "p.yaml", "--mode", "audit"])
                .is_err(),
            "--mode conflicts with --policy"
        );
        let cli = Cli::try_parse_from([
            "sensor",
            "run",
            "--scope-cgroup",
            "/a",
            "--scope-cgroup",
            "/b",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("not run")
        };
        assert_eq!(
            args.scope_cgroups,
            [PathBuf::from("/a"), PathBuf::from("/b")]
        );
        assert_eq!(args.mode, None);
    }

    #[test]
    fn usage_errors_fit_on_one_line() {
        let err = Cli::try_parse_from(["sensor", "run", "--scope-cgroup"]).unwrap_err();
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
