//! `--metrics-addr`: Prometheus `/metrics` parsed by a real parser (PyPI `prometheus-client`,
//! installed by `cargo xtask setup`) after a known scenario, `/healthz` and `/readyz`, the gRPC
//! health statuses (`sensor health`), and a graceful SIGTERM. Listeners bind 127.0.0.1 port 0;
//! connects to metadata addresses happen only in a test network namespace (docs/testing.md,
//! 'Safety rules for tests').

use std::{
    collections::BTreeMap,
    io::Write as _,
    net::TcpStream,
    path::Path,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use sensor_tests::{
    NetNs, Place, Sensor, StateDir, Tail, TempDir, TestCgroup, http_get, kubeapi::KubeApi,
    metrics_addr, probe_net, python_tool, require_root,
};
use serde_json::Value;

const EPERM: i64 = libc::EPERM as i64;

/// A policy that blocks the IMDS address and audits the container-credentials address, in `cg`.
fn write_policy(dir: &Path, cg: &Path, body: Option<&str>) -> std::path::PathBuf {
    let file = dir.join("policy.yaml");
    let text = body.map(str::to_owned).unwrap_or_else(|| {
        format!(
            "apiVersion: sensor/v1\nkind: Policy\nmetadata:\n  name: metrics-test\nspec:\n  scope:\n    cgroups: [{}]\n  rules:\n    - name: block-imds\n      type: metadata\n      action: enforce\n      destinations: [169.254.169.254/32]\n    - name: audit-credentials\n      type: metadata\n      action: audit\n      destinations: [169.254.170.2/32]\n",
            cg.display()
        )
    });
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    file
}

/// One `/metrics` scrape, parsed by `prometheus_client.parser`.
struct Scrape {
    text: String,
    /// Family name -> type.
    types: BTreeMap<String, String>,
    /// (sample name, labels, value).
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

const PARSER: &str = "import json, sys\n\
from prometheus_client.parser import text_string_to_metric_families\n\
out = []\n\
for f in text_string_to_metric_families(sys.stdin.read()):\n    \
out.append({'name': f.name, 'type': f.type, 'samples': [[s.name, s.labels, s.value] for s in f.samples]})\n\
print(json.dumps(out))\n";

impl Scrape {
    fn get(addr: &str) -> Self {
        let (status, head, text) = http_get(addr, "/metrics").expect("GET /metrics");
        assert_eq!(status, 200, "{head}\n{text}");
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: text/plain; version=0.0.4"),
            "{head}"
        );
        let mut child = Command::new(python_tool("python"))
            .args(["-c", PARSER])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("running the prometheus_client parser");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "prometheus_client could not parse /metrics: {}\n{text}",
            String::from_utf8_lossy(&out.stderr)
        );
        let families: Vec<Value> = serde_json::from_slice(&out.stdout).expect("parser JSON");
        let mut types = BTreeMap::new();
        let mut samples = Vec::new();
        for f in families {
            types.insert(
                f["name"].as_str().unwrap().to_owned(),
                f["type"].as_str().unwrap().to_owned(),
            );
            for s in f["samples"].as_array().unwrap() {
                let labels = s[1]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                    .collect();
                samples.push((
                    s[0].as_str().unwrap().to_owned(),
                    labels,
                    s[2].as_f64().unwrap(),
                ));
            }
        }
        Self {
            text,
            types,
            samples,
        }
    }

    /// The value of the sample `name{labels}` (labels matched exactly), if present.
    fn try_value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.samples
            .iter()
            .find(|(n, l, _)| n == name && *l == want)
            .map(|s| s.2)
    }

    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.try_value(name, labels)
            .unwrap_or_else(|| panic!("no sample {name}{labels:?} in:\n{}", self.text))
    }

    /// Every sample of `name`.
    fn all(&self, name: &str) -> Vec<(&BTreeMap<String, String>, f64)> {
        self.samples
            .iter()
            .filter(|(n, ..)| n == name)
            .map(|(_, l, v)| (l, *v))
            .collect()
    }

    fn assert_type(&self, family: &str, ty: &str) {
        assert_eq!(
            self.types.get(family).map(String::as_str),
            Some(ty),
            "type of {family}"
        );
    }
}

/// Scrape until `done` holds (10 s).
fn scrape_until(addr: &str, what: &str, done: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let scrape = Scrape::get(addr);
        if done(&scrape) {
            return scrape;
        }
        assert!(
            Instant::now() < deadline,
            "waited 10 s for {what}:\n{}",
            scrape.text
        );
        thread::sleep(Duration::from_millis(50));
    }
}

