//! The LSM-tier tests, run inside the VM lane's guest (QEMU, Debian kernels with BPF LSM) by
//! `vm-guest`. They start the real static sensor, act from child processes placed in cgroups
//! the test made (`vm-guest op ...`, see [`op`]), and check three things for every privilege
//! path: the call's errno, what the kernel state is afterwards (file mode, credentials,
//! capabilities, xattrs), and the event the sensor reported.
//!
//! The guest is a throwaway VM without a network device: nothing here touches the host.

use std::{
    ffi::CString,
    io::{BufRead as _, BufReader},
    os::unix::{fs::PermissionsExt as _, process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

type TestFn = fn() -> Result<(), String>;

/// Every test of the lane, in the order they run.
pub fn tests() -> Vec<(&'static str, TestFn)> {
    vec![
        ("guest_has_bpf_lsm_and_btf", guest_has_bpf_lsm_and_btf),
        (
            "status_names_the_lsm_tier_for_every_privilege_hook",
            status_names_the_lsm_tier,
        ),
        (
            "enforce_denies_every_privilege_path_with_eperm_and_changes_nothing",
            enforce_denies_every_path,
        ),
        (
            "audit_allows_and_reports_every_privilege_path",
            audit_allows_and_reports,
        ),
        (
            "outside_the_scope_every_privilege_path_is_untouched",
            outside_scope_untouched,
        ),
        (
            "forced_kill_tier_is_named_in_status_and_kills_chmod",
            forced_kill_tier,
        ),
    ]
}

/// Where the guest's cgroup2 is mounted (by `/init`).
const CGROUP2: &str = "/sys/fs/cgroup";
/// An unprivileged id the operations switch to.
const USER: u32 = 1000;
const CAP_NET_RAW: u32 = 13;

fn sensor_bin() -> PathBuf {
    std::env::var_os("SENSOR_BIN").map_or_else(|| PathBuf::from("/bin/sensor"), PathBuf::from)
}

fn self_bin() -> PathBuf {
    std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/bin/vm-guest"))
}

fn unique() -> u32 {
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

// ---- fixtures ------------------------------------------------------------------------

/// A cgroup made for one test, removed on drop (its processes are ours and have exited).
struct Cgroup(PathBuf);

impl Cgroup {
    fn new(what: &str) -> Result<Self, String> {
        let path = Path::new(CGROUP2).join(format!("sensor-vm-{what}-{}", unique()));
        std::fs::create_dir(&path).map_err(|e| format!("mkdir {}: {e}", path.display()))?;
        Ok(Self(path))
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// A scratch directory on the guest's tmpfs, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Self, String> {
        let path = PathBuf::from(format!("/tmp/vm-test-{}", unique()));
        std::fs::create_dir_all(&path).map_err(|e| format!("mkdir {}: {e}", path.display()))?;
        // Children switch to USER: let them reach their files.
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777));
        Ok(Self(path))
    }

    fn file(&self, name: &str, mode: u32) -> Result<PathBuf, String> {
        let path = self.0.join(name);
        std::fs::write(&path, b"x").map_err(|e| format!("{}: {e}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| format!("chmod {}: {e}", path.display()))?;
        Ok(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A process that stays in a cgroup until dropped (killed by pid: it is our child).
struct Lingering(Child);

impl Lingering {
    fn start(cgroup: &Path) -> Result<Self, String> {
        let child = Command::new(self_bin())
            .arg("op")
            .arg(cgroup)
            .arg("linger")
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("linger: {e}"))?;
        // Give it time to join the cgroup.
        let procs = cgroup.join("cgroup.procs");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !std::fs::read_to_string(&procs)
            .unwrap_or_default()
            .lines()
            .any(|l| l == child.id().to_string())
        {
            if Instant::now() > deadline {
                return Err("the lingering process never joined its cgroup".into());
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(Self(child))
    }
}

impl Drop for Lingering {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running `sensor run`, its stdout events collected; stopped (SIGTERM, by pid) on drop.
struct Sensor {
    child: Child,
    events: Arc<Mutex<Vec<Value>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    socket: PathBuf,
    _state: Scratch,
}

/// How long a start may take under TCG (BTF parsing, verification and attach are emulated).
const READY_TIMEOUT: Duration = Duration::from_secs(240);

impl Sensor {
    fn start(policy: &str, extra: &[&str]) -> Result<Self, String> {
        let state = Scratch::new()?;
        let policy_file = state.0.join("policy.yaml");
        std::fs::write(&policy_file, policy).map_err(|e| e.to_string())?;
        let socket = state.0.join("sensor.sock");
        let mut child = Command::new(sensor_bin())
            .arg("run")
            .arg("--policy")
            .arg(&policy_file)
            .arg("--journal-dir")
            .arg(state.0.join("journal"))
            .arg("--socket")
            .arg(&socket)
            .arg("--stdout-events")
            .args(extra)
            .env("SENSOR_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawning {}: {e}", sensor_bin().display()))?;
        let events = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().expect("piped stdout");
        let ev = Arc::clone(&events);
        thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    ev.lock().unwrap().push(v);
                }
            }
        });
        let err = child.stderr.take().expect("piped stderr");
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
        let started = Instant::now();
        let mut sensor = Self {
            child,
            events,
            stderr,
            socket,
            _state: state,
        };
        if ready_rx.recv_timeout(READY_TIMEOUT).is_err() {
            let status = sensor.child.try_wait().ok().flatten();
            return Err(format!(
                "sensor did not become ready (exit: {status:?}); stderr:\n{}",
                sensor.stderr_text()
            ));
        }
        println!("  sensor ready in {:.1?}", started.elapsed());
        Ok(sensor)
    }

    fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    fn status(&self) -> Result<Value, String> {
        let out = Command::new(sensor_bin())
            .args(["status", "--json", "--server"])
            .arg(&self.socket)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!(
                "sensor status: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        serde_json::from_slice(&out.stdout).map_err(|e| format!("sensor status --json: {e}"))
    }

    /// The first event for `pid` (up to 60 s: the daemon drains on a timer).
    fn event_of(&self, pid: u32, what: &str) -> Result<Value, String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(e) = self
                .events
                .lock()
                .unwrap()
                .iter()
                .find(|e| e["pid"] == pid && e["kind"] != "exec" && e["kind"] != "exit")
            {
                return Ok(e.clone());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{what}: no event for pid {pid}; events: {:?}",
                    self.events.lock().unwrap()
                ));
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Events for `pid` other than exec/exit, after giving late ones 2 s to arrive.
    fn no_event_of(&self, pid: u32, what: &str) -> Result<(), String> {
        thread::sleep(Duration::from_secs(2));
        let events = self.events.lock().unwrap();
        let found: Vec<&Value> = events
            .iter()
            .filter(|e| e["pid"] == pid && e["kind"] != "exec" && e["kind"] != "exit")
            .collect();
        if found.is_empty() {
            Ok(())
        } else {
            Err(format!("{what}: unexpected event(s) {found:?}"))
        }
    }
}

impl Drop for Sensor {
    fn drop(&mut self) {
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn policy(scope: &Path, action: &str) -> String {
    format!(
        "apiVersion: sensor/v1\nkind: Policy\nmetadata:\n  name: vm-{action}\nspec:\n  scope:\n    cgroups: [{}]\n  rules:\n    - name: block-metadata\n      type: metadata\n      action: {action}\n      destinations: [default]\n    - name: deny-setid\n      type: chmod\n      action: {action}\n      setid: true\n    - name: deny-raises\n      type: privilege\n      action: {action}\n      raises: [setuid-root, setgid-root, capset, setid-exec, file-caps]\n",
        scope.display()
    )
}

// ---- operations in child processes ---------------------------------------------------

/// What one child operation printed: its pid, the errno of the call (0: it succeeded) and
/// operation-specific facts read back afterwards.
struct Outcome {
    pid: u32,
    errno: i32,
    after: Value,
}

/// Run `vm-guest op NAME ARGS` in `cgroup` and parse its one-line JSON report.
fn run_op(cgroup: &Path, name: &str, args: &[&str]) -> Result<Outcome, String> {
    let out = Command::new(self_bin())
        .arg("op")
        .arg(cgroup)
        .arg(name)
        .args(args)
        .output()
        .map_err(|e| format!("{name}: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Value = text
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .ok_or_else(|| {
            format!(
                "{name}: no report ({}); stdout: {text}; stderr: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    Ok(Outcome {
        pid: v["pid"].as_u64().unwrap_or(0) as u32,
        errno: v["errno"].as_i64().unwrap_or(-1) as i32,
        after: v["after"].clone(),
    })
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
}

fn cstr(p: &str) -> CString {
    CString::new(p).expect("no NUL in test paths")
}

fn mode_of(path: &str) -> Value {
    match std::fs::metadata(path) {
        Ok(m) => Value::from(format!("{:04o}", m.permissions().mode() & 0o7777)),
        Err(_) => Value::Null,
    }
}

fn resuid() -> [u32; 3] {
    let (mut r, mut e, mut s) = (0, 0, 0);
    // SAFETY: valid out-pointers.
    unsafe { libc::getresuid(&mut r, &mut e, &mut s) };
    [r, e, s]
}

fn resgid() -> [u32; 3] {
    let (mut r, mut e, mut s) = (0, 0, 0);
    // SAFETY: valid out-pointers.
    unsafe { libc::getresgid(&mut r, &mut e, &mut s) };
    [r, e, s]
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAP_V3: u32 = 0x2008_0522;

fn capget() -> [CapData; 2] {
    let mut header = CapHeader {
        version: CAP_V3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: header and a two-element data array, as the v3 ABI takes.
    unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
    data
}

fn capset(data: &[CapData; 2]) -> i32 {
    let mut header = CapHeader {
        version: CAP_V3,
        pid: 0,
    };
    // SAFETY: as capget.
    if unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) } == 0 {
        0
    } else {
        errno()
    }
}

/// `security.capability` v2 granting CAP_NET_RAW permitted+effective.
fn file_caps_value() -> [u8; 20] {
    let mut v = [0u8; 20];
    let magic: u32 = 0x0200_0000 | 1; // VFS_CAP_REVISION_2 | VFS_CAP_FLAGS_EFFECTIVE
    v[0..4].copy_from_slice(&magic.to_le_bytes());
    v[4..8].copy_from_slice(&(1u32 << CAP_NET_RAW).to_le_bytes());
    v
}

fn has_file_caps(path: &str) -> bool {
    let mut buf = [0u8; 64];
    let name = cstr("security.capability");
    // SAFETY: valid strings and buffer.
    unsafe {
        libc::getxattr(
            cstr(path).as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        ) > 0
    }
}

/// `vm-guest op CGROUP NAME ARGS...`: join CGROUP, do one privileged operation, print
/// `{"pid":..,"errno":..,"after":..}`. Returns the process exit code.
pub fn op(args: &[String]) -> i32 {
    let (Some(cgroup), Some(name)) = (args.first(), args.get(1)) else {
        eprintln!("usage: vm-guest op CGROUP NAME ARGS...");
        return 2;
    };
    let rest: Vec<&str> = args[2..].iter().map(String::as_str).collect();
    let pid = std::process::id();
    if let Err(e) = std::fs::write(Path::new(cgroup).join("cgroup.procs"), pid.to_string()) {
        eprintln!("joining {cgroup}: {e}");
        return 2;
    }
    // SAFETY: plain syscall.
    unsafe { libc::umask(0) };
    let (errno, after) = match (name.as_str(), rest.as_slice()) {
        ("chmod", [path, mode]) => {
            let mode = u32::from_str_radix(mode, 8).unwrap_or(0);
            // SAFETY: valid path string.
            let rc = unsafe { libc::chmod(cstr(path).as_ptr(), mode as libc::mode_t) };
            (if rc == 0 { 0 } else { errno() }, mode_of(path))
        }
        ("create", [path, mode]) => {
            let mode = u32::from_str_radix(mode, 8).unwrap_or(0);
            // SAFETY: valid path string.
            let fd = unsafe {
                libc::open(
                    cstr(path).as_ptr(),
                    libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
                    mode as libc::c_uint,
                )
            };
            let e = if fd >= 0 {
                // SAFETY: our own fd.
                unsafe { libc::close(fd) };
                0
            } else {
                errno()
            };
            (e, mode_of(path))
        }
        ("mknod", [path, mode]) => {
            let mode = u32::from_str_radix(mode, 8).unwrap_or(0);
            // SAFETY: valid path string.
            let rc = unsafe {
                libc::mknod(cstr(path).as_ptr(), libc::S_IFREG | mode as libc::mode_t, 0)
            };
            (if rc == 0 { 0 } else { errno() }, mode_of(path))
        }
        ("setuid-root", []) => {
            // Real uid USER, effective root (keeps CAP_SETUID): then ask for uid 0 everywhere.
            // SAFETY: plain syscalls.
            if unsafe { libc::setresuid(USER, 0, 0) } != 0 {
                eprintln!(
                    "setresuid({USER}, 0, 0): {}",
                    std::io::Error::last_os_error()
                );
                return 2;
            }
            // SAFETY: plain syscall.
            let rc = unsafe { libc::setresuid(0, 0, 0) };
            (
                if rc == 0 { 0 } else { errno() },
                Value::from(resuid().to_vec()),
            )
        }
        ("setgid-root", []) => {
            // SAFETY: plain syscalls (euid stays 0: CAP_SETGID is kept).
            if unsafe { libc::setresgid(USER, USER, USER) } != 0 {
                eprintln!("setresgid: {}", std::io::Error::last_os_error());
                return 2;
            }
            // SAFETY: plain syscall.
            let rc = unsafe { libc::setresgid(0, 0, 0) };
            (
                if rc == 0 { 0 } else { errno() },
                Value::from(resgid().to_vec()),
            )
        }
        ("capset", []) => {
            // Drop CAP_NET_RAW from the effective set (allowed: nothing gained), then take it
            // back from the permitted set (a gain).
            let mut caps = capget();
            caps[0].effective &= !(1 << CAP_NET_RAW);
            let dropped = capset(&caps);
            if dropped != 0 {
                eprintln!("dropping CAP_NET_RAW: errno {dropped}");
                return 2;
            }
            caps[0].effective |= 1 << CAP_NET_RAW;
            let e = capset(&caps);
            let now = capget();
            (e, Value::from(now[0].effective & (1 << CAP_NET_RAW) != 0))
        }
        ("exec", [path]) => {
            // busybox picks its applet from argv[0]: `true` exits 0 without output.
            let err = Command::new(path).arg0("true").exec();
            (err.raw_os_error().unwrap_or(-1), Value::Null)
        }
        ("linger", []) => {
            thread::sleep(Duration::from_secs(600));
            (0, Value::Null)
        }
        ("packet-socket", []) => {
            // SAFETY: plain syscall; the socket is closed right away (nothing is sent).
            let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0x0300) };
            let e = if fd >= 0 {
                // SAFETY: our own fd.
                unsafe { libc::close(fd) };
                0
            } else {
                errno()
            };
            (e, Value::Null)
        }
        ("setxattr", [path]) => {
            let value = file_caps_value();
            let name = cstr("security.capability");
            // SAFETY: valid strings and value buffer.
            let rc = unsafe {
                libc::setxattr(
                    cstr(path).as_ptr(),
                    name.as_ptr(),
                    value.as_ptr().cast(),
                    value.len(),
                    0,
                )
            };
            (
                if rc == 0 { 0 } else { errno() },
                Value::from(has_file_caps(path)),
            )
        }
        _ => {
            eprintln!("unknown operation {name} {rest:?}");
            return 2;
        }
    };
    println!(
        "{}",
        serde_json::json!({"pid": pid, "errno": errno, "after": after})
    );
    0
}

// ---- the privilege paths -------------------------------------------------------------

/// One privilege path: how to set it up in `dir`, the operation, and what "changed nothing"
/// and "changed" look like afterwards.
struct Path_ {
    name: &'static str,
    op: &'static str,
    /// Arguments, given the scratch directory.
    args: fn(&Path) -> Vec<String>,
    unchanged: Value,
    changed: Value,
}

fn set_up_exec_target(dir: &Path) -> String {
    // A copy of busybox owned by USER with the set-uid bit: exec'ing it as root changes the
    // effective uid.
    let target = dir.join("suid-tool");
    if !target.exists() {
        std::fs::copy("/bin/busybox", &target).expect("copying busybox");
        let c = cstr(target.to_str().unwrap());
        // SAFETY: valid path.
        unsafe { libc::chown(c.as_ptr(), USER, USER) };
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o4755))
            .expect("chmod 4755");
    }
    target.display().to_string()
}

fn paths() -> Vec<Path_> {
    vec![
        Path_ {
            name: "chmod u+s",
            op: "chmod",
            args: |d| {
                let f = d.join("chmod-target");
                std::fs::write(&f, b"x").unwrap();
                std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o755)).unwrap();
                vec![f.display().to_string(), "4755".into()]
            },
            unchanged: Value::from("0755"),
            changed: Value::from("4755"),
        },
        Path_ {
            name: "chmod g+s",
            op: "chmod",
            args: |d| {
                let f = d.join("chmod-g-target");
                std::fs::write(&f, b"x").unwrap();
                std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o750)).unwrap();
                vec![f.display().to_string(), "2750".into()]
            },
            unchanged: Value::from("0750"),
            changed: Value::from("2750"),
        },
        Path_ {
            name: "open(O_CREAT) with a set-uid mode",
            op: "create",
            args: |d| vec![d.join("created").display().to_string(), "4755".into()],
            unchanged: Value::Null,
            changed: Value::from("4755"),
        },
        Path_ {
            name: "mknod with a set-gid mode",
            op: "mknod",
            args: |d| vec![d.join("made-node").display().to_string(), "2755".into()],
            unchanged: Value::Null,
            changed: Value::from("2755"),
        },
        Path_ {
            name: "setresuid to root from a non-root real uid",
            op: "setuid-root",
            args: |_| vec![],
            unchanged: Value::from(vec![USER, 0, 0]),
            changed: Value::from(vec![0u32, 0, 0]),
        },
        Path_ {
            name: "setresgid to root from a non-root real gid",
            op: "setgid-root",
            args: |_| vec![],
            unchanged: Value::from(vec![USER, USER, USER]),
            changed: Value::from(vec![0u32, 0, 0]),
        },
        Path_ {
            name: "capset gaining CAP_NET_RAW",
            op: "capset",
            args: |_| vec![],
            unchanged: Value::from(false),
            changed: Value::from(true),
        },
        Path_ {
            name: "exec of a set-uid file owned by another user",
            op: "exec",
            args: |d| vec![set_up_exec_target(d)],
            unchanged: Value::Null,
            changed: Value::Null,
        },
        Path_ {
            name: "packet socket (frames that skip every destination check)",
            op: "packet-socket",
            args: |_| vec![],
            unchanged: Value::Null,
            changed: Value::Null,
        },
        Path_ {
            name: "setxattr security.capability",
            op: "setxattr",
            args: |d| {
                let f = d.join("caps-target");
                std::fs::write(&f, b"x").unwrap();
                vec![f.display().to_string()]
            },
            unchanged: Value::from(false),
            changed: Value::from(true),
        },
    ]
}

