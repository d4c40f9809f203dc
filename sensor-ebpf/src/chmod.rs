//! The `chmod` protection: the chmod family against the chmod rules, at both tiers, and the
//! chmod event writer the `setid-create` protection shares.
//!
//! LSM tier: `path_chmod(const struct path *, umode_t)`, one hook for chmod, fchmod, fchmodat
//! and fchmodat2 (each program also gets the verdict of the LSM programs before it as a last
//! argument, and keeps a denial it finds). The inode's mode is known here, so rules match the
//! bits the call *adds*; an enforcing match denies with EPERM before anything changes.
//!
//! Kill tier:
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
    helpers::{bpf_probe_read_kernel_str_bytes, bpf_probe_read_user_str_bytes},
    macros::{lsm, map, tracepoint},
    maps::Array,
    programs::{FExitContext, LsmContext, TracePointContext},
};
use sensor_common::{
    ChmodEvent, Counter, EventKind, KernelOffsets, KernelRule, KernelRuleSet, ModeCall, Verdict,
    path_status, rule_flags, set_flags,
};

use crate::{
    kstruct::HookArgs,
    kstruct::{lsm_ret, offsets, read},
    shared::{
        ARG0, ARG1, ARG2, ARG3, RuleRef, SENSOR_EVENTS, SENSOR_REVERTS, count, current_in_scope,
        current_policies, fill_header, kill_tier_decide, lsm_tier_decide, path_read_status,
        wakeup_flags,
    },
};

/// Two rule sets; the daemon fills the inactive one, then flips `SENSOR_CHMOD_ACTIVE`.
#[map]
static SENSOR_CHMOD_RULES: Array<KernelRuleSet> = Array::with_max_entries(2, 0);

#[map]
static SENSOR_CHMOD_ACTIVE: Array<u32> = Array::with_max_entries(1, 0);

// ---- LSM tier ------------------------------------------------------------------------

#[lsm(hook = "path_chmod")]
pub fn sensor_lsm_path_chmod(ctx: LsmContext) -> i32 {
    path_chmod_hook(&ctx)
}

/// Override tier: fmod_ret on `security_path_chmod` (the hook's arguments, then the previous
/// return value), where BPF LSM is not active.
#[unsafe(no_mangle)]
#[unsafe(link_section = "fexit/security_path_chmod")]
pub fn sensor_ovr_path_chmod(ctx: *mut core::ffi::c_void) -> i32 {
    path_chmod_hook(&FExitContext::new(ctx))
}

#[inline(always)]
fn path_chmod_hook(ctx: &impl HookArgs) -> i32 {
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
    let (verdict, rule) =
        lsm_decide(|r| r.flags & rule_flags::MATCH_ALL != 0 || added & r.mode_bits != 0);
    report_dentry(
        ModeCall::LsmPathChmod,
        mode,
        old,
        rule,
        verdict,
        dentry,
        off,
    );
    lsm_ret(verdict, previous)
}

/// LSM tier: the active chmod rules the kernel matches (rules with paths are userspace's).
#[inline(always)]
pub fn lsm_decide(matches: impl Fn(&KernelRule) -> bool) -> (Verdict, RuleRef) {
    match active_rules() {
        Some(set) => with_callers_policies(
            set,
            lsm_tier_decide(
                set,
                |r| r.flags & rule_flags::USERSPACE_PATHS == 0 && matches(r),
                Counter::LsmChmodDenied,
                Counter::LsmChmodAudited,
            ),
        ),
        None => (Verdict::Allowed, RuleRef::NONE),
    }
}

/// A call no kernel rule decided carries the caller's policies when the set has rules that
/// userspace matches (by path), so that it matches only the rules of those policies.
#[inline(always)]
fn with_callers_policies(
    set: &KernelRuleSet,
    (verdict, rule): (Verdict, RuleRef),
) -> (Verdict, RuleRef) {
    if rule.is_none() && set.flags & set_flags::USERSPACE_PATHS != 0 {
        return (
            verdict,
            RuleRef {
                rule: rule.rule,
                policies: current_policies(),
            },
        );
    }
    (verdict, rule)
}

