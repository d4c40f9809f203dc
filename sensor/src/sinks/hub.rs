//! Live fan-out: the pipeline publishes each flushed batch of encoded events once; every
//! subscriber gets the same batch (a reference count) with the events its filter passes, in a
//! bounded queue of its own (counted in events). Publishing never waits: a subscriber whose
//! queue is full loses events, the loss is counted, and the subscriber receives a `lost`
//! record with the exact count before its next event. Nothing stalls the pipeline or the other
//! subscribers.

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
};

use bytes::Bytes;
use sensor_proto::v1 as pb;
use tokio::sync::Notify;

use crate::event::{
    encode,
    key::{Key, Matcher},
    proto,
    time::now_unix_ns,
};

/// Events per published batch at most (a subscriber's selection is a 256-bit set).
pub const BATCH_MAX: usize = 256;

/// One numbered, encoded event as every subscriber receives it.
#[derive(Clone, Debug)]
pub struct Published {
    /// 0: none (the journal append failed).
    pub seq: u64,
    /// The `sensor.v1.Event` without `seq` (as the journal stores it).
    pub payload: Bytes,
    pub key: Key,
}

/// Events published together, shared by every subscriber.
#[derive(Debug, Default)]
pub struct Batch {
    pub events: Vec<Published>,
}

/// The events of a batch one subscriber takes (bit `i`: `events[i]`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Selection([u64; BATCH_MAX / 64]);

impl Selection {
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }

    pub fn len(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|w| *w == 0)
    }

    /// Keep the first `n` selected events only.
    fn truncate(&mut self, n: usize) {
        let mut left = n;
        for w in &mut self.0 {
            let ones = w.count_ones() as usize;
            if left >= ones {
                left -= ones;
                continue;
            }
            let mut kept = 0u64;
            let mut rest = *w;
            for _ in 0..left {
                let low = rest & rest.wrapping_neg();
                kept |= low;
                rest &= !low;
            }
            *w = kept;
            left = 0;
        }
    }

    /// The selected indices, in order.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.0.iter().enumerate().flat_map(|(wi, &w)| {
            let mut rest = w;
            std::iter::from_fn(move || {
                (rest != 0).then(|| {
                    let bit = rest.trailing_zeros() as usize;
                    rest &= rest - 1;
                    wi * 64 + bit
                })
            })
        })
    }
}

/// What a subscriber's queue holds.
#[derive(Debug)]
pub enum Item {
    Events(Arc<Batch>, Selection),
    /// `count` matching events were lost before the events that follow.
    Lost {
        count: u64,
        time_unix_ns: i64,
    },
}

impl Item {
    /// The `lost` record (stage `subscriber`), encoded without `seq`.
    pub fn lost_payload(count: u64, time_unix_ns: i64, origin: &proto::Origin) -> Bytes {
        let lost = proto::lost(pb::LossStage::Subscriber, count, origin, time_unix_ns);
        encode::encode_pb(&lost).payload
    }
}

#[derive(Default)]
struct QueueState {
    items: VecDeque<Item>,
    /// Events (and loss records) queued.
    queued: usize,
    closed: bool,
}

#[derive(Default)]
struct Queue {
    state: Mutex<QueueState>,
    ready: Notify,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
    }
}

struct Subscriber {
    id: u64,
    queue: Arc<Queue>,
    matcher: Matcher,
    capacity: usize,
    /// Matching events dropped since the last delivered loss record.
    pending_loss: u64,
}

pub struct Hub {
    origin: proto::Origin,
    subscribers: Mutex<Option<Vec<Subscriber>>>,
    next_id: AtomicU64,
    /// Events lost over all subscribers (queue overflow).
    lost_total: AtomicU64,
    /// Event streams open now (live and replay), and those refused over the limit.
    streams: Arc<AtomicUsize>,
    refused_streams: AtomicU64,
}

