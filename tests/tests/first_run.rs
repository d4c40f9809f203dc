//! The first five minutes: the README's run command works as written on a plain host (the
//! sensor protects a cgroup of its own and says how to use it), `sensor exec` runs a command in
//! it, `sensor demo` shows every protection and leaves nothing behind (also on Ctrl-C), `sensor
//! tail -f` on a terminal shows decisions on aligned lines, completions load in bash, and the
//! built-in policy logs (and with `--mode enforce` stops) a privilege raise.
//!
//! Metadata addresses are contacted only inside network namespaces the test (or the demo)
//! made (docs/testing.md, "Safety rules for tests").

use std::{
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use sensor_harness::{Lines, signal_child, unique, wait_exit};
use sensor_tests::{
    ChildGuard, NetNs, Place, Sensor, TempDir, TestCgroup, cgroup2_root, probe_bin, probe_net,
    require_root, sensor_bin,
};

/// The repository root (the tests crate lives in `tests/`).
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the repository")
        .to_owned()
}

/// The README's command that runs the sensor: the first `cargo xtask run` line of its
/// set-up block.
fn readme_run_command() -> Vec<String> {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let line = readme
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("cargo xtask run"))
        .expect("the README gives a `cargo xtask run` command");
    line.split_whitespace().map(str::to_owned).collect()
}

/// The sensor's own scope cgroup.
fn own_scope() -> PathBuf {
    cgroup2_root().join("sensor-protected")
}

/// A cgroup removed on drop (a failed test must not leave the sensor's scope behind).
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Poll `f` until it is true (or fail naming `what`).
fn wait_until(what: &str, timeout: Duration, f: impl Fn() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_readme_run_command_protects_a_cgroup_of_its_own_and_its_hint_works() {
    require_root();
    assert!(
        !own_scope().exists(),
        "{} exists before the test (left by an earlier run?)",
        own_scope().display()
    );
    let state = TempDir::new();
    let socket = state.0.join("sensor.sock");
    let command = readme_run_command();
    assert!(
        !command.iter().any(|a| a == "--scope-cgroup"),
        "the README's run command gives no scope: {command:?}"
    );
    // Exactly the README's command; only where its state goes differs (environment).
    let mut run = Command::new(&command[0]);
    run.args(&command[1..])
        .current_dir(repo_root())
        .env("SENSOR_SOCKET", &socket)
        .env("SENSOR_JOURNAL_DIR", state.0.join("journal"))
        .env("SENSOR_LOG", "info")
        .env_remove("SENSOR_SCOPE_CGROUP")
        .env_remove("SENSOR_POLICY")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = run.spawn().expect("running the README's command");
    let stderr = Lines::collect(child.stderr.take().unwrap(), |_| {});
    // Dropped first: the sensor ends; then, if the test failed before the sensor removed it,
    // its scope goes too.
    let _scope = RemoveOnDrop(own_scope());
    let mut child = ChildGuard(child);
    wait_until(
        "sensor ready (the README's command)",
        Duration::from_secs(600),
        || stderr.text().contains("sensor ready"),
    );
    let log = stderr.text();
    let scope = own_scope();
    assert!(
        scope.is_dir(),
        "the sensor made {}:\n{log}",
        scope.display()
    );
    let hint = log
        .lines()
        .find(|l| l.contains("sensor exec -- COMMAND"))
        .unwrap_or_else(|| panic!("one line says how to put a process in the scope:\n{log}"));
    assert!(hint.contains(&scope.display().to_string()), "{hint}");

    // `sensor status` names the scope, made by the sensor.
    let status = Command::new(sensor_bin())
        .args(["status", "-o", "json", "--server"])
        .arg(&socket)
        .output()
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(
        status["scopes"][0]["path"],
        scope.display().to_string(),
        "{status}"
    );
    assert_eq!(status["scopes"][0]["created"], true, "{status}");

    // The hint works: a set-uid chmod run through `sensor exec` is decided and reported.
    let dir = TempDir::new();
    let file = sensor_tests::file_with_mode(&dir.0, "f", 0o755);
    let exec = Command::new(sensor_bin())
        .args(["exec", "--server"])
        .arg(&socket)
        .args(["--", "chmod", "4755", &file])
        .output()
        .unwrap();
    let status = exec.status;
    // Enforce on this host's kill tier: the chmod is killed (or denied where BPF LSM runs).
    assert!(
        std::os::unix::process::ExitStatusExt::signal(&status) == Some(libc::SIGKILL)
            || !status.success(),
        "chmod 4755 in the sensor's scope must not succeed: {status}"
    );
    wait_until("the set-id bit removed", Duration::from_secs(10), || {
        sensor_tests::mode_of(&file) & 0o4000 == 0
    });
    let tail = Command::new(sensor_bin())
        .args(["tail", "-o", "json", "--server"])
        .arg(&socket)
        .output()
        .unwrap();
    let events = String::from_utf8_lossy(&tail.stdout).into_owned();
    assert!(
        events.lines().any(|l| l.contains("\"kind\":\"chmod\"")
            && (l.contains("\"verdict\":\"killed\"") || l.contains("\"verdict\":\"blocked\""))
            && l.contains(&format!("\"cgroup\":\"/{}\"", "sensor-protected"))),
        "the chmod is reported, in the sensor's own scope:\n{events}"
    );

    // Stopping removes the scope it made (it is empty again).
    signal_child(&child.0, libc::SIGTERM);
    let exited = wait_exit(&mut child.0, Duration::from_secs(30)).expect("the sensor stops");
    assert!(exited.success(), "{exited}\n{}", stderr.text());
    assert!(!scope.exists(), "{} removed on exit", scope.display());
}

#[test]
fn a_missing_scope_cgroup_says_what_to_do() {
    require_root();
    let cg = TestCgroup::new();
    let missing = cg.path.join("nothing-here");
    let out = Command::new(sensor_bin())
        .args(["run", "--scope-cgroup"])
        .arg(&missing)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("mkdir -p {}", missing.display()))
            && err.contains("leave --scope-cgroup out"),
        "{err}"
    );
}

