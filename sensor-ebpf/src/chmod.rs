//! chmod family at the syscall-tracepoint tier: detection, and the kill tier for enforcing
//! rules.
//!
//! A tracepoint cannot make the call fail. When an enforcing chmod rule matches, the caller gets
//! SIGKILL (`bpf_send_signal`) before the call runs; the signal is delivered on the way back to
//! user space, so the call itself may already have taken effect: the verdict is `killed`, and the
//! daemon removes the set-id bits the call added where it can still reach the file.
//!
//! Kernel hooks: `syscalls:sys_enter_{chmod,fchmod,fchmodat,fchmodat2}`. Their records are
//! `struct syscall_trace_enter`: 8 bytes of common fields, `int __syscall_nr` at 8, then each
//! argument as an 8-byte slot from offset 16. The daemon checks these offsets against the
//! tracepoints' `format` files before it attaches.
//!
//! - chmod(const char __user *filename, umode_t mode)
//! - fchmod(unsigned int fd, umode_t mode)
//! - fchmodat(int dfd, const char __user *filename, umode_t mode)
//! - fchmodat2(int dfd, const char __user *filename, umode_t mode, unsigned int flags)

use aya_ebpf::{
    helpers::bpf_probe_read_user_str_bytes,
    macros::{map, tracepoint},
    maps::Array,
    programs::TracePointContext,
};
use sensor_common::{
    ChmodEvent, ChmodRules, ChmodSyscall, Counter, EventKind, NO_RULE, Verdict, chmod_flags,
    path_status,
};

use crate::shared::{
    EVENTS, count, current_in_scope, fill_header, kill_tier_decide, path_read_status, wakeup_flags,
};

/// Two rule sets; the daemon fills the inactive one, then flips `SENSOR_CHMOD_ACTIVE`.
#[map(name = "SENSOR_CHMOD_RULES")]
pub static CHMOD_RULES: Array<ChmodRules> = Array::with_max_entries(2, 0);

#[map(name = "SENSOR_CHMOD_ACTIVE")]
pub static CHMOD_ACTIVE: Array<u32> = Array::with_max_entries(1, 0);

const ARG0: usize = 16;
const ARG1: usize = 24;
const ARG2: usize = 32;
const ARG3: usize = 40;

/// Arguments of one chmod-family (or file-creating) call, normalised.
pub struct Call {
    pub syscall: ChmodSyscall,
    pub fd: i32,
    pub path: Option<*const u8>,
    pub mode: u64,
    pub flags: u64,
}

#[tracepoint]
pub fn sensor_chmod(ctx: TracePointContext) -> u32 {
    let call = |ctx: &TracePointContext| -> Result<Call, i32> {
        // SAFETY: offsets of `sys_enter_chmod`, checked against its format file at start-up.
        unsafe {
            Ok(Call {
                syscall: ChmodSyscall::Chmod,
                fd: -1,
                path: Some(ctx.read_at::<u64>(ARG0)? as *const u8),
                mode: ctx.read_at::<u64>(ARG1)?,
                flags: 0,
            })
        }
    };
    report(&ctx, call)
}

#[tracepoint]
pub fn sensor_fchmod(ctx: TracePointContext) -> u32 {
    let call = |ctx: &TracePointContext| -> Result<Call, i32> {
        // SAFETY: offsets of `sys_enter_fchmod`, checked at start-up.
        unsafe {
            Ok(Call {
                syscall: ChmodSyscall::Fchmod,
                fd: ctx.read_at::<u64>(ARG0)? as i32,
                path: None,
                mode: ctx.read_at::<u64>(ARG1)?,
                flags: 0,
            })
        }
    };
    report(&ctx, call)
}

#[tracepoint]
pub fn sensor_fchmodat(ctx: TracePointContext) -> u32 {
    let call = |ctx: &TracePointContext| -> Result<Call, i32> {
        // SAFETY: offsets of `sys_enter_fchmodat`, checked at start-up.
        unsafe {
            Ok(Call {
                syscall: ChmodSyscall::Fchmodat,
                fd: ctx.read_at::<u64>(ARG0)? as i32,
                path: Some(ctx.read_at::<u64>(ARG1)? as *const u8),
                mode: ctx.read_at::<u64>(ARG2)?,
                flags: 0,
            })
        }
    };
    report(&ctx, call)
}

