use super::*;

fn published(seq: u64, kind: pb::EventKind) -> Published {
    Published {
        seq,
        payload: Bytes::from(seq.to_le_bytes().to_vec()),
        key: Key {
            kind,
            verdict: pb::Verdict::Blocked as i32,
            pod: None,
        },
    }
}

fn batch(seqs: impl IntoIterator<Item = u64>) -> Arc<Batch> {
    Arc::new(Batch {
        events: seqs
            .into_iter()
            .map(|s| {
                let kind = if s.is_multiple_of(2) {
                    pb::EventKind::Connect
                } else {
                    pb::EventKind::Chmod
                };
                published(s, kind)
            })
            .collect(),
    })
}

/// What a subscriber received: event seqs, and loss records as `-count`.
fn drain(sub: &Subscription) -> Vec<i64> {
    let mut items = VecDeque::new();
    sub.try_recv(&mut items);
    let mut out = Vec::new();
    for item in items {
        match item {
            Item::Events(b, sel) => out.extend(sel.iter().map(|i| b.events[i].seq as i64)),
            Item::Lost { count, .. } => out.push(-(count as i64)),
        }
    }
    out
}

#[test]
fn a_stalled_subscriber_gets_an_exact_loss_record_and_others_everything() {
    let hub = Hub::new(crate::event::proto::Origin::node("n"));
    let slow = hub.subscribe(&pb::Filter::default(), 4);
    let fast = hub.subscribe(&pb::Filter::default(), 1024);
    for seq in 1..=100 {
        hub.publish(&batch([seq]));
        // The fast subscriber keeps up.
        assert_eq!(drain(&fast), [seq as i64]);
    }
    // The slow one held 4, lost 96; it reads now, and the next event brings the count.
    assert_eq!(drain(&slow), [1, 2, 3, 4]);
    hub.publish(&batch([101]));
    assert_eq!(drain(&slow), [-96, 101]);
    assert_eq!(hub.lost_total(), 96);
    // The slow one has read everything; the fast one has the last event queued.
    assert_eq!(hub.lag(), (1, 1));
    assert_eq!(drain(&fast), [101]);
    assert_eq!(hub.lag(), (0, 0));
}

#[test]
fn a_batch_is_cut_where_the_queue_is_full_and_the_loss_comes_before_the_next_event() {
    let hub = Hub::new(crate::event::proto::Origin::node("n"));
    let sub = hub.subscribe(&pb::Filter::default(), 10);
    hub.publish(&batch(1..=25));
    assert_eq!(hub.lag(), (10, 10));
    assert_eq!(drain(&sub), (1..=10).collect::<Vec<i64>>());
    // 15 lost; room for 10: the loss record and 9 events, 1 more lost.
    hub.publish(&batch(26..=35));
    assert_eq!(
        drain(&sub),
        [-15].into_iter().chain(26..=34).collect::<Vec<i64>>()
    );
    hub.publish(&batch([36]));
    assert_eq!(drain(&sub), [-1, 36]);
    assert_eq!(hub.lost_total(), 16);
}

#[test]
fn every_subscriber_takes_what_its_filter_passes_from_one_shared_batch() {
    let hub = Hub::new(crate::event::proto::Origin::node("n"));
    let filter = |kinds: &[pb::EventKind]| pb::Filter {
        kinds: kinds.iter().map(|k| *k as i32).collect(),
        ..Default::default()
    };
    let all = hub.subscribe(&pb::Filter::default(), 1024);
    let connects = hub.subscribe(&filter(&[pb::EventKind::Connect]), 1024);
    let chmods = hub.subscribe(&filter(&[pb::EventKind::Chmod]), 1024);
    let none = hub.subscribe(&filter(&[pb::EventKind::Exec]), 1024);
    let mut b = (1..=255)
        .map(|s| {
            published(
                s,
                if s.is_multiple_of(2) {
                    pb::EventKind::Connect
                } else {
                    pb::EventKind::Chmod
                },
            )
        })
        .collect::<Vec<_>>();
    b.push(published(0, pb::EventKind::Lost));
    let b = Arc::new(Batch { events: b });
    hub.publish(&b);
    assert_eq!(drain(&all).len(), 256);
    let c = drain(&connects);
    assert_eq!(c.len(), 128, "127 connects and the loss record");
    assert!(c[..127].iter().all(|s| s % 2 == 0) && c[127] == 0);
    assert_eq!(drain(&chmods).len(), 129);
    assert_eq!(drain(&none), [0], "loss records always pass");
    // One batch, shared: the subscribers' references and the publisher's.
    assert_eq!(Arc::strong_count(&b), 1);
}

#[test]
fn selections_truncate_and_iterate_in_order() {
    let mut s = Selection::default();
    for i in [0, 3, 63, 64, 130, 255] {
        s.set(i);
    }
    assert_eq!(s.iter().collect::<Vec<_>>(), [0, 3, 63, 64, 130, 255]);
    assert_eq!(s.len(), 6);
    s.truncate(4);
    assert_eq!(s.iter().collect::<Vec<_>>(), [0, 3, 63, 64]);
    s.truncate(0);
    assert!(s.is_empty());
}

#[test]
fn filters_apply_and_dropped_receivers_unsubscribe() {
    let hub = Hub::new(crate::event::proto::Origin::node("n"));
    let chmod_only = pb::Filter {
        kinds: vec![pb::EventKind::Chmod as i32],
        ..Default::default()
    };
    let sub = hub.subscribe(&chmod_only, 8);
    hub.publish(&batch([2]));
    assert!(drain(&sub).is_empty());
    let gone = hub.subscribe(&pb::Filter::default(), 8);
    let id = gone.id;
    drop(gone);
    hub.publish(&batch([4]));
    assert!(!hub.is_subscribed(id));
    assert!(hub.is_subscribed(sub.id));
    hub.close();
    assert_eq!(hub.subscribers(), 0);
    let late = hub.subscribe(&pb::Filter::default(), 8);
    let mut items = VecDeque::new();
    let ended = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(late.recv(&mut items));
    assert!(!ended, "a subscription after close ends at once");
}

#[test]
fn streams_beyond_the_limit_are_refused_and_counted_until_one_closes() {
    let hub = Hub::new(proto::Origin::new("n", ""));
    let a = hub.open_stream(2).expect("first");
    let b = hub.open_stream(2).expect("second");
    assert_eq!(hub.streams(), 2);
    assert!(hub.open_stream(2).is_none());
    assert!(hub.open_stream(2).is_none());
    assert_eq!(hub.refused_streams(), 2);
    drop(a);
    assert_eq!(hub.streams(), 1);
    let c = hub.open_stream(2).expect("a freed place");
    drop((b, c));
    assert_eq!(hub.streams(), 0);
    assert_eq!(hub.refused_streams(), 2);
}
