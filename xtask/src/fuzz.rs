//! The fuzz lane: the targets of `sensor/fuzz` (cargo-fuzz, libFuzzer, nightly with
//! AddressSanitizer), one build for all of them, then each target in turn from its seeds in
//! the repository and the corpus it grew in earlier runs (kept in the target dir). A crash,
//! a failed property or a hang fails the run; libFuzzer keeps the input under
//! `sensor/fuzz/artifacts/<target>/`. docs/testing.md describes the targets.

use std::process::Command;

use anyhow::{Context as _, Result, bail};

use crate::{target_dir, workspace_root};

/// One fuzz target: its seeds (directories, from the workspace root) and the longest input
/// libFuzzer makes for it.
pub struct Target {
    pub name: &'static str,
    seeds: &'static [&'static str],
    max_len: u32,
}

/// Every target, in the order they run.
pub const TARGETS: [Target; 8] = [
    Target {
        name: "policy_parse",
        seeds: &["sensor/policies"],
        max_len: 4096,
    },
    Target {
        name: "policy_resource",
        seeds: &["sensor/fuzz/corpus/policy_resource"],
        max_len: 8192,
    },
    Target {
        name: "event_decode",
        seeds: &["sensor/fuzz/corpus/event_decode"],
        max_len: 512,
    },
    Target {
        name: "json_lines",
        seeds: &["sensor/fuzz/corpus/json_lines"],
        max_len: 8192,
    },
    Target {
        name: "journal_open",
        seeds: &["sensor/fuzz/corpus/journal_open"],
        max_len: 8192,
    },
    Target {
        name: "get_events",
        seeds: &["sensor/fuzz/corpus/get_events"],
        max_len: 4096,
    },
    Target {
        name: "cgroup_path",
        seeds: &["sensor/fuzz/corpus/cgroup_path"],
        max_len: 4096,
    },
    Target {
        name: "pod_object",
        seeds: &["sensor/fuzz/corpus/pod_object"],
        max_len: 16384,
    },
];

/// How long `cargo xtask test` runs a target: the policy parser, the oldest target with the
/// largest grown corpus, keeps the larger share.
pub fn seconds_in_test(target: &str) -> u32 {
    if target == "policy_parse" { 20 } else { 12 }
}

/// `cargo +nightly fuzz build|run` for the `sensor/fuzz` workspace, with the nightly proxy
/// (not the stable cargo running xtask) picking the toolchain, and without the eBPF build (the
/// targets never load kernel programs). Both subcommands get the same build options (`run`
/// builds first and would otherwise rebuild): release with debug assertions (overflow checks
/// included), no sanitizer (docs/testing.md says why), in the target dir.
fn cargo_fuzz(subcommand: &str) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.arg("+nightly")
        .args(["fuzz", subcommand, "--fuzz-dir"])
        .arg(workspace_root().join("sensor/fuzz"))
        .args(["--debug-assertions", "--sanitizer", "none", "--target-dir"])
        .arg(target_dir().join("fuzz"))
        .env("AYA_BUILD_SKIP", "1")
        .env_remove("CARGO")
        .env_remove("RUSTC")
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO_TARGET_DIR")
        .current_dir(workspace_root());
    cmd
}

/// Build every target, then run `only` (or all) for `seconds(name)` each; every target runs
/// even when an earlier one failed. Returns how many passed.
pub fn run(only: Option<&str>, seconds: impl Fn(&str) -> u32) -> Result<u64> {
    let root = workspace_root();
    eprintln!("xtask: building the fuzz targets (sensor/fuzz)");
    let built = cargo_fuzz("build")
        .status()
        .context("running cargo fuzz build")?;
    if !built.success() {
        bail!("building the fuzz targets failed ({built})");
    }
    let mut passed = 0;
    let mut failed = Vec::new();
    for target in TARGETS.iter().filter(|t| only.is_none_or(|o| o == t.name)) {
        let corpus = target_dir().join("fuzz-corpus").join(target.name);
        std::fs::create_dir_all(&corpus)
            .with_context(|| format!("creating {}", corpus.display()))?;
        let secs = seconds(target.name);
        eprintln!("xtask: fuzzing {} for {secs} s", target.name);
        let status = cargo_fuzz("run")
            .arg(target.name)
            .arg(&corpus)
            .args(target.seeds.iter().map(|s| root.join(s)))
            .arg("--")
            .arg(format!("-max_total_time={secs}"))
            .arg(format!("-max_len={}", target.max_len))
            .args(["-timeout=10", "-print_final_stats=1"])
            .status()
            .with_context(|| format!("running cargo fuzz run {}", target.name))?;
        if status.success() {
            passed += 1;
        } else {
            failed.push(format!(
                "{} ({status}; the input is under sensor/fuzz/artifacts/{}/)",
                target.name, target.name
            ));
        }
    }
    if !failed.is_empty() {
        bail!("fuzzing failed: {}", failed.join(", "));
    }
    Ok(passed)
}
