//! `GetEvents` requests and the events they filter (`sensor::server::api`, `sensor::event`).
//! The input is a request's length (u16, little-endian), the request (protobuf), then an
//! encoded event as the journal stores it. A request the server's check accepts starts a
//! replay of a small journal from its cursor (a cursor past the next sequence number is
//! refused `OutOfRange`, and nothing else is): items come in order, cover every sequence
//! number from the cursor (or the first record after the time) to the end, and events are at
//! or after the time asked for. The filter the server compiles and the key it reads from the
//! stored bytes decide like the offline filter on the decoded event (replay and `sensor tail
//! --file` agree), loss records always pass, and an event the server cannot read is one it
//! cannot decode.
#![no_main]

use std::sync::{LazyLock, Mutex};

use libfuzzer_sys::fuzz_target;
use prost::Message as _;
use sensor::{
    event::{
        filter,
        key::{Key, Matcher},
        proto::Origin,
    },
    server::api::{Start, check_request, replay_start},
    sinks::journal::{FIRST_SEQ, Journal, JournalConfig, follow::Followed},
};
use sensor_fuzz::Scratch;
use sensor_proto::v1 as pb;

/// Records 1..=RECORDS, at `BASE_NS + seq * STEP_NS`, in segments of a few records each.
const RECORDS: u64 = 12;
const BASE_NS: i64 = 1_764_000_000_000_000_000;
const STEP_NS: i64 = 1_000_000_000;

struct Fixture {
    journal: Mutex<Journal>,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    // Open for the process's life: removed when libFuzzer exits.
    let dir = Scratch::new("get-events").keep_until_exit();
    let (mut journal, _) = Journal::open(JournalConfig {
        dir,
        segment_bytes: 200,
        max_total_bytes: u64::MAX,
        max_age: None,
    })
    .unwrap();
    for seq in FIRST_SEQ..=RECORDS {
        let event = pb::Event {
            time_unix_ns: BASE_NS + seq as i64 * STEP_NS,
            body: Some(pb::event::Body::Exit(pb::Exit { code: None })),
            ..Default::default()
        };
        journal
            .append(event.time_unix_ns, &event.encode_to_vec())
            .unwrap();
        journal.flush().unwrap();
    }
    Fixture {
        journal: Mutex::new(journal),
    }
});

fn replay(start: Start) {
    let origin = Origin::new("node", "cluster");
    let (follower, floor) = {
        let journal = FIXTURE.journal.lock().unwrap();
        match replay_start(&journal, start, &origin) {
            Ok(started) => started,
            // A cursor past the next sequence number is refused, and only that.
            Err(status) => {
                assert_eq!(
                    status.code(),
                    tonic::Code::OutOfRange,
                    "{start:?}: {status}"
                );
                assert!(
                    matches!(start, Start::Seq(seq) if seq > RECORDS + 1),
                    "{start:?}"
                );
                return;
            }
        }
    };
    let Some(mut follower) = follower else {
        assert_eq!(start, Start::Live);
        return;
    };
    let mut items = Vec::new();
    loop {
        let batch = follower.next_batch(&FIXTURE.journal, 5).unwrap();
        if batch.is_empty() {
            break;
        }
        assert!(items.len() <= RECORDS as usize, "the replay does not end");
        items.extend(batch);
    }
    let first = match start {
        Start::Seq(seq) => seq,
        Start::Time(t) => {
            assert_eq!(floor, RECORDS + 1);
            // The first record at or after `t`.
            (FIRST_SEQ..=RECORDS)
                .find(|s| BASE_NS + *s as i64 * STEP_NS >= t)
                .unwrap_or(RECORDS + 1)
        }
        Start::Live => unreachable!(),
    };
    let mut next = first;
    for item in &items {
        match item {
            Followed::Event(e) => {
                assert_eq!(e.seq, next, "{start:?}: {items:?}");
                assert_eq!(e.time_unix_ns, BASE_NS + e.seq as i64 * STEP_NS);
                if let Start::Time(t) = start {
                    assert!(e.time_unix_ns >= t);
                }
            }
            Followed::Lost(e) => {
                let Some(pb::event::Body::Lost(l)) = &e.body else {
                    panic!("a loss item without a lost body");
                };
                assert_eq!(l.first_seq, next, "{start:?}: {items:?}");
            }
        }
        next = item.next_seq();
    }
    assert_eq!(
        next,
        first.max(RECORDS + 1),
        "{start:?}: the replay stopped short"
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((len, rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let len = usize::from(u16::from_le_bytes(*len)).min(rest.len());
    let (request, stored) = rest.split_at(len);
    let Ok(request) = pb::GetEventsRequest::decode(request) else {
        return;
    };
    let Ok((filter, start)) = check_request(&request) else {
        return;
    };
    replay(start);
    let matcher = Matcher::new(&filter);
    let scanned = Key::scan(stored, matcher.needs_pod());
    if let Ok(event) = pb::Event::decode(stored) {
        let key = scanned.expect("the server reads the key of an event that decodes");
        let offline = filter::matches(&filter, &event);
        assert_eq!(
            matcher.matches(&key),
            offline,
            "replay and offline filters differ"
        );
        assert_eq!(Key::scan(stored, true), Some(Key::of(&event)));
        if key.kind == pb::EventKind::Lost {
            assert!(offline, "a loss record was filtered out");
        }
    }
});
