//! SIEM export (`sensor run --export`): OCSF objects that an independent validator accepts,
//! rotated files that hold every event once in order, a kill -9 and restart in the middle of an
//! export with nothing missing or doubled, and flood control that folds a flood into a few
//! counted records without ever hiding a block.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use sensor_tests::{
    NetNs, Place, Sensor, StateDir, Tail, TempDir, TestCgroup, bench_gen_bin, chmod_burst,
    probe_exec, probe_net, require_root, stop_counters, validate_ocsf,
};
use serde_json::Value;

/// Every line of `PATH.N`, ..., `PATH.1`, `PATH` (oldest file first), parsed.
fn export_lines(path: &Path) -> Vec<Value> {
    let dir = path.parent().unwrap();
    let base = path.file_name().unwrap().to_str().unwrap();
    let mut files: Vec<(u32, PathBuf)> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let p = e.ok()?.path();
            let name = p.file_name()?.to_str()?.to_owned();
            let n = match name.strip_prefix(base)? {
                "" => 0,
                rest => rest.strip_prefix('.')?.parse().ok()?,
            };
            Some((n, p))
        })
        .collect();
    files.sort_by_key(|(n, _)| std::cmp::Reverse(*n));
    let mut lines = Vec::new();
    for (_, p) in files {
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "{} ends in the middle of a line",
            p.display()
        );
        for (i, line) in text.lines().enumerate() {
            lines.push(
                serde_json::from_str(line).unwrap_or_else(|e| {
                    panic!("{}:{}: not JSON ({e}): {line}", p.display(), i + 1)
                }),
            );
        }
    }
    lines
}

fn export_files(path: &Path) -> usize {
    let base = path.file_name().unwrap().to_str().unwrap().to_owned();
    std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_str()
                .unwrap()
                .starts_with(&base)
        })
        .count()
}

/// Wait until the exported lines satisfy `pred` (`timeout`).
fn wait_export(path: &Path, timeout: Duration, what: &str, pred: impl Fn(&[Value]) -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        let lines = if path.exists() {
            export_lines(path)
        } else {
            Vec::new()
        };
        if pred(&lines) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "waited {timeout:?} for {what}; {} lines exported",
            lines.len()
        );
        thread::sleep(Duration::from_millis(100));
    }
}

