//! `sensor run` input handling: bad flags, unusable cgroups and bad export destinations give
//! one line and exit 2, before anything is loaded; SIGTERM detaches and prints the counters.

use std::process::Command;

use sensor_tests::{Sensor, TempDir, TestCgroup, cgroup2_root, require_root, sensor_bin};

/// Run `sensor ARGS`; returns (exit code, stdout, stderr).
fn sensor(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(sensor_bin())
        .args(args)
        .output()
        .expect("running sensor");
    (
        out.status.code().expect("exited"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_usage_error(args: &[&str], mention: &str) {
    let (code, stdout, stderr) = sensor(args);
    assert_eq!(code, 2, "{args:?}: exit code; stderr:\n{stderr}");
    assert!(
        stdout.is_empty(),
        "{args:?}: nothing on stdout, got {stdout:?}"
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "{args:?}: one line on stderr, got:\n{stderr}"
    );
    assert!(
        lines[0].starts_with("sensor: error: "),
        "{args:?}: {stderr}"
    );
    assert!(
        lines[0].contains(mention),
        "{args:?}: should mention {mention:?}: {stderr}"
    );
}

#[test]
fn bad_flags_are_one_line_and_exit_2() {
    assert_usage_error(&["run", "--scope-cgroup", "/x", "--mode", "block"], "block");
    assert_usage_error(
        &["run", "--scope-cgroup", "/x", "--no-such-flag"],
        "--no-such-flag",
    );
    assert_usage_error(&["frobnicate"], "frobnicate");
    assert_usage_error(
        &["run", "--scope-cgroup", "/x", "--drain-interval-ms", "0"],
        "0",
    );
}

#[test]
fn unusable_cgroup_paths_are_refused_before_loading() {
    require_root();
    let tmp = TempDir::new();
    let file = tmp.0.join("file");
    std::fs::write(&file, b"").unwrap();
    let root = cgroup2_root();
    let cg = TestCgroup::new();
    let missing = cg.path.join("missing");
    let cases = [
        (
            missing.to_str().unwrap(),
            "does not exist: create it (mkdir -p",
        ),
        (tmp.0.to_str().unwrap(), "not on a cgroup v2 file system"),
        (file.to_str().unwrap(), "not a directory"),
        (root.to_str().unwrap(), "cgroup2 root"),
    ];
    for (path, mention) in cases {
        assert_usage_error(&["run", "--scope-cgroup", path], mention);
        // One bad path among good ones refuses the whole start.
        assert_usage_error(
            &[
                "run",
                "--scope-cgroup",
                cg.path.to_str().unwrap(),
                "--scope-cgroup",
                path,
            ],
            path,
        );
    }
}

#[test]
fn bad_export_destinations_are_one_line_and_exit_2() {
    require_root();
    let cg = TestCgroup::new();
    let tmp = TempDir::new();
    let headers = tmp.0.join("headers");
    std::fs::write(&headers, "authorization: Bearer x\n").unwrap();
    let headers_on_syslog = format!("syslog://127.0.0.1:514?headers={}", headers.display());
    for (dest, mention) in [
        ("kafka://x:1", "kafka"),
        ("syslog://127.0.0.1", "port"),
        ("otlp://127.0.0.1", "port"),
        (
            "syslog+tls://127.0.0.1:6514?ca=/nonexistent",
            "/nonexistent",
        ),
        (
            "otlp+tls://127.0.0.1:4317?cert=/nonexistent/c.pem&key=/nonexistent/k.pem",
            "/nonexistent",
        ),
        ("syslog://127.0.0.1:514?colour=red", "colour"),
        ("otlp://127.0.0.1:4317?facility=local0", "facility"),
        (headers_on_syslog.as_str(), "headers"),
    ] {
        assert_usage_error(
            &[
                "run",
                "--scope-cgroup",
                cg.path.to_str().unwrap(),
                "--export",
                dest,
            ],
            mention,
        );
    }
}

#[test]
fn sigterm_detaches_and_prints_counters() {
    require_root();
    let cg = TestCgroup::new();
    let sensor = Sensor::start(&["--scope-cgroup", cg.path.to_str().unwrap()]);
    let stderr = sensor.stderr_text();
    assert!(
        stderr.contains("sensor_connect4"),
        "attachments are logged: {stderr}"
    );
    let (status, stderr) = sensor.stop_with(libc::SIGTERM);
    assert!(status.success(), "exit after SIGTERM: {status}\n{stderr}");
    let counters = stderr
        .lines()
        .find(|l| l.starts_with("{\"counters\""))
        .expect("counters line");
    let counters: serde_json::Value = serde_json::from_str(counters).unwrap();
    assert_eq!(counters["counters"]["decode_errors"], 0, "{counters}");
    assert!(stderr.contains("detached"), "{stderr}");
}

#[test]
fn policy_check_accepts_the_examples_and_locates_every_error() {
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../sensor/policies");
    let mut files: Vec<String> = std::fs::read_dir(examples.join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .collect();
    files.push(examples.join("default.yaml").display().to_string());
    let args: Vec<&str> = ["policy", "check"]
        .into_iter()
        .chain(files.iter().map(String::as_str))
        .collect();
    let (code, stdout, stderr) = sensor(&args);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains(&format!("{} policy file(s) valid", files.len())),
        "{stdout}"
    );

    let tmp = TempDir::new();
    let bad = tmp.0.join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: sensor/v1\nkind: Policy\nmetadata: {name: bad}\nspec:\n  scope:\n    namespaces: {include: [\"*\"]}\n  rules:\n    - name: a\n      type: metadata\n      action: block\n      destinations: [10.0.0.1/8]\n",
    )
    .unwrap();
    let (code, _, stderr) = sensor(&["policy", "check", bad.to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");
    let located: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with(&format!("{}:", bad.display())))
        .collect();
    assert_eq!(
        located.len(),
        2,
        "both errors, each with file:line:column:\n{stderr}"
    );
    assert!(
        located[0].starts_with(&format!("{}:10:", bad.display())),
        "{stderr}"
    );
    assert!(
        located[1].starts_with(&format!("{}:11:", bad.display())),
        "{stderr}"
    );

    // The built-in default, as printed, is a valid policy file.
    let (code, default, _) = sensor(&["policy", "default"]);
    assert_eq!(code, 0);
    let printed = tmp.0.join("default.yaml");
    std::fs::write(&printed, default).unwrap();
    assert_eq!(sensor(&["policy", "check", printed.to_str().unwrap()]).0, 0);
}

/// One line `sensor advise: error: ...` on stderr, nothing on stdout, exit `code`.
fn assert_advise_error(args: &[&str], code: i32, mention: &str) {
    let (got, stdout, stderr) = sensor(args);
    assert_eq!(got, code, "{args:?}: exit code; stderr:\n{stderr}");
    assert!(stdout.is_empty(), "{args:?}: stdout {stdout:?}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{args:?}: one line, got:\n{stderr}");
    assert!(
        lines[0].starts_with("sensor advise: error: ") && lines[0].contains(mention),
        "{args:?}: should mention {mention:?}: {stderr}"
    );
}

#[test]
fn advise_reports_a_missing_or_malformed_file_on_one_line() {
    let dir = TempDir::new();
    let missing = dir.0.join("missing.jsonl");
    let missing = missing.to_str().unwrap();
    assert_advise_error(&["advise", "--file", missing], 2, missing);
    let bad = dir.0.join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"seq\":1,\"kind\":\"exit\",\"verdict\":\"allowed\",\"time\":\"2030-01-01T00:00:00Z\",\"pid\":1,\"uid\":0,\"comm\":\"x\",\"cgroup_id\":1,\"exit\":{}}\n\nnot json\n",
    )
    .unwrap();
    let bad = bad.to_str().unwrap();
    assert_advise_error(&["advise", "--file", bad], 2, &format!("{bad}:3: "));
    assert_advise_error(&["advise", "--since", "soon", "--file", bad], 2, "--since");
    // The daemon cannot be reached: a runtime failure.
    let socket = dir.0.join("no.sock");
    assert_advise_error(
        &["advise", "--server", socket.to_str().unwrap()],
        1,
        "cannot reach the sensor",
    );
}

#[test]
fn posture_json_has_the_documented_keys() {
    let dir = TempDir::new();
    let socket = dir.0.join("no.sock");
    let (code, stdout, stderr) = sensor(&[
        "posture",
        "-o",
        "json",
        "--server",
        socket.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("posture -o json");
    for key in [
        "kernel", "bpf_lsm", "btf", "reboot", "lockdown", "cgroup", "tiers",
    ] {
        assert!(v.get(key).is_some(), "no {key}: {v:#}");
    }
    for key in [
        "active",
        "lsms",
        "config_bpf_lsm",
        "boot_parameter",
        "advice",
    ] {
        assert!(v["bpf_lsm"].get(key).is_some(), "no bpf_lsm.{key}: {v:#}");
    }
    for key in ["pending", "reasons", "packages"] {
        assert!(v["reboot"].get(key).is_some(), "no reboot.{key}: {v:#}");
    }
    assert_eq!(
        v["tiers"]["source"], "kernel features (daemon not running)",
        "{v:#}"
    );
    assert_eq!(v["tiers"]["protections"]["metadata-connect"], "cgroup");
    // No daemon to ask about pods: null, not an empty list.
    assert!(v["pods"].is_null(), "{v:#}");
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_eq!(v["kernel"], release.trim());
    let (code, text, _) = sensor(&["posture", "--server", socket.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(text.starts_with("kernel "), "{text}");
}
