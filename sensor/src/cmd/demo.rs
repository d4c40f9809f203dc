//! `sensor demo`: every protection at work on this host, in one command, without touching any
//! real endpoint. It makes a throwaway network namespace (the metadata address on its own
//! loopback, a listener behind it) and a throwaway cgroup, runs a sensor of its own scoped to
//! that cgroup, and makes a scripted set of attempts from inside both (`demo_step`), in enforce
//! and then in audit, printing each outcome beside its event as `sensor tail` shows it.
//! Everything it made is removed when it ends, also on Ctrl-C.

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, ExitCode, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use clap::Args;
use sensor_proto::v1 as pb;

pub use super::demo_step::{StepArgs, step};
use super::{
    ClientTls, DaemonAddr, EXIT_FAILURE, EXIT_USAGE,
    demo_step::{METADATA, Op, TCP_PORT, UDP_PORT, USER},
    status::fetch,
};
use crate::{
    attribution::cgroups::cgroup2_root,
    event::{compact::to_compact, json::from_json, proto::kind_of},
    kernel::catalog::{protection_tiers, tier_name},
};

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Colour the events (on a terminal without NO_COLOR by default).
    #[arg(long)]
    pub colour: bool,
}

/// How long the demo's sensor may take to start.
const READY: Duration = Duration::from_secs(60);
/// How long an attempt may take.
const ATTEMPT: Duration = Duration::from_secs(10);
/// How long an attempt's event may take to arrive (the daemon drains on a timer).
const EVENT: Duration = Duration::from_secs(5);

/// Set by SIGINT/SIGTERM: the demo stops at the next step and cleans up.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// One scripted attempt.
struct Attempt {
    protection: &'static str,
    what: String,
    op: Op,
}

fn attempts(file: &Path) -> Vec<Attempt> {
    vec![
        Attempt {
            protection: "metadata-connect",
            what: format!("TCP connect to {METADATA}:{TCP_PORT}"),
            op: Op::Tcp,
        },
        Attempt {
            protection: "metadata-connect",
            what: format!("UDP send to {METADATA}:{UDP_PORT}"),
            op: Op::Udp,
        },
        Attempt {
            protection: "metadata-raw-packet",
            what: format!("raw ICMP echo to {METADATA}"),
            op: Op::Raw,
        },
        Attempt {
            protection: "chmod",
            what: format!("chmod 4755 {}", file.display()),
            op: Op::Chmod,
        },
        Attempt {
            protection: "setuid-root",
            what: format!("setresuid(0, 0, 0) with real uid {USER}"),
            op: Op::Setuid,
        },
    ]
}

pub fn main(args: &DemoArgs) -> ExitCode {
    // SAFETY: no arguments, cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "sensor demo: error: needs root: it creates a network namespace and a cgroup and loads kernel programs (run it with sudo)"
        );
        return ExitCode::from(EXIT_USAGE);
    }
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: an async-signal-safe handler that only stores to an atomic.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
    let colour = args.colour
        || (std::io::IsTerminal::is_terminal(&std::io::stdout())
            && std::env::var_os("NO_COLOR").is_none());
    match run(colour) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(EXIT_FAILURE),
        Err(msg) => {
            eprintln!("sensor demo: error: {msg}");
            ExitCode::from(if STOP.load(Ordering::SeqCst) {
                130
            } else {
                EXIT_FAILURE
            })
        }
    }
}

/// The demo's throwaway state; dropping it removes everything (children first).
struct Stage {
    dir: PathBuf,
    cgroup: PathBuf,
    netns: Option<Child>,
    /// The cgroup's long-lived process (a container's main process).
    main: Option<Child>,
}