/// The operation's report. A successful exec prints nothing (busybox `true` ran instead).
fn run_path(p: &Path_, cgroup: &Path, dir: &Path) -> Result<Outcome, String> {
    let args = (p.args)(dir);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    if p.op == "exec" {
        let out = Command::new(self_bin())
            .arg("op")
            .arg(cgroup)
            .arg("exec")
            .args(&args)
            .output()
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&out.stdout);
        return Ok(
            match text
                .lines()
                .find_map(|l| serde_json::from_str::<Value>(l).ok())
            {
                Some(v) => Outcome {
                    pid: v["pid"].as_u64().unwrap_or(0) as u32,
                    errno: v["errno"].as_i64().unwrap_or(-1) as i32,
                    after: Value::Null,
                },
                // The exec went through: the child's pid is what the event names.
                None if out.status.success() => Outcome {
                    pid: 0,
                    errno: 0,
                    after: Value::Null,
                },
                None => {
                    return Err(format!(
                        "exec: {} {}",
                        out.status,
                        String::from_utf8_lossy(&out.stderr)
                    ));
                }
            },
        );
    }
    run_op(cgroup, p.op, &args)
}

fn expect(ok: bool, what: String, failures: &mut Vec<String>) {
    if !ok {
        failures.push(what);
    }
}

