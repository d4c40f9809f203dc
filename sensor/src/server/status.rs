//! The status board: what `GetStatus`, `/metrics` and the stop line report, gathered from every
//! subsystem. Counters stay typed here (each subsystem's own struct); they become names only at
//! the edges (the `counters` map of `GetStatus`, the JSON line printed when the daemon stops).
//!
//! The pipeline publishes a [`Snapshot`] of what it owns every slow tick (200 ms); what lives in
//! atomics (the hub, the policy, the pod watcher, the exporters, the journal) is read when asked.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, OnceLock, PoisonError},
};

use sensor_common::Counter;
use sensor_proto::v1 as pb;
use serde_json::{Value, json};

use crate::{
    attribution::{
        EnrichStats,
        pods::{PodIndex, WatcherStats},
        procs::ProcStats,
    },
    pipeline::counters::Counters,
    policy,
    sinks::{export::ExportCounters, hub::Hub, journal::Journal},
};

/// What the pipeline owns, as of its last publish.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Kernel counters, summed over CPUs, in [`Counter`] order.
    pub kernel: Vec<(Counter, u64)>,
    pub pipeline: Counters,
    pub enrichment: EnrichStats,
    pub procs: ProcStats,
    /// Background journal fdatasyncs that failed.
    pub journal_sync_errors: u64,
    /// While journal writes fail: the latest error.
    pub journal_error: Option<String>,
}

impl Snapshot {
    pub fn kernel(&self, counter: Counter) -> u64 {
        self.kernel
            .iter()
            .find(|(c, _)| *c == counter)
            .map_or(0, |(_, v)| *v)
    }
}

pub struct StatusBoard {
    pub node: String,
    pub attachments: Vec<pb::Attachment>,
    pub policy: policy::Shared,
    pub hub: Arc<Hub>,
    pub journal: Arc<Mutex<Journal>>,
    pub exports: ExportCounters,
    /// The scope roots.
    pub scopes: Vec<pb::Scope>,
    watcher: OnceLock<Arc<WatcherStats>>,
    pods: OnceLock<PodIndex>,
    snapshot: Mutex<Snapshot>,
}

impl StatusBoard {
    pub fn new(
        node: &str,
        attachments: Vec<pb::Attachment>,
        policy: policy::Shared,
        hub: Arc<Hub>,
        journal: Arc<Mutex<Journal>>,
        exports: ExportCounters,
        scopes: Vec<pb::Scope>,
    ) -> Self {
        Self {
            scopes,
            node: node.to_owned(),
            attachments,
            policy,
            hub,
            journal,
            exports,
            watcher: OnceLock::new(),
            pods: OnceLock::new(),
            snapshot: Mutex::default(),
        }
    }

    /// Kubernetes mode: the pod watcher's counters.
    pub fn set_watcher(&self, stats: Arc<WatcherStats>) {
        let _ = self.watcher.set(stats);
    }

    /// Kubernetes mode: the pod index (for the pod posture metrics).
    pub fn set_pods(&self, pods: PodIndex) {
        let _ = self.pods.set(pods);
    }

    pub fn pods(&self) -> Option<&PodIndex> {
        self.pods.get()
    }

    pub fn watcher(&self) -> Option<&WatcherStats> {
        self.watcher.get().map(Arc::as_ref)
    }

    /// The pipeline's figures, now.
    pub fn publish(&self, snapshot: Snapshot) {
        *self.snapshot.lock().unwrap_or_else(PoisonError::into_inner) = snapshot;
    }

    pub fn snapshot(&self) -> Snapshot {
        self.snapshot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The counters that are not kernel ones and not event counts, by their status-API name.
    fn named(&self, snap: &Snapshot) -> Vec<(&'static str, u64)> {
        let policy = self.policy.counters();
        let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        let e = &snap.enrichment;
        let p = &snap.procs;
        let mut named: Vec<(&'static str, u64)> = snap.pipeline.named().to_vec();
        named.extend([
            ("stdout_errors", self.exports.stdout_events_write_errors()),
            ("policy_generation", load(&policy.generation)),
            ("policy_reload_failures", load(&policy.reload_failures)),
            ("policy_exemptions", load(&policy.exemptions)),
            ("policy_pod_cgroups", load(&policy.pod_cgroups)),
            ("policies_in_force", load(&policy.in_force)),
            ("policies_refused", load(&policy.refused)),
            ("journal_sync_errors", snap.journal_sync_errors),
            ("enrichment_pending", e.pending),
            ("enrichment_completed_late", e.completed_late),
            ("enrichment_partial", e.partial),
            ("enrichment_queue_full", e.queue_full),
            ("process_cache_entries", p.entries as u64),
            ("process_cache_filled", p.filled),
            ("process_cache_unknown", p.unknown),
            ("process_cache_full", p.full),
        ]);
        if let Some(w) = self.watcher() {
            named.extend(w.named());
        }
        named.extend(self.exports.named());
        named.push(("subscriber_lost", self.hub.lost_total()));
        named.push(("streams_open", self.hub.streams() as u64));
        named.push(("streams_refused", self.hub.refused_streams()));
        named
    }

    /// Every counter by its status-API name (`GetStatus`): `kernel_<counter>`,
    /// `events_<kind>/<verdict>`, and the named ones.
    pub fn counters(&self) -> BTreeMap<String, u64> {
        let snap = self.snapshot();
        let mut out: BTreeMap<String, u64> = snap
            .kernel
            .iter()
            .map(|(c, v)| (format!("kernel_{}", c.as_str()), *v))
            .collect();
        out.extend(
            snap.pipeline
                .events()
                .into_iter()
                .map(|(k, v)| (format!("events_{k}"), v)),
        );
        out.extend(
            self.named(&snap)
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v)),
        );
        out
    }

    /// `{"counters": {...}}`, printed on stderr when the daemon stops.
    pub fn summary(&self) -> Value {
        let snap = self.snapshot();
        let kernel: serde_json::Map<String, Value> = snap
            .kernel
            .iter()
            .map(|(c, v)| (c.as_str().to_owned(), json!(v)))
            .collect();
        let mut counters = json!({
            "events": snap.pipeline.events(),
            "kernel": kernel,
        });
        for (k, v) in self.named(&snap) {
            counters[k] = json!(v);
        }
        json!({ "counters": counters })
    }
}
