use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

use super::{format::*, *};
use crate::testing::TestDir;

mod damage;
mod faults;
mod retention;

const BASE_NS: i64 = 1_700_000_000_000_000_000;

fn config(dir: &Path, segment_bytes: u64) -> JournalConfig {
    JournalConfig {
        dir: dir.to_owned(),
        segment_bytes,
        max_total_bytes: u64::MAX,
        max_age: None,
    }
}

/// Deterministic payload of varying length (0..97 bytes).
fn payload(seq: u64) -> Vec<u8> {
    let len = (seq.wrapping_mul(7919) % 97) as usize;
    (0..len)
        .map(|i| (seq.wrapping_mul(31) as usize + i) as u8)
        .collect()
}

fn time_of(seq: u64) -> i64 {
    BASE_NS + seq as i64 * 1_000
}

fn expected(seq: u64) -> ReadItem {
    ReadItem::Record(Record {
        seq,
        time_ns: time_of(seq),
        payload: payload(seq),
    })
}

/// Appends `n` records (payload(seq), time_of(seq)), flushing every 10.
fn fill(journal: &mut Journal, n: u64) {
    for _ in 0..n {
        let seq = journal.next_seq();
        assert_eq!(journal.append(time_of(seq), &payload(seq)).unwrap(), seq);
        if seq % 10 == 9 {
            journal.flush().unwrap();
        }
    }
    journal.flush().unwrap();
}

fn read_all(reader: JournalReader) -> Vec<ReadItem> {
    reader.map(|item| item.unwrap()).collect()
}

/// Items cover `from..end` exactly, in order, records and gaps without overlap.
fn assert_covers(items: &[ReadItem], from: u64, end: u64) {
    let mut next = from;
    for item in items {
        match item {
            ReadItem::Record(r) => {
                assert_eq!(r.seq, next, "{items:?}");
                next += 1;
            }
            ReadItem::Gap { from, to } => {
                assert_eq!(*from, next, "{items:?}");
                assert!(to >= from, "{items:?}");
                next = to + 1;
            }
        }
    }
    assert_eq!(next, end, "{items:?}");
}

fn segment_files(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut files: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|p| {
            let seq = parse_segment_file_name(p.file_name()?.to_str()?)?;
            p.is_file().then_some((seq, p))
        })
        .collect();
    files.sort();
    files
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
    }
}

/// Writes a segment file directly; returns the offset of each record.
fn write_segment(dir: &Path, name_seq: u64, records: &[u64]) -> (PathBuf, Vec<usize>) {
    let mut bytes = encode_header(name_seq).to_vec();
    let mut offsets = Vec::new();
    for &seq in records {
        offsets.push(bytes.len());
        encode_record(&mut bytes, seq, time_of(seq), &payload(seq));
    }
    let path = dir.join(segment_file_name(name_seq));
    fs::write(&path, bytes).unwrap();
    (path, offsets)
}

fn issue_kinds(recovery: &Recovery) -> BTreeMap<String, IssueKind> {
    recovery
        .issues
        .iter()
        .map(|i| {
            let name = i.path.file_name().unwrap().to_string_lossy().into_owned();
            (name, i.kind.clone())
        })
        .collect()
}

#[test]
fn appended_records_read_back_after_flush() {
    let dir = TestDir::new("readback");
    let (mut journal, recovery) = Journal::open(config(dir.path(), 1 << 20)).unwrap();
    assert!(recovery.is_clean(), "{recovery:?}");
    assert_eq!(journal.next_seq(), FIRST_SEQ);
    assert_eq!(journal.range(), None);
    assert!(read_all(journal.reader_from_seq(0).unwrap()).is_empty());

    for seq in 1..=100 {
        assert_eq!(journal.append(time_of(seq), &payload(seq)).unwrap(), seq);
    }
    // Buffered: not visible yet.
    assert!(read_all(journal.reader_from_seq(0).unwrap()).is_empty());
    assert_eq!(journal.range(), None);
    assert_eq!(journal.stats().buffered_records, 100);

    journal.flush().unwrap();
    let items = read_all(journal.reader_from_seq(0).unwrap());
    assert_eq!(items, (1..=100).map(expected).collect::<Vec<_>>());
    assert_eq!(
        journal.range(),
        Some(JournalRange {
            first_seq: 1,
            first_time_ns: time_of(1),
            last_seq: 100,
            last_time_ns: time_of(100),
        })
    );
    let stats = journal.stats();
    assert_eq!(
        (stats.records, stats.buffered_records, stats.segments),
        (100, 0, 1)
    );
    assert_eq!(stats.next_seq, 101);
}

