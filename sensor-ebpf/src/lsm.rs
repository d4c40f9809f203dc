//! The LSM tier: BPF LSM programs that deny a privilege change before it happens (the hook
//! returns -EPERM; the file mode and the credentials stay as they were).
//!
//! Hooks (arguments as `include/linux/lsm_hook_defs.h` lists them; each program also gets the
//! verdict of the LSM programs before it as a last argument, and keeps a denial it finds):
//! - `path_chmod(const struct path *, umode_t)`: one hook for chmod, fchmod, fchmodat and
//!   fchmodat2; the chmod rules, matched against the bits the call *adds* (the inode's mode is
//!   known here, unlike at the syscall tracepoints);
//! - `path_mknod(const struct path *dir, struct dentry *, umode_t, unsigned int)`: creating a
//!   file with a set-id mode, by mknod or by open with O_CREAT (`may_o_create` calls it);
//! - `task_fix_setuid` / `task_fix_setgid(struct cred *new, const struct cred *old, int)`: a
//!   task whose real uid (gid) is not 0 making an id 0 that was not 0;
//! - `capset(new, old, const kernel_cap_t *effective, *inheritable, *permitted)`: a set gains a
//!   capability it did not hold;
//! - `bprm_creds_from_file(struct linux_binprm *, const struct file *)`: exec of a set-uid file
//!   owned by another uid than the caller's real one (set-gid: group-executable, another gid);
//! - `inode_setxattr(idmap, struct dentry *, const char *name, ...)`: writing
//!   `security.capability` (granting file capabilities).
//!
//! Kernel structs are read at offsets the daemon takes from the running kernel's BTF
//! ([`KernelOffsets`] in `SENSOR_OFFSETS`), never compiled in.

use aya_ebpf::{
    helpers::{bpf_get_current_uid_gid, bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes},
    macros::{lsm, map},
    maps::Array,
    programs::LsmContext,
};
use sensor_common::{
    ChmodRules, ChmodSyscall, Counter, CredSyscall, KernelOffsets, NO_RULE, Verdict, chmod_flags,
    path_status, raise,
};

use crate::shared::{Tier, count, current_in_scope, lsm_tier_decide, path_read_status};

#[map(name = "SENSOR_OFFSETS")]
static OFFSETS: Array<KernelOffsets> = Array::with_max_entries(1, 0);

/// The kernel struct offsets, once the daemon has written them.
#[inline(always)]
pub fn offsets() -> Option<&'static KernelOffsets> {
    OFFSETS.get(0).filter(|o| o.valid == 1)
}

const EPERM: i32 = 1;
const S_ISUID: u32 = 0o4000;
const S_ISGID: u32 = 0o2000;
const S_IXGRP: u32 = 0o0010;

/// Read a `T` at `base + offset` in kernel memory; `None` when the read fails.
#[inline(always)]
fn read<T>(base: *const u8, offset: u32) -> Option<T> {
    if base.is_null() {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel checks the address; a fault is an error, not a crash.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(offset as usize).cast::<T>()).ok() }
}

/// What an LSM program returns for a verdict, keeping an earlier program's denial.
#[inline(always)]
fn ret(verdict: Verdict, previous: i32) -> i32 {
    if previous != 0 {
        previous
    } else if matches!(verdict, Verdict::Blocked) {
        -EPERM
    } else {
        0
    }
}

// ---- chmod and set-id file creation ---------------------------------------------------

#[lsm(hook = "path_chmod")]
pub fn sensor_lsm_path_chmod(ctx: LsmContext) -> i32 {
    let path: *const u8 = ctx.arg(0);
    let mode: u64 = ctx.arg(1);
    let previous: i32 = ctx.arg(2);
    if !current_in_scope() {
        return previous;
    }
    count(Counter::ChmodSeen);
    let Some(off) = offsets() else {
        return previous;
    };
    let dentry: *const u8 = read(path, off.path_dentry).unwrap_or(core::ptr::null());
    let inode: *const u8 = read(dentry, off.dentry_inode).unwrap_or(core::ptr::null());
    // An unreadable mode counts as 0: every requested bit is then "added" (fails closed).
    let old = u32::from(read::<u16>(inode, off.inode_mode).unwrap_or(0)) & 0o7777;
    let mode = (mode as u32) & 0o7777;
    let added = mode & !old;
    let (verdict, rule) = match crate::chmod::active_rules() {
        Some(set) => decide_chmod(set, |r| {
            r.flags & chmod_flags::MATCH_ALL != 0 || added & r.mode_bits != 0
        }),
        None => (Verdict::Allowed, NO_RULE),
    };
    report_chmod(
        ChmodSyscall::LsmPathChmod,
        mode,
        old,
        rule,
        verdict,
        dentry,
        off,
    );
    ret(verdict, previous)
}

