//! The Kubernetes client set-up and the watcher that feeds the [`PodIndex`].

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client, Config,
    config::{InClusterError, KubeConfigOptions, Kubeconfig, KubeconfigError},
    runtime::watcher::{self, Event},
};

use super::index::{Parsed, PodIndex, parse};

/// First retry delay after a failed list or watch; doubles up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// At most one warning per this interval while the API server cannot be reached (the others go
/// to debug, and are counted in the next warning).
const WARN_INTERVAL: Duration = Duration::from_secs(60);

#[derive(Clone, Debug)]
pub struct WatchConfig {
    /// Only pods with `spec.nodeName` equal to this are watched.
    pub node_name: String,
    /// An explicit kubeconfig; otherwise `$KUBECONFIG`, the in-cluster service account, then
    /// `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum PodsError {
    #[error("kubeconfig {origin}: {source}")]
    Kubeconfig {
        origin: String,
        #[source]
        source: KubeconfigError,
    },
    #[error("in-cluster Kubernetes config (KUBERNETES_SERVICE_HOST is set): {source}")]
    InCluster {
        #[source]
        source: InClusterError,
    },
    #[error("Kubernetes client: {source}")]
    Client {
        #[source]
        source: kube::Error,
    },
}

/// Counters of the watcher, shared with whoever reports them.
#[derive(Debug, Default)]
pub struct WatcherStats {
    /// Pod events applied to the index (each listed pod counts as one).
    pub events: AtomicU64,
    /// Complete lists after the first (after `410 Gone`, or when a watch could not resume).
    pub relists: AtomicU64,
    /// Failed list or watch requests, and error events other than a first `410 Gone`.
    pub errors: AtomicU64,
    /// Set once the first list is in the index; stays set while reconnecting (the index keeps
    /// serving the last known pods).
    pub synced: AtomicBool,
    /// Set from a failure until the next successful list or event.
    pub failing: AtomicBool,
}

