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
    time::Instant,
};

use aya::maps::{MapData, RingBuf};
use prost::Message as _;
use sensor_common::Counter;
use sensor_proto::v1 as pb;

use crate::{
    attribution::Enricher,
    event::{
        self,
        proto::{self, Context},
        time::{Clock, now_unix_ns},
    },
    policy,
    server::status::{Snapshot, StatusBoard},
    sinks::{hub::Hub, journal::Journal},
};
use counters::Counters;

/// Events journaled before a flush-and-publish inside one drain (bounds latency and memory).
const FLUSH_EVERY: usize = 256;

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
    node: String,
    /// Kernel ring-buffer losses already reported in-band.
    kernel_loss_reported: u64,
    /// Journaled, not yet flushed and published.
    pending: Vec<Arc<pb::Event>>,
    /// A background fdatasync is under way.
    sync_running: Arc<AtomicBool>,
    /// Background fdatasyncs that failed.
    sync_errors: Arc<AtomicU64>,
}

impl Pipeline {
    /// The journal, the hub and the policy are the status board's.
    pub fn new(status: Arc<StatusBoard>, enricher: Enricher, proc_root: PathBuf) -> Self {
        Self {
            hub: Arc::clone(&status.hub),
            journal: Arc::clone(&status.journal),
            policy: status.policy.clone(),
            node: status.node.clone(),
            status,
            counters: Counters::default(),
            enricher,
            proc_root,
            reverts: None,
            kernel_loss_reported: 0,
            pending: Vec::new(),
            sync_running: Arc::default(),
            sync_errors: Arc::default(),
        }
    }

    fn journal(&self) -> std::sync::MutexGuard<'_, Journal> {
        self.journal
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Number and journal one event; it is published by [`Pipeline::flush`], once the journal
    /// holds it (a subscriber never sees a sequence number a crash could hand out again).
    fn emit(&mut self, mut event: pb::Event) {
        let appended = {
            let payload = event.encode_to_vec();
            self.journal().append(event.time_unix_ns, &payload)
        };
        match appended {
            Ok(seq) => event.seq = seq,
            Err(err) => {
                // Still delivered live, without a sequence number; counted and logged.
                self.counters.journal_errors += 1;
                tracing::warn!(error = %err, "journal append failed");
            }
        }
        self.counters.record(&event);
        self.pending.push(Arc::new(event));
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// Put an event made by the daemon itself (a policy change) into the stream now.
    pub fn report(&mut self, event: pb::Event) {
        self.emit(event);
        self.flush();
    }

    /// Drain every record the kernel has submitted.
    pub fn drain(&mut self, ring: &mut RingBuf<MapData>) {
        let clock = Clock::now();
        let rules = self.policy.current();
        let mut n = 0u64;
        while let Some(item) = ring.next() {
            n += 1;
            let decoded = event::decode(&item);
            drop(item);
            let mut event = match decoded {
                Ok(event) => event,
                Err(err) => {
                    self.counters.decode_errors += 1;
                    tracing::warn!(error = %err, "undecodable event record");
                    let lost = proto::lost(pb::LossStage::Decode, 1, &self.node, now_unix_ns());
                    self.emit(lost);
                    continue;
                }
            };
            chmod::step(
                &mut event,
                &rules.chmod,
                &self.proc_root,
                &mut self.enricher,
                &mut self.counters,
                self.reverts.as_deref(),
            );
            let ctx = Context {
                node: &self.node,
                clock: &clock,
                rules: &rules,
            };
            let proto = proto::to_proto(&event, &ctx);
            if let Some(ready) = self.enricher.enrich(&event, proto, Instant::now()) {
                self.emit(ready);
            }
            if self.pending.len() >= FLUSH_EVERY {
                self.flush();
            }
        }
        self.release_enriched(false);
        if n > 0 || !self.pending.is_empty() {
            self.flush();
        }
    }

    /// Emit parked events whose pod arrived or whose wait is over (`all`: every one, at
    /// shutdown).
    pub fn release_enriched(&mut self, all: bool) {
        for event in self.enricher.poll(Instant::now(), all) {
            self.emit(event);
        }
    }

    /// Make journaled events visible to readers (push them to the OS), then publish them live.
    pub fn flush(&mut self) {
        let flushed = self.journal().flush();
        if let Err(err) = flushed {
            self.counters.journal_errors += 1;
            tracing::warn!(error = %err, "journal flush failed");
        }
        for event in std::mem::take(&mut self.pending) {
            self.hub.publish(&event);
        }
    }

    /// Durability point (batched fsync), blocking: at shutdown.
    pub fn sync(&mut self) {
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
        if self.sync_running.swap(true, Ordering::AcqRel) {
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
                &self.node,
                now_unix_ns(),
            );
            self.kernel_loss_reported = full;
            self.emit(lost);
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
        });
    }
}
