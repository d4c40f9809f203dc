use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use super::{format::*, *};

/// A fresh directory under the system temp dir, removed on drop.
struct TestDir(PathBuf);

impl TestDir {
    fn new(name: &str) -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "sensor-journal-{}-{name}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

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

/// Builds a journal of several segments whose newest one ends with record `last` (40-byte
/// payload); returns (template dir, last seq, newest segment path, offset of the last record).
fn torn_tail_template() -> (TestDir, u64, PathBuf, u64) {
    let dir = TestDir::new("torn-template");
    let last = {
        let (mut journal, _) = Journal::open(config(dir.path(), 2048)).unwrap();
        while journal.stats().segments < 3 {
            fill(&mut journal, 10);
        }
        fill(&mut journal, 3);
        let last = journal.append(time_of(0), &[0xa5; 40]).unwrap();
        journal.sync().unwrap();
        last
    };
    let (_, newest) = segment_files(dir.path()).pop().unwrap();
    let len = fs::metadata(&newest).unwrap().len();
    assert!(
        len > HEADER_LEN + 64,
        "newest segment must hold the last record: {len}"
    );
    let offset = len - (FRAME_LEN + BODY_FIXED_LEN + 40);
    let name = newest.file_name().unwrap().to_owned();
    (dir, last, PathBuf::from(name), offset)
}

fn check_torn_tail_recovery(dir: &Path, last: u64, newest: &Path, offset: u64, cut: u64) {
    let cfg = config(dir, 2048);
    let (mut journal, recovery) = Journal::open(cfg.clone()).unwrap();
    assert_eq!(recovery.issues.len(), 1, "cut {cut}: {recovery:?}");
    let IssueKind::TornTail {
        offset: at, bytes, ..
    } = recovery.issues[0].kind
    else {
        panic!("cut {cut}: {recovery:?}");
    };
    assert_eq!((at, bytes), (offset, cut - offset), "cut {cut}");
    assert_eq!(recovery.truncated_bytes, cut - offset);
    assert_eq!(journal.stats().truncated_bytes, cut - offset);
    assert_eq!(fs::metadata(dir.join(newest)).unwrap().len(), offset);
    assert_eq!((recovery.next_seq, journal.next_seq()), (last, last));
    assert!(recovery.gaps.is_empty(), "{recovery:?}");
    let items = read_all(journal.reader_from_seq(0).unwrap());
    assert_eq!(
        items,
        (1..last).map(expected).collect::<Vec<_>>(),
        "cut {cut}"
    );

    assert_eq!(journal.append(42, b"after recovery").unwrap(), last);
    journal.sync().unwrap();
    let item = journal
        .reader_from_seq(last)
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(
        item,
        ReadItem::Record(Record {
            seq: last,
            time_ns: 42,
            payload: b"after recovery".to_vec()
        })
    );
    drop(journal);
    let (journal, recovery) = Journal::open(cfg).unwrap();
    assert!(recovery.is_clean(), "{recovery:?}");
    assert_eq!(journal.next_seq(), last + 1);
}

#[test]
fn a_torn_tail_cut_at_every_offset_of_the_last_record_is_recovered() {
    let (template, last, newest, offset) = torn_tail_template();
    let full = fs::metadata(template.path().join(&newest)).unwrap().len();
    for cut in offset + 1..full {
        let dir = TestDir::new("torn");
        copy_dir(template.path(), dir.path());
        fs::OpenOptions::new()
            .write(true)
            .open(dir.path().join(&newest))
            .unwrap()
            .set_len(cut)
            .unwrap();
        check_torn_tail_recovery(dir.path(), last, &newest, offset, cut);
    }
    // A record that is all there but damaged at the end: crc mismatch, or a garbage length.
    for (at, byte) in [(full - 1, 0x01u8), (offset + 3, 0x80)] {
        let dir = TestDir::new("torn-crc");
        copy_dir(template.path(), dir.path());
        let path = dir.path().join(&newest);
        let mut bytes = fs::read(&path).unwrap();
        bytes[at as usize] ^= byte;
        fs::write(&path, bytes).unwrap();
        check_torn_tail_recovery(dir.path(), last, &newest, offset, full);
    }
    // Cut exactly at the record boundary: a shorter, clean journal.
    let dir = TestDir::new("torn-boundary");
    copy_dir(template.path(), dir.path());
    fs::OpenOptions::new()
        .write(true)
        .open(dir.path().join(&newest))
        .unwrap()
        .set_len(offset)
        .unwrap();
    let (journal, recovery) = Journal::open(config(dir.path(), 2048)).unwrap();
    assert!(recovery.is_clean(), "{recovery:?}");
    assert_eq!(journal.next_seq(), last);
}

#[test]
fn a_damaged_corpus_is_reported_and_the_good_records_stay_readable() {
    let dir = TestDir::new("corpus");
    let d = dir.path();
    write_segment(d, 1, &(1..10).collect::<Vec<_>>());
    // crc flipped in the middle of an older segment.
    let (b, offsets) = write_segment(d, 10, &(10..20).collect::<Vec<_>>());
    let mut bytes = fs::read(&b).unwrap();
    bytes[offsets[5] + 20] ^= 0xff;
    fs::write(&b, bytes).unwrap();
    // A huge length field.
    let (c, offsets_c) = write_segment(d, 20, &(20..30).collect::<Vec<_>>());
    let mut bytes = fs::read(&c).unwrap();
    bytes[offsets_c[3]..offsets_c[3] + 4].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
    fs::write(&c, bytes).unwrap();
    // A non-contiguous seq (35 is missing), every record well-formed.
    let (_, offsets_d) = write_segment(d, 30, &[30, 31, 32, 33, 34, 36, 37, 38, 39]);
    // Bad magic, zero-length, garbage.
    let (e, _) = write_segment(d, 40, &(40..50).collect::<Vec<_>>());
    let mut bytes = fs::read(&e).unwrap();
    bytes[0] = b'X';
    fs::write(&e, bytes).unwrap();
    fs::write(d.join(segment_file_name(50)), b"").unwrap();
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    fs::write(
        d.join(segment_file_name(60)),
        (0..500).map(|_| rng.next() as u8).collect::<Vec<_>>(),
    )
    .unwrap();
    write_segment(d, 70, &(70..80).collect::<Vec<_>>());
    // Strays: not segments.
    fs::write(d.join("notes.txt"), b"hello").unwrap();
    fs::write(d.join("123.seg"), encode_header(123)).unwrap();
    fs::create_dir(d.join(segment_file_name(99))).unwrap();

    let (mut journal, recovery) = Journal::open(config(d, 1 << 20)).unwrap();
    let kinds = issue_kinds(&recovery);
    let kind = |seq: u64| kinds.get(&segment_file_name(seq)).cloned();
    assert_eq!(kind(1), None, "{kinds:?}");
    assert!(
        matches!(kind(10), Some(IssueKind::Corrupt { offset, problem: RecordProblem::BadCrc, .. }) if offset == offsets[5] as u64),
        "{kinds:?}"
    );
    assert!(
        matches!(kind(20), Some(IssueKind::Corrupt { offset, problem: RecordProblem::BadLength(0xffff_fff0), .. }) if offset == offsets_c[3] as u64),
        "{kinds:?}"
    );
    assert!(
        matches!(kind(30), Some(IssueKind::Corrupt { offset, problem: RecordProblem::BadSeq { expected: 35, found: 36 }, .. }) if offset == offsets_d[5] as u64),
        "{kinds:?}"
    );
    assert_eq!(
        kind(40),
        Some(IssueKind::BadHeader(HeaderProblem::BadMagic))
    );
    assert_eq!(
        kind(50),
        Some(IssueKind::BadHeader(HeaderProblem::Short { len: 0 }))
    );
    assert_eq!(
        kind(60),
        Some(IssueKind::BadHeader(HeaderProblem::BadMagic))
    );
    assert_eq!(kind(70), None, "{kinds:?}");
    for stray in ["notes.txt", "123.seg", &segment_file_name(99)] {
        assert_eq!(
            kinds.get(stray),
            Some(&IssueKind::NotASegment),
            "{stray}: {kinds:?}"
        );
    }
    assert_eq!(recovery.issues.len(), 9);
    assert_eq!(recovery.gaps, vec![(15, 19), (23, 29), (35, 69)]);
    assert_eq!(
        (recovery.records, recovery.next_seq, recovery.segments),
        (32, 80, 8)
    );
    assert_eq!(journal.stats().corrupt_segments, 6);
    assert_eq!(recovery.truncated_bytes, 0);

    let mut want: Vec<ReadItem> = (1..15).map(expected).collect();
    want.push(ReadItem::Gap { from: 15, to: 19 });
    want.extend((20..23).map(expected));
    want.push(ReadItem::Gap { from: 23, to: 29 });
    want.extend((30..35).map(expected));
    want.push(ReadItem::Gap { from: 35, to: 69 });
    want.extend((70..80).map(expected));
    assert_eq!(read_all(journal.reader_from_seq(0).unwrap()), want);
    let from_16 = read_all(journal.reader_from_seq(16).unwrap());
    assert_eq!(
        from_16[..2],
        [ReadItem::Gap { from: 16, to: 19 }, expected(20)]
    );
    assert_covers(&from_16, 16, 80);
    let from_45 = read_all(journal.reader_from_seq(45).unwrap());
    assert_eq!(
        from_45[..2],
        [ReadItem::Gap { from: 45, to: 69 }, expected(70)]
    );
    let from_time = read_all(journal.reader_from_time(time_of(16)).unwrap());
    assert_eq!(from_time.first(), Some(&expected(20)));

    assert_eq!(journal.append(time_of(80), &payload(80)).unwrap(), 80);
    journal.flush().unwrap();
    assert_eq!(
        read_all(journal.reader_from_seq(79).unwrap()),
        vec![expected(79), expected(80)]
    );
    drop(journal);
    let (journal, again) = Journal::open(config(d, 1 << 20)).unwrap();
    assert_eq!(again.issues.len(), 9, "{again:?}");
    assert_eq!(journal.next_seq(), 81);
}

#[test]
fn damage_inside_the_newest_segment_with_records_after_it_is_kept_and_never_reused() {
    let dir = TestDir::new("newest-corrupt");
    let (path, offsets) = write_segment(dir.path(), 1, &(1..20).collect::<Vec<_>>());
    let mut bytes = fs::read(&path).unwrap();
    let len = bytes.len() as u64;
    bytes[offsets[5] + 4] ^= 0x10;
    fs::write(&path, bytes).unwrap();

    let (mut journal, recovery) = Journal::open(config(dir.path(), 1 << 20)).unwrap();
    assert!(
        matches!(
            recovery.issues[..],
            [RecoveryIssue {
                kind: IssueKind::Corrupt {
                    problem: RecordProblem::BadCrc,
                    ..
                },
                ..
            }]
        ),
        "{recovery:?}"
    );
    assert_eq!(fs::metadata(&path).unwrap().len(), len, "must not be cut");
    assert_eq!(recovery.gaps, vec![(6, 19)]);
    assert_eq!(journal.next_seq(), 20);
    let mut want: Vec<_> = (1..6).map(expected).collect();
    want.push(ReadItem::Gap { from: 6, to: 19 });
    assert_eq!(read_all(journal.reader_from_seq(0).unwrap()), want);
    assert_eq!(journal.append(time_of(20), &payload(20)).unwrap(), 20);
    journal.flush().unwrap();
    assert_eq!(
        read_all(journal.reader_from_seq(19).unwrap()),
        vec![ReadItem::Gap { from: 19, to: 19 }, expected(20)]
    );
    assert!(dir.path().join(segment_file_name(20)).is_file());
}

#[test]
fn a_newest_segment_with_a_torn_or_bad_header_does_not_reuse_its_seqs() {
    // Shorter than a header (a crash while rotating): rewritten, seq continues from its name.
    for len in [0usize, 10] {
        let dir = TestDir::new("torn-header");
        write_segment(dir.path(), 1, &(1..10).collect::<Vec<_>>());
        fs::write(
            dir.path().join(segment_file_name(10)),
            &encode_header(10)[..len],
        )
        .unwrap();
        let (mut journal, recovery) = Journal::open(config(dir.path(), 1 << 20)).unwrap();
        assert_eq!(
            issue_kinds(&recovery).get(&segment_file_name(10)),
            Some(&IssueKind::TornHeader { bytes: len as u64 })
        );
        assert_eq!(journal.next_seq(), 10);
        assert_eq!(journal.append(time_of(10), &payload(10)).unwrap(), 10);
        journal.flush().unwrap();
        assert_eq!(
            read_all(journal.reader_from_seq(0).unwrap()),
            (1..11).map(expected).collect::<Vec<_>>()
        );
    }
    // Full length but unknown magic: skipped, its records' seqs are not handed out again.
    let dir = TestDir::new("bad-header-newest");
    let (path, _) = write_segment(dir.path(), 1, &(1..10).collect::<Vec<_>>());
    let mut bytes = fs::read(&path).unwrap();
    bytes[..8].copy_from_slice(b"NOTMAGIC");
    fs::write(&path, bytes).unwrap();
    let (journal, recovery) = Journal::open(config(dir.path(), 1 << 20)).unwrap();
    assert_eq!(
        recovery.issues[0].kind,
        IssueKind::BadHeader(HeaderProblem::BadMagic)
    );
    assert_eq!(journal.next_seq(), 10);
    assert_eq!(
        read_all(journal.reader_from_seq(0).unwrap()),
        vec![ReadItem::Gap { from: 1, to: 9 }]
    );
}

/// xorshift64: deterministic, no dependency.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
}

