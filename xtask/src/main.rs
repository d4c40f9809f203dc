//! `cargo xtask`: one-command set-up, run and test for the sensor workspace.
//!
//! - `cargo xtask setup`: what a fresh machine needs (idempotent, fast when done);
//! - `cargo xtask run -- ARGS`: set up, build, and exec `sensor run ARGS`;
//! - `cargo xtask test`: set up, build, run every test (unit, the fuzz targets briefly, then
//!   the privileged suite serially, then the VM lane), then check that nothing was left behind;
//! - `cargo xtask bench`: release build, then overhead/throughput/latency/memory figures;
//! - `cargo xtask fuzz [SECONDS] [TARGET]`: longer runs of the fuzz targets of the parsers of
//!   untrusted input (`sensor/fuzz`; the test command runs each briefly, see [`fuzz`]).
//! - `cargo xtask dist`: the static (musl) release binary the image (deploy/Dockerfile) packages,
//!   with its man pages and shell completions.
//! - `cargo xtask vm [--kernel 6.1|6.12]`: the VM lane alone (QEMU, Debian kernels; see `vm`).

mod bench;
mod fuzz;
mod leftovers;
mod setup;
mod vm;

use std::{
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install and mount what the build and the tests need (idempotent).
    Setup,
    /// Set up, build, and run `sensor run` with the given arguments.
    Run {
        /// Arguments for `sensor run` (e.g. `--scope-cgroup /sys/fs/cgroup/unified/my.slice`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, build, and run every test; fails on any failure or leftover.
    Test,
    /// Release build, then measure overhead, throughput, latency, memory and start-up against
    /// the kernel's own baseline (root; not part of `test`).
    Bench,
    /// Fuzz the parsers of untrusted input (libFuzzer, nightly; `sensor/fuzz`) for SECONDS per
    /// target, every target or TARGET; a crash fails the command and leaves its input under
    /// `sensor/fuzz/artifacts/TARGET/`.
    Fuzz {
        #[arg(default_value_t = 300)]
        seconds: u32,
        #[arg(value_parser = fuzz::TARGETS.map(|t| t.name))]
        target: Option<String>,
    },
    /// Set up, then build the statically linked (musl) release binary for the image.
    Dist,
    /// The VM lane alone: boot Debian's cloud kernels in QEMU (TCG) and run the guest tests
    /// (`tests/vm`); downloads and caches the kernels under `~/.cache/sensor/vm`.
    Vm {
        /// One kernel series instead of all.
        #[arg(long, value_parser = vm::KERNELS.map(|(label, _)| label))]
        kernel: Option<String>,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Setup => setup::all(),
        Cmd::Run { args } => run(&args),
        Cmd::Test => test(),
        Cmd::Bench => bench::run(),
        Cmd::Fuzz { seconds, target } => {
            setup::all()?;
            fuzz::run(target.as_deref(), |_| seconds).map(drop)
        }
        Cmd::Dist => dist(),
        Cmd::Vm { kernel } => vm::run(kernel.as_deref()),
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_owned()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace_root().join("target"), PathBuf::from)
}

/// `cargo ARGS` in the workspace root (announced on stderr).
fn cargo_command(args: &[&str]) -> Command {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("xtask: cargo {}", args.join(" "));
    let mut cmd = Command::new(&cargo);
    cmd.args(args).current_dir(workspace_root());
    cmd
}

/// Run cargo in the workspace root; fail with its status.
fn cargo(args: &[&str]) -> Result<()> {
    let status = cargo_command(args)
        .status()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// As [`cargo`], returning what cargo printed on stdout (its stderr goes to ours).
fn cargo_stdout(args: &[&str]) -> Result<String> {
    let out = cargo_command(args)
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    if !out.status.success() {
        bail!("cargo {} failed ({})", args.join(" "), out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn run(args: &[String]) -> Result<()> {
    setup::all()?;
    cargo(&["build", "--package", "sensor", "--bin", "sensor"])?;
    let bin = target_dir().join("debug/sensor");
    let err = Command::new(&bin).arg("run").args(args).exec();
    Err(err).with_context(|| format!("exec {}", bin.display()))
}

/// The arguments of `cargo SUBCOMMAND --target x86_64-unknown-linux-musl ARGS` (static
/// binaries; needs [`setup::musl_toolchain`]).
fn musl<'a>(subcommand: &'a str, args: &[&'a str]) -> Vec<&'a str> {
    // ring's C and assembly parts are built with musl's compiler wrapper.
    // SAFETY: single-threaded at this point; read by the cargo child process.
    unsafe { std::env::set_var("CC_x86_64_unknown_linux_musl", "musl-gcc") };
    let mut all = vec![subcommand, "--target", setup::MUSL_TARGET];
    all.extend_from_slice(args);
    all
}

/// `cargo build --target x86_64-unknown-linux-musl ARGS`.
fn cargo_musl(args: &[&str]) -> Result<()> {
    cargo(&musl("build", args))
}

/// The static release binary for deploy/Dockerfile.
fn dist() -> Result<()> {
    setup::all()?;
    setup::musl_toolchain()?;
    cargo_musl(&["--release", "--package", "sensor", "--bin", "sensor"])?;
    let dir = target_dir().join(setup::MUSL_TARGET).join("release");
    let bin = dir.join("sensor");
    println!("xtask: {}", bin.display());
    // Man pages and shell completions, from the binary's own command line.
    let man = dir.join("man");
    let status = Command::new(&bin).arg("man").arg(&man).status()?;
    if !status.success() {
        bail!("sensor man {} failed ({status})", man.display());
    }
    let completions = dir.join("completions");
    std::fs::create_dir_all(&completions)?;
    for (shell, file) in [
        ("bash", "sensor.bash"),
        ("zsh", "_sensor"),
        ("fish", "sensor.fish"),
    ] {
        let out = Command::new(&bin).args(["completions", shell]).output()?;
        if !out.status.success() {
            bail!("sensor completions {shell} failed ({})", out.status);
        }
        std::fs::write(completions.join(file), out.stdout)?;
    }
    println!(
        "xtask: man pages in {}, completions in {}",
        man.display(),
        completions.display()
    );
    println!(
        "xtask: image: docker build -f deploy/Dockerfile -t sensor:{} {}",
        env!("CARGO_PKG_VERSION"),
        dir.display()
    );
    Ok(())
}

/// The sensor binary (with its eBPF object) and the test and bench helpers, built once.
fn build_bins(release: bool) -> Result<()> {
    let mut args = vec!["build"];
    if release {
        args.push("--release");
    }
    args.extend(["--package", "sensor", "--package", "sensor-tests", "--bins"]);
    cargo(&args)
}

/// Totals over every `test result:` line cargo printed.
#[derive(Default)]
struct Totals {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl Totals {
    /// Parse `test result: ok. 6 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; ...`.
    fn add_line(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(what), Some(n)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(n) = n.parse::<u64>() else { continue };
            match what {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                "ignored" => self.ignored += n,
                _ => {}
            }
        }
    }
}

/// `cargo test ARGS`, echoing its output and adding its results to `totals`.
fn cargo_test(args: &[&str], totals: &mut Totals) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("xtask: cargo test {}", args.join(" "));
    let mut child = Command::new(&cargo)
        .arg("test")
        .args(args)
        .current_dir(workspace_root())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("running cargo test {}", args.join(" ")))?;
    let stdout = child.stdout.take().expect("piped stdout");
    for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
        let line = line?;
        println!("{line}");
        totals.add_line(line.trim());
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("cargo test {} failed ({status})", args.join(" "));
    }
    Ok(())
}

fn test() -> Result<()> {
    setup::all()?;
    build_bins(false)?;
    // SAFETY: single-threaded at this point; the variable is read by the test processes.
    unsafe { std::env::set_var("SENSOR_PYTHON_VENV", setup::python_venv()) };
    let mut failures = Vec::new();
    let mut totals = Totals::default();
    // Lane 1: unit tests, no privileges needed. sensor-ebpf only builds for the BPF target
    // (sensor/build.rs builds it).
    let unit = [
        "--workspace",
        "--exclude",
        "sensor-tests",
        "--exclude",
        "sensor-ebpf",
    ];
    if let Err(err) = cargo_test(&unit, &mut totals) {
        failures.push(err.to_string());
    }
    // Every fuzz target, briefly.
    match fuzz::run(None, fuzz::seconds_in_test) {
        Ok(passed) => totals.passed += passed,
        Err(err) => {
            totals.failed += 1;
            failures.push(err.to_string());
        }
    }
    // Lane 2: privileged integration tests on the live kernel, serially (shared kernel state).
    let bin = target_dir().join("debug/sensor");
    // SAFETY: single-threaded at this point; the variable is read by the test processes.
    unsafe { std::env::set_var("SENSOR_BIN", &bin) };
    let privileged = [
        "--package",
        "sensor-tests",
        "--no-fail-fast",
        "--",
        "--test-threads=1",
    ];
    if let Err(err) = cargo_test(&privileged, &mut totals) {
        failures.push(err.to_string());
    }
    // Lane 3: the LSM tier and what the host kernel refuses, in QEMU on Debian's kernels.
    vm::lane(None, &mut totals, &mut failures);
    match leftovers::find() {
        Ok(found) if found.is_empty() => {
            eprintln!("xtask: no leftovers (netns, cgroups, pins, programs)")
        }
        Ok(found) => failures.push(format!(
            "the tests left state behind:\n  {}",
            found.join("\n  ")
        )),
        Err(err) => failures.push(format!("checking for leftovers: {err:#}")),
    }
    if totals.ignored > 0 {
        failures.push(format!(
            "{} test(s) ignored: every test must run",
            totals.ignored
        ));
    }
    if totals.passed == 0 {
        failures.push("no test ran".into());
    }
    println!("xtask: {} passed, {} failed", totals.passed, totals.failed);
    if !failures.is_empty() {
        bail!(
            "{} step(s) failed:\n{}",
            failures.len(),
            failures.join("\n")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Totals;

    #[test]
    fn sums_cargo_test_result_lines() {
        let mut t = Totals::default();
        t.add_line("test result: ok. 6 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 3.43s");
        t.add_line("test result: FAILED. 1 passed; 2 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.6s");
        t.add_line("running 3 tests");
        assert_eq!((t.passed, t.failed, t.ignored), (7, 2, 1));
    }
}
