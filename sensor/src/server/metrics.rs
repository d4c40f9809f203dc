//! Prometheus metrics over plain HTTP (`--metrics-addr`): `/metrics` in the text exposition
//! format 0.0.4, `/healthz` (the process answers) and `/readyz` (programs attached and, on
//! Kubernetes, the pod cache synced; see [`crate::server::health`]).
//!
//! The values are those of `sensor status`: the pipeline refreshes the status board every slow
//! tick (200 ms); the subscriber and journal figures are read at scrape time. Label values are
//! bounded sets (kinds, verdicts, stages, hooks), never pods or processes.

use std::{
    collections::BTreeMap,
    fmt::{Display, Write as _},
    net::SocketAddr,
    sync::{
        Arc, Mutex, OnceLock, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
};

use std::time::{Duration, Instant};

use sensor_common::Counter;

use super::{
    health::Readiness,
    status::{Snapshot, StatusBoard},
};
use crate::{
    attribution::pods::WatcherStats,
    hardening::node::{NodePosture, default_root},
    sinks::{export::ExportStats, journal::Journal},
};

/// The content type of the text exposition format.
pub const CONTENT_TYPE_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("metrics listener {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// The daemon's metrics: build and readiness from the start, everything else once
/// [`Metrics::set_status`] is called.
pub struct Metrics {
    readiness: Arc<Readiness>,
    status: OnceLock<Arc<StatusBoard>>,
    /// The node's posture and when it was read: read at start, re-read by a scrape when
    /// older than [`POSTURE_MAX_AGE`].
    posture: Mutex<(Instant, NodePosture)>,
}

/// How long a scrape reuses the node posture it has.
pub const POSTURE_MAX_AGE: Duration = Duration::from_secs(60);

impl Metrics {
    /// With the node posture read below `/` (logged by the daemon at start).
    pub fn new(readiness: Arc<Readiness>) -> Self {
        Self::with_posture(readiness, NodePosture::read(&default_root()))
    }

    pub fn with_posture(readiness: Arc<Readiness>, posture: NodePosture) -> Self {
        Self {
            readiness,
            status: OnceLock::new(),
            posture: Mutex::new((Instant::now(), posture)),
        }
    }

    /// The `sensor_node_posture` values. Where the active LSM list is unreadable (a container
    /// without securityfs), `bpf_lsm_active` is whether programs attached at the LSM tier.
    fn posture_gauges(&self) -> [(&'static str, u8); 5] {
        let posture = self.posture();
        let mut gauges = posture.gauges();
        if posture.bpf_lsm_active().is_none()
            && let Some(status) = self.status.get()
        {
            gauges[0].1 = u8::from(status.attachments.iter().any(|a| a.tier == "lsm"));
        }
        gauges
    }

    /// The node posture, re-read when older than [`POSTURE_MAX_AGE`].
    pub fn posture(&self) -> NodePosture {
        let mut p = self.posture.lock().unwrap_or_else(PoisonError::into_inner);
        if p.0.elapsed() >= POSTURE_MAX_AGE {
            let again = p.1.reread(&default_root());
            *p = (Instant::now(), again);
        }
        p.1.clone()
    }

    pub fn set_status(&self, status: Arc<StatusBoard>) {
        let _ = self.status.set(status);
    }

    pub fn readiness(&self) -> &Arc<Readiness> {
        &self.readiness
    }

    /// What works less than it should while the daemon stays ready (enforcement unaffected):
    /// failing journal writes.
    pub fn degraded(&self) -> Option<String> {
        let error = self.status.get()?.snapshot().journal_error?;
        Some(format!("journal writes failing: {error}"))
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut out = Exposition::default();
        out.family(
            "sensor_build_info",
            "gauge",
            "The running sensor build (value 1).",
        );
        out.sample(
            "sensor_build_info",
            &[
                ("version", env!("CARGO_PKG_VERSION")),
                ("arch", std::env::consts::ARCH),
            ],
            1,
        );
        out.single(
            "sensor_ready",
            "gauge",
            "1 when programs are attached and, on Kubernetes, the pod cache is synced.",
            u8::from(self.readiness.is_ready()),
        );
        out.labelled(
            "sensor_node_posture",
            "gauge",
            "The node's posture, 1 or 0 per check: bpf_lsm_active (bpf in the active LSM list), btf (/sys/kernel/btf/vmlinux), reboot_pending (reboot-required or a newer installed kernel), lockdown (a lockdown mode other than none), cgroup_v2 (cgroup2 only). Read at start and at most every 60 s.",
            "check",
            self.posture_gauges().map(|(c, v)| (c, u64::from(v))),
        );
        if let Some(status) = self.status.get() {
            let snap = status.snapshot();
            event_families(&mut out, &snap);
            kernel_families(&mut out, &snap);
            userspace_families(&mut out, &snap, status);
            journal_families(&mut out, &snap, &status.journal);
            policy_families(&mut out, status);
        }
        out.0
    }
}

/// Events by kind and verdict, and loss records by stage. The enforcement series exist from
/// the start (at 0), so an alert on their increase needs no special case for a new daemon.
fn event_families(out: &mut Exposition, snap: &Snapshot) {
    let mut events: BTreeMap<(String, String), u64> =
        [("connect", "blocked"), ("connect", "audited")]
            .into_iter()
            .map(|(k, v)| ((k.to_owned(), v.to_owned()), 0))
            .collect();
    let mut losses = Vec::new();
    for (kind, second, n) in snap.pipeline.counts() {
        if kind == "lost" {
            losses.push((second, n));
        } else {
            events.insert((kind, second), n);
        }
    }
    out.family(
        "sensor_events_total",
        "counter",
        "Events emitted (journaled and published), by kind and verdict.",
    );
    for ((kind, verdict), n) in events {
        out.sample(
            "sensor_events_total",
            &[("kind", &kind), ("verdict", &verdict)],
            n,
        );
    }
    out.family(
        "sensor_loss_records_total",
        "counter",
        "In-band loss records emitted, by the stage that lost events.",
    );
    for (stage, n) in losses {
        out.sample("sensor_loss_records_total", &[("stage", &stage)], n);
    }
}

fn kernel_families(out: &mut Exposition, snap: &Snapshot) {
    out.labelled(
        "sensor_kernel_ringbuf_drops_total",
        "counter",
        "Events the kernel could not put into the full ring buffer (the verdict still applied), by source; revert: copies of killed set-id calls for the revert thread (the pipeline then reverts from the event).",
        "source",
        [
            ("connect", snap.kernel(Counter::RingbufFullConnect)),
            ("chmod", snap.kernel(Counter::RingbufFullChmod)),
            ("process", snap.kernel(Counter::RingbufFullProcess)),
            ("privilege", snap.kernel(Counter::RingbufFullPriv)),
            ("revert", snap.kernel(Counter::RingbufFullRevert)),
        ],
    );
    out.family(
        "sensor_kernel_kill_tier_total",
        "counter",
        "Kill-tier decisions in the kernel (syscall tracepoints), by hook and decision: killed (SIGKILL sent), audited, kill_failed (the kernel refused the signal; reported audited).",
    );
    for (hook, decision, counter) in [
        ("chmod", "killed", Counter::ChmodKilled),
        ("chmod", "audited", Counter::ChmodAudited),
        ("privilege", "killed", Counter::PrivKilled),
        ("privilege", "audited", Counter::PrivAudited),
        ("late_socket", "killed", Counter::LateSocketKilled),
        ("late_socket", "audited", Counter::LateSocketAudited),
        ("any", "kill_failed", Counter::KillFailed),
    ] {
        out.sample(
            "sensor_kernel_kill_tier_total",
            &[("hook", hook), ("decision", decision)],
            snap.kernel(counter),
        );
    }
    out.labelled(
        "sensor_chmod_reverts_total",
        "counter",
        "Killed chmods whose set-id bits the daemon removed afterwards, or could not.",
        "result",
        [
            ("reverted", snap.pipeline.chmod_reverted),
            ("failed", snap.pipeline.chmod_revert_failed),
        ],
    );
    out.family(
        "sensor_kernel_lsm_total",
        "counter",
        "LSM-tier decisions in the kernel (BPF LSM hooks), by hook and decision: denied (EPERM, nothing changed), audited (allowed and reported).",
    );
    for (hook, decision, counter) in [
        ("chmod", "denied", Counter::LsmChmodDenied),
        ("chmod", "audited", Counter::LsmChmodAudited),
        ("privilege", "denied", Counter::LsmPrivDenied),
        ("privilege", "audited", Counter::LsmPrivAudited),
    ] {
        out.sample(
            "sensor_kernel_lsm_total",
            &[("hook", hook), ("decision", decision)],
            snap.kernel(counter),
        );
    }
    out.labelled(
        "sensor_kernel_packet_socket_decisions_total",
        "counter",
        "Packet sockets (AF_PACKET) created in scope while a metadata rule applies, by decision: denied (LSM tier, EPERM), killed (kill tier), audited.",
        "decision",
        [
            ("denied", snap.kernel(Counter::PacketDenied)),
            ("killed", snap.kernel(Counter::PacketKilled)),
            ("audited", snap.kernel(Counter::PacketAudited)),
        ],
    );
    out.labelled(
        "sensor_kernel_connect_decisions_total",
        "counter",
        "Connect-family calls to a listed destination, by the kernel's decision (counted whether or not the event was delivered).",
        "decision",
        [
            ("blocked", snap.kernel(Counter::Blocked)),
            ("audited", snap.kernel(Counter::Audited)),
            ("exempted", snap.kernel(Counter::Exempted)),
        ],
    );
    out.single(
        "sensor_kernel_chmod_seen_total",
        "counter",
        "chmod-family calls seen in scope by the kernel.",
        snap.kernel(Counter::ChmodSeen),
    );
    out.single(
        "sensor_kernel_path_read_failures_total",
        "counter",
        "chmod path arguments the kernel could not read from user memory.",
        snap.kernel(Counter::PathReadFailed),
    );
}

fn userspace_families(out: &mut Exposition, snap: &Snapshot, status: &StatusBoard) {
    let hub = &status.hub;
    out.labelled(
        "sensor_dropped_events_total",
        "counter",
        "Events lost or not fully delivered in userspace, by stage: decode (undecodable record), journal (not journaled while journal writes failed; still published live, without a sequence number), subscriber (a subscriber's queue was full), stdout (write failed).",
        "stage",
        [
            ("decode", snap.pipeline.decode_errors),
            ("journal", snap.pipeline.journal_unjournaled),
            ("subscriber", hub.lost_total()),
            ("stdout", status.exports.stdout_events_write_errors()),
        ],
    );
    export_families(out, status);
    if let Some(pods) = status.pods() {
        out.family(
            "sensor_pod_posture_findings",
            "gauge",
            "Pods on this node with a posture finding, by namespace and finding (allow_privilege_escalation, privileged, runs_as_root, no_seccomp_profile, host_path, host_network, host_pid; docs/hardening.md).",
        );
        for ((namespace, finding), n) in pods.posture_counts() {
            out.sample(
                "sensor_pod_posture_findings",
                &[("namespace", &namespace), ("finding", finding)],
                n,
            );
        }
    }
    let (lag_max, queued) = hub.lag();
    out.single(
        "sensor_subscribers",
        "gauge",
        "Live gRPC event subscribers.",
        hub.subscribers(),
    );
    out.single(
        "sensor_subscriber_lag_events",
        "gauge",
        "Events queued for the slowest live subscriber.",
        lag_max,
    );
    out.single(
        "sensor_subscriber_queued_events",
        "gauge",
        "Events queued for all live subscribers together.",
        queued,
    );
    out.single(
        "sensor_streams",
        "gauge",
        "Open GetEvents streams (live and replay).",
        hub.streams(),
    );
    out.single(
        "sensor_streams_refused_total",
        "counter",
        "GetEvents calls refused because --max-streams were open.",
        hub.refused_streams(),
    );
    out.single(
        "sensor_subscriber_lost_events_total",
        "counter",
        "Events subscribers lost because their queue was full (each reported to it in-band).",
        hub.lost_total(),
    );
    let e = &snap.enrichment;
    let p = &snap.procs;
    let w = status
        .watcher()
        .map(WatcherStats::named)
        .unwrap_or_default();
    let watch = |name: &str| w.iter().find(|(n, _)| *n == name).map_or(0, |(_, v)| *v);
    for (value, name, kind, help) in [
        (
            e.pending,
            "sensor_enrichment_pending_events",
            "gauge",
            "Events waiting for their pod to be known.",
        ),
        (
            e.completed_late,
            "sensor_enrichment_completed_late_total",
            "counter",
            "Events completed after waiting for their pod.",
        ),
        (
            e.partial,
            "sensor_enrichment_partial_total",
            "counter",
            "Events emitted with partial attribution (pod or process unknown in time).",
        ),
        (
            e.queue_full,
            "sensor_enrichment_queue_full_total",
            "counter",
            "Events emitted partial at once because the waiting queue was full.",
        ),
        (
            snap.pipeline.name_unresolved,
            "sensor_chmod_name_unresolved_total",
            "counter",
            "chmod events whose file name could not be resolved through /proc.",
        ),
        (
            p.entries as u64,
            "sensor_process_cache_entries",
            "gauge",
            "Processes in the process cache.",
        ),
        (
            p.unknown,
            "sensor_process_cache_unknown_total",
            "counter",
            "Process lookups that found nothing (neither cached nor in /proc).",
        ),
        (
            p.full,
            "sensor_process_cache_full_total",
            "counter",
            "Processes not cached because the cache was full.",
        ),
        (
            watch("pod_watch_synced"),
            "sensor_pod_watch_synced",
            "gauge",
            "1 once the pod watcher has its first complete list (0 in host mode).",
        ),
        (
            watch("pod_watch_events"),
            "sensor_pod_watch_events_total",
            "counter",
            "Pod events applied to the pod index.",
        ),
        (
            watch("pod_watch_relists"),
            "sensor_pod_watch_relists_total",
            "counter",
            "Complete pod lists after the first.",
        ),
        (
            watch("pod_watch_errors"),
            "sensor_pod_watch_errors_total",
            "counter",
            "Failed pod list or watch requests.",
        ),
    ] {
        out.single(name, kind, help, value);
    }
}

fn journal_families(out: &mut Exposition, snap: &Snapshot, journal: &Mutex<Journal>) {
    let (stats, range) = {
        let j = journal.lock().unwrap_or_else(PoisonError::into_inner);
        (j.stats(), j.range())
    };
    let (first_seq, last_seq, first_ns, last_ns) = range.map_or((0, 0, 0, 0), |r| {
        (r.first_seq, r.last_seq, r.first_time_ns, r.last_time_ns)
    });
    let seconds = |ns: i64| ns as f64 / 1e9;
    out.single(
        "sensor_journal_bytes",
        "gauge",
        "Bytes of the journal's segment files.",
        stats.bytes,
    );
    out.single(
        "sensor_journal_segments",
        "gauge",
        "Journal segment files.",
        stats.segments,
    );
    out.single(
        "sensor_journal_first_seq",
        "gauge",
        "Sequence number of the oldest readable journal record (0: empty).",
        first_seq,
    );
    out.single(
        "sensor_journal_last_seq",
        "gauge",
        "Sequence number of the newest readable journal record (0: empty).",
        last_seq,
    );
    out.single(
        "sensor_journal_first_timestamp_seconds",
        "gauge",
        "Wall-clock time of the oldest readable journal record (0: empty).",
        seconds(first_ns),
    );
    out.single(
        "sensor_journal_last_timestamp_seconds",
        "gauge",
        "Wall-clock time of the newest readable journal record (0: empty).",
        seconds(last_ns),
    );
    out.single(
        "sensor_journal_retention_dropped_records_total",
        "counter",
        "Journal records dropped by the size or age bound.",
        stats.dropped_records,
    );
    out.single(
        "sensor_journal_sync_errors_total",
        "counter",
        "Journal fdatasyncs that failed.",
        snap.journal_sync_errors,
    );
    out.single(
        "sensor_journal_failing",
        "gauge",
        "1 while journal writes fail (disk full, read-only, directory deleted): events go to live subscribers without a sequence number until a retry works.",
        u64::from(snap.journal_error.is_some()),
    );
    out.single(
        "sensor_journal_errors_total",
        "counter",
        "Journal writes, reopens and syncs that failed (each try once, not per event).",
        snap.pipeline.journal_errors,
    );
    out.single(
        "sensor_journal_outages_total",
        "counter",
        "Times journal writes started failing.",
        snap.pipeline.journal_outages,
    );
}

fn policy_families(out: &mut Exposition, status: &StatusBoard) {
    let counters = status.policy.counters();
    let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    let active = status.policy.current();
    out.family(
        "sensor_policy_info",
        "gauge",
        "The policies in force (value 1 each; at most 32).",
    );
    for (_, p) in active.in_force() {
        out.sample(
            "sensor_policy_info",
            &[
                ("policy", &p.name),
                ("source", &p.source),
                ("mode", p.mode()),
            ],
            1,
        );
    }
    out.family(
        "sensor_policy_decisions_total",
        "counter",
        "Calls each policy in force blocked or audited since its version in force was accepted.",
    );
    for (_, p) in active.in_force() {
        let (blocked, audited) = active.counts.get(&p.name);
        for (outcome, n) in [("blocked", blocked), ("audited", audited)] {
            out.sample(
                "sensor_policy_decisions_total",
                &[("policy", &p.name), ("outcome", outcome)],
                n,
            );
        }
    }
    out.single(
        "sensor_policy_generation",
        "gauge",
        "Policy versions applied (1 = the one loaded at start).",
        load(&counters.generation),
    );
    out.single(
        "sensor_policy_reload_failures_total",
        "counter",
        "Policy reloads refused (invalid file, or a change that needs a restart).",
        load(&counters.reload_failures),
    );
    out.single(
        "sensor_policy_exempted_cgroups",
        "gauge",
        "Pod cgroups no policy applies to now (pods outside every policy's scope).",
        load(&counters.exemptions),
    );
    let mut hooks: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for a in &status.attachments {
        let hook = a
            .program
            .strip_prefix(sensor_common::programs::PREFIX)
            .unwrap_or(&a.program);
        *hooks.entry((hook, a.tier.as_str())).or_default() += 1;
    }
    out.family(
        "sensor_hook_attachments",
        "gauge",
        "Attached programs by hook and the tier that serves it (cgroup, tracepoint, lsm, override, kill).",
    );
    for ((hook, tier), n) in hooks {
        out.sample(
            "sensor_hook_attachments",
            &[("hook", hook), ("tier", tier)],
            n,
        );
    }
    out.family(
        "sensor_protection_tier",
        "gauge",
        "1 for the tier that serves each protection now (lsm, override, kill, cgroup, or none).",
    );
    for (what, tier) in crate::kernel::catalog::protection_tiers(
        status.attachments.iter().map(|a| a.program.as_str()),
    ) {
        out.sample(
            "sensor_protection_tier",
            &[
                ("protection", what),
                ("tier", crate::kernel::catalog::tier_name(tier)),
            ],
            1,
        );
    }
}

/// Every `--export` destination's counters, labelled by the destination without its options
/// (as many series as destinations).
fn export_families(out: &mut Exposition, status: &StatusBoard) {
    type Field = fn(&ExportStats) -> &AtomicU64;
    let families: [(&str, &str, &str, Field); 6] = [
        (
            "sensor_export_records_total",
            "counter",
            "Records delivered, by destination (a file: written and synced; syslog: acknowledged by the receiver's TCP; OTLP: an OK Export call).",
            |s| &s.records,
        ),
        (
            "sensor_export_failures_total",
            "counter",
            "Failed deliveries (writes, connections, calls) or cursor saves, each retried, by destination.",
            |s| &s.write_errors,
        ),
        (
            "sensor_export_retried_records_total",
            "counter",
            "Records delivered by a retry after a failure, by destination.",
            |s| &s.retried,
        ),
        (
            "sensor_export_rejected_records_total",
            "counter",
            "Records an OTLP receiver refused for good (partial success), by destination.",
            |s| &s.rejected,
        ),
        (
            "sensor_export_lost_events_total",
            "counter",
            "Events a destination never got: deleted by journal retention before it was delivered, or unreadable (each reported to it in a lost record).",
            |s| &s.lost,
        ),
        (
            "sensor_export_lag_records",
            "gauge",
            "Journal records not delivered yet, by destination.",
            |s| &s.lag,
        ),
    ];
    for (name, kind, help, field) in families {
        out.family(name, kind, help);
        for s in status.exports.per_destination() {
            out.sample(
                name,
                &[("destination", s.destination.as_str())],
                field(s).load(Ordering::Relaxed),
            );
        }
    }
}

/// Text exposition format 0.0.4 writer.
#[derive(Default)]
struct Exposition(String);

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let v = v
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n");
                let _ = write!(self.0, "{k}=\"{v}\"");
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    /// A family with one unlabelled sample.
    fn single(&mut self, name: &str, kind: &str, help: &str, value: impl Display) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    /// A family with one sample per value of one label.
    fn labelled<'a>(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        label: &str,
        samples: impl IntoIterator<Item = (&'a str, u64)>,
    ) {
        self.family(name, kind, help);
        for (value, n) in samples {
            self.sample(name, &[(label, value)], n);
        }
    }
}

#[cfg(test)]
mod tests {
    use sensor_proto::v1 as pb;

    use super::*;

    #[test]
    fn labels_and_help_are_escaped() {
        let mut e = Exposition::default();
        e.family("m", "gauge", "a \\ b\nc");
        e.sample("m", &[("a", "x\"y\\z\nw")], 1);
        assert_eq!(
            e.0,
            "# HELP m a \\\\ b\\nc\n# TYPE m gauge\nm{a=\"x\\\"y\\\\z\\nw\"} 1\n"
        );
    }

    #[test]
    fn before_loading_only_build_and_readiness_are_reported() {
        let m = Metrics::new(Arc::new(Readiness::default()));
        let text = m.render();
        assert!(text.contains("\nsensor_ready 0\n"), "{text}");
        assert!(
            text.contains(&format!(
                "sensor_build_info{{version=\"{}\",arch=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION"),
                std::env::consts::ARCH
            )),
            "{text}"
        );
        assert!(!text.contains("sensor_events_total"), "{text}");
        for check in [
            "bpf_lsm_active",
            "btf",
            "reboot_pending",
            "lockdown",
            "cgroup_v2",
        ] {
            assert!(
                text.contains(&format!("sensor_node_posture{{check=\"{check}\"}} ")),
                "{text}"
            );
        }
    }

    #[test]
    fn snapshot_figures_become_labelled_families() {
        let mut pipeline = crate::pipeline::counters::Counters::default();
        pipeline.decode_errors = 2;
        for _ in 0..3 {
            pipeline.record(&pb::Event {
                verdict: pb::Verdict::Blocked as i32,
                body: Some(pb::event::Body::Connect(pb::Connect::default())),
                ..Default::default()
            });
        }
        pipeline.record(&crate::event::proto::lost(
            pb::LossStage::Kernel,
            1,
            &crate::event::proto::Origin::node("n"),
            0,
        ));
        let board = Snapshot {
            kernel: vec![(Counter::RingbufFullChmod, 7)],
            pipeline,
            ..Default::default()
        };
        let mut e = Exposition::default();
        event_families(&mut e, &board);
        kernel_families(&mut e, &board);
        let text = e.0;
        for line in [
            "sensor_events_total{kind=\"connect\",verdict=\"blocked\"} 3",
            "sensor_loss_records_total{stage=\"kernel\"} 1",
            "sensor_kernel_ringbuf_drops_total{source=\"chmod\"} 7",
            "sensor_kernel_ringbuf_drops_total{source=\"connect\"} 0",
            "sensor_events_total{kind=\"connect\",verdict=\"audited\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        assert!(!text.contains("kind=\"lost\""), "{text}");
    }
}
