//! A gRPC client of the daemon, over its unix socket or TLS (`sensor tail`, `sensor status`).

use std::{io, path::PathBuf};

use hyper_util::rt::TokioIo;
use sensor_proto::v1::sensor_client::SensorClient;
use tonic::transport::{Channel, Endpoint};

use crate::cmd::ClientTls;

/// Connect to `server`: a unix socket path (`unix:PATH` or `/PATH`) or `https://HOST:PORT`.
/// The error is one line, for the user.
pub async fn connect(server: &str, tls_args: &ClientTls) -> Result<SensorClient<Channel>, String> {
    Ok(SensorClient::new(channel(server, tls_args).await?))
}

/// As [`channel`], the error naming the server and suggesting the daemon may not run (for
/// one-shot commands: `sensor status`, `sensor health`).
pub async fn daemon_channel(server: &str, tls_args: &ClientTls) -> Result<Channel, String> {
    channel(server, tls_args).await.map_err(|reason| {
        format!("cannot connect to the sensor at {server}: {reason} (is the daemon running?)")
    })
}

/// A channel to `server` (as [`connect`]), for any of the daemon's services (health too).
pub async fn channel(server: &str, tls_args: &ClientTls) -> Result<Channel, String> {
    let channel = if server.starts_with("https://") {
        let mut tls = tonic::transport::ClientTlsConfig::new();
        if let Some(ca) = &tls_args.tls_ca {
            let pem = std::fs::read(ca).map_err(|e| format!("{}: {e}", ca.display()))?;
            tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(pem));
        }
        if let (Some(cert), Some(key)) = (&tls_args.tls_client_cert, &tls_args.tls_client_key) {
            let c = std::fs::read(cert).map_err(|e| format!("{}: {e}", cert.display()))?;
            let k = std::fs::read(key).map_err(|e| format!("{}: {e}", key.display()))?;
            tls = tls.identity(tonic::transport::Identity::from_pem(c, k));
        }
        Endpoint::from_shared(server.to_owned())
            .map_err(|e| e.to_string())?
            .tls_config(tls)
            .map_err(|e| e.to_string())?
            .connect()
            .await
            .map_err(|e| crate::error_chain(&e))?
    } else {
        let path = PathBuf::from(server.strip_prefix("unix:").unwrap_or(server));
        if !path.is_absolute() {
            return Err(format!(
                "'{server}': expected a unix socket path or https://HOST:PORT"
            ));
        }
        Endpoint::from_static("http://sensor.local")
            .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
                let path = path.clone();
                async move {
                    Ok::<_, io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?))
                }
            }))
            .await
            .map_err(|e| crate::error_chain(&e))?
    };
    Ok(channel)
}
