//! The LSM-tier tests, run inside the VM lane's guest by its `/init` (`vm-tests
//! --test-threads=1`; `cargo xtask vm` builds this target static and packs it). They start the
//! real static sensor, act from child processes placed in cgroups the test made (`vm-guest op
//! ...`), and check three things for every privilege path: the call's errno, what the kernel
//! state is afterwards (file mode, credentials, capabilities, xattrs), and the event the sensor
//! reported.
//!
//! Not run by a plain `cargo test` (`test = false`): outside the guest every test fails at its
//! start ([`sensor_vm_tests::boot`]).

use std::{os::unix::process::ExitStatusExt as _, path::Path, thread, time::Duration};

use sensor_harness::{Sensor, TempDir, file_with_mode, poll, try_mode_of};
use sensor_vm_tests::{
    Outcome, USER, boot, linger, op_command, policy, report, run_op, start_sensor, test_cgroup,
};
use serde_json::Value;

/// One privilege path: how to set it up in `dir`, the operation, and what "changed nothing"
/// and "changed" look like afterwards.
struct PrivilegePath {
    name: &'static str,
    op: &'static str,
    /// Arguments, given the scratch directory.
    args: fn(&Path) -> Vec<String>,
    unchanged: Value,
    changed: Value,
}

/// A copy of busybox owned by USER with the set-uid bit: exec'ing it as root changes the
/// effective uid.
fn set_up_exec_target(dir: &Path) -> String {
    use std::os::unix::fs::PermissionsExt as _;
    let target = dir.join("suid-tool");
    std::fs::copy("/bin/busybox", &target).expect("copying busybox");
    std::os::unix::fs::chown(&target, Some(USER), Some(USER)).expect("chown suid-tool");
    // After the chown, which clears set-id bits.
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o4755))
        .expect("chmod 4755 suid-tool");
    target.display().to_string()
}

fn paths() -> Vec<PrivilegePath> {
    vec![
        PrivilegePath {
            name: "chmod u+s",
            op: "chmod",
            args: |d| vec![file_with_mode(d, "chmod-target", 0o755), "4755".into()],
            unchanged: Value::from("0755"),
            changed: Value::from("4755"),
        },
        PrivilegePath {
            name: "chmod g+s",
            op: "chmod",
            args: |d| vec![file_with_mode(d, "chmod-g-target", 0o750), "2750".into()],
            unchanged: Value::from("0750"),
            changed: Value::from("2750"),
        },
        PrivilegePath {
            name: "open(O_CREAT) with a set-uid mode",
            op: "create",
            args: |d| vec![d.join("created").display().to_string(), "4755".into()],
            unchanged: Value::Null,
            changed: Value::from("4755"),
        },
        PrivilegePath {
            name: "mknod with a set-gid mode",
            op: "mknod",
            args: |d| vec![d.join("made-node").display().to_string(), "2755".into()],
            unchanged: Value::Null,
            changed: Value::from("2755"),
        },
        PrivilegePath {
            name: "setresuid to root from a non-root real uid",
            op: "setuid-root",
            args: |_| vec![],
            unchanged: Value::from(vec![USER, 0, 0]),
            changed: Value::from(vec![0u32, 0, 0]),
        },
        PrivilegePath {
            name: "setresgid to root from a non-root real gid",
            op: "setgid-root",
            args: |_| vec![],
            unchanged: Value::from(vec![USER, USER, USER]),
            changed: Value::from(vec![0u32, 0, 0]),
        },
        PrivilegePath {
            name: "capset gaining CAP_NET_RAW",
            op: "capset",
            args: |_| vec![],
            unchanged: Value::from(false),
            changed: Value::from(true),
        },
        PrivilegePath {
            name: "exec of a set-uid file owned by another user",
            op: "exec",
            args: |d| vec![set_up_exec_target(d)],
            unchanged: Value::Null,
            changed: Value::Null,
        },
        PrivilegePath {
            name: "packet socket (frames that skip every destination check)",
            op: "packet-socket",
            args: |_| vec![],
            unchanged: Value::Null,
            changed: Value::Null,
        },
        PrivilegePath {
            name: "setxattr security.capability",
            op: "setxattr",
            args: |d| vec![file_with_mode(d, "caps-target", 0o644)],
            unchanged: Value::from(false),
            changed: Value::from(true),
        },
    ]
}