fn counters(sensor: &Sensor) -> Value {
    let out = sensor.cli(&["status", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Value>(&out.stdout).unwrap()["counters"].clone()
}

fn seq_of(line: &Value) -> Option<u64> {
    line["seq"].as_u64()
}

/// Every sequence number from 1 to the highest, once: as an event's `seq` or inside a
/// journal loss record's range. Returns the highest.
fn assert_every_seq_once(lines: &[Value]) -> u64 {
    let mut seen: BTreeMap<u64, usize> = BTreeMap::new();
    let mut last = 0;
    for l in lines {
        if let Some(seq) = seq_of(l) {
            assert!(seq > last, "seq {seq} after {last}: out of order");
            last = seq;
            *seen.entry(seq).or_default() += 1;
        } else if l["kind"] == "lost" && l["lost"]["stage"] == "journal" {
            let (a, b) = (
                l["lost"]["first_seq"].as_u64().unwrap(),
                l["lost"]["last_seq"].as_u64().unwrap(),
            );
            for s in a..=b {
                *seen.entry(s).or_default() += 1;
            }
            last = last.max(b);
        }
    }
    let max = *seen.keys().last().expect("no events exported");
    let missing: Vec<u64> = (1..=max).filter(|s| !seen.contains_key(s)).collect();
    let doubled: Vec<u64> = seen
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(s, _)| *s)
        .collect();
    assert!(
        missing.is_empty() && doubled.is_empty(),
        "of 1..={max}: missing {} (first {:?}), doubled {} (first {:?})",
        missing.len(),
        missing.first(),
        doubled.len(),
        doubled.first()
    );
    max
}

#[test]
fn ocsf_export_of_every_event_kind_validates_and_tail_prints_the_same_objects() {
    require_root();
    let cg = TestCgroup::new();
    let ns = NetNs::with_metadata_addresses();
    let out_dir = TempDir::new();
    let export = out_dir.0.join("events.ocsf.jsonl");
    let sensor = Sensor::start(&[
        "--scope-cgroup",
        cg.path.to_str().unwrap(),
        "--export",
        &format!("file:{}", export.display()),
        "--export-format",
        "ocsf",
        "--export-fold-window",
        "0s",
    ]);
    // A blocked connect (in the test namespace), a chmod and an exec/exit in scope.
    let r = probe_net(&Place::inside(&ns, &cg.path), "tcp", "169.254.169.254", 80);
    assert_eq!(r.errno, libc::EPERM as i64);
    let file = out_dir.0.join("tool");
    std::fs::write(&file, b"x").unwrap();
    // The default policy kills it (kill tier); the mode change may have happened and the
    // daemon reverts the set-id bit.
    let chmod_pid = {
        let mut c = probe_exec(
            &Place::cgroup(&cg.path),
            &["chmod", "u+s", file.to_str().unwrap()],
        );
        drop(c.stdin.take());
        let pid = c.id();
        let status = c.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL)
        );
        pid
    };
    drop(probe_exec(&Place::cgroup(&cg.path), &["/bin/true"]).wait());
    wait_export(
        &export,
        Duration::from_secs(15),
        "connect, chmod, exec and exit",
        |ls| {
            [4001, 1001]
                .iter()
                .all(|c| ls.iter().any(|l| l["class_uid"] == *c))
                && ls
                    .iter()
                    .any(|l| l["class_uid"] == 1007 && l["activity_id"] == 1)
                && ls
                    .iter()
                    .any(|l| l["class_uid"] == 1007 && l["activity_id"] == 2)
        },
    );
    let lines = export_lines(&export);
    validate_ocsf(&lines, &out_dir.0);

    let net = lines.iter().find(|l| l["class_uid"] == 4001).unwrap();
    assert_eq!(net["activity_name"], "Refuse", "{net}");
    assert_eq!(net["type_uid"], 400_105, "{net}");
    assert_eq!(
        (net["action_id"].clone(), net["disposition_id"].clone()),
        (2.into(), 2.into())
    );
    assert_eq!(net["dst_endpoint"]["ip"], "169.254.169.254", "{net}");
    assert_eq!(net["dst_endpoint"]["port"], 80, "{net}");
    assert_eq!(net["actor"]["process"]["pid"], r.pid, "{net}");
    assert_eq!(net["metadata"]["product"]["name"], "sensor", "{net}");
    assert!(net["device"]["hostname"].is_string(), "{net}");
    assert_eq!(net["unmapped"]["sensor"]["verdict"], "blocked", "{net}");
    assert!(net["severity_id"].as_u64().unwrap() >= 4, "{net}");

    let fs = lines
        .iter()
        .find(|l| l["class_uid"] == 1001 && l["actor"]["process"]["pid"] == chmod_pid)
        .unwrap();
    assert_eq!(fs["activity_name"], "Set Security", "{fs}");
    assert_eq!(fs["disposition"], "Killed", "{fs}");
    assert_eq!(
        fs["file"]["path"],
        file.canonicalize().unwrap().to_str().unwrap(),
        "{fs}"
    );
    assert_eq!(fs["unmapped"]["sensor"]["chmod"]["mode"], "4644", "{fs}");

    // `sensor tail -o ocsf` prints the same objects for the same events (replayed from the
    // journal; every field but the message's colour-free text is the same function).
    let first = lines
        .iter()
        .filter_map(|l| l["metadata"]["sequence"].as_u64())
        .min()
        .unwrap();
    let mut tail = Tail::start(
        sensor.socket(),
        &["-o", "ocsf", "--from-seq", &first.to_string()],
    );
    assert!(tail.wait_exit().success(), "{}", tail.stderr_text());
    let tailed = tail.events();
    for l in &lines {
        let seq = &l["metadata"]["sequence"];
        let same = tailed.iter().find(|t| &t["metadata"]["sequence"] == seq);
        assert_eq!(same, Some(l), "tail -o ocsf differs for seq {seq}");
    }

    // Kinds that the live scenario does not produce: a policy change and a loss record,
    // replayed from a JSON-lines file, validate too.
    let replay = out_dir.0.join("other-kinds.jsonl");
    std::fs::write(
        &replay,
        concat!(
            r#"{"seq":7,"kind":"policy","time":"2026-11-28T21:00:39.524923047Z","node":"n","policy":"p","enrichment":"complete","policy_change":{"generation":2,"accepted":false,"source":"/etc/p.yaml","errors":["p.yaml:3:1: bad"]}}"#,
            "\n",
            r#"{"kind":"lost","time":"2026-11-28T21:00:40Z","node":"n","lost":{"count":12,"stage":"journal","first_seq":8,"last_seq":19}}"#,
            "\n",
            r#"{"seq":20,"kind":"privilege","verdict":"killed","time":"2026-11-28T21:00:41Z","node":"n","pid":5,"tid":5,"uid":1000,"gid":1000,"comm":"exploit","cgroup_id":9,"privilege":{"what":"setuid","old_value":"1000","new_value":"0"}}"#,
            "\n"
        ),
    )
    .unwrap();
    let out = Command::new(sensor_tests::sensor_bin())
        .args(["tail", "-o", "ocsf", "--all", "--file"])
        .arg(&replay)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let others: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let classes: Vec<(Value, Value)> = others
        .iter()
        .map(|o| (o["class_uid"].clone(), o["activity_id"].clone()))
        .collect();
    assert_eq!(
        classes,
        [
            (6002.into(), 8.into()),
            (6008.into(), 1.into()),
            (1007.into(), 5.into())
        ]
    );
    assert_eq!(others[2]["disposition"], "Killed", "{}", others[2]);
    assert_eq!(others[2]["process"]["pid"], 5, "{}", others[2]);
    validate_ocsf(&others, &out_dir.0);
    let (status, _) = sensor.stop();
    assert!(status.success());
}

