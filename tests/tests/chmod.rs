//! chmod-family detection on the live kernel: syscall tracepoints, scoped by the task's
//! cgroup ancestry. The default policy in audit mode (`--mode audit`): the calls succeed, set-id
//! ones are reported `audited` by the `deny-setid-chmod` rule, the others `allowed`. The kill
//! tier (enforce) is in `kill.rs`.

use std::{
    io::{BufRead as _, BufReader},
    path::Path,
};

use sensor_tests::{
    ChildGuard, Place, Sensor, TempDir, TestCgroup, file_with_mode, mode_of, probe_exec,
    probe_exec_wait, require_root,
};
use serde_json::Value;

const PYTHON: &str = "/usr/bin/python3";

fn scoped_sensor(cg: &TestCgroup) -> Sensor {
    require_root();
    Sensor::start(&[
        "--scope-cgroup",
        cg.path.to_str().unwrap(),
        "--mode",
        "audit",
    ])
}

fn chmod_events(sensor: &Sensor, pid: u32, n: usize) -> Vec<Value> {
    sensor.wait_for(n, |e| e["kind"] == "chmod" && e["pid"] == pid)
}

/// Run a python script in scope that prints one line, then waits for stdin to close (so its
/// fds stay open until the test has seen the events). Returns the pid and the printed line.
fn python_in_scope(cg: &Path, script: &str, dir: &Path) -> (ChildGuard, u32, String) {
    let mut child = probe_exec(
        &Place::cgroup(cg),
        &[PYTHON, "-c", script, dir.to_str().unwrap()],
    );
    let pid = child.id();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(
        !line.is_empty(),
        "the python scenario printed nothing (failed?)"
    );
    (ChildGuard(child), pid, line.trim().to_owned())
}

#[test]
fn chmod_u_plus_s_in_scope_is_reported_with_mode_and_name() {
    let cg = TestCgroup::new();
    let guard = TempDir::new();
    let dir = guard.real();
    let sensor = scoped_sensor(&cg);
    let target = file_with_mode(&dir, "tool", 0o755);
    let pid = probe_exec_wait(&Place::cgroup(&cg.path), &["chmod", "u+s", &target]);
    let ev = &chmod_events(&sensor, pid, 1)[0];
    assert_eq!(ev["comm"], "chmod", "{ev}");
    assert_eq!(ev["verdict"], "audited", "{ev}");
    assert_eq!(ev["rule"], "deny-setid-chmod", "{ev}");
    assert_eq!(ev["cgroup_id"], TestCgroup::id(&cg.path), "{ev}");
    let c = &ev["chmod"];
    assert_eq!(c["mode"], "4755", "{ev}");
    assert_eq!(c["setid"], serde_json::json!(["setuid"]), "{ev}");
    assert_eq!(c["sets_setid"], true, "{ev}");
    assert_eq!(c["name"], target.as_str(), "{ev}");
    // Audit: the call took effect.
    assert_eq!(mode_of(&target), 0o4755);
}

const PYTHON_SCENARIO: &str = r#"
import os, sys
d = sys.argv[1]
os.chmod(os.path.join(d, "plain"), 0o750)
fd = os.open(os.path.join(d, "byfd"), os.O_RDONLY)
os.fchmod(fd, 0o2750)
dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
os.chmod("rel", 0o4711, dir_fd=dfd)
print(fd, dfd, flush=True)
sys.stdin.read()
"#;

#[test]
fn python_chmod_fchmod_and_dirfd_relative_fchmodat_are_reported() {
    let cg = TestCgroup::new();
    let guard = TempDir::new();
    let dir = guard.real();
    let plain = file_with_mode(&dir, "plain", 0o644);
    let byfd = file_with_mode(&dir, "byfd", 0o644);
    let rel = file_with_mode(&dir, "rel", 0o644);
    let sensor = scoped_sensor(&cg);
    let (_child, pid, line) = python_in_scope(&cg.path, PYTHON_SCENARIO, &dir);
    let fds: Vec<i64> = line
        .split_whitespace()
        .map(|s| s.parse().unwrap())
        .collect();
    let events = chmod_events(&sensor, pid, 3);
    assert_eq!(events.len(), 3, "{events:?}");
    let by_name = |name: &str| {
        events
            .iter()
            .find(|e| e["chmod"]["name"] == name)
            .unwrap_or_else(|| panic!("no event names {name}: {events:?}"))
            .clone()
    };

    let e = by_name(&plain);
    assert_eq!(
        (
            e["chmod"]["mode"].as_str(),
            e["chmod"]["sets_setid"].as_bool()
        ),
        (Some("0750"), Some(false)),
        "{e}"
    );
    assert!(
        ["chmod", "fchmodat", "fchmodat2"].contains(&e["chmod"]["syscall"].as_str().unwrap()),
        "{e}"
    );
    assert_eq!(e["chmod"]["path"], plain.as_str(), "{e}");

    let e = by_name(&byfd);
    assert_eq!(e["chmod"]["syscall"], "fchmod", "{e}");
    assert_eq!(e["chmod"]["fd"], fds[0], "{e}");
    assert_eq!(e["chmod"]["mode"], "2750", "{e}");
    assert_eq!(e["chmod"]["setid"], serde_json::json!(["setgid"]), "{e}");
    assert!(e["chmod"].get("path").is_none(), "{e}");

    let e = by_name(&rel);
    assert!(
        ["fchmodat", "fchmodat2"].contains(&e["chmod"]["syscall"].as_str().unwrap()),
        "{e}"
    );
    assert_eq!(e["chmod"]["fd"], fds[1], "dirfd: {e}");
    assert_eq!(e["chmod"]["path"], "rel", "{e}");
    assert_eq!(e["chmod"]["mode"], "4711", "{e}");
    assert_eq!(e["chmod"]["setid"], serde_json::json!(["setuid"]), "{e}");

    assert_eq!(
        (mode_of(&plain), mode_of(&byfd), mode_of(&rel)),
        (0o750, 0o2750, 0o4711)
    );
}

