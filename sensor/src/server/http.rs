//! The plain-HTTP listener of `--metrics-addr`: `/metrics`, `/healthz`, `/readyz`.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{Router, http::StatusCode, http::header::CONTENT_TYPE, routing};

use super::metrics::{CONTENT_TYPE_TEXT, Metrics, MetricsError};

/// How long a shutdown waits for open scrapes.
const STOP_TIMEOUT: Duration = Duration::from_secs(2);

/// The HTTP listener; [`Server::stop`] ends it.
pub struct Server {
    pub addr: SocketAddr,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// Bind `addr` now (a bad address fails before anything is loaded) and serve on `runtime`.
pub fn start(
    runtime: &tokio::runtime::Runtime,
    addr: SocketAddr,
    metrics: Arc<Metrics>,
) -> Result<Server, MetricsError> {
    let bind_err = |source| MetricsError::Bind { addr, source };
    let std_listener = std::net::TcpListener::bind(addr).map_err(bind_err)?;
    std_listener.set_nonblocking(true).map_err(bind_err)?;
    let bound = std_listener.local_addr().map_err(bind_err)?;
    let listener = {
        let _ctx = runtime.enter();
        tokio::net::TcpListener::from_std(std_listener).map_err(bind_err)?
    };
    let readiness = Arc::clone(metrics.readiness());
    let degraded = Arc::clone(&metrics);
    let app = Router::new()
        .route(
            "/metrics",
            routing::get(move || {
                let metrics = Arc::clone(&metrics);
                async move { ([(CONTENT_TYPE, CONTENT_TYPE_TEXT)], metrics.render()) }
            }),
        )
        .route("/healthz", routing::get(|| async { "ok\n" }))
        .route(
            "/readyz",
            routing::get(move || {
                let readiness = Arc::clone(&readiness);
                let degraded = degraded.degraded();
                async move {
                    match (readiness.check(), degraded) {
                        // Ready: enforcement does not depend on the journal.
                        (Ok(()), Some(why)) => {
                            (StatusCode::OK, format!("ready\ndegraded: {why}\n"))
                        }
                        (Ok(()), None) => (StatusCode::OK, "ready\n".to_owned()),
                        (Err(why), _) => (
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!("not ready: {why}\n"),
                        ),
                    }
                }
            }),
        );
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let task = runtime.spawn(async move {
        let shutdown = async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        if let Err(err) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::warn!(error = %err, "metrics listener failed");
        }
    });
    tracing::info!(addr = %bound, "metrics listening");
    Ok(Server {
        addr: bound,
        stop,
        task,
    })
}

impl Server {
    /// Stop accepting, let open scrapes finish (bounded).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        if tokio::time::timeout(STOP_TIMEOUT, self.task).await.is_err() {
            tracing::warn!("metrics listener did not stop within {STOP_TIMEOUT:?}");
        }
    }
}