/// A sensor scoped to `cg` that exports to the file `export`, with `extra` flags (events to
/// gRPC subscribers only: the flood tests do not parse every event twice).
fn file_exporting_sensor(cg: &TestCgroup, export: &std::path::Path, extra: &[&str]) -> Sensor {
    let dest = format!("file:{}", export.display());
    let mut args = vec![
        "--scope-cgroup",
        cg.path.to_str().unwrap(),
        "--export",
        dest.as_str(),
    ];
    args.extend_from_slice(extra);
    Sensor::start_fresh(&args, false)
}

#[test]
fn rotation_under_load_keeps_every_event_once_in_sequence_order() {
    require_root();
    let cg = TestCgroup::new();
    let out_dir = TempDir::new();
    let export = out_dir.0.join("events.jsonl");
    let sensor = file_exporting_sensor(
        &cg,
        &export,
        &[
            "--export-max-bytes",
            "65536",
            "--export-max-files",
            "1000",
            "--export-fold-window",
            "0s",
        ],
    );
    let file = out_dir.0.join("target");
    std::fs::write(&file, b"x").unwrap();
    let n = 5000;
    let pid = chmod_burst(&cg.path, &file, n, 250, 5);
    wait_export(&export, Duration::from_secs(60), "every chmod", |ls| {
        ls.iter()
            .filter(|l| l["pid"] == pid && l["kind"] == "chmod")
            .count()
            >= n as usize
    });
    let (status, stderr) = sensor.stop();
    assert!(status.success(), "{stderr}");
    let lines = export_lines(&export);
    let max = assert_every_seq_once(&lines);
    let files = export_files(&export);
    assert!(files >= 10, "{files} files for {} lines", lines.len());
    for entry in std::fs::read_dir(&out_dir.0).unwrap() {
        let entry = entry.unwrap();
        if entry
            .file_name()
            .to_str()
            .unwrap()
            .starts_with("events.jsonl")
        {
            let len = entry.metadata().unwrap().len();
            assert!(len <= 65536 + 4096, "{:?}: {len} bytes", entry.file_name());
        }
    }
    let c = stop_counters(&stderr);
    assert_eq!(c["export_records"], lines.len() as u64, "{c}");
    assert_eq!(c["export_lost"], 0, "{c}");
    assert_eq!(c["export_lag"], 0, "{c}");
    eprintln!(
        "rotation: {} lines, seq 1..={max}, {files} files",
        lines.len()
    );
}

