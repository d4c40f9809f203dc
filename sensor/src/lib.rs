//! `sensor`: the userspace side of the agent. ARCHITECTURE.md at the repository root is the map;
//! in short, an event travels `kernel` -> `pipeline` (decode in `event`, attribution in
//! `attribution`) -> `sinks` (journal, live hub, exporters) -> `server` (gRPC, metrics), and
//! `policy` holds the rules in force. `cmd` is the only module that sees the command line.

pub mod attribution;
pub mod cmd;
pub mod daemon;
pub mod event;
#[cfg(test)]
mod fuzz_corpus;
pub mod hardening;
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

/// Helpers of the unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use std::{
        path::{Path, PathBuf},
        sync::atomic::{AtomicU64, Ordering},
    };

    /// A fresh directory under the system temp dir, removed on drop (also when a test fails).
    pub struct TestDir(pub PathBuf);

    impl TestDir {
        pub fn new(name: &str) -> Self {
            static COUNTER: AtomicU64 = AtomicU64::new(0);
            let path = std::env::temp_dir().join(format!(
                "sensor-unit-{}-{name}-{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).unwrap();
            Self(path)
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TestDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
