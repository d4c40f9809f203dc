//! `sensor health`: ask the daemon's gRPC health service (exit 0 when SERVING, else 1), for
//! exec probes.

use std::{process::ExitCode, time::Duration};

use clap::Args;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use super::{DaemonAddr, EXIT_FAILURE};

#[derive(Debug, Args)]
pub struct HealthArgs {
    #[command(flatten)]
    pub daemon: DaemonAddr,
    /// Service to check: `` (empty, the default) is liveness, `sensor.v1.Sensor` is readiness
    /// (programs attached and, on Kubernetes, the pod cache synced).
    #[arg(long, value_name = "NAME", default_value = "")]
    pub service: String,
    /// Give up (exit 1) after this long.
    #[arg(long, value_name = "MS", default_value_t = 3000)]
    pub timeout_ms: u64,
}

pub fn main(args: HealthArgs) -> ExitCode {
    match check(&args) {
        Ok(status) => {
            println!("{}", status.as_str_name());
            if status == ServingStatus::Serving {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_FAILURE)
            }
        }
        Err(msg) => {
            eprintln!("sensor health: error: {msg}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn check(args: &HealthArgs) -> Result<ServingStatus, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let timeout = Duration::from_millis(args.timeout_ms);
    runtime.block_on(async {
        let call = async {
            let channel =
                super::client::daemon_channel(&args.daemon.server, &args.daemon.tls).await?;
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
