//! The journal's disk failing under a running daemon (docs/operations.md, "When the journal's
//! disk fails"): a full filesystem (a 1 MiB tmpfs filled up), a filesystem that turns read-only
//! (ext4 with `errors=remount-ro` after an error), and the journal directory deleted. During
//! each fault a metadata connect loop in scope never gets through, the daemon stays up and
//! ready, and status, metrics and `/readyz` say the journal is failing; once the disk is usable
//! again, journaling resumes by itself and one `lost` record (stage `journal_write`) says
//! exactly how many events went to live subscribers without a sequence number.
//!
//! Why not `mount -o remount,ro` of a tmpfs: the kernel refuses it (EBUSY) while a file is open
//! for writing, and the journal always has its active segment open. Why the ro disk comes back
//! as a new filesystem rather than `remount,rw`: ext4's emergency read-only state lasts until
//! the filesystem is unmounted (a `remount,rw` leaves it read-only), so the way back is what an
//! operator does: unmount it and mount a good filesystem in its place.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use sensor_tests::{
    ConnectLoop, NetNs, Sensor, StateDir, Tail, TempDir, TestCgroup, chmod_burst, http_get,
    metrics_addr, poll, require_root, sh,
};
use serde_json::Value;

/// A filesystem mounted on a directory the test made; unmounted (lazily: the daemon may still
/// hold files of it) on drop, with anything mounted over it.
struct Mount {
    path: PathBuf,
}

impl Mount {
    fn tmpfs(path: &Path, size: &str) -> Self {
        fs::create_dir_all(path).unwrap();
        let mount = Self {
            path: path.to_owned(),
        };
        mount.tmpfs_over(size);
        mount
    }

    /// ext4 without its own journal on a loop device over `image`, read-only after any error.
    fn ext4(image: &Path, path: &Path) -> Self {
        fs::create_dir_all(path).unwrap();
        sh(Command::new("truncate").args(["-s", "16M"]).arg(image));
        sh(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-O", "^has_journal"])
            .arg(image));
        let mount = Self {
            path: path.to_owned(),
        };
        sh(Command::new("mount")
            .args(["-o", "loop,errors=remount-ro"])
            .arg(image)
            .arg(path));
        mount
    }

