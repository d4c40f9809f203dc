//! Lane 3, the VM lane (docs/testing.md, 'The VM lane'): the LSM tier and whatever the host
//! kernel refuses, tested in QEMU (TCG; KVM here cannot boot stock kernels) on Debian's cloud
//! kernels.
//!
//! - kernels: `linux-image-<series>…-cloud-amd64`, resolved by name at run time (the ABI numbers
//!   rotate on the mirror) through a private apt state under `~/.cache/sensor/vm/apt` (the
//!   host's /etc/apt is left alone; signatures are checked with debian-archive-keyring), cached
//!   with their extracted `vmlinuz` under `~/.cache/sensor/vm/kernels/<package>/`: with a cached
//!   kernel of the wanted series nothing touches the network;
//! - boots: [`BOOTS`], each a kernel series with an extra command line and a label; one kernel
//!   may be booted more than once (a different `lsm=` list, say);
//! - guest: `sensor`, the guest tests (`tests/vm/tests/guest.rs`, a libtest binary, as
//!   `/bin/vm-tests`), `vm-guest` (their child operations) and `vm-exit`, built static (musl,
//!   `[profile.vm]`), busybox, and an `/init` script made for the boot (it exports the boot's
//!   label as `SENSOR_VM_BOOT` and runs the boot's tests), packed into a `newc` cpio written
//!   here per boot;
//! - verdict: `/init` ends the VM through QEMU's `isa-debug-exit` device: status 33 = the tests
//!   passed, 35 = some failed, anything else (0: init died, the kernel panicked) = the guest
//!   died without reporting. The guest has no network device.

use std::{
    fs,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{Totals, setup};

/// The kernel series the lane boots, in order: (label, package name prefix). Debian names them
/// `linux-image-6.1.0-<abi>-cloud-amd64` (bookworm) and
/// `linux-image-6.12.<n>+deb12-cloud-amd64` (bookworm-backports).
pub const KERNELS: [(&str, &str); 2] = [("6.1", "linux-image-6.1."), ("6.12", "linux-image-6.12.")];

/// One boot of the lane: a kernel series of [`KERNELS`] booted with an extra command line.
pub struct Boot {
    /// The kernel series (a label of [`KERNELS`]).
    pub series: &'static str,
    /// The boot's name in the lane's output and in the guest, whose `/init` exports it as
    /// `SENSOR_VM_BOOT` (the tests read it to know which boot they run in).
    pub label: &'static str,
    /// Appended to the kernel command line (e.g. `lsm=lockdown,capability,landlock,yama,
    /// apparmor,tomoyo`). Without an `lsm=` of its own, the lane adds `lsm=<CONFIG_LSM>,bpf`
    /// when the kernel's default list lacks `bpf`.
    pub cmdline: &'static str,
    /// libtest filters for `/bin/vm-tests` (none: every test), so that a boot can run the
    /// tests that fit it.
    pub tests: &'static [&'static str],
}

/// The active LSM list of the override boots: the Debian default without `bpf`, as managed
/// node images boot (BPF LSM built, not active).
const LSM_WITHOUT_BPF: &str = "lsm=lockdown,capability,landlock,yama,apparmor,tomoyo";

/// Every boot of the lane, in order: each kernel series twice, every test each time: with
/// `bpf` among the active LSMs (the `lsm` tier), and without it (labels ending `-override`:
/// the `override` tier, fmod_ret on the `security_*` functions).
pub const BOOTS: [Boot; 4] = [
    Boot {
        series: "6.1",
        label: "6.1",
        cmdline: "",
        tests: &[],
    },
    Boot {
        series: "6.1",
        label: "6.1-override",
        cmdline: LSM_WITHOUT_BPF,
        tests: &[],
    },
    Boot {
        series: "6.12",
        label: "6.12",
        cmdline: "",
        tests: &[],
    },
    Boot {
        series: "6.12",
        label: "6.12-override",
        cmdline: LSM_WITHOUT_BPF,
        tests: &[],
    },
];
const PACKAGE_SUFFIX: &str = "-cloud-amd64";
/// Suites of the private apt state (bookworm-security carries the newest 6.1 ABI).
const SOURCES: &str = "\
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm-updates main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm-backports main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bookworm-security main
";
/// Wall-clock limit of one kernel's run; QEMU is killed (by its pid) and the lane fails.
const TIMEOUT: Duration = Duration::from_secs(600);
/// `vm-exit` codes of `/init` and the QEMU exit statuses they become (`code << 1 | 1`).
const EXIT_PASSED: i32 = (0x10 << 1) | 1;
const EXIT_FAILED: i32 = (0x11 << 1) | 1;
/// The first line `/init` prints (boot time is measured to it).
const INIT_MARKER: &str = "vm-init: started";

