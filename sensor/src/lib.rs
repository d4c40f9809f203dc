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