/// The operation's report. A successful exec prints nothing (busybox `true` ran instead):
/// its outcome has pid 0, and the event is found by its kind.
fn run_path(p: &PrivilegePath, cgroup: &Path, dir: &Path) -> Outcome {
    let args = (p.args)(dir);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    if p.op != "exec" {
        return run_op(cgroup, p.op, &args);
    }
    let out = op_command(cgroup, p.op, &args);
    report(&out).unwrap_or_else(|| {
        assert!(
            out.status.success(),
            "exec: {} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        Outcome {
            pid: 0,
            errno: 0,
            after: Value::Null,
        }
    })
}

/// Not an exec or exit event.
fn is_reported_call(e: &Value) -> bool {
    e["kind"] != "exec" && e["kind"] != "exit"
}

/// The event of a path's call.
fn event_for(sensor: &Sensor, p: &PrivilegePath, o: &Outcome) -> Value {
    if o.pid != 0 {
        return sensor.wait_event(&format!("{}: an event for pid {}", p.name, o.pid), |e| {
            e["pid"] == o.pid && is_reported_call(e)
        });
    }
    // A successful exec: the pid ran busybox afterwards.
    sensor.wait_event(&format!("{}: a setid-exec event", p.name), |e| {
        e["kind"] == "privilege" && e["privilege"]["what"] == "setid-exec"
    })
}

/// What every privilege path should come to, in one mode.
struct Want {
    label: &'static str,
    errno: i32,
    /// The state afterwards is the path's `unchanged` (else its `changed`).
    unchanged: bool,
    /// The verdict of the path's event; `None`: no event.
    verdict: Option<&'static str>,
}

/// Run every privilege path from `cgroup` under `sensor` and check errno, state and event.
/// Every path runs; the mismatches of all of them fail the test together (one boot costs
/// minutes under TCG).
fn check_every_path(sensor: &Sensor, cgroup: &Path, want: &Want) {
    let mut failures = Vec::new();
    for p in paths() {
        let dir = TempDir::open_to_all();
        let o = run_path(&p, cgroup, &dir.0);
        println!(
            "  {}: {}: errno {} after {}",
            want.label, p.name, o.errno, o.after
        );
        if o.errno != want.errno {
            failures.push(format!(
                "{}: errno {}, want {}",
                p.name, o.errno, want.errno
            ));
        }
        let state = if want.unchanged {
            &p.unchanged
        } else {
            &p.changed
        };
        if o.after != *state {
            failures.push(format!("{}: afterwards {} (want {state})", p.name, o.after));
        }
        match want.verdict {
            Some(verdict) => {
                let e = event_for(sensor, &p, &o);
                if e["verdict"] != verdict {
                    failures.push(format!(
                        "{}: event verdict {}, want {verdict} ({e})",
                        p.name, e["verdict"]
                    ));
                }
            }
            None if o.pid != 0 => {
                // Late events get 2 s to arrive.
                thread::sleep(Duration::from_secs(2));
                let found: Vec<Value> = sensor
                    .events()
                    .into_iter()
                    .filter(|e| e["pid"] == o.pid && is_reported_call(e))
                    .collect();
                if !found.is_empty() {
                    failures.push(format!("{}: unexpected event(s) {found:?}", p.name));
                }
            }
            None => {}
        }
    }
    assert!(
        failures.is_empty(),
        "{}: {} mismatch(es):\n{}",
        want.label,
        failures.len(),
        failures.join("\n")
    );
}

fn assert_tiers(sensor: &Sensor, want: &[(&str, &str)]) -> Value {
    let status = sensor.status();
    let wrong: Vec<String> = want
        .iter()
        .filter(|(what, tier)| status["protections"][what] != *tier)
        .map(|(what, tier)| {
            format!(
                "protection {what}: tier {}, want {tier}",
                status["protections"][what]
            )
        })
        .collect();
    assert!(wrong.is_empty(), "{}\nstatus: {status}", wrong.join("\n"));
    status
}

/// The protections every privilege hook names.
const PRIVILEGE_PROTECTIONS: [&str; 8] = [
    "metadata-packet",
    "chmod",
    "setid-create",
    "setuid-root",
    "setgid-root",
    "capset",
    "setid-exec",
    "file-caps",
];

/// The guest kernel lists `bpf` among its active LSMs and exposes its BTF (what every other
/// test here needs).
#[test]
fn guest_has_bpf_lsm_and_btf() {
    println!("  boot {}", boot());
    let lsm = std::fs::read_to_string("/sys/kernel/security/lsm")
        .expect("reading /sys/kernel/security/lsm");
    assert!(
        lsm.trim().split(',').any(|m| m == "bpf"),
        "bpf is not an active LSM: {lsm:?}"
    );
    let btf = std::fs::metadata("/sys/kernel/btf/vmlinux").expect("/sys/kernel/btf/vmlinux");
    assert!(btf.len() > 0, "/sys/kernel/btf/vmlinux is empty");
}