#[lsm(hook = "path_mknod")]
pub fn sensor_lsm_path_mknod(ctx: LsmContext) -> i32 {
    let dentry: *const u8 = ctx.arg(1);
    let mode: u64 = ctx.arg(2);
    let previous: i32 = ctx.arg(4);
    let mode = (mode as u32) & 0o7777;
    // Only set-id creations are of interest: everything else returns before any map lookup.
    if mode & (S_ISUID | S_ISGID) == 0 || !current_in_scope() {
        return previous;
    }
    let Some(off) = offsets() else {
        return previous;
    };
    // "Every chmod" rules are about chmod, not about creating files.
    let (verdict, rule) = match crate::chmod::active_rules() {
        Some(set) => decide_chmod(set, |r| {
            r.flags & chmod_flags::MATCH_ALL == 0 && mode & r.mode_bits != 0
        }),
        None => (Verdict::Allowed, NO_RULE),
    };
    if rule != NO_RULE {
        report_chmod(
            ChmodSyscall::LsmPathMknod,
            mode,
            0,
            rule,
            verdict,
            dentry,
            off,
        );
    }
    ret(verdict, previous)
}

/// The chmod rules the kernel matches (rules with paths are userspace's).
#[inline(always)]
fn decide_chmod(
    set: &ChmodRules,
    matches: impl Fn(&sensor_common::ChmodRule) -> bool,
) -> (Verdict, u32) {
    lsm_tier_decide(
        set,
        |r| r.flags & chmod_flags::USERSPACE_PATHS == 0 && matches(r),
        Counter::LsmChmodDenied,
        Counter::LsmChmodAudited,
    )
}

#[inline(always)]
fn report_chmod(
    syscall: ChmodSyscall,
    mode: u32,
    old_mode: u32,
    rule: u32,
    verdict: Verdict,
    dentry: *const u8,
    off: &KernelOffsets,
) {
    // `flags` carries the mode the file had (path_chmod); 0 for a file being created.
    crate::chmod::write_event((syscall, -1, old_mode), mode, verdict, rule, |buf| {
        let name: *const u8 = read(dentry, off.dentry_name).unwrap_or(core::ptr::null());
        if name.is_null() {
            count(Counter::PathReadFailed);
            (path_status::FAULT, 0)
        } else {
            // SAFETY: a kernel string (the dentry's name), read with the checking helper.
            path_read_status(
                unsafe { bpf_probe_read_kernel_str_bytes(name, buf) },
                path_status::NAME,
            )
        }
    });
}

// ---- privilege raises ----------------------------------------------------------------

#[lsm(hook = "task_fix_setuid")]
pub fn sensor_lsm_fix_setuid(ctx: LsmContext) -> i32 {
    fix_setid(&ctx, false)
}

#[lsm(hook = "task_fix_setgid")]
pub fn sensor_lsm_fix_setgid(ctx: LsmContext) -> i32 {
    fix_setid(&ctx, true)
}

#[inline(always)]
fn fix_setid(ctx: &LsmContext, gid: bool) -> i32 {
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
        (raise::SETGID_ROOT, CredSyscall::LsmFixSetgid)
    } else {
        (raise::SETUID_ROOT, CredSyscall::LsmFixSetuid)
    };
    let verdict = crate::creds::raise_decision(
        Tier::Lsm,
        syscall,
        kind,
        [new_ids[0], new_ids[1], new_ids[2]],
        3,
    );
    ret(verdict, previous)
}

#[lsm(hook = "capset")]
pub fn sensor_lsm_capset(ctx: LsmContext) -> i32 {
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
    let verdict = crate::creds::raise_decision(
        Tier::Lsm,
        CredSyscall::LsmCapset,
        raise::CAPSET,
        [added as u32, (added >> 32) as u32, u32::MAX],
        2,
    );
    ret(verdict, previous)
}

#[lsm(hook = "bprm_creds_from_file")]
pub fn sensor_lsm_setid_exec(ctx: LsmContext) -> i32 {
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
    let verdict = crate::creds::raise_decision(
        Tier::Lsm,
        CredSyscall::LsmSetidExec,
        raise::SETID_EXEC,
        [owner, group, mode & 0o7777],
        3,
    );
    ret(verdict, previous)
}

/// `security.capability` with its NUL.
const FILE_CAPS_XATTR: &[u8; 20] = b"security.capability\0";

#[lsm(hook = "inode_setxattr")]
pub fn sensor_lsm_setxattr(ctx: LsmContext) -> i32 {
    let name: *const u8 = ctx.arg(2);
    let previous: i32 = ctx.arg(6);
    let mut buf = [0u8; 24];
    // SAFETY: a kernel string pointer from the hook's arguments, read with a checked helper.
    let Ok(read) = (unsafe { bpf_probe_read_kernel_str_bytes(name, &mut buf) }) else {
        return previous;
    };
    // `read` excludes the NUL.
    if read.len() != FILE_CAPS_XATTR.len() - 1 {
        return previous;
    }
    let mut i = 0;
    while i < FILE_CAPS_XATTR.len() - 1 {
        if buf[i] != FILE_CAPS_XATTR[i] {
            return previous;
        }
        i += 1;
    }
    if !current_in_scope() {
        return previous;
    }
    let verdict = crate::creds::raise_decision(
        Tier::Lsm,
        CredSyscall::LsmSetxattr,
        raise::FILE_CAPS,
        [u32::MAX; 3],
        0,
    );
    ret(verdict, previous)
}
