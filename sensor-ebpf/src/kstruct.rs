//! Kernel struct access for the LSM programs and the kill tier's credential checks: the field
//! offsets the daemon read from the running kernel's BTF (`SENSOR_OFFSETS`, a
//! [`KernelOffsets`]; nothing is compiled in), checked reads at those offsets, and what an LSM
//! program returns for a verdict.

use aya_ebpf::{
    Argument,
    helpers::{bpf_get_current_task, bpf_probe_read_kernel},
    macros::map,
    maps::Array,
    programs::{FExitContext, LsmContext},
};
use sensor_common::{KernelOffsets, Verdict};

#[map]
static SENSOR_OFFSETS: Array<KernelOffsets> = Array::with_max_entries(1, 0);

pub const EPERM: i32 = 1;
pub const S_ISUID: u32 = 0o4000;
pub const S_ISGID: u32 = 0o2000;
pub const S_IXGRP: u32 = 0o0010;

/// The kernel struct offsets, once the daemon has written them.
#[inline(always)]
pub fn offsets() -> Option<&'static KernelOffsets> {
    SENSOR_OFFSETS.get(0).filter(|o| o.valid == 1)
}

/// Read a `T` at `base + offset` in kernel memory; `None` when the read fails.
#[inline(always)]
pub fn read<T>(base: *const u8, offset: u32) -> Option<T> {
    if base.is_null() {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel checks the address; a fault is an error, not a crash.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(offset as usize).cast::<T>()).ok() }
}

/// The current task's `cred` pointer, `None` before the daemon wrote the offsets.
#[inline(always)]
pub fn current_cred() -> Option<(*const u8, &'static KernelOffsets)> {
    let off = offsets()?;
    // SAFETY: helper call without arguments.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let cred: *const u8 = read(task, off.task_cred)?;
    (!cred.is_null()).then_some((cred, off))
}

/// The arguments of a security hook, as BPF LSM (`lsm/HOOK`) and the override tier
/// (fmod_ret on `security_HOOK`) both see them: the hook's arguments, then the return value of
/// the programs before (0 or an earlier denial).
pub trait HookArgs {
    fn arg<T: Argument>(&self, n: usize) -> T;
}

impl HookArgs for LsmContext {
    #[inline(always)]
    fn arg<T: Argument>(&self, n: usize) -> T {
        LsmContext::arg(self, n)
    }
}

impl HookArgs for FExitContext {
    #[inline(always)]
    fn arg<T: Argument>(&self, n: usize) -> T {
        FExitContext::arg(self, n)
    }
}

/// What an LSM program returns for a verdict, keeping an earlier program's denial.
#[inline(always)]
pub fn lsm_ret(verdict: Verdict, previous: i32) -> i32 {
    if previous != 0 {
        previous
    } else if matches!(verdict, Verdict::Blocked) {
        -EPERM
    } else {
        0
    }
}
