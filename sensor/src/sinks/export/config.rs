//! What the export flags ask for: destinations, format, rotation, flood control, validated
//! into [`ExportConfig`]s before anything starts.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use sensor_proto::v1 as pb;

use super::{DEFAULT_MAX_BYTES, DEFAULT_MAX_FILES, ocsf};
use crate::event::json::to_json;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Stdout,
    File(PathBuf),
}

impl Destination {
    /// `stdout` or `file:PATH` (the `--export` flag).
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "stdout" => Ok(Self::Stdout),
            _ => match s.strip_prefix("file:") {
                Some("") => Err("file: needs a path (file:/var/log/sensor/events.jsonl)".into()),
                Some(path) => Ok(Self::File(PathBuf::from(path))),
                None => Err(format!("'{s}': expected stdout or file:PATH")),
            },
        }
    }

    /// As given to `--export`.
    pub(super) fn spec(&self) -> String {
        match self {
            Self::Stdout => "stdout".into(),
            Self::File(p) => format!("file:{}", p.display()),
        }
    }

    /// The state file name of this destination in the state directory.
    pub(super) fn state_name(&self) -> String {
        match self {
            Self::Stdout => "stdout.cursor".into(),
            Self::File(p) => format!("file{}.cursor", p.display()).replace('/', "_"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One event per line, the field names of the event stream (docs/events.md).
    Json,
    /// One OCSF 1.5.0 object per line (docs/export.md).
    Ocsf,
}

impl Format {
    pub fn line(self, event: &pb::Event) -> String {
        match self {
            Self::Json => to_json(event),
            Self::Ocsf => ocsf::to_ocsf(event).to_string(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ExportConfig {
    pub destination: Destination,
    pub format: Format,
    /// Rotate the file when it reaches this size.
    pub max_bytes: u64,
    /// Files kept: the active one and `max_files - 1` rotated ones.
    pub max_files: u32,
    /// Flood-control window; zero turns folding off.
    pub fold_window: Duration,
    /// Where the cursor is kept.
    pub state_dir: PathBuf,
    /// Whether the cursor is kept across restarts (`--export`); `--stdout-events` starts with
    /// what comes next at every start.
    pub persist: bool,
    /// Node name in loss records.
    pub node: String,
}

/// The export flags of `sensor run`, as given.
#[derive(Debug, Clone)]
pub struct ExportFlags {
    pub destinations: Vec<Destination>,
    pub format: Format,
    pub max_bytes: u64,
    pub max_files: u32,
    pub fold_window: Duration,
    pub state_dir: Option<PathBuf>,
}

/// The exporters `sensor run` flags ask for, validated (one-line messages naming the flag).
pub fn configs(
    args: &ExportFlags,
    journal_dir: &Path,
    node: &str,
    stdout_events: bool,
) -> Result<Vec<ExportConfig>, String> {
    let state_dir = args.state_dir.clone().unwrap_or_else(|| {
        journal_dir
            .parent()
            .unwrap_or_else(|| Path::new("/"))
            .join("export")
    });
    let mut configs: Vec<ExportConfig> = Vec::new();
    for destination in &args.destinations {
        if configs.iter().any(|c| &c.destination == destination) {
            return Err(format!("--export {}: given twice", destination.spec()));
        }
        match destination {
            Destination::Stdout if stdout_events => {
                return Err(
                    "--export stdout conflicts with --stdout-events (both write events to stdout)"
                        .into(),
                );
            }
            Destination::Stdout => {}
            Destination::File(path) => {
                let dir = match path.parent() {
                    Some(d) if !d.as_os_str().is_empty() => d,
                    _ => Path::new("."),
                };
                if !dir.is_dir() {
                    return Err(format!(
                        "--export file:{}: directory {} does not exist",
                        path.display(),
                        dir.display()
                    ));
                }
                if path.is_dir() {
                    return Err(format!("--export file:{}: is a directory", path.display()));
                }
            }
        }
        configs.push(ExportConfig {
            destination: destination.clone(),
            format: args.format,
            max_bytes: args.max_bytes,
            max_files: args.max_files,
            fold_window: args.fold_window,
            state_dir: state_dir.clone(),
            node: node.to_owned(),
            persist: true,
        });
    }
    if stdout_events {
        configs.push(stdout_events_config(node, &state_dir));
    }
    Ok(configs)
}

/// `--stdout-events`: every event, as the JSON line of the event stream, on stdout from the
/// start of this run; no flood control, no cursor kept.
fn stdout_events_config(node: &str, state_dir: &Path) -> ExportConfig {
    ExportConfig {
        destination: Destination::Stdout,
        format: Format::Json,
        max_bytes: DEFAULT_MAX_BYTES,
        max_files: DEFAULT_MAX_FILES,
        fold_window: Duration::ZERO,
        state_dir: state_dir.to_owned(),
        node: node.to_owned(),
        persist: false,
    }
}
