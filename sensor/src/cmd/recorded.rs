//! What the node recorded, for the commands that look back at it (`sensor policy test`,
//! `sensor advise`): the daemon's journal through its replay API, or an exported JSON-lines
//! file (`--export file:PATH`, `sensor tail -o json`, `--stdout-events`).

use std::{
    io::{self, BufRead as _},
    path::Path,
};

use sensor_proto::v1 as pb;

use super::{DaemonAddr, EXIT_FAILURE, EXIT_USAGE};
use crate::event::json::from_json;

/// The stored events at or after `since` (Unix ns): from `file` when given, else from the
/// daemon. An error comes with its exit code: a missing file or a bad line (`FILE:LINE: what
/// is wrong`) is a usage error, a daemon that cannot be reached a failure.
pub fn events(
    file: Option<&Path>,
    daemon: &DaemonAddr,
    since: i64,
) -> Result<Vec<pb::Event>, (String, u8)> {
    match file {
        Some(path) => read_file(path, since).map_err(|m| (m, EXIT_USAGE)),
        None => read_journal(daemon, since).map_err(|m| (m, EXIT_FAILURE)),
    }
}

/// Events from an exported JSON file (`FILE:LINE: what is wrong` on a bad line).
fn read_file(path: &Path, since: i64) -> Result<Vec<pb::Event>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut events = Vec::new();
    for (i, line) in io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| format!("{}:{}: {e}", path.display(), i + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let event = from_json(&line).map_err(|e| format!("{}:{}: {e}", path.display(), i + 1))?;
        if event.time_unix_ns >= since {
            events.push(event);
        }
    }
    Ok(events)
}

/// Events from the daemon's journal since `since` (the stored ones, no following).
fn read_journal(daemon: &DaemonAddr, since: i64) -> Result<Vec<pb::Event>, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let mut client = super::client::connect(&daemon.server, &daemon.tls)
            .await
            .map_err(|e| format!("cannot reach the sensor at {}: {e}", daemon.server))?;
        let mut stream = client
            .get_events(pb::GetEventsRequest {
                start: Some(pb::get_events_request::Start::SinceUnixNs(since)),
                follow: false,
                filter: None,
                limit: 0,
            })
            .await
            .map_err(|s| s.message().to_owned())?
            .into_inner();
        let mut events = Vec::new();
        while let Some(event) = stream.message().await.map_err(|s| s.message().to_owned())? {
            events.push(event);
        }
        Ok(events)
    })
}
