//! On-node event journal: an append-only, crash-safe, bounded store of opaque records, each
//! with a sequence number that is never handed out twice (from [`FIRST_SEQ`] = 1 on; 0 means
//! "none"), across restarts too: a segment's file name carries its first seq, and the newest
//! segment is never deleted.
//!
//! Records live in segment files in one directory, each named by the sequence number of its
//! first record (format in `format.rs`). The newest segment is the active one; it is rotated at
//! [`JournalConfig::segment_bytes`], and retention deletes whole oldest segments by total size
//! and by age, never the active one. An in-memory index keeps, per segment, its seq and time
//! range, its size and one offset every [`SPARSE_EVERY`] records, so readers seek without
//! scanning the whole journal.
//!
//! Durability: [`Journal::append`] buffers, [`Journal::flush`] hands the buffer to the OS (new
//! readers see it), [`Journal::sync`] is the durability point (`fdatasync`). After a crash,
//! [`Journal::open`] cuts a torn tail of the newest segment and reports what it did in
//! [`Recovery`]; damage anywhere else keeps the good prefix readable and shows up to readers as
//! a [`ReadItem::Gap`].
//!
//! One process at a time: the directory is locked (`flock`) while a [`Journal`] is open.
//!
//! Write failures (a full or read-only filesystem, a segment or the whole directory deleted
//! underneath): a failed [`Journal::flush`] or [`Journal::append`] leaves nothing half-written
//! in the index readers go by (a partial write is cut back where the disk allows; readers never
//! read past the last record that was written whole). The caller then calls
//! [`Journal::abandon`], which drops the records not written and hands their sequence numbers
//! back, and the journal refuses appends ([`JournalError::Broken`]) until [`Journal::reopen`]
//! succeeds: it recreates a deleted directory, cuts the active segment back to its last good
//! record or starts a fresh segment, and forgets segments that were deleted from outside
//! (readers report them as a gap).

pub mod follow;
mod format;
mod reader;
mod segment;
#[cfg(test)]
mod tests;
mod types;

use std::os::unix::fs::DirBuilderExt as _;
use std::{
    collections::VecDeque,
    fs::{self, File, OpenOptions},
    io,
    os::unix::fs::FileExt as _,
    time::Duration,
};

use format::HEADER_LEN;
pub use format::{HeaderProblem, MAX_PAYLOAD, RecordProblem};
use reader::SegmentView;
pub use reader::{JournalReader, ReadItem};
use segment::{
    IndexEntry, Scan, Segment, create_segment, gaps, mtime_ns, now_ns, rewrite_header,
    scan_segment, search_tail, truncate,
};
use types::io_err;
pub use types::*;

/// The first sequence number handed out. 0 is never assigned: it means "none" on the wire.
pub const FIRST_SEQ: u64 = 1;
/// One sparse index entry every this many records of a segment.
pub const SPARSE_EVERY: u64 = 256;
/// `append` hands the buffer to the OS once it holds this much.
const WRITE_BUFFER_BYTES: usize = 64 * 1024;

#[derive(Debug)]
struct Pending {
    seq: u64,
    time_ns: i64,
    offset: u64,
    len: u64,
}

/// The writer's side of the newest segment.
#[derive(Debug)]
struct Active {
    file: File,
    /// Encoded records not yet handed to the OS; they go at the segment's `file_bytes`.
    buf: Vec<u8>,
    pending: Vec<Pending>,
}

/// The journal writer (single owner; readers are independent).
#[derive(Debug)]
pub struct Journal {
    config: JournalConfig,
    /// The directory, open and `flock`ed for as long as the journal is.
    dir: File,
    /// Sorted by first seq; never empty; the last one is the active segment.
    segments: Vec<Segment>,
    active: Active,
    next_seq: u64,
    stats: JournalStats,
    /// Sealed segments whose fdatasync is still owed: done by the next [`Journal::sync`] or
    /// by the caller of [`Journal::prepare_sync`], never at the seal itself (an fdatasync of
    /// a full segment would stall every append behind it for tens of milliseconds).
    unsynced: Vec<File>,
    /// Wakes followers (exporters) when a flush made new records readable.
    flushes: std::sync::Arc<Flushes>,
    /// A write failed and [`Journal::abandon`] dropped what it had not written: appends are
    /// refused until [`Journal::reopen`] succeeds.
    broken: bool,
    /// Unit tests: writes fail with this error after writing this many bytes of the buffer.
    #[cfg(test)]
    write_fault: Option<(usize, io::ErrorKind)>,
}

