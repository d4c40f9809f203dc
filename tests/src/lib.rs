//! Helpers for the privileged integration tests. What the VM lane needs as well (test cgroups,
//! scratch directories, child and sensor process guards) is the shared harness
//! (`sensor-harness`, re-exported here); this crate adds what only the host needs: network
//! namespaces, bpffs pin directories, the `probe` helper that runs a scenario step inside a
//! cgroup and a network namespace, `sensor tail`, gRPC, the PyPI validators, and the real
//! receivers of the network SIEM exports ([`siem`]: a test CA, rsyslogd, an OTLP receiver).
//!
//! Safety (docs/testing.md, 'Safety rules for tests'): metadata addresses exist only on the
//! `lo` of a network namespace a test created; the probe refuses network operations outside
//! such a namespace. Blocking programs are attached only to cgroups the tests create.
//! Processes are ended by pid.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex, atomic::Ordering},
    thread,
    time::Duration,
};

pub use sensor_harness::{
    ChildGuard, Sensor, StateDir, TEST_PREFIX, TempDir, TestCgroup, built_binary, cgroup2_root,
    file_with_mode, mode_of, poll, require_root, sensor_bin, sh,
};
use sensor_harness::{Lines, end_child, read_lines, unique, wait_exit};
use serde_json::Value;

pub mod kubeapi;
pub mod siem;

pub use siem::{
    Delivery, OtlpOptions, OtlpReceiver, Rsyslog, SyslogInput, TestCa, assert_delivery, closed_port,
};

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

/// `program` in a new, empty network namespace (offline validators: proof that nothing is
/// fetched).
pub fn offline(program: &Path) -> Command {
    let mut cmd = Command::new("unshare");
    cmd.args(["--net", "--"]).arg(program);
    cmd
}

/// `kubernetes-validate --strict FILE` (bundled schemas, offline): its report; panics with it
/// when it finds anything.
pub fn kubernetes_validate(file: &Path) -> String {
    let out = offline(&python_tool("kubernetes-validate"))
        .arg("--strict")
        .arg(file)
        .output()
        .expect("running kubernetes-validate");
    let report =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !report.contains("ERROR"),
        "{}: kubernetes-validate --strict failed:\n{report}",
        file.display()
    );
    report
}

/// The OCSF version the sensor writes (`metadata.version`).
pub const OCSF_VERSION: &str = "1.5.0";

/// Validate OCSF lines with the independent validator (pydantic-ocsf, offline,
/// `tests/validators/ocsf_check.py`); `scratch`: a directory for the file it reads.
pub fn validate_ocsf(lines: &[Value], scratch: &Path) {
    let file = scratch.join("ocsf-to-validate.jsonl");
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&file, text).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("validators/ocsf_check.py");
    let out = Command::new(python_tool("python"))
        .arg(script)
        .arg(OCSF_VERSION)
        .arg(&file)
        .output()
        .expect("running the OCSF validator");
    assert!(
        out.status.success(),
        "OCSF validation failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("ok {}", lines.len())
    );
}

pub fn probe_bin() -> PathBuf {
    built_binary("probe", "PROBE_BIN")
}

/// The load generator `bench-gen` (`BENCH_GEN_BIN`, else next to the test binary).
pub fn bench_gen_bin() -> PathBuf {
    built_binary("bench-gen", "BENCH_GEN_BIN")
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

/// A running `sensor tail`; its stdout lines are collected. Killed on drop.
pub struct Tail {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    /// Every line parsed once by the reader thread (Null: not JSON).
    values: Arc<Mutex<Vec<Value>>>,
    stderr: Lines,
}

impl Tail {
    /// Start `sensor tail --server SOCKET ARGS`, with `--all` (telemetry too) unless the args
    /// filter by kind or verdict themselves.
    pub fn start(socket: &Path, args: &[&str]) -> Self {
        let filtered = args
            .iter()
            .any(|a| ["--kind", "--verdict", "--all"].contains(a));
        let mut child = Command::new(sensor_bin())
            .arg("tail")
            .arg("--server")
            .arg(socket)
            .args((!filtered).then_some("--all"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning sensor tail");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let values = Arc::new(Mutex::new(Vec::new()));
        let (l, v) = (Arc::clone(&lines), Arc::clone(&values));
        read_lines(child.stdout.take().expect("stdout"), move |line, _| {
            // Null marks a line that is not JSON (compact output).
            v.lock()
                .unwrap()
                .push(serde_json::from_str::<Value>(line).unwrap_or(Value::Null));
            l.lock().unwrap().push(line.to_owned());
        });
        let stderr = Lines::collect(child.stderr.take().expect("stderr"), |_| {});
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
        self.stderr.text()
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
        poll(timeout, Duration::from_millis(10), || {
            Some(self.events()).filter(|events| pred(events))
        })
        .unwrap_or_else(|| {
            panic!(
                "tail: waited {timeout:?} for {what}; have {} lines:\n{}\nstderr:\n{}",
                self.events().len(),
                self.lines().join("\n"),
                self.stderr_text()
            )
        })
    }

    /// Wait for the process to exit by itself (10 s); returns its status.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let status = wait_exit(&mut self.child, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("tail did not exit; stderr:\n{}", self.stderr_text()));
        thread::sleep(Duration::from_millis(50));
        status
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        end_child(&mut self.child);
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

/// The metrics address the sensor logged (it binds port 0).
pub fn metrics_addr(sensor: &Sensor) -> String {
    let stderr = sensor.stderr_text();
    let line = stderr
        .lines()
        .find(|l| l.contains("metrics listening"))
        .unwrap_or_else(|| panic!("no 'metrics listening' line:\n{stderr}"));
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("addr="))
        .unwrap_or_else(|| panic!("no addr= in {line}"))
        .to_owned()
}

/// `GET path` over HTTP/1.0: (status, headers, body).
pub fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String, String)> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {head}"));
    Ok((status, head.to_owned(), body.to_owned()))
}

/// The `{"counters": ...}` line a stopped sensor printed (docs/events.md).
pub fn stop_counters(stderr: &str) -> Value {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("{\"counters\""))
        .unwrap_or_else(|| panic!("no counters line:\n{stderr}"));
    serde_json::from_str::<Value>(line).unwrap()["counters"].clone()
}
