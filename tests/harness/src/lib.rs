//! The test harness of both test lanes: the privileged host suite (`sensor-tests`) and the VM
//! lane's guest tests (`sensor-vm-tests`, built static for the guest). Written once, it holds
//! what both need: unique names, the root check, the cgroup2 mount, guards for a test cgroup,
//! a scratch directory and a child process (each undone on drop, also when the test fails),
//! and [`Sensor`], a running `sensor run` whose events and log lines are collected.
//!
//! Failures panic with what was seen (the tests are libtest tests in both lanes).
//!
//! Safety (docs/testing.md, 'Safety rules for tests'): cgroups are created under the test
//! prefix and removed on drop; processes are ended by pid, and only the harness's own
//! children.

use std::{
    io::{BufRead as _, BufReader, Read},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

mod sensor;

pub use sensor::{OnDrop, Options, Sensor, StateDir, Timeouts};

/// Prefix of every netns, cgroup and scratch directory the tests create (the leftover check
/// looks for it).
pub const TEST_PREFIX: &str = "sensor-test";

/// `sensor-test-<kind>-<pid>-<n>`: a name no other test (or test process) uses.
pub fn unique(kind: &str) -> String {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    format!(
        "{TEST_PREFIX}-{kind}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// Fail (never skip) when the tests do not run as root.
pub fn require_root() {
    // SAFETY: no arguments, cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "these tests must run as root (cargo xtask test does; so does the VM guest's /init)"
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

/// Call `probe` every `every` until it returns `Some`, for at most `timeout` (it is called at
/// least once, and once more at the deadline); `None` when time ran out.
pub fn poll<T>(
    timeout: Duration,
    every: Duration,
    mut probe: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(found) = probe() {
            return Some(found);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(every);
    }
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

    /// Whether process `pid` is a member of the cgroup at `path` (its `cgroup.procs`).
    pub fn has_process(path: &Path, pid: u32) -> bool {
        let pid = pid.to_string();
        std::fs::read_to_string(path.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .any(|l| l == pid)
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
            poll(Duration::from_secs(2), Duration::from_millis(20), || {
                (std::fs::remove_dir(dir).is_ok() || !dir.exists()).then_some(())
            });
        }
    }
}

/// A scratch directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> Self {
        let dir = std::env::temp_dir().join(unique("tmp"));
        std::fs::create_dir_all(&dir).expect("creating temp dir");
        Self(dir)
    }

    /// A scratch directory every user may write (mode 0777): for children that switch to an
    /// unprivileged uid and still work on their files there.
    pub fn open_to_all() -> Self {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = Self::new();
        std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o777))
            .unwrap_or_else(|e| panic!("chmod 777 {}: {e}", dir.0.display()));
        dir
    }

    /// Its path with symlinks resolved (what /proc and the kernel report).
    pub fn real(&self) -> PathBuf {
        self.0.canonicalize().unwrap()
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

/// Create `dir/name` with `mode`; its path.
pub fn file_with_mode(dir: &Path, name: &str, mode: u32) -> String {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join(name);
    std::fs::write(&path, b"x").unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
    path.to_str().expect("utf-8 path").to_owned()
}

/// The permission bits of a file (`& 07777`), `None` when it does not exist.
pub fn try_mode_of(path: impl AsRef<Path>) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path)
        .ok()
        .map(|m| m.permissions().mode() & 0o7777)
}

/// The permission bits of a file (`& 07777`).
pub fn mode_of(path: &str) -> u32 {
    try_mode_of(path).unwrap_or_else(|| panic!("no file {path}"))
}

/// A child process killed (by pid) and reaped on drop.
pub struct ChildGuard(pub Child);

impl ChildGuard {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        end_child(&mut self.0);
    }
}