/// One open event stream (a `GetEvents` call) counted against the limit; dropping it frees
/// its place.
pub struct StreamSlot(Arc<AtomicUsize>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A live subscription; dropping it unsubscribes (at the next publish).
pub struct Subscription {
    pub id: u64,
    queue: Arc<Queue>,
}

impl Subscription {
    /// Wait for what was queued and take all of it (appended to `out`); `false` once the
    /// subscription has ended ([`Hub::close`]) and nothing is left.
    pub async fn recv(&self, out: &mut VecDeque<Item>) -> bool {
        loop {
            {
                let mut state = self.queue.lock();
                if !state.items.is_empty() {
                    out.append(&mut state.items);
                    state.queued = 0;
                    return true;
                }
                if state.closed {
                    return false;
                }
            }
            // A notification sent between the check and here is kept (a permit).
            self.queue.ready.notified().await;
        }
    }

    /// As [`Subscription::recv`], without waiting (tests).
    pub fn try_recv(&self, out: &mut VecDeque<Item>) -> usize {
        let mut state = self.queue.lock();
        let n = state.items.len();
        out.append(&mut state.items);
        state.queued = 0;
        n
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.queue.close();
    }
}

impl Hub {
    pub fn new(origin: proto::Origin) -> Self {
        Self {
            origin,
            subscribers: Mutex::new(Some(Vec::new())),
            next_id: AtomicU64::new(1),
            lost_total: AtomicU64::new(0),
            streams: Arc::new(AtomicUsize::new(0)),
            refused_streams: AtomicU64::new(0),
        }
    }

    /// A place for one more event stream, or `None` (counted) when `max` are open.
    pub fn open_stream(&self, max: usize) -> Option<StreamSlot> {
        let taken = self
            .streams
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            });
        match taken {
            Ok(_) => Some(StreamSlot(Arc::clone(&self.streams))),
            Err(_) => {
                self.refused_streams.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Event streams open now (live and replay).
    pub fn streams(&self) -> usize {
        self.streams.load(Ordering::Acquire)
    }

    /// Event streams refused because the limit was reached.
    pub fn refused_streams(&self) -> u64 {
        self.refused_streams.load(Ordering::Relaxed)
    }

    pub fn origin(&self) -> &proto::Origin {
        &self.origin
    }

    /// Subscribe to live events passing `filter`, with a queue of `capacity` events. After
    /// [`Hub::close`] the subscription ends at once.
    pub fn subscribe(&self, filter: &pb::Filter, capacity: usize) -> Subscription {
        let queue = Arc::new(Queue::default());
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        match self.lock().as_mut() {
            Some(subs) => subs.push(Subscriber {
                id,
                queue: Arc::clone(&queue),
                matcher: Matcher::new(filter),
                capacity: capacity.max(2),
                pending_loss: 0,
            }),
            None => queue.close(),
        }
        Subscription { id, queue }
    }

    fn lock(&self) -> MutexGuard<'_, Option<Vec<Subscriber>>> {
        self.subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Offer `batch` (at most [`BATCH_MAX`] events) to every subscriber: each takes the events
    /// its filter passes, as many as its queue has room for. Never blocks.
    pub fn publish(&self, batch: &Arc<Batch>) {
        debug_assert!(batch.events.len() <= BATCH_MAX);
        let mut guard = self.lock();
        let Some(subs) = guard.as_mut() else { return };
        subs.retain_mut(|sub| {
            let mut selection = Selection::default();
            for (i, e) in batch.events.iter().enumerate().take(BATCH_MAX) {
                if sub.matcher.matches(&e.key) {
                    selection.set(i);
                }
            }
            let wanted = selection.len();
            let mut state = sub.queue.lock();
            if state.closed {
                return false;
            }
            if wanted == 0 {
                return true;
            }
            let mut room = sub.capacity.saturating_sub(state.queued);
            if sub.pending_loss > 0 {
                // The loss record goes first, and only together with an event that follows
                // it, so the count is exact.
                if room < 2 {
                    sub.pending_loss += wanted as u64;
                    self.lost_total.fetch_add(wanted as u64, Ordering::Relaxed);
                    return true;
                }
                state.items.push_back(Item::Lost {
                    count: sub.pending_loss,
                    time_unix_ns: now_unix_ns(),
                });
                state.queued += 1;
                room -= 1;
                sub.pending_loss = 0;
            }
            let taken = wanted.min(room);
            if taken < wanted {
                selection.truncate(taken);
                let lost = (wanted - taken) as u64;
                sub.pending_loss += lost;
                self.lost_total.fetch_add(lost, Ordering::Relaxed);
            }
            if taken > 0 {
                state
                    .items
                    .push_back(Item::Events(Arc::clone(batch), selection));
                state.queued += taken;
                drop(state);
                sub.queue.ready.notify_one();
            }
            true
        });
    }

    /// End every subscription (shutdown); later subscriptions end at once.
    pub fn close(&self) {
        if let Some(subs) = self.lock().take() {
            for sub in subs {
                sub.queue.close();
            }
        }
    }

    pub fn subscribers(&self) -> usize {
        self.lock().as_ref().map_or(0, Vec::len)
    }

    /// Subscriber lag: events queued for the slowest subscriber, and for all of them together.
    pub fn lag(&self) -> (u64, u64) {
        self.lock().as_ref().map_or((0, 0), |subs| {
            subs.iter()
                .map(|s| s.queue.lock().queued as u64)
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
#[path = "hub_tests.rs"]
mod tests;