#[test]
fn random_damage_never_panics_and_never_yields_a_bad_record() {
    let template = TestDir::new("fuzz-template");
    let originals: BTreeMap<u64, i64> = {
        let (mut journal, _) = Journal::open(config(template.path(), 1500)).unwrap();
        fill(&mut journal, 150);
        journal.sync().unwrap();
        (1..=150).map(|s| (s, time_of(s))).collect()
    };
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    let mut damaged_runs = 0;
    for iteration in 0..500 {
        let dir = TestDir::new("fuzz");
        copy_dir(template.path(), dir.path());
        let files = segment_files(dir.path());
        for _ in 0..=rng.below(3) {
            let (_, path) = &files[rng.below(files.len() as u64) as usize];
            let Ok(mut bytes) = fs::read(path) else {
                continue;
            };
            let len = bytes.len() as u64;
            match rng.below(10) {
                0..=3 if len > 0 => {
                    let at = rng.below(len) as usize;
                    bytes[at] ^= (rng.below(255) + 1) as u8;
                }
                4 | 5 => bytes.truncate(rng.below(len + 1) as usize),
                6 if len >= 4 => {
                    let at = rng.below(len - 3) as usize;
                    bytes[at..at + 4].copy_from_slice(&(rng.next() as u32).to_le_bytes());
                }
                7 => bytes.extend((0..rng.below(64)).map(|_| rng.next() as u8)),
                8 if len > 0 => {
                    let at = rng.below(len) as usize;
                    let end = (at + rng.below(100) as usize).min(bytes.len());
                    bytes[at..end].fill(0);
                }
                9 => {
                    fs::remove_file(path).unwrap();
                    continue;
                }
                _ => {}
            }
            fs::write(path, bytes).unwrap();
        }

        let (mut journal, recovery) = Journal::open(config(dir.path(), 1500))
            .unwrap_or_else(|e| panic!("iteration {iteration}: {e}"));
        if !recovery.is_clean() {
            damaged_runs += 1;
        }
        let reader = journal.reader_from_seq(0).unwrap();
        let end = reader.end_seq();
        let items = read_all(reader);
        let mut last = None;
        for item in &items {
            if let ReadItem::Record(r) = item {
                assert!(
                    last.is_none_or(|l| r.seq > l),
                    "iteration {iteration}: {items:?}"
                );
                last = Some(r.seq);
                assert_eq!(
                    Some(&r.time_ns),
                    originals.get(&r.seq),
                    "iteration {iteration}"
                );
                assert_eq!(r.payload, payload(r.seq), "iteration {iteration}");
            }
        }
        if let Some(first) = items.first() {
            let from = match first {
                ReadItem::Record(r) => r.seq,
                ReadItem::Gap { from, .. } => *from,
            };
            assert_eq!(from, FIRST_SEQ, "iteration {iteration}");
            assert_covers(&items, FIRST_SEQ, end);
        }
        assert!(journal.next_seq() >= end);
        assert!(last.is_none_or(|l| journal.next_seq() > l));
        // Reading from a time never fails either.
        let t = time_of(rng.below(160));
        for item in journal.reader_from_time(t).unwrap() {
            item.unwrap_or_else(|e| panic!("iteration {iteration}: {e}"));
        }
        // The journal stays writable, and what it writes reads back.
        let seq = journal.append(7, b"after damage").unwrap();
        journal.flush().unwrap();
        let item = journal
            .reader_from_seq(seq)
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(
            item,
            ReadItem::Record(Record {
                seq,
                time_ns: 7,
                payload: b"after damage".to_vec()
            })
        );
    }
    assert!(damaged_runs > 400, "{damaged_runs}");
}