impl WatcherStats {
    /// Every counter by its status-API name.
    pub fn named(&self) -> [(&'static str, u64); 5] {
        [
            ("pod_watch_events", self.events.load(Ordering::Relaxed)),
            ("pod_watch_relists", self.relists.load(Ordering::Relaxed)),
            ("pod_watch_errors", self.errors.load(Ordering::Relaxed)),
            (
                "pod_watch_synced",
                self.synced.load(Ordering::Relaxed).into(),
            ),
            (
                "pod_watch_failing",
                self.failing.load(Ordering::Relaxed).into(),
            ),
        ]
    }
}

/// Where the client configuration comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
enum ConfigSource {
    /// An explicit path, or `~/.kube/config`.
    File(PathBuf),
    /// `$KUBECONFIG` (possibly a list of files, merged).
    KubeconfigEnv,
    InCluster,
    /// Not a Kubernetes node as far as we can tell.
    Host,
}

/// The environment variables that decide the source.
#[derive(Debug, Default)]
struct Env {
    kubeconfig: Option<OsString>,
    service_host: Option<OsString>,
    home: Option<OsString>,
}

impl Env {
    fn from_process() -> Self {
        Self {
            kubeconfig: std::env::var_os("KUBECONFIG"),
            service_host: std::env::var_os("KUBERNETES_SERVICE_HOST"),
            home: std::env::var_os("HOME"),
        }
    }
}

/// The order: an explicit path; `$KUBECONFIG`; the in-cluster service account; `~/.kube/config`
/// if it exists. In-cluster comes before the home file (unlike `kube::Config::infer`) so that a
/// DaemonSet image with a stray kubeconfig still uses its service account.
fn config_source(cfg: &WatchConfig, env: &Env, is_file: impl Fn(&Path) -> bool) -> ConfigSource {
    let set = |v: &Option<OsString>| v.as_ref().is_some_and(|v| !v.is_empty());
    if let Some(path) = &cfg.kubeconfig {
        return ConfigSource::File(path.clone());
    }
    if env
        .kubeconfig
        .as_ref()
        .is_some_and(|v| std::env::split_paths(v).any(|p| !p.as_os_str().is_empty()))
    {
        return ConfigSource::KubeconfigEnv;
    }
    if set(&env.service_host) {
        return ConfigSource::InCluster;
    }
    if let Some(home) = env.home.as_ref().filter(|h| !h.is_empty()) {
        let path = Path::new(home).join(".kube").join("config");
        if is_file(&path) {
            return ConfigSource::File(path);
        }
    }
    ConfigSource::Host
}

async fn client_for(source: ConfigSource) -> Result<Option<Client>, PodsError> {
    let config = match &source {
        ConfigSource::Host => {
            tracing::info!(
                "no kubeconfig and not in a Kubernetes cluster: host mode, pods are not watched"
            );
            return Ok(None);
        }
        ConfigSource::File(path) => {
            let origin = || path.display().to_string();
            let kubeconfig =
                Kubeconfig::read_from(path).map_err(|source| PodsError::Kubeconfig {
                    origin: origin(),
                    source,
                })?;
            Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .map_err(|source| PodsError::Kubeconfig {
                    origin: origin(),
                    source,
                })?
        }
        ConfigSource::KubeconfigEnv => Config::from_kubeconfig(&KubeConfigOptions::default())
            .await
            .map_err(|source| PodsError::Kubeconfig {
                origin: "$KUBECONFIG".to_owned(),
                source,
            })?,
        ConfigSource::InCluster => {
            Config::incluster().map_err(|source| PodsError::InCluster { source })?
        }
    };
    tracing::info!(source = ?source, server = %config.cluster_url, "Kubernetes API client");
    Client::try_from(config)
        .map(Some)
        .map_err(|source| PodsError::Client { source })
}

/// A client for the API server, from (in this order) `cfg.kubeconfig`, `$KUBECONFIG`, the
/// in-cluster service account (`KUBERNETES_SERVICE_HOST`), `~/.kube/config`. With none of them
/// this is host mode: `Ok(None)` and one info log line. A source that is present but unusable is
/// an error.
pub async fn client_from_env(cfg: &WatchConfig) -> Result<Option<Client>, PodsError> {
    client_for(config_source(cfg, &Env::from_process(), Path::is_file)).await
}

/// Watch the pods of `cfg.node_name` (`fieldSelector=spec.nodeName=<node>`) and keep `index`
/// current until `shutdown` turns true (or its sender is dropped).
///
/// A list (served from the API server's cache, `resourceVersion=0`), then a watch from the
/// list's resource version with bookmarks; a watch that ends resumes from the last event or
/// bookmark; `410 Gone` relists, and the relisted pods replace the index's (missing ones are
/// deleted, with the grace period). A failing API server is counted, warned about at most once
/// a minute, and retried with a jittered exponential backoff (0.5 s to 30 s); the index keeps
/// serving what it last knew.
pub async fn run_watcher(
    client: Client,
    cfg: WatchConfig,
    index: PodIndex,
    stats: Arc<WatcherStats>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let api: Api<Pod> = Api::all(client);
    let mut wc = watcher::Config::default()
        .fields(&format!("spec.nodeName={}", cfg.node_name))
        .any_semantic();
    // A node's pods fit in one page, and a paginated list cannot be served from the cache.
    wc.page_size = None;
    let new_stream = || Box::pin(watcher::watcher(api.clone(), wc.clone()));
    let mut stream = new_stream();
    let mut lists = 0u64;
    // Pods of a list in progress: they replace the index's at once when it completes.
    let mut listing: Vec<Parsed> = Vec::new();
    let mut backoff = Backoff::default();
    let mut warn = WarnLimiter::default();
    // A 410 right after another, with no progress in between, is treated as a failure.
    let mut gone_pending = false;
    let mut purge = tokio::time::interval(
        index
            .deleted_grace()
            .clamp(Duration::from_secs(1), Duration::from_secs(60)),
    );
    purge.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::info!(node = %cfg.node_name, "watching pods");

    loop {
        let item = tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => break,
            _ = purge.tick() => {
                index.purge_expired();
                continue;
            }
            item = stream.next() => item,
        };
        let Some(item) = item else {
            // The watcher recovers by itself and does not end; should it, start over.
            stream = new_stream();
            continue;
        };
        let err = match item {
            Ok(event) => {
                let progress = !matches!(event, Event::Init);
                match event {
                    Event::Init => listing.clear(),
                    Event::InitApply(pod) => {
                        stats.events.fetch_add(1, Ordering::Relaxed);
                        listing.extend(parse(&pod));
                    }
                    Event::InitDone => {
                        index.replace_parsed(std::mem::take(&mut listing));
                        lists += 1;
                        if lists > 1 {
                            stats.relists.fetch_add(1, Ordering::Relaxed);
                        }
                        if !stats.synced.swap(true, Ordering::Relaxed) {
                            tracing::info!(pods = index.len(), "pod index synced");
                        }
                    }
                    Event::Apply(pod) => {
                        stats.events.fetch_add(1, Ordering::Relaxed);
                        index.apply(&pod);
                    }
                    Event::Delete(pod) => {
                        stats.events.fetch_add(1, Ordering::Relaxed);
                        index.delete(&pod);
                    }
                }
                if progress {
                    gone_pending = false;
                    backoff.reset();
                    if stats.failing.swap(false, Ordering::Relaxed) {
                        tracing::info!(failures = warn.recovered(), "pod watch recovered");
                    }
                }
                continue;
            }
            Err(err) => err,
        };
        if is_gone(&err) && !gone_pending {
            gone_pending = true;
            tracing::debug!(error = %err, "pod watch expired (410 Gone), relisting");
            if matches!(err, watcher::Error::WatchStartFailed(_)) {
                // The watcher would retry the same resource version: start over with a list.
                stream = new_stream();
            }
            continue;
        }
        stats.errors.fetch_add(1, Ordering::Relaxed);
        stats.failing.store(true, Ordering::Relaxed);
        warn.failed(&err);
        let delay = backoff.next_delay();
        tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => break,
            () = tokio::time::sleep(delay) => {}
        }
    }
    tracing::info!("pod watcher stopped");
}

