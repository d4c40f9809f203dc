//! OTLP logs export: `opentelemetry.proto.collector.logs.v1.LogsService/Export` over gRPC (h2c
//! or TLS), so an OpenTelemetry Collector takes the events to Kafka, Splunk, Elastic, Security
//! Lake or Sentinel.
//!
//! One LogRecord per event: the body is the event as a string (JSON, or OCSF with
//! `format=ocsf`), the attributes use OpenTelemetry semantic-convention names (`k8s.*`,
//! `process.*`, `destination.*`, `file.path`) and `sensor.*` for the rest, the severity comes
//! from the verdict ([`super::facts::Level`]); the resource names the node and the cluster.
//!
//! Delivery: a batch is delivered when the Export call returned OK. A receiver that answers
//! with a partial success has refused some records for good (counted as `rejected`, logged);
//! any error is retried with backoff, the journal keeping the events meanwhile.

use std::{path::Path, time::Duration};

use opentelemetry_proto::tonic::{
    collector::logs::v1::{ExportLogsServiceRequest, logs_service_client::LogsServiceClient},
    common::v1::{AnyValue, ArrayValue, InstrumentationScope, KeyValue, any_value::Value},
    logs::v1::{LogRecord, ResourceLogs, ScopeLogs},
    resource::v1::Resource,
};
use sensor_proto::v1 as pb;
use tonic::{
    metadata::{Ascii, MetadataKey, MetadataValue},
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
};

use super::{config::Remote, facts, tls::TlsFiles};
use crate::event::{proto::Origin, time::now_unix_ns};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// An Export call that takes longer has failed (and is retried).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// A request header (gRPC metadata) from a headers file.
pub type Header = (MetadataKey<Ascii>, MetadataValue<Ascii>);

/// A headers file is small: a token or two.
const MAX_HEADERS_BYTES: u64 = 64 * 1024;

/// `headers=`: `name: value` lines (`#` comments and blank lines skipped), sent with every
/// Export call as gRPC metadata; read at start and again before every call (a rotated token
/// is picked up), the last good ones kept when a re-read fails.
pub fn read_headers(path: &Path) -> Result<Vec<Header>, String> {
    use std::io::Read as _;
    let shown = path.display();
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_HEADERS_BYTES + 1).read_to_string(&mut text))
        .map_err(|e| format!("headers {shown}: {e}"))?;
    if text.len() as u64 > MAX_HEADERS_BYTES {
        return Err(format!(
            "headers {shown}: larger than {MAX_HEADERS_BYTES} bytes"
        ));
    }
    let mut headers = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = || format!("headers {shown}:{}", i + 1);
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("{}: expected 'name: value'", at()))?;
        let name = name.trim().to_ascii_lowercase();
        // gRPC's own and HTTP/2 connection headers: setting one breaks every call.
        const RESERVED: [&str; 8] = [
            "te",
            "connection",
            "host",
            "content-type",
            "keep-alive",
            "transfer-encoding",
            "upgrade",
            "user-agent",
        ];
        if name.starts_with("grpc-") || name.is_empty() || RESERVED.contains(&name.as_str()) {
            return Err(format!(
                "{}: '{name}' is not a header an exporter may set",
                at()
            ));
        }
        let key = MetadataKey::from_bytes(name.as_bytes())
            .map_err(|_| format!("{}: '{name}' is not a valid header name", at()))?;
        let mut value = MetadataValue::try_from(value.trim())
            .map_err(|_| format!("{}: the value of '{name}' is not printable ASCII", at()))?;
        // Tokens: never indexed by HPACK.
        value.set_sensitive(true);
        headers.push((key, value));
    }
    Ok(headers)
}

fn string(key: &str, v: &str) -> Option<KeyValue> {
    (!v.is_empty()).then(|| KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(v.to_owned())),
        }),
        ..Default::default()
    })
}

fn int(key: &str, v: i64) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(Value::IntValue(v)),
        }),
        ..Default::default()
    }
}

fn strings(key: &str, v: &[String]) -> Option<KeyValue> {
    (!v.is_empty()).then(|| KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(Value::ArrayValue(ArrayValue {
                values: v
                    .iter()
                    .map(|s| AnyValue {
                        value: Some(Value::StringValue(s.clone())),
                    })
                    .collect(),
            })),
        }),
        ..Default::default()
    })
}