fn verdict_for(sensor: &Sensor, p: &Path_, o: &Outcome) -> Result<Value, String> {
    if o.pid != 0 {
        return sensor.event_of(o.pid, p.name);
    }
    // A successful exec: find the event by its kind (the pid ran busybox afterwards).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(e) = sensor
            .events
            .lock()
            .unwrap()
            .iter()
            .find(|e| e["kind"] == "privilege" && e["privilege"]["what"] == "setid-exec")
        {
            return Ok(e.clone());
        }
        if Instant::now() > deadline {
            return Err(format!("{}: no setid-exec event", p.name));
        }
        thread::sleep(Duration::from_millis(100));
    }
}

fn finish(failures: Vec<String>) -> Result<(), String> {
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("\n"))
    }
}

// ---- tests ---------------------------------------------------------------------------

fn status_names_the_lsm_tier() -> Result<(), String> {
    let scope = Cgroup::new("scope")?;
    let sensor = Sensor::start(&policy(&scope.0, "enforce"), &["--tier", "lsm"])?;
    let status = sensor.status()?;
    let mut failures = Vec::new();
    for what in [
        "metadata-packet",
        "chmod",
        "setid-create",
        "setuid-root",
        "setgid-root",
        "capset",
        "setid-exec",
        "file-caps",
    ] {
        let tier = &status["protections"][what];
        expect(
            tier == "lsm",
            format!("protection {what}: tier {tier}, want lsm"),
            &mut failures,
        );
    }
    expect(
        status["protections"]["metadata-connect"] == "cgroup",
        format!(
            "metadata-connect: {}",
            status["protections"]["metadata-connect"]
        ),
        &mut failures,
    );
    let programs: Vec<&str> = status["attachments"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x["program"].as_str()).collect())
        .unwrap_or_default();
    // The kill-tier chmod and set*id tracepoints are not attached beside the LSM hooks.
    for gone in ["sensor_chmod", "sensor_setuid", "sensor_setgid"] {
        expect(
            !programs.contains(&gone),
            format!("{gone} attached beside the LSM tier"),
            &mut failures,
        );
    }
    let text = Command::new(sensor_bin())
        .args(["status", "--server"])
        .arg(&sensor.socket)
        .output()
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    // The protections section (the rest is programs and counters).
    for line in text.lines().take_while(|l| !l.starts_with("programs:")) {
        println!("  {line}");
    }
    expect(
        text.lines()
            .any(|l| l.trim_start().starts_with("capset") && l.contains("lsm")),
        format!("text status names no lsm tier for capset:\n{text}"),
        &mut failures,
    );
    finish(failures)
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
fn check_every_path(sensor: &Sensor, cgroup: &Path, want: &Want) -> Vec<String> {
    let mut failures = Vec::new();
    for p in paths() {
        let dir = match Scratch::new() {
            Ok(d) => d,
            Err(e) => return vec![e],
        };
        let o = match run_path(&p, cgroup, &dir.0) {
            Ok(o) => o,
            Err(e) => {
                failures.push(e);
                continue;
            }
        };
        println!(
            "  {}: {}: errno {} after {}",
            want.label, p.name, o.errno, o.after
        );
        expect(
            o.errno == want.errno,
            format!("{}: errno {}, want {}", p.name, o.errno, want.errno),
            &mut failures,
        );
        let state = if want.unchanged {
            &p.unchanged
        } else {
            &p.changed
        };
        expect(
            o.after == *state,
            format!("{}: afterwards {} (want {state})", p.name, o.after),
            &mut failures,
        );
        match want.verdict {
            Some(verdict) => match verdict_for(sensor, &p, &o) {
                Ok(e) => expect(
                    e["verdict"] == verdict,
                    format!(
                        "{}: event verdict {}, want {verdict} ({e})",
                        p.name, e["verdict"]
                    ),
                    &mut failures,
                ),
                Err(e) => failures.push(e),
            },
            None if o.pid != 0 => {
                if let Err(e) = sensor.no_event_of(o.pid, p.name) {
                    failures.push(e);
                }
            }
            None => {}
        }
    }
    failures
}