fn health(sensor: &Sensor, service: Option<&str>) -> (bool, String) {
    let mut args = vec!["health"];
    if let Some(s) = service {
        args.extend(["--service", s]);
    }
    let out = sensor.cli(&args);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
            + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn metrics_parse_and_count_a_known_scenario() {
    require_root();
    let cg = TestCgroup::new();
    let ns = NetNs::with_metadata_addresses();
    let dir = TempDir::new();
    let policy = write_policy(&dir.0, &cg.path, None);
    let sensor = Sensor::start(&[
        "--policy",
        policy.to_str().unwrap(),
        "--metrics-addr",
        "127.0.0.1:0",
    ]);
    let addr = metrics_addr(&sensor);
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    assert_eq!(http_get(&addr, "/healthz").unwrap().0, 200);
    let (status, _, body) = http_get(&addr, "/readyz").unwrap();
    assert_eq!((status, body.trim()), (200, "ready"));
    assert_eq!(http_get(&addr, "/nothing").unwrap().0, 404);

    // One live subscriber.
    let tail = Tail::start(sensor.socket(), &["-f", "-o", "json"]);
    scrape_until(&addr, "one subscriber", |s| {
        s.try_value("sensor_subscribers", &[]) == Some(1.0)
    });

    // The scenario: 3 blocked connects, 2 audited ones, one refused policy reload.
    let inside = Place::inside(&ns, &cg.path);
    for port in [80, 81, 82] {
        assert_eq!(
            probe_net(&inside, "tcp", "169.254.169.254", port).errno,
            EPERM
        );
    }
    for port in [80, 81] {
        assert_ne!(
            probe_net(&inside, "tcp", "169.254.170.2", port).errno,
            EPERM
        );
    }
    write_policy(
        &dir.0,
        &cg.path,
        Some("apiVersion: sensor/v1\nkind: Nope\n"),
    );
    sensor.signal(libc::SIGHUP);
    sensor.wait_for(1, |e| {
        e["kind"] == "policy" && e["policy_change"]["accepted"] == false
    });
    let connects = sensor.wait_for(5, |e| e["kind"] == "connect");
    tail.wait_until("the 5 connect events", |events| {
        events.iter().filter(|e| e["kind"] == "connect").count() == 5
    });

    let events = sensor.events();
    let last_seq = events.iter().filter_map(|e| e["seq"].as_u64()).max();
    let s = scrape_until(&addr, "the scenario's counts", |s| {
        s.try_value(
            "sensor_events_total",
            &[("kind", "connect"), ("verdict", "blocked")],
        ) == Some(3.0)
            && s.try_value(
                "sensor_events_total",
                &[("kind", "connect"), ("verdict", "audited")],
            ) == Some(2.0)
            && s.try_value("sensor_policy_reload_failures_total", &[]) == Some(1.0)
            && s.try_value("sensor_journal_last_seq", &[]) == last_seq.map(|n| n as f64)
    });

    // Types as the parser read them.
    for (family, ty) in [
        ("sensor_events", "counter"),
        ("sensor_kernel_ringbuf_drops", "counter"),
        ("sensor_dropped_events", "counter"),
        ("sensor_subscribers", "gauge"),
        ("sensor_journal_bytes", "gauge"),
        ("sensor_build_info", "gauge"),
        ("sensor_hook_attachments", "gauge"),
        ("sensor_kernel_kill_tier", "counter"),
        ("sensor_chmod_reverts", "counter"),
    ] {
        s.assert_type(family, ty);
    }
    // No chmod or privilege call in this scenario: the kill tier decided nothing.
    for hook in ["chmod", "privilege", "late_socket"] {
        assert_eq!(
            s.value(
                "sensor_kernel_kill_tier_total",
                &[("hook", hook), ("decision", "killed")]
            ),
            0.0
        );
    }

    // Events by kind and verdict: every event the stream carried, and no other.
    let total: f64 = s.all("sensor_events_total").iter().map(|(_, v)| v).sum();
    let emitted = events.iter().filter(|e| e["kind"] != "lost").count();
    assert_eq!(total, emitted as f64, "{}", s.text);
    assert_eq!(connects.len(), 5);
    // The kernel's own decision counters agree.
    for (decision, n) in [("blocked", 3.0), ("audited", 2.0), ("exempted", 0.0)] {
        assert_eq!(
            s.value(
                "sensor_kernel_connect_decisions_total",
                &[("decision", decision)]
            ),
            n,
            "{decision}"
        );
    }
    // Nothing lost anywhere.
    for source in ["connect", "chmod", "process"] {
        assert_eq!(
            s.value("sensor_kernel_ringbuf_drops_total", &[("source", source)]),
            0.0
        );
    }
    for stage in ["decode", "journal", "subscriber", "stdout"] {
        assert_eq!(
            s.value("sensor_dropped_events_total", &[("stage", stage)]),
            0.0,
            "{stage}"
        );
    }
    assert!(s.all("sensor_loss_records_total").is_empty(), "{}", s.text);
    // The subscriber kept up.
    assert_eq!(s.value("sensor_subscribers", &[]), 1.0);
    assert_eq!(s.value("sensor_subscriber_lag_events", &[]), 0.0);
    assert_eq!(s.value("sensor_subscriber_queued_events", &[]), 0.0);
    assert_eq!(s.value("sensor_subscriber_lost_events_total", &[]), 0.0);
    // Enrichment: nothing waiting; partial as many as the stream says.
    assert_eq!(s.value("sensor_enrichment_pending_events", &[]), 0.0);
    let partial = events
        .iter()
        .filter(|e| e["enrichment"] == "partial")
        .count();
    assert_eq!(
        s.value("sensor_enrichment_partial_total", &[]),
        partial as f64
    );
    assert_eq!(s.value("sensor_enrichment_completed_late_total", &[]), 0.0);
    // Journal: a fresh one holding seq 1..=last, written just now.
    assert_eq!(s.value("sensor_journal_first_seq", &[]), 1.0);
    assert!(s.value("sensor_journal_bytes", &[]) > 0.0);
    assert!(s.value("sensor_journal_segments", &[]) >= 1.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let last_time = s.value("sensor_journal_last_timestamp_seconds", &[]);
    assert!((now - last_time).abs() < 60.0, "{last_time} vs {now}");
    assert!(s.value("sensor_journal_first_timestamp_seconds", &[]) <= last_time);
    // Policy: generation 1 still in force, one refused reload.
    assert_eq!(s.value("sensor_policy_generation", &[]), 1.0);
    assert_eq!(s.value("sensor_policy_reload_failures_total", &[]), 1.0);
    let (labels, v) = s.all("sensor_policy_info")[0];
    assert_eq!((labels["policy"].as_str(), v), ("metrics-test", 1.0));
    // Tier per hook.
    for (hook, tier) in [
        ("connect4", "cgroup"),
        ("connect6", "cgroup"),
        ("sendmsg4", "cgroup"),
        ("sendmsg6", "cgroup"),
        ("egress", "cgroup"),
        ("chmod", "kill"),
        ("setresuid", "kill"),
        ("conn_enter", "kill"),
        ("exec", "tracepoint"),
    ] {
        assert_eq!(
            s.value("sensor_hook_attachments", &[("hook", hook), ("tier", tier)]),
            1.0,
            "{hook}"
        );
    }
    // Build and readiness.
    let (labels, v) = s.all("sensor_build_info")[0];
    assert_eq!(
        (labels["version"].as_str(), v),
        (env!("CARGO_PKG_VERSION"), 1.0)
    );
    assert_eq!(s.value("sensor_ready", &[]), 1.0);

    // The same figures as `sensor status`.
    let status: Value = serde_json::from_slice(&sensor.cli(&["status", "--json"]).stdout).unwrap();
    assert_eq!(status["counters"]["events_connect/blocked"], 3, "{status}");
    assert_eq!(status["counters"]["kernel_blocked"], 3, "{status}");

    let (exit, stderr) = sensor.stop_with(libc::SIGTERM);
    assert!(exit.success(), "{exit}; stderr:\n{stderr}");
    assert!(
        TcpStream::connect(&addr).is_err(),
        "the metrics listener is closed after exit"
    );
}

/// A sensor scoped to `scope` with a pod watcher using `kubeconfig`, and metrics.
fn kube_sensor(scope: &str, kubeconfig: &Path) -> Sensor {
    Sensor::start(&[
        "--scope-cgroup",
        scope,
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--metrics-addr",
        "127.0.0.1:0",
    ])
}

#[test]
fn readiness_waits_for_the_pod_cache_and_health_follows_it() {
    require_root();
    let cg = TestCgroup::new();
    let dir = TempDir::new();
    let scope = cg.path.to_str().unwrap();

    // An API server that is not there: attached, but the pod cache never syncs.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let kubeconfig = dir.0.join("unreachable-kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: t\n  cluster:\n    server: http://127.0.0.1:{port}\n\
             users:\n- name: t\n  user: {{}}\ncontexts:\n- name: t\n  context:\n    cluster: t\n    user: t\ncurrent-context: t\n"
        ),
    )
    .unwrap();
    let waiting = kube_sensor(scope, &kubeconfig);
    let addr = metrics_addr(&waiting);
    thread::sleep(Duration::from_millis(500));
    let (status, _, body) = http_get(&addr, "/readyz").unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("pod cache not synced"), "{body}");
    assert_eq!(http_get(&addr, "/healthz").unwrap().0, 200);
    let (live, out) = health(&waiting, None);
    assert!(live, "liveness: {out}");
    assert_eq!(out, "SERVING");
    let (ready, out) = health(&waiting, Some("sensor.v1.Sensor"));
    assert!(!ready, "readiness before the pod cache synced: {out}");
    assert_eq!(out, "NOT_SERVING");
    assert_eq!(Scrape::get(&addr).value("sensor_ready", &[]), 0.0);
    let (exit, stderr) = waiting.stop_with(libc::SIGTERM);
    assert!(exit.success(), "{exit}; stderr:\n{stderr}");

    // A working API server: ready once its list is in. One pod on this node, with no
    // securityContext at all: its posture findings are counted.
    let api = KubeApi::start();
    let node = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    api.add(sensor_tests::kubeapi::pod(
        "shop",
        "web-5d8f7c9b7-ppppp",
        "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d",
        &"e5".repeat(32),
        "registry.local/web:1",
        "web",
        node.trim(),
    ));
    let kubeconfig = api.kubeconfig(&dir.0);
    let sensor = kube_sensor(scope, &kubeconfig);
    let addr = metrics_addr(&sensor);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (ready, out) = health(&sensor, Some("sensor.v1.Sensor"));
        if ready {
            assert_eq!(out, "SERVING");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never ready: {out}\n{}",
            sensor.stderr_text()
        );
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(http_get(&addr, "/readyz").unwrap().0, 200);
    // The counter board follows within a slow tick.
    let s = scrape_until(&addr, "the synced pod watcher", |s| {
        s.try_value("sensor_pod_watch_synced", &[]) == Some(1.0)
    });
    assert_eq!(s.value("sensor_ready", &[]), 1.0);
    s.assert_type("sensor_pod_posture_findings", "gauge");
    let findings = [("namespace", "shop"), ("finding", "")];
    for (finding, pods) in [
        ("allow_privilege_escalation", 1.0),
        ("runs_as_root", 1.0),
        ("no_seccomp_profile", 1.0),
    ] {
        let labels = [findings[0], ("finding", finding)];
        assert_eq!(s.value("sensor_pod_posture_findings", &labels), pods);
    }
    assert_eq!(
        s.try_value(
            "sensor_pod_posture_findings",
            &[findings[0], ("finding", "host_network")]
        ),
        None
    );
    // `sensor posture` names the pod and its findings (from the daemon's pod index).
    let posture: serde_json::Value =
        serde_json::from_slice(&sensor.cli(&["posture", "-o", "json"]).stdout).unwrap();
    let pods = posture["pods"].as_array().expect("pods from the daemon");
    assert_eq!(pods.len(), 1, "{posture}");
    assert_eq!(pods[0]["namespace"], "shop");
    assert_eq!(pods[0]["name"], "web-5d8f7c9b7-ppppp");
    let found: Vec<&str> = pods[0]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    for finding in [
        "allow_privilege_escalation",
        "runs_as_root",
        "no_seccomp_profile",
    ] {
        assert!(found.contains(&finding), "{finding} not in {found:?}");
    }
    assert!(!found.contains(&"host_network"), "{found:?}");
    let text = String::from_utf8(sensor.cli(&["posture"]).stdout).unwrap();
    assert!(
        text.contains("pods with findings (1):") && text.contains("shop/web-5d8f7c9b7-ppppp"),
        "{text}"
    );
    // The node posture gauges agree with `sensor posture`, and the start-up log names it.
    s.assert_type("sensor_node_posture", "gauge");
    let posture: serde_json::Value =
        serde_json::from_slice(&sensor.cli(&["posture", "-o", "json"]).stdout).unwrap();
    assert_eq!(
        s.value("sensor_node_posture", &[("check", "btf")]),
        f64::from(u8::from(posture["btf"] == true))
    );
    assert_eq!(
        s.value("sensor_node_posture", &[("check", "bpf_lsm_active")]),
        f64::from(u8::from(posture["bpf_lsm"]["active"] == true))
    );
    assert_eq!(
        s.value("sensor_node_posture", &[("check", "cgroup_v2")]),
        f64::from(u8::from(posture["cgroup"] == "v2"))
    );
    for check in ["reboot_pending", "lockdown"] {
        assert!(
            s.try_value("sensor_node_posture", &[("check", check)])
                .is_some()
        );
    }
    assert!(
        sensor.stderr_text().contains("node posture"),
        "{}",
        sensor.stderr_text()
    );
}

