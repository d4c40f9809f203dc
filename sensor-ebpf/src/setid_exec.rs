//! The `setid-exec` protection: an exec of a set-uid (set-gid) file that changes the process's
//! ids.
//!
//! LSM tier: `bprm_creds_from_file(struct linux_binprm *, const struct file *)`: exec of a
//! set-uid file owned by another uid than the caller's real one, or a group-executable set-gid
//! file of another gid; an enforcing match fails the exec with EPERM.
//!
//! Kill tier: `sched:sched_process_exec`, after an exec that left the effective uid (gid)
//! different from the real one (credentials through `task_struct.cred` at BTF offsets): the
//! new program is killed before its first instruction.

use aya_ebpf::{
    helpers::bpf_get_current_uid_gid,
    macros::{lsm, tracepoint},
    programs::{FExitContext, LsmContext, TracePointContext},
};
use sensor_common::{PrivilegeCall, Raise};

use crate::{
    kstruct::HookArgs,
    kstruct::{S_ISGID, S_ISUID, S_IXGRP, current_cred, lsm_ret, offsets, read},
    privilege::raise_decision,
    shared::{Tier, current_in_scope},
};

// ---- LSM tier ------------------------------------------------------------------------

#[lsm(hook = "bprm_creds_from_file")]
pub fn sensor_lsm_setid_exec(ctx: LsmContext) -> i32 {
    setid_exec_hook(&ctx)
}

/// Override tier: fmod_ret on `security_bprm_creds_from_file` (the hook's arguments, then the previous
/// return value), where BPF LSM is not active.
#[unsafe(no_mangle)]
#[unsafe(link_section = "fexit/security_bprm_creds_from_file")]
pub fn sensor_ovr_setid_exec(ctx: *mut core::ffi::c_void) -> i32 {
    setid_exec_hook(&FExitContext::new(ctx))
}

#[inline(always)]
fn setid_exec_hook(ctx: &impl HookArgs) -> i32 {
    let file: *const u8 = ctx.arg(1);
    let previous: i32 = ctx.arg(2);
    let Some(off) = offsets() else {
        return previous;
    };
    let inode: *const u8 = read(file, off.file_inode).unwrap_or(core::ptr::null());
    let Some(mode) = read::<u16>(inode, off.inode_mode) else {
        return previous;
    };
    let mode = u32::from(mode);
    if mode & (S_ISUID | S_ISGID) == 0 || !current_in_scope() {
        return previous;
    }
    let owner = read::<u32>(inode, off.inode_uid).unwrap_or(0);
    let group = read::<u32>(inode, off.inode_gid).unwrap_or(0);
    let ids = bpf_get_current_uid_gid();
    let changes_uid = mode & S_ISUID != 0 && owner != ids as u32;
    let changes_gid = mode & S_ISGID != 0 && mode & S_IXGRP != 0 && group != (ids >> 32) as u32;
    if !changes_uid && !changes_gid {
        return previous;
    }
    let verdict = raise_decision(
        Tier::Lsm,
        PrivilegeCall::LsmSetidExec,
        Raise::SetidExec,
        [owner, group, mode & 0o7777],
        3,
    );
    lsm_ret(verdict, previous)
}

// ---- kill tier -----------------------------------------------------------------------

#[tracepoint]
pub fn sensor_setid_exec(_ctx: TracePointContext) -> u32 {
    if !current_in_scope() {
        return 0;
    }
    let Some((cred, off)) = current_cred() else {
        return 0;
    };
    let (Some(uid), Some(euid), Some(gid), Some(egid)) = (
        read::<u32>(cred, off.cred_uid),
        read::<u32>(cred, off.cred_euid),
        read::<u32>(cred, off.cred_gid),
        read::<u32>(cred, off.cred_egid),
    ) else {
        return 0;
    };
    if uid == euid && gid == egid {
        return 0;
    }
    raise_decision(
        Tier::Kill,
        PrivilegeCall::Execve,
        Raise::SetidExec,
        [uid, euid, egid],
        3,
    );
    0
}
