//! What the export flags ask for: destinations, format, rotation, flood control, validated
//! into [`ExportConfig`]s before anything starts.
//!
//! A destination is `stdout`, `file:PATH`, or a network receiver:
//! `syslog://HOST:PORT`, `syslog+tls://HOST:PORT`, `otlp://HOST:PORT`, `otlp+tls://HOST:PORT`,
//! each with options after `?` (`&`-separated `name=value`): `format`, `ca`, `cert`, `key`,
//! `server-name`, `headers` (OTLP), `facility` (syslog). Certificates and header files are read
//! at start, so a bad one is a start-up error naming the destination and the file.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use sensor_proto::v1 as pb;

use super::{DEFAULT_MAX_BYTES, DEFAULT_MAX_FILES, cef, ocsf, tls::TlsFiles};
use crate::event::{json::to_json, proto::Origin};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Stdout,
    File(PathBuf),
    /// RFC 5424 over TCP (RFC 6587 octet counting), or TLS.
    Syslog(Remote),
    /// OTLP logs over gRPC.
    Otlp(Remote),
}

/// A network destination: where, and its options.
#[derive(Debug, Clone)]
pub struct Remote {
    /// As given to `--export`, options included.
    pub spec: String,
    /// `syslog`, `syslog+tls`, `otlp` or `otlp+tls`.
    pub scheme: &'static str,
    pub host: String,
    pub port: u16,
    /// `None`: plain TCP (or h2c for OTLP).
    pub tls: Option<TlsOptions>,
    /// `format=`: overrides `--export-format` for this destination.
    pub format: Option<Format>,
    /// `headers=`: OTLP request metadata (`name: value` lines).
    pub headers: Option<PathBuf>,
    /// `facility=`: the syslog facility code (default `auth`, 4).
    pub facility: u8,
}

/// Two destinations are the same receiver whatever their options.
impl PartialEq for Remote {
    fn eq(&self, other: &Self) -> bool {
        (self.scheme, &self.host, self.port) == (other.scheme, &other.host, other.port)
    }
}
impl Eq for Remote {}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// `ca=`: PEM certificates to verify the receiver with (default: the system's roots).
    pub ca: Option<PathBuf>,
    /// `cert=` and `key=`: a client certificate (mutual TLS).
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// `server-name=`: the name the receiver's certificate must carry (default: HOST).
    pub server_name: Option<String>,
}

const SCHEMES: &str = "stdout, file:PATH, syslog://, syslog+tls://, otlp:// or otlp+tls://";

/// Syslog facilities by name (RFC 5424, table 1).
const FACILITIES: [(&str, u8); 20] = [
    ("kern", 0),
    ("user", 1),
    ("mail", 2),
    ("daemon", 3),
    ("auth", 4),
    ("syslog", 5),
    ("lpr", 6),
    ("news", 7),
    ("uucp", 8),
    ("cron", 9),
    ("authpriv", 10),
    ("ftp", 11),
    ("local0", 16),
    ("local1", 17),
    ("local2", 18),
    ("local3", 19),
    ("local4", 20),
    ("local5", 21),
    ("local6", 22),
    ("local7", 23),
];
const DEFAULT_FACILITY: u8 = 4;