/// The resource of every batch: the sensor on this node.
pub fn resource(origin: &Origin) -> Resource {
    Resource {
        attributes: [
            string("service.name", "sensor"),
            string("service.version", env!("CARGO_PKG_VERSION")),
            string("host.name", &origin.node),
            string("k8s.node.name", &origin.node),
            string("k8s.cluster.name", &origin.cluster),
        ]
        .into_iter()
        .flatten()
        .collect(),
        ..Default::default()
    }
}

/// One event as a LogRecord whose body is `body` (the event rendered in the destination's
/// format).
pub fn log_record(e: &pb::Event, body: String) -> LogRecord {
    use pb::event::Body as B;
    let (severity_number, severity_text) = facts::level(e).otlp();
    let kind = facts::kind(e);
    let mut a: Vec<Option<KeyValue>> = Vec::with_capacity(24);
    if e.seq != 0 {
        a.push(Some(int("sensor.seq", e.seq as i64)));
    }
    a.push(string("sensor.uid", &facts::uid(e)));
    a.push(string("sensor.kind", &kind));
    a.push(string("sensor.verdict", &facts::verdict(e)));
    a.push(string("sensor.policy", &e.policy));
    a.push(string("sensor.rule", &e.rule));
    a.push(string("k8s.cluster.name", &e.cluster));
    a.push(string("k8s.node.name", &e.node));
    if let Some(pod) = &e.pod {
        a.push(string("k8s.namespace.name", &pod.namespace));
        a.push(string("k8s.pod.name", &pod.name));
        a.push(string("k8s.pod.uid", &pod.uid));
        a.push(string("k8s.container.name", &pod.container_name));
        a.push(string("container.id", &pod.container_id));
        let (image, tag) = facts::image_name_tag(&pod.image);
        a.push(string("container.image.name", image));
        a.push(strings("container.image.tags", &[tag.to_owned()]).filter(|_| !tag.is_empty()));
    }
    if let Some(p) = &e.process
        && p.pid != 0
    {
        a.push(Some(int("process.pid", p.pid.into())));
        if p.ppid != 0 {
            a.push(Some(int("process.parent_pid", p.ppid.into())));
        }
        a.push(string("process.executable.path", &p.exe));
        a.push(string("process.executable.name", facts::program(p)));
        a.push(string("sensor.comm", &p.comm));
        a.push(strings("process.command_args", &p.args));
        a.push(Some(int("process.real_user.id", p.uid.into())));
        a.push(Some(int("process.user.id", p.euid.unwrap_or(p.uid).into())));
    }
    match &e.body {
        Some(B::Connect(c)) => {
            a.push(string("destination.address", &c.dst_addr));
            a.push(Some(int("destination.port", c.dst_port.into())));
            // Semantic conventions name transports only (tcp, udp); ICMP is not one.
            let transport = facts::transport(c);
            if matches!(transport, "tcp" | "udp") {
                a.push(string("network.transport", transport));
            }
        }
        Some(B::Chmod(c)) => a.push(string("file.path", facts::chmod_file(c))),
        Some(B::Posture(p)) => {
            let findings: Vec<String> = p
                .findings
                .iter()
                .map(|f| match f.container.as_str() {
                    "" => f.finding.clone(),
                    c => format!("{}:{c}", f.finding),
                })
                .collect();
            a.push(strings("sensor.posture.findings", &findings));
            if let Some(n) = &p.node {
                a.push(string("os.type", "linux"));
                a.push(string("os.version", &n.kernel));
            }
        }
        Some(B::Lost(l)) => {
            a.push(Some(int("sensor.lost.count", l.count as i64)));
            if l.first_seq != 0 {
                a.push(Some(int("sensor.lost.first_seq", l.first_seq as i64)));
                a.push(Some(int("sensor.lost.last_seq", l.last_seq as i64)));
            }
        }
        _ => {}
    }
    if let Some(r) = &e.repeat {
        a.push(Some(int("sensor.repeat.count", r.count as i64)));
    }
    LogRecord {
        time_unix_nano: u64::try_from(e.time_unix_ns).unwrap_or(0),
        observed_time_unix_nano: u64::try_from(now_unix_ns()).unwrap_or(0),
        severity_number,
        severity_text: severity_text.to_owned(),
        body: Some(AnyValue {
            value: Some(Value::StringValue(body)),
        }),
        attributes: a.into_iter().flatten().collect(),
        event_name: format!("sensor.{kind}"),
        ..Default::default()
    }
}

