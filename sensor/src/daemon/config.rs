//! `sensor run`'s configuration: the flags as given ([`Flags`], filled by `cmd::run`), checked
//! and resolved into a [`RunConfig`] before anything touches the kernel. Every error here is a
//! usage error (exit 2, nothing attached).

use std::{
    io,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use sensor_common::Action;

use crate::{
    attribution::cgroups::cgroup2_root,
    event::proto::Origin,
    kernel::{
        TierChoice, pins,
        scope::{ScopeError, ScopeRoot},
    },
    policy::{self, ActiveRules},
    server::api::{Listen, TcpTls},
    sinks::{
        export::{self, ExportConfig, ExportFlags},
        journal::JournalConfig,
    },
};

/// The flags of `sensor run`, as given.
#[derive(Debug, Clone)]
pub struct Flags {
    pub policy: Option<PathBuf>,
    pub mode: Option<Action>,
    pub scope_cgroups: Vec<PathBuf>,
    pub socket: PathBuf,
    pub listen_tcp: Option<SocketAddr>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_client_ca: Option<PathBuf>,
    pub pin_dir: Option<PathBuf>,
    pub node_name: Option<String>,
    pub cluster_name: Option<String>,
    pub journal_dir: PathBuf,
    pub journal_max_bytes: u64,
    pub journal_segment_bytes: u64,
    pub journal_max_age: Option<Duration>,
    pub stdout_events: bool,
    pub export: ExportFlags,
    pub drain_interval_ms: u64,
    pub wakeup_bytes: u64,
    pub subscriber_queue: usize,
    pub max_streams: usize,
    pub kubeconfig: Option<PathBuf>,
    pub enrichment_wait_ms: u64,
    pub enrichment_queue: usize,
    pub tier: TierChoice,
    pub metrics_addr: Option<SocketAddr>,
    pub proc_root: PathBuf,
}

/// The cgroup the sensor makes for itself, below the cgroup2 mount, when it is given no scope
/// on a host that is not a Kubernetes node.
pub const OWN_SCOPE: &str = "sensor-protected";

/// The sensor's own scope cgroup while it runs: removed when dropped, if empty (a cgroup with
/// processes in it stays, and says so).
pub struct OwnScope(pub PathBuf);

impl Drop for OwnScope {
    fn drop(&mut self) {
        match std::fs::remove_dir(&self.0) {
            Ok(()) => {
                tracing::info!(scope = %self.0.display(), "removed the sensor's own scope cgroup")
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::info!(scope = %self.0.display(), error = %e, "the sensor's own scope cgroup stays (processes are still in it)")
            }
        }
    }
}

/// Everything `sensor run` needs, validated.
pub struct RunConfig {
    pub rules: ActiveRules,
    /// The `--policy` file (reloaded on change and SIGHUP).
    pub policy_file: Option<PathBuf>,
    pub scopes: Vec<ScopeRoot>,
    pub listen: Listen,
    pub pin_dir: Option<PathBuf>,
    pub node: String,
    /// `--cluster-name` (empty when not given).
    pub cluster: String,
    pub exports: Vec<ExportConfig>,
    pub journal: JournalConfig,
    pub drain_interval: Duration,
    pub wakeup_bytes: u64,
    pub subscriber_queue: usize,
    /// Event streams served at once at most (more are refused, `ResourceExhausted`).
    pub max_streams: usize,
    pub kubeconfig: Option<PathBuf>,
    pub enrichment_wait: Duration,
    pub enrichment_queue: usize,
    pub tier: TierChoice,
    pub metrics_addr: Option<SocketAddr>,
    pub proc_root: PathBuf,
    /// The scope cgroup the daemon made itself, if it did.
    pub own_scope: Option<OwnScope>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Scope(#[from] ScopeError),
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Policy(Vec<sensor_policy::PolicyError>),
    #[error(transparent)]
    PinDir(#[from] pins::PinDirError),
    #[error(transparent)]
    Tracefs(#[from] crate::kernel::tracefs::TracefsError),
    #[error(transparent)]
    Programs(#[from] crate::kernel::ProgramsError),
    #[error("journal {dir}: {source}")]
    Journal {
        dir: PathBuf,
        #[source]
        source: crate::sinks::journal::JournalError,
    },
    #[error(transparent)]
    Api(#[from] crate::server::api::ApiError),
    #[error(transparent)]
    Pods(#[from] crate::attribution::pods::PodsError),
    #[error(transparent)]
    Metrics(#[from] crate::server::metrics::MetricsError),
    #[error(transparent)]
    Export(#[from] export::ExportError),
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: io::Error,
    },
}

impl RunError {
    /// Bad input (exit 2, nothing attached), as opposed to a runtime failure (exit 1).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            Self::Usage(_) | Self::Scope(_) | Self::Policy(_) | Self::PinDir(_)
        )
    }
}

impl RunConfig {
    /// Check and resolve the flags: the policy (a bad file attaches nothing), the scope roots,
    /// the listeners, the pin directory, the exporters.
    pub fn validate(flags: Flags) -> Result<Self, RunError> {
        let rules = match &flags.policy {
            Some(path) => policy::from_file(path).map_err(RunError::Policy)?,
            None => policy::from_default(flags.mode),
        };
        let mut roots: Vec<PathBuf> = flags
            .scope_cgroups
            .iter()
            .chain(&rules.scope_cgroups)
            .cloned()
            .collect();
        if roots.is_empty() {
            // No cgroups given: every pod, at the kubelet's pod parent cgroup (on a node).
            roots.extend(kubepods_root());
        }
        let mut scopes = roots
            .iter()
            .map(|p| ScopeRoot::open(p))
            .collect::<Result<Vec<_>, _>>()?;
        // Neither: a plain host. Protect a cgroup of our own (`sensor exec` runs commands in it).
        let own_scope = if scopes.is_empty() {
            let (scope, guard) = own_scope()?;
            scopes.push(scope);
            guard
        } else {
            None
        };
        let listen = listen_config(&flags)?;
        if let Some(dir) = &flags.pin_dir {
            pins::check(dir)?;
        }
        let node = node_name(flags.node_name.as_deref());
        let cluster = flags.cluster_name.clone().unwrap_or_default();
        let exports = export::configs(
            &flags.export,
            &flags.journal_dir,
            &Origin::new(&node, &cluster),
            flags.stdout_events,
        )
        .map_err(RunError::Usage)?;
        Ok(Self {
            rules,
            policy_file: flags.policy,
            scopes,
            listen,
            pin_dir: flags.pin_dir,
            node,
            cluster,
            exports,
            journal: JournalConfig {
                dir: flags.journal_dir,
                segment_bytes: flags.journal_segment_bytes,
                max_total_bytes: flags.journal_max_bytes,
                max_age: flags.journal_max_age,
            },
            drain_interval: Duration::from_millis(flags.drain_interval_ms),
            wakeup_bytes: flags.wakeup_bytes,
            subscriber_queue: flags.subscriber_queue,
            max_streams: flags.max_streams,
            kubeconfig: flags.kubeconfig,
            enrichment_wait: Duration::from_millis(flags.enrichment_wait_ms),
            enrichment_queue: flags.enrichment_queue,
            tier: flags.tier,
            metrics_addr: flags.metrics_addr,
            proc_root: flags.proc_root,
            own_scope,
        })
    }
}

/// The sensor's own scope cgroup, created when missing (the guard removes it again).
fn own_scope() -> Result<(ScopeRoot, Option<OwnScope>), RunError> {
    let root = cgroup2_root().map_err(|e| {
        RunError::Usage(format!(
            "no scope: give --scope-cgroup or a policy with scope.cgroups ({e})"
        ))
    })?;
    let path = root.join(OWN_SCOPE);
    let guard = match std::fs::create_dir(&path) {
        // Ours by name, also when an earlier run left it (with processes in it).
        Ok(()) => Some(OwnScope(path.clone())),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Some(OwnScope(path.clone())),
        Err(e) => {
            return Err(RunError::Usage(format!(
                "no scope given, and creating {} failed ({e}): give --scope-cgroup PATH",
                path.display()
            )));
        }
    };
    let mut scope = ScopeRoot::open(&path)?;
    scope.created = true;
    Ok((scope, guard))
}

fn listen_config(flags: &Flags) -> Result<Listen, RunError> {
    let tcp = match (flags.listen_tcp, &flags.tls_cert, &flags.tls_key) {
        (None, None, None) if flags.tls_client_ca.is_none() => None,
        (Some(addr), Some(cert), Some(key)) => Some(TcpTls {
            addr,
            cert: cert.clone(),
            key: key.clone(),
            client_ca: flags.tls_client_ca.clone(),
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
        socket: flags.socket.clone(),
        tcp,
    })
}

fn node_name(given: Option<&str>) -> String {
    if let Some(n) = given {
        return n.to_owned();
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}

/// The kubelet's parent cgroup of all pods (systemd or cgroupfs driver), if this is a node.
fn kubepods_root() -> Option<PathBuf> {
    let root = cgroup2_root().ok()?;
    ["kubepods.slice", "kubepods"]
        .iter()
        .map(|d| root.join(d))
        .find(|p| Path::is_dir(p))
}
