//! chmod-family detection: syscall entry tracepoints (no blocking at this tier).
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
    helpers::bpf_probe_read_user_str_bytes, macros::tracepoint, programs::TracePointContext,
};
use sensor_common::{
    ChmodEvent, ChmodSyscall, Counter, EventKind, PATH_BYTES, Verdict, path_status,
};

use crate::shared::{EVENTS, count, current_in_scope, fill_header, wakeup_flags};

const ARG0: usize = 16;
const ARG1: usize = 24;
const ARG2: usize = 32;
const ARG3: usize = 40;

/// Arguments of one chmod-family call, normalised.
struct Call {
    syscall: ChmodSyscall,
    fd: i32,
    path: Option<*const u8>,
    mode: u64,
    flags: u64,
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
    let Some(mut entry) = EVENTS.reserve::<ChmodEvent>(0) else {
        count(Counter::RingbufFullChmod);
        return 0;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` points to a reserved record of the right size; every field is written.
    unsafe {
        fill_header(
            &mut (*ev).header,
            EventKind::Chmod,
            core::mem::size_of::<ChmodEvent>(),
            Verdict::Allowed,
        );
        (*ev).syscall = call.syscall as u32;
        (*ev).mode = (call.mode as u32) & 0o7777;
        (*ev).fd = call.fd;
        (*ev).flags = call.flags as u32;
        (*ev)._pad = [0; 2];
        let (status, len) = match call.path {
            None => (path_status::NONE, 0),
            Some(ptr) => match bpf_probe_read_user_str_bytes(ptr, &mut (*ev).path) {
                Ok(bytes) if bytes.len() >= PATH_BYTES - 1 => {
                    (path_status::TRUNCATED, bytes.len() as u32)
                }
                Ok(bytes) => (path_status::OK, bytes.len() as u32),
                Err(_) => {
                    count(Counter::PathReadFailed);
                    (path_status::FAULT, 0)
                }
            },
        };
        (*ev).path_status = status;
        (*ev).path_len = len;
    }
    entry.submit(wakeup_flags());
    0
}