fn enforce_denies_every_path() -> Result<(), String> {
    let scope = Cgroup::new("scope")?;
    let sensor = Sensor::start(&policy(&scope.0, "enforce"), &[])?;
    let want = Want {
        label: "enforce",
        errno: libc::EPERM,
        unchanged: true,
        verdict: Some("blocked"),
    };
    let mut failures = check_every_path(&sensor, &scope.0, &want);
    // Re-applying a set-id bit the file already has adds nothing: allowed.
    let dir = Scratch::new()?;
    let f = dir.file("already", 0o4755)?;
    let o = run_op(&scope.0, "chmod", &[f.to_str().unwrap(), "4755"])?;
    expect(
        o.errno == 0,
        format!("chmod 4755 of a 4755 file: errno {}", o.errno),
        &mut failures,
    );
    let status = sensor.status()?;
    let lsm: Vec<String> = status["counters"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.starts_with("kernel_lsm"))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    println!("  counters: {}", lsm.join(" "));
    expect(
        status["counters"]["kernel_lsm_chmod_denied"].as_u64() >= Some(4)
            && status["counters"]["kernel_lsm_priv_denied"].as_u64() >= Some(5),
        format!("LSM denial counters: {lsm:?}"),
        &mut failures,
    );
    finish(failures)
}