/// `/init`, with `@BOOT@` (the boot's label) and `@TESTS@` (its test filters) filled in.
const INIT: &str = r#"#!/bin/sh
# The VM lane's init (xtask/src/vm.rs): mount, run the boot's guest tests, report through
# vm-exit.
export PATH=/bin
echo
echo "vm-init: started"
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t bpf bpf /sys/fs/bpf
mount -t tracefs tracefs /sys/kernel/tracing
mount -t securityfs securityfs /sys/kernel/security
echo "vm-init: kernel $(uname -r)"
echo "vm-init: lsm $(cat /sys/kernel/security/lsm)"
export SENSOR_BIN=/bin/sensor
export VM_GUEST_BIN=/bin/vm-guest
export SENSOR_VM_BOOT=@BOOT@
echo "vm-init: boot $SENSOR_VM_BOOT"
/bin/vm-tests --test-threads=1 --nocapture --color never @TESTS@
if [ $? -eq 0 ]; then /bin/vm-exit 0x10; else /bin/vm-exit 0x11; fi
echo "vm-init: vm-exit did not end the VM"
"#;
/// Busybox applets linked in the image (`/init` installs the rest at boot).
const APPLETS: [&str; 6] = ["sh", "mount", "mkdir", "cat", "echo", "uname"];

/// `cargo xtask vm`: set up, build the guest, run each boot of the kernel series `only` (all
/// when empty).
pub fn run(only: Option<&str>) -> Result<()> {
    let mut totals = Totals::default();
    let mut failures = Vec::new();
    lane(only, &mut totals, &mut failures);
    println!(
        "xtask: vm: {} passed, {} failed",
        totals.passed, totals.failed
    );
    if !failures.is_empty() {
        bail!("{}", failures.join("\n"));
    }
    Ok(())
}

/// Lane 3 for `cargo xtask test`: every failure (set-up, download, build, boot, tests) lands in
/// `failures`; nothing is skipped.
pub fn lane(only: Option<&str>, totals: &mut Totals, failures: &mut Vec<String>) {
    let image = match prepare() {
        Ok(image) => image,
        Err(err) => {
            failures.push(format!("vm lane: {err:#}"));
            return;
        }
    };
    for b in BOOTS.iter().filter(|b| only.is_none_or(|k| k == b.series)) {
        let result = image
            .initrd(b)
            .and_then(|initrd| Ok((initrd, kernel(b.series)?)))
            .and_then(|(initrd, k)| boot(b, &k, &initrd, totals));
        if let Err(err) = result {
            failures.push(format!("vm lane, boot {}: {err:#}", b.label));
        }
    }
}

/// The guest's files: everything but `/init` (made per boot).
struct Image(Cpio);

impl Image {
    /// The initramfs of boot `b`, written under the target dir.
    fn initrd(&self, b: &Boot) -> Result<PathBuf> {
        let mut cpio = self.0.clone();
        cpio.file("init", init_script(b).as_bytes(), 0o755);
        let bytes = cpio.finish();
        let initrd = crate::target_dir().join(format!("vm/initramfs-{}.cpio", b.label));
        fs::create_dir_all(initrd.parent().expect("has a parent"))?;
        fs::write(&initrd, &bytes).with_context(|| format!("writing {}", initrd.display()))?;
        eprintln!(
            "xtask: vm: {} ({:.1} MiB)",
            initrd.display(),
            bytes.len() as f64 / f64::from(1 << 20)
        );
        Ok(initrd)
    }
}

/// `/init` for boot `b`.
fn init_script(b: &Boot) -> String {
    INIT.replace("@BOOT@", b.label)
        .replace("@TESTS@", &b.tests.join(" "))
}