impl Destination {
    /// One `--export` value.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s == "stdout" {
            return Ok(Self::Stdout);
        }
        if let Some(path) = s.strip_prefix("file:") {
            return match path {
                "" => Err("file: needs a path (file:/var/log/sensor/events.jsonl)".into()),
                path => Ok(Self::File(PathBuf::from(path))),
            };
        }
        let Some((scheme, rest)) = s.split_once("://") else {
            return Err(format!("'{s}': expected {SCHEMES}"));
        };
        let (scheme, tls) = match scheme {
            "syslog" => ("syslog", false),
            "syslog+tls" => ("syslog+tls", true),
            "otlp" => ("otlp", false),
            "otlp+tls" => ("otlp+tls", true),
            other => {
                return Err(format!(
                    "'{s}': unknown scheme '{other}' (expected {SCHEMES})"
                ));
            }
        };
        let remote = Remote::parse(s, scheme, tls, rest)?;
        Ok(if scheme.starts_with("otlp") {
            Self::Otlp(remote)
        } else {
            Self::Syslog(remote)
        })
    }

    /// As given to `--export`.
    pub fn spec(&self) -> String {
        match self {
            Self::Stdout => "stdout".into(),
            Self::File(p) => format!("file:{}", p.display()),
            Self::Syslog(r) | Self::Otlp(r) => r.spec.clone(),
        }
    }

    /// The destination's name in metrics and logs: the spec without its options.
    pub fn label(&self) -> String {
        match self {
            Self::Syslog(r) | Self::Otlp(r) => r.address(),
            _ => self.spec(),
        }
    }

    /// The state file name of this destination in the state directory (options left out:
    /// changing the format or a certificate keeps the cursor).
    pub(super) fn state_name(&self) -> String {
        match self {
            Self::Stdout => "stdout.cursor".into(),
            Self::File(p) => format!("file{}.cursor", p.display()).replace('/', "_"),
            Self::Syslog(r) | Self::Otlp(r) => {
                format!("{}_{}_{}.cursor", r.scheme, r.host, r.port).replace(['/', ':'], "_")
            }
        }
    }
}

