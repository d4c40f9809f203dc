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

#[test]
fn drained_records_are_journaled_and_published_in_batches_as_the_same_bytes() {
    let dir = TestDir::new("pipeline-batch");
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
    let mut pipeline = Pipeline::new(status, enricher, PathBuf::from("/proc"));
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
