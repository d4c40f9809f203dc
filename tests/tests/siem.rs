//! Network SIEM export (`--export syslog://`, `syslog+tls://`, `otlp://`, `otlp+tls://`) to real
//! receivers: a private rsyslogd (plain, TLS and mutual-TLS inputs; messages read back through
//! `syslog-rfc5424-parser` and `pycef`) and an OTLP logs receiver made of the official protos
//! (`opentelemetry-proto` + `grpcio`). Every event once and in order in a normal run; across a
//! receiver killed mid-stream or a `kill -9` of the daemon, no gap and repeats only of the one
//! batch in flight; a destination down past journal retention gets one `lost` record with the
//! exact count. The receivers themselves are checked first (`receivers_self_test`).

use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::TcpStream,
    path::Path,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use sensor_harness::Options;
use sensor_tests::{
    ChildGuard, Delivery, NetNs, OtlpOptions, OtlpReceiver, Place, Rsyslog, Sensor, StateDir,
    SyslogInput, TempDir, TestCa, TestCgroup, assert_delivery, bench_gen_bin, chmod_burst,
    closed_port, metrics_addr, poll, probe_exec, probe_exec_wait, probe_net, python_tool,
    require_root,
    siem::{MAX_BATCH, path_str},
    stop_counters,
};
use serde_json::{Value, json};

const CLUSTER: &str = "test-cluster";
const SD_ID: &str = "sensor@32473";

// ---------------------------------------------------------------------------------------------
// Reading what the daemon and the receivers hold.

/// Every line of a `file:` export (one file: the tests never reach the rotation size).
fn file_lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "{} ends in the middle of a line",
        path.display()
    );
    text.lines()
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{}:{}: not JSON ({e}): {l}", path.display(), i + 1))
        })
        .collect()
}

/// Wait until the file export satisfies `pred`.
fn wait_file(path: &Path, timeout: Duration, what: &str, pred: impl Fn(&[Value]) -> bool) {
    let mut n = 0;
    poll(timeout, Duration::from_millis(100), || {
        let lines = file_lines(path);
        n = lines.len();
        pred(&lines).then_some(())
    })
    .unwrap_or_else(|| panic!("file export: waited {timeout:?} for {what}; {n} lines"));
}

/// What the journal held, as the `file:` export (exactly once, in order) shows it: the event
/// sequence numbers in order, each event by number, and the journal loss records
/// (first_seq, last_seq, count) of numbers a crash handed out but never wrote.
struct Journal {
    seqs: Vec<u64>,
    by_seq: BTreeMap<u64, Value>,
    losses: Vec<(u64, u64, u64)>,
}

impl Journal {
    fn from_file_export(path: &Path) -> Self {
        let lines = file_lines(path);
        let mut seqs = Vec::new();
        let mut by_seq = BTreeMap::new();
        let mut losses = Vec::new();
        for l in &lines {
            if let Some(seq) = l["seq"].as_u64() {
                assert!(
                    seqs.last().is_none_or(|&last| seq > last),
                    "file export: seq {seq} after {:?}",
                    seqs.last()
                );
                seqs.push(seq);
                by_seq.insert(seq, l.clone());
            } else {
                assert!(
                    l["kind"] == "lost" && l["lost"]["stage"] == "journal",
                    "file export: a record without seq that is not a journal loss: {l}"
                );
                losses.push((
                    l["lost"]["first_seq"].as_u64().unwrap(),
                    l["lost"]["last_seq"].as_u64().unwrap(),
                    l["lost"]["count"].as_u64().unwrap(),
                ));
            }
        }
        // The file exporter's own guarantee: every number from 1 once, as an event or inside
        // a loss record.
        let covered: u64 = seqs.len() as u64 + losses.iter().map(|l| l.2).sum::<u64>();
        let max = seqs
            .iter()
            .copied()
            .chain(losses.iter().map(|l| l.1))
            .max()
            .expect("the file export is empty");
        assert_eq!(
            covered, max,
            "file export: numbers 1..={max} not each covered once"
        );
        Self {
            seqs,
            by_seq,
            losses,
        }
    }

    fn node(&self) -> String {
        self.by_seq.values().next().unwrap()["node"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}

/// RFC 3339 UTC (`2026-11-28T21:00:39.524923047Z`, any number of fraction digits) to ns
/// since the epoch.
fn unix_ns(s: &str) -> i128 {
    let bad = || -> ! { panic!("not an RFC 3339 UTC time: {s:?}") };
    let s2 = s.strip_suffix('Z').unwrap_or_else(|| bad());
    let (date, time) = s2.split_once('T').unwrap_or_else(|| bad());
    let d: Vec<i64> = date.split('-').map(|x| x.parse().unwrap()).collect();
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let t: Vec<i64> = hms.split(':').map(|x| x.parse().unwrap()).collect();
    assert!(d.len() == 3 && t.len() == 3 && frac.len() <= 9, "{s:?}");
    // Days from the civil date (proleptic Gregorian).
    let (y, m, day) = (if d[1] <= 2 { d[0] - 1 } else { d[0] }, d[1], d[2]);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + t[0] * 3600 + t[1] * 60 + t[2];
    let ns: i128 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<9}").parse().unwrap()
    };
    i128::from(secs) * 1_000_000_000 + ns
}

// ---------------------------------------------------------------------------------------------
// What the spec says each format carries for an event (its JSON form from the file export).

fn kind_of(e: &Value) -> &str {
    e["kind"].as_str().unwrap()
}

fn verdict_of(e: &Value) -> Option<&str> {
    e["verdict"].as_str()
}

fn policy_applied(e: &Value) -> bool {
    e["policy_change"]["accepted"].as_bool().unwrap_or(false)
}

/// A posture record that fails a check (docs/export.md): a pod with findings; a node without an
/// active BPF LSM or BTF, with a reboot pending, or not on cgroup v2.
fn posture_fails(e: &Value) -> bool {
    let p = &e["posture"];
    if p["subject"] == "node" {
        let n = &p["node"];
        n["bpf_lsm_active"] != true
            || n["btf"] != true
            || n["reboot_pending"] == true
            || n["cgroup"] != "v2"
    } else {
        p["findings"].as_array().is_some_and(|f| !f.is_empty())
    }
}

/// What the exporters call a posture record's verdict.
fn posture_verdict(e: &Value) -> &'static str {
    if posture_fails(e) { "fail" } else { "pass" }
}

/// The level of an event: 0 info (allowed, exec, exit, no verdict, posture that passes), 1
/// notice (audited, policy applied, posture that fails), 2 warning (blocked, killed), 3 error
/// (lost, policy refused).
fn level(e: &Value) -> usize {
    match (kind_of(e), verdict_of(e)) {
        ("lost", _) => 3,
        ("policy", _) if policy_applied(e) => 1,
        ("policy", _) => 3,
        ("posture", _) => usize::from(posture_fails(e)),
        (_, Some("blocked" | "killed")) => 2,
        (_, Some("audited")) => 1,
        _ => 0,
    }
}

fn syslog_severity(e: &Value) -> u64 {
    [6, 5, 4, 3][level(e)]
}

fn cef_severity(e: &Value) -> &'static str {
    ["3", "5", "7", "8"][level(e)]
}

fn otlp_severity(e: &Value) -> (u64, &'static str) {
    [(9, "INFO"), (10, "INFO2"), (13, "WARN"), (17, "ERROR")][level(e)]
}

/// CEF `KIND:VERDICT` (`exec`, `lost` without a verdict; `policy:applied`/`policy:refused`).
fn cef_signature(e: &Value) -> String {
    match (kind_of(e), verdict_of(e)) {
        ("policy", _) => format!(
            "policy:{}",
            if policy_applied(e) {
                "applied"
            } else {
                "refused"
            }
        ),
        ("posture", _) => format!("posture:{}", posture_verdict(e)),
        (k, Some(v)) => format!("{k}:{v}"),
        (k, None) => k.to_owned(),
    }
}