#[test]
fn kill_and_restart_mid_export_leaves_every_sequence_number_once() {
    require_root();
    let cg = TestCgroup::new();
    let out_dir = TempDir::new();
    let state = StateDir::new();
    let export = out_dir.0.join("events.jsonl");
    let args = [
        "--scope-cgroup",
        cg.path.to_str().unwrap(),
        "--export",
        &format!("file:{}", export.display()),
        "--export-max-bytes",
        "262144",
        "--export-max-files",
        "1000",
        "--export-fold-window",
        "0s",
    ];
    let file = out_dir.0.join("target");
    std::fs::write(&file, b"x").unwrap();
    let sensor = Sensor::start_in(&state, &args);
    // A generator in the background; the sensor dies (SIGKILL) while it exports.
    let script = out_dir.0.join("gen.py");
    std::fs::write(
        &script,
        "import os, sys, time\nfor i in range(int(sys.argv[2])):\n    os.chmod(sys.argv[1], 0o600 if i % 2 else 0o640)\n    if i % 200 == 199: time.sleep(0.01)\n",
    )
    .unwrap();
    let mut generator = probe_exec(
        &Place::cgroup(&cg.path),
        &[
            "/usr/bin/python3",
            script.to_str().unwrap(),
            file.to_str().unwrap(),
            "6000",
        ],
    );
    drop(generator.stdin.take());
    wait_export(
        &export,
        Duration::from_secs(30),
        "a part of the flood",
        |ls| ls.len() > 1000,
    );
    sensor.kill();
    let sensor = Sensor::start_in(&state, &args);
    assert!(generator.wait().unwrap().success());
    chmod_burst(&cg.path, &file, 1000, 250, 5);
    // Stopping lets the exporter write everything the journal holds.
    let (status, stderr) = sensor.stop();
    assert!(status.success(), "{stderr}");
    let lines = export_lines(&export);
    let max = assert_every_seq_once(&lines);
    // Both runs exported: more than the first run had when it was killed, and the burst after.
    assert!(lines.len() > 2000, "{} lines", lines.len());
    eprintln!("kill/restart: {} lines, seq 1..={max}", lines.len());
}

/// Sum of the counts of `lines` (a record without `repeat` stands for one event).
fn count_sum(lines: &[&Value]) -> u64 {
    lines
        .iter()
        .map(|l| l["repeat"]["count"].as_u64().unwrap_or(1))
        .sum()
}

#[test]
fn a_flood_of_100k_identical_chmods_becomes_a_handful_of_counted_records() {
    require_root();
    let cg = TestCgroup::new();
    let out_dir = TempDir::new();
    let export = out_dir.0.join("events.jsonl");
    let sensor = file_exporting_sensor(
        &cg,
        &export,
        &[
            "--export-fold-window",
            "5s",
            // The default policy's set-id rule in audit mode: every chmod below is `audited`.
            "--mode",
            "audit",
        ],
    );
    let file = out_dir.0.join("target");
    std::fs::write(&file, b"x").unwrap();
    let n: u64 = 100_000;
    let started = Instant::now();
    let mut generator = Command::new(bench_gen_bin())
        .arg("--cgroup")
        .arg(&cg.path)
        .arg("--setid")
        .args(["paced", "10000", &n.to_string()])
        .arg(&file)
        .spawn()
        .unwrap();
    let pid = generator.id();
    assert!(generator.wait().unwrap().success());
    let generated_in = started.elapsed();
    // The last window closes at most 5 s after its first event (wall clock once caught up).
    wait_export(
        &export,
        Duration::from_secs(120),
        "the whole flood, counted",
        |ls| count_sum(&ls.iter().filter(|l| l["pid"] == pid).collect::<Vec<_>>()) >= n,
    );
    let lines = export_lines(&export);
    let flood: Vec<&Value> = lines
        .iter()
        .filter(|l| l["pid"] == pid && l["kind"] == "chmod")
        .collect();
    let unfolded = flood.iter().filter(|l| l["repeat"].is_null()).count() as u64;
    // The status board is refreshed every 200 ms, not per write: wait until it has caught up
    // with what the file holds (a wrong count never gets there and fails below).
    sensor.wait_counter("export_folded", n - unfolded);
    let c = counters(&sensor);
    let (status, stderr) = sensor.stop();
    assert!(status.success(), "{stderr}");
    assert_eq!(
        c["kernel_ringbuf_full_chmod"], 0,
        "the kernel lost events: the flood was not delivered whole ({c})"
    );
    assert!(
        flood
            .iter()
            .all(|l| l["verdict"] == "audited" && l["rule"] == "deny-setid-chmod"),
        "the flood is audited set-id chmods"
    );
    assert_eq!(count_sum(&flood), n);
    assert!(flood.len() <= 20, "{} records for the flood", flood.len());
    let folded = c["export_folded"].as_u64().unwrap();
    assert_eq!(folded, n - unfolded, "{c}");
    assert!(stop_counters(&stderr)["export_folded"].as_u64().unwrap() >= folded);
    eprintln!(
        "flood: {n} chmods in {generated_in:?} -> {} records (folded {folded})",
        flood.len()
    );
}