/// Set-up, and the guest's binaries built and packed.
fn prepare() -> Result<Image> {
    setup::ebpf_toolchain()?;
    setup::musl_toolchain()?;
    setup::install_debian(&["qemu-system-x86", "busybox-static"])?;
    let started = Instant::now();
    crate::cargo_musl(&[
        "--profile",
        "vm",
        "--package",
        "sensor",
        "--package",
        "sensor-vm-tests",
        "--bins",
    ])?;
    let tests = guest_tests()?;
    eprintln!(
        "xtask: vm: guest binaries built in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let bins = crate::target_dir().join(setup::MUSL_TARGET).join("vm");
    let mut cpio = Cpio::default();
    for dir in ["bin", "dev", "proc", "sys", "tmp", "run", "root"] {
        cpio.dir(dir);
    }
    cpio.char_device("dev/console", 5, 1);
    cpio.file("bin/busybox", &read("/bin/busybox")?, 0o755);
    for applet in APPLETS {
        cpio.symlink(&format!("bin/{applet}"), "busybox");
    }
    for bin in ["sensor", "vm-guest", "vm-exit"] {
        cpio.file(&format!("bin/{bin}"), &read(bins.join(bin))?, 0o755);
    }
    cpio.file("bin/vm-tests", &read(&tests)?, 0o755);
    Ok(Image(cpio))
}

/// The guest tests' libtest binary, built static (`cargo test --no-run`); cargo names its
/// path in its JSON messages.
fn guest_tests() -> Result<PathBuf> {
    let out = crate::cargo_stdout(&crate::musl(
        "test",
        &[
            "--no-run",
            "--profile",
            "vm",
            "--package",
            "sensor-vm-tests",
            "--test",
            "guest",
            "--message-format=json-render-diagnostics",
        ],
    ))?;
    test_executable(&out, "guest").context("cargo named no executable for the guest tests")
}

/// The `executable` of the test target `name` in cargo's JSON messages.
fn test_executable(messages: &str, name: &str) -> Option<PathBuf> {
    messages
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == name)
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
}

fn read(path: impl AsRef<Path>) -> Result<Vec<u8>> {
    let path = path.as_ref();
    fs::read(path).with_context(|| format!("reading {}", path.display()))
}

fn cache_dir() -> PathBuf {
    setup::cache_dir().join("vm")
}

/// A kernel in the cache: `<cache>/kernels/<package>/{<package>_<version>_amd64.deb, vmlinuz,
/// config}`.
struct Kernel {
    package: String,
    version: String,
    dir: PathBuf,
}

/// The newest cached kernel of the series; downloads one only when none is cached.
fn kernel(label: &str) -> Result<Kernel> {
    let (_, prefix) = KERNELS
        .into_iter()
        .find(|(l, _)| *l == label)
        .with_context(|| format!("no kernel series {label}"))?;
    let kernels = cache_dir().join("kernels");
    if let Some(k) = newest(cached(&kernels, prefix)?) {
        return Kernel::open(k, &kernels);
    }
    eprintln!("xtask: vm: no cached {label} kernel, resolving one on the Debian mirror");
    let apt = Apt::new(&cache_dir().join("apt"))?;
    apt.update()?;
    let found = apt.search(&format!("^{}", prefix.replace('.', "\\.")))?;
    let package = newest(found.into_iter().filter(|p| is_kernel(p, prefix)))
        .with_context(|| format!("no {prefix}*{PACKAGE_SUFFIX} package on the mirror"))?;
    let dir = kernels.join(&package);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    apt.download(&package, &dir)?;
    let k = Kernel::open(package, &kernels)?;
    k.extract()?;
    Ok(k)
}

/// `linux-image-6.1.0-56-cloud-amd64` but not `…-unsigned`, `…-dbg` or the meta-packages.
fn is_kernel(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix)
        .and_then(|rest| rest.strip_suffix(PACKAGE_SUFFIX))
        .is_some_and(|abi| abi.starts_with(|c: char| c.is_ascii_digit()))
}

/// Packages of the series whose `vmlinuz` was extracted.
fn cached(kernels: &Path, prefix: &str) -> Result<Vec<String>> {
    let Ok(entries) = fs::read_dir(kernels) else {
        return Ok(Vec::new());
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_kernel(&name, prefix) && entry.path().join("vmlinuz").is_file() {
            found.push(name);
        }
    }
    Ok(found)
}

/// The highest by the numbers in the name (`6.1.0-56` > `6.1.0-9`, `6.12.117+deb12` >
/// `6.12.90+deb12.1`).
fn newest(names: impl IntoIterator<Item = String>) -> Option<String> {
    let numbers = |n: &str| -> Vec<u64> {
        n.split(|c: char| !c.is_ascii_digit())
            .filter_map(|s| s.parse().ok())
            .collect()
    };
    names.into_iter().max_by_key(|n| numbers(n))
}

