//! Tests that run inside the VM lane's guest (QEMU/TCG, Debian cloud kernels): the LSM tier and
//! whatever the host kernel refuses. `vm-guest` runs [`tests`]; `vm-guest op ARGS` runs [`op`]
//! (child operations a test re-execs the binary for).

use std::fs;

/// A guest test: `Ok` passes, `Err` fails with its text.
pub type Test = fn() -> Result<(), String>;

/// Every guest test, in the order `vm-guest` runs them.
pub fn tests() -> Vec<(&'static str, Test)> {
    vec![("guest_has_bpf_lsm_and_btf", guest_has_bpf_lsm_and_btf)]
}

/// A child operation (`vm-guest op ARGS`); returns the process exit code.
pub fn op(args: &[String]) -> i32 {
    eprintln!("vm-guest op: unknown operation {args:?}");
    2
}

/// The guest kernel lists `bpf` among its active LSMs and exposes its BTF.
fn guest_has_bpf_lsm_and_btf() -> Result<(), String> {
    let lsm = fs::read_to_string("/sys/kernel/security/lsm")
        .map_err(|e| format!("reading /sys/kernel/security/lsm: {e}"))?;
    if !lsm.trim().split(',').any(|m| m == "bpf") {
        return Err(format!("bpf is not an active LSM: {lsm:?}"));
    }
    let btf = fs::metadata("/sys/kernel/btf/vmlinux")
        .map_err(|e| format!("/sys/kernel/btf/vmlinux: {e}"))?;
    if btf.len() == 0 {
        return Err("/sys/kernel/btf/vmlinux is empty".into());
    }
    Ok(())
}