const CONNECT_LOOP: &str = "import socket, sys, time\n\
n, pause = int(sys.argv[1]), float(sys.argv[2])\n\
for i in range(n):\n    s = socket.socket()\n    try:\n        s.connect(('169.254.169.254', 80))\n    except PermissionError:\n        pass\n    s.close()\n    time.sleep(pause)\n";

#[test]
fn a_flood_of_blocked_connects_shows_at_least_one_record_per_window_with_the_right_count() {
    require_root();
    let cg = TestCgroup::new();
    let ns = NetNs::with_metadata_addresses();
    let out_dir = TempDir::new();
    let export = out_dir.0.join("events.jsonl");
    let sensor = file_exporting_sensor(&cg, &export, &["--export-fold-window", "1s"]);
    // One process, 400 blocked connects over about 4 s (4 windows and more).
    let n = 400;
    let mut child = probe_exec(
        &Place::inside(&ns, &cg.path),
        &[
            "/usr/bin/python3",
            "-c",
            CONNECT_LOOP,
            &n.to_string(),
            "0.01",
        ],
    );
    drop(child.stdin.take());
    let pid = child.id();
    assert!(child.wait().unwrap().success());
    let blocked_of = |ls: &[Value]| -> Vec<Value> {
        ls.iter()
            .filter(|l| l["pid"] == pid && l["verdict"] == "blocked")
            .cloned()
            .collect()
    };
    wait_export(
        &export,
        Duration::from_secs(30),
        "every blocked connect, counted",
        |ls| count_sum(&blocked_of(ls).iter().collect::<Vec<_>>()) >= n,
    );
    let lines = export_lines(&export);
    let records = blocked_of(&lines);
    assert_eq!(count_sum(&records.iter().collect::<Vec<_>>()), n);
    // Every blocked connect (all of them, from the journal) falls in a window that was opened
    // by a record written at once: no window goes without a record.
    let mut tail = Tail::start(
        sensor.socket(),
        &["-o", "json", "--from-seq", "1", "--verdict", "blocked"],
    );
    assert!(tail.wait_exit().success());
    let all: Vec<Value> = tail
        .events()
        .into_iter()
        .filter(|e| e["pid"] == pid)
        .collect();
    assert_eq!(all.len() as u64, n);
    let time = |v: &Value| humantime_ns(v["time"].as_str().unwrap());
    let openers: Vec<i64> = records
        .iter()
        .filter(|r| r["repeat"].is_null())
        .map(time)
        .collect();
    assert!(
        openers.len() >= 3,
        "{} windows for a 4 s flood",
        openers.len()
    );
    for e in &all {
        let t = time(e);
        assert!(
            openers.iter().any(|&o| o <= t && t < o + 1_000_000_000),
            "blocked connect seq {} is in no window with a record",
            e["seq"]
        );
    }
    assert!(
        records.len() < all.len() / 10,
        "{} records for {n} connects",
        records.len()
    );
    let (status, _) = sensor.stop();
    assert!(status.success());
}

