//! The `setuid-root` and `setgid-root` protections: a task whose real uid (gid) is not 0
//! making a uid (gid) 0 that was not 0.
//!
//! LSM tier: `task_fix_setuid` / `task_fix_setgid(struct cred *new, const struct cred *old,
//! int flags)`: they see the new credentials whatever syscall asked; an enforcing match denies
//! with EPERM and the ids stay as they were.
//!
//! Kill tier: `syscalls:sys_enter_{setuid,setfsuid,setreuid,setresuid}` and the gid ones, the
//! ids as 8-byte slots from offset 16 (checked against the format files at start-up). A
//! tracepoint cannot fail the call: on a match with an enforcing rule the caller gets SIGKILL,
//! delivered when the call returns, before it runs another instruction with the new ids (the
//! whole thread group dies, and its credentials with it). Verdict `killed`.

use aya_ebpf::{
    helpers::bpf_get_current_uid_gid,
    macros::{lsm, tracepoint},
    programs::{FExitContext, LsmContext, TracePointContext},
};
use sensor_common::{PrivilegeCall, Raise};

use crate::{
    kstruct::HookArgs,
    kstruct::{lsm_ret, offsets, read},
    privilege::raise_decision,
    shared::{ARG0, Tier, arg, current_in_scope},
};

// ---- LSM tier ------------------------------------------------------------------------

#[lsm(hook = "task_fix_setuid")]
pub fn sensor_lsm_fix_setuid(ctx: LsmContext) -> i32 {
    fix_setid(&ctx, false)
}

#[lsm(hook = "task_fix_setgid")]
pub fn sensor_lsm_fix_setgid(ctx: LsmContext) -> i32 {
    fix_setid(&ctx, true)
}

/// Override tier: fmod_ret on `security_task_fix_setuid` / `security_task_fix_setgid` (the
/// hook's arguments, then the previous return value), where BPF LSM is not active.
#[unsafe(no_mangle)]
#[unsafe(link_section = "fexit/security_task_fix_setuid")]
pub fn sensor_ovr_fix_setuid(ctx: *mut core::ffi::c_void) -> i32 {
    fix_setid(&FExitContext::new(ctx), false)
}

#[unsafe(no_mangle)]
#[unsafe(link_section = "fexit/security_task_fix_setgid")]
pub fn sensor_ovr_fix_setgid(ctx: *mut core::ffi::c_void) -> i32 {
    fix_setid(&FExitContext::new(ctx), true)
}

#[inline(always)]
fn fix_setid(ctx: &impl HookArgs, gid: bool) -> i32 {
    let new: *const u8 = ctx.arg(0);
    let old: *const u8 = ctx.arg(1);
    let previous: i32 = ctx.arg(3);
    let Some(off) = offsets() else {
        return previous;
    };
    // Real, effective, saved, fs ids.
    let fields = if gid {
        [off.cred_gid, off.cred_egid, off.cred_sgid, off.cred_fsgid]
    } else {
        [off.cred_uid, off.cred_euid, off.cred_suid, off.cred_fsuid]
    };
    let Some(old_real) = read::<u32>(old, fields[0]) else {
        return previous;
    };
    if old_real == 0 {
        return previous;
    }
    let mut new_ids = [u32::MAX; 4];
    let mut to_root = false;
    let mut i = 0;
    while i < 4 {
        let now = read::<u32>(new, fields[i]).unwrap_or(0);
        let before = read::<u32>(old, fields[i]).unwrap_or(0);
        new_ids[i] = now;
        to_root |= now == 0 && before != 0;
        i += 1;
    }
    if !to_root || !current_in_scope() {
        return previous;
    }
    let (kind, syscall) = if gid {
        (Raise::SetgidRoot, PrivilegeCall::LsmFixSetgid)
    } else {
        (Raise::SetuidRoot, PrivilegeCall::LsmFixSetuid)
    };
    let verdict = raise_decision(
        Tier::Lsm,
        syscall,
        kind,
        [new_ids[0], new_ids[1], new_ids[2]],
        3,
    );
    lsm_ret(verdict, previous)
}

// ---- kill tier -----------------------------------------------------------------------

#[tracepoint]
pub fn sensor_setuid(ctx: TracePointContext) -> u32 {
    check(&ctx, PrivilegeCall::Setuid, false, 1)
}

#[tracepoint]
pub fn sensor_setfsuid(ctx: TracePointContext) -> u32 {
    check(&ctx, PrivilegeCall::Setfsuid, false, 1)
}

#[tracepoint]
pub fn sensor_setreuid(ctx: TracePointContext) -> u32 {
    check(&ctx, PrivilegeCall::Setreuid, false, 2)
}

#[tracepoint]
pub fn sensor_setresuid(ctx: TracePointContext) -> u32 {
    check(&ctx, PrivilegeCall::Setresuid, false, 3)
}

#[tracepoint]
pub fn sensor_setgid(ctx: TracePointContext) -> u32 {
    check(&ctx, PrivilegeCall::Setgid, true, 1)
}

#[tracepoint]
pub fn sensor_setfsgid(ctx: TracePointContext) -> u32 {
    check(&ctx, PrivilegeCall::Setfsgid, true, 1)
}

#[tracepoint]
pub fn sensor_setregid(ctx: TracePointContext) -> u32 {
    check(&ctx, PrivilegeCall::Setregid, true, 2)
}

#[tracepoint]
pub fn sensor_setresgid(ctx: TracePointContext) -> u32 {
    check(&ctx, PrivilegeCall::Setresgid, true, 3)
}

#[inline(always)]
fn check(ctx: &TracePointContext, syscall: PrivilegeCall, gid: bool, nids: usize) -> u32 {
    let ids = bpf_get_current_uid_gid();
    let real = if gid { (ids >> 32) as u32 } else { ids as u32 };
    if real == 0 {
        return 0;
    }
    // The arguments before the scope: most set*id calls ask for no id 0.
    let mut requested = [u32::MAX; 3];
    let mut to_root = false;
    let mut i = 0;
    while i < 3 {
        if i < nids {
            let Ok(id) = arg(ctx, ARG0 + 8 * i) else {
                return 0;
            };
            requested[i] = id as u32;
            to_root |= id as u32 == 0;
        }
        i += 1;
    }
    if !to_root || !current_in_scope() {
        return 0;
    }
    let kind = if gid {
        Raise::SetgidRoot
    } else {
        Raise::SetuidRoot
    };
    raise_decision(Tier::Kill, syscall, kind, requested, nids as u32);
    0
}