/// What `sensor demo` printed for one attempt: (mode, protection, call, event, as expected).
fn demo_rows(out: &str) -> Vec<(String, String, String, String, bool)> {
    let mut mode = String::new();
    let mut rows = Vec::new();
    for line in out.lines() {
        if let Some(m) = ["enforce", "audit"]
            .iter()
            .find(|m| line.starts_with(&format!("{m} (")))
        {
            mode = (*m).to_owned();
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.len() < 6
            || !line.starts_with("  ")
            || ![
                "metadata-connect",
                "metadata-raw-packet",
                "chmod",
                "setuid-root",
            ]
            .contains(&words[0])
        {
            continue;
        }
        let expected = line.ends_with("as expected");
        let n = words.len();
        // ... TIER CALL EVENT as expected
        let (call, event) = if expected {
            (words[n - 4], words[n - 3])
        } else {
            (words[n - 3], words[n - 2])
        };
        rows.push((
            mode.clone(),
            words[0].to_owned(),
            call.to_owned(),
            event.to_owned(),
            expected,
        ));
    }
    rows
}

/// Nothing of a demo is left: its cgroup, its directory, its processes.
fn assert_demo_left_nothing(pid: u32) {
    let cgroup = cgroup2_root().join(format!("sensor-demo-{pid}"));
    assert!(!cgroup.exists(), "{} left behind", cgroup.display());
    let dir = std::env::temp_dir().join(format!("sensor-demo-{pid}"));
    assert!(!dir.exists(), "{} left behind", dir.display());
    // No process whose parent was the demo is left (the namespace holder, the sensor, steps).
    for entry in std::fs::read_dir("/proc").unwrap().filter_map(Result::ok) {
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        assert_ne!(
            ppid,
            Some(pid),
            "a child of the demo is still running: {stat}"
        );
    }
}

#[test]
fn sensor_demo_shows_every_protection_and_leaves_nothing() {
    require_root();
    let child = Command::new(sensor_bin())
        .arg("demo")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "demo failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let rows = demo_rows(&stdout);
    assert_eq!(
        rows.len(),
        10,
        "5 attempts in enforce and 5 in audit:\n{stdout}"
    );
    for (mode, protection, call, event, expected) in &rows {
        assert!(expected, "{mode} {protection}: {call} {event}\n{stdout}");
        match (mode.as_str(), protection.as_str()) {
            ("audit", _) => assert_eq!(
                (call.as_str(), event.as_str()),
                ("ok", "audited"),
                "{stdout}"
            ),
            // This host runs the kill tier for privilege changes; BPF LSM denies instead.
            ("enforce", "chmod" | "setuid-root") => assert!(
                matches!(
                    (call.as_str(), event.as_str()),
                    ("killed", "killed") | ("EPERM", "blocked")
                ),
                "{protection}: {call} {event}\n{stdout}"
            ),
            ("enforce", _) => assert_eq!(
                (call.as_str(), event.as_str()),
                ("EPERM", "blocked"),
                "{stdout}"
            ),
            _ => unreachable!(),
        }
    }
    // Each attempt is shown beside its event, as `sensor tail` prints it.
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("      20")).count(),
        10,
        "an event line under every attempt:\n{stdout}"
    );
    assert_demo_left_nothing(pid);
}