#[test]
fn sigterm_ends_subscriptions_and_every_event_is_in_the_journal() {
    require_root();
    let cg = TestCgroup::new();
    let ns = NetNs::with_metadata_addresses();
    let state = StateDir::new();
    let scope = cg.path.to_str().unwrap();
    let args = [
        "--scope-cgroup",
        scope,
        "--mode",
        "enforce",
        "--metrics-addr",
        "127.0.0.1:0",
    ];
    let sensor = Sensor::start_in(&state, &args);
    let addr = metrics_addr(&sensor);
    let inside = Place::inside(&ns, &cg.path);
    let n = 4;
    for port in 0..n {
        assert_eq!(
            probe_net(&inside, "tcp", "169.254.169.254", 80 + port).errno,
            EPERM
        );
    }
    let seqs: Vec<u64> = sensor
        .wait_for(n as usize, |e| e["kind"] == "connect")
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    // A live gRPC subscriber: its stream ends cleanly at shutdown (no error, no hang).
    let socket = sensor.socket().to_owned();
    let (tx, rx) = std::sync::mpsc::channel();
    let subscriber = thread::spawn(move || {
        sensor_tests::block_on(async move {
            use sensor_proto::v1 as pb;
            let mut client =
                pb::sensor_client::SensorClient::new(sensor_tests::grpc_channel(&socket).await);
            let mut stream = client
                .get_events(pb::GetEventsRequest {
                    follow: true,
                    ..Default::default()
                })
                .await
                .expect("GetEvents")
                .into_inner();
            let _ = tx.send(());
            let mut received = 0;
            loop {
                match stream.message().await {
                    Ok(Some(_)) => received += 1,
                    Ok(None) => return Ok(received),
                    Err(status) => return Err(status.to_string()),
                }
            }
        })
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("subscribed");
    scrape_until(&addr, "the subscriber", |s| {
        s.try_value("sensor_subscribers", &[]) == Some(1.0)
    });

    let started = Instant::now();
    let (exit, stderr) = sensor.stop_with(libc::SIGTERM);
    assert!(exit.success(), "{exit}; stderr:\n{stderr}");
    assert!(started.elapsed() < Duration::from_secs(5), "slow shutdown");
    let ended = subscriber.join().unwrap();
    assert!(ended.is_ok(), "the stream ended with an error: {ended:?}");
    assert!(
        TcpStream::connect(&addr).is_err(),
        "metrics listener still open"
    );

    // Restarted on the same node state: every event is in the journal, with the same numbers.
    let restarted = Sensor::start_in(&state, &args);
    let mut replay = Tail::start(restarted.socket(), &["--from-seq", "1", "-o", "json"]);
    assert!(replay.wait_exit().success());
    let replayed: Vec<u64> = replay
        .events()
        .iter()
        .filter(|e| e["kind"] == "connect")
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(replayed, seqs, "journal after SIGTERM");
}

#[test]
fn a_metrics_address_in_use_fails_before_anything_is_attached() {
    require_root();
    let cg = TestCgroup::new();
    let state = StateDir::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(sensor_tests::sensor_bin())
        .args(["run", "--scope-cgroup", cg.path.to_str().unwrap()])
        .args(["--metrics-addr", &addr, "--socket"])
        .arg(state.socket())
        .arg("--journal-dir")
        .arg(state.journal())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("sensor: error: metrics listener {addr}")),
        "{stderr}"
    );
    assert!(!stderr.contains("attached"), "{stderr}");
    assert!(!state.journal().exists(), "nothing was opened");
}
