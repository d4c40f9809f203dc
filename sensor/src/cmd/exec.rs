//! `sensor exec [--scope PATH] -- COMMAND [ARGS...]`: run a command inside a protected scope
//! cgroup, so what it does is decided and reported at once. This process joins the cgroup,
//! runs the command as its child and waits for it, exiting as it did (128 + N for a signal).
//! Staying in the cgroup meanwhile gives the kill tier a live process to reach the command's
//! files through, so a killed set-id chmod is reverted like one in a container.

use std::{
    os::unix::process::ExitStatusExt as _,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use clap::Args;

use super::{DaemonAddr, EXIT_FAILURE, EXIT_USAGE, status::fetch};
use crate::{attribution::cgroups::cgroup2_root, daemon::OWN_SCOPE};

/// How long this process stays in the cgroup after its command was SIGKILLed.
const REVERT_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// The scope cgroup to run the command in. Default: the first scope of the running daemon
    /// (asked over `--server`), else the sensor's own scope cgroup when it exists.
    #[arg(long, value_name = "PATH")]
    pub scope: Option<PathBuf>,
    #[command(flatten)]
    pub daemon: DaemonAddr,
    /// The command and its arguments.
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    pub command: Vec<String>,
}

pub fn main(args: &ExecArgs) -> ExitCode {
    let scope = match args
        .scope
        .clone()
        .map_or_else(|| default_scope(&args.daemon), Ok)
    {
        Ok(scope) => scope,
        Err(msg) => {
            eprintln!("sensor exec: error: {msg}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if let Err(msg) = join(&scope) {
        eprintln!("sensor exec: error: {msg}");
        return ExitCode::from(EXIT_FAILURE);
    }
    let (program, rest) = args.command.split_first().expect("clap requires a command");
    let waited = Command::new(program)
        .args(rest)
        .spawn()
        .and_then(|mut child| {
            // Like system(3): a terminal's Ctrl-C is the command's to handle, not ours (set after
            // the spawn: an ignored signal would stay ignored in the command).
            for sig in [libc::SIGINT, libc::SIGQUIT] {
                // SAFETY: setting a signal's disposition to ignored.
                unsafe { libc::signal(sig, libc::SIG_IGN) };
            }
            child.wait()
        });
    match waited {
        Ok(status) => match status.signal() {
            Some(sig) => {
                if sig == libc::SIGKILL {
                    // The kill tier's SIGKILL, perhaps: the daemon reverts set-id bits through
                    // a live process of the cgroup, this one. Give it the time.
                    std::thread::sleep(REVERT_GRACE);
                }
                eprintln!("sensor exec: {program}: killed by signal {sig}");
                ExitCode::from(128 + sig as u8)
            }
            None => ExitCode::from(status.code().map_or(1, |c| c as u8)),
        },
        Err(err) => {
            eprintln!("sensor exec: error: {program}: {err}");
            ExitCode::from(if err.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            })
        }
    }
}

/// The running daemon's first scope, else the sensor's own scope cgroup.
fn default_scope(daemon: &DaemonAddr) -> Result<PathBuf, String> {
    if let Ok(status) = fetch(daemon)
        && let Some(scope) = status.scopes.first()
    {
        return Ok(PathBuf::from(&scope.path));
    }
    let own = cgroup2_root()
        .map_err(|e| format!("no scope: {e}"))?
        .join(OWN_SCOPE);
    if own.is_dir() {
        Ok(own)
    } else {
        Err(format!(
            "no scope: no sensor answers at {} and {} does not exist; start `sensor run` first, or give --scope PATH",
            daemon.server,
            own.display()
        ))
    }
}

/// Move this process into the cgroup `scope` (its children follow).
fn join(scope: &Path) -> Result<(), String> {
    let procs = scope.join("cgroup.procs");
    std::fs::write(&procs, std::process::id().to_string())
        .map_err(|e| format!("joining {}: {e}", scope.display()))
}