impl Drop for Stage {
    fn drop(&mut self) {
        for child in [&mut self.main, &mut self.netns].into_iter().flatten() {
            end(child);
        }
        // Our attempts have exited; the cgroup is empty.
        if let Err(e) = std::fs::remove_dir(&self.cgroup)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            eprintln!("sensor demo: removing {}: {e}", self.cgroup.display());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// End a child of ours: SIGTERM, a bounded wait, SIGKILL.
fn end(child: &mut Child) {
    // SAFETY: signalling our own child by pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn self_exe() -> Result<PathBuf, String> {
    std::env::current_exe().map_err(|e| format!("finding this program: {e}"))
}

fn stage() -> Result<Stage, String> {
    let id = std::process::id();
    let dir = std::env::temp_dir().join(format!("sensor-demo-{id}"));
    let cgroup = cgroup2_root()
        .map_err(|e| format!("cgroup2: {e}"))?
        .join(format!("sensor-demo-{id}"));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut stage = Stage {
        dir,
        cgroup,
        netns: None,
        main: None,
    };
    std::fs::create_dir(&stage.cgroup).map_err(|e| format!("{}: {e}", stage.cgroup.display()))?;
    stage.netns = Some(helper(&["hold-netns"], "the network namespace")?);
    let cgroup = stage.cgroup.display().to_string();
    stage.main = Some(helper(
        &["linger", "--cgroup", &cgroup],
        "the cgroup's main process",
    )?);
    Ok(stage)
}

/// A long-lived `demo-step` child, once it says it is ready.
fn helper(args: &[&str], what: &str) -> Result<Child, String> {
    let mut child = Command::new(self_exe()?)
        .arg("demo-step")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting {what}: {e}"))?;
    let out = child.stdout.take().expect("piped");
    let mut line = String::new();
    let read = BufReader::new(out).read_line(&mut line);
    if read.is_err() || line.trim() != "ready" {
        end(&mut child);
        return Err(format!("{what} could not be set up"));
    }
    Ok(child)
}

/// The demo's own sensor: scoped to the demo's cgroup, its events collected.
struct DemoSensor {
    child: Child,
    socket: PathBuf,
    events: Arc<Mutex<Vec<pb::Event>>>,
}

impl Drop for DemoSensor {
    fn drop(&mut self) {
        end(&mut self.child);
    }
}

fn start_sensor(stage: &Stage, mode: &str) -> Result<DemoSensor, String> {
    let socket = stage.dir.join(format!("sensor-{mode}.sock"));
    let mut child = Command::new(self_exe()?)
        .arg("run")
        .arg("--scope-cgroup")
        .arg(&stage.cgroup)
        .args([
            "--mode",
            mode,
            "--stdout-events",
            "--drain-interval-ms",
            "20",
        ])
        .arg("--journal-dir")
        .arg(stage.dir.join(format!("journal-{mode}")))
        .arg("--socket")
        .arg(&socket)
        .env("SENSOR_LOG", "info")
        .env_remove("SENSOR_POLICY")
        .env_remove("SENSOR_SCOPE_CGROUP")
        .env_remove("SENSOR_PIN_DIR")
        .env_remove("SENSOR_EXPORT")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting the sensor: {e}"))?;
    let events = Arc::new(Mutex::new(Vec::new()));
    let out = child.stdout.take().expect("piped");
    let sink = Arc::clone(&events);
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Ok(event) = from_json(&line) {
                sink.lock().unwrap_or_else(|p| p.into_inner()).push(event);
            }
        }
    });
    let err = child.stderr.take().expect("piped");
    let (ready_tx, ready_rx) = mpsc::channel();
    let log = Arc::new(Mutex::new(Vec::new()));
    let lines = Arc::clone(&log);
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if line.contains("sensor ready") {
                let _ = ready_tx.send(());
            }
            lines.lock().unwrap_or_else(|p| p.into_inner()).push(line);
        }
    });
    let sensor = DemoSensor {
        child,
        socket,
        events,
    };
    let deadline = Instant::now() + READY;
    loop {
        if ready_rx.recv_timeout(Duration::from_millis(100)).is_ok() {
            return Ok(sensor);
        }
        if STOP.load(Ordering::SeqCst) {
            return Err("stopped".into());
        }
        if Instant::now() > deadline {
            let log = log.lock().unwrap_or_else(|p| p.into_inner()).join("\n");
            return Err(format!("the sensor did not start:\n{log}"));
        }
    }
}

/// How an attempt ended.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    Errno(i32),
    Killed,
}

impl Outcome {
    fn text(self) -> String {
        match self {
            Self::Ok => "ok".into(),
            Self::Errno(libc::EPERM) => "EPERM".into(),
            Self::Errno(n) => format!("errno {n}"),
            Self::Killed => "killed".into(),
        }
    }
}