#[test]
fn reader_from_seq_lands_on_the_exact_record() {
    let dir = TestDir::new("from-seq");
    // ~600 records per segment: several sparse index entries each.
    let (mut journal, _) = Journal::open(config(dir.path(), 40_000)).unwrap();
    fill(&mut journal, 3000);
    assert!(journal.stats().segments >= 4, "{:?}", journal.stats());

    let mut starts = vec![1, 2, 255, 256, 257, 511, 512, 513, 1000, 2998, 2999, 3000];
    starts.extend(
        segment_files(dir.path())
            .iter()
            .flat_map(|(s, _)| [*s, s.saturating_sub(1)]),
    );
    for seq in starts.into_iter().filter(|s| (1..=3000).contains(s)) {
        let items = read_all(journal.reader_from_seq(seq).unwrap());
        assert_eq!(items.first(), Some(&expected(seq)), "from {seq}");
        assert_eq!(items.len() as u64, 3001 - seq, "from {seq}");
        assert_covers(&items, seq, 3001);
    }
    assert!(read_all(journal.reader_from_seq(3001).unwrap()).is_empty());
    // 0 is never a seq: it reads from the first one.
    assert_eq!(
        journal.reader_from_seq(0).unwrap().next().unwrap().unwrap(),
        expected(1)
    );
    assert!(read_all(journal.reader_from_seq(u64::MAX).unwrap()).is_empty());
}

#[test]
fn reader_from_time_lands_on_the_first_record_at_or_after_it() {
    let dir = TestDir::new("from-time");
    let (mut journal, _) = Journal::open(config(dir.path(), 40_000)).unwrap();
    // Wall time steps backwards now and then (records 50..60 of every 700 are 30 us early).
    let time = |seq: u64| {
        time_of(seq)
            - if seq % 700 >= 50 && seq % 700 < 60 {
                30_000
            } else {
                0
            }
    };
    for seq in 1..=3000 {
        journal.append(time(seq), &payload(seq)).unwrap();
    }
    journal.flush().unwrap();
    assert!(journal.stats().segments >= 4);

    let mut targets = vec![i64::MIN, 0, time(1), time(3000), time(3000) + 1, i64::MAX];
    for seq in (1..=3000).step_by(37).chain(645..665).chain(1390..1410) {
        targets.extend([time(seq) - 1, time(seq), time(seq) + 1]);
    }
    for t in targets {
        let first = (1..=3000).find(|&s| time(s) >= t);
        let items = read_all(journal.reader_from_time(t).unwrap());
        match first {
            None => assert!(items.is_empty(), "t {t}: {items:?}"),
            Some(first) => {
                let ReadItem::Record(r) = &items[0] else {
                    panic!("t {t}: {:?}", items[0])
                };
                assert_eq!(
                    (r.seq, r.time_ns, &r.payload),
                    (first, time(first), &payload(first))
                );
                assert_covers(&items, first, 3001);
            }
        }
    }
}

#[test]
fn reader_from_time_uses_a_segment_maximum_not_its_last_time() {
    let dir = TestDir::new("from-time-max");
    // Three 25-byte records fill a segment. The first one ends with a clock step back.
    let (mut journal, _) = Journal::open(config(dir.path(), HEADER_LEN + 75)).unwrap();
    for time in [10, 50, 20] {
        journal.append(time, b"a").unwrap();
    }
    journal.flush().unwrap();
    for time in [60, 70] {
        journal.append(time, b"b").unwrap();
    }
    journal.flush().unwrap();
    assert_eq!(
        segment_files(dir.path())
            .iter()
            .map(|f| f.0)
            .collect::<Vec<_>>(),
        [1, 4]
    );
    let first = |t| match journal.reader_from_time(t).unwrap().next() {
        Some(Ok(ReadItem::Record(r))) => Some((r.seq, r.time_ns)),
        other => {
            assert!(other.is_none(), "{other:?}");
            None
        }
    };
    assert_eq!(first(40), Some((2, 50)));
    assert_eq!(first(50), Some((2, 50)));
    assert_eq!(first(51), Some((4, 60)));
    assert_eq!(first(15), Some((2, 50)));
    assert_eq!(first(71), None);
}

