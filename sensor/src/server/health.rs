//! Readiness of the daemon, and the `grpc.health.v1` statuses and `sensor health` probe that
//! report it.
//!
//! Liveness is the overall service `""`: `SERVING` while the API server answers. Readiness is
//! the service `sensor.v1.Sensor`: `SERVING` only once the programs are attached and, on
//! Kubernetes, the pod cache has its first complete list; `NOT_SERVING` again from the start of
//! a shutdown (SIGTERM), so a DaemonSet's readiness probe takes the pod out before it stops.
//! The HTTP `/readyz` of the metrics listener answers from the same state.

use std::{
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use sensor_proto::v1::sensor_server::SensorServer;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, server::NamedService as _};
use tonic_health::pb::{
    HealthCheckRequest, HealthCheckResponse,
    health_check_response::ServingStatus,
    health_server::{Health, HealthServer},
};

use crate::{attribution::pods::WatcherStats, server::api::Service};

/// The gRPC service name whose health is the daemon's readiness.
pub const READY_SERVICE: &str = <SensorServer<Service>>::NAME;

/// How often a health `Watch` stream looks at [`Readiness`].
const WATCH_INTERVAL: Duration = Duration::from_millis(100);

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

/// `grpc.health.v1.Health` answered from [`Readiness`] at the time of each call (no cached
/// status that could lag behind it). `Watch` streams follow it and end at shutdown, so they
/// never hold up the server's graceful stop.
#[derive(Clone)]
pub struct HealthService {
    readiness: Arc<Readiness>,
}

impl HealthService {
    pub fn server(readiness: Arc<Readiness>) -> HealthServer<Self> {
        HealthServer::new(Self { readiness })
    }
}

/// The status of `service`: `""` (liveness) serves until shutdown, [`READY_SERVICE`] while
/// ready; any other name is unknown.
fn status_of(readiness: &Readiness, service: &str) -> Result<ServingStatus, Status> {
    let serving = match service {
        "" => !readiness.is_stopping(),
        READY_SERVICE => readiness.is_ready(),
        other => return Err(Status::not_found(format!("unknown service '{other}'"))),
    };
    Ok(if serving {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    })
}

fn response(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse {
        status: status as i32,
    }
}

#[tonic::async_trait]
impl Health for HealthService {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let status = status_of(&self.readiness, &request.get_ref().service)?;
        Ok(Response::new(response(status)))
    }

    type WatchStream = ReceiverStream<Result<HealthCheckResponse, Status>>;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let service = request.into_inner().service;
        let mut last = status_of(&self.readiness, &service)?;
        let readiness = Arc::clone(&self.readiness);
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            if tx.send(Ok(response(last))).await.is_err() {
                return;
            }
            let mut tick = tokio::time::interval(WATCH_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = tx.closed() => return,
                }
                let now = status_of(&readiness, &service).unwrap_or(ServingStatus::NotServing);
                if now != last {
                    last = now;
                    if tx.send(Ok(response(now))).await.is_err() {
                        return;
                    }
                }
                if readiness.is_stopping() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// `sensor health`: ask the daemon's `grpc.health.v1` service; exit 0 when the service is
/// `SERVING`, 1 otherwise (for exec probes).
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
    fn liveness_lasts_until_shutdown_and_readiness_follows_the_state() {
        assert_eq!(READY_SERVICE, "sensor.v1.Sensor");
        let r = Readiness::default();
        let status = |s| status_of(&r, s).map_err(|e| e.code());
        assert_eq!(status(""), Ok(ServingStatus::Serving));
        assert_eq!(status(READY_SERVICE), Ok(ServingStatus::NotServing));
        r.set_attached();
        r.set_pods(None);
        assert_eq!(status(READY_SERVICE), Ok(ServingStatus::Serving));
        assert_eq!(status("other"), Err(tonic::Code::NotFound));
        r.set_stopping();
        assert_eq!(status(""), Ok(ServingStatus::NotServing));
        assert_eq!(status(READY_SERVICE), Ok(ServingStatus::NotServing));
    }
}