/// RFC 3339 to ns since the epoch (the event format's times are UTC with nanoseconds).
fn humantime_ns(s: &str) -> i64 {
    let out = Command::new("date")
        .args(["-d", s, "+%s%N"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn bad_export_flags_are_one_line_errors_with_exit_2() {
    require_root();
    let cg = TestCgroup::new();
    for (args, expect) in [
        (vec!["--export", "syslog:x"], "expected stdout"),
        (
            vec!["--export", "file:/nonexistent-dir/e.jsonl"],
            "does not exist",
        ),
        (
            vec!["--export", "stdout", "--stdout-events"],
            "--stdout-events",
        ),
        (vec!["--export-fold-window", "3h"], "at most 1h"),
        (vec!["--export-max-bytes", "10"], "--export-max-bytes"),
    ] {
        let out = Command::new(sensor_tests::sensor_bin())
            .args(["run", "--scope-cgroup", cg.path.to_str().unwrap()])
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains(expect) && err.trim().lines().count() == 1,
            "{args:?}: {err}"
        );
    }
}

#[test]
fn stdout_export_resumes_after_a_restart_without_repeating_a_line() {
    require_root();
    let cg = TestCgroup::new();
    let ns = NetNs::with_metadata_addresses();
    let state = TempDir::new();
    let state_dir = state.0.join("export-state");
    let args = [
        "--scope-cgroup",
        cg.path.to_str().unwrap(),
        "--export",
        "stdout",
        "--export-state-dir",
        state_dir.to_str().unwrap(),
        "--export-fold-window",
        "0s",
    ];
    let journal = StateDir::new();
    let place = Place::inside(&ns, &cg.path);
    // `Sensor` collects stdout lines as JSON: here they are the exporter's.
    let first = Sensor::start_with_stdout(&journal, &args);
    let a = probe_net(&place, "tcp", "169.254.169.254", 80);
    first.wait_for(1, |e| e["pid"] == a.pid && e["verdict"] == "blocked");
    let before = first.events();
    let (status, _) = first.stop();
    assert!(status.success());
    // While the sensor is down nothing happens; after the restart only new events come.
    let second = Sensor::start_with_stdout(&journal, &args);
    let b = probe_net(&place, "tcp", "169.254.169.254", 80);
    let got = second.wait_for(1, |e| e["pid"] == b.pid && e["verdict"] == "blocked");
    assert!(
        second.events().iter().all(|e| e["pid"] != a.pid),
        "the first run's event was written again: {got:?}"
    );
    let last_before = before
        .iter()
        .filter_map(|e| e["seq"].as_u64())
        .max()
        .unwrap();
    let first_after = second
        .events()
        .iter()
        .filter_map(|e| e["seq"].as_u64())
        .min()
        .unwrap();
    assert_eq!(first_after, last_before + 1);
    let (status, _) = second.stop();
    assert!(status.success());
}

#[test]
fn a_failing_destination_never_holds_up_enforcement_or_subscribers() {
    require_root();
    let cg = TestCgroup::new();
    let ns = NetNs::with_metadata_addresses();
    let state = TempDir::new();
    // Every write to /dev/full fails (ENOSPC).
    let sensor = Sensor::start(&[
        "--scope-cgroup",
        cg.path.to_str().unwrap(),
        "--export",
        "file:/dev/full",
        "--export-state-dir",
        state.0.to_str().unwrap(),
    ]);
    let place = Place::inside(&ns, &cg.path);
    for _ in 0..20 {
        let r = probe_net(&place, "tcp", "169.254.169.254", 80);
        assert_eq!(r.errno, libc::EPERM as i64, "enforcement continues");
        sensor.wait_for(1, |e| e["pid"] == r.pid && e["verdict"] == "blocked");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let c = counters(&sensor);
        if c["export_write_errors"].as_u64().unwrap_or(0) > 0
            && c["export_lag"].as_u64().unwrap_or(0) >= 20
        {
            assert_eq!(c["export_records"], 0, "{c}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no write errors or lag counted: {c}"
        );
        thread::sleep(Duration::from_millis(200));
    }
    let (status, stderr) = sensor.stop();
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("export: write"), "{stderr}");
}