#[test]
fn rotation_spreads_records_over_segments_and_a_reader_spans_them() {
    let dir = TestDir::new("rotation");
    let (mut journal, _) = Journal::open(config(dir.path(), 1024)).unwrap();
    fill(&mut journal, 400);
    let files = segment_files(dir.path());
    let stats = journal.stats();
    assert!(files.len() >= 5, "{files:?}");
    assert_eq!(files.len() as u64, stats.segments);
    assert_eq!(
        stats.bytes,
        files
            .iter()
            .map(|(_, p)| fs::metadata(p).unwrap().len())
            .sum::<u64>()
    );
    // Each file is named by its first record, and sealed ones reached the rotation size.
    let mut names = files.iter().map(|(s, _)| *s).peekable();
    while let Some(first) = names.next() {
        if first > 400 {
            continue; // the newest segment, empty after a rotation
        }
        let items = read_all(journal.reader_from_seq(first).unwrap());
        assert_eq!(items.first(), Some(&expected(first)));
        if let Some(&next) = names.peek() {
            let len = fs::metadata(dir.path().join(segment_file_name(first)))
                .unwrap()
                .len();
            assert!(len >= 1024, "{first}: {len}");
            assert!(next > first);
        }
    }
    // A reader starting in the middle of one segment runs through all the others.
    let items = read_all(journal.reader_from_seq(37).unwrap());
    assert_eq!(items, (37..=400).map(expected).collect::<Vec<_>>());
}

#[test]
fn a_reader_is_a_snapshot_and_can_move_to_another_thread() {
    fn assert_send_static<T: Send + 'static>(_: &T) {}
    let dir = TestDir::new("snapshot");
    let (mut journal, _) = Journal::open(config(dir.path(), 1024)).unwrap();
    fill(&mut journal, 50);
    let reader = journal.reader_from_seq(0).unwrap();
    assert_send_static(&reader);
    assert_eq!(reader.end_seq(), 51);
    fill(&mut journal, 100);
    journal.append(0, b"buffered").unwrap();
    let items = std::thread::spawn(move || read_all(reader)).join().unwrap();
    assert_eq!(items, (1..=50).map(expected).collect::<Vec<_>>());
    assert_eq!(read_all(journal.reader_from_seq(0).unwrap()).len(), 150);
}

#[test]
fn reopen_continues_the_sequence() {
    let dir = TestDir::new("reopen");
    {
        let (mut journal, _) = Journal::open(config(dir.path(), 1024)).unwrap();
        fill(&mut journal, 55);
        journal.sync().unwrap();
    }
    let (mut journal, recovery) = Journal::open(config(dir.path(), 1024)).unwrap();
    assert!(recovery.is_clean(), "{recovery:?}");
    assert_eq!((recovery.next_seq, recovery.records), (56, 55));
    assert!(recovery.gaps.is_empty());
    assert_eq!(journal.next_seq(), 56);
    fill(&mut journal, 5);
    let items = read_all(journal.reader_from_seq(0).unwrap());
    assert_eq!(items, (1..=60).map(expected).collect::<Vec<_>>());
}

