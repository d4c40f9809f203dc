//! The LSM-tier and override-tier tests, run inside the VM lane's guest by its `/init`
//! (`vm-tests --test-threads=1`; `cargo xtask vm` builds this target static and packs it). Each
//! kernel boots twice: with `bpf` in its active LSM list (the `lsm` tier), and with an `lsm=`
//! list without it (the `override` tier: fmod_ret on the `security_*` functions); the boot's
//! label (`SENSOR_VM_BOOT`, ending in `-override` for the second) says which tier to expect. They start the
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

/// The protections with an LSM and an override variant (every privilege hook, packet sockets
/// and sockets created outside the scope).
const PRIVILEGE_PROTECTIONS: [&str; 10] = [
    "metadata-packet",
    "metadata-late-connect",
    "metadata-late-send",
    "chmod",
    "setid-create",
    "setuid-root",
    "setgid-root",
    "capset",
    "setid-exec",
    "file-caps",
];

/// The tier this boot should run the privilege hooks on: `override` on a boot whose `lsm=`
/// list leaves out `bpf`, else `lsm`.
fn boot_tier() -> &'static str {
    if boot().ends_with("-override") {
        "override"
    } else {
        "lsm"
    }
}

/// The kill-tier tracepoint programs of the privilege protections (none may be attached on a
/// better tier).
const PRIVILEGE_TRACEPOINTS: [&str; 9] = [
    "sensor_chmod",
    "sensor_openat",
    "sensor_setuid",
    "sensor_setgid",
    "sensor_capset",
    "sensor_setid_exec",
    "sensor_setxattr",
    "sensor_socket",
    "sensor_mknodat",
];

/// The guest kernel's active LSM list is the boot's (with `bpf` on the lsm boot, without it on
/// the override boot), and the kernel exposes its BTF (what every other test here needs).
#[test]
fn guest_has_bpf_lsm_and_btf() {
    println!("  boot {} (tier {})", boot(), boot_tier());
    let lsm = std::fs::read_to_string("/sys/kernel/security/lsm")
        .expect("reading /sys/kernel/security/lsm");
    let has_bpf = lsm.trim().split(',').any(|m| m == "bpf");
    assert_eq!(
        has_bpf,
        boot_tier() == "lsm",
        "boot {}: active LSMs {lsm:?}",
        boot()
    );
    let btf = std::fs::metadata("/sys/kernel/btf/vmlinux").expect("/sys/kernel/btf/vmlinux");
    assert!(btf.len() > 0, "/sys/kernel/btf/vmlinux is empty");
}

#[test]
fn status_names_the_lsm_tier_for_every_privilege_hook() {
    let scope = test_cgroup();
    let tier = boot_tier();
    let sensor = start_sensor(&policy(&scope.path, "enforce"), &["--tier", tier]);
    let want: Vec<(&str, &str)> = PRIVILEGE_PROTECTIONS.iter().map(|p| (*p, tier)).collect();
    let status = assert_tiers(&sensor, &want);
    assert_eq!(
        status["protections"]["metadata-connect"], "cgroup",
        "metadata-connect"
    );
    let programs: Vec<&str> = status["attachments"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x["program"].as_str()).collect())
        .unwrap_or_default();
    // No kill-tier tracepoint of a privilege protection is attached beside the better tier.
    for gone in PRIVILEGE_TRACEPOINTS {
        assert!(
            !programs.contains(&gone),
            "{gone} attached beside the {tier} tier: {programs:?}"
        );
    }
    // No syscall tracepoint at all: nothing puts the node's syscalls on the tracing slow path.
    let syscall_tracepoints: Vec<&Value> = status["attachments"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| {
            a["target"]
                .as_str()
                .is_some_and(|t| t.starts_with("syscalls/"))
        })
        .collect();
    assert!(
        syscall_tracepoints.is_empty(),
        "syscall tracepoints attached on the {tier} tier: {syscall_tracepoints:?}"
    );
    // --tier auto picks the same tier by itself.
    drop(sensor);
    let auto = start_sensor(&policy(&scope.path, "enforce"), &[]);
    assert_tiers(&auto, &want);
    let sensor = auto;
    let text = sensor.cli(&["status"]);
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    // The protections section (the rest is programs and counters).
    for line in text.lines().take_while(|l| !l.starts_with("programs:")) {
        println!("  {line}");
    }
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with("capset") && l.contains(tier)),
        "text status names no {tier} tier for capset:\n{text}"
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

/// One network call from `cgroup` (`late`: on a socket made before joining it) and the
/// events reported for its pid (waiting for at least `events`).
fn net_call(
    sensor: &Sensor,
    cgroup: &Path,
    late: bool,
    proto: &str,
    port: &str,
    events: usize,
) -> (i32, Vec<Value>) {
    let o = run_op(
        cgroup,
        if late { "late-net" } else { "net" },
        &[proto, port],
    );
    if events > 0 {
        sensor.wait_event(&format!("a connect event for pid {}", o.pid), |e| {
            e["pid"] == o.pid && e["kind"] == "connect"
        });
    }
    // Time for a second (duplicate) event to show.
    thread::sleep(Duration::from_secs(1));
    let found = sensor
        .events()
        .into_iter()
        .filter(|e| e["pid"] == o.pid && e["kind"] == "connect")
        .collect();
    (o.errno, found)
}