impl Kernel {
    fn open(package: String, kernels: &Path) -> Result<Self> {
        let dir = kernels.join(&package);
        let deb = find_file(&dir, |n| n.ends_with(".deb"))?;
        let name = deb.file_name().unwrap_or_default().to_string_lossy();
        // <package>_<version>_<arch>.deb; apt escapes the version's ':' as %3a.
        let version = name.split('_').nth(1).unwrap_or("?").replace("%3a", ":");
        Ok(Self {
            package,
            version,
            dir,
        })
    }

    /// `boot/vmlinuz-*` and `boot/config-*` out of the .deb (`vmlinuz` last: it marks a
    /// complete cache entry).
    fn extract(&self) -> Result<()> {
        let deb = find_file(&self.dir, |n| n.ends_with(".deb"))?;
        let tree = self.dir.join("tree");
        let _ = fs::remove_dir_all(&tree);
        setup::status(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tree))?;
        let boot = tree.join("boot");
        for (from, to) in [("config-", "config"), ("vmlinuz-", "vmlinuz")] {
            let file = find_file(&boot, |n| n.starts_with(from))?;
            fs::rename(file, self.dir.join(to))?;
        }
        fs::remove_dir_all(&tree)?;
        Ok(())
    }

    /// `lsm=` for the command line when the kernel's default list (`CONFIG_LSM`) lacks `bpf`.
    fn lsm_param(&self) -> Result<Option<String>> {
        let config = self.dir.join("config");
        let text =
            fs::read_to_string(&config).with_context(|| format!("reading {}", config.display()))?;
        let list = text
            .lines()
            .find_map(|l| l.strip_prefix("CONFIG_LSM="))
            .map(|l| l.trim_matches('"').to_owned())
            .with_context(|| format!("no CONFIG_LSM in {}", config.display()))?;
        if list.split(',').any(|m| m == "bpf") {
            return Ok(None);
        }
        Ok(Some(format!("lsm={list},bpf")))
    }
}

/// The first entry of `dir` whose name satisfies `wanted`.
fn find_file(dir: &Path, wanted: impl Fn(&str) -> bool) -> Result<PathBuf> {
    fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok())
        .find(|e| wanted(&e.file_name().to_string_lossy()))
        .map(|e| e.path())
        .with_context(|| format!("no such file in {}", dir.display()))
}

/// apt with its own state, cache and sources list (the host's /etc/apt is not touched).
struct Apt {
    options: Vec<String>,
}

impl Apt {
    fn new(root: &Path) -> Result<Self> {
        let sources = root.join("sources.list");
        for dir in ["state/lists/partial", "cache/archives/partial"] {
            fs::create_dir_all(root.join(dir))?;
        }
        fs::write(&sources, SOURCES).with_context(|| format!("writing {}", sources.display()))?;
        let path = |p: PathBuf| p.to_string_lossy().into_owned();
        let options = [
            format!("Dir::State={}", path(root.join("state"))),
            format!("Dir::Cache={}", path(root.join("cache"))),
            format!("Dir::Etc::SourceList={}", path(sources)),
            "Dir::Etc::SourceParts=-".into(),
            "APT::Architectures=amd64".into(),
            // Downloads land in the cache, which apt's unprivileged `_apt` user cannot write.
            "APT::Sandbox::User=root".into(),
        ];
        Ok(Self {
            options: options
                .iter()
                .flat_map(|o| ["-o".into(), o.clone()])
                .collect(),
        })
    }

    fn command(&self, tool: &str) -> Command {
        let mut cmd = Command::new(tool);
        cmd.args(&self.options);
        cmd
    }

    fn update(&self) -> Result<()> {
        setup::status(self.command("apt-get").args(["update", "-q"]))
    }

    /// Package names matching `regex`.
    fn search(&self, regex: &str) -> Result<Vec<String>> {
        let out = setup::output(
            self.command("apt-cache")
                .args(["search", "--names-only"])
                .arg(regex),
        )?;
        Ok(out
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_owned)
            .collect())
    }

    fn download(&self, package: &str, dir: &Path) -> Result<()> {
        setup::status(
            self.command("apt-get")
                .args(["download", "-q", package])
                .current_dir(dir),
        )
    }
}