/// The file a chmod event names: the resolved name, else the path argument, else (LSM tier)
/// the file's own name.
fn chmod_file(e: &Value) -> Option<&str> {
    ["name", "path", "file_name"]
        .iter()
        .find_map(|k| e["chmod"][k].as_str().filter(|s| !s.is_empty()))
}

/// The string value of an SD parameter, if present.
fn sd<'a>(m: &'a Value, param: &str) -> Option<&'a str> {
    m["sd"][SD_ID][param].as_str()
}

fn sd_seq(m: &Value) -> Option<u64> {
    sd(m, "seq").map(|s| s.parse().unwrap_or_else(|_| panic!("SD seq {s:?}")))
}

/// The RFC 5424 header and structured data of one message against the event it carries.
fn check_syslog_envelope(m: &Value, e: &Value, facility: u64, sensor_pid: u32) {
    let ctx = || format!("message {m}\nevent {e}");
    assert_eq!(m["version"], 1, "{}", ctx());
    assert_eq!(m["appname"], "sensor", "{}", ctx());
    assert_eq!(
        m["procid"],
        sensor_pid,
        "PROCID is the daemon's pid: {}",
        ctx()
    );
    assert_eq!(m["hostname"], e["node"], "{}", ctx());
    assert_eq!(m["msgid"], e["kind"], "{}", ctx());
    assert_eq!(m["facility"], facility, "{}", ctx());
    assert_eq!(m["severity"], syslog_severity(e), "{}", ctx());
    assert_eq!(
        m["pri"],
        facility * 8 + syslog_severity(e),
        "PRI: {}",
        ctx()
    );
    assert_eq!(m["bom"], false, "no BOM: {}", ctx());
    let ts = m["timestamp"].as_str().unwrap();
    let (_, frac) = ts.rsplit_once('.').unwrap_or(("", ""));
    assert!(
        ts.len() == "2026-12-04T19:00:00.123456Z".len() && frac.len() == 7 && frac.ends_with('Z'),
        "TIMESTAMP with microseconds, UTC: {}",
        ctx()
    );
    // Not before the event (the event's time cut to microseconds), and not long after.
    let (t, ev) = (unix_ns(ts), unix_ns(e["time"].as_str().unwrap()));
    assert!(
        t >= ev - ev.rem_euclid(1000) && t < ev + 60_000_000_000,
        "TIMESTAMP {ts} vs event time {}: {}",
        e["time"],
        ctx()
    );
    let seq = e["seq"].as_u64();
    assert_eq!(sd_seq(m), seq, "SD seq: {}", ctx());
    let node = e["node"].as_str().unwrap();
    match seq {
        Some(seq) => assert_eq!(
            sd(m, "uid"),
            Some(format!("{node}:{seq}").as_str()),
            "{}",
            ctx()
        ),
        None => assert_eq!(sd(m, "uid"), None, "{}", ctx()),
    }
    assert_eq!(sd(m, "kind"), Some(kind_of(e)), "SD kind: {}", ctx());
    assert_eq!(sd(m, "node"), Some(node), "SD node: {}", ctx());
    assert_eq!(sd(m, "cluster"), Some(CLUSTER), "SD cluster: {}", ctx());
    match (kind_of(e), verdict_of(e)) {
        (_, Some(v)) => assert_eq!(sd(m, "verdict"), Some(v), "SD verdict: {}", ctx()),
        ("policy", None) => assert!(
            matches!(sd(m, "verdict"), None | Some("applied" | "refused")),
            "SD verdict of a policy record: {}",
            ctx()
        ),
        ("posture", None) => assert_eq!(
            sd(m, "verdict"),
            Some(posture_verdict(e)),
            "SD verdict of a posture record: {}",
            ctx()
        ),
        (_, None) => assert_eq!(
            sd(m, "verdict"),
            None,
            "no verdict, no SD verdict: {}",
            ctx()
        ),
    }
    assert_eq!(
        sd(m, "policy"),
        e["policy"].as_str(),
        "SD policy: {}",
        ctx()
    );
    assert_eq!(sd(m, "rule"), e["rule"].as_str(), "SD rule: {}", ctx());
    // The pod's namespace and name, as the event has them (none for host processes).
    assert_eq!(
        sd(m, "namespace"),
        e["pod"]["namespace"].as_str(),
        "{}",
        ctx()
    );
    assert_eq!(sd(m, "pod"), e["pod"]["name"].as_str(), "{}", ctx());
}

/// A CEF message (parsed by pycef: custom strings appear under their labels) against its
/// event.
fn check_cef(m: &Value, e: &Value) {
    let c = &m["cef"];
    let raw = m["msg"].as_str().unwrap();
    let ctx = || format!("CEF {raw}\nparsed {c}\nevent {e}");
    assert_eq!(c["CEFVersion"], "0", "{}", ctx());
    // The vendor is OCSF's `vendor_name` (docs/export.md, "CEF mapping").
    assert_eq!(c["DeviceVendor"], "sensor project", "{}", ctx());
    assert_eq!(c["DeviceProduct"], "sensor", "{}", ctx());
    assert!(
        c["DeviceVersion"].as_str().is_some_and(|v| !v.is_empty()),
        "{}",
        ctx()
    );
    assert_eq!(c["DeviceEventClassID"], cef_signature(e), "{}", ctx());
    assert!(
        c["Name"].as_str().is_some_and(|v| !v.is_empty()),
        "{}",
        ctx()
    );
    assert_eq!(c["Severity"], cef_severity(e), "{}", ctx());
    let ms = unix_ns(e["time"].as_str().unwrap()) / 1_000_000;
    assert_eq!(c["rt"], ms.to_string(), "rt = event time in ms: {}", ctx());
    match e["seq"].as_u64() {
        Some(seq) => assert_eq!(c["externalId"], seq.to_string(), "{}", ctx()),
        None => assert!(c.get("externalId").is_none(), "{}", ctx()),
    }
    assert_eq!(c["dvchost"], e["node"], "{}", ctx());
    assert_eq!(c["cat"], e["kind"], "{}", ctx());
    match (kind_of(e), verdict_of(e)) {
        ("policy", _) => assert!(
            matches!(c["act"].as_str(), None | Some("applied" | "refused")),
            "act of a policy record: {}",
            ctx()
        ),
        ("posture", _) => assert_eq!(
            c["act"].as_str(),
            Some(posture_verdict(e)),
            "act of a posture record: {}",
            ctx()
        ),
        (_, v) => assert_eq!(c["act"].as_str(), v, "act: {}", ctx()),
    }
    if let Some(pid) = e["pid"].as_u64().filter(|&p| p != 0) {
        assert_eq!(c["spid"], pid.to_string(), "{}", ctx());
        assert_eq!(
            c["suid"],
            e["uid"].as_u64().unwrap().to_string(),
            "{}",
            ctx()
        );
    }
    // The program: the executable's file name, else comm (which a process can set).
    let program = e["exe"]
        .as_str()
        .and_then(|x| x.rsplit('/').next())
        .filter(|n| !n.is_empty())
        .or_else(|| e["comm"].as_str().filter(|s| !s.is_empty()));
    if let Some(program) = program {
        assert_eq!(c["sproc"], program, "{}", ctx());
    }
    if kind_of(e) == "connect" {
        assert_eq!(c["dst"], e["connect"]["dst_addr"], "{}", ctx());
        assert_eq!(
            c["dpt"],
            e["connect"]["dst_port"].as_u64().unwrap().to_string(),
            "{}",
            ctx()
        );
        assert_eq!(
            c["proto"].as_str(),
            e["connect"]["protocol"]
                .as_str()
                .map(str::to_ascii_uppercase)
                .as_deref(),
            "{}",
            ctx()
        );
    }
    if kind_of(e) == "chmod" {
        assert_eq!(c["filePath"].as_str(), chmod_file(e), "filePath: {}", ctx());
    }
    // Custom strings: pycef names them after their labels; the positions are the spec's.
    assert_eq!(c["cluster"], CLUSTER, "{}", ctx());
    assert!(
        raw.contains(&format!("cs6Label=cluster cs6={CLUSTER}")),
        "cs6 is the cluster: {}",
        ctx()
    );
    assert_eq!(c["policy"].as_str(), e["policy"].as_str(), "cs5: {}", ctx());
    assert_eq!(c["rule"].as_str(), e["rule"].as_str(), "cs4: {}", ctx());
    if let Some(rule) = e["rule"].as_str() {
        assert!(
            raw.contains(&format!("cs4Label=rule cs4={rule}")),
            "{}",
            ctx()
        );
    }
    if let Some(policy) = e["policy"].as_str() {
        assert!(
            raw.contains(&format!("cs5Label=policy cs5={policy}")),
            "{}",
            ctx()
        );
    }
    assert!(
        c.get("namespace").is_none() && c.get("pod").is_none(),
        "{}",
        ctx()
    );
    assert!(
        c["msg"].as_str().is_some_and(|s| !s.is_empty()),
        "msg: the summary: {}",
        ctx()
    );
    assert!(
        c.get("cnt").is_none(),
        "one record stands for one event: {}",
        ctx()
    );
}

