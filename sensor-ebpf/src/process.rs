//! Process lifecycle for the daemon's process cache: exec and exit of tasks in scope.
//!
//! Kernel hooks: `sched:sched_process_exec` (runs in the new image's context; its record has
//! `__data_loc char[] filename`, whose offset the daemon reads from the tracepoint's format file
//! and sets in [`SENSOR_EXEC_FILENAME_OFFSET`]) and `sched:sched_process_exit` (runs in the
//! exiting task; only the thread-group leader is reported). Detection only: return values are
//! ignored by the kernel.

use aya_ebpf::{
    EbpfContext as _,
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes},
    macros::tracepoint,
    programs::TracePointContext,
};
use sensor_common::{Counter, EventKind, ExecEvent, ExitEvent, PATH_BYTES, Verdict, path_status};

use crate::shared::{SENSOR_EVENTS, count, current_in_scope, fill_header, wakeup_flags};

/// Offset of the `filename` `__data_loc` in the exec record (set at load).
#[unsafe(no_mangle)]
static SENSOR_EXEC_FILENAME_OFFSET: u64 = 8;

#[tracepoint]
pub fn sensor_exec(ctx: TracePointContext) -> u32 {
    if !current_in_scope() {
        return 0;
    }
    let Some(mut entry) = SENSOR_EVENTS.reserve::<ExecEvent>(0) else {
        count(Counter::RingbufFullProcess);
        return 0;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: the global is set by the loader; volatile so it is not constant-folded.
    let off = unsafe { core::ptr::read_volatile(&SENSOR_EXEC_FILENAME_OFFSET) } as usize & 0xfff;
    // SAFETY: `ev` points to a reserved record of the right size; every field is written. The
    // __data_loc word holds the string's offset in the record (low 16 bits).
    unsafe {
        fill_header(
            &mut (*ev).header,
            EventKind::Exec,
            core::mem::size_of::<ExecEvent>(),
            Verdict::Allowed,
        );
        (*ev)._pad = [0; 2];
        let base = ctx.as_ptr() as *const u8;
        let (status, len) = match bpf_probe_read_kernel::<u32>(base.add(off) as *const u32) {
            Ok(loc) => {
                let name = base.add((loc & 0xffff) as usize);
                match bpf_probe_read_kernel_str_bytes(name, &mut (*ev).filename) {
                    Ok(bytes) if bytes.len() >= PATH_BYTES - 1 => {
                        (path_status::TRUNCATED, bytes.len() as u32)
                    }
                    Ok(bytes) => (path_status::OK, bytes.len() as u32),
                    Err(_) => (path_status::FAULT, 0),
                }
            }
            Err(_) => (path_status::FAULT, 0),
        };
        (*ev).filename_status = status;
        (*ev).filename_len = len;
    }
    entry.submit(wakeup_flags::<ExecEvent>());
    0
}

#[tracepoint]
pub fn sensor_exit(_ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    // Threads exiting are not process exits.
    if pid_tgid as u32 != (pid_tgid >> 32) as u32 || !current_in_scope() {
        return 0;
    }
    let Some(mut entry) = SENSOR_EVENTS.reserve::<ExitEvent>(0) else {
        count(Counter::RingbufFullProcess);
        return 0;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` points to a reserved record of the right size.
    unsafe {
        fill_header(
            &mut (*ev).header,
            EventKind::Exit,
            core::mem::size_of::<ExitEvent>(),
            Verdict::Allowed,
        );
    }
    entry.submit(wakeup_flags::<ExitEvent>());
    0
}
