//! `sensor policy`: check policy files, print the built-in default, show what the daemon runs.

use std::{path::PathBuf, process::ExitCode};

use clap::{Args, Subcommand};

use super::{DaemonAddr, EXIT_FAILURE, EXIT_USAGE, status::fetch};

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
    Show(ShowArgs),
    /// Dry run: what a candidate policy would have blocked or audited among the events the
    /// node recorded (journal or exported file), per rule, beside what the policies in force
    /// did.
    Test(super::policy_test::TestArgs),
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    #[command(flatten)]
    pub daemon: DaemonAddr,
    /// Print the policy as one JSON object (`name`, `source`, `text`).
    #[arg(long)]
    pub json: bool,
}

pub fn main(cmd: PolicyCommand) -> ExitCode {
    match cmd {
        PolicyCommand::Check { files } => {
            let errors = sensor_policy::check_files(&files);
            for e in &errors {
                eprintln!("{e}");
            }
            if errors.is_empty() {
                println!("{} policy file(s) valid", files.len());
                ExitCode::SUCCESS
            } else {
                eprintln!("sensor policy check: {} error(s)", errors.len());
                ExitCode::from(EXIT_USAGE)
            }
        }
        PolicyCommand::Show(args) => show(&args),
        PolicyCommand::Test(args) => super::policy_test::main(&args),
        PolicyCommand::Default => {
            print!("{}", sensor_policy::DEFAULT_POLICY_YAML);
            ExitCode::SUCCESS
        }
    }
}

/// `sensor policy show`: the policy the daemon runs.
fn show(args: &ShowArgs) -> ExitCode {
    match fetch(&args.daemon) {
        Ok(s) if args.json => {
            println!(
                "{}",
                serde_json::json!({"name": s.policy_name, "source": s.policy_source, "text": s.policy_text,
                    "policies": s.policies.iter().map(|p| serde_json::json!({
                        "name": p.name, "source": p.source, "mode": p.mode, "accepted": p.accepted,
                        "blocked": p.blocked, "audited": p.audited, "errors": p.errors})).collect::<Vec<_>>()})
            );
            ExitCode::SUCCESS
        }
        Ok(s) => {
            println!("# policy '{}' from {}", s.policy_name, s.policy_source);
            print!("{}", s.policy_text);
            if s.policies.len() > 1 {
                println!("\n# policies in force (blocked/audited since accepted):");
                for p in &s.policies {
                    let state = if p.accepted {
                        p.mode.as_str()
                    } else {
                        "REFUSED"
                    };
                    println!(
                        "#   {:<32} {:<8} {:>8} {:>8}  {}",
                        if p.name.is_empty() { "-" } else { &p.name },
                        state,
                        p.blocked,
                        p.audited,
                        p.source
                    );
                    for e in &p.errors {
                        println!("#     {e}");
                    }
                }
            }
            ExitCode::SUCCESS
        }
        Err(msg) => {
            eprintln!("sensor policy show: error: {msg}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}
