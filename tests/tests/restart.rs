//! Pinned mode (`--pin-dir`): enforcement survives the daemon. A scoped loop of metadata
//! connects never gets through while the daemon is SIGKILLed and restarted 20 times and then
//! replaced by a new daemon process (an upgrade); what the kernel reported while no daemon ran
//! is read by the next one; `sensor uninstall` ends enforcement and leaves nothing pinned.

use std::process::Command;

use sensor_tests::{
    ConnectLoop, NetNs, PinDir, Place, Sensor, StateDir, Tail, TestCgroup, probe_net, require_root,
};
use serde_json::Value;

const EPERM: i64 = libc::EPERM as i64;

#[test]
fn enforcement_survives_sigkill_restarts_and_an_upgrade_until_uninstall() {
    require_root();
    let pins = PinDir::new();
    let cg = TestCgroup::new();
    let ns = NetNs::with_metadata_addresses();
    let inside = Place::inside(&ns, &cg.path);
    let state = StateDir::new();
    let args = [
        "--scope-cgroup",
        cg.path.to_str().unwrap(),
        "--pin-dir",
        pins.as_str(),
    ];
    let mut sensor = Sensor::start_in(&state, &args);

    let looper = ConnectLoop::start(&ns, &cg.path);

    let mut while_dead = 0;
    for round in 0..20 {
        sensor.kill();
        if round == 0 {
            // No daemon: the pinned programs still decide, and queue the event. (Port 81: the loop
            // thread listens on 80.)
            let r = probe_net(&inside, "tcp", "169.254.169.254", 81);
            assert_eq!(r.errno, EPERM, "blocked while no daemon runs");
            while_dead = r.pid;
        }
        sensor = Sensor::start_in(&state, &args);
    }
    // The event of the connect made while no daemon ran is in the journal: the next daemon read
    // it from the previous generation's pinned ring buffer.
    let mut replay = Tail::start(&state.socket(), &["--from-seq", "1", "-o", "json"]);
    assert!(replay.wait_exit().success());
    let found: Vec<Value> = replay
        .events()
        .into_iter()
        .filter(|e| e["pid"] == while_dead && e["kind"] == "connect")
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["verdict"], "blocked");

    // Upgrade: a new daemon process starts beside the old one, then the old one stops.
    let next_state = StateDir::new();
    let next = Sensor::start_in(&next_state, &args);
    let (status, stderr) = sensor.stop();
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains("enforcement stays pinned"),
        "a stopping pinned daemon keeps enforcement: {stderr}"
    );
    let after_upgrade = probe_net(&inside, "tcp", "169.254.169.254", 81);
    assert_eq!(after_upgrade.errno, EPERM);
    next.wait_for(1, |e| {
        e["pid"] == after_upgrade.pid && e["verdict"] == "blocked"
    });

    let (tries, through) = looper.stop();
    eprintln!(
        "connect loop: {} tries over 20 SIGKILL restarts and an upgrade, {} through",
        tries, through
    );
    assert!(tries >= 20, "the connect loop ran only {} times", tries);
    assert_eq!(
        through, 0,
        "a connect got through during a restart or the upgrade ({} tries)",
        tries
    );

    // Stopped daemon, pins kept: still enforced. Then uninstall ends it, leaving nothing.
    let (status, stderr) = next.stop();
    assert!(status.success(), "{stderr}");
    assert_eq!(
        probe_net(&inside, "tcp", "169.254.169.254", 81).errno,
        EPERM,
        "no daemon, pinned enforcement"
    );
    let out = pins.uninstall();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("removed 1 generation(s)"), "{text}");
    assert!(text.contains("no sensor program is loaded"), "{text}");
    assert!(!pins.path.exists(), "the pin directory is gone");
    assert_eq!(
        probe_net(&inside, "tcp", "169.254.169.254", 81).errno,
        0,
        "after uninstall the connect succeeds"
    );
    let again = pins.uninstall();
    assert!(again.status.success(), "uninstall is idempotent");
}

#[test]
fn a_pin_dir_off_bpffs_is_a_usage_error() {
    require_root();
    let cg = TestCgroup::new();
    let dir = sensor_tests::TempDir::new();
    let out = Command::new(sensor_tests::sensor_bin())
        .args([
            "run",
            "--scope-cgroup",
            cg.path.to_str().unwrap(),
            "--pin-dir",
        ])
        .arg(dir.0.join("pins"))
        .arg("--journal-dir")
        .arg(dir.0.join("journal"))
        .output()
        .unwrap();
    assert!(
        !dir.0.join("pins").exists() && !dir.0.join("journal").exists(),
        "nothing created"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("not on a bpf file system"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
}
