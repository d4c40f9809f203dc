//! Maps, globals and helpers shared by every program: the event ring buffer with batched
//! wakeups, the kernel counters, the scope walk and the common event header.

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id, bpf_get_current_comm,
        bpf_get_current_pid_tgid, bpf_get_current_uid_gid, bpf_ktime_get_ns, bpf_send_signal,
    },
    macros::map,
    maps::{HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
    programs::TracePointContext,
};
use sensor_common::{
    Action, COMM_BYTES, COUNTER_SLOTS, Counter, DestRule, EventHeader, EventKind, KernelRule,
    KernelRuleSet, MAX_KERNEL_RULES, MAX_SCOPE_DEPTH, NO_RULE, OTHER_CGROUPS, Verdict,
};

const SIGKILL: u32 = 9;

/// Offsets of the first four argument slots of a `syscalls:sys_enter_*` record (`struct
/// syscall_trace_enter`: 8 bytes of common fields, `int __syscall_nr`, then 8 bytes per
/// argument from offset 16). The daemon checks each program's fields against the tracepoint's
/// `format` file before it attaches.
pub const ARG0: usize = 16;
pub const ARG1: usize = 24;
pub const ARG2: usize = 32;
pub const ARG3: usize = 40;

/// Read the 8-byte argument slot at `offset` of a syscall tracepoint record.
#[inline(always)]
pub fn arg(ctx: &TracePointContext, offset: usize) -> Result<u64, i32> {
    // SAFETY: offsets of this tracepoint's arguments, checked at start-up.
    unsafe { ctx.read_at::<u64>(offset) }.map_err(|e| e as i32)
}

/// Ring buffer size: 4 MiB (≈37k connect events) before reserves fail and are counted.
const EVENTS_BYTES: u32 = 4 << 20;

#[map]
pub static SENSOR_EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);

/// The kill tier's set-id reverts: a copy of each killed set-id chmod or creation, read by the
/// daemon's revert thread ahead of the event pipeline (256 KiB, ≈700 records).
#[map]
pub static SENSOR_REVERTS: RingBuf = RingBuf::with_byte_size(256 << 10, 0);

#[map]
pub static SENSOR_DEST_V4: LpmTrie<[u8; 4], DestRule> =
    LpmTrie::with_max_entries(1024, aya_ebpf::bindings::BPF_F_NO_PREALLOC);

#[map]
pub static SENSOR_DEST_V6: LpmTrie<[u8; 16], DestRule> =
    LpmTrie::with_max_entries(1024, aya_ebpf::bindings::BPF_F_NO_PREALLOC);

#[map]
static SENSOR_SCOPE: HashMap<u64, u32> = HashMap::with_max_entries(256, 0);

/// Policy membership per pod cgroup, and of every other cgroup ([`OTHER_CGROUPS`]).
#[map]
pub static SENSOR_MEMBERS: HashMap<u64, u32> = HashMap::with_max_entries(16384, 0);

#[map]
static SENSOR_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

/// The wakeup threshold (set at load): a submit wakes the reader when the unconsumed bytes in
/// the ring cross a multiple of it ([`wakeup_flags`]); 0 wakes on every record.
#[unsafe(no_mangle)]
static SENSOR_WAKEUP_BYTES: u64 = 0;

#[inline(always)]
pub fn count(counter: Counter) {
    if let Some(slot) = SENSOR_COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU while the program runs.
        unsafe { *slot += 1 };
    }
}

