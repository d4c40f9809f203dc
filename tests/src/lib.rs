//! Helpers for the privileged integration tests: guards for test cgroups, network namespaces
//! and sensor processes (removed or stopped on drop, also when a test fails), and the `probe`
//! helper that runs a scenario step inside a cgroup and a network namespace.
//!
//! Safety (design.md §10): metadata addresses exist only on the `lo` of a network namespace a
//! test created; the probe refuses network operations outside such a namespace. Blocking
//! programs are attached only to cgroups the tests create. Processes are ended by pid.

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

pub mod kubeapi;

/// Prefix of every netns and cgroup the tests create (the leftover check looks for it).
pub const TEST_PREFIX: &str = "sensor-test";

static SEQ: AtomicU32 = AtomicU32::new(0);

fn unique(kind: &str) -> String {
    format!(
        "{TEST_PREFIX}-{kind}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// Fail (never skip) when the suite is not run as root.
pub fn require_root() {
    // SAFETY: no arguments, cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "the privileged suite must run as root (cargo xtask test does)"
    );
}

/// The first cgroup2 mount point; fails when there is none.
pub fn cgroup2_root() -> PathBuf {
    let mounts = std::fs::read_to_string("/proc/mounts").expect("reading /proc/mounts");
    mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
        })
        .next()
        .expect("kernel feature missing here: no cgroup2 mount (cargo xtask setup mounts one)")
}