fn is_gone(err: &watcher::Error) -> bool {
    match err {
        watcher::Error::WatchError(status) => status.code == 410,
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status)) => status.code == 410,
        _ => false,
    }
}

/// Exponential backoff with jitter (each delay is 50 to 100% of the nominal one), so that the
/// agents of many nodes do not reconnect in step after an API server outage.
#[derive(Debug, Default)]
struct Backoff {
    attempt: u32,
}

impl Backoff {
    fn next_delay(&mut self) -> Duration {
        let nominal = BACKOFF_MIN
            .saturating_mul(1 << self.attempt.min(16))
            .min(BACKOFF_MAX);
        self.attempt = self.attempt.saturating_add(1);
        use std::hash::BuildHasher;
        let r = std::hash::RandomState::new().hash_one(self.attempt) % 1000;
        nominal.mul_f64(0.5 + r as f64 / 2000.0)
    }

    fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[derive(Debug, Default)]
struct WarnLimiter {
    last: Option<Instant>,
    /// Failures logged at debug since the last warning.
    suppressed: u64,
    /// Failures since the last success.
    failures: u64,
}

impl WarnLimiter {
    fn failed(&mut self, err: &watcher::Error) {
        self.failures += 1;
        let now = Instant::now();
        if self
            .last
            .is_none_or(|t| now.duration_since(t) >= WARN_INTERVAL)
        {
            tracing::warn!(
                error = %err,
                failures = self.failures,
                suppressed = self.suppressed,
                "pod watch failing, retrying with backoff; pod lookups use the last known pods"
            );
            self.last = Some(now);
            self.suppressed = 0;
        } else {
            self.suppressed += 1;
            tracing::debug!(error = %err, "pod watch failed");
        }
    }

    /// The failures before this success (the warning interval keeps running, so that a
    /// flapping API server does not warn on every flap).
    fn recovered(&mut self) -> u64 {
        std::mem::take(&mut self.failures)
    }
}

#[cfg(test)]
#[path = "watch_tests.rs"]
mod tests;