#[test]
fn retention_by_size_drops_the_oldest_segments_and_counts_them() {
    let dir = TestDir::new("retention-size");
    let cfg = JournalConfig {
        max_total_bytes: 4096,
        ..config(dir.path(), 1024)
    };
    let (mut journal, _) = Journal::open(cfg).unwrap();
    fill(&mut journal, 400);
    let stats = journal.stats();
    let range = journal.range().unwrap();
    assert!(stats.dropped_segments >= 5, "{stats:?}");
    assert_eq!(stats.dropped_records, range.first_seq - 1);
    assert_eq!(stats.records + stats.dropped_records, 400);
    assert!(stats.bytes <= 4096 + 1024 + 200, "{stats:?}");
    let files = segment_files(dir.path());
    assert_eq!(files.len() as u64, stats.segments);
    assert_eq!(files[0].0, range.first_seq);
    let items = read_all(journal.reader_from_seq(0).unwrap());
    assert_eq!(
        items[0],
        ReadItem::Gap {
            from: 1,
            to: range.first_seq - 1
        }
    );
    assert_eq!(
        items[1..],
        (range.first_seq..=400).map(expected).collect::<Vec<_>>()
    );
}

#[test]
fn retention_by_age_drops_segments_whose_newest_record_is_too_old() {
    let dir = TestDir::new("retention-age");
    let cfg = JournalConfig {
        max_age: Some(Duration::from_secs(3600)),
        ..config(dir.path(), 1024)
    };
    let now = now_ns();
    let old = now - 2 * 24 * 3600 * 1_000_000_000;
    let (mut journal, _) = Journal::open(cfg).unwrap();
    for seq in 1..=200u64 {
        let time = if seq <= 100 { old + seq as i64 } else { now };
        journal.append(time, &payload(seq)).unwrap();
        journal.flush().unwrap();
    }
    journal.sync().unwrap();
    let stats = journal.stats();
    let first = journal.range().unwrap().first_seq;
    assert!(stats.dropped_segments >= 3, "{stats:?}");
    assert_eq!(
        (stats.dropped_records, stats.records),
        (first - 1, 201 - first)
    );
    // Only the segment where time jumped forward may still hold old records.
    assert!(first > 50 && first <= 101, "{first}");
    let items = read_all(journal.reader_from_seq(0).unwrap());
    assert_eq!(
        items[0],
        ReadItem::Gap {
            from: 1,
            to: first - 1
        }
    );
    // Three days later everything but the active segment is too old.
    journal.apply_retention_at(now + 3 * 24 * 3600 * 1_000_000_000);
    assert_eq!(journal.stats().segments, 1);
    assert_eq!(segment_files(dir.path()).len(), 1);
    assert_eq!(
        journal.stats().dropped_records + journal.stats().records,
        200
    );
}