/// Boots `kernel` with `initrd` as boot `b` says, streams the serial console, adds the guest's
/// `test result:` line to `totals` and turns QEMU's exit status into the verdict.
fn boot(b: &Boot, kernel: &Kernel, initrd: &Path, totals: &mut Totals) -> Result<()> {
    let label = b.label;
    println!(
        "xtask: vm {label}: booting {} {}",
        kernel.package, kernel.version
    );
    let mut append = "console=ttyS0 panic=-1 loglevel=4".to_owned();
    if has_param(b.cmdline, "lsm") {
        println!("xtask: vm {label}: the boot sets its own LSM list");
    } else {
        match kernel.lsm_param()? {
            // The guest test `guest_has_bpf_lsm_and_btf` checks the active list either way.
            None => println!("xtask: vm {label}: the kernel's default LSM list includes bpf"),
            Some(lsm) => {
                println!(
                    "xtask: vm {label}: the kernel's default LSM list lacks bpf: adding {lsm}"
                );
                append.push(' ');
                append.push_str(&lsm);
            }
        }
    }
    if !b.cmdline.is_empty() {
        append.push(' ');
        append.push_str(b.cmdline);
    }
    println!("xtask: vm {label}: kernel command line: {append}");
    let started = Instant::now();
    let mut child = Command::new("qemu-system-x86_64")
        .args([
            "-machine", "pc", "-accel", "tcg", "-cpu", "max", "-smp", "2",
        ])
        .args(["-m", "2048", "-nographic", "-no-reboot"])
        // No network device, ever (docs/testing.md, 'Safety rules for tests').
        .args(["-nic", "none"])
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
        .arg("-kernel")
        .arg(kernel.dir.join("vmlinuz"))
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", &append])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting qemu-system-x86_64 (Debian package qemu-system-x86)")?;
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).split(b'\n') {
            let Ok(line) = line else { break };
            if tx.send(printable(&String::from_utf8_lossy(&line))).is_err() {
                break;
            }
        }
    });
    let deadline = started + TIMEOUT;
    let mut reported = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                println!("[vm {label}] {line}");
                let line = line.trim();
                if line.ends_with(INIT_MARKER) {
                    println!(
                        "xtask: vm {label}: /init reached after {:.1}s",
                        started.elapsed().as_secs_f64()
                    );
                }
                if line.starts_with("test result: ") {
                    reported = true;
                    totals.add_line(line);
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                // Our own child, by pid.
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "timed out after {}s; QEMU (pid {}) killed",
                    TIMEOUT.as_secs(),
                    child.id()
                );
            }
        }
    }
    let status = child.wait()?;
    let elapsed = started.elapsed().as_secs_f64();
    println!("xtask: vm {label}: QEMU exited ({status}) after {elapsed:.1}s");
    match status.code() {
        Some(EXIT_PASSED) if reported => Ok(()),
        Some(EXIT_PASSED) => bail!("the guest passed without a test result line"),
        Some(EXIT_FAILED) => bail!("guest tests failed"),
        _ => bail!("guest died without reporting (QEMU {status})"),
    }
}

/// Whether the kernel command line `cmdline` sets parameter `name` (`name=...`).
fn has_param(cmdline: &str, name: &str) -> bool {
    cmdline
        .split_whitespace()
        .any(|p| p.split_once('=').is_some_and(|(n, _)| n == name))
}

/// `line` without the terminal escapes (SeaBIOS clears the screen) and control characters.
fn printable(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // ESC [ parameters final-byte, or ESC and one character.
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else if !c.is_control() || c == '\t' {
            out.push(c);
        }
    }
    out.trim_end().to_owned()
}

/// A `newc` cpio archive (the initramfs format the kernel unpacks), built in memory.
#[derive(Clone, Default)]
struct Cpio {
    bytes: Vec<u8>,
    inode: u32,
}

impl Cpio {
    fn dir(&mut self, name: &str) {
        self.entry(name, 0o040_755, &[], 0);
    }

    fn file(&mut self, name: &str, data: &[u8], perm: u32) {
        self.entry(name, 0o100_000 | perm, data, 0);
    }

    fn symlink(&mut self, name: &str, target: &str) {
        self.entry(name, 0o120_777, target.as_bytes(), 0);
    }

    fn char_device(&mut self, name: &str, major: u32, minor: u32) {
        self.entry(name, 0o020_600, &[], (major << 16) | minor);
    }

