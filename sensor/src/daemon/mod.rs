//! `sensor run`, once its flags are a [`RunConfig`]: open the journal and the exporters, load
//! and attach, start attribution and the API, stream until SIGINT/SIGTERM ([`stream`]), then
//! shut down in order (not ready, stop subscribers, drain, flush, exporters, detach).

mod config;
mod stream;

use std::{
    io,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use sensor_common::programs::PREFIX;
use sensor_proto::v1 as pb;
use tokio::signal::unix::{SignalKind, signal};

pub use self::config::{Flags, OWN_SCOPE, OwnScope, RunConfig, RunError};
use self::stream::{Control, Signals};
use crate::{
    attribution::{
        Enricher,
        cgroups::{CgroupIndex, cgroup2_root},
        pods::{self, PodIndex, WatchConfig, WatcherStats},
        procs::ProcessCache,
    },
    hardening::{node::default_root, watch::PostureWatch},
    kernel::{
        self, Loaded,
        catalog::{protection_tiers, tier_name},
        pins::PinDir,
        tracefs,
    },
    pipeline::Pipeline,
    policy::{self, reload::Reloader, watch},
    server::{
        api::{self, Service},
        health::Readiness,
        metrics::Metrics,
        status::StatusBoard,
    },
    sinks::{export::Exporters, hub::Hub, journal::Journal},
};

/// How often kernel counters are polled (in-band kernel loss records, status) and the journal
/// is synced to disk.
const SLOW_TICK: Duration = Duration::from_millis(200);
/// Processes the cache holds at most.
const PROCESS_CACHE_CAP: usize = 65_536;
/// How long an exited process stays in the cache (late events still find it).
const PROCESS_GRACE: Duration = Duration::from_secs(30);
/// How long a deleted pod stays in the index.
const POD_DELETED_GRACE: Duration = Duration::from_secs(120);

fn io_err(what: &'static str) -> impl FnOnce(io::Error) -> RunError {
    move |source| RunError::Io { what, source }
}

/// Run the daemon until SIGINT or SIGTERM.
pub fn run(cfg: RunConfig) -> Result<(), RunError> {
    // Input is valid; from here on, logs.
    for what in &cfg.rules.not_enforced() {
        tracing::warn!(policy = %cfg.rules.policy(), "not enforced at this tier: {what}");
    }
    for scope in cfg.scopes.iter().filter(|s| s.created) {
        tracing::info!(
            scope = %scope.path.display(),
            "no scope given: protecting a cgroup of the sensor's own (removed on exit when empty); run a command in it with `sensor exec -- COMMAND` (or `echo $$ > {}/cgroup.procs`)",
            scope.path.display()
        );
    }
    // Signal handlers before anything is attached: a SIGTERM right after "ready" must detach
    // cleanly, not kill the process with the default action.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(io_err("starting the runtime"))?;
    let signals = {
        let _ctx = runtime.enter();
        Signals {
            int: signal(SignalKind::interrupt()).map_err(io_err("installing SIGINT handler"))?,
            term: signal(SignalKind::terminate()).map_err(io_err("installing SIGTERM handler"))?,
            hup: signal(SignalKind::hangup()).map_err(io_err("installing SIGHUP handler"))?,
        }
    };
    // Metrics and /healthz, /readyz from the start: not ready until attached (and synced).
    let readiness = Arc::new(Readiness::default());
    let metrics = Arc::new(Metrics::new(Arc::clone(&readiness)));
    let posture = metrics.posture();
    let node_posture = posture.clone();
    tracing::info!(
        kernel = posture.kernel.as_deref().unwrap_or("unknown"),
        bpf_lsm_active = ?posture.bpf_lsm_active(),
        config_bpf_lsm = ?posture.config_bpf_lsm,
        btf = posture.btf,
        reboot_pending = posture.reboot_pending(),
        lockdown = posture.lockdown.as_deref().unwrap_or("unknown"),
        cgroup = posture.cgroup.as_str(),
        bpf_lsm = %posture.lsm_advice(),
        "node posture (sensor posture)"
    );
    let metrics_server = cfg
        .metrics_addr
        .map(|addr| crate::server::http::start(&runtime, addr, Arc::clone(&metrics)))
        .transpose()?;

    let (journal, recovery) =
        Journal::open(cfg.journal.clone()).map_err(|source| RunError::Journal {
            dir: cfg.journal.dir.clone(),
            source,
        })?;
    tracing::info!(dir = %cfg.journal.dir.display(), next_seq = journal.next_seq(), recovery = ?recovery, "journal open");
    let journal = Arc::new(Mutex::new(journal));
    let exporters = Exporters::start(cfg.exports.clone(), &journal)?;

    let tracefs = tracefs::tracefs_root()?;
    let tracepoints = tracefs::available(&tracefs)?;
    let exec_filename_offset = tracefs::exec_filename_offset(&tracefs)?;
    let pin = cfg.pin_dir.as_deref().map(PinDir::open).transpose()?;
    let loaded = kernel::load(&kernel::Config {
        scopes: &cfg.scopes,
        destinations: cfg.rules.entries(),
        others: cfg.rules.others(),
        chmod_rules: &cfg.rules.kernel_chmod_rules(),
        privilege_rules: &cfg.rules.kernel_privilege_rules(),
        wakeup_bytes: cfg.wakeup_bytes,
        tracepoints: &tracepoints,
        exec_filename_offset,
        pin: pin.as_ref(),
        tier: cfg.tier,
    });
    let mut loaded = match loaded {
        Ok(loaded) => loaded,
        Err(err) => {
            // Only this start's own generation: the earlier ones keep enforcing.
            if let Some(pin) = &pin {
                let _ = kernel::pins::unpin_links(pin.current());
                let _ = kernel::pins::remove_generation(pin.current());
            }
            return Err(err.into());
        }
    };
    for a in &loaded.attachments {
        tracing::info!(program = a.program, target = %a.target, "attached");
    }
    let events = loaded.take_events()?;
    readiness.set_attached();

    let policy = policy::Shared::new(cfg.rules.clone());
    let origin = crate::event::proto::Origin::new(&cfg.node, &cfg.cluster);
    let hub = Arc::new(Hub::new(origin.clone()));
    let status = Arc::new(StatusBoard::new(
        &cfg.node,
        loaded
            .attachments
            .iter()
            .map(|a| pb::Attachment {
                program: a.program.to_owned(),
                target: a.target.clone(),
                tier: a.tier.as_str().into(),
            })
            .collect(),
        policy.clone(),
        Arc::clone(&hub),
        Arc::clone(&journal),
        exporters.counters(),
        cfg.scopes
            .iter()
            .map(|s| pb::Scope {
                path: s.path.display().to_string(),
                cgroup_id: s.id,
                created: s.created,
            })
            .collect(),
    ));

    // Attribution: processes, cgroups, pods (Kubernetes only).
    let mut procs = ProcessCache::new(&cfg.proc_root, PROCESS_CACHE_CAP, PROCESS_GRACE);
    let scanned = procs.scan();
    let cgroups = match cgroup2_root().and_then(|root| CgroupIndex::scan(&root)) {
        Ok(index) => Some(index),
        Err(err) => {
            tracing::warn!(error = %err, "cgroup2 not readable: events carry cgroup ids without pods");
            None
        }
    };
    let watch_cfg = WatchConfig {
        node_name: cfg.node.clone(),
        kubeconfig: cfg.kubeconfig.clone(),
    };
    let kube = runtime.block_on(pods::client_from_env(&watch_cfg))?;
    let pods = kube.as_ref().map(|_| PodIndex::new(POD_DELETED_GRACE));
    tracing::info!(
        processes = scanned,
        kubernetes = kube.is_some(),
        "attribution ready"
    );
    let enricher = Enricher::new(
        procs,
        cgroups,
        pods.clone(),
        cfg.enrichment_wait,
        cfg.enrichment_queue,
    );
    let mut pipeline = Pipeline::new(Arc::clone(&status), enricher, cfg.proc_root.clone());
    // The kill tier's reverts, on a thread of their own ahead of the pipeline.
    let reverts = Arc::new(crate::pipeline::reverter::Outcomes::default());
    let stop_reverts = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let revert_thread = crate::pipeline::reverter::spawn(
        loaded.take_reverts()?,
        cfg.proc_root.clone(),
        cgroup2_root().ok(),
        Arc::clone(&reverts),
        Arc::clone(&stop_reverts),
    )
    .map_err(io_err("starting the revert thread"))?;
    pipeline.reverts = Some(reverts);
    metrics.set_status(Arc::clone(&status));
    let service = Service {
        hub: Arc::clone(&hub),
        journal: Arc::clone(&journal),
        status: Arc::clone(&status),
        queue: cfg.subscriber_queue,
        max_streams: cfg.max_streams,
    };

    // Policy resources (Kubernetes mode): watched on the runtime, applied by the event loop,
    // their status written back from the runtime.
    let resources = watch::Pending::default();
    let attached: Vec<String> = loaded
        .attachments
        .iter()
        .map(|a| a.program.to_owned())
        .collect();
    // The network (gRPC, pod watcher, signals) on the runtime; the event loop on this thread.
    let started = runtime.block_on(async {
        let unix = api::bind_unix(&cfg.listen.socket)?;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let server = tokio::spawn(api::serve(
            service,
            cfg.listen.clone(),
            unix,
            stop_rx.clone(),
            Arc::clone(&readiness),
        ));
        if let Some(client) = &kube {
            for kind in [watch::Kind::Cluster, watch::Kind::Namespaced] {
                tokio::spawn(watch::run(
                    client.clone(),
                    kind,
                    resources.clone(),
                    stop_rx.clone(),
                ));
            }
            tokio::spawn(crate::policy::status::run(
                client.clone(),
                cfg.node.clone(),
                policy.clone(),
                attached.clone(),
                stop_rx.clone(),
            ));
        }
        let watcher = match (kube, pods) {
            (Some(client), Some(index)) => {
                let stats = Arc::new(WatcherStats::default());
                status.set_watcher(Arc::clone(&stats));
                status.set_pods(index.clone());
                readiness.set_pods(Some(Arc::clone(&stats)));
                Some(tokio::spawn(pods::run_watcher(
                    client,
                    watch_cfg.clone(),
                    index,
                    stats,
                    stop_rx,
                )))
            }
            _ => {
                readiness.set_pods(None);
                None
            }
        };
        Ok::<_, RunError>((stop_tx, server, watcher))
    });
    let (stop_tx, server, watcher) = started?;
    let control = Control::new().map_err(io_err("creating the event loop's eventfd"))?;
    runtime.spawn(Arc::clone(&control).watch(signals));
    let streamed = {
        // The journal's background syncs go to the runtime's blocking pool.
        let _runtime = runtime.enter();
        if let Some(pin) = &pin {
            stream::retire_previous(pin, &mut pipeline);
        }
        tracing::info!(
            policy = %cfg.rules.policy(),
            scopes = cfg.scopes.len(),
            destinations = cfg.rules.entries().len(),
            programs = loaded.attachments.len(),
            socket = %cfg.listen.socket.display(),
            "sensor ready"
        );
        let reloader = Reloader::new(cfg.policy_file.clone(), policy.clone(), &origin)
            .with_resources(resources.clone());
        // The node's posture is the first record of this start (after a previous generation's
        // events).
        let tiers = protection_tiers(attached.iter().map(String::as_str))
            .into_iter()
            .map(|(p, t)| (p.to_owned(), tier_name(t).to_owned()))
            .collect();
        let (posture, start) = PostureWatch::start(
            default_root(),
            node_posture,
            origin.clone(),
            tiers,
            Instant::now(),
        );
        pipeline.report(start);
        stream::stream(
            events,
            &control,
            cfg.drain_interval,
            &mut pipeline,
            &mut loaded,
            stream::Watches { reloader, posture },
        )
    };
    let result = runtime.block_on(async {
        // Shutdown: not ready (health NOT_SERVING, /readyz 503), stop accepting, end every
        // subscription, then wait for the server.
        readiness.set_stopping();
        let _ = stop_tx.send(true);
        hub.close();
        if let Some(w) = watcher {
            let _ = tokio::time::timeout(Duration::from_secs(2), w).await;
        }
        let served = match tokio::time::timeout(Duration::from_secs(5), server).await {
            Ok(Ok(r)) => r.map_err(RunError::from),
            Ok(Err(join)) => Err(RunError::Io {
                what: "gRPC server task",
                source: io::Error::other(join),
            }),
            Err(_) => {
                tracing::warn!("gRPC server did not stop within 5 s");
                Ok(())
            }
        };
        streamed.and(served)
    });
    pipeline.release_enriched(true);
    pipeline.flush();
    pipeline.sync();
    // Scrapes see the final counters until here.
    if let Some(server) = metrics_server {
        runtime.block_on(server.stop());
    }
    // Exporters write what the journal holds, then stop.
    exporters.stop(Duration::from_secs(5));
    pipeline.publish_status(&loaded.kernel_counters()?);
    stop_enforcing(loaded, &cfg.listen.socket, pin.as_ref(), &status);
    // Detached: no more kills to undo. The thread finishes the copy it has in hand.
    stop_reverts.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = revert_thread.join();
    result
}

/// Detach everything (pinned links stay attached), print the counters, say that we stopped.
fn stop_enforcing(
    loaded: Loaded,
    socket: &std::path::Path,
    pin: Option<&PinDir>,
    status: &StatusBoard,
) {
    drop(loaded);
    let _ = std::fs::remove_file(socket);
    eprintln!("{}", status.summary());
    match pin {
        None => tracing::info!(prefix = PREFIX, "detached; sensor stopped"),
        Some(pin) => tracing::info!(
            pinned = %pin.current().display(),
            "sensor stopped; enforcement stays pinned (`sensor uninstall` removes it)"
        ),
    }
}