/// Run a command, panicking with its output when it fails.
pub fn sh(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A cgroup v2 directory created for one test; removed (children first) on drop.
pub struct TestCgroup {
    pub path: PathBuf,
    children: Vec<PathBuf>,
}

impl TestCgroup {
    pub fn new() -> Self {
        let path = cgroup2_root().join(unique("cg"));
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        Self {
            path,
            children: Vec::new(),
        }
    }

    /// A child cgroup (removed with the parent); `name` may have several levels, and levels
    /// that exist already are reused.
    pub fn child(&mut self, name: &str) -> PathBuf {
        let mut path = self.path.clone();
        for level in name.split('/') {
            path = path.join(level);
            match std::fs::create_dir(&path) {
                Ok(()) => self.children.push(path.clone()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => panic!("creating {}: {e}", path.display()),
            }
        }
        path
    }

    /// `<self>/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod<uid>.slice/
    /// cri-containerd-<id>.scope`: a containerd container as the systemd cgroup driver lays it
    /// out (levels that exist are reused).
    pub fn pod_container(&mut self, uid: &str, container_id: &str) -> PathBuf {
        let uid = uid.replace('-', "_");
        self.child(&format!(
            "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid}.slice/cri-containerd-{container_id}.scope"
        ))
    }

    /// The cgroup v2 id: the directory's inode number.
    pub fn id(path: &Path) -> u64 {
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(path).expect("stat cgroup"))
    }
}

impl Default for TestCgroup {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for dir in self
            .children
            .iter()
            .rev()
            .chain(std::iter::once(&self.path))
        {
            // A task that just exited can keep the cgroup busy for a moment.
            for _ in 0..100 {
                if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
                    break;
                }
                thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// A network namespace with the metadata addresses on its own `lo`; deleted on drop.
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    pub fn with_metadata_addresses() -> Self {
        let ns = Self { name: unique("ns") };
        sh(Command::new("ip").args(["netns", "add", &ns.name]));
        let ip = |args: &[&str]| sh(Command::new("ip").args(["-n", &ns.name]).args(args));
        ip(&["link", "set", "lo", "up"]);
        for v4 in ["169.254.169.254/32", "169.254.170.2/32"] {
            ip(&["addr", "add", v4, "dev", "lo"]);
        }
        ip(&[
            "-6",
            "addr",
            "add",
            "fd00:ec2::254/128",
            "dev",
            "lo",
            "nodad",
        ]);
        ns
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A bpffs directory for `sensor run --pin-dir`, under `/sys/fs/bpf` with the test prefix; on
/// drop, `sensor uninstall` removes what is pinned there (and the directory, whatever is left).
pub struct PinDir {
    pub path: PathBuf,
}

impl PinDir {
    pub fn new() -> Self {
        Self {
            path: Path::new("/sys/fs/bpf").join(unique("pins")),
        }
    }

    pub fn as_str(&self) -> &str {
        self.path.to_str().expect("utf-8 path")
    }

    /// `sensor uninstall --pin-dir` on this directory.
    pub fn uninstall(&self) -> std::process::Output {
        Command::new(sensor_bin())
            .args(["uninstall", "--pin-dir", self.as_str()])
            .output()
            .expect("running sensor uninstall")
    }
}

impl Default for PinDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        if self.path.exists() {
            let _ = self.uninstall();
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Path of a binary built by `cargo xtask test` (`SENSOR_BIN`, else next to the test binary).
fn built_binary(name: &str, env: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env) {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    // target/debug/deps/<test> -> target/debug/<name>
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join(name);
    assert!(
        bin.exists(),
        "{} not built: run `cargo xtask test` (or set {env})",
        bin.display()
    );
    bin
}

pub fn sensor_bin() -> PathBuf {
    built_binary("sensor", "SENSOR_BIN")
}

/// A command installed by `cargo xtask setup` into the test venv (`SENSOR_PYTHON_VENV`,
/// default `~/.cache/sensor/venv`). Panics, naming the fix, when it is missing: a test that
/// needs an independent validator fails rather than skipping.
pub fn python_tool(name: &str) -> PathBuf {
    let venv = std::env::var_os("SENSOR_PYTHON_VENV").map_or_else(
        || {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
                .join(".cache/sensor/venv")
        },
        PathBuf::from,
    );
    let tool = venv.join("bin").join(name);
    assert!(
        tool.exists(),
        "{} missing: run `cargo xtask setup` (installs the PyPI test tools)",
        tool.display()
    );
    tool
}

pub fn probe_bin() -> PathBuf {
    built_binary("probe", "PROBE_BIN")
}

/// The load generator `bench-gen` (`BENCH_GEN_BIN`, else next to the test binary).
pub fn bench_gen_bin() -> PathBuf {
    built_binary("bench-gen", "BENCH_GEN_BIN")
}

/// Where a sensor keeps its journal and API socket; shared by restarts of "the same" sensor.
pub struct StateDir(TempDir);

impl StateDir {
    pub fn new() -> Self {
        Self(TempDir::new())
    }

    pub fn socket(&self) -> PathBuf {
        self.0.0.join("run/sensor.sock")
    }

    pub fn journal(&self) -> PathBuf {
        self.0.0.join("journal")
    }
}

impl Default for StateDir {
    fn default() -> Self {
        Self::new()
    }
}

/// A running `sensor run`; stopped with SIGKILL on drop if the test did not stop it.
pub struct Sensor {
    child: Child,
    events: Arc<Mutex<Vec<Value>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    socket: PathBuf,
    _own_state: Option<StateDir>,
}

impl Sensor {
    /// Start `sensor run ARGS --stdout-events` with a fresh state directory and wait until it
    /// reports ready.
    pub fn start(args: &[&str]) -> Self {
        Self::start_fresh(args, true)
    }

    /// As [`Sensor::start`]; `stdout_events: false` leaves the events to gRPC subscribers only
    /// (load tests: the harness does not parse every event twice).
    pub fn start_fresh(args: &[&str], stdout_events: bool) -> Self {
        let state = StateDir::new();
        let mut sensor = Self::spawn(&state, args, stdout_events);
        sensor._own_state = Some(state);
        sensor
    }

    /// Start with the journal and socket of `state` (for restarts).
    pub fn start_in(state: &StateDir, args: &[&str]) -> Self {
        Self::spawn(state, args, true)
    }

    /// As [`Sensor::start_in`], without `--stdout-events`: stdout is left to the args (an
    /// `--export stdout`, whose JSON lines [`Sensor::events`] then collects).
    pub fn start_with_stdout(state: &StateDir, args: &[&str]) -> Self {
        Self::spawn(state, args, false)
    }

    fn spawn(state: &StateDir, args: &[&str], stdout_events: bool) -> Self {
        let mut child = Command::new(sensor_bin())
            .arg("run")
            .args(args)
            .args(stdout_events.then_some("--stdout-events"))
            .arg("--socket")
            .arg(state.socket())
            .arg("--journal-dir")
            .arg(state.journal())
            .env(
                "SENSOR_LOG",
                std::env::var("SENSOR_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning sensor");
        let events = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().expect("stdout");
        let ev = Arc::clone(&events);
        thread::spawn(move || {
            let mut reader = BufReader::new(out);
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                // A last line without its newline is what a SIGKILLed daemon was writing.
                if line.ends_with('\n') {
                    let value: Value = serde_json::from_str(&line)
                        .unwrap_or_else(|e| panic!("sensor stdout line is not JSON ({e}): {line}"));
                    ev.lock().unwrap().push(value);
                }
                line.clear();
            }
        });
        let err = child.stderr.take().expect("stderr");
        let lines = Arc::clone(&stderr);
        let (ready_tx, ready_rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if line.contains("sensor ready") {
                    let _ = ready_tx.send(());
                }
                lines.lock().unwrap().push(line);
            }
        });
        let mut sensor = Self {
            child,
            events,
            stderr,
            socket: state.socket(),
            _own_state: None,
        };
        if ready_rx.recv_timeout(Duration::from_secs(30)).is_err() {
            let status = sensor.child.try_wait().ok().flatten();
            panic!(
                "sensor did not become ready (exit: {status:?}); stderr:\n{}",
                sensor.stderr_text()
            );
        }
        sensor
    }

    /// The API socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Run `sensor ARGS --server <this sensor's socket>` (status, policy show, ...).
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(sensor_bin())
            .args(args)
            .arg("--server")
            .arg(&self.socket)
            .output()
            .expect("running sensor")
    }

    /// `sensor status --json` of this sensor.
    pub fn status(&self) -> Value {
        let out = self.cli(&["status", "--json"]);
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("status: {e}: {}", String::from_utf8_lossy(&out.stderr)))
    }

    /// One counter from `sensor status` (`kernel_*` for the kernel's).
    pub fn counter(&self, name: &str) -> u64 {
        let v = self.status();
        v["counters"][name]
            .as_u64()
            .unwrap_or_else(|| panic!("no counter {name}: {v}"))
    }

    /// Wait (up to 15 s) until a counter reaches `at_least`; the status counters are refreshed
    /// periodically, not per event.
    pub fn wait_counter(&self, name: &str, at_least: u64) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.counter(name) < at_least {
            assert!(
                Instant::now() < deadline,
                "{name} never reached {at_least}; stderr:\n{}",
                self.stderr_text()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send `signal` (SIGHUP: reload the policy) without waiting.
    pub fn signal(&self, signal: i32) {
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    /// SIGKILL (a crash), and wait for it.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    pub fn events(&self) -> Vec<Value> {
        self.events.lock().unwrap().clone()
    }

    /// Wait for `n` events matching `pred`; panics with everything seen on timeout.
    pub fn wait_for(&self, n: usize, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found: Vec<Value> = self.events().into_iter().filter(|e| pred(e)).collect();
            if found.len() >= n {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "waited 10 s for {n} matching events, have {}; all events:\n{}\nstderr:\n{}",
                found.len(),
                self.events()
                    .iter()
                    .map(Value::to_string)
                    .collect::<Vec<_>>()
                    .join("\n"),
                self.stderr_text()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGINT, wait for exit; returns the status and stderr.
    pub fn stop(self) -> (ExitStatus, String) {
        self.stop_with(libc::SIGINT)
    }

    /// Send `signal` (by pid), wait for exit; returns the status and stderr.
    pub fn stop_with(mut self, signal: i32) -> (ExitStatus, String) {
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(self.child.id() as i32, signal) };
        let status = wait_timeout(&mut self.child, Duration::from_secs(10)).unwrap_or_else(|| {
            panic!(
                "sensor did not exit after SIGINT; stderr:\n{}",
                self.stderr_text()
            )
        });
        // Let the reader threads take the last lines.
        thread::sleep(Duration::from_millis(100));
        (status, self.stderr_text())
    }
}

impl Drop for Sensor {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Where a probe runs.
#[derive(Default, Clone)]
pub struct Place<'a> {
    pub netns: Option<&'a NetNs>,
    pub cgroup: Option<&'a Path>,
}

impl<'a> Place<'a> {
    /// In the test namespace and the cgroup.
    pub fn inside(netns: &'a NetNs, cgroup: &'a Path) -> Self {
        Self {
            netns: Some(netns),
            cgroup: Some(cgroup),
        }
    }

    /// In the cgroup, in the host network namespace (no network operations).
    pub fn cgroup(cgroup: &'a Path) -> Self {
        Self {
            netns: None,
            cgroup: Some(cgroup),
        }
    }
}

/// The JSON line a probe prints for a network operation.
#[derive(Debug)]
pub struct ProbeResult {
    pub pid: u64,
    /// 0 on success.
    pub errno: i64,
    /// UDP only: whether the listener received the datagram.
    pub received: bool,
}

fn probe_command(place: &Place<'_>) -> Command {
    let mut cmd = Command::new(probe_bin());
    if let Some(ns) = place.netns {
        cmd.args(["--netns", &ns.name]);
    }
    if let Some(cg) = place.cgroup {
        cmd.arg("--cgroup").arg(cg);
    }
    cmd
}

/// A thread that keeps connecting (TCP) to `169.254.169.254:80` from inside a test netns and
/// cgroup, one probe process per try, counting the tries and those that were not refused with
/// EPERM, until [`ConnectLoop::stop`].
pub struct ConnectLoop {
    stop: Arc<std::sync::atomic::AtomicBool>,
    tries: Arc<std::sync::atomic::AtomicU64>,
    through: Arc<std::sync::atomic::AtomicU64>,
    thread: Option<thread::JoinHandle<()>>,
}

impl ConnectLoop {
    pub fn start(ns: &NetNs, cgroup: &Path) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let tries = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let through = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let thread = {
            let (stop, tries, through) =
                (Arc::clone(&stop), Arc::clone(&tries), Arc::clone(&through));
            let (ns_name, cg_path) = (ns.name.clone(), cgroup.to_owned());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let out = Command::new(probe_bin())
                        .args(["--netns", &ns_name, "--cgroup"])
                        .arg(&cg_path)
                        .args(["tcp", "169.254.169.254", "80"])
                        .output()
                        .unwrap();
                    let Ok(v) = serde_json::from_slice::<Value>(&out.stdout) else {
                        // The test ended (its netns is gone) while a probe ran.
                        break;
                    };
                    tries.fetch_add(1, Ordering::Relaxed);
                    if v["errno"] != i64::from(libc::EPERM) {
                        through.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        };
        Self {
            stop,
            tries,
            through,
            thread: Some(thread),
        }
    }

    /// Stop the loop; (tries, connects that were not refused).
    pub fn stop(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("connect loop thread");
        }
        (
            self.tries.load(Ordering::Relaxed),
            self.through.load(Ordering::Relaxed),
        )
    }
}

impl Drop for ConnectLoop {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Run a probe network operation (`tcp`/`udp` ADDR PORT) and parse its result.
pub fn probe_net(place: &Place<'_>, op: &str, addr: &str, port: u16) -> ProbeResult {
    probe_net_lingering(place, op, addr, port, 0)
}

/// As [`probe_net`], the probe staying alive `linger_ms` after the operation.
pub fn probe_net_lingering(
    place: &Place<'_>,
    op: &str,
    addr: &str,
    port: u16,
    linger_ms: u64,
) -> ProbeResult {
    let linger = linger_ms.to_string();
    let out = sh(probe_command(place).args(["--linger-ms", &linger, op, addr, &port.to_string()]));
    let v: Value =
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("probe output {out:?}: {e}"));
    ProbeResult {
        pid: v["pid"].as_u64().expect("pid"),
        errno: v["errno"].as_i64().expect("errno"),
        received: v["received"].as_bool().unwrap_or(false),
    }
}

/// Start a probe that execs `argv` in `place`, with a piped stdin (close it to let a waiting
/// script finish) and a piped stdout.
pub fn probe_exec(place: &Place<'_>, argv: &[&str]) -> Child {
    probe_command(place)
        .arg("exec")
        .args(argv)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawning probe")
}

/// Run `probe exec argv` to completion; returns its pid.
pub fn probe_exec_wait(place: &Place<'_>, argv: &[&str]) -> u32 {
    let mut child = probe_exec(place, argv);
    drop(child.stdin.take());
    let pid = child.id();
    let status = child.wait().expect("waiting for probe");
    assert!(status.success(), "probe exec {argv:?} failed: {status}");
    pid
}

/// Create `dir/name` with `mode`; its path.
pub fn file_with_mode(dir: &Path, name: &str, mode: u32) -> String {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join(name);
    std::fs::write(&path, b"x").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path.to_str().unwrap().to_owned()
}

/// The permission bits of a file (`& 07777`).
pub fn mode_of(path: &str) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// A child process killed (by pid) and reaped on drop.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A scratch directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Its path with symlinks resolved (what /proc and the kernel report).
    pub fn real(&self) -> PathBuf {
        self.0.canonicalize().unwrap()
    }

    pub fn new() -> Self {
        let dir = std::env::temp_dir().join(unique("tmp"));
        std::fs::create_dir_all(&dir).expect("creating temp dir");
        Self(dir)
    }
}

impl Default for TempDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `sensor tail`; its stdout lines are collected. Killed on drop.
pub struct Tail {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    /// Every line parsed once by the reader thread (Null: not JSON).
    values: Arc<Mutex<Vec<Value>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Tail {
    /// Start `sensor tail --server SOCKET ARGS`.
    pub fn start(socket: &Path, args: &[&str]) -> Self {
        let mut child = Command::new(sensor_bin())
            .arg("tail")
            .arg("--server")
            .arg(socket)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning sensor tail");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let values = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().expect("stdout");
        let (l, v) = (Arc::clone(&lines), Arc::clone(&values));
        thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                // Null marks a line that is not JSON (compact output).
                v.lock()
                    .unwrap()
                    .push(serde_json::from_str::<Value>(&line).unwrap_or(Value::Null));
                l.lock().unwrap().push(line);
            }
        });
        let err = child.stderr.take().expect("stderr");
        let e = Arc::clone(&stderr);
        thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                e.lock().unwrap().push(line);
            }
        });
        Self {
            child,
            lines,
            values,
            stderr,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Every line parsed as JSON (for `-o json`); fails if a line is not JSON.
    pub fn events(&self) -> Vec<Value> {
        let values = self.values.lock().unwrap().clone();
        assert!(
            !values.contains(&Value::Null),
            "a tail line is not JSON: {:?}",
            self.lines()
        );
        values
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// Wait until `pred` holds for the collected events (10 s).
    pub fn wait_until(&self, what: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        self.wait_until_for(Duration::from_secs(10), what, pred)
    }

    /// Wait until `pred` holds for the collected events, at most `timeout`.
    pub fn wait_until_for(
        &self,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let events = self.events();
            if pred(&events) {
                return events;
            }
            assert!(
                Instant::now() < deadline,
                "tail: waited {timeout:?} for {what}; have {} lines:\n{}\nstderr:\n{}",
                events.len(),
                self.lines().join("\n"),
                self.stderr_text()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Wait for the process to exit by itself (10 s); returns its status.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let status = wait_timeout(&mut self.child, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("tail did not exit; stderr:\n{}", self.stderr_text()));
        thread::sleep(Duration::from_millis(50));
        status
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `python3 -c` chmod loop: `n` chmod calls on `file` from a process in `cgroup`, pausing
/// `pause_ms` every `every` calls (so a debug-build daemon keeps up). Returns the pid.
pub fn chmod_burst(cgroup: &Path, file: &Path, n: u32, every: u32, pause_ms: u32) -> u32 {
    const SCRIPT: &str = "import os, sys, time\n\
        path, n, every, pause = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])\n\
        for i in range(n):\n    os.chmod(path, 0o600 if i % 2 else 0o640)\n    \
        if every and i % every == every - 1:\n        time.sleep(pause / 1000)\n";
    // From a file beside `file`: short arguments keep the events small.
    let script = file.with_extension("py");
    std::fs::write(&script, SCRIPT).expect("writing the chmod script");
    let f = file.to_str().expect("utf-8 path");
    let (n, every, pause) = (n.to_string(), every.to_string(), pause_ms.to_string());
    probe_exec_wait(
        &Place::cgroup(cgroup),
        &[
            "/usr/bin/python3",
            script.to_str().expect("utf-8 path"),
            f,
            &n,
            &every,
            &pause,
        ],
    )
}

/// A gRPC channel to a sensor's unix socket.
pub async fn grpc_channel(socket: &Path) -> tonic::transport::Channel {
    let path = socket.to_owned();
    tonic::transport::Endpoint::from_static("http://sensor.local")
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(path).await?,
                ))
            }
        }))
        .await
        .expect("connecting to the sensor socket")
}

/// Run a future on a fresh current-thread runtime.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// The `seq` of every chmod event from `pid` (in order).
pub fn seqs_of(events: &[Value], pid: u32) -> Vec<u64> {
    events
        .iter()
        .filter(|e| e["pid"] == pid && e["kind"] == "chmod")
        .map(|e| e["seq"].as_u64().expect("seq"))
        .collect()
}