/// Flushes of the journal, for followers that wait for new records instead of polling.
#[derive(Debug, Default)]
pub struct Flushes {
    count: std::sync::Mutex<u64>,
    flushed: std::sync::Condvar,
}

impl Flushes {
    fn notify(&self) {
        *self
            .count
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) += 1;
        self.flushed.notify_all();
    }

    /// Wait until a flush after the one numbered `seen` (at most `timeout`); returns the
    /// number of the latest flush.
    pub fn wait_after(&self, seen: u64, timeout: Duration) -> u64 {
        let count = self
            .count
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (count, _) = self
            .flushed
            .wait_timeout_while(count, timeout, |n| *n <= seen)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *count
    }
}

impl Journal {
    /// Where followers wait for new records.
    pub fn flushes(&self) -> std::sync::Arc<Flushes> {
        std::sync::Arc::clone(&self.flushes)
    }

    /// Opens or creates the journal in `config.dir`: scans the segments, cuts a torn tail of the
    /// newest one, rebuilds the index and reports what it found and did.
    pub fn open(config: JournalConfig) -> Result<(Journal, Recovery), JournalError> {
        let dir_path = config.dir.clone();
        let dir = create_locked_dir(&dir_path)?;

        let mut recovery = Recovery::default();
        let mut found = Vec::new();
        for entry in fs::read_dir(&dir_path).map_err(io_err("read directory", &dir_path))? {
            let entry = entry.map_err(io_err("read directory", &dir_path))?;
            let path = entry.path();
            let meta = entry.metadata().map_err(io_err("stat", &path))?;
            let seq = entry
                .file_name()
                .to_str()
                .and_then(format::parse_segment_file_name);
            match seq {
                Some(seq) if meta.is_file() => found.push((seq, path, mtime_ns(&meta))),
                _ => recovery.issues.push(RecoveryIssue {
                    path,
                    kind: IssueKind::NotASegment,
                }),
            }
        }
        found.sort_by_key(|(seq, ..)| *seq);

        let mut stats = JournalStats::default();
        let mut segments = Vec::with_capacity(found.len() + 1);
        // Lowest seq that may be handed out: above anything any file name or record claims.
        let mut next_seq = FIRST_SEQ;
        // The newest segment, when it can stay the active one.
        let mut reuse_newest = false;
        for (i, (first_seq, path, mtime)) in found.iter().enumerate() {
            let newest = i + 1 == found.len();
            let ceiling = found.get(i + 1).map(|(seq, ..)| *seq);
            let Scan {
                mut segment,
                header,
                problem,
            } = scan_segment(path, *first_seq, ceiling, *mtime)?;
            let file_bytes = segment.file_bytes;
            match (header, problem) {
                (Err(HeaderProblem::Short { .. }), _) if newest => {
                    rewrite_header(path, *first_seq)?;
                    recovery.truncated_bytes += file_bytes;
                    segment.file_bytes = HEADER_LEN;
                    segment.readable_end = HEADER_LEN;
                    recovery.issues.push(RecoveryIssue {
                        path: path.clone(),
                        kind: IssueKind::TornHeader { bytes: file_bytes },
                    });
                    reuse_newest = true;
                }
                (Err(header), _) => {
                    stats.corrupt_segments += 1;
                    recovery.unreadable_bytes += file_bytes;
                    segment.readable_end = 0;
                    next_seq = next_seq.max(first_seq.saturating_add(1));
                    if newest {
                        let hint = search_tail(path, 0, file_bytes, *first_seq)?;
                        next_seq = next_seq.max(hint.map_or(0, |h| h.saturating_add(1)));
                    }
                    recovery.issues.push(RecoveryIssue {
                        path: path.clone(),
                        kind: IssueKind::BadHeader(header),
                    });
                }
                (Ok(()), None) => reuse_newest = newest,
                (Ok(()), Some((offset, problem))) => {
                    let later = if newest {
                        search_tail(path, offset + 1, file_bytes, segment.end_seq())?
                    } else {
                        None
                    };
                    if newest && later.is_none() {
                        // A torn write: nothing was written after it. Cut it.
                        truncate(path, offset)?;
                        recovery.truncated_bytes += file_bytes - offset;
                        segment.file_bytes = offset;
                        recovery.issues.push(RecoveryIssue {
                            path: path.clone(),
                            kind: IssueKind::TornTail {
                                offset,
                                bytes: file_bytes - offset,
                                problem,
                            },
                        });
                        reuse_newest = true;
                    } else {
                        // Damage with records after it (or in an older segment): keep the
                        // prefix, leave the rest in place, never reuse what it may have held.
                        stats.corrupt_segments += 1;
                        recovery.unreadable_bytes += file_bytes - offset;
                        next_seq = next_seq.max(later.map_or(0, |h| h.saturating_add(1)));
                        recovery.issues.push(RecoveryIssue {
                            path: path.clone(),
                            kind: IssueKind::Corrupt {
                                offset,
                                unreadable_bytes: file_bytes - offset,
                                problem,
                            },
                        });
                    }
                }
            }
            next_seq = next_seq.max(segment.end_seq());
            segments.push(segment);
        }

        let active = match segments.last() {
            // The second case: the newest segment is named u64::MAX and is damaged, so
            // next_seq saturated at its name; the journal is exhausted (appends are refused
            // before anything is written) and no segment can be made after it.
            Some(newest)
                if (reuse_newest && newest.end_seq() == next_seq)
                    || newest.first_seq == next_seq =>
            {
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&newest.path)
                    .map_err(io_err("open segment", &newest.path))?;
                Active {
                    file,
                    buf: Vec::new(),
                    pending: Vec::new(),
                }
            }
            _ => {
                let (file, segment) = create_segment(&dir, &dir_path, next_seq)?;
                segments.push(segment);
                Active {
                    file,
                    buf: Vec::new(),
                    pending: Vec::new(),
                }
            }
        };

