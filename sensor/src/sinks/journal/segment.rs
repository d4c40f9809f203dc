//! One segment file of the journal: its in-memory index, and the file operations recovery
//! and rotation use (scan, tail search, truncate, header rewrite, create).

use std::{
    fs::{self, File, OpenOptions},
    io::{BufReader, Read as _},
    os::unix::fs::{FileExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use super::{
    JournalError, SPARSE_EVERY,
    format::{self, Frame, HEADER_LEN, HeaderProblem, RecordProblem},
    io_err,
    reader::SegmentView,
};

/// At most this much of a damaged newest segment is searched for later records.
const TAIL_SEARCH_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// What scanning one segment file found.
pub(super) struct Scan {
    pub(super) segment: Segment,
    pub(super) header: Result<(), HeaderProblem>,
    /// The first damaged record, if any.
    pub(super) problem: Option<(u64, RecordProblem)>,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct IndexEntry {
    pub(super) seq: u64,
    pub(super) offset: u64,
    /// Largest `time_ns` of the records before this one in the segment (`i64::MIN` for none).
    pub(super) prefix_max_time: i64,
}

/// Index of one segment (for the active one: of its flushed part).
#[derive(Debug)]
pub(super) struct Segment {
    pub(super) path: PathBuf,
    /// From the file name.
    pub(super) first_seq: u64,
    pub(super) records: u64,
    /// Bytes of the file.
    pub(super) file_bytes: u64,
    /// End of the readable prefix (0 when the header is bad).
    pub(super) readable_end: u64,
    pub(super) first_time: i64,
    pub(super) last_time: i64,
    pub(super) min_time: i64,
    pub(super) max_time: i64,
    /// Modification time, for the age of a segment without records.
    pub(super) mtime_ns: i64,
    pub(super) sparse: Vec<IndexEntry>,
}

impl Segment {
    pub(super) fn new(path: PathBuf, first_seq: u64, file_bytes: u64, mtime_ns: i64) -> Self {
        Self {
            path,
            first_seq,
            records: 0,
            file_bytes,
            readable_end: HEADER_LEN,
            first_time: 0,
            last_time: 0,
            min_time: 0,
            max_time: 0,
            mtime_ns,
            sparse: Vec::new(),
        }
    }

    pub(super) fn last_seq(&self) -> Option<u64> {
        (self.records > 0).then(|| self.first_seq + self.records - 1)
    }

    /// One past the last record (the segment's first seq when empty).
    pub(super) fn end_seq(&self) -> u64 {
        self.first_seq.saturating_add(self.records)
    }

    pub(super) fn push(&mut self, seq: u64, time_ns: i64, offset: u64, len: u64) {
        if self.records.is_multiple_of(SPARSE_EVERY) {
            self.sparse.push(IndexEntry {
                seq,
                offset,
                prefix_max_time: if self.records == 0 {
                    i64::MIN
                } else {
                    self.max_time
                },
            });
        }
        if self.records == 0 {
            self.first_time = time_ns;
            self.min_time = time_ns;
            self.max_time = time_ns;
        } else {
            self.min_time = self.min_time.min(time_ns);
            self.max_time = self.max_time.max(time_ns);
        }
        self.last_time = time_ns;
        self.records += 1;
        self.readable_end = offset + len;
    }

    /// Time of the newest record, for age retention.
    pub(super) fn newest_time(&self) -> i64 {
        if self.records > 0 {
            self.max_time
        } else {
            self.mtime_ns
        }
    }

    pub(super) fn view(
        &self,
        start: Option<&IndexEntry>,
        file: Option<File>,
    ) -> Option<SegmentView> {
        let last_seq = self.last_seq()?;
        let (start_offset, start_seq) =
            start.map_or((HEADER_LEN, self.first_seq), |e| (e.offset, e.seq));
        Some(SegmentView {
            path: self.path.clone(),
            last_seq,
            start_offset,
            start_seq,
            limit: self.readable_end,
            file,
        })
    }
}

/// Scans one segment file: header, then records while they are well-formed and contiguous from
/// the seq in its name (and below `ceiling`, the next segment's first seq).
pub(super) fn scan_segment(
    path: &Path,
    first_seq: u64,
    ceiling: Option<u64>,
    mtime_ns: i64,
) -> Result<Scan, JournalError> {
    let file = File::open(path).map_err(io_err("open segment", path))?;
    let file_bytes = file.metadata().map_err(io_err("stat segment", path))?.len();
    let mut segment = Segment::new(path.to_owned(), first_seq, file_bytes, mtime_ns);
    let mut reader = BufReader::with_capacity(64 * 1024, file);
    let mut header = Vec::with_capacity(HEADER_LEN as usize);
    (&mut reader)
        .take(HEADER_LEN)
        .read_to_end(&mut header)
        .map_err(io_err("read segment", path))?;
    if let Err(problem) = format::check_header(&header, first_seq) {
        return Ok(Scan {
            segment,
            header: Err(problem),
            problem: None,
        });
    }
    let mut offset = HEADER_LEN;
    let mut body = Vec::new();
    let problem = loop {
        let frame = format::read_record(&mut reader, file_bytes - offset, &mut body)
            .map_err(io_err("read segment", path))?;
        match frame {
            Frame::End => break None,
            Frame::Bad(problem) => break Some((offset, problem)),
            Frame::Record { seq, time_ns, len } => {
                let expected = segment.end_seq();
                if seq != expected || ceiling.is_some_and(|c| seq >= c) || seq == u64::MAX {
                    break Some((
                        offset,
                        RecordProblem::BadSeq {
                            expected,
                            found: seq,
                        },
                    ));
                }
                segment.push(seq, time_ns, offset, len);
                offset += len;
            }
        }
    };
    Ok(Scan {
        segment,
        header: Ok(()),
        problem,
    })
}

/// Searches `from..to` of a damaged newest segment for well-formed records with seq >= `min_seq`.
pub(super) fn search_tail(
    path: &Path,
    from: u64,
    to: u64,
    min_seq: u64,
) -> Result<Option<u64>, JournalError> {
    let len = to.saturating_sub(from).min(TAIL_SEARCH_MAX_BYTES);
    if len == 0 {
        return Ok(None);
    }
    let file = File::open(path).map_err(io_err("open segment", path))?;
    let mut region = vec![0u8; len as usize];
    file.read_exact_at(&mut region, from)
        .map_err(io_err("read segment", path))?;
    Ok(format::highest_valid_seq(&region, min_seq))
}

pub(super) fn truncate(path: &Path, len: u64) -> Result<(), JournalError> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_err("open segment", path))?;
    file.set_len(len)
        .map_err(io_err("truncate segment", path))?;
    file.sync_data().map_err(io_err("sync segment", path))
}

pub(super) fn rewrite_header(path: &Path, first_seq: u64) -> Result<(), JournalError> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_err("open segment", path))?;
    file.set_len(0).map_err(io_err("truncate segment", path))?;
    file.write_all_at(&format::encode_header(first_seq), 0)
        .map_err(io_err("write segment", path))?;
    file.sync_data().map_err(io_err("sync segment", path))
}