/// LSM tier: a chmod event naming the file by its dentry's name.
#[inline(always)]
pub fn report_dentry(
    call: ModeCall,
    mode: u32,
    old_mode: u32,
    rule: RuleRef,
    verdict: Verdict,
    dentry: *const u8,
    off: &KernelOffsets,
) {
    // `flags` carries the mode the file had (path_chmod); 0 for a file being created.
    write_event((call, -1, old_mode), mode, verdict, rule, |buf| {
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

// ---- kill tier -----------------------------------------------------------------------

/// Arguments of one chmod-family (or file-creating) call, normalised.
pub struct Call {
    pub syscall: ModeCall,
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
                syscall: ModeCall::Chmod,
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
                syscall: ModeCall::Fchmod,
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
                syscall: ModeCall::Fchmodat,
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
                syscall: ModeCall::Fchmodat2,
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
    let (verdict, rule) = kill_decide(mode, false);
    write_call_event(&call, mode, verdict, rule);
    0
}

/// A killed call that asked for set-id bits: its copy for the daemon's revert thread, which
/// undoes it ahead of the event pipeline. A full revert ring is counted; the pipeline then
/// reverts from the event itself.
#[inline(always)]
pub fn queue_revert(call: &Call, mode: u32, verdict: Verdict, rule: RuleRef) {
    if verdict != Verdict::Killed || mode & sensor_common::SETID_BITS == 0 {
        return;
    }
    let Some(mut entry) = SENSOR_REVERTS.reserve::<ChmodEvent>(0) else {
        count(Counter::RingbufFullRevert);
        return;
    };
    // SAFETY: a reserved record of the right size.
    unsafe {
        fill_event(
            entry.as_mut_ptr(),
            (call.syscall, call.fd, call.flags as u32),
            mode,
            verdict,
            rule,
            call_path(call),
        );
    }
    // Always woken: a revert is never batched.
    entry.submit(0);
}

/// A chmod event for a syscall's arguments (the path read from user memory); a killed
/// set-id call is queued for its revert first ([`queue_revert`]).
#[inline(always)]
pub fn write_call_event(call: &Call, mode: u32, verdict: Verdict, rule: RuleRef) {
    queue_revert(call, mode, verdict, rule);
    write_event(
        (call.syscall, call.fd, call.flags as u32),
        mode,
        verdict,
        rule,
        call_path(call),
    );
}

/// Fills the path buffer with the call's path argument (user memory).
#[inline(always)]
fn call_path(call: &Call) -> impl FnOnce(&mut [u8; sensor_common::PATH_BYTES]) -> (u32, u32) + '_ {
    move |buf| match call.path {
        None => (path_status::NONE, 0),
        // SAFETY: a user pointer from the syscall's arguments, read with the helper.
        Some(ptr) => path_read_status(
            unsafe { bpf_probe_read_user_str_bytes(ptr, buf) },
            path_status::OK,
        ),
    }
}

/// Reserve, fill and submit a chmod event: `(syscall, fd, flags)`, the mode, the verdict and
/// rule, and `path` filling the path buffer (returning its status and length).
#[inline(always)]
pub fn write_event(
    call: (ModeCall, i32, u32),
    mode: u32,
    verdict: Verdict,
    rule: RuleRef,
    path: impl FnOnce(&mut [u8; sensor_common::PATH_BYTES]) -> (u32, u32),
) {
    let Some(mut entry) = SENSOR_EVENTS.reserve::<ChmodEvent>(0) else {
        count(Counter::RingbufFullChmod);
        return;
    };
    // SAFETY: a reserved record of the right size.
    unsafe { fill_event(entry.as_mut_ptr(), call, mode, verdict, rule, path) };
    entry.submit(wakeup_flags::<ChmodEvent>());
}

/// Write every field of the chmod event at `ev`.
///
/// # Safety
/// `ev` points to a reserved ring-buffer record of `ChmodEvent`'s size.
#[inline(always)]
unsafe fn fill_event(
    ev: *mut ChmodEvent,
    (syscall, fd, flags): (ModeCall, i32, u32),
    mode: u32,
    verdict: Verdict,
    rule: RuleRef,
    path: impl FnOnce(&mut [u8; sensor_common::PATH_BYTES]) -> (u32, u32),
) {
    // SAFETY: the caller's.
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
        (*ev).rule = rule.rule;
        (*ev).policies = rule.policies;
        let (status, len) = path(&mut (*ev).path);
        (*ev).path_status = status;
        (*ev).path_len = len;
    }
}

/// The chmod rule set the programs read now.
#[inline(always)]
fn active_rules() -> Option<&'static KernelRuleSet> {
    let active = SENSOR_CHMOD_ACTIVE.get(0).copied().unwrap_or(0);
    SENSOR_CHMOD_RULES.get(active & 1)
}

/// Kill tier: the active chmod rules (rules with paths are left to userspace; "every chmod"
/// rules do not cover file creation): see [`kill_tier_decide`].
#[inline(always)]
pub fn kill_decide(mode: u32, create: bool) -> (Verdict, RuleRef) {
    let Some(set) = active_rules() else {
        return (Verdict::Allowed, RuleRef::NONE);
    };
    with_callers_policies(
        set,
        kill_tier_decide(
            set,
            |r| {
                r.flags & rule_flags::USERSPACE_PATHS == 0
                    && ((!create && r.flags & rule_flags::MATCH_ALL != 0)
                        || mode & r.mode_bits != 0)
            },
            Counter::ChmodKilled,
            Counter::ChmodAudited,
        ),
    )
}