#[test]
fn status_names_the_lsm_tier_for_every_privilege_hook() {
    let scope = test_cgroup();
    let sensor = start_sensor(&policy(&scope.path, "enforce"), &["--tier", "lsm"]);
    let want: Vec<(&str, &str)> = PRIVILEGE_PROTECTIONS.iter().map(|p| (*p, "lsm")).collect();
    let status = assert_tiers(&sensor, &want);
    assert_eq!(
        status["protections"]["metadata-connect"], "cgroup",
        "metadata-connect"
    );
    let programs: Vec<&str> = status["attachments"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x["program"].as_str()).collect())
        .unwrap_or_default();
    // The kill-tier chmod and set*id tracepoints are not attached beside the LSM hooks.
    for gone in ["sensor_chmod", "sensor_setuid", "sensor_setgid"] {
        assert!(
            !programs.contains(&gone),
            "{gone} attached beside the LSM tier: {programs:?}"
        );
    }
    let text = sensor.cli(&["status"]);
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    // The protections section (the rest is programs and counters).
    for line in text.lines().take_while(|l| !l.starts_with("programs:")) {
        println!("  {line}");
    }
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with("capset") && l.contains("lsm")),
        "text status names no lsm tier for capset:\n{text}"
    );
}

#[test]
fn enforce_denies_every_privilege_path_with_eperm_and_changes_nothing() {
    let scope = test_cgroup();
    let sensor = start_sensor(&policy(&scope.path, "enforce"), &[]);
    let want = Want {
        label: "enforce",
        errno: libc::EPERM,
        unchanged: true,
        verdict: Some("blocked"),
    };
    check_every_path(&sensor, &scope.path, &want);
    // Re-applying a set-id bit the file already has adds nothing: allowed.
    let dir = TempDir::open_to_all();
    let f = file_with_mode(&dir.0, "already", 0o4755);
    let o = run_op(&scope.path, "chmod", &[&f, "4755"]);
    assert_eq!(o.errno, 0, "chmod 4755 of a 4755 file");
    // The status board is refreshed every 200 ms: wait for it to count every denial.
    let status = sensor.wait_counters(&[
        ("kernel_lsm_chmod_denied", 4),
        ("kernel_lsm_priv_denied", 5),
    ]);
    let lsm: Vec<String> = status["counters"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.starts_with("kernel_lsm"))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    println!("  counters: {}", lsm.join(" "));
}

#[test]
fn audit_allows_and_reports_every_privilege_path() {
    let scope = test_cgroup();
    let sensor = start_sensor(&policy(&scope.path, "audit"), &[]);
    let want = Want {
        label: "audit",
        errno: 0,
        unchanged: false,
        verdict: Some("audited"),
    };
    check_every_path(&sensor, &scope.path, &want);
}

#[test]
fn outside_the_scope_every_privilege_path_is_untouched() {
    let scope = test_cgroup();
    let outside = test_cgroup();
    let sensor = start_sensor(&policy(&scope.path, "enforce"), &[]);
    let want = Want {
        label: "outside",
        errno: 0,
        unchanged: false,
        verdict: None,
    };
    check_every_path(&sensor, &outside.path, &want);
    let events = sensor.events();
    assert!(
        !events
            .iter()
            .any(|e| e["kind"] == "privilege" || e["kind"] == "chmod"),
        "events outside the scope: {events:?}"
    );
}

#[test]
fn forced_kill_tier_is_named_in_status_and_kills_chmod() {
    let scope = test_cgroup();
    let sensor = start_sensor(&policy(&scope.path, "enforce"), &["--tier", "kill"]);
    let want: Vec<(&str, &str)> = PRIVILEGE_PROTECTIONS.iter().map(|p| (*p, "kill")).collect();
    assert_tiers(&sensor, &want);
    let dir = TempDir::open_to_all();
    let f = file_with_mode(&dir.0, "kill-target", 0o755);
    // A container's other process: the daemon reaches the file through it once the killed
    // caller is gone.
    let _main = linger(&scope.path);
    let out = op_command(&scope.path, "chmod", &[&f, "4755"]);
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGKILL),
        "--tier kill: chmod u+s ended with {}",
        out.status
    );
    // The daemon removes the bit the killed call added.
    let reverted = poll(Duration::from_secs(60), Duration::from_millis(200), || {
        (try_mode_of(&f) == Some(0o755)).then_some(())
    });
    assert!(
        reverted.is_some(),
        "--tier kill: mode {:?} after the kill, want 755",
        try_mode_of(&f).map(|m| format!("{m:o}"))
    );
}