        for issue in &recovery.issues {
            tracing::warn!(path = %issue.path.display(), "journal: {}", issue.kind);
        }
        recovery.segments = found.len();
        recovery.records = segments.iter().map(|s| s.records).sum();
        recovery.next_seq = next_seq;
        recovery.gaps = gaps(&segments, next_seq);
        stats.truncated_bytes = recovery.truncated_bytes;
        stats.unreadable_bytes = recovery.unreadable_bytes;
        tracing::info!(
            dir = %dir_path.display(),
            segments = recovery.segments,
            records = recovery.records,
            next_seq,
            issues = recovery.issues.len(),
            "journal opened"
        );

        let mut journal = Journal {
            config,
            dir,
            segments,
            active,
            next_seq,
            stats,
            unsynced: Vec::new(),
            flushes: std::sync::Arc::default(),
            broken: false,
            #[cfg(test)]
            write_fault: None,
        };
        journal.apply_retention();
        Ok((journal, recovery))
    }

    /// Appends one record and returns its sequence number. Buffered: see [`Journal::flush`].
    pub fn append(&mut self, time_ns: i64, payload: &[u8]) -> Result<u64, JournalError> {
        if self.broken {
            return Err(JournalError::Broken {
                path: self.config.dir.clone(),
            });
        }
        if payload.len() > MAX_PAYLOAD {
            return Err(JournalError::RecordTooLarge {
                len: payload.len(),
                max: MAX_PAYLOAD,
            });
        }
        if self.next_seq == u64::MAX {
            return Err(JournalError::SeqExhausted {
                path: self.config.dir.clone(),
            });
        }
        if self.active_bytes() >= self.config.segment_bytes && self.active_records() > 0 {
            self.rotate()?;
        }
        if self.active.buf.len() >= WRITE_BUFFER_BYTES {
            self.write_buffer()?;
        }
        let seq = self.next_seq;
        let offset = self.active_bytes();
        let before = self.active.buf.len();
        format::encode_record(&mut self.active.buf, seq, time_ns, payload);
        self.active.pending.push(Pending {
            seq,
            time_ns,
            offset,
            len: (self.active.buf.len() - before) as u64,
        });
        self.next_seq += 1;
        Ok(seq)
    }

    /// Hands buffered records to the OS: readers made from now on see them. Rotates the active
    /// segment once it has reached `segment_bytes`.
    pub fn flush(&mut self) -> Result<(), JournalError> {
        if self.broken {
            return Err(JournalError::Broken {
                path: self.config.dir.clone(),
            });
        }
        let had = !self.active.buf.is_empty();
        self.write_buffer()?;
        if had {
            self.flushes.notify();
        }
        if self.active_bytes() >= self.config.segment_bytes && self.active_records() > 0 {
            self.rotate()?;
        }
        Ok(())
    }

    /// Flushes and `fdatasync`s the active segment and the sealed ones not synced yet: the
    /// durability point (call on a timer). Also applies retention by age.
    pub fn sync(&mut self) -> Result<(), JournalError> {
        self.flush()?;
        let path = self.active_segment().path.clone();
        for file in self.unsynced.drain(..) {
            file.sync_data().map_err(io_err("sync segment", &path))?;
        }
        self.active
            .file
            .sync_data()
            .map_err(io_err("sync segment", &path))?;
        self.apply_retention();
        Ok(())
    }

    /// Everything [`Journal::sync`] does except the fdatasync itself: flush, apply retention,
    /// and hand out the files to fdatasync (sealed segments not synced yet, then a handle of
    /// the active one) for the caller to sync without holding the journal (so appends and
    /// readers never wait on the disk).
    pub fn prepare_sync(&mut self) -> Result<Vec<File>, JournalError> {
        if self.broken {
            // Nothing was written since the failure; the next reopen syncs what it makes.
            return Ok(Vec::new());
        }
        self.flush()?;
        self.apply_retention();
        let path = &self.active_segment().path;
        let active = self
            .active
            .file
            .try_clone()
            .map_err(io_err("clone segment handle", path))?;
        let mut files: Vec<File> = self.unsynced.drain(..).collect();
        files.push(active);
        Ok(files)
    }

    /// The sequence number the next [`Journal::append`] returns.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// First and last readable (flushed) record, `None` when there is none.
    pub fn range(&self) -> Option<JournalRange> {
        let first = self.segments.iter().find(|s| s.records > 0)?;
        let last = self.segments.iter().rev().find(|s| s.records > 0)?;
        Some(JournalRange {
            first_seq: first.first_seq,
            first_time_ns: first.first_time,
            last_seq: last.last_seq()?,
            last_time_ns: last.last_time,
        })
    }

    pub fn stats(&self) -> JournalStats {
        JournalStats {
            bytes: self.segments.iter().map(|s| s.file_bytes).sum(),
            segments: self.segments.len() as u64,
            records: self.segments.iter().map(|s| s.records).sum(),
            buffered_records: self.active.pending.len() as u64,
            next_seq: self.next_seq,
            ..self.stats.clone()
        }
    }

    /// A reader from the first record with `seq >= seq` up to the last flushed record. When
    /// `seq` is below the oldest record, it starts with a gap `seq..=oldest - 1` (records
    /// dropped by retention); start at `range().first_seq` to avoid it. `0` reads as
    /// [`FIRST_SEQ`].
    pub fn reader_from_seq(&self, seq: u64) -> Result<JournalReader, JournalError> {
        let seq = seq.max(FIRST_SEQ);
        let end = self.readable_end_seq();
        if seq >= end {
            return Ok(JournalReader::new(VecDeque::new(), end, end, None));
        }
        let Some(idx) = self
            .segments
            .iter()
            .position(|s| s.last_seq().is_some_and(|last| last >= seq))
        else {
            return Ok(JournalReader::new(VecDeque::new(), seq, end, None));
        };
        let segment = &self.segments[idx];
        let entry = segment.sparse.get(
            segment
                .sparse
                .partition_point(|e| e.seq <= seq)
                .saturating_sub(1),
        );
        let views = self.views(idx, entry);
        Ok(JournalReader::new(views, seq, end, None))
    }

    /// A reader from the first record with `time_ns >= time_ns` (in journal order; wall time
    /// may step backwards, later records are all yielded) up to the last flushed record.
    pub fn reader_from_time(&self, time_ns: i64) -> Result<JournalReader, JournalError> {
        let end = self.readable_end_seq();
        // The first such record is in the first segment holding any time >= time_ns.
        let Some(idx) = self
            .segments
            .iter()
            .position(|s| s.records > 0 && s.max_time >= time_ns)
        else {
            return Ok(JournalReader::new(VecDeque::new(), end, end, None));
        };
        let segment = &self.segments[idx];
        // The last entry with no record before it at or after time_ns.
        let at = segment
            .sparse
            .partition_point(|e| e.prefix_max_time < time_ns)
            .saturating_sub(1);
        let views = self.views(idx, segment.sparse.get(at));
        Ok(JournalReader::new(views, 0, end, Some(time_ns)))
    }

    /// Deletes oldest segments (never the active one) while the journal is over
    /// `max_total_bytes` or the segment's newest record is older than `max_age`. Runs after
    /// each rotation and each [`Journal::sync`]. Returns the number of segments deleted.
    pub fn apply_retention(&mut self) -> usize {
        self.apply_retention_at(now_ns())
    }

    fn apply_retention_at(&mut self, now_ns: i64) -> usize {
        let horizon = self
            .config
            .max_age
            .map(|age| now_ns.saturating_sub(i64::try_from(age.as_nanos()).unwrap_or(i64::MAX)));
        let mut total: u64 = self.segments.iter().map(|s| s.file_bytes).sum();
        let mut dropped = 0;
        while self.segments.len() > 1 {
            let oldest = &self.segments[0];
            let by_size = total > self.config.max_total_bytes;
            let by_age = horizon.is_some_and(|h| oldest.newest_time() < h);
            if !by_size && !by_age {
                break;
            }
            match fs::remove_file(&oldest.path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %oldest.path.display(), error = %e,
                        "journal: retention could not delete a segment");
                    break;
                }
            }
            let oldest = self.segments.remove(0);
            tracing::debug!(path = %oldest.path.display(), by_size, by_age,
                records = oldest.records, "journal: retention deleted a segment");
            total -= oldest.file_bytes;
            self.stats.dropped_segments += 1;
            self.stats.dropped_records += oldest.records;
            self.stats.dropped_bytes += oldest.file_bytes;
            dropped += 1;
        }
        dropped
    }

    fn views(&self, idx: usize, start: Option<&IndexEntry>) -> VecDeque<SegmentView> {
        let mut views = VecDeque::with_capacity(self.segments.len() - idx);
        for (i, segment) in self.segments.iter().enumerate().skip(idx) {
            let first = i == idx;
            // The starting segment is opened now: the reader keeps it even if retention
            // deletes it before the first read. The others are opened when reached.
            let file = first.then(|| File::open(&segment.path).ok()).flatten();
            views.extend(segment.view(start.filter(|_| first), file));
        }
        views
    }

    fn active_segment(&self) -> &Segment {
        // `segments` is never empty: `open` always leaves an active segment.
        &self.segments[self.segments.len() - 1]
    }

    fn active_segment_mut(&mut self) -> &mut Segment {
        let last = self.segments.len() - 1;
        &mut self.segments[last]
    }

    /// Bytes of the active segment, buffered ones included.
    fn active_bytes(&self) -> u64 {
        self.active_segment().file_bytes + self.active.buf.len() as u64
    }

    fn active_records(&self) -> u64 {
        self.active_segment().records + self.active.pending.len() as u64
    }

    /// One past the last readable (flushed) record.
    fn readable_end_seq(&self) -> u64 {
        self.active_segment().end_seq()
    }

    /// Writes the buffer at the end of the flushed part. On failure nothing counts as written
    /// (the buffer is kept: written again at the same offset next time, or dropped by
    /// [`Journal::abandon`]), and a partial write is cut back where the disk allows. A segment
    /// that was deleted underneath is a failure too: what went into it is readable by no one.
    fn write_buffer(&mut self) -> Result<(), JournalError> {
        if self.active.buf.is_empty() {
            return Ok(());
        }
        let segment = &self.segments[self.segments.len() - 1];
        let offset = segment.file_bytes;
        let written = self
            .write_at(offset)
            .and_then(|()| linked(&self.active.file));
        if let Err(source) = written {
            // Best effort: do not leave a partial record behind for readers of the file.
            let _ = self.active.file.set_len(offset);
            return Err(io_err("write segment", &segment.path)(source));
        }
        let written = self.active.buf.len() as u64;
        let pending = std::mem::take(&mut self.active.pending);
        self.active.buf.clear();
        let segment = self.active_segment_mut();
        for p in pending {
            segment.push(p.seq, p.time_ns, p.offset, p.len);
        }
        segment.file_bytes = offset + written;
        Ok(())
    }

    #[cfg(not(test))]
    fn write_at(&self, offset: u64) -> io::Result<()> {
        self.active.file.write_all_at(&self.active.buf, offset)
    }

    /// With [`Journal::write_fault`] set: write that many bytes, then fail.
    #[cfg(test)]
    fn write_at(&self, offset: u64) -> io::Result<()> {
        match self.write_fault {
            None => self.active.file.write_all_at(&self.active.buf, offset),
            Some((bytes, kind)) => {
                let part = &self.active.buf[..bytes.min(self.active.buf.len())];
                self.active.file.write_all_at(part, offset)?;
                Err(io::Error::new(kind, "injected write fault"))
            }
        }
    }

    /// After a failed [`Journal::append`] or [`Journal::flush`]: drops the records not written
    /// (their sequence numbers are handed out again) and refuses appends until
    /// [`Journal::reopen`] succeeds. Returns the next sequence number: every record below it
    /// is readable (was written), none at or above it is.
    pub fn abandon(&mut self) -> u64 {
        if let Some(first) = self.active.pending.first() {
            self.next_seq = first.seq;
        }
        self.active.pending.clear();
        self.active.buf.clear();
        self.broken = true;
        self.next_seq
    }

    /// Unit tests: writes fail with `kind` after writing `bytes` of the buffer (`None`: work).
    #[cfg(test)]
    pub(crate) fn set_write_fault(&mut self, fault: Option<(usize, io::ErrorKind)>) {
        self.write_fault = fault;
    }

    /// Appends are refused until [`Journal::reopen`] succeeds.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Makes the journal writable again after [`Journal::abandon`]: recreates the directory
    /// when it was deleted (and locks it again), forgets segments deleted from outside, cuts
    /// the active segment back to its last record written whole, or starts a new one when it is
    /// gone. On failure the journal stays broken (call again later).
    pub fn reopen(&mut self) -> Result<(), JournalError> {
        let dir_path = self.config.dir.clone();
        if !same_dir(&self.dir, &dir_path) {
            self.dir = create_locked_dir(&dir_path)?;
        }
        // Sealed segments deleted from outside: readers report what they held as a gap.
        let active = self.segments.len() - 1;
        let mut index = 0;
        self.segments.retain(|segment| {
            index += 1;
            index - 1 == active || segment.path.exists()
        });
        if linked(&self.active.file).is_ok() && self.active_segment().path.exists() {
            let segment = self.active_segment();
            self.active
                .file
                .set_len(segment.file_bytes)
                .map_err(io_err("truncate segment", &segment.path))?;
        } else {
            // Rotation into the new directory: the old active segment is gone with its records.
            let (file, segment) = create_segment(&self.dir, &dir_path, self.next_seq)?;
            self.segments.pop();
            self.segments.push(segment);
            self.active.file = file;
        }
        tracing::debug!(dir = %dir_path.display(), next_seq = self.next_seq,
            segments = self.segments.len(), "journal: reopened");
        self.broken = false;
        Ok(())
    }

    /// Seals the active segment (flushed; its fdatasync is owed to the next sync) and starts a
    /// new one at `next_seq`.
    fn rotate(&mut self) -> Result<(), JournalError> {
        self.write_buffer()?;
        let (file, segment) = create_segment(&self.dir, &self.config.dir, self.next_seq)?;
        let sealed = std::mem::replace(&mut self.active.file, file);
        self.unsynced.push(sealed);
        self.segments.push(segment);
        self.apply_retention();
        Ok(())
    }
}

