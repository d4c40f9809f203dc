//! What the fuzz targets share: a scratch directory per input, and the journal's record
//! framing as the format documents it (the oracle the journal target checks records against).

use std::path::{Path, PathBuf};

/// A fresh directory for one input (on tmpfs when there is one), removed on drop.
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new(what: &str) -> Self {
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let base = Path::new("/dev/shm");
        let base = if base.is_dir() {
            base.to_owned()
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!(
            "sensor-fuzz-{what}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch directory");
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// For a directory the whole run uses: removed when the process exits (libFuzzer ends a
    /// run with `exit`), not on drop.
    pub fn keep_until_exit(mut self) -> PathBuf {
        extern "C" fn remove() {
            let dirs = AT_EXIT
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for dir in dirs.iter() {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
        static AT_EXIT: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
        static REGISTER: std::sync::Once = std::sync::Once::new();
        // SAFETY: `remove` is a plain function that only touches its own static.
        REGISTER.call_once(|| unsafe {
            libc::atexit(remove);
        });
        // `self` then drops with no directory to remove.
        let dir = std::mem::take(&mut self.0);
        AT_EXIT
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(dir.clone());
        dir
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.0.as_os_str().is_empty() {
            return;
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The magic that starts every segment file (docs: sensor/src/sinks/journal/format.rs).
pub const SEGMENT_MAGIC: &[u8; 8] = b"SNSRJNL\0";

/// One record as a segment frames it: `len u32 | crc32 u32 | seq u64 | time_ns i64 | payload`,
/// all little-endian, the crc over everything after it.
pub fn framed_record(seq: u64, time_ns: i64, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(16 + payload.len());
    body.extend_from_slice(&seq.to_le_bytes());
    body.extend_from_slice(&time_ns.to_le_bytes());
    body.extend_from_slice(payload);
    let mut out = Vec::with_capacity(8 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// `haystack` holds `needle` somewhere.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}
