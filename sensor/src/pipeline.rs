//! The event path in the daemon: ring buffer -> checked decode -> attribution -> sequence
//! number and journal -> live fan-out (and JSON on stdout when asked). Every place that can
//! lose an event counts it and puts a `lost` record into the stream.

use std::{
    io::{self, BufWriter, Write as _},
    path::Path,
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
    api::StatusBoard,
    convert::{self, Context},
    counters::Counters,
    enrich::Enricher,
    event::{self, Body},
    hub::Hub,
    journal::Journal,
    output::{Clock, now_unix_ns, to_json},
    pods::WatcherStats,
};

/// Events journaled before a flush-and-publish inside one drain (bounds latency and memory).
const FLUSH_EVERY: usize = 256;

pub struct Pipeline {
    pub hub: Arc<Hub>,
    pub journal: Arc<Mutex<Journal>>,
    pub status: Arc<StatusBoard>,
    pub counters: Counters,
    pub enricher: Enricher,
    /// Destination entry names, by kernel rule index (replaced on policy reload).
    pub rules: Vec<String>,
    /// The active policy's name (replaced on reload).
    pub policy: String,
    node: String,
    stdout: Option<BufWriter<io::Stdout>>,
    /// Kernel ring-buffer losses already reported in-band.
    kernel_loss_reported: u64,
    /// Journaled, not yet flushed and published.
    pending: Vec<Arc<pb::Event>>,
    /// The pod watcher's counters (Kubernetes mode).
    pub watcher: Option<Arc<WatcherStats>>,
    /// The exporters' counters (`--export`).
    pub exports: Option<crate::export::ExportCounters>,
    /// A background fdatasync is under way.
    sync_running: Arc<AtomicBool>,
    /// Background fdatasyncs that failed.
    sync_errors: Arc<AtomicU64>,
}

impl Pipeline {
    pub fn new(
        hub: Arc<Hub>,
        journal: Arc<Mutex<Journal>>,
        status: Arc<StatusBoard>,
        rules: Vec<String>,
        enricher: Enricher,
        stdout_events: bool,
    ) -> Self {
        let node = status.node.clone();
        Self {
            hub,
            journal,
            status,
            counters: Counters::default(),
            enricher,
            rules,
            policy: String::new(),
            node,
            stdout: stdout_events.then(|| BufWriter::with_capacity(1 << 16, io::stdout())),
            kernel_loss_reported: 0,
            pending: Vec::new(),
            watcher: None,
            exports: None,
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
                    let lost = convert::lost(pb::LossStage::Decode, 1, &self.node, now_unix_ns());
                    self.emit(lost);
                    continue;
                }
            };
            if let Body::Chmod(chmod) = &mut event.body {
                chmod.name = event::resolve_name(Path::new("/proc"), event.pid, chmod);
                if chmod.name.is_none() {
                    self.counters.name_unresolved += 1;
                }
            }
            let ctx = Context {
                node: &self.node,
                policy: &self.policy,
                clock: &clock,
                rules: &self.rules,
            };
            let proto = convert::to_proto(&event, &ctx);
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

    /// Make journaled events visible to readers (push them to the OS), then publish them live
    /// and print them.
    pub fn flush(&mut self) {
        let flushed = self.journal().flush();
        if let Err(err) = flushed {
            self.counters.journal_errors += 1;
            tracing::warn!(error = %err, "journal flush failed");
        }
        for event in std::mem::take(&mut self.pending) {
            if let Some(out) = &mut self.stdout
                && writeln!(out, "{}", to_json(&event)).is_err()
            {
                self.counters.stdout_errors += 1;
            }
            self.hub.publish(&event);
        }
        if let Some(out) = &mut self.stdout
            && out.flush().is_err()
        {
            self.counters.stdout_errors += 1;
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
            Ok(file) => {
                let (running, errors) = (
                    Arc::clone(&self.sync_running),
                    Arc::clone(&self.sync_errors),
                );
                tokio::task::spawn_blocking(move || {
                    if let Err(err) = file.sync_data() {
                        errors.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(error = %err, "journal sync failed");
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

    /// Put kernel-side losses (ring buffer full) into the stream, and refresh the status board.
    pub fn kernel_counters(&mut self, kernel: &[(Counter, u64)]) {
        let full: u64 = kernel
            .iter()
            .filter(|(c, _)| matches!(c, Counter::RingbufFullConnect | Counter::RingbufFullChmod))
            .map(|(_, v)| v)
            .sum();
        if full > self.kernel_loss_reported {
            let lost = convert::lost(
                pb::LossStage::Kernel,
                full - self.kernel_loss_reported,
                &self.node,
                now_unix_ns(),
            );
            self.kernel_loss_reported = full;
            self.emit(lost);
            self.flush();
        }
        let mut board = self
            .status
            .counters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        board.clear();
        for (c, v) in kernel {
            board.insert(format!("kernel_{}", c.as_str()), *v);
        }
        for (k, v) in self
            .counters
            .flat()
            .into_iter()
            .chain(self.enrichment_counters())
        {
            board.insert(k, v);
        }
    }

    /// Attribution counters: enrichment, the process cache, the pod watcher.
    pub fn enrichment_counters(&self) -> Vec<(String, u64)> {
        let e = self.enricher.stats();
        let p = self.enricher.procs().stats();
        let watcher = self.watcher.as_ref().map(|w| w.flat()).unwrap_or_default();
        let mut counters = vec![
            (
                "journal_sync_errors".into(),
                self.sync_errors.load(Ordering::Relaxed),
            ),
            ("enrichment_pending".into(), e.pending),
            ("enrichment_completed_late".into(), e.completed_late),
            ("enrichment_partial".into(), e.partial),
            ("enrichment_queue_full".into(), e.queue_full),
            ("process_cache_entries".into(), p.entries as u64),
            ("process_cache_filled".into(), p.filled),
            ("process_cache_unknown".into(), p.unknown),
            ("process_cache_full".into(), p.full),
        ];
        counters.extend(watcher);
        counters.extend(self.exports.as_ref().map(|e| e.flat()).unwrap_or_default());
        counters
    }
}
