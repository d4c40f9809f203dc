//! The VM lane's guest side (QEMU, Debian kernels with BPF LSM): the child operations the
//! tests act through and the fixtures they share. The tests themselves are libtest tests,
//! `tests/guest.rs`, built static and run by the guest's `/init` (`cargo xtask vm`); they use
//! the shared harness (`sensor-harness`) as the host suite does.
//!
//! A test acts from child processes placed in cgroups it made: `vm-guest op CGROUP NAME ARGS`
//! ([`op`]) joins the cgroup, does one privileged operation (as uid [`USER`] where the path
//! needs a non-root real id) and prints its errno and what the kernel state is afterwards.
//!
//! The guest is a throwaway VM without a network device: nothing here touches the host.

use std::{
    ffi::CString,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use sensor_harness::{
    ChildGuard, OnDrop, Options, Sensor, StateDir, TestCgroup, Timeouts, poll, try_mode_of,
};
use serde_json::Value;

/// An unprivileged id the operations switch to.
pub const USER: u32 = 1000;
const CAP_NET_RAW: u32 = 13;
/// The variable the guest's `/init` exports with the label of the boot (see `xtask/src/vm.rs`,
/// `BOOTS`): which kernel series and command line the tests run under.
pub const BOOT_ENV: &str = "SENSOR_VM_BOOT";

/// The label of the boot these tests run in; panics outside the VM lane's guest, where they
/// must not run (they attach enforcing LSM programs and act as root).
pub fn boot() -> String {
    std::env::var(BOOT_ENV).unwrap_or_else(|_| {
        panic!(
            "{BOOT_ENV} is not set: the guest tests run only inside the VM lane (cargo xtask vm)"
        )
    })
}

/// A test cgroup, made only inside the guest ([`boot`]).
pub fn test_cgroup() -> TestCgroup {
    boot();
    TestCgroup::new()
}

/// The child-operation binary (`/bin/vm-guest` in the guest).
pub fn guest_bin() -> PathBuf {
    std::env::var_os("VM_GUEST_BIN").map_or_else(|| PathBuf::from("/bin/vm-guest"), PathBuf::from)
}

/// The harness's options under TCG, where BTF parsing, verification and attach are emulated:
/// long waits, and a graceful stop (SIGTERM, then SIGKILL) when a test drops its sensor.
pub const OPTIONS: Options = Options {
    stdout_events: true,
    timeouts: Timeouts {
        ready: Duration::from_secs(240),
        events: Duration::from_secs(60),
        status: Duration::from_secs(60),
        exit: Duration::from_secs(30),
    },
    on_drop: OnDrop::Terminate,
};

/// `sensor run --policy <policy> EXTRA` with [`OPTIONS`], once it is ready.
pub fn start_sensor(policy: &str, extra: &[&str]) -> Sensor {
    boot();
    let state = StateDir::new();
    let file = state.path().join("policy.yaml");
    std::fs::write(&file, policy).unwrap_or_else(|e| panic!("writing {}: {e}", file.display()));
    let mut args = vec!["--policy", file.to_str().expect("utf-8 path")];
    args.extend_from_slice(extra);
    Sensor::start_owning(state, &args, &OPTIONS)
}

/// The lane's policy: metadata, set-id chmod and every privilege raise, with `action`, for
/// processes in `scope`.
pub fn policy(scope: &Path, action: &str) -> String {
    format!(
        "apiVersion: sensor/v1\nkind: Policy\nmetadata:\n  name: vm-{action}\nspec:\n  scope:\n    cgroups: [{}]\n  rules:\n    - name: block-metadata\n      type: metadata\n      action: {action}\n      destinations: [default]\n    - name: deny-setid\n      type: chmod\n      action: {action}\n      setid: true\n    - name: deny-raises\n      type: privilege\n      action: {action}\n      raises: [setuid-root, setgid-root, capset, setid-exec, file-caps]\n",
        scope.display()
    )
}

/// A process that stays in `cgroup` (`vm-guest op CGROUP linger`) until the guard drops;
/// returned once it is a member.
pub fn linger(cgroup: &Path) -> ChildGuard {
    let child = Command::new(guest_bin())
        .arg("op")
        .arg(cgroup)
        .arg("linger")
        .stdout(Stdio::null())
        .spawn()
        .expect("spawning vm-guest op linger");
    let guard = ChildGuard(child);
    poll(Duration::from_secs(10), Duration::from_millis(20), || {
        TestCgroup::has_process(cgroup, guard.pid()).then_some(())
    })
    .expect("the lingering process never joined its cgroup");
    guard
}

/// What one child operation printed: its pid, the errno of the call (0: it succeeded) and
/// operation-specific facts read back afterwards.
#[derive(Debug)]
pub struct Outcome {
    pub pid: u32,
    pub errno: i32,
    pub after: Value,
}

impl Outcome {
    fn from_report(v: &Value) -> Self {
        Self {
            pid: v["pid"].as_u64().unwrap_or(0) as u32,
            errno: v["errno"].as_i64().unwrap_or(-1) as i32,
            after: v["after"].clone(),
        }
    }
}

/// `vm-guest op CGROUP NAME ARGS` to its end.
pub fn op_command(cgroup: &Path, name: &str, args: &[&str]) -> std::process::Output {
    Command::new(guest_bin())
        .arg("op")
        .arg(cgroup)
        .arg(name)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running vm-guest op {name}: {e}"))
}

/// The last JSON line of an operation's stdout (its report), if any.
pub fn report(out: &std::process::Output) -> Option<Outcome> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|v| Outcome::from_report(&v))
}

