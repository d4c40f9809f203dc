//! Readiness of the daemon, and the `grpc.health.v1` statuses and `sensor health` probe that
//! report it.
//!
//! Liveness is the overall service `""`: `SERVING` while the API server answers. Readiness is
//! the service `sensor.v1.Sensor`: `SERVING` only once the programs are attached and, on
//! Kubernetes, the pod cache has its first complete list; `NOT_SERVING` again from the start of
//! a shutdown (SIGTERM), so a DaemonSet's readiness probe takes the pod out before it stops.
//! The HTTP `/readyz` of the metrics listener answers from the same state.

use std::{
    process::ExitCode,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use sensor_proto::v1::sensor_server::SensorServer;
use tonic::server::NamedService as _;
use tonic_health::{
    ServingStatus,
    pb::{HealthCheckRequest, health_check_response, health_client::HealthClient},
    server::HealthReporter,
};

use crate::{api::Service, cli::HealthArgs, pods::WatcherStats};

/// The gRPC service name whose health is the daemon's readiness.
pub const READY_SERVICE: &str = <SensorServer<Service>>::NAME;

/// How often the gRPC health statuses follow [`Readiness`].
const FOLLOW_INTERVAL: Duration = Duration::from_millis(100);

/// What the daemon is waiting for before it is ready.
#[derive(Debug, Default)]
pub struct Readiness {
    attached: AtomicBool,
    /// Set once it is known whether there is a pod watcher: `None` in host mode.
    pods: OnceLock<Option<Arc<WatcherStats>>>,
    stopping: AtomicBool,
}

impl Readiness {
    /// The programs are loaded and attached.
    pub fn set_attached(&self) {
        self.attached.store(true, Ordering::Release);
    }

    /// The pod watcher whose first sync readiness waits for (`None`: host mode, no watcher).
    pub fn set_pods(&self, watcher: Option<Arc<WatcherStats>>) {
        let _ = self.pods.set(watcher);
    }

    /// A shutdown started: not ready any more.
    pub fn set_stopping(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    /// `Ok` when ready, else what it waits for.
    pub fn check(&self) -> Result<(), &'static str> {
        if self.stopping.load(Ordering::Acquire) {
            return Err("shutting down");
        }
        if !self.attached.load(Ordering::Acquire) {
            return Err("programs not attached yet");
        }
        match self.pods.get() {
            None => Err("pod watcher not started yet"),
            Some(Some(w)) if !w.synced.load(Ordering::Relaxed) => Err("pod cache not synced yet"),
            Some(_) => Ok(()),
        }
    }

    pub fn is_ready(&self) -> bool {
        self.check().is_ok()
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }
}

/// Keep the gRPC health statuses in step with `readiness` until it is stopping: the readiness
/// service follows [`Readiness::check`]; at shutdown both it and the overall status go
/// `NOT_SERVING`.
pub async fn follow(readiness: Arc<Readiness>, reporter: HealthReporter) {
    reporter
        .set_service_status(READY_SERVICE, ServingStatus::NotServing)
        .await;
    let mut ready = false;
    let mut tick = tokio::time::interval(FOLLOW_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        if readiness.is_stopping() {
            reporter
                .set_service_status(READY_SERVICE, ServingStatus::NotServing)
                .await;
            reporter
                .set_service_status("", ServingStatus::NotServing)
                .await;
            return;
        }
        let now = readiness.is_ready();
        if now != ready {
            ready = now;
            let status = if now {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            reporter.set_service_status(READY_SERVICE, status).await;
            tracing::info!(ready, "readiness changed");
        }
    }
}

/// `sensor health`: ask the daemon's `grpc.health.v1` service; exit 0 when the service is
/// `SERVING`, 1 otherwise (for exec probes).
pub fn main(args: HealthArgs) -> ExitCode {
    match check(&args) {
        Ok(status) => {
            println!("{}", status.as_str_name());
            if status == health_check_response::ServingStatus::Serving {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(crate::cli::EXIT_FAILURE)
            }
        }
        Err(msg) => {
            eprintln!("sensor health: error: {msg}");
            ExitCode::from(crate::cli::EXIT_FAILURE)
        }
    }
}

fn check(args: &HealthArgs) -> Result<health_check_response::ServingStatus, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let timeout = Duration::from_millis(args.timeout_ms);
    runtime.block_on(async {
        let call = async {
            let channel = crate::client::daemon_channel(&args.server, &args.tls).await?;
            let response = HealthClient::new(channel)
                .check(HealthCheckRequest {
                    service: args.service.clone(),
                })
                .await
                .map_err(|s| format!("{}: {}", s.code(), s.message()))?;
            Ok(response.into_inner().status())
        };
        tokio::time::timeout(timeout, call)
            .await
            .map_err(|_| format!("no answer within {} ms", args.timeout_ms))?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_needs_attachment_and_a_synced_pod_cache_and_ends_at_shutdown() {
        let r = Readiness::default();
        assert_eq!(r.check(), Err("programs not attached yet"));
        r.set_attached();
        assert_eq!(r.check(), Err("pod watcher not started yet"));
        let stats = Arc::new(WatcherStats::default());
        r.set_pods(Some(Arc::clone(&stats)));
        assert_eq!(r.check(), Err("pod cache not synced yet"));
        stats.synced.store(true, Ordering::Relaxed);
        assert_eq!(r.check(), Ok(()));
        r.set_stopping();
        assert_eq!(r.check(), Err("shutting down"));

        let host = Readiness::default();
        host.set_attached();
        host.set_pods(None);
        assert!(host.is_ready());
    }

    #[test]
    fn the_ready_service_is_the_sensor_api() {
        assert_eq!(READY_SERVICE, "sensor.v1.Sensor");
    }
}