#[test]
fn ctrl_c_during_the_demo_removes_everything() {
    require_root();
    let mut child = Command::new(sensor_bin())
        .arg("demo")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = Lines::collect(child.stdout.take().unwrap(), |_| {});
    let mut child = ChildGuard(child);
    wait_until("the demo's first attempt", Duration::from_secs(120), || {
        out.text().contains("metadata-connect")
    });
    assert!(
        cgroup2_root().join(format!("sensor-demo-{pid}")).exists(),
        "the demo's cgroup exists while it runs"
    );
    signal_child(&child.0, libc::SIGINT);
    let status = wait_exit(&mut child.0, Duration::from_secs(60)).expect("the demo ends on Ctrl-C");
    assert!(
        !status.success(),
        "interrupted, not a success: {status}\n{}",
        out.text()
    );
    assert_demo_left_nothing(pid);
}

#[test]
fn the_demo_refuses_without_root_and_says_why() {
    let out = Command::new(sensor_bin())
        .arg("demo")
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("needs root") && err.contains("network namespace"),
        "{err}"
    );
}

/// A tmux session of our own; killed (by its name) on drop.
struct Tmux(String);

impl Tmux {
    fn start(command: &str) -> Self {
        let name = unique("tmux");
        let ok = Command::new("tmux")
            .args(["new-session", "-d", "-s", &name, "-x", "300", "-y", "40"])
            .arg(command)
            .env_remove("NO_COLOR")
            .status()
            .expect("tmux (cargo xtask setup installs it)");
        assert!(ok.success());
        Self(name)
    }

    fn screen(&self) -> String {
        let out = Command::new("tmux")
            .args(["capture-pane", "-p", "-J", "-t", &self.0])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.0])
            .status();
    }
}

#[test]
fn tail_on_a_terminal_shows_decisions_on_aligned_lines() {
    require_root();
    let cg = TestCgroup::new();
    let ns = NetNs::with_metadata_addresses();
    let sensor = Sensor::start(&[
        "--scope-cgroup",
        cg.path.to_str().unwrap(),
        "--mode",
        "enforce",
    ]);
    let tmux = Tmux::start(&format!(
        "{} tail -f --server {}",
        sensor_bin().display(),
        sensor.socket().display()
    ));
    wait_until("tail connected", Duration::from_secs(20), || {
        sensor.status()["subscribers"].as_u64() == Some(1)
    });
    let blocked = probe_net(&Place::inside(&ns, &cg.path), "tcp", "169.254.169.254", 80);
    assert_eq!(blocked.errno, i64::from(libc::EPERM));
    let dir = TempDir::new();
    let file = sensor_tests::file_with_mode(&dir.0, "f", 0o755);
    let killed = Command::new(probe_bin())
        .arg("--cgroup")
        .arg(&cg.path)
        .args(["exec", "/usr/bin/python3", "-c"])
        .arg(format!("import os; os.chmod({file:?}, 0o4755)"))
        .status()
        .unwrap();
    assert!(!killed.success());
    let cgroup = format!(
        "/{}",
        cg.path.strip_prefix(cgroup2_root()).unwrap().display()
    );
    let mut screen = String::new();
    wait_until(
        "both decisions on the screen",
        Duration::from_secs(20),
        || {
            let s = tmux.screen();
            let both = s.contains("BLOCKED") && s.contains("KILLED");
            if both {
                // Keep what matched.
                std::fs::write(dir.0.join("screen"), &s).unwrap();
            }
            both
        },
    );
    screen.push_str(&std::fs::read_to_string(dir.0.join("screen")).unwrap());
    let line = |word: &str| {
        screen
            .lines()
            .find(|l| l.contains(word))
            .unwrap_or_else(|| panic!("no {word} line:\n{screen}"))
            .to_owned()
    };
    let (b, k) = (line("BLOCKED"), line("KILLED"));
    // Decisions only: no exec/exit telemetry without --all.
    assert!(
        !screen.contains(" exec "),
        "telemetry shown without --all:\n{screen}"
    );
    let tail_of_cgroup = &cgroup[cgroup.len().saturating_sub(20)..];
    for (l, rule) in [(&b, "metadata-imds-v4"), (&k, "deny-setid-chmod")] {
        assert!(
            l.contains(tail_of_cgroup),
            "names the cgroup ({cgroup}): {l}"
        );
        assert!(l.contains(rule), "names the rule {rule}: {l}");
    }
    assert!(b.contains("169.254.169.254:80"), "{b}");
    assert!(k.contains(&file[file.len() - 10..]), "{k}");
    let at = |l: &str, w: &str| l[..l.find(w).unwrap()].chars().count();
    assert_eq!(at(&b, "BLOCKED"), at(&k, "KILLED"), "aligned:\n{b}\n{k}");
    assert_eq!(
        at(&b, "metadata-imds-v4"),
        at(&k, "deny-setid-chmod"),
        "aligned:\n{b}\n{k}"
    );
    assert_eq!(at(&b, "connect"), at(&k, "chmod"), "aligned:\n{b}\n{k}");
}

