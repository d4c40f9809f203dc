//! Live fan-out: one bounded queue per subscriber. Publishing never waits: a subscriber whose
//! queue is full loses the event, the loss is counted, and the subscriber receives a `lost`
//! record with the exact count before its next event. Nothing stalls the pipeline or the other
//! subscribers.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicU64, Ordering},
};

use sensor_proto::v1 as pb;
use tokio::sync::mpsc;

use crate::event::{filter, proto, time::now_unix_ns};

/// Events as they travel to subscribers (shared, never copied per subscriber).
pub type Shared = Arc<pb::Event>;

struct Subscriber {
    id: u64,
    tx: mpsc::Sender<Shared>,
    filter: pb::Filter,
    /// Matching events dropped since the last delivered loss record.
    pending_loss: u64,
}

pub struct Hub {
    node: String,
    subscribers: Mutex<Option<Vec<Subscriber>>>,
    next_id: AtomicU64,
    /// Events lost over all subscribers (queue overflow).
    lost_total: AtomicU64,
}

/// A live subscription; dropping it unsubscribes (at the next publish).
pub struct Subscription {
    pub id: u64,
    pub rx: mpsc::Receiver<Shared>,
}

impl Hub {
    pub fn new(node: &str) -> Self {
        Self {
            node: node.to_owned(),
            subscribers: Mutex::new(Some(Vec::new())),
            next_id: AtomicU64::new(1),
            lost_total: AtomicU64::new(0),
        }
    }

    /// Subscribe to live events passing `filter`, with a queue of `capacity` events. After
    /// [`Hub::close`] the subscription ends at once (its receiver yields `None`).
    pub fn subscribe(&self, filter: pb::Filter, capacity: usize) -> Subscription {
        let (tx, rx) = mpsc::channel(capacity.max(2));
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        if let Some(subs) = self.lock().as_mut() {
            subs.push(Subscriber {
                id,
                tx,
                filter,
                pending_loss: 0,
            });
        }
        Subscription { id, rx }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Vec<Subscriber>>> {
        self.subscribers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Offer `event` to every subscriber whose filter it passes. Never blocks.
    pub fn publish(&self, event: &Shared) {
        let mut guard = self.lock();
        let Some(subs) = guard.as_mut() else { return };
        subs.retain_mut(|sub| {
            if !filter::matches(&sub.filter, event) {
                return !sub.tx.is_closed();
            }
            if sub.pending_loss > 0 {
                // The loss record goes first, and only together with the event that follows
                // it, so the count is exact.
                match sub.tx.try_reserve_many(2) {
                    Ok(mut permits) => {
                        let lost = proto::lost(
                            pb::LossStage::Subscriber,
                            sub.pending_loss,
                            &self.node,
                            now_unix_ns(),
                        );
                        if let Some(p) = permits.next() {
                            p.send(Arc::new(lost));
                        }
                        if let Some(p) = permits.next() {
                            p.send(Arc::clone(event));
                        }
                        sub.pending_loss = 0;
                        true
                    }
                    Err(mpsc::error::TrySendError::Full(())) => {
                        sub.pending_loss += 1;
                        self.lost_total.fetch_add(1, Ordering::Relaxed);
                        true
                    }
                    Err(mpsc::error::TrySendError::Closed(())) => false,
                }
            } else {
                match sub.tx.try_send(Arc::clone(event)) {
                    Ok(()) => true,
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        sub.pending_loss += 1;
                        self.lost_total.fetch_add(1, Ordering::Relaxed);
                        true
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => false,
                }
            }
        });
    }

    /// End every subscription (shutdown); later subscriptions end at once.
    pub fn close(&self) {
        self.lock().take();
    }

    pub fn subscribers(&self) -> usize {
        self.lock().as_ref().map_or(0, Vec::len)
    }

    /// Subscriber lag: events queued for the slowest subscriber, and for all of them together.
    pub fn lag(&self) -> (u64, u64) {
        self.lock().as_ref().map_or((0, 0), |subs| {
            subs.iter()
                .map(|s| (s.tx.max_capacity() - s.tx.capacity()) as u64)
                .fold((0, 0), |(max, sum), q| (max.max(q), sum + q))
        })
    }

    pub fn lost_total(&self) -> u64 {
        self.lost_total.load(Ordering::Relaxed)
    }

    /// Whether subscription `id` is still registered (tests, status).
    pub fn is_subscribed(&self, id: u64) -> bool {
        self.lock()
            .as_ref()
            .is_some_and(|s| s.iter().any(|s| s.id == id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: u64) -> Shared {
        Arc::new(pb::Event {
            seq,
            verdict: pb::Verdict::Blocked as i32,
            body: Some(pb::event::Body::Connect(pb::Connect::default())),
            ..Default::default()
        })
    }

    fn drain(rx: &mut mpsc::Receiver<Shared>) -> Vec<Shared> {
        let mut v = Vec::new();
        while let Ok(e) = rx.try_recv() {
            v.push(e);
        }
        v
    }

    #[test]
    fn a_stalled_subscriber_gets_an_exact_loss_record_and_others_everything() {
        let hub = Hub::new("n");
        let mut slow = hub.subscribe(pb::Filter::default(), 4);
        let mut fast = hub.subscribe(pb::Filter::default(), 1024);
        for seq in 1..=100 {
            hub.publish(&event(seq));
            // The fast subscriber keeps up.
            assert_eq!(
                drain(&mut fast.rx)
                    .iter()
                    .map(|e| e.seq)
                    .collect::<Vec<_>>(),
                [seq]
            );
        }
        // The slow one held 4, lost 96; it reads now, and the next event brings the count.
        let first = drain(&mut slow.rx);
        assert_eq!(
            first.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [1, 2, 3, 4]
        );
        hub.publish(&event(101));
        let next = drain(&mut slow.rx);
        assert_eq!(next.len(), 2);
        match &next[0].body {
            Some(pb::event::Body::Lost(l)) => {
                assert_eq!(l.count, 96);
                assert_eq!(l.stage(), pb::LossStage::Subscriber);
            }
            other => panic!("expected a loss record, got {other:?}"),
        }
        assert_eq!(next[1].seq, 101);
        assert_eq!(hub.lost_total(), 96);
        // The slow one has read everything; the fast one has the last event queued.
        assert_eq!(hub.lag(), (1, 1));
        assert_eq!(drain(&mut fast.rx).len(), 1);
        assert_eq!(hub.lag(), (0, 0));
    }

    #[test]
    fn filters_apply_and_dropped_receivers_unsubscribe() {
        let hub = Hub::new("n");
        let chmod_only = pb::Filter {
            kinds: vec![pb::EventKind::Chmod as i32],
            ..Default::default()
        };
        let mut sub = hub.subscribe(chmod_only, 8);
        hub.publish(&event(1));
        assert!(drain(&mut sub.rx).is_empty());
        let gone = hub.subscribe(pb::Filter::default(), 8);
        let id = gone.id;
        drop(gone);
        hub.publish(&event(2));
        assert!(!hub.is_subscribed(id));
        assert!(hub.is_subscribed(sub.id));
        hub.close();
        assert_eq!(hub.subscribers(), 0);
        let mut late = hub.subscribe(pb::Filter::default(), 8);
        assert!(late.rx.try_recv().is_err());
    }
}
