//! `sensor run`: validate, open the journal, load and attach, serve the event stream until
//! SIGINT/SIGTERM, then shut down in order (stop subscribers, drain, flush, detach).

use std::{
    io,
    path::PathBuf,
    process::ExitCode,
    sync::{Arc, Mutex},
    time::Duration,
};

use aya::maps::{MapData, RingBuf};
use sensor_common::{Action, programs::PREFIX};
use sensor_proto::v1 as pb;
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{Signal, SignalKind, signal},
};

use crate::{
    attribution::Enricher,
    attribution::cgroups::{CgroupIndex, cgroup2_root},
    attribution::pods::{PodIndex, PodsError, WatchConfig, WatcherStats},
    attribution::procs::ProcessCache,
    cmd::{EXIT_FAILURE, EXIT_USAGE, Mode, RunArgs},
    kernel::pins::{self, PinDir},
    kernel::scope::{ScopeError, ScopeRoot},
    kernel::tracefs::{self, TracefsError},
    kernel::{self, ProgramsError},
    pipeline::{ChmodTable, Pipeline},
    policy::{self, ActiveRules},
    server::api::{self, ApiError, Listen, Service, StatusBoard, TcpTls},
    server::health::Readiness,
    server::metrics::{Metrics, Sources},
    sinks::export::{self, ExportError, Exporters},
    sinks::hub::Hub,
    sinks::journal::{Journal, JournalConfig, JournalError},
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

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Scope(#[from] ScopeError),
    #[error(transparent)]
    Tracefs(#[from] TracefsError),
    #[error(transparent)]
    Programs(#[from] ProgramsError),
    #[error("journal {dir}: {source}")]
    Journal {
        dir: std::path::PathBuf,
        #[source]
        source: JournalError,
    },
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Pods(#[from] PodsError),
    #[error(transparent)]
    Metrics(#[from] crate::server::metrics::MetricsError),
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Policy(Vec<sensor_policy::PolicyError>),
    #[error(transparent)]
    PinDir(#[from] crate::kernel::pins::PinDirError),
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: io::Error,
    },
}

impl RunError {
    fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) | Self::Scope(_) | Self::Policy(_) | Self::PinDir(_) => EXIT_USAGE,
            _ => EXIT_FAILURE,
        }
    }
}

/// Entry point for `sensor run`; errors become one line on stderr and an exit code.
pub fn main(args: RunArgs) -> ExitCode {
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("sensor: error: {}", error_chain(&err));
            ExitCode::from(err.exit_code())
        }
    }
}

/// The error and its sources on one line, skipping sources its message already contains.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut line = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = s.source();
    }
    line
}

fn io_err(what: &'static str) -> impl FnOnce(io::Error) -> RunError {
    move |source| RunError::Io { what, source }
}

fn listen_config(args: &RunArgs) -> Result<Listen, RunError> {
    let tcp = match (args.listen_tcp, &args.tls_cert, &args.tls_key) {
        (None, None, None) if args.tls_client_ca.is_none() => None,
        (Some(addr), Some(cert), Some(key)) => Some(TcpTls {
            addr,
            cert: cert.clone(),
            key: key.clone(),
            client_ca: args.tls_client_ca.clone(),
        }),
        (Some(_), _, _) => {
            return Err(RunError::Usage(
                "--listen-tcp needs --tls-cert and --tls-key: plain TCP is refused".into(),
            ));
        }
        (None, ..) => {
            return Err(RunError::Usage(
                "--tls-cert, --tls-key and --tls-client-ca only apply with --listen-tcp".into(),
            ));
        }
    };
    for path in tcp
        .iter()
        .flat_map(|t| [Some(&t.cert), Some(&t.key), t.client_ca.as_ref()])
        .flatten()
    {
        if !path.is_file() {
            return Err(RunError::Usage(format!(
                "TLS file {}: not a readable file",
                path.display()
            )));
        }
    }
    Ok(Listen {
        socket: args.socket.clone(),
        tcp,
    })
}

