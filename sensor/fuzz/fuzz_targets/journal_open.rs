//! Journal segments (`sensor::sinks::journal`): the input is split into segment files at every
//! segment magic (what comes before the first one is a segment too), each named by the first
//! seq its header claims (1 for one too short to say), and the journal is opened over them and
//! read from the start. Opening damaged segments always succeeds; the reader ends, yields
//! sequence numbers in order with records and gaps covering every one from its first to its
//! end, and every record it yields is framed in the input with a matching crc; the recovery
//! report counts the records read; the next record appended gets a sequence number above every
//! one read (or the journal is exhausted), and the journal opened again reads it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sensor::sinks::journal::{FIRST_SEQ, Journal, JournalConfig, JournalError, ReadItem};
use sensor_fuzz::{SEGMENT_MAGIC, Scratch, contains, framed_record};

/// Segment files of the input: `(name seq, bytes)`, each name once.
fn segments(data: &[u8]) -> Vec<(u64, &[u8])> {
    let mut starts: Vec<usize> = (0..data.len())
        .filter(|&i| data[i..].starts_with(SEGMENT_MAGIC))
        .collect();
    if starts.first() != Some(&0) {
        starts.insert(0, 0);
    }
    let mut out: Vec<(u64, &[u8])> = Vec::new();
    for (i, &start) in starts.iter().enumerate() {
        let end = starts.get(i + 1).copied().unwrap_or(data.len());
        let bytes = &data[start..end];
        let seq = bytes
            .get(16..24)
            .map_or(FIRST_SEQ, |b| u64::from_le_bytes(b.try_into().unwrap()));
        if !out.iter().any(|(s, _)| *s == seq) {
            out.push((seq, bytes));
        }
    }
    out
}

fn config(dir: &std::path::Path) -> JournalConfig {
    JournalConfig {
        dir: dir.to_owned(),
        segment_bytes: 1 << 20,
        max_total_bytes: u64::MAX,
        max_age: None,
    }
}

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let scratch = Scratch::new("journal");
    for (seq, bytes) in segments(data) {
        std::fs::write(scratch.path().join(format!("{seq:020}.seg")), bytes).unwrap();
    }
    let (mut journal, recovery) =
        Journal::open(config(scratch.path())).expect("a damaged journal opens");
    let reader = journal.reader_from_seq(FIRST_SEQ).expect("a reader");
    let end = reader.end_seq();
    // Each item covers at least one seq, and the reader stops at `end`.
    let bound = end.saturating_sub(FIRST_SEQ) + 1;
    let mut next = FIRST_SEQ;
    let mut records = 0u64;
    let mut highest = 0;
    for (i, item) in reader.enumerate() {
        assert!((i as u64) < bound, "the reader does not end ({end})");
        let (from, to) = match item.expect("no I/O errors on tmpfs") {
            ReadItem::Record(r) => {
                assert!(
                    contains(data, &framed_record(r.seq, r.time_ns, &r.payload)),
                    "record {} is not in the input with a matching crc",
                    r.seq
                );
                records += 1;
                highest = r.seq;
                (r.seq, r.seq)
            }
            ReadItem::Gap { from, to } => (from, to),
        };
        assert!(from <= to && to < end, "item {from}..={to}, end {end}");
        assert_eq!(from, next, "items out of order or not contiguous");
        next = to + 1;
    }
    assert_eq!(
        next,
        end.max(FIRST_SEQ),
        "the items end before the reader's end"
    );
    assert_eq!(records, recovery.records, "the recovery report's records");
    let seq = match journal.append(0, b"after") {
        // A segment named near u64::MAX: nothing more can be numbered.
        Err(JournalError::SeqExhausted { .. }) => {
            assert_eq!(journal.next_seq(), u64::MAX);
            return;
        }
        appended => appended.expect("append"),
    };
    assert!(
        seq > highest && seq >= end,
        "seq {seq} handed out again (read up to {highest})"
    );
    journal.flush().unwrap();
    drop(journal);
    let (journal, _) = Journal::open(config(scratch.path())).expect("reopen");
    let last = journal
        .reader_from_seq(seq)
        .unwrap()
        .filter_map(|item| match item.unwrap() {
            ReadItem::Record(r) => Some(r),
            ReadItem::Gap { .. } => None,
        })
        .last();
    assert_eq!(
        last.map(|r| (r.seq, r.payload)),
        Some((seq, b"after".to_vec()))
    );
});
