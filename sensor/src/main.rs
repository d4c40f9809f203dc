//! The `sensor` binary: everything lives in the library; `cmd` parses and dispatches.

fn main() -> std::process::ExitCode {
    sensor::cmd::main()
}
