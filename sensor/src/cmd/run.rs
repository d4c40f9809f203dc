//! `sensor run`: its flags, validated into one [`RunConfig`] before anything is loaded (a bad
//! flag, policy or path attaches nothing and exits 2), then the daemon.

use std::{path::PathBuf, process::ExitCode};

use clap::{Args, ValueEnum};
use sensor_common::Action;

use super::{DEFAULT_SOCKET, EXIT_FAILURE, EXIT_USAGE};
use crate::{
    daemon::{self, RunConfig, RunError},
    kernel::TierChoice,
    sinks::export::{self, Destination, ExportFlags, Format},
};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// cgroup v2 directory to protect, with everything below it (repeatable, or comma-separated
    /// in the environment), added to the policy's scope.cgroups. The cgroup2 root itself is
    /// refused. With neither: the kubelet's pod parent cgroup on a Kubernetes node.
    #[arg(
        long = "scope-cgroup",
        value_name = "PATH",
        env = "SENSOR_SCOPE_CGROUP",
        value_delimiter = ','
    )]
    pub scope_cgroups: Vec<PathBuf>,
    /// Without --policy: the action of every rule of the built-in default policy. `enforce`
    /// (the default) denies: a listed destination gets EPERM, a privilege change (set-id
    /// chmod, ...) fails with EPERM on the LSM tier or its caller is killed on the kill tier;
    /// `audit` allows and reports.
    #[arg(long, value_enum, env = "SENSOR_MODE", conflicts_with = "policy")]
    pub mode: Option<Mode>,
    /// Policy file (docs/policy.md): its metadata, chmod and privilege rules, each enforce or
    /// audit, and its scope. Reloaded on change and on SIGHUP; an invalid new file is rejected
    /// and the active rules stay.
    #[arg(long, value_name = "FILE", env = "SENSOR_POLICY")]
    pub policy: Option<PathBuf>,
    /// Upper bound on the delay between a kernel event and its output when events are rare,
    /// in milliseconds (a quiet reader's timer drain; the kernel wakes it earlier once
    /// --wakeup-bytes are waiting). While events come, the reader drains every 250 µs.
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
    /// Event streams (`GetEvents` calls: `sensor tail`, SIEM forwarders; live or replay) served
    /// at once; one more is refused with `ResourceExhausted` (counted). Each holds at most its
    /// queue (`--subscriber-queue`), so this bounds their memory.
    #[arg(long, value_name = "N", default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=100_000), env = "SENSOR_MAX_STREAMS")]
    pub max_streams: u64,
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
    /// Cluster name reported in every event (the stream, JSON, OCSF, syslog and OTLP
    /// exports), for fleets of several clusters: letters, digits, `.`, `_`, `-`.
    #[arg(long, value_name = "NAME", value_parser = parse_cluster_name, env = "SENSOR_CLUSTER_NAME")]
    pub cluster_name: Option<String>,
    /// Pin every link (and the event ring buffer) under this bpffs directory, so that
    /// enforcement survives the daemon: a crash, a stop or an upgrade leaves the kernel
    /// enforcing, and the next daemon attaches its own programs before it retires the pinned
    /// ones (no gap) and reads the events the kernel queued meanwhile. `sensor uninstall`
    /// removes the pins. Without it, enforcement ends with the process.
    #[arg(long, value_name = "DIR", env = "SENSOR_PIN_DIR")]
    pub pin_dir: Option<PathBuf>,
    /// Enforcement tier of the privilege hooks (chmod family, set-id file creation, set*id,
    /// capset, set-id exec, file capabilities, packet sockets). `auto`: per hook, BPF LSM where
    /// the kernel runs it, else the override tier (fmod_ret on the hook's security_* function),
    /// both failing the call with EPERM before anything changes, else the kill tier (syscall
    /// tracepoints, SIGKILL). `lsm`, `override`: that tier or fail at start-up. `kill`: the kill
    /// tier only. `sensor status` names the tier of every hook.
    #[arg(long, value_enum, default_value_t = Tier::Auto, env = "SENSOR_TIER")]
    pub tier: Tier,
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
    #[arg(long = "export-format", value_enum, default_value_t = ExportFormat::Json, env = "SENSOR_EXPORT_FORMAT")]
    pub format: ExportFormat,
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Deny: the caller gets EPERM, and the event says `blocked`.
    Enforce,
    /// Allow, and report: the event says `audited`.
    Audit,
}

/// `--tier`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Tier {
    /// Per hook, the best tier the running kernel accepts: BPF LSM, then override, then kill.
    Auto,
    /// BPF LSM or fail at start-up (naming the hook and the kernel's answer).
    Lsm,
    /// fmod_ret on the hooks' security_* functions (for kernels with BPF LSM built but not
    /// active) or fail at start-up.
    Override,
    /// The kill tier only (syscall tracepoints), even where a better tier would load.
    Kill,
}

/// `--cluster-name`: 1 to 253 of `A-Z a-z 0-9 . _ -` (it goes into syslog structured data and
/// CEF unescaped-safe, and into OTLP resource attributes).
fn parse_cluster_name(s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > 253 {
        return Err("1 to 253 characters".into());
    }
    match s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        Some(c) => Err(format!(
            "{c:?} is not allowed (letters, digits, '.', '_' and '-')"
        )),
        None => Ok(s.to_owned()),
    }
}

/// `--export-format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// One event per line, the field names of the event stream (docs/events.md).
    Json,
    /// One OCSF 1.5.0 object per line (docs/export.md).
    Ocsf,
    /// One ArcSight CEF line per event (docs/export.md, 'CEF mapping'); syslog and file
    /// destinations.
    Cef,
}

