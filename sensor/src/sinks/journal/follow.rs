//! Following the journal from a cursor: the one reader of stored events, used by gRPC replay
//! and by every exporter. Each journal record comes out once, in sequence order, as the event
//! it holds (its `seq` set); what can no longer be read (deleted by retention, damaged,
//! undecodable) comes out as one `lost` record (stage `journal`) with the exact range, so a
//! follower never skips silently.

use std::sync::{Mutex, PoisonError};

use bytes::Bytes;
use prost::Message as _;
use sensor_proto::v1 as pb;

use super::{Journal, JournalError, JournalReader, ReadItem};
use crate::event::{
    proto::{self, Origin},
    time::now_unix_ns,
};

/// One item a follower hands out.
#[derive(Debug)]
pub enum Followed {
    /// A stored event, `seq` set.
    Event(pb::Event),
    /// Records `first_seq..=last_seq` could not be read: a `lost` record saying so.
    Lost(pb::Event),
}

impl Followed {
    /// The sequence number after this item: where a reader that has handled it continues.
    pub fn next_seq(&self) -> u64 {
        match self {
            Self::Event(e) => e.seq + 1,
            Self::Lost(e) => match &e.body {
                Some(pb::event::Body::Lost(l)) => l.last_seq + 1,
                _ => e.seq + 1,
            },
        }
    }

    pub fn into_event(self) -> pb::Event {
        match self {
            Self::Event(e) | Self::Lost(e) => e,
        }
    }
}

/// One item of a raw batch ([`Follower::next_raw_batch`]).
#[derive(Debug)]
pub enum Stored {
    /// A stored record: the encoded event without `seq`.
    Record { seq: u64, payload: Bytes },
    /// Records that could not be read: a `lost` record saying so.
    Lost(Box<pb::Event>),
}

/// A position in the journal and the reader that continues from it.
pub struct Follower {
    /// Every record below it has been handed out (or reported lost).
    cursor: u64,
    origin: Origin,
    reader: Option<JournalReader>,
}

/// A `lost` record for journal records `from..=to` a reader could not read.
pub fn journal_loss(origin: &Origin, from: u64, to: u64) -> pb::Event {
    let mut e = proto::lost(pb::LossStage::Journal, to - from + 1, origin, now_unix_ns());
    if let Some(pb::event::Body::Lost(l)) = &mut e.body {
        l.first_seq = from;
        l.last_seq = to;
    }
    e
}

impl Follower {
    /// From sequence number `cursor` on (`origin` names the node in loss records).
    pub fn from_seq(cursor: u64, origin: &Origin) -> Self {
        Self {
            cursor,
            origin: origin.clone(),
            reader: None,
        }
    }

    /// From wherever `reader` starts (a reader made from a time).
    pub fn from_reader(reader: JournalReader, origin: &Origin) -> Self {
        Self {
            cursor: 0,
            origin: origin.clone(),
            reader: Some(reader),
        }
    }

    /// The next sequence number to hand out.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// Move the cursor forward to `seq` (never back): records below it are not handed out.
    pub fn skip_to(&mut self, seq: u64) {
        if seq > self.cursor {
            self.cursor = seq;
            // A reader from a time may sit below the new cursor: records before it are skipped
            // as they come.
        }
    }

    /// Continue from `seq` instead (back or forward): a caller that handled only part of a
    /// batch goes on after the last item it handled.
    pub fn reset(&mut self, seq: u64) {
        if seq != self.cursor {
            self.cursor = seq;
            self.reader = None;
        }
    }

    /// Up to `max` items from the cursor on; an empty batch means the journal holds nothing
    /// more now (the next call looks again). Reads from disk: call it off the async runtime.
    pub fn next_batch(
        &mut self,
        journal: &Mutex<Journal>,
        max: usize,
    ) -> Result<Vec<Followed>, JournalError> {
        let origin = self.origin.clone();
        self.next_items(journal, max, |item| match item {
            Stored::Record { seq, payload } => match pb::Event::decode(payload.as_ref()) {
                Ok(mut event) => {
                    event.seq = seq;
                    Followed::Event(event)
                }
                Err(_) => Followed::Lost(journal_loss(&origin, seq, seq)),
            },
            Stored::Lost(loss) => Followed::Lost(*loss),
        })
    }

    /// As [`Follower::next_batch`], the records as stored: their payloads are the encoded
    /// events without `seq` (gRPC replay sends them as they are).
    pub fn next_raw_batch(
        &mut self,
        journal: &Mutex<Journal>,
        max: usize,
    ) -> Result<Vec<Stored>, JournalError> {
        self.next_items(journal, max, |item| item)
    }

    fn next_items<T>(
        &mut self,
        journal: &Mutex<Journal>,
        max: usize,
        mut convert: impl FnMut(Stored) -> T,
    ) -> Result<Vec<T>, JournalError> {
        let mut out = Vec::new();
        while out.len() < max {
            let reader = match &mut self.reader {
                Some(r) => r,
                None => {
                    let r = journal
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .reader_from_seq(self.cursor.max(super::FIRST_SEQ))?;
                    self.reader.insert(r)
                }
            };
            let Some(item) = reader.next() else {
                // Caught up with this reader's snapshot: the next call opens a fresh one.
                self.reader = None;
                break;
            };
            match item {
                Ok(ReadItem::Record(rec)) => {
                    if rec.seq < self.cursor {
                        continue;
                    }
                    self.cursor = rec.seq + 1;
                    out.push(convert(Stored::Record {
                        seq: rec.seq,
                        payload: Bytes::from(rec.payload),
                    }));
                }
                Ok(ReadItem::Gap { from, to }) => {
                    if to >= self.cursor {
                        let from = from.max(self.cursor);
                        self.cursor = to + 1;
                        out.push(convert(Stored::Lost(Box::new(journal_loss(
                            &self.origin,
                            from,
                            to,
                        )))));
                    }
                }
                // An I/O error on one read: the reader goes on, and what it could not read
                // comes back as a Gap (a journal loss record).
                Err(e) => tracing::warn!(error = %e, "journal read error"),
            }
        }
        Ok(out)
    }
}
