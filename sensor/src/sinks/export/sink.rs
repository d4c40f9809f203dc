//! Where exported records go: stdout, a file rotated by size, a syslog receiver or an OTLP
//! receiver ([`Sink`]), and what is rendered for them until it is delivered ([`Batch`]).
//!
//! A file receives whole lines only: every batch of lines is one `write(2)` on a file opened
//! `O_APPEND`, so a shipper reading it never sees half a line at a batch boundary. Rotation
//! happens between batches: `PATH.N-2` -> `PATH.N-1`, ..., `PATH` -> `PATH.1`, then a new
//! `PATH`; the oldest beyond `max_files` is deleted. Renames keep the inode, so a shipper that
//! follows files by inode reads a rotated file to its end.
//!
//! After a crash, lines written after the last committed cursor would be written again: at
//! open, the active file is cut back to the committed size (when it is still the same file),
//! so every line is in the files exactly once.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write as _},
    os::unix::fs::{MetadataExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
};

use opentelemetry_proto::tonic::logs::v1::LogRecord;
use sensor_proto::v1 as pb;
use serde::{Deserialize, Serialize};

use super::{
    otlp::{self, OtlpClient},
    syslog::{self, SyslogClient},
};

/// The active file as of a committed cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMark {
    pub ino: u64,
    pub size: u64,
}

#[derive(Debug)]
pub struct RotatingFile {
    path: PathBuf,
    max_bytes: u64,
    max_files: u32,
    file: File,
    ino: u64,
    size: u64,
}

fn open_append(path: &Path) -> io::Result<(File, u64, u64)> {
    // Events name processes, files and pods: root's alone, as the journal.
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)?;
    let meta = file.metadata()?;
    Ok((file, meta.ino(), meta.len()))
}

/// `PATH.n`
fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

impl RotatingFile {
    /// Opens (or creates) `path`; when `committed` names this same file and it is longer, the
    /// uncommitted tail is cut. Returns the file and the bytes cut.
    pub fn open(
        path: &Path,
        max_bytes: u64,
        max_files: u32,
        committed: Option<FileMark>,
    ) -> io::Result<(Self, u64)> {
        let (file, ino, mut size) = open_append(path)?;
        let mut cut = 0;
        if let Some(mark) = committed
            && mark.ino == ino
            && size > mark.size
        {
            file.set_len(mark.size)?;
            cut = size - mark.size;
            size = mark.size;
        }
        Ok((
            Self {
                path: path.to_owned(),
                max_bytes,
                max_files: max_files.max(2),
                file,
                ino,
                size,
            },
            cut,
        ))
    }

    pub fn mark(&self) -> FileMark {
        FileMark {
            ino: self.ino,
            size: self.size,
        }
    }

    /// Whether the active file is full (rotate before the next batch).
    pub fn full(&self) -> bool {
        self.size >= self.max_bytes
    }

    /// Appends whole lines in one write. On failure, what was written of them is cut again
    /// (a retry writes them whole).
    pub fn write(&mut self, lines: &[u8]) -> io::Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        if let Err(err) = self.file.write_all(lines) {
            let _ = self.file.set_len(self.size);
            return Err(err);
        }
        self.size += lines.len() as u64;
        Ok(())
    }

    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// Shift the rotated files, move the active one to `PATH.1` and start a new one.
    pub fn rotate(&mut self) -> io::Result<()> {
        self.file.sync_data()?;
        let last = self.max_files - 1;
        match fs::remove_file(rotated(&self.path, last)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        for n in (1..last).rev() {
            match fs::rename(rotated(&self.path, n), rotated(&self.path, n + 1)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        fs::rename(&self.path, rotated(&self.path, 1))?;
        let (file, ino, size) = open_append(&self.path)?;
        self.file = file;
        self.ino = ino;
        self.size = size;
        Ok(())
    }
}

/// An exporter's destination.
pub enum Sink {
    Stdout(io::Stdout),
    File(RotatingFile),
    Syslog(SyslogClient),
    Otlp(Box<OtlpClient>),
}

/// What a sink holds between rendering and delivery: bytes (lines, syslog frames) or OTLP
/// records.
#[derive(Default)]
pub struct Batch {
    pub bytes: Vec<u8>,
    pub logs: Vec<LogRecord>,
    /// Records rendered and not delivered.
    pub records: u64,
    /// Their size (the payloads of OTLP records).
    pub size: usize,
    /// Records a receiver refused for good in the calls of this batch so far.
    rejected: u64,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.logs.clear();
        self.records = 0;
        self.size = 0;
        self.rejected = 0;
    }
}

impl Sink {
    /// Render one event into `batch` (`payload`: the event in the destination's format).
    pub fn render(&self, event: &pb::Event, payload: String, facility: u8, batch: &mut Batch) {
        let before = batch.bytes.len();
        match self {
            Self::Stdout(_) | Self::File(_) => {
                batch.bytes.extend_from_slice(payload.as_bytes());
                batch.bytes.push(b'\n');
            }
            Self::Syslog(_) => {
                syslog::frame(
                    event,
                    &payload,
                    facility,
                    std::process::id(),
                    &mut batch.bytes,
                );
            }
            Self::Otlp(_) => {
                batch.size += payload.len();
                batch.logs.push(otlp::log_record(event, payload));
            }
        }
        batch.size += batch.bytes.len() - before;
        batch.records += 1;
    }

    /// Deliver the batch (written and synced; acknowledged by the receiver's TCP; an OK
    /// Export call) and empty it; on failure it stays as it is, for a retry. `Ok(n)`: the
    /// receiver refused `n` records for good (an OTLP partial success).
    pub fn deliver(&mut self, batch: &mut Batch) -> Result<u64, String> {
        if batch.is_empty() {
            return Ok(0);
        }
        let rejected = match self {
            Self::Stdout(out) => {
                let mut lock = out.lock();
                lock.write_all(&batch.bytes)
                    .and_then(|()| lock.flush())
                    .map_err(|e| format!("write: {e}"))?;
                0
            }
            Self::File(f) => {
                f.write(&batch.bytes)
                    .and_then(|()| f.sync())
                    .map_err(|e| format!("write: {e}"))?;
                0
            }
            Self::Syslog(c) => {
                c.send(&batch.bytes).map_err(|e| format!("syslog: {e}"))?;
                0
            }
            Self::Otlp(c) => {
                // In calls of bounded size; the calls that succeeded are not made again when a
                // later one fails.
                while !batch.logs.is_empty() {
                    let n = otlp::call_len(&batch.logs);
                    batch.rejected += c.send(&batch.logs[..n]).map_err(|e| format!("otlp: {e}"))?;
                    batch.logs.drain(..n);
                }
                batch.rejected
            }
        };
        batch.clear();
        Ok(rejected)
    }

    /// A network destination (retried with backoff).
    pub fn remote(&self) -> bool {
        matches!(self, Self::Syslog(_) | Self::Otlp(_))
    }

    pub fn mark(&self) -> Option<FileMark> {
        match self {
            Self::File(f) => Some(f.mark()),
            _ => None,
        }
    }
}