#[tracepoint]
pub fn sensor_fchmodat2(ctx: TracePointContext) -> u32 {
    let call = |ctx: &TracePointContext| -> Result<Call, i32> {
        // SAFETY: offsets of `sys_enter_fchmodat2`, checked at start-up.
        unsafe {
            Ok(Call {
                syscall: ChmodSyscall::Fchmodat2,
                fd: ctx.read_at::<u64>(ARG0)? as i32,
                path: Some(ctx.read_at::<u64>(ARG1)? as *const u8),
                mode: ctx.read_at::<u64>(ARG2)?,
                flags: ctx.read_at::<u64>(ARG3)?,
            })
        }
    };
    report(&ctx, call)
}

#[inline(always)]
fn report(
    ctx: &TracePointContext,
    read: impl FnOnce(&TracePointContext) -> Result<Call, i32>,
) -> u32 {
    if !current_in_scope() {
        return 0;
    }
    count(Counter::ChmodSeen);
    let Ok(call) = read(ctx) else {
        return 0;
    };
    let mode = (call.mode as u32) & 0o7777;
    // The verdict is carried out before the event is reserved: a full ring buffer loses the
    // report, never the kill.
    let (verdict, rule) = decide(mode, false);
    write_call_event(&call, mode, verdict, rule);
    0
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
    let (verdict, rule) = decide(mode, true);
    if rule != NO_RULE {
        write_call_event(&call, mode, verdict, rule);
    }
    0
}

/// A chmod event for a syscall's arguments (the path read from user memory).
#[inline(always)]
fn write_call_event(call: &Call, mode: u32, verdict: Verdict, rule: u32) {
    write_event(
        (call.syscall, call.fd, call.flags as u32),
        mode,
        verdict,
        rule,
        |buf| match call.path {
            None => (path_status::NONE, 0),
            // SAFETY: a user pointer from the syscall's arguments, read with the helper.
            Some(ptr) => path_read_status(
                unsafe { bpf_probe_read_user_str_bytes(ptr, buf) },
                path_status::OK,
            ),
        },
    );
}

/// Reserve, fill and submit a chmod event: `(syscall, fd, flags)`, the mode, the verdict and
/// rule, and `path` filling the path buffer (returning its status and length).
#[inline(always)]
pub fn write_event(
    (syscall, fd, flags): (ChmodSyscall, i32, u32),
    mode: u32,
    verdict: Verdict,
    rule: u32,
    path: impl FnOnce(&mut [u8; sensor_common::PATH_BYTES]) -> (u32, u32),
) {
    let Some(mut entry) = EVENTS.reserve::<ChmodEvent>(0) else {
        count(Counter::RingbufFullChmod);
        return;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` points to a reserved record of the right size; every field is written.
    unsafe {
        fill_header(
            &mut (*ev).header,
            EventKind::Chmod,
            core::mem::size_of::<ChmodEvent>(),
            verdict,
        );
        (*ev).syscall = syscall as u32;
        (*ev).mode = mode;
        (*ev).fd = fd;
        (*ev).flags = flags;
        (*ev).rule = rule;
        (*ev)._pad = 0;
        let (status, len) = path(&mut (*ev).path);
        (*ev).path_status = status;
        (*ev).path_len = len;
    }
    entry.submit(wakeup_flags());
}

/// The chmod rule set the programs read now.
#[inline(always)]
pub fn active_rules() -> Option<&'static ChmodRules> {
    let active = CHMOD_ACTIVE.get(0).copied().unwrap_or(0);
    CHMOD_RULES.get(active & 1)
}

/// The active chmod rules (rules with paths are left to userspace; "every chmod" rules do not
/// cover file creation): see [`kill_tier_decide`].
#[inline(always)]
fn decide(mode: u32, create: bool) -> (Verdict, u32) {
    let Some(set) = active_rules() else {
        return (Verdict::Allowed, NO_RULE);
    };
    kill_tier_decide(
        set,
        |r| {
            r.flags & chmod_flags::USERSPACE_PATHS == 0
                && ((!create && r.flags & chmod_flags::MATCH_ALL != 0) || mode & r.mode_bits != 0)
        },
        Counter::ChmodKilled,
        Counter::ChmodAudited,
    )
}
