//! `sensor`: the userspace side of the agent. ARCHITECTURE.md at the repository root is the map;
//! in short, an event travels `kernel` -> `pipeline` (decode in `event`, attribution in
//! `attribution`) -> `sinks` (journal, live hub, exporters) -> `server` (gRPC, metrics), and
//! `policy` holds the rules in force. `cmd` is the only module that sees the command line.

pub mod attribution;
pub mod cmd;
pub mod daemon;
pub mod event;
pub mod kernel;
pub mod pipeline;
pub mod policy;
pub mod server;
pub mod sinks;

/// An error and its sources on one line, leaving out a source whose text the line already
/// holds.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut line = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = s.source();
    }
    line
}
