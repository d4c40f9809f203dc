//! `sensor`: the userspace side of the agent.
//!
//! - [`scope`]: scope roots (cgroup v2 directories) and their validation;
//! - [`destinations`]: blocked destination prefixes (the built-in metadata list);
//! - [`tracefs`]: syscall tracepoint discovery and layout checks;
//! - [`programs`]: the embedded eBPF object, loading, map filling and attachment;
//! - [`event`]: checked decoding of ring buffer records into domain events;
//! - [`output`]: the JSON lines event format;
//! - [`counters`]: kernel and userspace counters;
//! - [`run`]: `sensor run`, wiring the above together.

pub mod cli;
pub mod counters;
pub mod destinations;
pub mod event;
pub mod logging;
pub mod output;
pub mod programs;
pub mod run;
pub mod scope;
pub mod tracefs;