/// Creates the journal directory (and its parents) if needed, opens and locks it.
fn create_locked_dir(path: &std::path::Path) -> Result<File, JournalError> {
    // Events name processes, files and pods: the journal is root's alone (0700 / 0600).
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(io_err("create directory", path))?;
    let dir = File::open(path).map_err(io_err("open directory", path))?;
    match dir.try_lock() {
        Ok(()) => Ok(dir),
        Err(fs::TryLockError::WouldBlock) => Err(JournalError::Locked {
            path: path.to_owned(),
        }),
        Err(fs::TryLockError::Error(source)) => Err(io_err("lock directory", path)(source)),
    }
}

/// `Ok` while `file` still has a name (a deleted segment takes writes that no reader finds).
fn linked(file: &File) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    if file.metadata()?.nlink() == 0 {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "the segment file was deleted",
        ));
    }
    Ok(())
}

/// `dir` (an open directory) is still the one at `path`.
fn same_dir(dir: &File, path: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    match (dir.metadata(), fs::metadata(path)) {
        (Ok(open), Ok(named)) => {
            open.nlink() > 0 && open.dev() == named.dev() && open.ino() == named.ino()
        }
        _ => false,
    }
}

impl Drop for Journal {
    /// Best effort: hands buffered records to the OS (not a durability point).
    fn drop(&mut self) {
        if let Err(e) = self.write_buffer() {
            tracing::warn!(error = %e, "journal: buffered records lost on close");
        }
    }
}