fn audit_allows_and_reports() -> Result<(), String> {
    let scope = Cgroup::new("scope")?;
    let sensor = Sensor::start(&policy(&scope.0, "audit"), &[])?;
    let want = Want {
        label: "audit",
        errno: 0,
        unchanged: false,
        verdict: Some("audited"),
    };
    finish(check_every_path(&sensor, &scope.0, &want))
}

fn outside_scope_untouched() -> Result<(), String> {
    let scope = Cgroup::new("scope")?;
    let outside = Cgroup::new("outside")?;
    let sensor = Sensor::start(&policy(&scope.0, "enforce"), &[])?;
    let want = Want {
        label: "outside",
        errno: 0,
        unchanged: false,
        verdict: None,
    };
    let mut failures = check_every_path(&sensor, &outside.0, &want);
    let events = sensor.events.lock().unwrap();
    expect(
        !events
            .iter()
            .any(|e| e["kind"] == "privilege" || e["kind"] == "chmod"),
        format!("events outside the scope: {events:?}"),
        &mut failures,
    );
    drop(events);
    finish(failures)
}

fn forced_kill_tier() -> Result<(), String> {
    let scope = Cgroup::new("scope")?;
    let sensor = Sensor::start(&policy(&scope.0, "enforce"), &["--tier", "kill"])?;
    let status = sensor.status()?;
    let mut failures = Vec::new();
    for (what, want) in [
        ("metadata-packet", "kill"),
        ("chmod", "kill"),
        ("setid-create", "kill"),
        ("setuid-root", "kill"),
        ("setgid-root", "kill"),
        ("capset", "kill"),
        ("setid-exec", "kill"),
        ("file-caps", "kill"),
    ] {
        let tier = &status["protections"][what];
        expect(
            tier == want,
            format!("--tier kill: {what} tier {tier}, want {want}"),
            &mut failures,
        );
    }
    let dir = Scratch::new()?;
    let f = dir.file("kill-target", 0o755)?;
    // A container's other process: the daemon reaches the file through it once the killed
    // caller is gone.
    let _main = Lingering::start(&scope.0)?;
    let out = Command::new(self_bin())
        .arg("op")
        .arg(&scope.0)
        .args(["chmod", f.to_str().unwrap(), "4755"])
        .output()
        .map_err(|e| e.to_string())?;
    use std::os::unix::process::ExitStatusExt as _;
    expect(
        out.status.signal() == Some(libc::SIGKILL),
        format!("--tier kill: chmod u+s ended with {}", out.status),
        &mut failures,
    );
    // The daemon removes the bit the killed call added.
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::metadata(&f)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0)
        != 0o755
        && Instant::now() < deadline
    {
        thread::sleep(Duration::from_millis(200));
    }
    let mode = std::fs::metadata(&f)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0);
    expect(
        mode == 0o755,
        format!("--tier kill: mode {mode:o} after the kill, want 755"),
        &mut failures,
    );
    finish(failures)
}

/// The guest kernel lists `bpf` among its active LSMs and exposes its BTF (what every other
/// test here needs).
fn guest_has_bpf_lsm_and_btf() -> Result<(), String> {
    let lsm = std::fs::read_to_string("/sys/kernel/security/lsm")
        .map_err(|e| format!("reading /sys/kernel/security/lsm: {e}"))?;
    if !lsm.trim().split(',').any(|m| m == "bpf") {
        return Err(format!("bpf is not an active LSM: {lsm:?}"));
    }
    let btf = std::fs::metadata("/sys/kernel/btf/vmlinux")
        .map_err(|e| format!("/sys/kernel/btf/vmlinux: {e}"))?;
    if btf.len() == 0 {
        return Err("/sys/kernel/btf/vmlinux is empty".into());
    }
    Ok(())
}