/// An OTLP record (as the receiver wrote it) against its event, whose JSON form is the body.
fn check_otlp(r: &Value, e: &Value, node: &str) {
    let ctx = || format!("record {r}\nevent {e}");
    let res = &r["resource"];
    assert_eq!(res["service.name"], "sensor", "{}", ctx());
    assert!(
        res["service.version"]
            .as_str()
            .is_some_and(|v| !v.is_empty()),
        "{}",
        ctx()
    );
    assert_eq!(res["host.name"], node, "{}", ctx());
    assert_eq!(res["k8s.node.name"], node, "{}", ctx());
    assert_eq!(res["k8s.cluster.name"], CLUSTER, "{}", ctx());
    assert_eq!(r["scope"], "sensor", "{}", ctx());
    let body: Value = serde_json::from_str(r["body"].as_str().expect("a string body"))
        .unwrap_or_else(|err| panic!("body is not JSON ({err}): {}", ctx()));
    assert_eq!(&body, e, "body = the event's JSON line");
    let a = &r["attributes"];
    let kind = kind_of(e);
    assert_eq!(a["sensor.kind"], kind, "{}", ctx());
    assert_eq!(r["event_name"], format!("sensor.{kind}"), "{}", ctx());
    let (number, text) = otlp_severity(e);
    assert_eq!(r["severity_number"], number, "{}", ctx());
    assert_eq!(r["severity_text"], text, "{}", ctx());
    assert_eq!(
        r["time_unix_nano"].as_u64().map(i128::from),
        Some(unix_ns(e["time"].as_str().unwrap())),
        "time_unix_nano = event time: {}",
        ctx()
    );
    match e["seq"].as_u64() {
        Some(seq) => {
            assert_eq!(a["sensor.seq"], seq, "an int: {}", ctx());
            assert_eq!(a["sensor.uid"], format!("{node}:{seq}"), "{}", ctx());
        }
        None => assert!(a.get("sensor.seq").is_none(), "{}", ctx()),
    }
    if let Some(v) = verdict_of(e) {
        assert_eq!(a["sensor.verdict"], v, "{}", ctx());
    }
    assert_eq!(
        a["sensor.policy"].as_str(),
        e["policy"].as_str(),
        "{}",
        ctx()
    );
    assert_eq!(a["sensor.rule"].as_str(), e["rule"].as_str(), "{}", ctx());
    if let Some(pid) = e["pid"].as_u64().filter(|&p| p != 0) {
        assert_eq!(a["process.pid"], pid, "an int: {}", ctx());
        assert_eq!(a["process.user.id"], e["uid"], "an int: {}", ctx());
    }
    if let Some(ppid) = e["ppid"].as_u64() {
        assert_eq!(a["process.parent_pid"], ppid, "{}", ctx());
    }
    if let Some(exe) = e["exe"].as_str() {
        assert_eq!(a["process.executable.path"], exe, "{}", ctx());
    }
    if let Some(args) = e["args"].as_array() {
        assert_eq!(
            a["process.command_args"].as_array(),
            Some(args),
            "{}",
            ctx()
        );
    }
    if kind == "chmod" {
        assert_eq!(a["file.path"].as_str(), chmod_file(e), "{}", ctx());
    }
    if kind == "connect" {
        assert_eq!(
            a["destination.address"],
            e["connect"]["dst_addr"],
            "{}",
            ctx()
        );
        assert_eq!(a["destination.port"], e["connect"]["dst_port"], "{}", ctx());
    }
    if kind == "lost" {
        let l = &e["lost"];
        assert_eq!(a["sensor.lost.count"], l["count"], "{}", ctx());
        assert_eq!(a["sensor.lost.first_seq"], l["first_seq"], "{}", ctx());
        assert_eq!(a["sensor.lost.last_seq"], l["last_seq"], "{}", ctx());
    }
    assert!(
        a.get("k8s.pod.name").is_none() && a.get("k8s.namespace.name").is_none(),
        "{}",
        ctx()
    );
}

/// The event sequence numbers of OTLP records, in arrival order.
fn otlp_seqs(records: &[Value]) -> Vec<u64> {
    records
        .iter()
        .filter_map(|r| r["attributes"]["sensor.seq"].as_u64())
        .collect()
}