/// Entry point for `sensor run`; errors become one line on stderr and an exit code.
pub fn main(args: RunArgs) -> ExitCode {
    let result = config(&args).and_then(daemon::run);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("sensor: error: {}", crate::error_chain(&err));
            ExitCode::from(if err.is_usage() {
                EXIT_USAGE
            } else {
                EXIT_FAILURE
            })
        }
    }
}

/// The export flags, for the exporters' validation.
fn export_flags_of(args: &ExportArgs) -> ExportFlags {
    ExportFlags {
        destinations: args.destinations.clone(),
        format: match args.format {
            ExportFormat::Json => Format::Json,
            ExportFormat::Ocsf => Format::Ocsf,
            ExportFormat::Cef => Format::Cef,
        },
        max_bytes: args.max_bytes,
        max_files: args.max_files,
        fold_window: args.fold_window,
        state_dir: args.state_dir.clone(),
    }
}

/// Validate every flag into the daemon's configuration.
pub fn config(args: &RunArgs) -> Result<RunConfig, RunError> {
    let mode = args.mode.map(|m| match m {
        Mode::Enforce => Action::Enforce,
        Mode::Audit => Action::Audit,
    });
    RunConfig::validate(daemon::Flags {
        policy: args.policy.clone(),
        mode,
        scope_cgroups: args.scope_cgroups.clone(),
        socket: args.socket.clone(),
        listen_tcp: args.listen_tcp,
        tls_cert: args.tls_cert.clone(),
        tls_key: args.tls_key.clone(),
        tls_client_ca: args.tls_client_ca.clone(),
        pin_dir: args.pin_dir.clone(),
        node_name: args.node_name.clone(),
        cluster_name: args.cluster_name.clone(),
        journal_dir: args.journal_dir.clone(),
        journal_max_bytes: args.journal_max_bytes,
        journal_segment_bytes: args.journal_segment_bytes,
        journal_max_age: args.journal_max_age,
        stdout_events: args.stdout_events,
        export: export_flags_of(&args.export),
        drain_interval_ms: args.drain_interval_ms,
        wakeup_bytes: args.wakeup_bytes,
        subscriber_queue: usize::try_from(args.subscriber_queue).unwrap_or(usize::MAX),
        max_streams: usize::try_from(args.max_streams).unwrap_or(usize::MAX),
        kubeconfig: args.kubeconfig.clone(),
        enrichment_wait_ms: args.enrichment_wait_ms,
        enrichment_queue: args.enrichment_queue,
        tier: match args.tier {
            Tier::Auto => TierChoice::Auto,
            Tier::Lsm => TierChoice::Lsm,
            Tier::Override => TierChoice::Override,
            Tier::Kill => TierChoice::Kill,
        },
        metrics_addr: args.metrics_addr,
        proc_root: args.proc_root.clone(),
    })
}

#[cfg(test)]
mod tests {
    use std::{path::Path, time::Duration};

    use super::*;
    use crate::sinks::export::{DEFAULT_MAX_BYTES, DEFAULT_MAX_FILES, configs};

    fn export_flags(extra: &[&str]) -> Result<ExportFlags, String> {
        use clap::Parser as _;
        let mut argv = vec!["sensor", "run"];
        argv.extend_from_slice(extra);
        match super::super::Cli::try_parse_from(argv) {
            Ok(cli) => match cli.command {
                super::super::Command::Run(args) => Ok(export_flags_of(&args.export)),
                _ => unreachable!(),
            },
            Err(e) => Err(e.render().to_string()),
        }
    }

    #[test]
    fn bad_export_flags_name_the_flag_and_what_is_wrong() {
        let err = export_flags(&["--export", "syslog"]).unwrap_err();
        assert!(
            err.contains("--export") && err.contains("expected stdout, file:PATH, syslog://"),
            "{err}"
        );
        let err = export_flags(&["--export-fold-window", "2h"]).unwrap_err();
        assert!(
            err.contains("--export-fold-window") && err.contains("at most 1h"),
            "{err}"
        );
        let err = export_flags(&["--export-max-files", "1"]).unwrap_err();
        assert!(err.contains("--export-max-files"), "{err}");
        let err = export_flags(&["--export-format", "xml"]).unwrap_err();
        assert!(err.contains("--export-format"), "{err}");

        let j = Path::new("/var/lib/sensor/journal");
        let args = export_flags(&["--export", "stdout"]).unwrap();
        let err = configs(&args, j, &crate::event::proto::Origin::node("n"), true).unwrap_err();
        assert!(err.contains("--stdout-events"), "{err}");
        let args = export_flags(&["--export", "file:/nonexistent-dir/x.jsonl"]).unwrap();
        let err = configs(&args, j, &crate::event::proto::Origin::node("n"), false).unwrap_err();
        assert!(
            err.contains("directory /nonexistent-dir does not exist"),
            "{err}"
        );
        let args = export_flags(&["--export", "stdout", "--export", "stdout"]).unwrap();
        let err = configs(&args, j, &crate::event::proto::Origin::node("n"), false).unwrap_err();
        assert_eq!(err, "--export stdout: given twice");
        let args = export_flags(&["--export", "stdout", "--export", "file:/tmp/e.jsonl"]).unwrap();
        let c = configs(&args, j, &crate::event::proto::Origin::node("n"), false).unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c[1].state_dir, Path::new("/var/lib/sensor/export"));
        assert_eq!(c[1].fold_window, Duration::from_secs(10));
        assert_eq!(
            (c[1].max_bytes, c[1].max_files),
            (DEFAULT_MAX_BYTES, DEFAULT_MAX_FILES)
        );
    }
}
