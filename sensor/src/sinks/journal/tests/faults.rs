//! Write failures: a full disk (an injected write fault, whole or after part of the buffer),
//! a deleted directory or segment, and a directory that cannot be made again. Nothing half
//! written is ever read, the sequence numbers not written are handed out again, appends wait
//! for a reopen, and the journal on disk stays clean.

use std::io::ErrorKind;

use super::*;

fn broken_by(journal: &mut Journal) -> JournalError {
    let seq = journal.next_seq();
    for i in 0..3 {
        assert_eq!(
            journal.append(time_of(seq + i), &payload(seq + i)).unwrap(),
            seq + i
        );
    }
    let err = journal.flush().unwrap_err();
    assert_eq!(
        journal.abandon(),
        seq,
        "the unwritten numbers are handed back"
    );
    assert!(journal.is_broken());
    err
}

fn assert_refuses_until_reopened(journal: &mut Journal) {
    assert!(matches!(
        journal.append(time_of(0), b"x"),
        Err(JournalError::Broken { .. })
    ));
    assert!(matches!(journal.flush(), Err(JournalError::Broken { .. })));
    assert!(journal.prepare_sync().unwrap().is_empty());
}

fn reopened_clean(dir: &Path, records: u64) {
    let (journal, recovery) = Journal::open(config(dir, 1 << 20)).unwrap();
    assert!(recovery.is_clean(), "{recovery:?}");
    assert_eq!(recovery.next_seq, records + 1);
    let items = read_all(journal.reader_from_seq(0).unwrap());
    assert_eq!(items, (1..=records).map(expected).collect::<Vec<_>>());
}

#[test]
fn a_failed_write_hands_its_numbers_back_and_appends_wait_for_a_reopen() {
    let dir = TestDir::new("fault-full");
    {
        let (mut journal, _) = Journal::open(config(dir.path(), 1 << 20)).unwrap();
        fill(&mut journal, 5);
        journal.set_write_fault(Some((0, ErrorKind::StorageFull)));
        let err = broken_by(&mut journal);
        assert!(err.to_string().contains("injected write fault"), "{err}");
        assert_refuses_until_reopened(&mut journal);
        // While broken, readers see what was written before.
        let items = read_all(journal.reader_from_seq(0).unwrap());
        assert_eq!(items, (1..=5).map(expected).collect::<Vec<_>>());

        // Still full: the reopen works (nothing to cut), the next write fails again.
        journal.reopen().unwrap();
        broken_by(&mut journal);

        journal.set_write_fault(None);
        journal.reopen().unwrap();
        assert!(!journal.is_broken());
        fill(&mut journal, 5);
        let items = read_all(journal.reader_from_seq(0).unwrap());
        assert_eq!(items, (1..=10).map(expected).collect::<Vec<_>>());
    }
    reopened_clean(dir.path(), 10);
}

#[test]
fn a_partial_write_is_cut_back_and_never_read() {
    let dir = TestDir::new("fault-partial");
    {
        let (mut journal, _) = Journal::open(config(dir.path(), 1 << 20)).unwrap();
        fill(&mut journal, 5);
        let (_, path) = segment_files(dir.path()).pop().unwrap();
        let good = fs::metadata(&path).unwrap().len();
        // Half of the first record, then ENOSPC.
        journal.set_write_fault(Some((HEADER_LEN as usize, ErrorKind::StorageFull)));
        broken_by(&mut journal);
        assert_eq!(fs::metadata(&path).unwrap().len(), good, "cut back");
        let items = read_all(journal.reader_from_seq(0).unwrap());
        assert_eq!(items, (1..=5).map(expected).collect::<Vec<_>>());

        journal.set_write_fault(None);
        journal.reopen().unwrap();
        fill(&mut journal, 5);
    }
    reopened_clean(dir.path(), 10);
}

