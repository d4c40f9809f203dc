//! The batch path: drained records are journaled in batches and published once per batch, the
//! journal and every subscriber holding the same bytes.

use std::{collections::VecDeque, path::Path, time::Duration};

use prost::Message as _;
use sensor_common::Verdict;

use super::*;
use crate::{
    attribution::procs::ProcessCache,
    event::{Body, Connect, Event},
    server::codec::Message,
    sinks::{
        export::ExportCounters,
        hub::Item,
        journal::{JournalConfig, ReadItem},
    },
    testing::TestDir,
};

fn connect(i: u64) -> Event {
    Event {
        ktime_ns: 1_000 + i,
        cgroup_id: 1,
        pid: std::process::id(),
        tid: std::process::id(),
        uid: 0,
        gid: 0,
        verdict: if i.is_multiple_of(2) {
            Verdict::Blocked
        } else {
            Verdict::Audited
        },
        comm: "unit".into(),
        body: Body::Connect(Connect::for_test()),
    }
}

/// A pipeline journaling into `dir`, with its hub and journal.
fn pipeline_in(dir: &TestDir) -> (Pipeline, Arc<Hub>, Arc<Mutex<Journal>>) {
    let (journal, _) = Journal::open(JournalConfig {
        dir: dir.path().join("journal"),
        ..Default::default()
    })
    .unwrap();
    let journal = Arc::new(Mutex::new(journal));
    let hub = Arc::new(Hub::new(crate::event::proto::Origin::node("node-1")));
    let status = Arc::new(StatusBoard::new(
        "node-1",
        Vec::new(),
        policy::Shared::new(policy::from_default(None)),
        Arc::clone(&hub),
        Arc::clone(&journal),
        ExportCounters::default(),
        Vec::new(),
    ));
    let procs = ProcessCache::new(Path::new("/proc"), 1024, Duration::from_secs(30));
    let enricher = Enricher::new(procs, None, None, Duration::from_millis(10), 16);
    let pipeline = Pipeline::new(status, enricher, PathBuf::from("/proc"));
    (pipeline, hub, journal)
}

#[test]
fn drained_records_are_journaled_and_published_in_batches_as_the_same_bytes() {
    let dir = TestDir::new("pipeline-batch");
    let (mut pipeline, hub, journal) = pipeline_in(&dir);
    let sub = hub.subscribe(&pb::Filter::default(), 10_000);
    let blocked_only = hub.subscribe(
        &pb::Filter {
            verdicts: vec![pb::Verdict::Blocked as i32],
            ..Default::default()
        },
        10_000,
    );

    // 600 records, one of them undecodable (a `lost` record, stage `decode`, in its place).
    let mut i = 0u64;
    let n = pipeline.drain_records(|| {
        i += 1;
        match i {
            301 => Some(Err(DecodeError::Short { len: 3 })),
            1..=600 => Some(Ok(connect(i))),
            _ => None,
        }
    });
    assert_eq!(n, 600);

    let mut items = VecDeque::new();
    sub.try_recv(&mut items);
    let sizes: Vec<usize> = items
        .iter()
        .map(|item| match item {
            Item::Events(b, sel) => {
                assert_eq!(sel.len(), b.events.len());
                b.events.len()
            }
            Item::Lost { .. } => panic!("nothing lost"),
        })
        .collect();
    assert_eq!(sizes, [256, 256, 88], "one publish per batch of 256");
    let live: Vec<Published> = items
        .into_iter()
        .flat_map(|item| match item {
            Item::Events(b, _) => b.events.clone(),
            Item::Lost { .. } => Vec::new(),
        })
        .collect();
    assert_eq!(
        live.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=600).collect::<Vec<_>>()
    );

    // The journal holds exactly the published payloads, under the same numbers.
    let stored: Vec<(u64, Vec<u8>)> = journal
        .lock()
        .unwrap()
        .reader_from_seq(1)
        .unwrap()
        .map(|item| match item.unwrap() {
            ReadItem::Record(r) => (r.seq, r.payload),
            ReadItem::Gap { from, to } => panic!("gap {from}..={to}"),
        })
        .collect();
    assert_eq!(stored.len(), 600);
    for ((seq, payload), e) in stored.iter().zip(&live) {
        assert_eq!((*seq, payload.as_slice()), (e.seq, e.payload.as_ref()));
        let wire = pb::Event::decode(
            Message {
                seq: e.seq,
                payload: e.payload.clone(),
            }
            .to_bytes()
            .as_slice(),
        )
        .unwrap();
        assert_eq!(wire.seq, *seq);
        if *seq == 301 {
            assert_eq!(proto::kind_of(&wire), pb::EventKind::Lost);
            continue;
        }
        assert_eq!(proto::kind_of(&wire), pb::EventKind::Connect);
        let p = wire.process.unwrap();
        assert_eq!(p.pid, std::process::id());
        assert!(!p.exe.is_empty(), "attributed from /proc");
        assert_eq!(wire.node, "node-1");
    }

    // The filtered subscriber got the blocked ones (even i) and the loss record.
    let mut items = VecDeque::new();
    blocked_only.try_recv(&mut items);
    let got: Vec<u64> = items
        .iter()
        .flat_map(|item| match item {
            Item::Events(b, sel) => sel.iter().map(|i| b.events[i].seq).collect(),
            Item::Lost { .. } => Vec::new(),
        })
        .collect();
    let expected: Vec<u64> = (1..=600u64)
        .filter(|&s| {
            s == 301 || (s < 301 && s.is_multiple_of(2)) || (s > 301 && s.is_multiple_of(2))
        })
        .collect();
    assert_eq!(got, expected);
    assert_eq!(pipeline.counters.decode_errors, 1);
    assert_eq!(
        pipeline
            .counters
            .events_of(pb::EventKind::Connect, pb::Verdict::Blocked),
        300
    );
}

