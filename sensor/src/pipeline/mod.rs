//! The event path in the daemon: ring buffer -> checked decode -> per-kind step (the chmod
//! step: [`chmod`]) -> attribution -> sequence number and journal -> live fan-out. Every place
//! that can lose an event counts it and puts a `lost` record into the stream. Exporters (and
//! `--stdout-events`) follow the journal on their own threads: nothing here waits for them.

pub mod chmod;
pub mod counters;
pub mod revert;
pub mod reverter;

use std::{
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use aya::maps::{MapData, RingBuf};
use sensor_common::Counter;
use sensor_proto::v1 as pb;

use crate::{
    attribution::Enricher,
    event::{
        self, DecodeError,
        encode::{self, Draft, Encoded},
        proto,
        time::{Clock, now_unix_ns},
    },
    policy,
    server::status::{Snapshot, StatusBoard},
    sinks::{
        hub::{BATCH_MAX, Batch, Hub, Published},
        journal::{Journal, JournalError},
    },
};
use counters::Counters;

/// Events journaled before a flush-and-publish inside one drain (bounds latency and memory).
const FLUSH_EVERY: usize = BATCH_MAX;
/// Ring-buffer records one drain reads at most (the caller drains again at once when a drain
/// stopped here).
pub const DRAIN_MAX: u64 = 64 * FLUSH_EVERY as u64;
/// While journal writes fail: how often writing is tried again (reopen, then the loss record).
pub const JOURNAL_RETRY: Duration = Duration::from_secs(1);
/// While journal writes fail: how often the log says so again.
pub const JOURNAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// Journal writes failing: events go to live subscribers without a sequence number, counted,
/// until a retry (every [`JOURNAL_RETRY`]) writes the `lost` record that says how many.
#[derive(Debug)]
struct Outage {
    since: Instant,
    /// The error of the latest failed write or retry.
    error: String,
    /// Events published without a sequence number since the outage began.
    not_journaled: u64,
    next_retry: Instant,
    next_log: Instant,
}

pub struct Pipeline {
    hub: Arc<Hub>,
    journal: Arc<Mutex<Journal>>,
    status: Arc<StatusBoard>,
    /// The rules in force (names in events; chmod rules with paths).
    policy: policy::Shared,
    pub counters: Counters,
    pub enricher: Enricher,
    /// The host's /proc (`--proc-root`), where chmod file names are resolved.
    proc_root: PathBuf,
    /// The revert thread's outcomes (none: no revert thread, reverts done here).
    pub reverts: Option<Arc<reverter::Outcomes>>,
    origin: proto::Origin,
    /// Kernel ring-buffer losses already reported in-band.
    kernel_loss_reported: u64,
    /// Encoded, not yet journaled and published.
    pending: Vec<Encoded>,
    /// A background fdatasync is under way.
    sync_running: Arc<AtomicBool>,
    /// Background fdatasyncs that failed.
    sync_errors: Arc<AtomicU64>,
    /// Journal writes are failing.
    outage: Option<Outage>,
}

impl Pipeline {
    /// The journal, the hub and the policy are the status board's.
    pub fn new(status: Arc<StatusBoard>, enricher: Enricher, proc_root: PathBuf) -> Self {
        Self {
            hub: Arc::clone(&status.hub),
            journal: Arc::clone(&status.journal),
            policy: status.policy.clone(),
            origin: status.hub.origin().clone(),
            status,
            counters: Counters::default(),
            enricher,
            proc_root,
            reverts: None,
            kernel_loss_reported: 0,
            pending: Vec::new(),
            sync_running: Arc::default(),
            sync_errors: Arc::default(),
            outage: None,
        }
    }

    fn journal(&self) -> std::sync::MutexGuard<'_, Journal> {
        self.journal
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queue one encoded event; [`Pipeline::flush`] numbers and journals it, then publishes
    /// it (a subscriber never sees a sequence number a crash could hand out again).
    fn emit(&mut self, encoded: Encoded) {
        self.counters.record_key(encoded.key.kind, encoded.second);
        self.pending.push(encoded);
        if self.pending.len() >= FLUSH_EVERY {
            self.flush();
        }
    }

    fn emit_pb(&mut self, event: &pb::Event) {
        self.emit(encode::encode_pb(event));
    }

    fn emit_draft(&mut self, draft: Draft) {
        let encoded = draft.encode(&self.origin);
        self.emit(encoded);
    }

    /// Put an event made by the daemon itself (a policy change) into the stream now.
    pub fn report(&mut self, event: pb::Event) {
        self.emit_pb(&event);
        self.flush();
    }

    /// Drain what the kernel has submitted (at most [`DRAIN_MAX`] records); returns how many
    /// records were read.
    pub fn drain(&mut self, ring: &mut RingBuf<MapData>) -> u64 {
        self.drain_records(|| ring.next().map(|item| event::decode(&item)))
    }

    /// Drain decoded records from `next` (the ring buffer, or recorded records in tests):
    /// each is completed, attributed and encoded; every [`FLUSH_EVERY`] events and at the
    /// end, the batch is journaled (one write), then published (once, to every subscriber).
    pub fn drain_records(
        &mut self,
        mut next: impl FnMut() -> Option<Result<event::Event, DecodeError>>,
    ) -> u64 {
        let clock = Clock::now();
        let rules = self.policy.current();
        let now = Instant::now();
        let mut n = 0u64;
        while n < DRAIN_MAX {
            let Some(decoded) = next() else { break };
            n += 1;
            let mut event = match decoded {
                Ok(event) => event,
                Err(err) => {
                    self.counters.decode_errors += 1;
                    tracing::warn!(error = %err, "undecodable event record");
                    let lost = proto::lost(pb::LossStage::Decode, 1, &self.origin, now_unix_ns());
                    self.emit_pb(&lost);
                    continue;
                }
            };
            chmod::step(
                &mut event,
                &rules.tables.chmod,
                &self.proc_root,
                &mut self.enricher,
                &mut self.counters,
                self.reverts.as_deref(),
            );
            let draft = Draft {
                time_unix_ns: clock.wall_unix_ns(event.ktime_ns),
                event,
                rules: Arc::clone(&rules),
                process: None,
                ancestors: Vec::new(),
                cgroup: None,
                pod: None,
                enrichment: pb::Enrichment::Complete,
            };
            if let Some(ready) = self.enricher.enrich(draft, now) {
                self.emit_draft(ready);
            }
        }
        self.release_enriched(false);
        if !self.pending.is_empty() {
            self.flush();
        }
        n
    }

    /// Emit parked events whose pod arrived or whose wait is over (`all`: every one, at
    /// shutdown).
    pub fn release_enriched(&mut self, all: bool) {
        for draft in self.enricher.poll(Instant::now(), all) {
            self.emit_draft(draft);
        }
    }

    /// Number and journal the pending events (one buffered append each, one write for the
    /// batch), make them visible to readers, then publish them live as one batch. While journal
    /// writes fail, they are published without a sequence number (counted; see [`Outage`]).
    pub fn flush(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        if pending.is_empty() {
            return;
        }
        let now = Instant::now();
        self.retry_journal(now);
        let seqs = self.journal_batch(&pending, now);
        let events: Vec<Published> = pending
            .into_iter()
            .zip(seqs)
            .map(|(e, seq)| Published {
                seq,
                payload: e.payload,
                key: e.key,
            })
            .collect();
        self.hub.publish(&Arc::new(Batch { events }));
    }

    /// Journal `pending` as one write; their sequence numbers (0: not journaled).
    fn journal_batch(&mut self, pending: &[Encoded], now: Instant) -> Vec<u64> {
        let mut seqs = vec![0; pending.len()];
        if self.outage.is_none() {
            let mut oversized = 0;
            let failed = {
                let mut journal = self.journal();
                let mut failed = None;
                for (e, seq) in pending.iter().zip(&mut seqs) {
                    match journal.append(e.time_unix_ns, &e.payload) {
                        Ok(n) => *seq = n,
                        Err(err @ JournalError::RecordTooLarge { .. }) => {
                            // This event only: delivered live without a sequence number.
                            oversized += 1;
                            tracing::warn!(error = %err, "journal append failed");
                        }
                        Err(err) => {
                            failed = Some(err);
                            break;
                        }
                    }
                }
                if failed.is_none()
                    && let Err(err) = journal.flush()
                {
                    failed = Some(err);
                }
                // What was written stays (and keeps its number); the rest is handed back.
                failed.map(|err| (err, journal.abandon()))
            };
            self.counters.journal_errors += oversized;
            let Some((err, written_end)) = failed else {
                self.counters.journal_unjournaled += oversized;
                return seqs;
            };
            for seq in seqs.iter_mut().filter(|s| **s >= written_end) {
                *seq = 0;
            }
            // Counted below with the rest of the batch (oversized ones included).
            self.begin_outage(&err, now);
        }
        let missed = seqs.iter().filter(|s| **s == 0).count() as u64;
        self.counters.journal_unjournaled += missed;
        if let Some(outage) = &mut self.outage {
            outage.not_journaled += missed;
        }
        self.log_outage(now);
        seqs
    }

    fn begin_outage(&mut self, err: &JournalError, now: Instant) {
        self.counters.journal_errors += 1;
        self.counters.journal_outages += 1;
        tracing::warn!(error = %err,
            "journal: writes failing; events go to live subscribers without a sequence number \
             and are counted until a write works again (retried every {JOURNAL_RETRY:?})");
        self.outage = Some(Outage {
            since: now,
            error: err.to_string(),
            not_journaled: 0,
            next_retry: now + JOURNAL_RETRY,
            next_log: now + JOURNAL_LOG_EVERY,
        });
    }

    /// While writes fail: one summary line per [`JOURNAL_LOG_EVERY`].
    fn log_outage(&mut self, now: Instant) {
        let Some(outage) = &mut self.outage else {
            return;
        };
        if now < outage.next_log {
            return;
        }
        outage.next_log = now + JOURNAL_LOG_EVERY;
        tracing::warn!(error = %outage.error, not_journaled = outage.not_journaled,
            failing_for = ?now.duration_since(outage.since), "journal: writes still failing");
    }

    /// While writes fail, at most once per [`JOURNAL_RETRY`]: reopen the journal (recreating
    /// its directory, a fresh or cut-back segment) and write the `lost` record (stage
    /// `journal_write`) with the exact number of events not journaled; once that works, the
    /// outage is over and the record is published like any event. Also called on the slow
    /// tick, so journaling resumes without waiting for an event.
    pub fn retry_journal(&mut self, now: Instant) {
        let count = match &mut self.outage {
            Some(outage) if now >= outage.next_retry => {
                outage.next_retry = now + JOURNAL_RETRY;
                outage.not_journaled
            }
            _ => return,
        };
        let loss = encode::encode_pb(&proto::lost(
            pb::LossStage::JournalWrite,
            count,
            &self.origin,
            now_unix_ns(),
        ));
        let written = {
            let mut journal = self.journal();
            let written = journal.reopen().and_then(|()| {
                let seq = journal.append(loss.time_unix_ns, &loss.payload)?;
                journal.flush()?;
                Ok(seq)
            });
            if written.is_err() {
                journal.abandon();
            }
            written
        };
        match written {
            Ok(seq) => {
                if let Some(outage) = self.outage.take() {
                    tracing::warn!(not_journaled = outage.not_journaled,
                        failed_for = ?now.duration_since(outage.since),
                        "journal: writes work again; resumed after {} events not journaled",
                        outage.not_journaled);
                }
                self.counters.record_key(loss.key.kind, loss.second);
                self.hub.publish(&Arc::new(Batch {
                    events: vec![Published {
                        seq,
                        payload: loss.payload,
                        key: loss.key,
                    }],
                }));
            }
            Err(err) => {
                self.counters.journal_errors += 1;
                if let Some(outage) = &mut self.outage {
                    outage.error = err.to_string();
                }
                self.log_outage(now);
            }
        }
    }

    /// Durability point (batched fsync), blocking: at shutdown.
    pub fn sync(&mut self) {
        if self.outage.is_some() {
            return;
        }
        let synced = self.journal().sync();
        if let Err(err) = synced {
            self.counters.journal_errors += 1;
            tracing::warn!(error = %err, "journal sync failed");
        }
    }

    /// Durability point on the timer: the fdatasync runs on a blocking thread, so the event
    /// loop (and the kernel ring buffer behind it) never waits on the disk. At most one runs at
    /// a time.
    pub fn sync_in_background(&mut self) {
        self.retry_journal(Instant::now());
        if self.outage.is_some() || self.sync_running.swap(true, Ordering::AcqRel) {
            return;
        }
        let prepared = self.journal().prepare_sync();
        match prepared {
            Ok(files) => {
                let (running, errors) = (
                    Arc::clone(&self.sync_running),
                    Arc::clone(&self.sync_errors),
                );
                tokio::task::spawn_blocking(move || {
                    for file in files {
                        if let Err(err) = file.sync_data() {
                            errors.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(error = %err, "journal sync failed");
                        }
                    }
                    running.store(false, Ordering::Release);
                });
            }
            Err(err) => {
                self.sync_running.store(false, Ordering::Release);
                self.counters.journal_errors += 1;
                tracing::warn!(error = %err, "journal sync failed");
            }
        }
    }

    /// Put kernel-side losses (ring buffer full) into the stream, and publish the figures to the
    /// status board.
    pub fn kernel_counters(&mut self, kernel: &[(Counter, u64)]) {
        let full: u64 = kernel
            .iter()
            .filter(|(c, _)| {
                matches!(
                    c,
                    Counter::RingbufFullConnect
                        | Counter::RingbufFullChmod
                        | Counter::RingbufFullPriv
                        | Counter::RingbufFullProcess
                )
            })
            .map(|(_, v)| v)
            .sum();
        if full > self.kernel_loss_reported {
            let lost = proto::lost(
                pb::LossStage::Kernel,
                full - self.kernel_loss_reported,
                &self.origin,
                now_unix_ns(),
            );
            self.kernel_loss_reported = full;
            self.emit_pb(&lost);
            self.flush();
        }
        self.publish_status(kernel);
    }

    /// Publish the figures the pipeline owns, and the kernel's, to the status board.
    pub fn publish_status(&self, kernel: &[(Counter, u64)]) {
        self.status.publish(Snapshot {
            kernel: kernel.to_vec(),
            pipeline: self.counters.clone(),
            enrichment: self.enricher.stats(),
            procs: self.enricher.procs().stats(),
            journal_sync_errors: self.sync_errors.load(Ordering::Relaxed),
            journal_error: self.outage.as_ref().map(|o| o.error.clone()),
        });
    }
}

#[cfg(test)]
mod tests;
