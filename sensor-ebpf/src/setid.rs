//! The kill tier for what the LSM tier's `path_mknod`, `inode_setxattr`, `capset` and
//! `bprm_creds_from_file` hooks cover, on kernels without BPF LSM:
//! - set-id file creation: `syscalls:sys_enter_{open,openat,openat2,creat,mknod,mknodat}` with
//!   O_CREAT (or mknod) and a set-id mode, against the chmod rules' mode bits; the daemon
//!   removes the set-id bits from the created file afterwards, as for chmod;
//! - file capabilities: `sys_enter_{setxattr,lsetxattr,fsetxattr}` naming
//!   `security.capability`;
//! - capset: `sys_enter_capset` asking for a capability the task's credentials lack (read
//!   through `task_struct.cred`, at the offsets the daemon took from BTF);
//! - set-id exec: `sched:sched_process_exec`, after an exec that left the effective uid (gid)
//!   different from the real one: the new program is killed before its first instruction.
//!
//! Records of `syscalls:sys_enter_*` are `struct syscall_trace_enter`: arguments as 8-byte
//! slots from offset 16 (checked against the format files at start-up).

use aya_ebpf::{
    helpers::{
        bpf_get_current_task, bpf_probe_read_kernel, bpf_probe_read_user,
        bpf_probe_read_user_str_bytes,
    },
    macros::tracepoint,
    programs::TracePointContext,
};
use sensor_common::{ChmodSyscall, CredSyscall, raise};

use crate::{
    chmod::{Call, report_create},
    shared::{Tier, current_in_scope},
};

const ARG0: usize = 16;
const ARG1: usize = 24;
const ARG2: usize = 32;
const ARG3: usize = 40;
const O_CREAT: u64 = 0o100;
const O_TMPFILE: u64 = 0o20_000_000 | 0o200_000;

/// Read the `n`th 8-byte argument slot.
#[inline(always)]
fn arg(ctx: &TracePointContext, offset: usize) -> Result<u64, i32> {
    // SAFETY: offsets of this tracepoint's arguments, checked at start-up.
    unsafe { ctx.read_at::<u64>(offset) }.map_err(|e| e as i32)
}

#[inline(always)]
fn creates(flags: u64) -> bool {
    flags & O_CREAT != 0 || flags & O_TMPFILE == O_TMPFILE
}

// ---- set-id file creation -------------------------------------------------------------

#[tracepoint]
pub fn sensor_open(ctx: TracePointContext) -> u32 {
    report_create(&ctx, |ctx| {
        let flags = arg(ctx, ARG1)?;
        Ok((
            Call {
                syscall: ChmodSyscall::Open,
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
                syscall: ChmodSyscall::Openat,
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
                syscall: ChmodSyscall::Openat2,
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
                syscall: ChmodSyscall::Creat,
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
                syscall: ChmodSyscall::Mknod,
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
                syscall: ChmodSyscall::Mknodat,
                fd: arg(ctx, ARG0)? as i32,
                path: Some(arg(ctx, ARG1)? as *const u8),
                mode: arg(ctx, ARG2)?,
                flags: 0,
            },
            true,
        ))
    })
}

// ---- file capabilities ----------------------------------------------------------------

#[tracepoint]
pub fn sensor_setxattr(ctx: TracePointContext) -> u32 {
    file_caps(&ctx, CredSyscall::Setxattr, ARG1)
}

#[tracepoint]
pub fn sensor_lsetxattr(ctx: TracePointContext) -> u32 {
    file_caps(&ctx, CredSyscall::Lsetxattr, ARG1)
}

#[tracepoint]
pub fn sensor_fsetxattr(ctx: TracePointContext) -> u32 {
    file_caps(&ctx, CredSyscall::Fsetxattr, ARG1)
}

/// setxattrat (Linux 6.13+): `name` is its fourth argument.
#[tracepoint]
pub fn sensor_setxattrat(ctx: TracePointContext) -> u32 {
    file_caps(&ctx, CredSyscall::Setxattrat, ARG3)
}

/// `security.capability` with its NUL.
const FILE_CAPS_XATTR: &[u8; 20] = b"security.capability\0";

#[inline(always)]
fn file_caps(ctx: &TracePointContext, syscall: CredSyscall, name_at: usize) -> u32 {
    let Ok(name) = arg(ctx, name_at) else {
        return 0;
    };
    let mut buf = [0u8; 24];
    // SAFETY: a user pointer, read with the checking helper.
    let Ok(read) = (unsafe { bpf_probe_read_user_str_bytes(name as *const u8, &mut buf) }) else {
        return 0;
    };
    if read.len() != FILE_CAPS_XATTR.len() - 1 {
        return 0;
    }
    let mut i = 0;
    while i < FILE_CAPS_XATTR.len() - 1 {
        if buf[i] != FILE_CAPS_XATTR[i] {
            return 0;
        }
        i += 1;
    }
    if !current_in_scope() {
        return 0;
    }
    crate::creds::raise_decision(Tier::Kill, syscall, raise::FILE_CAPS, [u32::MAX; 3], 0);
    0
}

// ---- capset and set-id exec (the task's credentials, through BTF offsets) --------------

/// The current task's `cred` pointer, `None` before the daemon wrote the offsets.
#[inline(always)]
fn current_cred() -> Option<(*const u8, &'static sensor_common::KernelOffsets)> {
    let off = crate::lsm::offsets()?;
    // SAFETY: helper call without arguments.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    // SAFETY: checked kernel read.
    let cred = unsafe {
        bpf_probe_read_kernel(task.wrapping_add(off.task_cred as usize) as *const *const u8)
    }
    .ok()?;
    (!cred.is_null()).then_some((cred, off))
}

#[inline(always)]
fn read_u32(base: *const u8, offset: u32) -> Option<u32> {
    // SAFETY: checked kernel read.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(offset as usize) as *const u32) }.ok()
}

#[inline(always)]
fn read_u64(base: *const u8, offset: u32) -> Option<u64> {
    // SAFETY: checked kernel read.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(offset as usize) as *const u64) }.ok()
}

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
    let gained = |new: u64, field: u32| new & !read_u64(cred, field).unwrap_or(0);
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
    crate::creds::raise_decision(
        Tier::Kill,
        CredSyscall::Capset,
        raise::CAPSET,
        [added as u32, (added >> 32) as u32, u32::MAX],
        2,
    );
    0
}

#[tracepoint]
pub fn sensor_setid_exec(_ctx: TracePointContext) -> u32 {
    if !current_in_scope() {
        return 0;
    }
    let Some((cred, off)) = current_cred() else {
        return 0;
    };
    let (Some(uid), Some(euid), Some(gid), Some(egid)) = (
        read_u32(cred, off.cred_uid),
        read_u32(cred, off.cred_euid),
        read_u32(cred, off.cred_gid),
        read_u32(cred, off.cred_egid),
    ) else {
        return 0;
    };
    if uid == euid && gid == egid {
        return 0;
    }
    crate::creds::raise_decision(
        Tier::Kill,
        CredSyscall::Execve,
        raise::SETID_EXEC,
        [uid, euid, egid],
        3,
    );
    0
}