/// Every published event of `items`: (seq, kind, loss count for a loss record).
fn published(items: VecDeque<Item>) -> Vec<(u64, pb::EventKind, u64)> {
    items
        .into_iter()
        .flat_map(|item| match item {
            Item::Events(b, _) => b.events.clone(),
            Item::Lost { .. } => panic!("the subscriber keeps up"),
        })
        .map(|e| {
            let wire = pb::Event::decode(e.payload.as_ref()).unwrap();
            let count = match &wire.body {
                Some(pb::event::Body::Lost(l)) => {
                    assert_eq!(l.stage, pb::LossStage::JournalWrite as i32);
                    l.count
                }
                _ => 0,
            };
            (e.seq, proto::kind_of(&wire), count)
        })
        .collect()
}

#[test]
fn a_journal_outage_publishes_without_numbers_tries_once_a_second_and_reports_the_exact_loss() {
    let dir = TestDir::new("pipeline-outage");
    let (mut pipeline, hub, journal) = pipeline_in(&dir);
    let sub = hub.subscribe(&pb::Filter::default(), 10_000);
    let drain = |pipeline: &mut Pipeline, from: u64, n: u64| {
        let mut i = from;
        pipeline.drain_records(|| {
            i += 1;
            (i <= from + n).then(|| Ok(connect(i)))
        });
    };
    drain(&mut pipeline, 0, 10);

    // The disk fills: the batch that fails and every one after it go out without a number.
    journal
        .lock()
        .unwrap()
        .set_write_fault(Some((0, std::io::ErrorKind::StorageFull)));
    drain(&mut pipeline, 10, 300);
    drain(&mut pipeline, 310, 5);
    // Retries before their time do not touch the journal.
    pipeline.retry_journal(Instant::now());
    assert_eq!(
        pipeline.counters.journal_errors, 1,
        "one failure, not one per event"
    );
    assert_eq!(pipeline.counters.journal_outages, 1);
    assert_eq!(pipeline.counters.journal_unjournaled, 305);
    // A retry that is due, still failing: counted once more, nothing published.
    pipeline.retry_journal(Instant::now() + JOURNAL_RETRY);
    assert_eq!(pipeline.counters.journal_errors, 2);
    drain(&mut pipeline, 315, 2);

    // Space again: the next due retry writes the loss record, then events are numbered again.
    journal.lock().unwrap().set_write_fault(None);
    pipeline.retry_journal(Instant::now() + 2 * JOURNAL_RETRY);
    drain(&mut pipeline, 317, 3);
    assert_eq!(pipeline.counters.journal_unjournaled, 307);
    assert_eq!(pipeline.counters.journal_errors, 2);

    let mut items = VecDeque::new();
    sub.try_recv(&mut items);
    let live = published(items);
    let connect = pb::EventKind::Connect;
    let mut expect: Vec<(u64, pb::EventKind, u64)> = (1..=10).map(|s| (s, connect, 0)).collect();
    expect.extend((0..307).map(|_| (0, connect, 0)));
    expect.push((11, pb::EventKind::Lost, 307));
    expect.extend((12..=14).map(|s| (s, connect, 0)));
    assert_eq!(live, expect);

    // The journal: the first ten, the loss record with the exact count, the three after it.
    let stored: Vec<u64> = journal
        .lock()
        .unwrap()
        .reader_from_seq(1)
        .unwrap()
        .map(|item| match item.unwrap() {
            ReadItem::Record(r) => r.seq,
            ReadItem::Gap { from, to } => panic!("gap {from}..={to}"),
        })
        .collect();
    assert_eq!(stored, (1..=14).collect::<Vec<_>>());
    assert_eq!(
        pipeline
            .counters
            .events()
            .get("lost/journal_write")
            .copied(),
        Some(1)
    );
}
