//! The command line: the only code that sees clap. One file per subcommand, each with its
//! arguments and its `main`; `sensor run`'s flags become one validated
//! [`crate::daemon::RunConfig`] before anything is loaded. Every flag a DaemonSet sets also
//! reads `SENSOR_*`.

pub mod advise;
pub mod client;
pub mod completions;
pub mod demo;
mod demo_step;
pub mod exec;
mod floor;
pub mod health;
pub mod logging;
pub mod policy;
pub mod policy_test;
pub mod posture;
pub mod recorded;
pub mod run;
pub mod status;
pub mod tail;
pub mod uninstall;

use std::{path::PathBuf, process::ExitCode};

use clap::{Args, Parser, Subcommand, ValueEnum};

use self::{
    advise::AdviseArgs, completions::Shell, demo::DemoArgs, exec::ExecArgs, health::HealthArgs,
    policy::PolicyCommand, posture::PostureArgs, run::RunArgs, status::StatusArgs, tail::TailArgs,
    uninstall::UninstallArgs,
};

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

// Parsed once per process: the size of `RunArgs` does not matter.
#[allow(clippy::large_enum_variant)]
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
    /// Hardening advice from what the node recorded: a metadata-egress NetworkPolicy per
    /// namespace, the prevent-chmod seccomp profile and securityContext patches per workload.
    Advise(AdviseArgs),
    /// The node's hardening posture: kernel, BPF LSM (and how to turn it on), BTF, a pending
    /// reboot, lockdown, cgroup layout, and the tier each protection runs on.
    Posture(PostureArgs),
    /// Remove everything a `sensor run --pin-dir` left pinned: its links detach and
    /// enforcement ends. Stop the daemon first (a running one still holds its programs).
    Uninstall(UninstallArgs),
    /// Ask the daemon's gRPC health service (exit 0 when SERVING, else 1): for exec probes.
    Health(HealthArgs),
    /// Run a command inside a protected scope cgroup: `sensor exec -- chmod u+s ./f`.
    Exec(ExecArgs),
    /// Show every protection working on this host, safely: a throwaway network namespace (the
    /// metadata addresses on its own loopback) and cgroup, a sensor of its own, a scripted set
    /// of attempts in enforce and then in audit, each with its event. Needs root.
    Demo(DemoArgs),
    /// Print a shell completion script: `source <(sensor completions bash)`.
    Completions {
        #[arg(value_enum)]
        shell: Shell,
    },
    /// Write the man pages into DIR (`cargo xtask dist` does).
    #[command(hide = true)]
    Man {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// One step of `sensor demo`, run by the demo in the network namespace and cgroup it made.
    #[command(hide = true)]
    DemoStep(demo::StepArgs),
    /// The benchmark's floor: the kill tier's hooks with empty programs, until SIGINT/SIGTERM
    /// (`cargo xtask bench`).
    #[command(hide = true)]
    Floor {
        #[arg(value_enum)]
        which: crate::kernel::floor::Floor,
    },
}

/// Where a pinned daemon keeps its links by default (the DaemonSet's `--pin-dir`).
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/sensor";

/// The `sensor` binary: parse, set up logging, run the subcommand.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return usage_error(&err),
    };
    logging::init(cli.log_format);
    match cli.command {
        Command::Run(args) => run::main(args),
        Command::Tail(args) => tail::main(args),
        Command::Status(args) => status::main(args),
        Command::Policy(cmd) => policy::main(cmd),
        Command::Advise(args) => advise::main(&args),
        Command::Posture(args) => posture::main(&args),
        Command::Uninstall(args) => uninstall::main(&args),
        Command::Health(args) => health::main(args),
        Command::Exec(args) => exec::main(&args),
        Command::Demo(args) => demo::main(&args),
        Command::Completions { shell } => completions::completions(shell),
        Command::Man { dir } => completions::man(&dir),
        Command::DemoStep(args) => demo::step(&args),
        Command::Floor { which } => floor::main(which),
    }
}

/// The daemon a client command talks to.
#[derive(Debug, Args, Clone)]
pub struct DaemonAddr {
    /// Daemon to ask: a unix socket path (`unix:PATH` or `/PATH`) or `https://HOST:PORT`.
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_SOCKET, env = "SENSOR_SERVER")]
    pub server: String,
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