/// Run `vm-guest op NAME ARGS` in `cgroup` and parse its one-line JSON report.
pub fn run_op(cgroup: &Path, name: &str, args: &[&str]) -> Outcome {
    let out = op_command(cgroup, name, args);
    report(&out).unwrap_or_else(|| {
        panic!(
            "{name}: no report ({}); stdout: {}; stderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

// ---- operations in child processes ---------------------------------------------------

/// `n` calls of `kind` (getpid; chmod of `path` between 0640 and 0600; open and close of
/// `path`), timed: nanoseconds per call (emulated time under TCG: for ratios only).
fn syscall_loop(kind: &str, n: u32, path: &str) -> Option<f64> {
    if n == 0 {
        return None;
    }
    let c = cstr(path);
    let start = std::time::Instant::now();
    for i in 0..n {
        // SAFETY: plain syscalls on a valid path string; an opened fd is closed at once.
        unsafe {
            match kind {
                "getpid" => {
                    libc::syscall(libc::SYS_getpid);
                }
                "chmod" => {
                    libc::chmod(c.as_ptr(), if i % 2 == 0 { 0o640 } else { 0o600 });
                }
                "open" => {
                    let fd = libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
                    if fd >= 0 {
                        libc::close(fd);
                    }
                }
                _ => return None,
            }
        }
    }
    Some(start.elapsed().as_nanos() as f64 / f64::from(n))
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
}

fn cstr(p: &str) -> CString {
    CString::new(p).expect("no NUL in test paths")
}

/// The permission bits as the reports show them (`"4755"`), null when there is no file.
fn mode_of(path: &str) -> Value {
    try_mode_of(path).map_or(Value::Null, |m| Value::from(format!("{m:04o}")))
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

/// The metadata address the network operations use, on the `lo` of a network namespace the
/// operation makes for itself.
pub const METADATA_ADDR: &str = "169.254.169.254";

/// A network namespace of the calling process's own (unshared), `lo` up with
/// [`METADATA_ADDR`] on it, and a listener there: a TCP one on `port` for `tcp`, a UDP
/// receiver for `udp`.
fn private_metadata_endpoint(proto: &str, port: u16) -> Result<std::os::fd::OwnedFd, String> {
    // SAFETY: plain syscall; the namespace is this process's alone.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(format!(
            "unshare(CLONE_NEWNET): {}",
            std::io::Error::last_os_error()
        ));
    }
    for args in [
        &["ip", "link", "set", "lo", "up"][..],
        &[
            "ip",
            "addr",
            "add",
            &format!("{METADATA_ADDR}/32"),
            "dev",
            "lo",
        ][..],
    ] {
        let st = Command::new("/bin/busybox")
            .args(args)
            .status()
            .map_err(|e| format!("busybox {args:?}: {e}"))?;
        if !st.success() {
            return Err(format!("busybox {args:?}: {st}"));
        }
    }
    let addr = format!("{METADATA_ADDR}:{port}");
    match proto {
        "tcp" => std::net::TcpListener::bind(&addr).map(std::os::fd::OwnedFd::from),
        _ => std::net::UdpSocket::bind(&addr).map(std::os::fd::OwnedFd::from),
    }
    .map_err(|e| format!("listening on {addr}: {e}"))
}

/// A `socket(AF_INET, SOCK_STREAM or SOCK_DGRAM)` for `proto`.
fn inet_socket(proto: &str) -> i32 {
    let ty = if proto == "tcp" {
        libc::SOCK_STREAM
    } else {
        libc::SOCK_DGRAM
    };
    // SAFETY: plain syscall.
    unsafe { libc::socket(libc::AF_INET, ty, 0) }
}

/// `connect` (tcp) or `sendto` (udp) on `fd` to [`METADATA_ADDR`]:`port`: the errno.
fn call_metadata(fd: i32, proto: &str, port: u16) -> i32 {
    let ip: std::net::Ipv4Addr = METADATA_ADDR.parse().expect("an IPv4 address");
    let sa = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(ip.octets()),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    let sa_ptr = (&raw const sa).cast::<libc::sockaddr>();
    // SAFETY: a valid sockaddr_in of `len` bytes and a one-byte payload.
    let rc = unsafe {
        if proto == "tcp" {
            libc::connect(fd, sa_ptr, len) as isize
        } else {
            libc::sendto(fd, b"x".as_ptr().cast(), 1, 0, sa_ptr, len)
        }
    };
    if rc < 0 { errno() } else { 0 }
}

/// `vm-guest op CGROUP NAME ARGS...`: join CGROUP, do one privileged operation, print
/// `{"pid":..,"errno":..,"after":..}`. Returns the process exit code.
///
/// Network operations (`net PROTO PORT`: the socket made in CGROUP; `late-net PROTO PORT`: made
/// before joining it, so that it belongs to the cgroup the process came from) connect (tcp) or
/// send (udp) to the metadata address in a network namespace of their own.
pub fn op(args: &[String]) -> i32 {
    let (Some(cgroup), Some(name)) = (args.first(), args.get(1)) else {
        eprintln!("usage: vm-guest op CGROUP NAME ARGS...");
        return 2;
    };
    let rest: Vec<&str> = args[2..].iter().map(String::as_str).collect();
    let pid = std::process::id();
    let mut endpoint = None;
    let mut early_socket = None;
    if let ("net" | "late-net", [proto, port]) = (name.as_str(), rest.as_slice()) {
        match private_metadata_endpoint(proto, port.parse().unwrap_or(0)) {
            Ok(fd) => endpoint = Some(fd),
            Err(e) => {
                eprintln!("{e}");
                return 2;
            }
        }
        if name == "late-net" {
            early_socket = Some(inet_socket(proto));
        }
    }
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
        ("net" | "late-net", [proto, port]) => {
            let fd = early_socket.unwrap_or_else(|| inet_socket(proto));
            let e = call_metadata(fd, proto, port.parse().unwrap_or(0));
            drop(endpoint);
            (e, Value::Null)
        }
        ("loop", [kind, n, path]) => match syscall_loop(kind, n.parse().unwrap_or(0), path) {
            Some(ns) => (0, serde_json::json!({ "ns_per_op": ns })),
            None => {
                eprintln!("loop: unknown kind {kind:?} (getpid, chmod, open) or zero count");
                return 2;
            }
        },
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