/// SIGKILL our own child (by pid) if it still runs, and reap it.
pub fn end_child(child: &mut Child) {
    if matches!(child.try_wait(), Ok(None)) {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Wait for our child to exit, at most `timeout`; `None` when it still runs.
pub fn wait_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    poll(timeout, Duration::from_millis(10), || {
        child.try_wait().ok().flatten()
    })
}

/// Send `signal` to our own child, by pid.
pub fn signal_child(child: &Child, signal: i32) {
    // SAFETY: signalling our own child by pid.
    unsafe { libc::kill(child.id() as i32, signal) };
}

/// Path of a binary the tests run: `$env` when set, else next to the test binary
/// (`target/debug/deps/<test>` -> `target/debug/<name>`, where `cargo xtask test` builds it).
pub fn built_binary(name: &str, env: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env) {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
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

/// The sensor binary (`SENSOR_BIN`: xtask sets it on the host, the guest's `/init` in the VM).
pub fn sensor_bin() -> PathBuf {
    built_binary("sensor", "SENSOR_BIN")
}

/// Read `pipe` on a background thread, line by line until its end (or a read error), handing
/// each line without its line ending to `each`, with whether it was complete: a last line
/// without its newline is what a killed process was writing.
pub fn read_lines(
    pipe: impl Read + Send + 'static,
    mut each: impl FnMut(&str, bool) + Send + 'static,
) {
    thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut line = String::new();
        while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
            match line.strip_suffix('\n') {
                Some(l) => each(l.strip_suffix('\r').unwrap_or(l), true),
                None => each(&line, false),
            }
            line.clear();
        }
    });
}

/// The lines a child writes to one pipe, collected by a background thread ([`read_lines`]).
#[derive(Clone, Default)]
pub struct Lines(Arc<Mutex<Vec<String>>>);

impl Lines {
    /// Collect every line of `pipe` (a last incomplete one too), calling `also` on each first.
    pub fn collect(
        pipe: impl Read + Send + 'static,
        mut also: impl FnMut(&str) + Send + 'static,
    ) -> Self {
        let lines = Self::default();
        let sink = lines.clone();
        read_lines(pipe, move |line, _| {
            also(line);
            sink.0.lock().unwrap().push(line.to_owned());
        });
        lines
    }

    pub fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    /// Every line so far, joined with newlines.
    pub fn text(&self) -> String {
        self.0.lock().unwrap().join("\n")
    }
}

#[cfg(test)]
mod tests {
    use std::{
        process::{Command, Stdio},
        time::Duration,
    };

    use super::{Lines, poll, read_lines, unique};

    #[test]
    fn unique_names_carry_the_prefix_and_differ() {
        let (a, b) = (unique("cg"), unique("cg"));
        assert!(a.starts_with("sensor-test-cg-"), "{a}");
        assert_ne!(a, b);
    }

    #[test]
    fn poll_returns_the_first_value_or_none_at_the_deadline() {
        let mut n = 0;
        let found = poll(Duration::from_secs(5), Duration::from_millis(1), || {
            n += 1;
            (n == 3).then_some(n)
        });
        assert_eq!(found, Some(3));
        let never: Option<()> = poll(Duration::from_millis(30), Duration::from_millis(5), || None);
        assert_eq!(never, None);
    }

    #[test]
    fn lines_are_collected_and_an_unfinished_last_line_is_marked() {
        let text: &[u8] = b"one\r\ntwo\nthree";
        let (tx, rx) = std::sync::mpsc::channel();
        read_lines(text, move |l, complete| {
            tx.send((l.to_owned(), complete)).unwrap();
        });
        let got: Vec<(String, bool)> = rx.iter().collect();
        assert_eq!(
            got,
            [
                ("one".into(), true),
                ("two".into(), true),
                ("three".into(), false)
            ]
        );
        let mut child = Command::new("echo")
            .args(["a", "b"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = Lines::collect(child.stdout.take().unwrap(), |_| {});
        child.wait().unwrap();
        let all = poll(Duration::from_secs(5), Duration::from_millis(5), || {
            Some(lines.all()).filter(|l| !l.is_empty())
        });
        assert_eq!(all, Some(vec!["a b".to_owned()]));
    }
}