impl Remote {
    fn parse(spec: &str, scheme: &'static str, tls: bool, rest: &str) -> Result<Self, String> {
        let (address, options) = rest.split_once('?').unwrap_or((rest, ""));
        let bad = |what: String| format!("'{spec}': {what}");
        let (host, port) = if let Some(v6) = address.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| bad("an IPv6 address needs its closing ']'".into()))?;
            (host, after.strip_prefix(':'))
        } else {
            match address.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (address, None),
            }
        };
        if host.is_empty() {
            return Err(bad("missing host".into()));
        }
        let port = match port {
            None | Some("") => {
                return Err(bad(format!(
                    "missing :PORT (for example {scheme}://{host}:{})",
                    default_port(scheme)
                )));
            }
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| bad(format!("port '{p}' is not 1..65535")))?,
        };
        let mut remote = Self {
            spec: spec.to_owned(),
            scheme,
            host: host.to_owned(),
            port,
            tls: tls.then(TlsOptions::default),
            format: None,
            headers: None,
            facility: DEFAULT_FACILITY,
        };
        let otlp = scheme.starts_with("otlp");
        for option in options.split('&').filter(|o| !o.is_empty()) {
            let (name, value) = option
                .split_once('=')
                .ok_or_else(|| bad(format!("option '{option}' needs a value (name=value)")))?;
            if value.is_empty() {
                return Err(bad(format!("option {name}= needs a value")));
            }
            fn tls_option<'a>(
                remote: &'a mut Remote,
                spec: &str,
                name: &str,
            ) -> Result<&'a mut TlsOptions, String> {
                let plain = remote.scheme;
                remote
                    .tls
                    .as_mut()
                    .ok_or_else(|| format!("'{spec}': option {name}= needs TLS ({plain}+tls://)"))
            }
            match name {
                "format" => {
                    remote.format = Some(Format::parse(value).ok_or_else(|| {
                        bad(format!("format '{value}': expected json, ocsf or cef"))
                    })?);
                }
                "ca" => tls_option(&mut remote, spec, name)?.ca = Some(PathBuf::from(value)),
                "cert" => tls_option(&mut remote, spec, name)?.cert = Some(PathBuf::from(value)),
                "key" => tls_option(&mut remote, spec, name)?.key = Some(PathBuf::from(value)),
                "server-name" => {
                    tls_option(&mut remote, spec, name)?.server_name = Some(value.to_owned())
                }
                "headers" if otlp => remote.headers = Some(PathBuf::from(value)),
                "headers" => return Err(bad("option headers= is for otlp destinations".into())),
                "facility" if !otlp => {
                    remote.facility = FACILITIES
                        .iter()
                        .find(|(n, _)| *n == value)
                        .map(|(_, f)| *f)
                        .ok_or_else(|| {
                            bad(format!(
                                "facility '{value}': expected one of {}",
                                FACILITIES.map(|(n, _)| n).join(", ")
                            ))
                        })?;
                }
                "facility" => {
                    return Err(bad("option facility= is for syslog destinations".into()));
                }
                other => {
                    let known = if otlp {
                        "format, ca, cert, key, server-name, headers"
                    } else {
                        "format, ca, cert, key, server-name, facility"
                    };
                    return Err(bad(format!("unknown option '{other}' (options: {known})")));
                }
            }
        }
        if let Some(t) = &remote.tls
            && t.cert.is_some() != t.key.is_some()
        {
            return Err(bad(
                "cert= and key= go together (a client certificate)".into()
            ));
        }
        Ok(remote)
    }

    /// `scheme://host:port`
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("{}://[{}]:{}", self.scheme, self.host, self.port)
        } else {
            format!("{}://{}:{}", self.scheme, self.host, self.port)
        }
    }

    /// `host:port`, for connecting.
    pub fn host_port(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// A receiver on this host (`localhost`, 127.0.0.0/8, ::1).
fn loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn default_port(scheme: &str) -> u16 {
    match scheme {
        "syslog" => 514,
        "syslog+tls" => 6514,
        _ => 4317,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One event per line, the field names of the event stream (docs/events.md).
    Json,
    /// One OCSF 1.5.0 object per line (docs/export.md).
    Ocsf,
    /// One ArcSight CEF line (docs/export.md, 'CEF mapping').
    Cef,
}

impl Format {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "json" => Some(Self::Json),
            "ocsf" => Some(Self::Ocsf),
            "cef" => Some(Self::Cef),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Ocsf => "ocsf",
            Self::Cef => "cef",
        }
    }

    pub fn line(self, event: &pb::Event) -> String {
        match self {
            Self::Json => to_json(event),
            Self::Ocsf => ocsf::to_ocsf(event).to_string(),
            Self::Cef => cef::to_cef(event),
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
    /// Node and cluster, in loss records and in OTLP resource attributes.
    pub origin: Origin,
    /// The certificates of a TLS destination, read at start.
    pub tls: Option<TlsFiles>,
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
    origin: &Origin,
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
            return Err(format!("--export {}: given twice", destination.label()));
        }
        let mut format = args.format;
        let mut tls = None;
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
            Destination::Syslog(remote) | Destination::Otlp(remote) => {
                format = remote.format.unwrap_or(format);
                if matches!(destination, Destination::Otlp(_)) && format == Format::Cef {
                    return Err(format!(
                        "--export {}: format cef is for syslog and file destinations (OTLP carries json or ocsf bodies)",
                        remote.address()
                    ));
                }
                let fail = |e: String| format!("--export {}: {e}", remote.address());
                if let Some(options) = &remote.tls {
                    let files = TlsFiles::load(options).map_err(fail)?;
                    files.server_name(&remote.host).map_err(fail)?;
                    tls = Some(files);
                }
                if let Some(path) = &remote.headers {
                    if remote.tls.is_none() && !loopback(&remote.host) {
                        return Err(fail(
                            "headers= would send credentials in clear text: use otlp+tls:// (plain otlp:// only to a collector on this host)"
                                .into(),
                        ));
                    }
                    super::otlp::read_headers(path).map_err(fail)?;
                }
            }
        }
        configs.push(ExportConfig {
            destination: destination.clone(),
            format,
            max_bytes: args.max_bytes,
            max_files: args.max_files,
            fold_window: args.fold_window,
            state_dir: state_dir.clone(),
            origin: origin.clone(),
            persist: true,
            tls,
        });
    }
    if stdout_events {
        configs.push(stdout_events_config(origin, &state_dir));
    }
    Ok(configs)
}

