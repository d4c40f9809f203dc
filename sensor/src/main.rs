//! The `sensor` binary: argument parsing and wiring only; the work lives in the library.

use std::process::ExitCode;

use clap::Parser as _;
use sensor::cmd::{Cli, Command, EXIT_USAGE, PolicyCommand};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return sensor::cmd::usage_error(&err),
    };
    sensor::cmd::logging::init(cli.log_format);
    match cli.command {
        Command::Run(args) => sensor::daemon::main(args),
        Command::Tail(args) => sensor::cmd::tail::main(args),
        Command::Status(args) => sensor::cmd::status::main(args),
        Command::Policy(cmd) => policy(cmd),
        Command::Uninstall(args) => sensor::kernel::pins::uninstall_main(&args.pin_dir),
        Command::Health(args) => sensor::server::health::main(args),
    }
}

fn policy(cmd: PolicyCommand) -> ExitCode {
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
        PolicyCommand::Show(args) => sensor::cmd::status::show_policy(args),
        PolicyCommand::Default => {
            print!("{}", sensor_policy::DEFAULT_POLICY_YAML);
            ExitCode::SUCCESS
        }
    }
}
