//! The `file-caps` protection: writing `security.capability` on a file (granting file
//! capabilities).
//!
//! LSM tier: `inode_setxattr(struct mnt_idmap *, struct dentry *, const char *name, ...)`: an
//! enforcing match denies with EPERM and nothing is written.
//!
//! Kill tier: `syscalls:sys_enter_{setxattr,lsetxattr,fsetxattr}` (`name` at offset 24) and
//! `sys_enter_setxattrat` (Linux 6.13+, `name` at offset 40): the caller is killed; the
//! capability stays written (only set-id bits are reverted by the daemon).

use aya_ebpf::{
    helpers::{bpf_probe_read_kernel_str_bytes, bpf_probe_read_user_str_bytes},
    macros::{lsm, tracepoint},
    programs::{FExitContext, LsmContext, TracePointContext},
};
use sensor_common::{PrivilegeCall, Raise};

use crate::{
    kstruct::HookArgs,
    kstruct::lsm_ret,
    privilege::raise_decision,
    shared::{ARG1, ARG3, Tier, arg, current_in_scope},
};

/// `security.capability` with its NUL.
const FILE_CAPS_XATTR: &[u8; 20] = b"security.capability\0";

/// Whether a read attribute name (`read`: the bytes before the NUL) is `security.capability`.
#[inline(always)]
fn is_file_caps(buf: &[u8; 24], read: usize) -> bool {
    if read != FILE_CAPS_XATTR.len() - 1 {
        return false;
    }
    let mut i = 0;
    while i < FILE_CAPS_XATTR.len() - 1 {
        if buf[i] != FILE_CAPS_XATTR[i] {
            return false;
        }
        i += 1;
    }
    true
}

// ---- LSM tier ------------------------------------------------------------------------

#[lsm(hook = "inode_setxattr")]
pub fn sensor_lsm_setxattr(ctx: LsmContext) -> i32 {
    setxattr_hook(&ctx)
}

/// Override tier: fmod_ret on `security_inode_setxattr` (the hook's arguments, then the previous
/// return value), where BPF LSM is not active.
#[unsafe(no_mangle)]
#[unsafe(link_section = "fexit/security_inode_setxattr")]
pub fn sensor_ovr_setxattr(ctx: *mut core::ffi::c_void) -> i32 {
    setxattr_hook(&FExitContext::new(ctx))
}

#[inline(always)]
fn setxattr_hook(ctx: &impl HookArgs) -> i32 {
    let name: *const u8 = ctx.arg(2);
    let previous: i32 = ctx.arg(6);
    let mut buf = [0u8; 24];
    // SAFETY: a kernel string pointer from the hook's arguments, read with a checked helper.
    let Ok(read) = (unsafe { bpf_probe_read_kernel_str_bytes(name, &mut buf) }) else {
        return previous;
    };
    let len = read.len();
    if !is_file_caps(&buf, len) || !current_in_scope() {
        return previous;
    }
    let verdict = raise_decision(
        Tier::Lsm,
        PrivilegeCall::LsmSetxattr,
        Raise::FileCaps,
        [u32::MAX; 3],
        0,
    );
    lsm_ret(verdict, previous)
}

// ---- kill tier -----------------------------------------------------------------------

#[tracepoint]
pub fn sensor_setxattr(ctx: TracePointContext) -> u32 {
    file_caps(&ctx, PrivilegeCall::Setxattr, ARG1)
}

#[tracepoint]
pub fn sensor_lsetxattr(ctx: TracePointContext) -> u32 {
    file_caps(&ctx, PrivilegeCall::Lsetxattr, ARG1)
}

#[tracepoint]
pub fn sensor_fsetxattr(ctx: TracePointContext) -> u32 {
    file_caps(&ctx, PrivilegeCall::Fsetxattr, ARG1)
}

/// setxattrat (Linux 6.13+): `name` is its fourth argument.
#[tracepoint]
pub fn sensor_setxattrat(ctx: TracePointContext) -> u32 {
    file_caps(&ctx, PrivilegeCall::Setxattrat, ARG3)
}

#[inline(always)]
fn file_caps(ctx: &TracePointContext, syscall: PrivilegeCall, name_at: usize) -> u32 {
    let Ok(name) = arg(ctx, name_at) else {
        return 0;
    };
    let mut buf = [0u8; 24];
    // SAFETY: a user pointer, read with the checking helper.
    let Ok(read) = (unsafe { bpf_probe_read_user_str_bytes(name as *const u8, &mut buf) }) else {
        return 0;
    };
    let len = read.len();
    if !is_file_caps(&buf, len) || !current_in_scope() {
        return 0;
    }
    raise_decision(Tier::Kill, syscall, Raise::FileCaps, [u32::MAX; 3], 0);
    0
}