#[test]
fn reopen_continues_the_sequence_after_retention_dropped_every_old_segment() {
    let dir = TestDir::new("reopen-dropped");
    let cfg = JournalConfig {
        max_total_bytes: 0,
        ..config(dir.path(), 512)
    };
    let end = {
        let (mut journal, _) = Journal::open(cfg.clone()).unwrap();
        // Flushing at the rotation size rotates: the newest segment is empty, all others dropped.
        while journal.stats().dropped_segments < 3 || journal.stats().records > 0 {
            let seq = journal.next_seq();
            journal.append(time_of(seq), &payload(seq)).unwrap();
            journal.flush().unwrap();
        }
        journal.sync().unwrap();
        assert_eq!(journal.stats().dropped_records, journal.next_seq() - 1);
        journal.next_seq()
    };
    let files = segment_files(dir.path());
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(files[0].0, end);
    assert_eq!(fs::metadata(&files[0].1).unwrap().len(), HEADER_LEN);

    let (mut journal, recovery) = Journal::open(cfg).unwrap();
    assert!(recovery.is_clean(), "{recovery:?}");
    assert_eq!((journal.next_seq(), journal.range()), (end, None));
    assert_eq!(
        read_all(journal.reader_from_seq(0).unwrap()),
        vec![ReadItem::Gap {
            from: 1,
            to: end - 1
        }]
    );
    assert_eq!(journal.append(time_of(end), &payload(end)).unwrap(), end);
    journal.flush().unwrap();
    assert_eq!(
        read_all(journal.reader_from_seq(end).unwrap()),
        vec![expected(end)]
    );
}

#[test]
fn reopen_with_an_empty_newest_segment_continues_from_its_name() {
    let dir = TestDir::new("reopen-empty");
    let end = {
        let (mut journal, _) = Journal::open(config(dir.path(), 1024)).unwrap();
        while journal.stats().segments < 3 {
            let seq = journal.next_seq();
            journal.append(time_of(seq), &payload(seq)).unwrap();
            journal.flush().unwrap();
        }
        journal.next_seq()
    };
    let files = segment_files(dir.path());
    let (newest, path) = files.last().unwrap();
    assert_eq!(
        (*newest, fs::metadata(path).unwrap().len()),
        (end, HEADER_LEN)
    );

    let (mut journal, recovery) = Journal::open(config(dir.path(), 1024)).unwrap();
    assert!(recovery.is_clean(), "{recovery:?}");
    assert_eq!(journal.next_seq(), end);
    assert_eq!(journal.range().map(|r| r.last_seq), Some(end - 1));
    assert_eq!(journal.append(time_of(end), &payload(end)).unwrap(), end);
    journal.flush().unwrap();
    assert_eq!(
        read_all(journal.reader_from_seq(0).unwrap()),
        (1..=end).map(expected).collect::<Vec<_>>()
    );
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let dir = TestDir::new("lock");
    let (journal, _) = Journal::open(config(dir.path(), 1024)).unwrap();
    let err = Journal::open(config(dir.path(), 1024)).unwrap_err();
    assert!(matches!(err, JournalError::Locked { .. }), "{err}");
    assert!(
        err.to_string().contains(&*dir.path().to_string_lossy()),
        "{err}"
    );
    drop(journal);
    Journal::open(config(dir.path(), 1024)).unwrap();
}

#[test]
fn an_oversized_payload_is_refused_without_using_a_seq() {
    let dir = TestDir::new("too-large");
    let (mut journal, _) = Journal::open(config(dir.path(), 1024)).unwrap();
    let err = journal.append(0, &vec![0; MAX_PAYLOAD + 1]).unwrap_err();
    assert!(matches!(err, JournalError::RecordTooLarge { .. }), "{err}");
    assert_eq!(journal.next_seq(), 1);
    assert_eq!(journal.append(0, &vec![7; MAX_PAYLOAD]).unwrap(), 1);
    journal.flush().unwrap();
    let Some(Ok(ReadItem::Record(r))) = journal.reader_from_seq(1).unwrap().next() else {
        panic!("no record");
    };
    assert_eq!(r.payload.len(), MAX_PAYLOAD);
}

#[test]
fn segment_file_names_parse_strictly() {
    assert_eq!(segment_file_name(42), "00000000000000000042.seg");
    assert_eq!(
        parse_segment_file_name("00000000000000000042.seg"),
        Some(42)
    );
    assert_eq!(
        parse_segment_file_name(&segment_file_name(u64::MAX)),
        Some(u64::MAX)
    );
    for bad in [
        "42.seg",
        "0000000000000000004x.seg",
        "99999999999999999999.seg",
        "00000000000000000042.seg.tmp",
        "+0000000000000000042.seg",
    ] {
        assert_eq!(parse_segment_file_name(bad), None, "{bad}");
    }
}
