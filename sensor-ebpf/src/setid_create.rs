//! The `setid-create` protection: a file created with a set-id mode (by `open` with O_CREAT
//! or O_TMPFILE, `creat`, or `mknod`), against the chmod rules' mode bits ("every chmod" rules
//! are about chmod, not about creating files). Only matches are reported, as chmod events.
//!
//! LSM tier: `path_mknod(const struct path *dir, struct dentry *, umode_t, unsigned int)`
//! (`may_o_create` calls it for O_CREAT too): an enforcing match denies with EPERM before the
//! file exists.
//!
//! Kill tier: `syscalls:sys_enter_{open,openat,openat2,creat,mknod,mknodat}` (open, creat and
//! mknod exist on x86_64 only; openat2 from Linux 5.6). Records are `struct
//! syscall_trace_enter`: arguments as 8-byte slots from offset 16 (checked against the format
//! files at start-up). The caller is killed; the daemon removes the set-id bits from the
//! created file afterwards, as for chmod.

use aya_ebpf::{
    helpers::bpf_probe_read_user,
    macros::{lsm, tracepoint},
    programs::{FExitContext, LsmContext, TracePointContext},
};
use sensor_common::{ModeCall, rule_flags};

use crate::{
    chmod::{self, Call},
    kstruct::HookArgs,
    kstruct::{S_ISGID, S_ISUID, lsm_ret, offsets},
    shared::{ARG0, ARG1, ARG2, ARG3, arg, current_in_scope},
};

const O_CREAT: u64 = 0o100;
const O_TMPFILE: u64 = 0o20_000_000 | 0o200_000;

// ---- LSM tier ------------------------------------------------------------------------

#[lsm(hook = "path_mknod")]
pub fn sensor_lsm_path_mknod(ctx: LsmContext) -> i32 {
    path_mknod_hook(&ctx)
}

/// Override tier: fmod_ret on `security_path_mknod` (the hook's arguments, then the previous
/// return value), where BPF LSM is not active.
#[unsafe(no_mangle)]
#[unsafe(link_section = "fexit/security_path_mknod")]
pub fn sensor_ovr_path_mknod(ctx: *mut core::ffi::c_void) -> i32 {
    path_mknod_hook(&FExitContext::new(ctx))
}

#[inline(always)]
fn path_mknod_hook(ctx: &impl HookArgs) -> i32 {
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
    let (verdict, rule) =
        chmod::lsm_decide(|r| r.flags & rule_flags::MATCH_ALL == 0 && mode & r.mode_bits != 0);
    if !rule.is_none() {
        chmod::report_dentry(ModeCall::LsmPathMknod, mode, 0, rule, verdict, dentry, off);
    }
    lsm_ret(verdict, previous)
}

// ---- kill tier -----------------------------------------------------------------------

#[inline(always)]
fn creates(flags: u64) -> bool {
    flags & O_CREAT != 0 || flags & O_TMPFILE == O_TMPFILE
}

#[tracepoint]
pub fn sensor_open(ctx: TracePointContext) -> u32 {
    report_create(&ctx, |ctx| {
        let flags = arg(ctx, ARG1)?;
        Ok((
            Call {
                syscall: ModeCall::Open,
                fd: -1,
                path: Some(arg(ctx, ARG0)? as *const u8),
                mode: arg(ctx, ARG2)?,
                flags,
            },
            creates(flags),
        ))
    })
}

#[tracepoint]
pub fn sensor_openat(ctx: TracePointContext) -> u32 {
    report_create(&ctx, |ctx| {
        let flags = arg(ctx, ARG2)?;
        Ok((
            Call {
                syscall: ModeCall::Openat,
                fd: arg(ctx, ARG0)? as i32,
                path: Some(arg(ctx, ARG1)? as *const u8),
                mode: arg(ctx, ARG3)?,
                flags,
            },
            creates(flags),
        ))
    })
}

/// `struct open_how` (user memory): flags, mode, resolve.
#[repr(C)]
#[derive(Clone, Copy)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

#[tracepoint]
pub fn sensor_openat2(ctx: TracePointContext) -> u32 {
    report_create(&ctx, |ctx| {
        let how = arg(ctx, ARG2)? as *const OpenHow;
        // SAFETY: a user pointer, read with the checking helper.
        let how = unsafe { bpf_probe_read_user(how) }.map_err(|e| e as i32)?;
        Ok((
            Call {
                syscall: ModeCall::Openat2,
                fd: arg(ctx, ARG0)? as i32,
                path: Some(arg(ctx, ARG1)? as *const u8),
                mode: how.mode,
                flags: how.flags,
            },
            creates(how.flags),
        ))
    })
}

#[tracepoint]
pub fn sensor_creat(ctx: TracePointContext) -> u32 {
    report_create(&ctx, |ctx| {
        Ok((
            Call {
                syscall: ModeCall::Creat,
                fd: -1,
                path: Some(arg(ctx, ARG0)? as *const u8),
                mode: arg(ctx, ARG1)?,
                flags: O_CREAT,
            },
            true,
        ))
    })
}

#[tracepoint]
pub fn sensor_mknod(ctx: TracePointContext) -> u32 {
    report_create(&ctx, |ctx| {
        Ok((
            Call {
                syscall: ModeCall::Mknod,
                fd: -1,
                path: Some(arg(ctx, ARG0)? as *const u8),
                mode: arg(ctx, ARG1)?,
                flags: 0,
            },
            true,
        ))
    })
}

#[tracepoint]
pub fn sensor_mknodat(ctx: TracePointContext) -> u32 {
    report_create(&ctx, |ctx| {
        Ok((
            Call {
                syscall: ModeCall::Mknodat,
                fd: arg(ctx, ARG0)? as i32,
                path: Some(arg(ctx, ARG1)? as *const u8),
                mode: arg(ctx, ARG2)?,
                flags: 0,
            },
            true,
        ))
    })
}

/// Kill tier for a file created with a set-id mode (open/openat/openat2/creat with O_CREAT,
/// mknod/mknodat): the chmod rules' mode bits (not "every chmod" rules). Only matches are
/// reported. `read` gives the call and whether it creates.
#[inline(always)]
pub fn report_create(
    ctx: &TracePointContext,
    read: impl FnOnce(&TracePointContext) -> Result<(Call, bool), i32>,
) -> u32 {
    let Ok((call, creates)) = read(ctx) else {
        return 0;
    };
    let mode = (call.mode as u32) & 0o7777;
    // Cheap checks first: this runs for every open on the machine.
    if !creates || mode & sensor_common::SETID_BITS == 0 || !current_in_scope() {
        return 0;
    }
    let (verdict, rule) = chmod::kill_decide(mode, true);
    if !rule.is_none() {
        chmod::write_call_event(&call, mode, verdict, rule);
    }
    0
}