/// Creates an empty segment (header only, synced, its name synced in the directory).
pub(super) fn create_segment(
    dir: &File,
    dir_path: &Path,
    first_seq: u64,
) -> Result<(File, Segment), JournalError> {
    let path = dir_path.join(format::segment_file_name(first_seq));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(io_err("create segment", &path))?;
    let written = file
        .write_all_at(&format::encode_header(first_seq), 0)
        .and_then(|()| file.sync_data())
        .and_then(|()| dir.sync_all());
    if let Err(source) = written {
        let _ = fs::remove_file(&path);
        return Err(io_err("create segment", &path)(source));
    }
    let segment = Segment::new(path, first_seq, HEADER_LEN, now_ns());
    Ok((file, segment))
}

/// Seq ranges not readable between the oldest segment's first seq and `end`.
pub(super) fn gaps(segments: &[Segment], end: u64) -> Vec<(u64, u64)> {
    let mut gaps = Vec::new();
    let Some(mut expected) = segments.first().map(|s| s.first_seq) else {
        return gaps;
    };
    for segment in segments {
        let Some(last) = segment.last_seq() else {
            continue;
        };
        if segment.first_seq > expected {
            gaps.push((expected, segment.first_seq - 1));
        }
        expected = last + 1;
    }
    if expected < end {
        gaps.push((expected, end - 1));
    }
    gaps
}

pub(super) fn now_ns() -> i64 {
    system_time_ns(SystemTime::now())
}

pub(super) fn mtime_ns(meta: &fs::Metadata) -> i64 {
    meta.modified().map_or(0, system_time_ns)
}

pub(super) fn system_time_ns(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}