/// The journal loss records among OTLP records: (first_seq, last_seq, count).
fn otlp_losses(records: &[Value]) -> Vec<(u64, u64, u64)> {
    records
        .iter()
        .filter(|r| {
            r["attributes"]["sensor.kind"] == "lost" && r["attributes"]["sensor.seq"].is_null()
        })
        .map(|r| {
            let a = &r["attributes"];
            (
                a["sensor.lost.first_seq"].as_u64().unwrap(),
                a["sensor.lost.last_seq"].as_u64().unwrap(),
                a["sensor.lost.count"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn syslog_seqs(messages: &[Value]) -> Vec<u64> {
    messages.iter().filter_map(sd_seq).collect()
}

fn syslog_losses(messages: &[Value]) -> Vec<(u64, u64, u64)> {
    messages
        .iter()
        .filter(|m| m["msgid"] == "lost" && sd_seq(m).is_none())
        .map(|m| {
            let n = |p| sd(m, p).unwrap().parse::<u64>().unwrap();
            (n("first_seq"), n("last_seq"), n("count"))
        })
        .collect()
}

/// The same loss records as the journal's, each at least once (repeats are part of a batch
/// sent again).
fn assert_same_losses(what: &str, mut got: Vec<(u64, u64, u64)>, journal: &Journal) {
    got.sort_unstable();
    got.dedup();
    let mut want = journal.losses.clone();
    want.sort_unstable();
    assert_eq!(got, want, "{what}: journal loss records");
}

/// `sensor_export_records_total` samples by destination label, from `/metrics`.
fn export_records_by_destination(addr: &str) -> BTreeMap<String, f64> {
    let mut s = TcpStream::connect(addr).expect("connecting to /metrics");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("sensor_export_records_total{") else {
            continue;
        };
        let (labels, value) = rest.rsplit_once("} ").expect("a sample line");
        let dest = labels
            .split("destination=\"")
            .nth(1)
            .and_then(|d| d.split('"').next())
            .unwrap_or_else(|| panic!("no destination label: {line}"));
        out.insert(dest.to_owned(), value.trim().parse::<f64>().unwrap());
    }
    out
}

fn quiet_options() -> Options {
    Options {
        stdout_events: false,
        ..Options::HOST
    }
}

/// `sensor run` scoped to `cg`, exporting to every one of `dests` with folding off and the
/// test cluster's name, `extra` flags after.
fn exporting_sensor(state: &StateDir, cg: &TestCgroup, dests: &[&str], extra: &[&str]) -> Sensor {
    let mut args = vec!["--scope-cgroup", path_str(&cg.path)];
    for d in dests {
        args.extend(["--export", d]);
    }
    args.extend(["--cluster-name", CLUSTER, "--export-fold-window", "0s"]);
    args.extend_from_slice(extra);
    Sensor::start_in_with(state, &args, &quiet_options())
}

/// A background chmod generator in `cg` (bench-gen: `n` calls at `rate` per second).
fn generator(cg: &TestCgroup, file: &Path, rate: u32, n: u32) -> ChildGuard {
    ChildGuard(
        Command::new(bench_gen_bin())
            .arg("--cgroup")
            .arg(&cg.path)
            .args(["paced", &rate.to_string(), &n.to_string()])
            .arg(file)
            .stdout(Stdio::null())
            .spawn()
            .expect("starting bench-gen"),
    )
}

fn wait_generator(mut g: ChildGuard) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = g.0.try_wait().unwrap() {
            assert!(status.success(), "bench-gen failed: {status}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "bench-gen still runs after 120 s"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------------------
// The receivers themselves.

/// Send RFC 6587 octet-counted messages (argv: the messages) over plain TCP or TLS.
const SYSLOG_CLIENT: &str = r#"
import socket, ssl, sys
port, ca, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
s = socket.create_connection(("127.0.0.1", port), timeout=10)
if ca:
    ctx = ssl.create_default_context(cafile=ca)
    if cert:
        ctx.load_cert_chain(cert, key)
    s = ctx.wrap_socket(s, server_hostname="127.0.0.1")
for m in sys.argv[5:]:
    b = m.encode()
    s.sendall(str(len(b)).encode() + b" " + b)
s.close()
"#;

fn send_syslog(port: u16, tls: Option<(&Path, Option<(&Path, &Path)>)>, messages: &[&str]) -> bool {
    let (ca, cert, key) = match tls {
        None => ("", "", ""),
        Some((ca, None)) => (path_str(ca), "", ""),
        Some((ca, Some((cert, key)))) => (path_str(ca), path_str(cert), path_str(key)),
    };
    let out = Command::new(python_tool("python"))
        .args(["-c", SYSLOG_CLIENT, &port.to_string(), ca, cert, key])
        .args(messages)
        .output()
        .expect("running the syslog client");
    if !out.status.success() {
        eprintln!("syslog client: {}", String::from_utf8_lossy(&out.stderr));
    }
    out.status.success()
}

/// One OTLP Export (argv: port, ca, cert, key, header "name: value" or "", body); prints `ok`
/// or the gRPC status code name.
const OTLP_CLIENT: &str = r#"
import sys, grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2 as svc, logs_service_pb2_grpc as stubs
from opentelemetry.proto.logs.v1 import logs_pb2 as logs
from opentelemetry.proto.common.v1 import common_pb2 as common
from opentelemetry.proto.resource.v1 import resource_pb2 as resource
port, ca, cert, key, header, body = sys.argv[1:7]
target = f"127.0.0.1:{port}"
if ca:
    creds = grpc.ssl_channel_credentials(open(ca, "rb").read(),
        open(key, "rb").read() if key else None, open(cert, "rb").read() if cert else None)
    channel = grpc.secure_channel(target, creds)
else:
    channel = grpc.insecure_channel(target)
kv = lambda k, v: common.KeyValue(key=k, value=v)
record = logs.LogRecord(
    time_unix_nano=1764874800123456789, severity_number=13, severity_text="WARN",
    event_name="sensor.chmod", body=common.AnyValue(string_value=body),
    attributes=[kv("sensor.seq", common.AnyValue(int_value=7)),
                kv("process.command_args", common.AnyValue(array_value=common.ArrayValue(
                    values=[common.AnyValue(string_value="chmod"), common.AnyValue(string_value="u+s")])))])
request = svc.ExportLogsServiceRequest(resource_logs=[logs.ResourceLogs(
    resource=resource.Resource(attributes=[kv("service.name", common.AnyValue(string_value="sensor"))]),
    scope_logs=[logs.ScopeLogs(scope=common.InstrumentationScope(name="sensor"), log_records=[record])])])
metadata = [tuple(x.strip() for x in header.split(":", 1))] if header else []
try:
    stubs.LogsServiceStub(channel).Export(request, metadata=metadata, timeout=10)
    print("ok")
except grpc.RpcError as e:
    print(e.code().name)
"#;

fn send_otlp(
    port: u16,
    tls: Option<(&Path, Option<(&Path, &Path)>)>,
    header: &str,
    body: &str,
) -> String {
    let (ca, cert, key) = match tls {
        None => ("", "", ""),
        Some((ca, None)) => (path_str(ca), "", ""),
        Some((ca, Some((cert, key)))) => (path_str(ca), path_str(cert), path_str(key)),
    };
    let out = Command::new(python_tool("python"))
        .args([
            "-c",
            OTLP_CLIENT,
            &port.to_string(),
            ca,
            cert,
            key,
            header,
            body,
        ])
        .output()
        .expect("running the OTLP client");
    assert!(
        out.status.success(),
        "OTLP client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn receivers_self_test() {
    require_root();
    let ca = TestCa::new();
    let mut rs = Rsyslog::start(
        &ca,
        &[SyslogInput::Plain, SyslogInput::Tls, SyslogInput::MutualTls],
    );
    let json_msg = r#"<34>1 2026-12-04T19:00:00.123456Z node-1 sensor 4242 chmod [sensor@32473 seq="7" uid="node-1:7" rule="a\"b\\c\]d"] {"seq":7,"kind":"chmod","cluster":"test-cluster"}"#;
    let cef_msg = r#"<132>1 2026-12-04T19:00:00.123456Z node-1 sensor 4242 chmod [sensor@32473 seq="8"] CEF:0|sensor|sensor|0.1.0|chmod:blocked|chmod blocked (deny-setid-chmod)|7|rt=1764874800123 externalId=8 filePath=/tmp/a b\=c cs6Label=cluster cs6=test-cluster msg=chmod 4755 x\\y"#;
    let newline_msg = "<134>1 2026-12-04T19:00:00.123456Z node-1 sensor 4242 exec - a\nb\n";
    let ca_only = Some((ca.ca.as_path(), None));
    let with_cert = Some((
        ca.ca.as_path(),
        Some((ca.client_cert.as_path(), ca.client_key.as_path())),
    ));
    assert!(send_syslog(
        rs.port(SyslogInput::Tls),
        ca_only,
        &[json_msg, cef_msg, newline_msg]
    ));
    assert!(send_syslog(rs.port(SyslogInput::Plain), None, &[cef_msg]));
    assert!(send_syslog(
        rs.port(SyslogInput::MutualTls),
        with_cert,
        &[json_msg]
    ));
    // Without a client certificate the mutual-TLS input takes nothing.
    let _ = send_syslog(rs.port(SyslogInput::MutualTls), ca_only, &[cef_msg]);

    let tls = rs.wait_messages(
        SyslogInput::Tls,
        false,
        Duration::from_secs(10),
        "3 messages",
        |m| m.len() >= 3,
    );
    assert_eq!(tls.len(), 3, "{tls:?}");
    let m = &tls[0];
    assert_eq!(
        (
            &m["pri"],
            &m["facility"],
            &m["severity"],
            &m["hostname"],
            &m["appname"],
            &m["procid"],
            &m["msgid"]
        ),
        (
            &json!(34),
            &json!(4),
            &json!(2),
            &json!("node-1"),
            &json!("sensor"),
            &json!(4242),
            &json!("chmod")
        ),
        "{m}"
    );
    assert_eq!(m["timestamp"], "2026-12-04T19:00:00.123456Z");
    assert_eq!(
        m["sd"][SD_ID]["rule"], r#"a"b\c]d"#,
        "SD escapes undone: {m}"
    );
    let payload: Value = serde_json::from_str(m["msg"].as_str().unwrap()).unwrap();
    assert_eq!(payload["seq"], 7);
    // rsyslog keeps the message as sent but escapes control characters: a newline inside a
    // message, and a trailing one, show (so a sender's stray newline fails the JSON parse).
    assert_eq!(tls[2]["msg"], "a#012b#012", "{}", tls[2]);
    let raw = rs.raw_lines(SyslogInput::Tls);
    assert_eq!(
        raw[0], json_msg,
        "rsyslog wrote the message exactly as received"
    );

    let plain = rs.wait_messages(
        SyslogInput::Plain,
        true,
        Duration::from_secs(10),
        "1",
        |m| !m.is_empty(),
    );
    let c = &plain[0]["cef"];
    assert_eq!(plain[0]["facility"], 16, "local0");
    assert_eq!(plain[0]["severity"], 4);
    assert_eq!(c["DeviceEventClassID"], "chmod:blocked", "{c}");
    assert_eq!(c["Name"], "chmod blocked (deny-setid-chmod)", "{c}");
    assert_eq!(c["Severity"], "7", "{c}");
    assert_eq!(c["filePath"], "/tmp/a b=c", "CEF escapes undone: {c}");
    assert_eq!(c["msg"], r"chmod 4755 x\y", "{c}");
    assert_eq!(c["cluster"], "test-cluster", "cs6 under its label: {c}");
    assert_eq!(c["externalId"], "8", "{c}");

    let mtls = rs.wait_messages(
        SyslogInput::MutualTls,
        false,
        Duration::from_secs(10),
        "1",
        |m| !m.is_empty(),
    );
    thread::sleep(Duration::from_millis(500));
    assert_eq!(
        rs.messages(SyslogInput::MutualTls).len(),
        1,
        "the mutual-TLS input took a message from a client without a certificate: {mtls:?}"
    );

    // A line that is not RFC 5424 fails the check, naming the line.
    let bad = TempDir::new();
    let bad_file = bad.0.join("bad.log");
    std::fs::write(&bad_file, format!("{json_msg}\nnot syslog\n")).unwrap();
    let out = Command::new(python_tool("python"))
        .arg(sensor_tests::siem::validator("syslog_check.py"))
        .arg(&bad_file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("bad.log:2:"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Killed and restarted on the same ports: the files continue.
    let (tls_port, old_pid) = (rs.port(SyslogInput::Tls), rs.pid());
    rs.kill();
    assert!(!sensor_tests::siem::listening(tls_port));
    rs.restart();
    assert_ne!(rs.pid(), old_pid);
    assert_eq!(rs.port(SyslogInput::Tls), tls_port);
    assert!(send_syslog(tls_port, ca_only, &[json_msg]));
    rs.wait_messages(
        SyslogInput::Tls,
        false,
        Duration::from_secs(10),
        "4 messages",
        |m| m.len() == 4,
    );

    // OTLP: mutual TLS and a required header.
    let mut otlp = OtlpReceiver::start(
        OtlpOptions::mutual_tls(&ca).with_header("authorization", "Bearer sensor-test"),
    );
    let port = otlp.port();
    assert_eq!(
        send_otlp(
            port,
            with_cert,
            "authorization: Bearer sensor-test",
            "{\"seq\":7}"
        ),
        "ok"
    );
    assert_eq!(
        send_otlp(port, with_cert, "authorization: Bearer wrong", "x"),
        "UNAUTHENTICATED"
    );
    assert_eq!(send_otlp(port, with_cert, "", "x"), "UNAUTHENTICATED");
    assert_eq!(
        send_otlp(port, ca_only, "authorization: Bearer sensor-test", "x"),
        "UNAVAILABLE",
        "no client certificate, no connection"
    );
    let records = otlp.records();
    assert_eq!(records.len(), 1, "only the accepted request: {records:?}");
    let r = &records[0];
    assert_eq!(r["body"], "{\"seq\":7}");
    assert_eq!(r["attributes"]["sensor.seq"], 7, "ints stay ints: {r}");
    assert_eq!(
        r["attributes"]["process.command_args"],
        json!(["chmod", "u+s"]),
        "{r}"
    );
    assert_eq!(r["resource"]["service.name"], "sensor");
    assert_eq!(r["scope"], "sensor");
    assert_eq!(r["severity_number"], 13);
    assert_eq!(r["severity_text"], "WARN");
    assert_eq!(r["event_name"], "sensor.chmod");
    assert_eq!(r["time_unix_nano"], 1_764_874_800_123_456_789_u64);
    otlp.kill();
    assert_eq!(
        send_otlp(port, with_cert, "authorization: Bearer sensor-test", "x"),
        "UNAVAILABLE"
    );
    otlp.restart();
    assert_eq!(otlp.port(), port);
    assert_eq!(
        send_otlp(
            port,
            with_cert,
            "authorization: Bearer sensor-test",
            "again"
        ),
        "ok"
    );
    assert_eq!(otlp.records().len(), 2);

    // Plain h2c.
    let h2c = OtlpReceiver::start(OtlpOptions::default());
    assert_eq!(send_otlp(h2c.port(), None, "", "plain"), "ok");
    assert_eq!(h2c.records()[0]["body"], "plain");
}

#[test]
fn delivery_checks_catch_gaps_strays_and_repeats_beyond_one_batch() {
    let expected: Vec<u64> = (1..=3000).collect();
    let fails = |got: Vec<u64>, d: Delivery| {
        let e = expected.clone();
        std::panic::catch_unwind(move || assert_delivery("t", &got, &e, d)).is_err()
    };
    assert!(!fails(expected.clone(), Delivery::ExactlyOnce));
    let mut gap = expected.clone();
    gap.remove(1500);
    assert!(fails(gap.clone(), Delivery::AtLeastOnce), "a gap");
    let mut stray = expected.clone();
    stray.push(5000);
    assert!(
        fails(stray, Delivery::AtLeastOnce),
        "a number not in the journal"
    );
    // One batch again (at most MAX_BATCH numbers): fine across a crash, not without one.
    let mut again: Vec<u64> = (1..=2000).collect();
    again.extend(2000 - MAX_BATCH + 1..=3000);
    assert!(!fails(again.clone(), Delivery::AtLeastOnce));
    assert!(fails(again, Delivery::ExactlyOnce));
    let mut two: Vec<u64> = (1..=2000).collect();
    two.extend(1..=10);
    two.extend(2001..=3000);
    two.extend(2900..=2910);
    assert!(fails(two, Delivery::AtLeastOnce), "repeats in two places");
    let mut unordered = expected.clone();
    unordered.swap(10, 11);
    assert!(fails(unordered.clone(), Delivery::ExactlyOnce));
    assert!(!fails(unordered, Delivery::AtLeastOnce));
}

// ---------------------------------------------------------------------------------------------
// The daemon against them.

#[test]
fn syslog_tls_json_and_plain_cef_receive_every_event_once_in_order() {
    require_root();
    let ca = TestCa::new();
    let rs = Rsyslog::start(&ca, &[SyslogInput::Tls, SyslogInput::Plain]);
    let cg = TestCgroup::new();
    let ns = NetNs::with_metadata_addresses();
    let out = TempDir::new();
    let dir = out.real();
    let file_export = dir.join("events.jsonl");
    let tls_dest = format!(
        "syslog+tls://127.0.0.1:{}?ca={}&format=json",
        rs.port(SyslogInput::Tls),
        ca.ca.display()
    );
    let cef_dest = format!(
        "syslog://127.0.0.1:{}?format=cef&facility=local0",
        rs.port(SyslogInput::Plain)
    );
    let file_dest = format!("file:{}", file_export.display());
    let state = StateDir::new();
    let sensor = exporting_sensor(
        &state,
        &cg,
        &[&tls_dest, &cef_dest, &file_dest],
        &["--metrics-addr", "127.0.0.1:0"],
    );
    let sensor_pid = sensor.pid();

    // A blocked connect, a burst of chmods, a set-id chmod that is denied, an exec.
    let r = probe_net(&Place::inside(&ns, &cg.path), "tcp", "169.254.169.254", 80);
    assert_eq!(r.errno, i64::from(libc::EPERM));
    let target = dir.join("target");
    std::fs::write(&target, b"x").unwrap();
    let burst_pid = chmod_burst(&cg.path, &target, 300, 100, 5);
    let setid = dir.join("tool");
    std::fs::write(&setid, b"x").unwrap();
    let setid_pid = {
        let mut c = probe_exec(
            &Place::cgroup(&cg.path),
            &["chmod", "u+s", path_str(&setid)],
        );
        drop(c.stdin.take());
        let pid = c.id();
        let status = c.wait().unwrap();
        assert!(!status.success(), "the set-id chmod was denied: {status:?}");
        pid
    };
    let true_pid = probe_exec_wait(&Place::cgroup(&cg.path), &["/bin/true"]);
    wait_file(
        &file_export,
        Duration::from_secs(30),
        "the scenario's events",
        |ls| {
            ls.iter()
                .any(|l| l["kind"] == "exit" && l["pid"] == true_pid)
                && ls
                    .iter()
                    .any(|l| l["kind"] == "chmod" && l["pid"] == setid_pid)
                && ls
                    .iter()
                    .any(|l| l["kind"] == "connect" && l["pid"] == r.pid)
                && ls
                    .iter()
                    .filter(|l| l["kind"] == "chmod" && l["pid"] == burst_pid)
                    .count()
                    >= 300
        },
    );
    let n = file_lines(&file_export).len();
    // Every destination delivers while the sensor runs; /metrics counts per destination.
    rs.wait_messages(
        SyslogInput::Tls,
        false,
        Duration::from_secs(30),
        "every event",
        |m| m.len() >= n,
    );
    rs.wait_messages(
        SyslogInput::Plain,
        true,
        Duration::from_secs(30),
        "every event",
        |m| m.len() >= n,
    );
    let addr = metrics_addr(&sensor);
    let per_destination = poll(Duration::from_secs(10), Duration::from_millis(200), || {
        let m = export_records_by_destination(&addr);
        (m.len() == 3 && m.values().all(|&v| v == n as f64)).then_some(m)
    })
    .unwrap_or_else(|| {
        panic!(
            "sensor_export_records_total: want 3 destinations with {n} each, have {:?}",
            export_records_by_destination(&addr)
        )
    });
    eprintln!("per destination: {per_destination:?}");

    let (status, stderr) = sensor.stop();
    assert!(status.success(), "{stderr}");
    let journal = Journal::from_file_export(&file_export);
    assert!(journal.losses.is_empty(), "no journal loss in a normal run");
    assert_eq!(journal.seqs[0], 1, "a fresh journal starts at 1");
    let node = journal.node();
    let c = stop_counters(&stderr);
    assert_eq!(c["export_records"], 3 * journal.seqs.len() as u64, "{c}");
    assert_eq!(c["export_lost"], 0, "{c}");
    assert_eq!(c["export_lag"], 0, "{c}");

    // TLS, JSON: the event's JSON line, once each, in order.
    let tls = rs.messages(SyslogInput::Tls);
    for m in &tls {
        let seq = sd_seq(m).unwrap_or_else(|| panic!("no SD seq: {m}"));
        let e = &journal.by_seq[&seq];
        check_syslog_envelope(m, e, 4, sensor_pid);
        let payload: Value = serde_json::from_str(m["msg"].as_str().unwrap())
            .unwrap_or_else(|err| panic!("msg is not JSON ({err}): {m}"));
        assert_eq!(&payload, e, "the payload is the file export's line");
        assert_eq!(payload["cluster"], CLUSTER);
    }
    assert_delivery(
        "syslog+tls json",
        &syslog_seqs(&tls),
        &journal.seqs,
        Delivery::ExactlyOnce,
    );
    for seq in syslog_seqs(&tls) {
        assert_eq!(
            sd(tls.iter().find(|m| sd_seq(m) == Some(seq)).unwrap(), "uid"),
            Some(format!("{node}:{seq}").as_str())
        );
    }

    // Plain, CEF with facility local0.
    let cef = rs.cef_messages(SyslogInput::Plain);
    for m in &cef {
        let seq = sd_seq(m).unwrap_or_else(|| panic!("no SD seq: {m}"));
        let e = &journal.by_seq[&seq];
        check_syslog_envelope(m, e, 16, sensor_pid);
        check_cef(m, e);
    }
    assert_delivery(
        "syslog cef",
        &syslog_seqs(&cef),
        &journal.seqs,
        Delivery::ExactlyOnce,
    );
    let of = |pid: u64, kind: &str| {
        cef.iter()
            .find(|m| {
                m["cef"]["spid"].as_str() == Some(pid.to_string().as_str())
                    && m["cef"]["cat"] == kind
            })
            .unwrap_or_else(|| panic!("no CEF {kind} of pid {pid}"))
    };
    let denied = &of(u64::from(setid_pid), "chmod")["cef"];
    let verdict = denied["act"].as_str().unwrap();
    assert!(
        ["blocked", "killed"].contains(&verdict),
        "the set-id chmod: {denied}"
    );
    assert_eq!(denied["DeviceEventClassID"], format!("chmod:{verdict}"));
    assert_eq!(denied["Severity"], "7");
    let file_path = denied["filePath"].as_str().unwrap();
    assert!(
        file_path == path_str(&setid) || file_path == "tool",
        "filePath {file_path} is the file {}",
        setid.display()
    );
    let blocked = &of(r.pid, "connect")["cef"];
    assert_eq!(blocked["DeviceEventClassID"], "connect:blocked");
    assert_eq!(blocked["act"], "blocked");
    assert_eq!(blocked["dst"], "169.254.169.254");
    assert_eq!(blocked["dpt"], "80");
    assert_eq!(blocked["proto"], "TCP");
    let exec = &of(u64::from(true_pid), "exec")["cef"];
    // `exec`, or `exec:allowed` where the event carries the verdict of a detection-only hook.
    assert!(
        ["exec", "exec:allowed"].contains(&exec["DeviceEventClassID"].as_str().unwrap()),
        "{exec}"
    );
    assert_eq!(exec["Severity"], "3");
    let allowed = &of(u64::from(burst_pid), "chmod")["cef"];
    assert_eq!(allowed["DeviceEventClassID"], "chmod:allowed");
    assert_eq!(allowed["Severity"], "3");
    eprintln!(
        "syslog: {} events over TLS (json) and plain (cef), seq 1..={}; the set-id chmod: {} \
         filePath={file_path}",
        journal.seqs.len(),
        journal.seqs.last().unwrap(),
        denied["DeviceEventClassID"]
    );
}

#[test]
fn otlp_receiver_killed_mid_stream_union_has_every_event() {
    require_root();
    let mut otlp = OtlpReceiver::start(OtlpOptions::default());
    let cg = TestCgroup::new();
    let out = TempDir::new();
    let file_export = out.real().join("events.jsonl");
    let state = StateDir::new();
    let sensor = exporting_sensor(
        &state,
        &cg,
        &[
            &format!("otlp://127.0.0.1:{}", otlp.port()),
            &format!("file:{}", file_export.display()),
        ],
        &[],
    );
    let target = out.real().join("target");
    std::fs::write(&target, b"x").unwrap();
    let n = 8000;
    let generator = generator(&cg, &target, 2000, n);
    otlp.wait_records(Duration::from_secs(30), "a part of the stream", |r| {
        r.len() > 1000
    });
    otlp.kill();
    let at_kill = otlp.records().len();
    thread::sleep(Duration::from_secs(2));
    otlp.restart();
    wait_generator(generator);
    wait_file(
        &file_export,
        Duration::from_secs(60),
        "every generated chmod",
        |ls| ls.iter().filter(|l| l["kind"] == "chmod").count() >= n as usize,
    );
    let so_far = Journal::from_file_export(&file_export);
    otlp.wait_records(Duration::from_secs(60), "every event so far", |r| {
        let got: std::collections::BTreeSet<u64> = otlp_seqs(r).into_iter().collect();
        so_far.seqs.iter().all(|s| got.contains(s))
    });
    let (status, stderr) = sensor.stop();
    assert!(status.success(), "{stderr}");
    let journal = Journal::from_file_export(&file_export);
    assert!(journal.losses.is_empty());
    let records = otlp.wait_records(Duration::from_secs(15), "every event", |r| {
        let got: std::collections::BTreeSet<u64> = otlp_seqs(r).into_iter().collect();
        journal.seqs.iter().all(|s| got.contains(s))
    });
    assert!(
        records.len() > at_kill,
        "the restarted receiver got records too"
    );
    assert_delivery(
        "otlp across a receiver kill",
        &otlp_seqs(&records),
        &journal.seqs,
        Delivery::AtLeastOnce,
    );
    assert!(otlp_losses(&records).is_empty(), "no loss records");
    let node = journal.node();
    for r in &records {
        let seq = r["attributes"]["sensor.seq"].as_u64().unwrap();
        check_otlp(r, &journal.by_seq[&seq], &node);
    }
    let c = stop_counters(&stderr);
    assert_eq!(c["export_lost"], 0, "{c}");
    assert_eq!(c["export_lag"], 0, "{c}");
    eprintln!(
        "otlp: {} records for {} events ({} before the kill)",
        records.len(),
        journal.seqs.len(),
        at_kill
    );
}

#[test]
fn kill_9_mid_export_both_destinations_continue() {
    require_root();
    let ca = TestCa::new();
    let rs = Rsyslog::start(&ca, &[SyslogInput::MutualTls]);
    let token = "Bearer sensor-test-token";
    let otlp =
        OtlpReceiver::start(OtlpOptions::mutual_tls(&ca).with_header("authorization", token));
    let cg = TestCgroup::new();
    let out = TempDir::new();
    let dir = out.real();
    let headers = dir.join("otlp-headers");
    std::fs::write(&headers, format!("authorization: {token}\n")).unwrap();
    let file_export = dir.join("events.jsonl");
    let client = format!(
        "ca={}&cert={}&key={}",
        ca.ca.display(),
        ca.client_cert.display(),
        ca.client_key.display()
    );
    let syslog_dest = format!(
        "syslog+tls://127.0.0.1:{}?{client}&format=json",
        rs.port(SyslogInput::MutualTls)
    );
    // The server certificate names 127.0.0.1 and localhost: verify the second by name.
    let otlp_dest = format!(
        "otlp+tls://127.0.0.1:{}?{client}&headers={}&server-name=localhost",
        otlp.port(),
        headers.display()
    );
    let file_dest = format!("file:{}", file_export.display());
    let dests = [syslog_dest.as_str(), &otlp_dest, &file_dest];
    let state = StateDir::new();
    let sensor = exporting_sensor(&state, &cg, &dests, &[]);
    let target = dir.join("target");
    std::fs::write(&target, b"x").unwrap();
    let generator = generator(&cg, &target, 2000, 8000);
    otlp.wait_records(Duration::from_secs(30), "a part of the stream", |r| {
        r.len() > 1000
    });
    rs.wait_messages(
        SyslogInput::MutualTls,
        false,
        Duration::from_secs(30),
        "a part of the stream",
        |m| m.len() > 1000,
    );
    sensor.kill();
    let sensor = exporting_sensor(&state, &cg, &dests, &[]);
    wait_generator(generator);
    let burst_pid = chmod_burst(&cg.path, &target, 1000, 250, 5);
    wait_file(
        &file_export,
        Duration::from_secs(60),
        "the burst after the restart",
        |ls| {
            ls.iter()
                .filter(|l| l["kind"] == "chmod" && l["pid"] == burst_pid)
                .count()
                >= 1000
        },
    );
    let so_far = Journal::from_file_export(&file_export);
    let covers = |got: Vec<u64>| {
        let got: std::collections::BTreeSet<u64> = got.into_iter().collect();
        so_far.seqs.iter().all(|s| got.contains(s))
    };
    otlp.wait_records(Duration::from_secs(60), "every event so far", |r| {
        covers(otlp_seqs(r))
    });
    rs.wait_messages(
        SyslogInput::MutualTls,
        false,
        Duration::from_secs(60),
        "every event so far",
        |m| covers(syslog_seqs(m)),
    );
    let (status, stderr) = sensor.stop();
    assert!(status.success(), "{stderr}");

    let journal = Journal::from_file_export(&file_export);
    let node = journal.node();
    let records = otlp.wait_records(Duration::from_secs(15), "every event", |r| {
        let got: std::collections::BTreeSet<u64> = otlp_seqs(r).into_iter().collect();
        journal.seqs.iter().all(|s| got.contains(s))
    });
    assert_delivery(
        "otlp+tls (mTLS, header) across kill -9",
        &otlp_seqs(&records),
        &journal.seqs,
        Delivery::AtLeastOnce,
    );
    assert_same_losses("otlp", otlp_losses(&records), &journal);
    for r in &records {
        if let Some(seq) = r["attributes"]["sensor.seq"].as_u64() {
            check_otlp(r, &journal.by_seq[&seq], &node);
        }
    }
    let messages = rs.wait_messages(
        SyslogInput::MutualTls,
        false,
        Duration::from_secs(15),
        "every event",
        |m| {
            let got: std::collections::BTreeSet<u64> = syslog_seqs(m).into_iter().collect();
            journal.seqs.iter().all(|s| got.contains(s))
        },
    );
    assert_delivery(
        "syslog+tls (mTLS) across kill -9",
        &syslog_seqs(&messages),
        &journal.seqs,
        Delivery::AtLeastOnce,
    );
    assert_same_losses("syslog", syslog_losses(&messages), &journal);
    // Both runs sent: the pids in PROCID are those of the two daemons.
    let procids: std::collections::BTreeSet<u64> = messages
        .iter()
        .map(|m| m["procid"].as_u64().unwrap())
        .collect();
    assert_eq!(procids.len(), 2, "messages from both daemons: {procids:?}");
    for m in &messages {
        let Some(seq) = sd_seq(m) else { continue };
        let e = &journal.by_seq[&seq];
        let payload: Value = serde_json::from_str(m["msg"].as_str().unwrap()).unwrap();
        assert_eq!(&payload, e);
        assert_eq!(sd(m, "cluster"), Some(CLUSTER));
        assert_eq!(sd(m, "uid"), Some(format!("{node}:{seq}").as_str()));
    }
    eprintln!(
        "kill -9: {} events; otlp {} records, syslog {} messages",
        journal.seqs.len(),
        records.len(),
        messages.len()
    );
}

#[test]
fn a_destination_down_past_retention_gets_an_exact_loss_record() {
    require_root();
    let ca = TestCa::new();
    let rs = Rsyslog::start(&ca, &[SyslogInput::Plain]);
    // Nobody listens there until the end of the test.
    let down = closed_port();
    let cg = TestCgroup::new();
    let out = TempDir::new();
    let target = out.real().join("target");
    std::fs::write(&target, b"x").unwrap();
    let state = StateDir::new();
    let sensor = exporting_sensor(
        &state,
        &cg,
        &[
            &format!("otlp://127.0.0.1:{down}"),
            &format!(
                "syslog://127.0.0.1:{}?format=json",
                rs.port(SyslogInput::Plain)
            ),
        ],
        &[
            "--journal-segment-bytes",
            "131072",
            "--journal-max-bytes",
            "1048576",
        ],
    );
    // Enough events that retention drops the first segments (a chmod event is some hundred
    // bytes: 12,000 of them are several MB against a 1 MiB journal), paced so that the working
    // destination keeps up; more rounds while the journal still starts at 1.
    let mut rounds = 0;
    let st = loop {
        let n = if rounds == 0 { 12_000 } else { 4000 };
        wait_generator(generator(&cg, &target, 1000, n));
        rounds += 1;
        let st = sensor.status();
        if st["journal"]["first_seq"].as_u64() > Some(1) {
            break st;
        }
        assert!(rounds < 5, "retention never dropped a segment: {st}");
    };
    let last = poll(Duration::from_secs(15), Duration::from_millis(200), || {
        let s = sensor.status();
        let last = s["journal"]["last_seq"].as_u64().unwrap();
        // Quiet: nothing new for a moment.
        thread::sleep(Duration::from_millis(300));
        (sensor.status()["journal"]["last_seq"].as_u64() == Some(last)).then_some(last)
    })
    .expect("the journal keeps growing");
    let everything: Vec<u64> = (1..=last).collect();
    let syslog = rs.wait_messages(
        SyslogInput::Plain,
        false,
        Duration::from_secs(60),
        "every event",
        |m| syslog_seqs(m).last() == Some(&last),
    );
    assert!(
        syslog_losses(&syslog).is_empty() && syslog.iter().all(|m| m["msgid"] != "lost"),
        "the working destination lost nothing"
    );
    assert_delivery(
        "syslog beside a destination that is down",
        &syslog_seqs(&syslog),
        &everything,
        Delivery::ExactlyOnce,
    );
    eprintln!("journal after the flood: {}", st["journal"]);
    // `sensor status` says which destination is failing, why, and how far behind it is.
    let exports = sensor.status()["exports"].clone();
    let by_dest = |prefix: &str| {
        exports
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["destination"].as_str().unwrap().starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} destination in {exports}"))
            .clone()
    };
    let (down_state, up_state) = (by_dest("otlp://"), by_dest("syslog://"));
    assert!(
        down_state["error"].as_str().unwrap().starts_with("otlp: "),
        "{down_state}"
    );
    assert!(
        down_state["failures"].as_u64().unwrap() >= 1,
        "{down_state}"
    );
    assert!(down_state["lag"].as_u64().unwrap() > 0, "{down_state}");
    assert_eq!(down_state["delivered"], 0, "{down_state}");
    assert_eq!(up_state["error"], "", "{up_state}");
    assert_eq!(up_state["format"], "json", "{up_state}");

    // The destination comes up: what retention deleted comes as one loss record.
    let otlp = OtlpReceiver::start_on(down, OtlpOptions::default());
    let records = otlp.wait_records(Duration::from_secs(60), "the loss and the rest", |r| {
        otlp_seqs(r).last() == Some(&last)
    });
    let (status, stderr) = sensor.stop();
    assert!(status.success(), "{stderr}");
    let losses: Vec<&Value> = records
        .iter()
        .filter(|r| r["attributes"]["sensor.kind"] == "lost")
        .collect();
    assert_eq!(losses.len(), 1, "one loss record: {losses:?}");
    let lost = losses[0];
    let body: Value = serde_json::from_str(lost["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["kind"], "lost", "{body}");
    assert_eq!(body["lost"]["stage"], "journal", "{body}");
    assert_eq!(body["cluster"], CLUSTER, "{body}");
    assert!(lost["attributes"].get("sensor.seq").is_none(), "{lost}");
    assert_eq!(lost["severity_number"], 17, "{lost}");
    assert_eq!(lost["severity_text"], "ERROR", "{lost}");
    assert_eq!(lost["event_name"], "sensor.lost", "{lost}");
    let [(first, last_lost, count)] = otlp_losses(&records)[..] else {
        panic!("the loss record's attributes: {lost}");
    };
    assert_eq!(
        (
            body["lost"]["first_seq"].as_u64(),
            body["lost"]["last_seq"].as_u64(),
            body["lost"]["count"].as_u64()
        ),
        (Some(first), Some(last_lost), Some(count)),
        "attributes and body agree: {lost}"
    );
    let got = otlp_seqs(&records);
    let received: std::collections::BTreeSet<u64> = got.iter().copied().collect();
    assert_eq!(received.len(), got.len(), "no event twice");
    assert!(got.windows(2).all(|w| w[0] < w[1]), "in order");
    let missing: Vec<u64> = everything
        .iter()
        .copied()
        .filter(|s| !received.contains(s))
        .collect();
    assert!(
        !missing.is_empty(),
        "retention deleted nothing the destination missed"
    );
    assert_eq!(
        count,
        missing.len() as u64,
        "the count is exactly what was not delivered (missing {}..={})",
        missing[0],
        missing[missing.len() - 1]
    );
    assert_eq!(
        (first, last_lost),
        (missing[0], missing[missing.len() - 1]),
        "the range is the missing one"
    );
    assert_eq!(last_lost - first + 1, count, "one contiguous range");
    // Both destinations carry the same events: each OTLP body is the syslog JSON payload.
    let payloads: BTreeMap<u64, Value> = syslog
        .iter()
        .map(|m| {
            let p: Value = serde_json::from_str(m["msg"].as_str().unwrap()).unwrap();
            (sd_seq(m).unwrap(), p)
        })
        .collect();
    let node = payloads[&last]["node"].as_str().unwrap().to_owned();
    for r in &records {
        match r["attributes"]["sensor.seq"].as_u64() {
            Some(seq) => check_otlp(r, &payloads[&seq], &node),
            None => check_otlp(r, &body, &node),
        }
    }
    let c = stop_counters(&stderr);
    assert_eq!(c["export_lost"], count, "{c}");
    eprintln!(
        "retention: {count} of 1..={last} lost for the down destination (seq {first}..={last_lost}), {} delivered after",
        got.len()
    );
}

#[test]
fn a_receiver_that_refuses_the_client_after_the_handshake_is_not_counted_as_delivered() {
    require_root();
    let ca = TestCa::new();
    // The mutual-TLS input wants a client certificate; the sensor presents none. With TLS 1.3
    // the client's handshake is done before the server has checked anything: the server's
    // refusal (an alert, then the end of the connection) comes after the first data.
    let rs = Rsyslog::start(&ca, &[SyslogInput::MutualTls, SyslogInput::Plain]);
    let cg = TestCgroup::new();
    let out = TempDir::new();
    let target = out.real().join("target");
    std::fs::write(&target, b"x").unwrap();
    let state = StateDir::new();
    let refused = format!(
        "syslog+tls://127.0.0.1:{}?ca={}",
        rs.port(SyslogInput::MutualTls),
        ca.ca.display()
    );
    let sensor = exporting_sensor(
        &state,
        &cg,
        &[
            &refused,
            &format!("syslog://127.0.0.1:{}", rs.port(SyslogInput::Plain)),
        ],
        &[],
    );
    wait_generator(generator(&cg, &target, 1000, 500));
    // The working destination gets everything; meanwhile the refused one has tried.
    rs.wait_messages(
        SyslogInput::Plain,
        false,
        Duration::from_secs(30),
        "the chmods on the plain input",
        |m| syslog_seqs(m).len() >= 500,
    );
    let state_of = || {
        sensor.status()["exports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| {
                e["destination"]
                    .as_str()
                    .unwrap()
                    .starts_with("syslog+tls://")
            })
            .unwrap()
            .clone()
    };
    let refused_state = poll(Duration::from_secs(30), Duration::from_millis(200), || {
        let s = state_of();
        (s["failures"].as_u64() >= Some(2)).then_some(s)
    })
    .unwrap_or_else(|| panic!("no failure counted: {}", state_of()));
    assert_eq!(refused_state["delivered"], 0, "{refused_state}");
    assert!(
        refused_state["lag"].as_u64().unwrap() >= 500,
        "{refused_state}"
    );
    assert_ne!(refused_state["error"], "", "{refused_state}");
    assert!(
        rs.raw_lines(SyslogInput::MutualTls).is_empty(),
        "the refusing input wrote nothing"
    );
    let (status, stderr) = sensor.stop();
    assert!(status.success(), "{stderr}");
    eprintln!("refused destination: {refused_state}");
}
