//! The `sensor` binary: argument parsing and wiring only; the work lives in the library.

use std::process::ExitCode;

use clap::Parser as _;
use sensor::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return sensor::cli::usage_error(&err),
    };
    sensor::logging::init(cli.log_format);
    match cli.command {
        Command::Run(args) => sensor::run::main(args),
        Command::Tail(args) => sensor::tail::main(args),
    }
}