#[test]
fn a_reader_made_before_retention_gets_records_or_gaps_never_errors() {
    let dir = TestDir::new("retention-reader");
    let cfg = JournalConfig {
        max_total_bytes: 3000,
        ..config(dir.path(), 1024)
    };
    let (mut journal, _) = Journal::open(cfg).unwrap();
    fill(&mut journal, 100);
    let first = journal.range().unwrap().first_seq;
    assert!(first > 1);
    let mut partly_read = journal.reader_from_seq(first).unwrap();
    assert_eq!(partly_read.next().unwrap().unwrap(), expected(first));
    let from_start = journal.reader_from_seq(0).unwrap();
    let from_time = journal.reader_from_time(time_of(first + 1)).unwrap();
    // Everything these readers were made over is deleted now.
    fill(&mut journal, 300);
    assert!(journal.range().unwrap().first_seq > 100);

    let items = read_all(from_start);
    assert_covers(&items, 1, 101);
    assert_eq!(
        items[0],
        ReadItem::Gap {
            from: 1,
            to: first - 1
        }
    );
    // The starting segment was open: its records still come; later ones are gaps.
    assert_eq!(items[1], expected(first));
    assert!(
        matches!(items.last(), Some(ReadItem::Gap { to: 100, .. })),
        "{items:?}"
    );

    let rest: Vec<_> = partly_read.map(|i| i.unwrap()).collect();
    assert_eq!(rest[0], expected(first + 1));
    assert_covers(&rest, first + 1, 101);

    let items = read_all(from_time);
    assert_eq!(items[0], expected(first + 1));
    assert_covers(&items, first + 1, 101);
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