/// A socket created outside the scope and used from inside it: denied at `socket_connect` /
/// `socket_sendmsg` before the call (EPERM, not a kill), one event each; a socket made in the
/// scope is still the cgroup hooks' call (one event, no second one from the LSM hook), in
/// enforce and in audit.
#[test]
fn late_sockets_are_denied_before_the_call_and_reported_once() {
    let scope = test_cgroup();
    for (action, errno, verdict) in [("enforce", libc::EPERM, "blocked"), ("audit", 0, "audited")] {
        let sensor = start_sensor(&policy(&scope.path, action), &[]);
        for (late, proto, port, hook) in [
            (true, "tcp", "80", "socket_connect"),
            (true, "udp", "53", "socket_sendmsg"),
            (false, "tcp", "80", "connect4"),
            (false, "udp", "53", "sendmsg4"),
        ] {
            let label = format!(
                "{action}: {proto} on a socket made {}",
                if late { "outside" } else { "inside" }
            );
            let (got, events) = net_call(&sensor, &scope.path, late, proto, port, 1);
            println!("  {label}: errno {got}, events {}", events.len());
            assert_eq!(got, errno, "{label}");
            assert_eq!(events.len(), 1, "{label}: {events:?}");
            let e = &events[0];
            assert_eq!(
                (e["verdict"].as_str(), e["connect"]["hook"].as_str()),
                (Some(verdict), Some(hook)),
                "{label}: {e}"
            );
            assert_eq!(e["connect"]["dst_addr"], "169.254.169.254", "{label}: {e}");
        }
        // Outside the scope, a late socket is nobody's business.
        let outside = test_cgroup();
        let (got, events) = net_call(&sensor, &outside.path, true, "tcp", "80", 0);
        assert_eq!(
            (got, events.len()),
            (0, 0),
            "{action}: outside the scope: {events:?}"
        );
    }
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

/// The cost of this boot's tier, emulated (TCG: absolute times mean nothing, ratios are printed
/// labelled as such, never asserted): getpid system-wide, chmod and open out of scope, chmod in
/// scope with an event, each the median of three runs (after one not counted) without and then
/// with the sensor. What is asserted is that the measured calls took the hooked path: every
/// in-scope chmod was seen by the kernel programs, none of the out-of-scope ones, and the
/// boot's tier served chmod.
#[test]
fn emulated_syscall_ratios_at_this_boots_tier() {
    const N: u32 = 4000;
    /// Runs per case and configuration, the first not counted.
    const RUNS: u64 = 4;
    let inside = test_cgroup();
    let outside = test_cgroup();
    let dir = TempDir::new();
    let file = file_with_mode(&dir.real(), "loop-target", 0o644);
    let cases: [(&str, &str, &Path, u32); 4] = [
        ("getpid, system-wide", "getpid", &outside.path, 5 * N),
        ("chmod, out of scope", "chmod", &outside.path, N),
        ("open, out of scope", "open", &outside.path, N),
        (
            "chmod in scope, one event per call",
            "chmod",
            &inside.path,
            N,
        ),
    ];
    let measure = || -> Vec<f64> {
        cases
            .iter()
            .map(|(_, kind, cg, n)| {
                // A first run, not counted: TCG translates the code the first time it runs.
                let mut runs: Vec<f64> = (0..RUNS)
                    .map(|_| {
                        let o = run_op(cg, "loop", &[kind, &n.to_string(), &file]);
                        assert_eq!(o.errno, 0, "loop {kind}: {o:?}");
                        o.after["ns_per_op"].as_f64().expect("ns_per_op")
                    })
                    .skip(1)
                    .collect();
                runs.sort_by(f64::total_cmp);
                runs[1]
            })
            .collect()
    };
    let without = measure();
    let tier = boot_tier();
    let sensor = start_sensor(&policy(&inside.path, "audit"), &["--tier", tier]);
    let with = measure();
    let in_scope = RUNS * u64::from(N);
    // Kernel counters reach the status on the daemon's slow tick.
    sensor.wait_counter("kernel_chmod_seen", in_scope);
    let status = assert_tiers(&sensor, &[("chmod", tier)]);
    let seen = status["counters"]["kernel_chmod_seen"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        (in_scope..in_scope + 100).contains(&seen),
        "kernel_chmod_seen {seen}: expected the {in_scope} in-scope chmods and none of the out-of-scope ones"
    );
    println!(
        "  emulated (TCG) ratios, boot {} tier {tier} (ratios only):",
        boot()
    );
    for (((name, ..), a), b) in cases.iter().zip(&without).zip(&with) {
        println!("    {name:<36} {:>6.2}x", b / a);
    }
}