/// x86_64 syscall numbers: chmod 90, fchmod 91, fchmodat 268, fchmodat2 452.
const SYSCALL_SCENARIO: &str = r#"
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
d = sys.argv[1]
def check(rc, what):
    if rc != 0:
        raise SystemExit(f"{what}: errno {ctypes.get_errno()}")
check(libc.syscall(90, os.path.join(d, "a").encode(), 0o6755), "chmod")
fd = os.open(os.path.join(d, "b"), os.O_RDONLY)
check(libc.syscall(91, fd, 0o640), "fchmod")
dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
check(libc.syscall(268, dfd, b"c", 0o600), "fchmodat")
check(libc.syscall(452, dfd, b"d", 0o2711, 0), "fchmodat2")
print(fd, dfd, flush=True)
sys.stdin.read()
"#;

#[test]
fn each_chmod_family_syscall_has_its_tracepoint() {
    let cg = TestCgroup::new();
    let guard = TempDir::new();
    let dir = guard.real();
    for f in ["a", "b", "c", "d"] {
        file_with_mode(&dir, f, 0o644);
    }
    let sensor = scoped_sensor(&cg);
    let (_child, pid, line) = python_in_scope(&cg.path, SYSCALL_SCENARIO, &dir);
    let fds: Vec<i64> = line
        .split_whitespace()
        .map(|s| s.parse().unwrap())
        .collect();
    let events = chmod_events(&sensor, pid, 4);
    let summary: Vec<(String, String, String)> = events
        .iter()
        .map(|e| {
            let c = &e["chmod"];
            (
                c["syscall"].as_str().unwrap().into(),
                c["mode"].as_str().unwrap().into(),
                c["name"].as_str().unwrap_or("?").into(),
            )
        })
        .collect();
    let at = |f: &str| dir.join(f).to_str().unwrap().to_owned();
    assert_eq!(
        summary,
        [
            ("chmod".into(), "6755".into(), at("a")),
            ("fchmod".into(), "0640".into(), at("b")),
            ("fchmodat".into(), "0600".into(), at("c")),
            ("fchmodat2".into(), "2711".into(), at("d")),
        ]
    );
    assert_eq!(
        events[0]["chmod"]["setid"],
        serde_json::json!(["setuid", "setgid"])
    );
    let verdicts: Vec<&str> = events
        .iter()
        .map(|e| e["verdict"].as_str().unwrap())
        .collect();
    assert_eq!(verdicts, ["audited", "allowed", "allowed", "audited"]);
    assert_eq!(
        (
            events[2]["chmod"]["fd"].as_i64(),
            events[3]["chmod"]["fd"].as_i64()
        ),
        (Some(fds[1]), Some(fds[1]))
    );
    assert_eq!(events[3]["chmod"]["flags"], 0);
}

#[test]
fn chmod_outside_the_scope_is_not_reported() {
    let cg = TestCgroup::new();
    let guard = TempDir::new();
    let dir = guard.real();
    let outside_file = file_with_mode(&dir, "outside", 0o755);
    let marker_file = file_with_mode(&dir, "marker", 0o755);
    let sensor = scoped_sensor(&cg);
    let outside = probe_exec_wait(&Place::default(), &["chmod", "u+s", &outside_file]);
    assert_eq!(mode_of(&outside_file), 0o4755);
    let marker = probe_exec_wait(&Place::cgroup(&cg.path), &["chmod", "g+s", &marker_file]);
    let ev = &chmod_events(&sensor, marker, 1)[0];
    assert_eq!(ev["chmod"]["mode"], "2755");
    let stray: Vec<Value> = sensor
        .events()
        .into_iter()
        .filter(|e| e["pid"] == outside)
        .collect();
    assert!(
        stray.is_empty(),
        "no event expected outside the scope: {stray:?}"
    );
}