#[test]
fn a_deleted_directory_is_made_again_and_the_sequence_goes_on() {
    let base = TestDir::new("fault-rmdir");
    let dir = base.path().join("journal");
    let (mut journal, _) = Journal::open(config(&dir, 1024)).unwrap();
    fill(&mut journal, 40);
    assert!(segment_files(&dir).len() > 2);
    fs::remove_dir_all(&dir).unwrap();

    // The next write lands in a deleted segment (or rotates into a deleted directory): a failure.
    let seq = journal.next_seq();
    assert_eq!(seq, 41);
    let mut failed = None;
    for i in 0..40 {
        if let Err(e) = journal
            .append(time_of(seq + i), &payload(seq + i))
            .and_then(|_| journal.flush())
        {
            failed = Some(e);
            break;
        }
    }
    assert!(
        failed.is_some(),
        "writes into a deleted directory must fail"
    );
    assert_eq!(
        journal.abandon(),
        seq,
        "nothing after the deletion counts as written"
    );
    assert_refuses_until_reopened(&mut journal);

    journal.reopen().unwrap();
    assert!(dir.is_dir(), "the directory is made again");
    // Locked again: a second writer is refused.
    assert!(matches!(
        Journal::open(config(&dir, 1024)),
        Err(JournalError::Locked { .. })
    ));
    fill(&mut journal, 5);
    assert_eq!(journal.range().unwrap().first_seq, seq);
    // A reader from the start: the deleted records are a gap, then the new ones.
    let items = read_all(journal.reader_from_seq(1).unwrap());
    assert_eq!(items[0], ReadItem::Gap { from: 1, to: 40 });
    assert_eq!(items[1..], (41..=45).map(expected).collect::<Vec<_>>()[..]);
    drop(journal);

    let (journal, recovery) = Journal::open(config(&dir, 1024)).unwrap();
    assert!(recovery.is_clean(), "{recovery:?}");
    assert_eq!(recovery.next_seq, 46);
    let items = read_all(journal.reader_from_seq(seq).unwrap());
    assert_eq!(items, (41..=45).map(expected).collect::<Vec<_>>());
}

#[test]
fn a_deleted_active_segment_is_replaced_and_the_older_ones_stay() {
    let dir = TestDir::new("fault-rm-active");
    let (mut journal, _) = Journal::open(config(dir.path(), 1024)).unwrap();
    fill(&mut journal, 40);
    let files = segment_files(dir.path());
    let (active_first, active) = files.last().unwrap().clone();
    fs::remove_file(&active).unwrap();

    broken_by(&mut journal);
    journal.reopen().unwrap();
    fill(&mut journal, 3);
    let items = read_all(journal.reader_from_seq(1).unwrap());
    assert_covers(&items, 1, 44);
    let expect: Vec<ReadItem> = (1..active_first)
        .map(expected)
        .chain([ReadItem::Gap {
            from: active_first,
            to: 40,
        }])
        .chain((41..=43).map(expected))
        .collect();
    assert_eq!(items, expect);
}

#[test]
fn a_reopen_that_cannot_make_the_directory_leaves_the_journal_broken() {
    let base = TestDir::new("fault-blocked");
    let dir = base.path().join("journal");
    let (mut journal, _) = Journal::open(config(&dir, 1 << 20)).unwrap();
    fill(&mut journal, 3);
    fs::remove_dir_all(&dir).unwrap();
    broken_by(&mut journal);
    // A file where the directory was: it cannot be made.
    fs::write(&dir, b"in the way").unwrap();
    let err = journal.reopen().unwrap_err();
    assert!(err.to_string().contains("create directory"), "{err}");
    assert!(journal.is_broken());
    assert_refuses_until_reopened(&mut journal);

    fs::remove_file(&dir).unwrap();
    journal.reopen().unwrap();
    fill(&mut journal, 2);
    let items = read_all(journal.reader_from_seq(4).unwrap());
    assert_eq!(items, (4..=5).map(expected).collect::<Vec<_>>());
}