/// Run one attempt as a child in the demo's namespace and cgroup.
fn attempt(stage: &Stage, op: Op, file: &Path) -> Result<(u32, Outcome), String> {
    let holder = stage.netns.as_ref().expect("set up").id();
    let mut child = Command::new(self_exe()?)
        .arg("demo-step")
        .arg(match op {
            Op::Tcp => "tcp",
            Op::Udp => "udp",
            Op::Raw => "raw",
            Op::Chmod => "chmod",
            Op::Setuid => "setuid",
            Op::HoldNetns | Op::Linger => unreachable!("not an attempt"),
        })
        .arg("--netns-pid")
        .arg(holder.to_string())
        .arg("--cgroup")
        .arg(&stage.cgroup)
        .arg("--file")
        .arg(file)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running an attempt: {e}"))?;
    let pid = child.id();
    let deadline = Instant::now() + ATTEMPT;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if Instant::now() > deadline {
            end(&mut child);
            return Err("an attempt did not end".into());
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    if std::os::unix::process::ExitStatusExt::signal(&status) == Some(libc::SIGKILL) {
        return Ok((pid, Outcome::Killed));
    }
    let mut out = String::new();
    if let Some(stdout) = child.stdout.take() {
        let _ = BufReader::new(stdout).read_line(&mut out);
    }
    let errno = out
        .trim()
        .strip_prefix("errno ")
        .and_then(|n| n.parse::<i32>().ok())
        .ok_or_else(|| format!("the attempt failed ({status}): {}", out.trim()))?;
    Ok((
        pid,
        if errno == 0 {
            Outcome::Ok
        } else {
            Outcome::Errno(errno)
        },
    ))
}

/// The event the attempt made: by its pid, or for a raw packet on kernels whose egress program
/// names only the cgroup, by the cgroup.
fn event_of(sensor: &DemoSensor, pid: u32, cgroup_id: u64) -> Option<pb::Event> {
    let deadline = Instant::now() + EVENT;
    loop {
        let found = sensor
            .events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|e| {
                let kind = kind_of(e);
                let decision = matches!(
                    kind,
                    pb::EventKind::Connect | pb::EventKind::Chmod | pb::EventKind::Privilege
                );
                let p = e.process.clone().unwrap_or_default();
                decision && (p.pid == pid || (p.pid == 0 && p.cgroup_id == cgroup_id))
            })
            .cloned();
        if found.is_some() || Instant::now() > deadline || STOP.load(Ordering::SeqCst) {
            return found;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn cgroup_id(path: &Path) -> u64 {
    std::os::unix::fs::MetadataExt::ino(
        &std::fs::metadata(path).unwrap_or_else(|_| std::fs::metadata("/").expect("/ exists")),
    )
}

/// Run the script; `Ok(true)` when every attempt was decided and reported as expected.
fn run(colour: bool) -> Result<bool, String> {
    let stage = stage()?;
    let file = stage.dir.join("demo-file");
    let cg = cgroup_id(&stage.cgroup);
    println!(
        "sensor demo: a network namespace with {METADATA} on its own loopback (a listener behind it), and the cgroup {}",
        stage.cgroup.display()
    );
    let mut all_ok = true;
    for (mode, verdict_word) in [("enforce", "blocked"), ("audit", "audited")] {
        if STOP.load(Ordering::SeqCst) {
            return Err("stopped".into());
        }
        std::fs::write(&file, b"demo").map_err(|e| e.to_string())?;
        std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .map_err(|e| e.to_string())?;
        let sensor = start_sensor(&stage, mode)?;
        let status = fetch(&DaemonAddr {
            server: sensor.socket.display().to_string(),
            tls: ClientTls::default(),
        })?;
        let tiers = protection_tiers(status.attachments.iter().map(|a| a.program.as_str()));
        let tier_of =
            |p: &str| tier_name(tiers.iter().find(|(n, _)| *n == p).and_then(|(_, t)| *t));
        println!("\n{mode} (sensor run --mode {mode}):");
        println!(
            "  {:<20} {:<46} {:<7} {:<8} {:<8}",
            "protection", "attempt", "tier", "call", "event"
        );
        for a in attempts(&file) {
            if STOP.load(Ordering::SeqCst) {
                return Err("stopped".into());
            }
            let tier = tier_of(a.protection);
            let (want_call, want_verdict) = match (mode, tier) {
                ("audit", _) => (Outcome::Ok, "audited"),
                (_, "kill") => (Outcome::Killed, "killed"),
                _ => (Outcome::Errno(libc::EPERM), verdict_word),
            };
            let (pid, outcome) = attempt(&stage, a.op, &file)?;
            let event = event_of(&sensor, pid, cg);
            let verdict = event.as_ref().map_or_else(
                || "none".to_owned(),
                |e| crate::event::names::verdict_name(e.verdict()),
            );
            let ok = outcome == want_call && verdict == want_verdict;
            all_ok &= ok;
            println!(
                "  {:<20} {:<46} {:<7} {:<8} {:<8} {}",
                a.protection,
                a.what,
                tier,
                outcome.text(),
                verdict,
                if ok {
                    "as expected".to_owned()
                } else {
                    format!(
                        "UNEXPECTED (wanted {} and {want_verdict})",
                        want_call.text()
                    )
                }
            );
            if let Some(e) = &event {
                println!("      {}", to_compact(e, colour));
            }
        }
        drop(sensor);
    }
    println!(
        "\nsensor demo: {}; removing the namespace, the cgroup and the demo's files",
        if all_ok {
            "every attempt was decided in the kernel and reported as expected"
        } else {
            "some attempts did not go as expected"
        }
    );
    Ok(all_ok)
}
