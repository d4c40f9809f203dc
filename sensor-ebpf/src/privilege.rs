//! What every privilege protection (`setuid-root`, `setgid-root`, `capset`, `setid-exec`,
//! `file-caps`) shares: the privilege rules (`mode_bits` = [`Raise`] bits, double-buffered
//! like the chmod rules), the decision at either tier, and the privilege event.

use aya_ebpf::{macros::map, maps::Array};
use sensor_common::{
    Counter, EventKind, KernelRule, KernelRuleSet, PrivilegeCall, PrivilegeEvent, Raise, Verdict,
};

use crate::shared::{
    RuleRef, SENSOR_EVENTS, Tier, count, fill_header, kill_tier_decide, lsm_tier_decide,
    wakeup_flags,
};

#[map]
static SENSOR_PRIV_RULES: Array<KernelRuleSet> = Array::with_max_entries(2, 0);

#[map]
static SENSOR_PRIV_ACTIVE: Array<u32> = Array::with_max_entries(1, 0);

/// Decide a privilege raise of `kind` at `tier` with the active privilege rules, and report a
/// match. Every privilege hook of both tiers goes through here.
#[inline(always)]
pub fn raise_decision(
    tier: Tier,
    call: PrivilegeCall,
    kind: Raise,
    ids: [u32; 3],
    nids: u32,
) -> Verdict {
    let Some(set) = active_rules() else {
        return Verdict::Allowed;
    };
    let matches = |r: &KernelRule| r.mode_bits & kind as u32 != 0;
    let (verdict, rule) = match tier {
        Tier::Kill => kill_tier_decide(set, matches, Counter::PrivKilled, Counter::PrivAudited),
        Tier::Lsm => lsm_tier_decide(
            set,
            matches,
            Counter::LsmPrivDenied,
            Counter::LsmPrivAudited,
        ),
    };
    if !rule.is_none() {
        report(call, kind, ids, nids, rule, verdict);
    }
    verdict
}

/// Submit a privilege event (a full ring buffer is counted; the verdict stands either way).
#[inline(always)]
fn report(
    call: PrivilegeCall,
    kind: Raise,
    ids: [u32; 3],
    nids: u32,
    rule: RuleRef,
    verdict: Verdict,
) {
    let Some(mut entry) = SENSOR_EVENTS.reserve::<PrivilegeEvent>(0) else {
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
        (*ev).syscall = call as u32;
        (*ev).raise = kind as u32;
        (*ev).ids = ids;
        (*ev).nids = nids;
        (*ev).rule = rule.rule;
        (*ev).policies = rule.policies;
    }
    entry.submit(wakeup_flags::<PrivilegeEvent>());
}

/// The privilege rule set the programs read now.
#[inline(always)]
fn active_rules() -> Option<&'static KernelRuleSet> {
    let active = SENSOR_PRIV_ACTIVE.get(0).copied().unwrap_or(0);
    SENSOR_PRIV_RULES.get(active & 1)
}
