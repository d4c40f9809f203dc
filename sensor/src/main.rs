//! The `sensor` binary: argument parsing and wiring only; the work lives in the library.

use std::process::ExitCode;

use clap::Parser as _;
use sensor::cli::{Cli, Command, EXIT_USAGE, PolicyCommand};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return sensor::cli::usage_error(&err),
    };
    sensor::logging::init(cli.log_format);
    match cli.command {
        Command::Run(args) => sensor::run::main(args),
        Command::Tail(args) => sensor::tail::main(args),
        Command::Status(args) => sensor::status::main(args),
        Command::Policy(cmd) => policy(cmd),
        Command::Uninstall(args) => sensor::pins::uninstall_main(&args.pin_dir),
        Command::Health(args) => sensor::health::main(args),
    }
}

fn policy(cmd: PolicyCommand) -> ExitCode {
    match cmd {
        PolicyCommand::Check { files } => {
            let errors = sensor::policy::check_files(&files);
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
        PolicyCommand::Show(args) => sensor::status::show_policy(args),
        PolicyCommand::Default => {
            print!("{}", sensor::policy::DEFAULT_POLICY_YAML);
            ExitCode::SUCCESS
        }
    }
}