    fn is_mounted(&self) -> bool {
        Command::new("mountpoint")
            .arg("-q")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Detach what is mounted here (the daemon's open files keep it alive until closed).
    fn detach(&self) {
        sh(Command::new("umount").arg("-l").arg(&self.path));
    }

    /// A fresh tmpfs over whatever is mounted here (this guard unmounts it too).
    fn tmpfs_over(&self, size: &str) {
        sh(Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(&self.path));
    }

    /// The block device of an ext4 mount (`loop3`).
    fn device(&self) -> String {
        let source = sh(Command::new("findmnt")
            .args(["-n", "-o", "SOURCE"])
            .arg(&self.path));
        Path::new(source.trim())
            .file_name()
            .expect("a device path")
            .to_string_lossy()
            .into_owned()
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        for _ in 0..4 {
            if !self.is_mounted() {
                break;
            }
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

/// What every scenario runs in: a scoped cgroup, a netns with the metadata addresses, a file
/// to chmod, the sensor's state directory.
struct Scene {
    cg: TestCgroup,
    ns: NetNs,
    scratch: TempDir,
    state: StateDir,
}

impl Scene {
    fn new() -> Self {
        require_root();
        Self {
            cg: TestCgroup::new(),
            ns: NetNs::with_metadata_addresses(),
            scratch: TempDir::new(),
            state: StateDir::new(),
        }
    }

    fn start(&self) -> Sensor {
        let cg = self.cg.path.to_str().unwrap();
        Sensor::start_in(
            &self.state,
            &["--scope-cgroup", cg, "--metrics-addr", "127.0.0.1:0"],
        )
    }

    fn file(&self) -> PathBuf {
        let file = self.scratch.0.join("target");
        if !file.exists() {
            fs::write(&file, b"x").unwrap();
        }
        file
    }

    /// `n` chmod events from a new process in scope; its pid.
    fn chmods(&self, n: u32) -> u32 {
        chmod_burst(&self.cg.path, &self.file(), n, 0, 0)
    }
}

fn journal_state(status: &Value) -> &str {
    status["journal"]["state"].as_str().unwrap_or("")
}

/// The value of one sample of `/metrics` (`name` with its labels, as exposed).
fn metric(addr: &str, sample: &str) -> f64 {
    let (status, _, text) = http_get(addr, "/metrics").expect("GET /metrics");
    assert_eq!(status, 200, "{text}");
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {sample} in:\n{text}"))
        .parse()
        .unwrap()
}

/// An event's sequence number (`0`: none; JSON lines leave it out).
fn seq(e: &Value) -> u64 {
    e["seq"].as_u64().unwrap_or(0)
}

/// The chmod events of process `pid`.
fn chmods_of(events: &[Value], pid: u32) -> usize {
    events
        .iter()
        .filter(|e| e["pid"] == pid && e["kind"] == "chmod")
        .count()
}

fn is_lost(e: &Value, stage: &str) -> bool {
    e["kind"] == "lost" && e["lost"]["stage"] == stage
}

/// One fault from start to end: `fail` breaks the disk (events are made until the daemon
/// says its journal is failing), `repair` makes it usable again; `errors` are the words one
/// of which the journal's error says.
fn outage(scene: &Scene, fail: impl FnOnce(), errors: &[&str], repair: impl FnOnce()) {
    let sensor = scene.start();
    let addr = metrics_addr(&sensor);
    let live = Tail::start(sensor.socket(), &["-f", "-o", "json"]);
    let looper = ConnectLoop::start(&scene.ns, &scene.cg.path);

    let before = scene.chmods(20);
    live.wait_until("the events before the fault", |ev| {
        chmods_of(ev, before) == 20
    });
    let ok = sensor.status();
    assert_eq!(journal_state(&ok), "ok", "{ok}");
    assert_eq!(ok["counters"]["journal_outages"], 0, "{ok}");

    fail();
    let failing = |s: &Value| journal_state(s) == "failing";
    let mut seen = None;
    for _ in 0..40 {
        scene.chmods(50);
        seen = poll(Duration::from_secs(1), Duration::from_millis(50), || {
            Some(sensor.status()).filter(failing)
        });
        if seen.is_some() {
            break;
        }
    }
    let status = seen.unwrap_or_else(|| {
        panic!(
            "the journal never said it was failing; stderr:\n{}",
            sensor.stderr_text()
        )
    });

    // During the outage: events still go out live (without a number), counted; the daemon
    // is up, ready and says what is wrong.
    let during = scene.chmods(100);
    let got = live.wait_until("the events during the fault", |ev| {
        chmods_of(ev, during) == 100
    });
    assert!(
        got.iter()
            .filter(|e| e["pid"] == during)
            .all(|e| seq(e) == 0),
        "events during the fault have no sequence number"
    );
    let error = status["journal"]["error"].as_str().unwrap();
    assert!(
        errors.iter().any(|w| error.contains(w)),
        "journal error {error:?} should say one of {errors:?}"
    );
    let status = sensor.wait_counters(&[("journal_unjournaled", 100)]);
    assert_eq!(journal_state(&status), "failing", "{status}");
    assert_eq!(status["counters"]["journal_outages"], 1, "{status}");
    let (code, _, body) = http_get(&addr, "/readyz").unwrap();
    assert_eq!(code, 200, "enforcement works: still ready ({body})");
    assert!(body.contains("degraded: journal writes failing"), "{body}");
    assert_eq!(metric(&addr, "sensor_journal_failing"), 1.0);
    let health = sensor.cli(&["health"]);
    assert!(health.status.success(), "{health:?}");

    repair();
    // Journaling resumes by itself: no event is needed for it.
    let status = sensor.wait_status("the journal writing again", |s| journal_state(s) == "ok");
    assert_eq!(status["journal"]["error"], "", "{status}");

    // The loss record, live: its count is exactly the number of events that went out without
    // a number, all of them before it.
    let ev = live.wait_until("the journal_write loss record", |ev| {
        ev.iter().any(|e| is_lost(e, "journal_write"))
    });
    let at = ev.iter().position(|e| is_lost(e, "journal_write")).unwrap();
    let loss = &ev[at];
    let unnumbered = ev[..at].iter().filter(|e| seq(e) == 0).count() as u64;
    assert!(unnumbered >= 100, "{unnumbered}");
    assert_eq!(loss["lost"]["count"], unnumbered, "{loss}");
    assert!(seq(loss) > 0, "{loss}");
    assert!(
        !ev.iter().any(|e| is_lost(e, "subscriber")),
        "the live subscriber kept up"
    );
    let counted = sensor.counter("journal_unjournaled");
    assert_eq!(
        counted, unnumbered,
        "the daemon counted what the subscriber saw"
    );

    // Numbered again after it, without a gap.
    let after = scene.chmods(10);
    let ev = live.wait_until("the events after the fault", |ev| {
        chmods_of(ev, after) == 10
    });
    assert!(
        ev.iter().skip(at + 1).all(|e| seq(e) > 0),
        "every event after the loss record has a number"
    );
    let seqs: Vec<u64> = ev[at..]
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "numbers go on from the loss record: {seqs:?}"
    );

    // Replay: the loss record with the same number and count; none of the unnumbered events.
    let mut replay = Tail::start(sensor.socket(), &["--from-seq", "1", "-o", "json"]);
    assert!(replay.wait_exit().success(), "{}", replay.stderr_text());
    let stored = replay.events();
    let losses: Vec<&Value> = stored
        .iter()
        .filter(|e| is_lost(e, "journal_write"))
        .collect();
    assert_eq!(losses.len(), 1, "{losses:?}");
    assert_eq!(
        (&losses[0]["seq"], &losses[0]["lost"]["count"]),
        (&loss["seq"], &loss["lost"]["count"])
    );
    assert!(
        !stored
            .iter()
            .any(|e| e["pid"] == during || seq(e) == 0 && e["kind"] != "lost")
    );
    assert_eq!(chmods_of(&stored, after), 10);

    assert_eq!(metric(&addr, "sensor_journal_failing"), 0.0);
    assert_eq!(metric(&addr, "sensor_journal_outages_total"), 1.0);
    assert_eq!(
        metric(&addr, "sensor_dropped_events_total{stage=\"journal\"}"),
        unnumbered as f64
    );
    // Logged once when it began, once when it ended: not per event.
    let log = sensor.stderr_text();
    assert_eq!(log.matches("journal: writes failing").count(), 1, "{log}");
    assert_eq!(
        log.matches("journal: writes work again").count(),
        1,
        "{log}"
    );
    assert!(!log.contains("journal append failed"), "{log}");

    let (tries, through) = looper.stop();
    assert!(tries > 0, "the connect loop ran");
    assert_eq!(
        through, 0,
        "a metadata connect got through during the fault"
    );
}

#[test]
fn a_full_disk_keeps_enforcing_and_journaling_resumes_with_the_exact_loss_once_space_returns() {
    let scene = Scene::new();
    let _disk = Mount::tmpfs(&scene.state.journal(), "1m");
    let filler = scene.state.journal().join("filler");
    outage(
        &scene,
        || {
            // Fill the filesystem: the journal's next page does not fit.
            use std::io::Write as _;
            let mut f = fs::File::create(&filler).unwrap();
            let chunk = vec![0u8; 4096];
            while f.write_all(&chunk).is_ok() {}
        },
        &["No space left on device"],
        || fs::remove_file(&filler).unwrap(),
    );
}

#[test]
fn a_disk_turned_read_only_keeps_enforcing_and_a_good_disk_in_its_place_is_journaled_on() {
    let scene = Scene::new();
    let image = scene.scratch.0.join("journal.img");
    let disk = Mount::ext4(&image, &scene.state.journal());
    let device = disk.device();
    outage(
        &scene,
        || {
            // What ext4 does on an I/O or metadata error with errors=remount-ro.
            fs::write(
                format!("/sys/fs/ext4/{device}/trigger_fs_error"),
                "sensor disk test\n",
            )
            .unwrap();
        },
        &["Read-only file system"],
        || {
            disk.detach();
            disk.tmpfs_over("16m");
        },
    );
}

#[test]
fn a_deleted_journal_directory_keeps_enforcing_and_comes_back() {
    let scene = Scene::new();
    let dir = scene.state.journal();
    outage(
        &scene,
        || {
            fs::remove_dir_all(&dir).unwrap();
            // Something in the way keeps the directory from being made again until the repair
            // (otherwise the daemon's next retry, a second later, already ends the outage).
            fs::write(&dir, b"in the way").unwrap();
        },
        &[
            "segment file was deleted",
            "No such file or directory",
            "File exists",
            "Not a directory",
        ],
        || fs::remove_file(&dir).unwrap(),
    );
    assert!(dir.is_dir(), "the journal directory was made again");
}