/// `--stdout-events`: every event, as the JSON line of the event stream, on stdout from the
/// start of this run; no flood control, no cursor kept.
fn stdout_events_config(origin: &Origin, state_dir: &Path) -> ExportConfig {
    ExportConfig {
        destination: Destination::Stdout,
        format: Format::Json,
        max_bytes: DEFAULT_MAX_BYTES,
        max_files: DEFAULT_MAX_FILES,
        fold_window: Duration::ZERO,
        state_dir: state_dir.to_owned(),
        origin: origin.clone(),
        persist: false,
        tls: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(s: &str) -> Remote {
        match Destination::parse(s).unwrap() {
            Destination::Syslog(r) | Destination::Otlp(r) => r,
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn network_destinations_parse_with_their_options() {
        let r = remote("syslog+tls://127.0.0.1:6514?ca=/etc/ca.pem&format=cef&facility=local4");
        assert_eq!(
            (r.scheme, r.host.as_str(), r.port),
            ("syslog+tls", "127.0.0.1", 6514)
        );
        assert_eq!(r.format, Some(Format::Cef));
        assert_eq!(r.facility, 20);
        assert_eq!(r.tls.unwrap().ca, Some(PathBuf::from("/etc/ca.pem")));
        let r = remote("otlp://[::1]:4317?headers=/run/h");
        assert_eq!((r.host.as_str(), r.port, &r.tls), ("::1", 4317, &None));
        assert_eq!(r.host_port(), "[::1]:4317");
        assert_eq!(r.headers, Some(PathBuf::from("/run/h")));
        let r = remote("syslog://logs.example:514");
        assert_eq!((r.facility, r.format), (4, None));
        assert_eq!(
            Destination::parse("otlp+tls://c:4317?cert=/a&key=/b")
                .unwrap()
                .state_name(),
            "otlp+tls_c_4317.cursor"
        );
        // Options do not make another destination.
        assert_eq!(
            Destination::parse("syslog://h:1?format=cef"),
            Destination::parse("syslog://h:1")
        );
    }

    #[test]
    fn credentials_go_in_clear_text_only_to_this_host() {
        let flags = |spec: &str| ExportFlags {
            destinations: vec![Destination::parse(spec).unwrap()],
            format: Format::Json,
            max_bytes: DEFAULT_MAX_BYTES,
            max_files: DEFAULT_MAX_FILES,
            fold_window: Duration::ZERO,
            state_dir: Some(PathBuf::from("/nonexistent")),
        };
        let origin = Origin::node("n");
        let j = Path::new("/var/lib/sensor/journal");
        let err = configs(
            &flags("otlp://collector:4317?headers=/x"),
            j,
            &origin,
            false,
        )
        .unwrap_err();
        assert!(err.contains("clear text: use otlp+tls://"), "{err}");
        // To a collector on this host, the file is read (and here missing).
        let err = configs(
            &flags("otlp://127.0.0.1:4317?headers=/nonexistent/h"),
            j,
            &origin,
            false,
        )
        .unwrap_err();
        assert!(
            err.contains("headers /nonexistent/h: No such file"),
            "{err}"
        );
        let err = configs(
            &flags("syslog+tls://h:1?ca=/nonexistent/ca.pem"),
            j,
            &origin,
            false,
        )
        .unwrap_err();
        assert_eq!(
            err,
            "--export syslog+tls://h:1: ca /nonexistent/ca.pem: No such file or directory (os error 2)"
        );
    }

    #[test]
    fn bad_network_destinations_say_what_is_wrong() {
        for (spec, wanted) in [
            ("kafka://x:1", "unknown scheme 'kafka'"),
            (
                "syslog://127.0.0.1",
                "missing :PORT (for example syslog://127.0.0.1:514)",
            ),
            ("otlp://h:", "missing :PORT"),
            ("otlp://h:99999", "port '99999' is not 1..65535"),
            ("otlp://:4317", "missing host"),
            ("syslog://h:1?ca=/x", "option ca= needs TLS (syslog+tls://)"),
            ("syslog+tls://h:1?headers=/x", "headers= is for otlp"),
            ("otlp://h:1?facility=auth", "facility= is for syslog"),
            ("syslog://h:1?facility=nope", "facility 'nope'"),
            ("syslog://h:1?format=xml", "format 'xml'"),
            ("syslog://h:1?colour=red", "unknown option 'colour'"),
            ("syslog://h:1?format", "needs a value"),
            ("otlp+tls://h:1?cert=/a", "cert= and key= go together"),
            ("[::1]:1", "expected stdout"),
        ] {
            let err = Destination::parse(spec).unwrap_err();
            assert!(err.contains(wanted), "{spec}: {err}");
        }
    }
}