#[test]
fn completions_load_in_bash() {
    let script = format!(
        "source <({} completions bash) && complete -p sensor",
        sensor_bin().display()
    );
    let out = Command::new("bash").args(["-c", &script]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("complete") && text.trim_end().ends_with(" sensor"),
        "{text}"
    );
    for shell in ["zsh", "fish"] {
        let out = Command::new(sensor_bin())
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success() && out.stdout.len() > 1000, "{shell}");
    }
    let man = TempDir::new();
    let out = Command::new(sensor_bin())
        .arg("man")
        .arg(&man.0)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for page in [
        "sensor.1",
        "sensor-run.1",
        "sensor-tail.1",
        "sensor-demo.1",
        "sensor-exec.1",
    ] {
        let text = std::fs::read_to_string(man.0.join(page)).unwrap();
        assert!(text.contains(".TH"), "{page} is a man page");
    }
}

/// `probe --cgroup CG become-root-from 1000`: real uid 1000 asks for uid 0.
fn become_root_from_1000(cg: &Path) -> (u32, std::process::ExitStatus) {
    let child = Command::new(probe_bin())
        .arg("--cgroup")
        .arg(cg)
        .args(["become-root-from", "1000"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    (pid, out.status)
}

#[test]
fn the_built_in_policy_logs_a_privilege_raise_and_mode_enforce_stops_it() {
    require_root();
    let cg = TestCgroup::new();
    let scope = cg.path.to_str().unwrap();
    // Without --mode: the raise is allowed and reported `audited`.
    let sensor = Sensor::start(&["--scope-cgroup", scope]);
    let (pid, status) = become_root_from_1000(&cg.path);
    assert!(status.success(), "audited, not stopped: {status}");
    let ev = sensor.wait_event("the audited raise", |e| {
        e["kind"] == "privilege" && e["pid"] == pid
    });
    assert_eq!(
        (
            ev["verdict"].as_str(),
            ev["rule"].as_str(),
            ev["privilege"]["what"].as_str()
        ),
        (
            Some("audited"),
            Some("log-privilege-raises"),
            Some("setuid-root")
        ),
        "{ev}"
    );
    drop(sensor);
    // --mode enforce: the caller is killed (kill tier) and the raise reported.
    let sensor = Sensor::start(&["--scope-cgroup", scope, "--mode", "enforce"]);
    let (pid, status) = become_root_from_1000(&cg.path);
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL),
        "killed: {status}"
    );
    let ev = sensor.wait_event("the killed raise", |e| {
        e["kind"] == "privilege" && e["pid"] == pid
    });
    assert_eq!(
        (
            ev["verdict"].as_str(),
            ev["privilege"]["old_value"].as_str()
        ),
        (Some("killed"), Some("uid 1000")),
        "{ev}"
    );
}