/// An OTLP receiver: the channel (connected when needed) on the exporter thread's own runtime.
pub struct OtlpClient {
    runtime: tokio::runtime::Runtime,
    client: LogsServiceClient<Channel>,
    resource: Resource,
    headers_path: Option<std::path::PathBuf>,
    headers: Vec<Header>,
    /// The last error re-reading the headers file (logged when it changes, not per call).
    headers_error: Option<String>,
}

/// At most this many records, and about this many encoded bytes, per Export call: well under
/// the 4 MiB gRPC receivers accept by default, whatever a batch holds (closing fold windows
/// can add thousands of records to one).
const CALL_RECORDS: usize = 512;
const CALL_BYTES: usize = 1 << 20;

/// How many records from the front of `records` go into the next call (at least one).
pub fn call_len(records: &[LogRecord]) -> usize {
    use prost::Message as _;
    let mut bytes = 0;
    records
        .iter()
        .take(CALL_RECORDS)
        .take_while(|r| {
            bytes += r.encoded_len();
            bytes <= CALL_BYTES
        })
        .count()
        .max(1)
        .min(records.len())
}

/// A receiver's error as one line: control characters escaped (the message is the
/// receiver's), the cause chain kept.
fn one_line(status: &tonic::Status) -> String {
    let mut line = format!("{:?}", status.code());
    let detail = crate::error_chain(status);
    if !detail.is_empty() {
        line.push_str(": ");
        line.extend(detail.chars().flat_map(|c| {
            if c.is_control() {
                c.escape_debug().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        }));
    }
    line
}

impl OtlpClient {
    pub fn new(remote: &Remote, tls: Option<&TlsFiles>, origin: &Origin) -> Result<Self, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("runtime: {e}"))?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{}", remote.host_port()))
            .map_err(|e| e.to_string())?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(CALL_TIMEOUT)
            // A connection that died quietly (a load balancer's idle timeout) is noticed.
            .tcp_keepalive(Some(Duration::from_secs(30)))
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10));
        if let Some(files) = tls {
            let mut config = ClientTlsConfig::new()
                .domain_name(files.server_name.as_deref().unwrap_or(&remote.host));
            config = match &files.ca_pem {
                Some(pem) => config.ca_certificate(Certificate::from_pem(pem)),
                None if files.system_roots => config.with_native_roots(),
                None => config.with_webpki_roots(),
            };
            // The handshake is bounded too (the call's timeout does not cover it).
            config = config.timeout(CONNECT_TIMEOUT);
            if let Some((cert, key)) = &files.identity {
                config = config.identity(Identity::from_pem(cert, key));
            }
            endpoint = endpoint.tls_config(config).map_err(|e| e.to_string())?;
        }
        let channel = {
            let _in_runtime = runtime.enter();
            endpoint.connect_lazy()
        };
        let headers = match &remote.headers {
            Some(path) => read_headers(path)?,
            None => Vec::new(),
        };
        Ok(Self {
            runtime,
            client: LogsServiceClient::new(channel),
            resource: resource(origin),
            headers_path: remote.headers.clone(),
            headers,
            headers_error: None,
        })
    }

    /// Export `records` in one call; `Ok(rejected)`: delivered, of which the receiver refused
    /// `rejected` for good (a partial success).
    pub fn send(&mut self, records: &[LogRecord]) -> Result<u64, String> {
        if let Some(path) = &self.headers_path {
            match read_headers(path) {
                Ok(h) => {
                    self.headers = h;
                    self.headers_error = None;
                }
                Err(e) => {
                    if self.headers_error.as_ref() != Some(&e) {
                        tracing::warn!("otlp export: {e} (the last good headers are used)");
                    }
                    self.headers_error = Some(e);
                }
            }
        }
        let mut request = tonic::Request::new(ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(self.resource.clone()),
                scope_logs: vec![ScopeLogs {
                    scope: Some(InstrumentationScope {
                        name: "sensor".into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                        ..Default::default()
                    }),
                    log_records: records.to_vec(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        });
        for (k, v) in &self.headers {
            request.metadata_mut().insert(k.clone(), v.clone());
        }
        let mut client = self.client.clone();
        // Bounded whatever stalls: the connection, the handshake, the call.
        let limit = CONNECT_TIMEOUT + CALL_TIMEOUT;
        let response = self
            .runtime
            .block_on(async { tokio::time::timeout(limit, client.export(request)).await })
            .map_err(|_| format!("no answer within {limit:?}"))?
            .map_err(|status| one_line(&status))?;
        let rejected = response
            .into_inner()
            .partial_success
            .map_or(0, |p| u64::try_from(p.rejected_log_records).unwrap_or(0));
        Ok(rejected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr<'a>(r: &'a LogRecord, key: &str) -> Option<&'a Value> {
        r.attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref()?.value.as_ref())
    }

    #[test]
    fn a_connect_becomes_a_record_with_semantic_convention_attributes() {
        let e = pb::Event {
            seq: 5,
            time_unix_ns: 1_000,
            node: "n1".into(),
            cluster: "c1".into(),
            verdict: pb::Verdict::Blocked as i32,
            process: Some(pb::Process {
                pid: 10,
                ppid: 1,
                uid: 1000,
                exe: "/usr/bin/curl".into(),
                args: vec!["curl".into(), "http://169.254.169.254/".into()],
                ..Default::default()
            }),
            pod: Some(pb::Pod {
                namespace: "default".into(),
                name: "web".into(),
                ..Default::default()
            }),
            body: Some(pb::event::Body::Connect(pb::Connect {
                dst_addr: "169.254.169.254".into(),
                dst_port: 80,
                protocol: 6,
                ..Default::default()
            })),
            ..Default::default()
        };
        let r = log_record(&e, "{}".into());
        assert_eq!((r.severity_number, r.severity_text.as_str()), (13, "WARN"));
        assert_eq!(r.event_name, "sensor.connect");
        assert_eq!(r.time_unix_nano, 1_000);
        let s = |v: &str| Some(Value::StringValue(v.into()));
        assert_eq!(attr(&r, "sensor.seq"), Some(&Value::IntValue(5)));
        assert_eq!(attr(&r, "sensor.uid").cloned(), s("n1:5"));
        assert_eq!(attr(&r, "k8s.namespace.name").cloned(), s("default"));
        assert_eq!(attr(&r, "k8s.cluster.name").cloned(), s("c1"));
        assert_eq!(attr(&r, "process.pid"), Some(&Value::IntValue(10)));
        assert_eq!(
            attr(&r, "destination.address").cloned(),
            s("169.254.169.254")
        );
        assert_eq!(attr(&r, "network.transport").cloned(), s("tcp"));
        assert!(
            matches!(attr(&r, "process.command_args"), Some(Value::ArrayValue(a)) if a.values.len() == 2)
        );
        // Empty values are left out, not sent as "".
        assert_eq!(attr(&r, "k8s.pod.uid"), None);
    }

    #[test]
    fn headers_files_are_checked_line_by_line() {
        let dir = std::env::temp_dir().join(format!("sensor-otlp-headers-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good");
        std::fs::write(
            &good,
            "# token\nAuthorization: Bearer abc\n\nx-tenant: t1\n",
        )
        .unwrap();
        let h = read_headers(&good).unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].0.as_str(), "authorization");
        assert_eq!(h[0].1.to_str().unwrap(), "Bearer abc");
        let bad = dir.join("bad");
        std::fs::write(&bad, "ok: 1\nno colon here\n").unwrap();
        let err = read_headers(&bad).unwrap_err();
        assert!(err.ends_with("bad:2: expected 'name: value'"), "{err}");
        std::fs::write(&bad, "grpc-timeout: 1S\n").unwrap();
        assert!(
            read_headers(&bad)
                .unwrap_err()
                .contains("not a header an exporter may set")
        );
        assert!(
            read_headers(&dir.join("missing"))
                .unwrap_err()
                .contains("missing")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