/// Submit flags for a record of `T` just reserved: wake the reader when the unconsumed data
/// crosses a multiple of the threshold with this record, else not (the reader's timer picks
/// the rest up). Waking on every record while the data stays above the threshold (the reader
/// behind) cost each submit an inter-processor interrupt: a trapped MSR write on a VM, about
/// 1.5 µs per event.
#[inline(always)]
pub fn wakeup_flags<T>() -> u64 {
    // SAFETY: a read-only global set by the loader; volatile so it is not constant-folded.
    let threshold = unsafe { core::ptr::read_volatile(&SENSOR_WAKEUP_BYTES) };
    if threshold == 0 {
        return BPF_RB_FORCE_WAKEUP as u64;
    }
    let avail = SENSOR_EVENTS.query(BPF_RB_AVAIL_DATA as u64);
    // The record and its 8-byte ring header, rounded up to 8 as the ring does.
    let record = ((core::mem::size_of::<T>() as u64 + 8) + 7) & !7;
    let before = avail.saturating_sub(record);
    if avail / threshold != before / threshold {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

/// The scope walk's result per cgroup: 1 inside, 0 outside.
#[map]
static SENSOR_SCOPE_CACHE: LruHashMap<u64, u8> = LruHashMap::with_max_entries(16384, 0);

/// Whether the current task sits at or below one of the scope roots (cgroup v2). The walk's
/// result is cached per cgroup: a cgroup's ancestors never change, nor do the scope roots of a
/// loaded object (a new scope is a new daemon and new maps), so a task outside the scope costs
/// one helper call and one lookup, not a walk.
#[inline(always)]
pub fn current_in_scope() -> bool {
    // SAFETY: helper call without arguments.
    let id = unsafe { bpf_get_current_cgroup_id() };
    // SAFETY: the value is copied out at once.
    if let Some(inside) = unsafe { SENSOR_SCOPE_CACHE.get(&id) } {
        return *inside == 1;
    }
    let inside = current_below(&SENSOR_SCOPE);
    let _ = SENSOR_SCOPE_CACHE.insert(&id, &u8::from(inside), 0);
    inside
}

/// The policies (bits) the current task answers to: those of the first pod cgroup among its
/// ancestors, else those of every other cgroup. Before the daemon has written them, all
/// (fails closed).
#[inline(always)]
pub fn current_policies() -> u32 {
    // SAFETY: helper call without pointer arguments.
    policies_of(|level| unsafe { bpf_get_current_ancestor_cgroup_id(level) })
}

/// As [`current_policies`], for the cgroup whose ancestors (root first) `ancestor` gives.
#[inline(always)]
pub fn policies_of(ancestor: impl Fn(i32) -> u64) -> u32 {
    let mut level = 0;
    while level < MAX_SCOPE_DEPTH {
        let id = ancestor(level as i32);
        if id == 0 {
            break;
        }
        // SAFETY: the value is copied out at once.
        if let Some(policies) = unsafe { SENSOR_MEMBERS.get(id) } {
            return *policies;
        }
        level += 1;
    }
    // SAFETY: as above.
    unsafe { SENSOR_MEMBERS.get(OTHER_CGROUPS) }
        .copied()
        .unwrap_or(u32::MAX)
}

/// What the policies that apply to the caller make of a match: the enforcing and the auditing
/// policies (bits) of the matched rules against those the caller answers to. `None`: none of
/// them applies (the caller is exempted, counted).
#[inline(always)]
pub fn applying(enforce: u32, audit: u32, members: u32) -> Option<(bool, u32)> {
    let (enforce, audit) = (enforce & members, audit & members);
    if enforce | audit == 0 {
        count(Counter::Exempted);
        return None;
    }
    Some((enforce != 0, enforce | audit))
}

/// The rule that decided, with the policies (bits) whose matching rules applied.
#[derive(Clone, Copy)]
pub struct RuleRef {
    pub rule: u32,
    pub policies: u32,
}

impl RuleRef {
    pub const NONE: Self = Self {
        rule: NO_RULE,
        policies: 0,
    };

    #[inline(always)]
    pub fn is_none(&self) -> bool {
        self.rule == NO_RULE
    }
}

/// Whether the cgroup `id` is one of the scope roots.
#[inline(always)]
pub fn scope_root(id: u64) -> bool {
    // SAFETY: the value is not kept.
    unsafe { SENSOR_SCOPE.get(id) }.is_some()
}

/// Walk the current task's cgroup ancestors (root first, bounded) against `set`.
#[inline(always)]
fn current_below(set: &HashMap<u64, u32>) -> bool {
    let mut level = 0;
    while level < MAX_SCOPE_DEPTH {
        // SAFETY: helper call without pointer arguments.
        let id = unsafe { bpf_get_current_ancestor_cgroup_id(level as i32) };
        if id == 0 {
            return false;
        }
        // SAFETY: the value is read immediately, not kept across calls.
        if unsafe { set.get(id) }.is_some() {
            return true;
        }
        level += 1;
    }
    false
}

/// Fill the common header for the current task.
#[inline(always)]
pub fn fill_header(header: &mut EventHeader, kind: EventKind, size: usize, verdict: Verdict) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let uid_gid = bpf_get_current_uid_gid();
    header.kind = kind as u32;
    header.size = size as u32;
    // SAFETY: helper calls without pointer arguments.
    header.ktime_ns = unsafe { bpf_ktime_get_ns() };
    header.cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    header.tid = pid_tgid as u32;
    header.pid = (pid_tgid >> 32) as u32;
    header.uid = uid_gid as u32;
    header.gid = (uid_gid >> 32) as u32;
    header.verdict = verdict as u32;
    header._pad = 0;
    header.comm = bpf_get_current_comm().unwrap_or([0u8; COMM_BYTES]);
}

/// Whether any rule of `set` matches, before anything about the caller is known.
#[inline(always)]
fn any_matches(set: &KernelRuleSet, matches: &impl Fn(&KernelRule) -> bool) -> bool {
    let mut i = 0;
    while i < MAX_KERNEL_RULES {
        if i as u32 >= set.count {
            break;
        }
        if matches(&set.rules[i]) {
            return true;
        }
        i += 1;
    }
    false
}

/// Of the rules that match and belong to a policy in `members`: the first enforcing and the
/// first audit rule (in set order), each [`NO_RULE`] when none, and the policies of all of
/// them. Anything but an explicit audit action enforces: a corrupt entry fails closed. (The
/// match is evaluated again rather than remembered from [`any_matches`]: a bit set per rule
/// would give the verifier a distinct state per combination.)
#[inline(always)]
fn first_applying(
    set: &KernelRuleSet,
    matches: &impl Fn(&KernelRule) -> bool,
    members: u32,
) -> (u32, u32, u32) {
    let mut enforce = NO_RULE;
    let mut audit = NO_RULE;
    let mut policies = 0;
    let mut i = 0;
    while i < MAX_KERNEL_RULES {
        if i as u32 >= set.count {
            break;
        }
        let r = &set.rules[i];
        if r.policy & members != 0 && matches(r) {
            policies |= r.policy;
            if r.action != Action::Audit as u32 {
                if enforce == NO_RULE {
                    enforce = r.rule;
                }
            } else if audit == NO_RULE {
                audit = r.rule;
            }
        }
        i += 1;
    }
    (enforce, audit, policies)
}

/// How an enforcing match is carried out.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// BPF LSM: the hook denies the call (EPERM).
    Lsm,
    /// Syscall tracepoints: the caller is killed (SIGKILL).
    Kill,
}

