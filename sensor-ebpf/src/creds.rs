//! Privilege raises at the syscall-tracepoint tier (kill tier): a task in scope whose real uid
//! (gid) is not 0 asking a set*id syscall for uid (gid) 0.
//!
//! Kernel hooks: `syscalls:sys_enter_{setuid,setfsuid,setreuid,setresuid}` and the gid ones.
//! Their records are `struct syscall_trace_enter`: the ids as 8-byte slots from offset 16 (the
//! daemon checks the offsets against the `format` files). A tracepoint cannot fail the call:
//! on a match with an enforcing privilege rule the caller gets SIGKILL, delivered when the call
//! returns, before it runs another instruction with the new ids (the whole thread group dies,
//! and credentials die with it). Verdict `killed`.

use aya_ebpf::{
    helpers::bpf_get_current_uid_gid,
    macros::{map, tracepoint},
    maps::Array,
    programs::TracePointContext,
};
use sensor_common::{
    ChmodRules, Counter, CredSyscall, EventKind, NO_RULE, PrivilegeEvent, Verdict, raise,
};

use crate::shared::{
    EVENTS, Tier, count, current_in_scope, fill_header, kill_tier_decide, lsm_tier_decide,
    wakeup_flags,
};

/// Privilege rules (`mode_bits` = raise kinds), double-buffered like the chmod rules.
#[map(name = "SENSOR_PRIV_RULES")]
static PRIV_RULES: Array<ChmodRules> = Array::with_max_entries(2, 0);

#[map(name = "SENSOR_PRIV_ACTIVE")]
static PRIV_ACTIVE: Array<u32> = Array::with_max_entries(1, 0);

const ARG0: usize = 16;

#[tracepoint]
pub fn sensor_setuid(ctx: TracePointContext) -> u32 {
    check(&ctx, CredSyscall::Setuid, false, 1)
}

#[tracepoint]
pub fn sensor_setfsuid(ctx: TracePointContext) -> u32 {
    check(&ctx, CredSyscall::Setfsuid, false, 1)
}

#[tracepoint]
pub fn sensor_setreuid(ctx: TracePointContext) -> u32 {
    check(&ctx, CredSyscall::Setreuid, false, 2)
}

#[tracepoint]
pub fn sensor_setresuid(ctx: TracePointContext) -> u32 {
    check(&ctx, CredSyscall::Setresuid, false, 3)
}

#[tracepoint]
pub fn sensor_setgid(ctx: TracePointContext) -> u32 {
    check(&ctx, CredSyscall::Setgid, true, 1)
}

#[tracepoint]
pub fn sensor_setfsgid(ctx: TracePointContext) -> u32 {
    check(&ctx, CredSyscall::Setfsgid, true, 1)
}

#[tracepoint]
pub fn sensor_setregid(ctx: TracePointContext) -> u32 {
    check(&ctx, CredSyscall::Setregid, true, 2)
}

#[tracepoint]
pub fn sensor_setresgid(ctx: TracePointContext) -> u32 {
    check(&ctx, CredSyscall::Setresgid, true, 3)
}

#[inline(always)]
fn check(ctx: &TracePointContext, syscall: CredSyscall, gid: bool, nids: usize) -> u32 {
    let ids = bpf_get_current_uid_gid();
    let real = if gid { (ids >> 32) as u32 } else { ids as u32 };
    if real == 0 || !current_in_scope() {
        return 0;
    }
    let mut requested = [u32::MAX; 3];
    let mut to_root = false;
    let mut i = 0;
    while i < 3 {
        if i < nids {
            // SAFETY: offsets of this tracepoint's id arguments, checked at start-up.
            let Ok(id) = (unsafe { ctx.read_at::<u64>(ARG0 + 8 * i) }) else {
                return 0;
            };
            requested[i] = id as u32;
            to_root |= id as u32 == 0;
        }
        i += 1;
    }
    if !to_root {
        return 0;
    }
    let kind = if gid {
        raise::SETGID_ROOT
    } else {
        raise::SETUID_ROOT
    };
    raise_decision(Tier::Kill, syscall, kind, requested, nids as u32);
    0
}

/// Report a privilege raise that matched `rule` (both tiers).
#[inline(always)]
pub fn report(
    syscall: CredSyscall,
    kind: u32,
    ids: [u32; 3],
    nids: u32,
    rule: u32,
    verdict: Verdict,
) {
    let Some(mut entry) = EVENTS.reserve::<PrivilegeEvent>(0) else {
        count(Counter::RingbufFullPriv);
        return;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` points to a reserved record of the right size; every field is written.
    unsafe {
        fill_header(
            &mut (*ev).header,
            EventKind::Privilege,
            core::mem::size_of::<PrivilegeEvent>(),
            verdict,
        );
        (*ev).syscall = syscall as u32;
        (*ev).raise = kind;
        (*ev).ids = ids;
        (*ev).nids = nids;
        (*ev).rule = rule;
        (*ev)._pad = 0;
    }
    entry.submit(wakeup_flags());
}

/// Decide a privilege raise of `kind` at `tier` with the active privilege rules, and report a
/// match. Both tiers and every hook share it.
#[inline(always)]
pub fn raise_decision(
    tier: Tier,
    syscall: CredSyscall,
    kind: u32,
    ids: [u32; 3],
    nids: u32,
) -> Verdict {
    let Some(set) = active_rules() else {
        return Verdict::Allowed;
    };
    let matches = |r: &sensor_common::ChmodRule| r.mode_bits & kind != 0;
    let (verdict, rule) = match tier {
        Tier::Kill => kill_tier_decide(set, matches, Counter::PrivKilled, Counter::PrivAudited),
        Tier::Lsm => lsm_tier_decide(
            set,
            matches,
            Counter::LsmPrivDenied,
            Counter::LsmPrivAudited,
        ),
    };
    if rule != NO_RULE {
        report(syscall, kind, ids, nids, rule, verdict);
    }
    verdict
}

/// The privilege rule set the programs read now.
#[inline(always)]
pub fn active_rules() -> Option<&'static ChmodRules> {
    let active = PRIV_ACTIVE.get(0).copied().unwrap_or(0);
    PRIV_RULES.get(active & 1)
}
