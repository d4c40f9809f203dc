//! An exporter's persisted state: the next sequence number to export, the open fold windows
//! and the active file's committed size. Written after every batch of lines (the lines first,
//! then this file, replaced atomically by rename), so after a restart the exporter continues
//! exactly after the last line it wrote.

use std::{
    fs,
    io::{self, Write as _},
    os::unix::fs::OpenOptionsExt as _,
    path::Path,
};

use prost::Message as _;
use sensor_proto::v1 as pb;
use serde::{Deserialize, Serialize};

use super::{
    fold::{Folder, Key, Window},
    sink::FileMark,
};

const VERSION: u32 = 1;

#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct State {
    pub version: u32,
    /// The next journal sequence number to export.
    pub cursor: u64,
    /// The active file when the state was written (file exporters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileMark>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub windows: Vec<SavedWindow>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct SavedWindow {
    key: Key,
    start_ns: i64,
    repeats: u64,
    first_time_ns: i64,
    first_seq: u64,
    /// The latest repeat, protobuf as hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last: Option<String>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

impl State {
    pub fn new(cursor: u64, file: Option<FileMark>, folder: &Folder) -> Self {
        let windows = folder
            .windows()
            .map(|(key, w)| SavedWindow {
                key: key.clone(),
                start_ns: w.start_ns,
                repeats: w.repeats,
                first_time_ns: w.first_time_ns,
                first_seq: w.first_seq,
                last: w.last.as_ref().map(|e| hex(&e.encode_to_vec())),
            })
            .collect();
        Self {
            version: VERSION,
            cursor,
            file,
            windows,
        }
    }

    /// Reopen the saved windows in `folder`; a window whose event does not decode is dropped
    /// and its repeats returned (they are reported as lost).
    pub fn restore_windows(&mut self, folder: &mut Folder) -> u64 {
        let mut unreadable = 0;
        for w in self.windows.drain(..) {
            let last = match w
                .last
                .as_deref()
                .map(|h| unhex(h).and_then(|b| pb::Event::decode(b.as_slice()).ok()))
            {
                None => None,
                Some(Some(event)) => Some(event),
                Some(None) => {
                    unreadable += w.repeats;
                    continue;
                }
            };
            folder.restore(
                w.key,
                Window {
                    start_ns: w.start_ns,
                    last,
                    repeats: w.repeats,
                    first_time_ns: w.first_time_ns,
                    first_seq: w.first_seq,
                },
            );
        }
        unreadable
    }

    /// `Ok(None)` when there is no state file yet.
    pub fn load(path: &Path) -> Result<Option<State>, String> {
        let text = match fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.to_string()),
        };
        let state: State = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        if state.version != VERSION {
            return Err(format!("unsupported state version {}", state.version));
        }
        Ok(Some(state))
    }

    /// Replace the state file atomically (write a temporary file, then rename it).
    pub fn save(&self, path: &Path) -> io::Result<()> {
        let tmp = path.with_extension("tmp");
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&serde_json::to_vec(self).map_err(io::Error::other)?)?;
        drop(f);
        fs::rename(&tmp, path)
    }
}
