//! Readers: iterate over a snapshot of the journal with their own file handles.

use std::{
    collections::VecDeque,
    fs::File,
    io::{self, BufReader, Seek as _, SeekFrom},
    path::PathBuf,
};

use super::{
    JournalError, Record,
    format::{self, BODY_FIXED_LEN, Frame, RecordProblem},
};

/// What a reader yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadItem {
    Record(Record),
    /// Records `from..=to` were not readable (deleted by retention before the reader got to
    /// them, or corrupt): the caller reports them as lost.
    Gap {
        from: u64,
        to: u64,
    },
}

/// One segment as the reader will see it: its readable prefix at the time of the snapshot.
#[derive(Debug)]
pub(super) struct SegmentView {
    pub path: PathBuf,
    /// Seq of the last readable record (segments without records are not viewed).
    pub last_seq: u64,
    /// Where to start reading, and the seq of the record there.
    pub start_offset: u64,
    pub start_seq: u64,
    /// End of the readable prefix.
    pub limit: u64,
    /// Opened when the reader was made (the starting segment); later ones are opened lazily.
    pub file: Option<File>,
}

/// An iterator over a snapshot of the journal: from its starting point up to the last record
/// flushed when it was made. It owns its file handles: it works while the writer appends, and a
/// segment it has open stays readable after retention deletes it; a segment deleted before the
/// reader opened it is reported as a [`ReadItem::Gap`]. Items come in seq order; records and gaps
/// together cover every seq from the start to the end of the snapshot (a reader from a time
/// reports no gap before its first record).
///
/// An `Err` item (an I/O error other than a missing file) does not end the iteration: the next
/// item continues after the failed segment, starting with a gap for what it held.
#[derive(Debug)]
pub struct JournalReader {
    views: VecDeque<SegmentView>,
    current: Option<Cursor>,
    /// Lowest seq not yet yielded or reported.
    next: u64,
    /// One past the last seq of the snapshot.
    end: u64,
    /// Reading from a time: records before the first with `time_ns >= t` are skipped.
    from_time: Option<i64>,
    /// A record to yield after the gap just yielded.
    held: Option<Record>,
    body: Vec<u8>,
    done: bool,
}

#[derive(Debug)]
struct Cursor {
    path: PathBuf,
    reader: BufReader<File>,
    pos: u64,
    limit: u64,
    expect: u64,
}

enum Step {
    Continue,
    Yield(Result<ReadItem, JournalError>),
    Done,
}

impl JournalReader {
    pub(super) fn new(
        views: VecDeque<SegmentView>,
        next: u64,
        end: u64,
        from_time: Option<i64>,
    ) -> Self {
        Self {
            views,
            current: None,
            next,
            end,
            from_time,
            held: None,
            body: Vec::new(),
            done: false,
        }
    }

    /// One past the last seq this reader can yield (the end of its snapshot).
    pub fn end_seq(&self) -> u64 {
        self.end
    }

    fn open_next(&mut self) -> Step {
        let Some(mut view) = self.views.pop_front() else {
            self.done = true;
            if self.from_time.is_none() && self.next < self.end {
                let gap = ReadItem::Gap {
                    from: self.next,
                    to: self.end - 1,
                };
                self.next = self.end;
                return Step::Yield(Ok(gap));
            }
            return Step::Done;
        };
        if self.from_time.is_none() && view.last_seq < self.next {
            return Step::Continue;
        }
        let file = match view.file.take() {
            Some(file) => Ok(file),
            None => File::open(&view.path),
        };
        let opened = file.and_then(|file| {
            let mut reader = BufReader::with_capacity(64 * 1024, file);
            reader.seek(SeekFrom::Start(view.start_offset))?;
            Ok(reader)
        });
        match opened {
            Ok(reader) => {
                self.current = Some(Cursor {
                    path: view.path,
                    reader,
                    pos: view.start_offset,
                    limit: view.limit,
                    expect: view.start_seq,
                });
                Step::Continue
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // Deleted by retention before this reader got to it.
                if self.from_time.is_some() {
                    return Step::Continue;
                }
                let gap = ReadItem::Gap {
                    from: self.next,
                    to: view.last_seq,
                };
                self.next = view.last_seq + 1;
                Step::Yield(Ok(gap))
            }
            Err(source) => Step::Yield(Err(JournalError::Io {
                op: "open segment",
                path: view.path,
                source,
            })),
        }
    }

    fn step(&mut self) -> Step {
        let Some(cursor) = self.current.as_mut() else {
            return self.open_next();
        };
        let available = cursor.limit.saturating_sub(cursor.pos);
        let frame = match format::read_record(&mut cursor.reader, available, &mut self.body) {
            Ok(frame) => frame,
            Err(source) => {
                let path = cursor.path.clone();
                self.current = None;
                return Step::Yield(Err(JournalError::Io {
                    op: "read segment",
                    path,
                    source,
                }));
            }
        };
        let (seq, time_ns, len) = match frame {
            Frame::Record { seq, time_ns, len } => (seq, time_ns, len),
            Frame::End => {
                self.current = None;
                return Step::Continue;
            }
            Frame::Bad(problem) => {
                // The segment changed since it was indexed: what is left of it is a gap.
                tracing::warn!(path = %cursor.path.display(), offset = cursor.pos, %problem,
                    "journal reader: damaged record, skipping the rest of the segment");
                self.current = None;
                return Step::Continue;
            }
        };
        if seq != cursor.expect {
            let problem = RecordProblem::BadSeq {
                expected: cursor.expect,
                found: seq,
            };
            tracing::warn!(path = %cursor.path.display(), offset = cursor.pos, %problem,
                "journal reader: damaged record, skipping the rest of the segment");
            self.current = None;
            return Step::Continue;
        }
        cursor.pos += len;
        cursor.expect = seq.saturating_add(1);
        if seq >= self.end {
            self.current = None;
            self.views.clear();
            return Step::Continue;
        }
        if let Some(t) = self.from_time {
            if time_ns < t {
                return Step::Continue;
            }
            self.from_time = None;
            self.next = seq;
        }
        if seq < self.next {
            return Step::Continue;
        }
        let record = Record {
            seq,
            time_ns,
            payload: self
                .body
                .get(BODY_FIXED_LEN as usize..)
                .map(<[u8]>::to_vec)
                .unwrap_or_default(),
        };
        if seq > self.next {
            let gap = ReadItem::Gap {
                from: self.next,
                to: seq - 1,
            };
            self.next = seq;
            self.held = Some(record);
            return Step::Yield(Ok(gap));
        }
        self.next = seq + 1;
        Step::Yield(Ok(ReadItem::Record(record)))
    }
}

impl Iterator for JournalReader {
    type Item = Result<ReadItem, JournalError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(record) = self.held.take() {
            self.next = record.seq + 1;
            return Some(Ok(ReadItem::Record(record)));
        }
        loop {
            if self.done || (self.from_time.is_none() && self.next >= self.end) {
                self.done = true;
                return None;
            }
            match self.step() {
                Step::Continue => {}
                Step::Yield(item) => return Some(item),
                Step::Done => return None,
            }
        }
    }
}