fn node_name(args: &RunArgs) -> String {
    if let Some(n) = &args.node_name {
        return n.clone();
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}

struct Signals {
    int: Signal,
    term: Signal,
    /// Reload the policy file.
    hup: Signal,
}

fn run(args: &RunArgs) -> Result<(), RunError> {
    // Validate all input before touching the kernel: a bad flag or policy attaches nothing.
    let rules = match &args.policy {
        Some(path) => policy::from_file(path).map_err(RunError::Policy)?,
        None => policy::from_default(args.mode.map(|m| match m {
            Mode::Enforce => Action::Enforce,
            Mode::Audit => Action::Audit,
        })),
    };
    let mut roots: Vec<PathBuf> = args
        .scope_cgroups
        .iter()
        .chain(&rules.scope_cgroups)
        .cloned()
        .collect();
    if roots.is_empty() {
        // No cgroups given: every pod, at the kubelet's pod parent cgroup (on a node).
        roots.extend(kubepods_root());
    }
    let scopes = roots
        .iter()
        .map(|p| ScopeRoot::open(p))
        .collect::<Result<Vec<_>, _>>()?;
    if scopes.is_empty() {
        return Err(RunError::Usage(
            "no scope: give --scope-cgroup, a policy with scope.cgroups, or run on a Kubernetes node (kubepods cgroup)".into(),
        ));
    }
    let listen = listen_config(args)?;
    if let Some(dir) = &args.pin_dir {
        pins::check(dir)?;
    }
    let node = node_name(args);
    let exports = export::configs(&args.export, &args.journal_dir, &node, args.stdout_events)
        .map_err(RunError::Usage)?;
    // Input is valid; from here on, logs.
    for what in &rules.not_enforced {
        tracing::warn!(policy = %rules.policy, "not enforced at this tier: {what}");
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
    let metrics_server = args
        .metrics_addr
        .map(|addr| crate::server::metrics::start(&runtime, addr, Arc::clone(&metrics)))
        .transpose()?;

    let (journal, recovery) = Journal::open(JournalConfig {
        dir: args.journal_dir.clone(),
        segment_bytes: args.journal_segment_bytes,
        max_total_bytes: args.journal_max_bytes,
        max_age: args.journal_max_age,
    })
    .map_err(|source| RunError::Journal {
        dir: args.journal_dir.clone(),
        source,
    })?;
    tracing::info!(dir = %args.journal_dir.display(), next_seq = journal.next_seq(), recovery = ?recovery, "journal open");
    let journal = Arc::new(Mutex::new(journal));
    let exporters = Exporters::start(exports, &journal)?;

    let tracefs = tracefs::tracefs_root()?;
    let tracepoints = tracefs::available(&tracefs)?;
    let exec_filename_offset = tracefs::exec_filename_offset(&tracefs)?;
    let pin = args.pin_dir.as_deref().map(PinDir::open).transpose()?;
    let loaded = kernel::load(&kernel::Config {
        scopes: &scopes,
        destinations: &rules.entries,
        chmod_rules: &rules.kernel_chmod_rules(),
        privilege_rules: &rules.kernel_privilege_rules(),
        wakeup_bytes: args.wakeup_bytes,
        tracepoints: &tracepoints,
        exec_filename_offset,
        pin: pin.as_ref(),
        tier: args.tier,
    });
    let mut loaded = match loaded {
        Ok(loaded) => loaded,
        Err(err) => {
            // Only this start's own generation: the earlier ones keep enforcing.
            if let Some(pin) = &pin {
                let _ = pins::unpin_links(pin.current());
                let _ = pins::remove_generation(pin.current());
            }
            return Err(err.into());
        }
    };
    for a in &loaded.attachments {
        tracing::info!(program = a.program, target = %a.target, "attached");
    }
    let events = loaded.take_events()?;
    readiness.set_attached();

    let status = Arc::new(StatusBoard {
        node: node.clone(),
        attachments: loaded
            .attachments
            .iter()
            .map(|a| pb::Attachment {
                program: a.program.to_owned(),
                target: a.target.clone(),
                tier: a.tier.as_str().into(),
            })
            .collect(),
        counters: Mutex::default(),
        policy: Mutex::new((
            rules.policy.clone(),
            rules.source.clone(),
            rules.text.clone(),
        )),
    });
    let hub = Arc::new(Hub::new(&node));

    // Attribution: processes, cgroups, pods (Kubernetes only).
    let mut procs = ProcessCache::new(&args.proc_root, PROCESS_CACHE_CAP, PROCESS_GRACE);
    let scanned = procs.scan();
    let cgroups = match cgroup2_root().and_then(|root| CgroupIndex::scan(&root)) {
        Ok(index) => Some(index),
        Err(err) => {
            tracing::warn!(error = %err, "cgroup2 not readable: events carry cgroup ids without pods");
            None
        }
    };
    let watch_cfg = WatchConfig {
        node_name: node.clone(),
        kubeconfig: args.kubeconfig.clone(),
    };
    let kube = runtime.block_on(crate::attribution::pods::client_from_env(&watch_cfg))?;
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
        Duration::from_millis(args.enrichment_wait_ms),
        args.enrichment_queue,
    );
    let mut pipeline = Pipeline::new(
        Arc::clone(&hub),
        Arc::clone(&journal),
        Arc::clone(&status),
        rules.names.clone(),
        enricher,
        args.stdout_events,
    );
    pipeline.policy = rules.policy.clone();
    pipeline.chmod = ChmodTable {
        names: rules.chmod_names.clone(),
        rules: rules.chmod.clone(),
    };
    pipeline.privilege_rules = rules.privilege_names.clone();
    pipeline.proc_root = args.proc_root.clone();
    metrics.set_sources(Sources {
        status: Arc::clone(&status),
        hub: Arc::clone(&hub),
        journal: Arc::clone(&journal),
    });
    pipeline.counters.policy_generation = 1;
    pipeline.exports = Some(exporters.counters());
    let service = Service {
        hub: Arc::clone(&hub),
        journal,
        status,
        queue: usize::try_from(args.subscriber_queue).unwrap_or(usize::MAX),
    };

    let result = runtime.block_on(async {
        let unix = api::bind_unix(&listen.socket)?;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let server = tokio::spawn(api::serve(
            service,
            listen.clone(),
            unix,
            stop_rx.clone(),
            Arc::clone(&readiness),
        ));
        let watcher = match (kube, pods) {
            (Some(client), Some(index)) => {
                let stats = Arc::new(WatcherStats::default());
                pipeline.watcher = Some(Arc::clone(&stats));
                readiness.set_pods(Some(Arc::clone(&stats)));
                let cfg = watch_cfg.clone();
                Some(tokio::spawn(crate::attribution::pods::run_watcher(
                    client, cfg, index, stats, stop_rx,
                )))
            }
            _ => {
                readiness.set_pods(None);
                None
            }
        };
        if let Some(pin) = &pin {
            retire_previous(pin, &mut pipeline);
        }
        tracing::info!(
            policy = %rules.policy,
            scopes = scopes.len(),
            destinations = rules.entries.len(),
            programs = loaded.attachments.len(),
            socket = %listen.socket.display(),
            "sensor ready"
        );
        let reloader = Reloader::new(args.policy.clone(), rules.clone());
        let streamed = stream(events, signals, args, &mut pipeline, &mut loaded, reloader).await;
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
    let kernel = loaded.kernel_counters()?;
    // Detach everything before reporting that we stopped (pinned links stay attached).
    drop(loaded);
    let _ = std::fs::remove_file(&listen.socket);
    let mut extra = pipeline.enrichment_counters();
    extra.push(("subscriber_lost".into(), hub.lost_total()));
    eprintln!("{}", pipeline.counters.summary(&kernel, &extra));
    match &pin {
        None => tracing::info!(prefix = PREFIX, "detached; sensor stopped"),
        Some(pin) => tracing::info!(
            pinned = %pin.current().display(),
            "sensor stopped; enforcement stays pinned (`sensor uninstall` removes it)"
        ),
    }
    result
}

/// Pinned mode, once this daemon's own programs are attached and pinned: retire the earlier
/// generations (their links detach), keeping the events their ring buffers still hold (the
/// kernel kept deciding and reporting while no daemon ran).
fn retire_previous(pin: &PinDir, pipeline: &mut Pipeline) {
    for retired in kernel::retire(pin.previous()) {
        match retired {
            Ok(mut r) => {
                let before = pipeline.counters.total_events();
                if let Some(ring) = &mut r.events {
                    pipeline.drain(ring);
                }
                tracing::info!(
                    generation = %r.dir.display(),
                    links = r.links,
                    events = pipeline.counters.total_events() - before,
                    owner_running = r.owner_running,
                    "retired a previous generation's pinned programs (its daemon, if still running, reads its own events until it exits)"
                );
                if let Err(err) = pins::remove_generation(&r.dir) {
                    tracing::warn!(generation = %r.dir.display(), error = %err, "removing a retired generation failed");
                }
            }
            Err((dir, err)) => {
                tracing::error!(generation = %dir.display(), error = %err, "could not unpin a previous generation's links: they stay attached");
            }
        }
    }
}

/// A `policy` event: a reload applied or refused.
fn policy_event(
    pipeline: &Pipeline,
    generation: u64,
    accepted: bool,
    source: &str,
    policy: &str,
    errors: Vec<String>,
) -> pb::Event {
    pb::Event {
        node: pipeline.node().to_owned(),
        time_unix_ns: crate::event::json::now_unix_ns(),
        policy: policy.to_owned(),
        enrichment: pb::Enrichment::Complete as i32,
        body: Some(pb::event::Body::PolicyChange(pb::PolicyChange {
            generation,
            accepted,
            source: source.to_owned(),
            policy: policy.to_owned(),
            errors,
        })),
        ..Default::default()
    }
}

/// The kubelet's parent cgroup of all pods (systemd or cgroupfs driver), if this is a node.
fn kubepods_root() -> Option<PathBuf> {
    let root = cgroup2_root().ok()?;
    ["kubepods.slice", "kubepods"]
        .iter()
        .map(|d| root.join(d))
        .find(|p| p.is_dir())
}

/// Policy hot reload: on SIGHUP, and when the file changes (checked every slow tick; the path
/// is followed, so a ConfigMap's symlink swap counts). A new file that is invalid, or that
/// changes what needs a restart, is refused: logged with its errors, counted, and the active
/// rules stay. An accepted one replaces the destination entries in place (no gap for a prefix
/// both versions list) and the names events report.
struct Reloader {
    path: Option<PathBuf>,
    seen: Option<FileId>,
    active: ActiveRules,
    /// Pod index generation and slow ticks at the last exemption refresh.
    exempt_generation: Option<u64>,
    ticks: u32,
}

/// What identifies a version of the policy file.
type FileId = (u64, u64, i64, i64, u64);

fn file_id(path: &std::path::Path) -> Option<FileId> {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::metadata(path).ok()?;
    Some((m.dev(), m.ino(), m.mtime(), m.mtime_nsec(), m.size()))
}

impl Reloader {
    fn new(path: Option<PathBuf>, active: ActiveRules) -> Self {
        let seen = path.as_deref().and_then(file_id);
        Self {
            path,
            seen,
            active,
            exempt_generation: None,
            ticks: 0,
        }
    }

    /// Recompute the exempted pod cgroups (pods outside the policy's namespace/label scope)
    /// when pods changed, and every 10 ticks for new cgroups; a refused map update is logged
    /// and retried at the next refresh. Exemptions only ever remove protection for the pods
    /// they name: a pod not known yet stays protected.
    fn refresh_exemptions(&mut self, pipeline: &mut Pipeline, loaded: &mut kernel::Loaded) {
        let Some(namespaces) = &self.active.namespaces else {
            if pipeline.counters.policy_exemptions > 0 {
                self.apply_exemptions(pipeline, loaded, &Default::default());
            }
            return;
        };
        self.ticks += 1;
        let generation = pipeline.enricher.pods_generation();
        if generation.is_none()
            || (generation == self.exempt_generation && !self.ticks.is_multiple_of(10))
        {
            return;
        }
        let selector = self.active.pod_selector.clone();
        let Some(exempt) = pipeline
            .enricher
            .exempt_cgroups(namespaces, selector.as_ref())
        else {
            return;
        };
        self.exempt_generation = generation;
        self.apply_exemptions(pipeline, loaded, &exempt);
    }

    fn apply_exemptions(
        &mut self,
        pipeline: &mut Pipeline,
        loaded: &mut kernel::Loaded,
        exempt: &std::collections::BTreeSet<u64>,
    ) {
        match loaded.set_exemptions(exempt) {
            Ok(()) => pipeline.counters.policy_exemptions = exempt.len() as u64,
            Err(err) => {
                self.exempt_generation = None;
                tracing::warn!(error = %error_chain(&err), "exemptions not applied");
            }
        }
    }

    fn file_changed(&mut self) -> bool {
        let Some(path) = &self.path else { return false };
        let now = file_id(path);
        now.is_some() && now != self.seen
    }

    fn reload(&mut self, pipeline: &mut Pipeline, loaded: &mut kernel::Loaded, why: &str) {
        let Some(path) = self.path.clone() else {
            tracing::info!("{why}: no --policy file to reload");
            return;
        };
        self.seen = file_id(&path);
        let source = path.display().to_string();
        let refused = |pipeline: &mut Pipeline, reason: String, errors: Vec<String>| {
            pipeline.counters.policy_reload_failures += 1;
            tracing::error!(file = %path.display(), "policy reload refused, the active policy stays: {reason}");
            let errors = if errors.is_empty() {
                vec![reason]
            } else {
                errors
            };
            let generation = pipeline.counters.policy_generation;
            pipeline.report(policy_event(
                pipeline, generation, false, &source, "", errors,
            ));
        };
        let new = match policy::from_file(&path) {
            Ok(new) => new,
            Err(errors) => {
                for e in &errors {
                    tracing::error!("{e}");
                }
                let located = errors.iter().map(ToString::to_string).collect();
                return refused(pipeline, format!("{} error(s)", errors.len()), located);
            }
        };
        if let Some(reason) = policy::reload_refusal(&self.active, &new) {
            return refused(pipeline, reason, Vec::new());
        }
        let applied = loaded
            .replace_chmod_rules(&new.kernel_chmod_rules())
            .and_then(|()| loaded.replace_privilege_rules(&new.kernel_privilege_rules()))
            .and_then(|()| loaded.replace_destinations(&new.entries));
        if let Err(err) = applied {
            // Back to the active rules, so the kernel runs one policy, not half of two.
            let undo = loaded
                .replace_chmod_rules(&self.active.kernel_chmod_rules())
                .and_then(|()| {
                    loaded.replace_privilege_rules(&self.active.kernel_privilege_rules())
                })
                .and_then(|()| loaded.replace_destinations(&self.active.entries));
            if let Err(undo) = undo {
                tracing::error!("restoring the active rules failed: {}", error_chain(&undo));
            }
            return refused(pipeline, error_chain(&err), Vec::new());
        }
        pipeline.rules = new.names.clone();
        pipeline.chmod = ChmodTable {
            names: new.chmod_names.clone(),
            rules: new.chmod.clone(),
        };
        pipeline.privilege_rules = new.privilege_names.clone();
        *pipeline
            .status
            .policy
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            (new.policy.clone(), new.source.clone(), new.text.clone());
        pipeline.policy = new.policy.clone();
        pipeline.counters.policy_generation += 1;
        let generation = pipeline.counters.policy_generation;
        pipeline.report(policy_event(
            pipeline,
            generation,
            true,
            &new.source,
            &new.policy,
            Vec::new(),
        ));
        // Scope changes take effect at the next refresh.
        self.exempt_generation = None;
        for what in &new.not_enforced {
            tracing::warn!(policy = %new.policy, "not enforced at this tier: {what}");
        }
        tracing::info!(policy = %new.policy, generation = pipeline.counters.policy_generation, destinations = new.entries.len(), "{why}: policy reloaded");
        self.active = new;
    }
}

/// Drain the ring buffer on kernel wakeups and on a timer until SIGINT/SIGTERM.
async fn stream(
    events: RingBuf<MapData>,
    mut signals: Signals,
    args: &RunArgs,
    pipeline: &mut Pipeline,
    loaded: &mut kernel::Loaded,
    mut reloader: Reloader,
) -> Result<(), RunError> {
    // SAFETY: the ring buffer owns its map fd, which stays open and unchanged for as long as
    // the `AsyncFd` owns the ring buffer.
    let mut ring = unsafe { AsyncFd::register(events) }.map_err(|e| RunError::Io {
        what: "polling the event ring buffer",
        source: e.into(),
    })?;
    let mut tick = tokio::time::interval(Duration::from_millis(args.drain_interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut slow = tokio::time::interval(SLOW_TICK);
    slow.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            ready = ring.readable_mut() => {
                let mut guard = ready.map_err(io_err("polling the event ring buffer"))?;
                pipeline.drain(guard.get_inner_mut());
                guard.clear_ready();
            }
            _ = tick.tick() => pipeline.drain(ring.get_mut()),
            _ = slow.tick() => {
                pipeline.drain(ring.get_mut());
                if reloader.file_changed() {
                    reloader.reload(pipeline, loaded, "file changed");
                }
                reloader.refresh_exemptions(pipeline, loaded);
                pipeline.kernel_counters(&loaded.kernel_counters()?);
                pipeline.sync_in_background();
            }
            _ = signals.hup.recv() => {
                reloader.reload(pipeline, loaded, "SIGHUP");
                reloader.refresh_exemptions(pipeline, loaded);
            }
            _ = signals.int.recv() => break,
            _ = signals.term.recv() => break,
        }
    }
    pipeline.drain(ring.get_mut());
    pipeline.kernel_counters(&loaded.kernel_counters()?);
    Ok(())
}
