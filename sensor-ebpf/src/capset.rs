//! The `capset` protection: a capability set gaining a capability the task did not hold.
//!
//! LSM tier: `capset(struct cred *new, const struct cred *old, const kernel_cap_t *effective,
//! *inheritable, *permitted)`: an enforcing match denies with EPERM and the sets stay.
//!
//! Kill tier: `syscalls:sys_enter_capset` (`cap_user_data_t data` at offset 24, checked at
//! start-up), compared with the task's current credentials read through `task_struct.cred` at
//! the offsets the daemon took from BTF. The caller is killed (SIGKILL on the way back).

use aya_ebpf::{
    helpers::bpf_probe_read_user,
    macros::{lsm, tracepoint},
    programs::{FExitContext, LsmContext, TracePointContext},
};
use sensor_common::{PrivilegeCall, Raise};

use crate::{
    kstruct::HookArgs,
    kstruct::{current_cred, lsm_ret, offsets, read},
    privilege::raise_decision,
    shared::{ARG1, Tier, arg, current_in_scope},
};

// ---- LSM tier ------------------------------------------------------------------------

#[lsm(hook = "capset")]
pub fn sensor_lsm_capset(ctx: LsmContext) -> i32 {
    capset_hook(&ctx)
}

/// Override tier: fmod_ret on `security_capset` (the hook's arguments, then the previous
/// return value), where BPF LSM is not active.
#[unsafe(no_mangle)]
#[unsafe(link_section = "fexit/security_capset")]
pub fn sensor_ovr_capset(ctx: *mut core::ffi::c_void) -> i32 {
    capset_hook(&FExitContext::new(ctx))
}

#[inline(always)]
fn capset_hook(ctx: &impl HookArgs) -> i32 {
    let old: *const u8 = ctx.arg(1);
    let effective: *const u8 = ctx.arg(2);
    let inheritable: *const u8 = ctx.arg(3);
    let permitted: *const u8 = ctx.arg(4);
    let previous: i32 = ctx.arg(5);
    if !current_in_scope() {
        return previous;
    }
    let Some(off) = offsets() else {
        return previous;
    };
    // `kernel_cap_t` is 8 bytes on every kernel this runs on (u32[2] before 6.3, u64 after).
    let gained = |new: *const u8, old_field: u32| -> u64 {
        let now = read::<u64>(new, 0).unwrap_or(u64::MAX);
        let before = read::<u64>(old, old_field).unwrap_or(0);
        now & !before
    };
    let added = gained(effective, off.cred_cap_effective)
        | gained(permitted, off.cred_cap_permitted)
        | gained(inheritable, off.cred_cap_inheritable);
    if added == 0 {
        return previous;
    }
    let verdict = raise_decision(
        Tier::Lsm,
        PrivilegeCall::LsmCapset,
        Raise::Capset,
        [added as u32, (added >> 32) as u32, u32::MAX],
        2,
    );
    lsm_ret(verdict, previous)
}

// ---- kill tier -----------------------------------------------------------------------

/// `struct __user_cap_data_struct` (v3 ABI: two of them, low and high 32 capabilities).
#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

#[tracepoint]
pub fn sensor_capset(ctx: TracePointContext) -> u32 {
    if !current_in_scope() {
        return 0;
    }
    let Some((cred, off)) = current_cred() else {
        return 0;
    };
    let Ok(data) = arg(&ctx, ARG1) else {
        return 0;
    };
    let data = data as *const [CapData; 2];
    // SAFETY: a user pointer, read with the checking helper.
    let Ok(data) = (unsafe { bpf_probe_read_user(data) }) else {
        return 0;
    };
    let set = |lo: u32, hi: u32| u64::from(lo) | (u64::from(hi) << 32);
    let gained = |new: u64, field: u32| new & !read::<u64>(cred, field).unwrap_or(0);
    let added = gained(
        set(data[0].effective, data[1].effective),
        off.cred_cap_effective,
    ) | gained(
        set(data[0].permitted, data[1].permitted),
        off.cred_cap_permitted,
    ) | gained(
        set(data[0].inheritable, data[1].inheritable),
        off.cred_cap_inheritable,
    );
    if added == 0 {
        return 0;
    }
    raise_decision(
        Tier::Kill,
        PrivilegeCall::Capset,
        Raise::Capset,
        [added as u32, (added >> 32) as u32, u32::MAX],
        2,
    );
    0
}