    /// `rdev` packs (major << 16) | minor.
    fn entry(&mut self, name: &str, mode: u32, data: &[u8], rdev: u32) {
        self.inode += 1;
        let nlink = if mode & 0o170_000 == 0o040_000 { 2 } else { 1 };
        let len = |n: usize| u32::try_from(n).expect("cpio members are < 4 GiB");
        let fields = [
            self.inode,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime
            len(data.len()),
            0, // dev major
            0, // dev minor
            rdev >> 16,
            rdev & 0xffff,
            len(name.len() + 1),
            0, // check
        ];
        self.bytes.extend_from_slice(b"070701");
        for f in fields {
            self.bytes.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.bytes.extend_from_slice(name.as_bytes());
        self.bytes.push(0);
        self.pad();
        self.bytes.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.bytes.len().is_multiple_of(4) {
            self.bytes.push(0);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[], 0);
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::{
        BOOTS, Cpio, KERNELS, has_param, init_script, is_kernel, newest, printable, test_executable,
    };

    #[test]
    fn strips_terminal_escapes() {
        assert_eq!(
            printable("\x1bc\x1b[?7l\x1b[2J\x1b[0mSeaBIOS (version 1)\r"),
            "SeaBIOS (version 1)"
        );
        assert_eq!(
            printable("ok\x1bc\x1b[?7lvm-init: started"),
            "okvm-init: started"
        );
    }

    #[test]
    fn picks_the_highest_abi_of_the_series() {
        let names = [
            "linux-image-6.1.0-9-cloud-amd64",
            "linux-image-6.1.0-56-cloud-amd64",
            "linux-image-6.1.0-57-cloud-amd64-unsigned",
            "linux-image-6.12.117+deb12-cloud-amd64",
            "linux-image-6.12.90+deb12.1-cloud-amd64",
            "linux-image-6.12-cloud-amd64",
        ];
        let pick = |prefix| {
            newest(
                names
                    .iter()
                    .filter(|n| is_kernel(n, prefix))
                    .map(|n| n.to_string()),
            )
        };
        assert_eq!(
            pick("linux-image-6.1.").as_deref(),
            Some("linux-image-6.1.0-56-cloud-amd64")
        );
        assert_eq!(
            pick("linux-image-6.12.").as_deref(),
            Some("linux-image-6.12.117+deb12-cloud-amd64")
        );
    }

    #[test]
    fn boots_name_known_series_and_shell_safe_labels() {
        let safe = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        };
        for b in &BOOTS {
            assert!(KERNELS.iter().any(|(l, _)| *l == b.series), "{}", b.series);
            assert!(safe(b.label), "{}", b.label);
            assert!(b.tests.iter().all(|t| safe(t)), "{:?}", b.tests);
            let same = BOOTS.iter().filter(|o| o.label == b.label).count();
            assert_eq!(same, 1, "the label {} names one boot", b.label);
        }
        let init = init_script(&BOOTS[0]);
        assert!(init.contains("export SENSOR_VM_BOOT=6.1\n"), "{init}");
        assert!(!init.contains('@'), "{init}");
    }

    #[test]
    fn finds_lsm_among_the_boot_parameters() {
        assert!(has_param(
            "lsm=lockdown,capability,landlock,yama,apparmor,tomoyo",
            "lsm"
        ));
        assert!(has_param("quiet lsm=bpf", "lsm"));
        assert!(!has_param("", "lsm"));
        assert!(!has_param("lsm.debug nolsm=1", "lsm"));
    }

    #[test]
    fn finds_the_test_executable_in_cargo_messages() {
        let messages = r#"{"reason":"compiler-artifact","target":{"name":"sensor_vm_tests"},"executable":null}
{"reason":"compiler-artifact","target":{"name":"guest"},"executable":"/t/deps/guest-1f"}
{"reason":"build-finished","success":true}"#;
        assert_eq!(
            test_executable(messages, "guest"),
            Some("/t/deps/guest-1f".into())
        );
        assert_eq!(test_executable(messages, "other"), None);
    }

    #[test]
    fn cpio_members_are_aligned_and_terminated() {
        let mut c = Cpio::default();
        c.file("init", b"#!/bin/sh\n", 0o755);
        let bytes = c.finish();
        assert!(bytes.starts_with(b"070701"));
        assert_eq!(bytes.len() % 4, 0);
        // header (110) + "init\0" padded to 116 + 10 bytes of data padded to 128.
        assert_eq!(&bytes[128..134], b"070701");
        assert!(bytes.windows(10).any(|w| w == b"TRAILER!!!"));
    }
}
