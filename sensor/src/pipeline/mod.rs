//! The event path in the daemon: ring buffer -> checked decode -> attribution -> sequence
//! number and journal -> live fan-out (and JSON on stdout when asked). Every place that can
//! lose an event counts it and puts a `lost` record into the stream.

pub mod counters;
pub mod revert;

use std::{
    io::{self, BufWriter, Write as _},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Instant,
};

use aya::maps::{MapData, RingBuf};
use prost::Message as _;
use sensor_common::{Counter, Verdict};
use sensor_policy::{Action as PolicyAction, ChmodEntry};
use sensor_proto::v1 as pb;

use crate::{
    attribution::Enricher,
    attribution::pods::WatcherStats,
    event::json::{Clock, now_unix_ns, to_json},
    event::proto::{self, Context},
    event::{self, Body, PathArg},
    pipeline::counters::Counters,
    pipeline::revert::Revert,
    server::api::StatusBoard,
    sinks::hub::Hub,
    sinks::journal::Journal,
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
    /// chmod rules, by kernel rule index (replaced on policy reload).
    pub chmod: ChmodTable,
    /// Privilege rule names, by kernel rule index (replaced on policy reload).
    pub privilege_rules: Vec<String>,
    /// The active policy's name (replaced on reload).
    pub policy: String,
    /// The host's /proc (`--proc-root`), where chmod file names are resolved.
    pub proc_root: std::path::PathBuf,
    node: String,
    stdout: Option<BufWriter<io::Stdout>>,
    /// Kernel ring-buffer losses already reported in-band.
    kernel_loss_reported: u64,
    /// Journaled, not yet flushed and published.
    pending: Vec<Arc<pb::Event>>,
    /// The pod watcher's counters (Kubernetes mode).
    pub watcher: Option<Arc<WatcherStats>>,
    /// The exporters' counters (`--export`).
    pub exports: Option<crate::sinks::export::ExportCounters>,
    /// A background fdatasync is under way.
    sync_running: Arc<AtomicBool>,
    /// Background fdatasyncs that failed.
    sync_errors: Arc<AtomicU64>,
}

/// The active chmod rules as userspace needs them: names by kernel rule index, and the rules
/// with `paths` (matched here, for the report only).
#[derive(Clone, Debug, Default)]
pub struct ChmodTable {
    pub names: Vec<String>,
    pub rules: Vec<ChmodEntry>,
}

impl ChmodTable {
    /// The index of the rule with `paths` that names this call: the first enforcing match in
    /// file order, else the first audit match (docs/policy.md, "When several rules match").
    fn path_rule(&self, chmod: &event::Chmod) -> Option<u32> {
        let name = match (&chmod.path, &chmod.name) {
            (_, Some(name)) => name.to_str()?,
            (PathArg::Complete(p), None) if p.starts_with('/') => p.as_str(),
            _ => return None,
        };
        let matching = |action| {
            self.rules.iter().position(|r| {
                r.action == action
                    && !r.paths.is_empty()
                    && (r.match_all || chmod.mode & u32::from(r.mode_bits) != 0)
                    && r.paths.iter().any(|g| g.matches(name))
            })
        };
        matching(PolicyAction::Enforce)
            .or_else(|| matching(PolicyAction::Audit))
            .map(|i| i as u32)
    }
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
            chmod: ChmodTable::default(),
            privilege_rules: Vec::new(),
            policy: String::new(),
            proc_root: "/proc".into(),
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
                    let lost = proto::lost(pb::LossStage::Decode, 1, &self.node, now_unix_ns());
                    self.emit(lost);
                    continue;
                }
            };
            if let Body::Chmod(chmod) = &mut event.body {
                chmod.name = event::resolve_name(&self.proc_root, event.pid, chmod);
                if chmod.name.is_none() {
                    self.counters.name_unresolved += 1;
                }
                if event.verdict == Verdict::Allowed
                    && let Some(rule) = self.chmod.path_rule(chmod)
                {
                    // Reported, never enforced: the tracepoint tier cannot match paths.
                    chmod.rule = rule;
                    event.verdict = Verdict::Audited;
                    self.counters.chmod_path_rule_matches += 1;
                }
                if event.verdict == Verdict::Killed {
                    let proc = self.proc_root.clone();
                    let done = if revert::wait_for_call_end(
                        &proc,
                        event.pid,
                        event.tid,
                        revert::CALL_END_WAIT,
                    ) {
                        let dir = self.enricher.cgroup_dir(event.cgroup_id);
                        revert::setid_bits(&proc, event.pid, dir.as_deref(), chmod)
                    } else {
                        // Undoing a call that has not happened yet would be undone by it.
                        Revert::Failed(format!(
                            "the caller was still running {:?} after the kill",
                            revert::CALL_END_WAIT
                        ))
                    };
                    match &done {
                        Revert::Reverted { .. } => self.counters.chmod_reverted += 1,
                        Revert::Failed(why) => {
                            self.counters.chmod_revert_failed += 1;
                            tracing::warn!(pid = event.pid, "killed chmod not reverted: {why}");
                        }
                        Revert::NotNeeded(_) => {}
                    }
                    chmod.revert = Some(done);
                }
            }
            let ctx = Context {
                node: &self.node,
                policy: &self.policy,
                clock: &clock,
                rules: &self.rules,
                chmod_rules: &self.chmod.names,
                privilege_rules: &self.privilege_rules,
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

    /// Put kernel-side losses (ring buffer full) into the stream, and refresh the status board.
    pub fn kernel_counters(&mut self, kernel: &[(Counter, u64)]) {
        let full: u64 = kernel
            .iter()
            .filter(|(c, _)| {
                matches!(
                    c,
                    Counter::RingbufFullConnect
                        | Counter::RingbufFullChmod
                        | Counter::RingbufFullPriv
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
