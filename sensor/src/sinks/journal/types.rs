//! The journal's configuration, figures, recovery report and errors.

use std::{
    fmt, io,
    path::{Path, PathBuf},
    time::Duration,
};

use super::format::{HeaderProblem, RecordProblem};

#[derive(Debug, Clone)]
pub struct JournalConfig {
    pub dir: PathBuf,
    /// Rotate when the active segment reaches this many bytes.
    pub segment_bytes: u64,
    /// Retention by size: oldest segments are deleted while all segments together exceed this.
    pub max_total_bytes: u64,
    /// Retention by age: oldest segments whose newest record is older than this are deleted.
    pub max_age: Option<Duration>,
}

impl Default for JournalConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("/var/lib/sensor/journal"),
            segment_bytes: 8 << 20,
            max_total_bytes: 256 << 20,
            max_age: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    /// Wall clock, ns since the Unix epoch.
    pub time_ns: i64,
    /// Opaque bytes (protobuf).
    pub payload: Vec<u8>,
}

/// First and last readable (flushed) record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalRange {
    pub first_seq: u64,
    pub first_time_ns: i64,
    pub last_seq: u64,
    pub last_time_ns: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JournalStats {
    /// Bytes of all segment files (flushed).
    pub bytes: u64,
    pub segments: u64,
    /// Readable (flushed) records.
    pub records: u64,
    /// Appended, not yet flushed.
    pub buffered_records: u64,
    pub next_seq: u64,
    /// Deleted by retention since open.
    pub dropped_segments: u64,
    pub dropped_records: u64,
    pub dropped_bytes: u64,
    /// Cut from a torn tail of the newest segment at open.
    pub truncated_bytes: u64,
    /// Damaged bytes left in place (bad headers, damaged records and what follows), seen at open.
    pub unreadable_bytes: u64,
    /// Segments with a bad header or a damaged record, seen at open.
    pub corrupt_segments: u64,
}

/// What [`Journal::open`] found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Segment files indexed (including skipped ones with a bad header).
    pub segments: usize,
    /// Readable records.
    pub records: u64,
    pub next_seq: u64,
    /// Cut from a torn tail of the newest segment.
    pub truncated_bytes: u64,
    /// Damaged bytes left in place.
    pub unreadable_bytes: u64,
    /// One entry per problem, in file order.
    pub issues: Vec<RecoveryIssue>,
    /// Seq ranges `from..=to` between the oldest segment and the end that are not readable.
    pub gaps: Vec<(u64, u64)>,
}

impl Recovery {
    /// Nothing was damaged, cut or ignored.
    pub fn is_clean(&self) -> bool {
        self.issues.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryIssue {
    pub path: PathBuf,
    pub kind: IssueKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IssueKind {
    /// Not a segment file name (or not a regular file): ignored.
    NotASegment,
    /// Header missing or not understood: the segment is skipped (left on disk until retention).
    BadHeader(HeaderProblem),
    /// The newest segment was shorter than a header (a crash while rotating): header rewritten.
    TornHeader { bytes: u64 },
    /// The newest segment ended in a torn record (a crash while writing): cut at `offset`.
    TornTail {
        offset: u64,
        bytes: u64,
        problem: RecordProblem,
    },
    /// A damaged record at `offset`: the records before it stay readable, the rest of the
    /// segment is not (left in place; readers see a gap).
    Corrupt {
        offset: u64,
        unreadable_bytes: u64,
        problem: RecordProblem,
    },
}

impl fmt::Display for IssueKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotASegment => f.write_str("not a segment file, ignored"),
            Self::BadHeader(p) => write!(f, "bad segment header ({p}), segment skipped"),
            Self::TornHeader { bytes } => {
                write!(
                    f,
                    "newest segment has a torn header ({bytes} bytes), rewritten"
                )
            }
            Self::TornTail {
                offset,
                bytes,
                problem,
            } => write!(
                f,
                "torn tail at offset {offset} ({problem}): cut {bytes} bytes"
            ),
            Self::Corrupt {
                offset,
                unreadable_bytes,
                problem,
            } => write!(
                f,
                "damaged record at offset {offset} ({problem}): {unreadable_bytes} bytes unreadable"
            ),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal: {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("journal {path}: locked by another process")]
    Locked { path: PathBuf },
    #[error("journal: record payload of {len} bytes exceeds the maximum of {max}")]
    RecordTooLarge { len: usize, max: usize },
    #[error("journal {path}: sequence numbers exhausted")]
    SeqExhausted { path: PathBuf },
    #[error("journal {path}: not writable since a write failed (waiting for a reopen)")]
    Broken { path: PathBuf },
}

pub(super) fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> JournalError {
    move |source| JournalError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}
