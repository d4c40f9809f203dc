//! `tracing` to stderr (text or JSON); `log` records (aya uses `log`) are bridged in.

use tracing_subscriber::{EnvFilter, fmt};

use crate::cmd::LogFormat;

pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_env("SENSOR_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    // `try_init` also installs the `log` -> `tracing` bridge.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
