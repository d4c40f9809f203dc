//! Retention by size and by age, and readers made before it.

use super::*;

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