/// Kill tier: evaluate a rule set (in file order) for the current task. If any matching rule
/// enforces, the caller is killed (SIGKILL) and the first such rule is reported; otherwise the
/// first matching audit rule. An exempted task (a pod outside the policy's scope) is let through
/// on a match.
#[inline(always)]
pub fn kill_tier_decide(
    set: &KernelRuleSet,
    matches: impl Fn(&KernelRule) -> bool,
    killed: Counter,
    audited: Counter,
) -> (Verdict, RuleRef) {
    decide_with(set, matches, audited, || kill_current(killed))
}

/// SIGKILL the current process: `Killed` (counted as `killed`), or `Audited` when the kernel
/// refused the signal (counted as `KillFailed`).
#[inline(always)]
pub fn kill_current(killed: Counter) -> Verdict {
    // SAFETY: helper call without pointer arguments; signals the current process.
    if unsafe { bpf_send_signal(SIGKILL) } == 0 {
        count(killed);
        Verdict::Killed
    } else {
        count(Counter::KillFailed);
        Verdict::Audited
    }
}

/// LSM tier: as [`kill_tier_decide`], but an enforcing match denies the call (`Blocked`, the
/// hook returns -EPERM) instead of killing the caller.
#[inline(always)]
pub fn lsm_tier_decide(
    set: &KernelRuleSet,
    matches: impl Fn(&KernelRule) -> bool,
    denied: Counter,
    audited: Counter,
) -> (Verdict, RuleRef) {
    decide_with(set, matches, audited, || {
        count(denied);
        Verdict::Blocked
    })
}

/// The common part of both tiers: `enforce` carries out an enforcing match. The caller's
/// policies are looked up only when a rule matches.
#[inline(always)]
fn decide_with(
    set: &KernelRuleSet,
    matches: impl Fn(&KernelRule) -> bool,
    audited: Counter,
    enforce_now: impl FnOnce() -> Verdict,
) -> (Verdict, RuleRef) {
    if !any_matches(set, &matches) {
        return (Verdict::Allowed, RuleRef::NONE);
    }
    let (enforce, audit, policies) = first_applying(set, &matches, current_policies());
    if policies == 0 {
        count(Counter::Exempted);
        return (Verdict::Allowed, RuleRef::NONE);
    }
    if enforce != NO_RULE {
        return (
            enforce_now(),
            RuleRef {
                rule: enforce,
                policies,
            },
        );
    }
    count(audited);
    (
        Verdict::Audited,
        RuleRef {
            rule: audit,
            policies,
        },
    )
}

/// (path_status, length) of a string read into an event's path buffer: `complete` when it fit,
/// truncated when it filled the buffer, a counted fault when the read failed.
#[inline(always)]
pub fn path_read_status<E>(read: Result<&[u8], E>, complete: u32) -> (u32, u32) {
    match read {
        Ok(bytes) if bytes.len() >= sensor_common::PATH_BYTES - 1 => {
            (sensor_common::path_status::TRUNCATED, bytes.len() as u32)
        }
        Ok(bytes) => (complete, bytes.len() as u32),
        Err(_) => {
            count(Counter::PathReadFailed);
            (sensor_common::path_status::FAULT, 0)
        }
    }
}
