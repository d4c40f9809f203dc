//! Recovery and reading of damaged journals: torn tails, corrupt records and headers, random
//! damage.

use super::*;

/// The record at `seq` reads back as written.
fn assert_reads_back(journal: &Journal, seq: u64, time_ns: i64, payload: &[u8]) {
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
            time_ns,
            payload: payload.to_vec()
        })
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
    assert_reads_back(&journal, last, 42, b"after recovery");
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
        assert_reads_back(&journal, seq, 7, b"after damage");
    }
    assert!(damaged_runs > 400, "{damaged_runs}");
}

/// Found by the `journal_open` fuzz target: a damaged newest segment named u64::MAX made
/// `Journal::open` fail (the segment after it would have had the same name), so the daemon
/// could not start. It opens exhausted, with the older records readable.
#[test]
fn a_damaged_newest_segment_named_u64_max_opens_exhausted() {
    let dir = TestDir::new("max-name");
    write_segment(dir.path(), 1, &[1, 2, 3]);
    let mut header = encode_header(u64::MAX).to_vec();
    header[12] = 0xff;
    fs::write(dir.path().join(segment_file_name(u64::MAX)), &header).unwrap();
    let (mut journal, recovery) = Journal::open(config(dir.path(), 1 << 20)).unwrap();
    assert_eq!(
        issue_kinds(&recovery).get(&segment_file_name(u64::MAX)),
        Some(&IssueKind::BadHeader(HeaderProblem::UnknownFlags(0xff)))
    );
    assert_eq!(journal.next_seq(), u64::MAX);
    assert!(matches!(
        journal.append(time_of(4), &payload(4)),
        Err(JournalError::SeqExhausted { .. })
    ));
    let mut items = (1..4).map(expected).collect::<Vec<_>>();
    items.push(ReadItem::Gap {
        from: 4,
        to: u64::MAX - 1,
    });
    assert_eq!(read_all(journal.reader_from_seq(1).unwrap()), items);
}
