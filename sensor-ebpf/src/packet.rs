//! Metadata access through packet sockets (AF_PACKET): their frames go straight to the device
//! and skip the IP output path where the cgroup skb egress program runs, so no destination
//! check can see them. While a metadata rule applies, a task in scope may not have one: the
//! LSM tier refuses the socket (`socket_create` returns EPERM), the kill tier kills its creator
//! at `syscalls:sys_enter_socket` (before the socket exists: the signal lands on the way back
//! to user space, and the process dies before it can send). Audit rules allow and report.
//!
//! The rule that decides (the first enforcing metadata rule, else the first audit one) is set
//! by the daemon in `SENSOR_PACKET_RULE` at load and at every policy reload.

use aya_ebpf::{
    macros::{lsm, map, tracepoint},
    maps::Array,
    programs::{FExitContext, LsmContext, TracePointContext},
};
use sensor_common::{ConnectHook, Counter, DestRule, Verdict};

use crate::{
    connect::{Destination, report},
    kstruct::HookArgs,
    shared::{applying, count, current_in_scope, current_policies, kill_current},
};

#[map]
static SENSOR_PACKET_RULE: Array<DestRule> = Array::with_max_entries(1, 0);

const AF_PACKET: u32 = 17;
const EPERM: i32 = 1;
/// `socket()`'s type argument carries SOCK_NONBLOCK / SOCK_CLOEXEC in its high bits.
const SOCK_TYPE_MASK: u32 = 0xf;

#[lsm(hook = "socket_create")]
pub fn sensor_lsm_socket_create(ctx: LsmContext) -> i32 {
    socket_create_hook(&ctx)
}

/// Override tier: fmod_ret on `security_socket_create` (the hook's arguments, then the previous
/// return value), where BPF LSM is not active.
#[unsafe(no_mangle)]
#[unsafe(link_section = "fexit/security_socket_create")]
pub fn sensor_ovr_socket_create(ctx: *mut core::ffi::c_void) -> i32 {
    socket_create_hook(&FExitContext::new(ctx))
}

#[inline(always)]
fn socket_create_hook(ctx: &impl HookArgs) -> i32 {
    let family: i32 = ctx.arg(0);
    let sock_type: i32 = ctx.arg(1);
    let protocol: i32 = ctx.arg(2);
    let kern: i32 = ctx.arg(3);
    let previous: i32 = ctx.arg(4);
    if family as u32 != AF_PACKET || kern != 0 || !current_in_scope() {
        return previous;
    }
    match decide(sock_type as u32, protocol as u32, false) {
        Verdict::Blocked if previous == 0 => -EPERM,
        _ => previous,
    }
}

/// `sys_enter_socket`: family, type, protocol as 8-byte slots from offset 16 (checked against
/// the format file at start-up).
#[tracepoint]
pub fn sensor_socket(ctx: TracePointContext) -> u32 {
    // SAFETY: offsets of this tracepoint's arguments, checked at start-up.
    let read = |off: usize| unsafe { ctx.read_at::<u64>(off) }.unwrap_or(0) as u32;
    if read(16) != AF_PACKET || !current_in_scope() {
        return 0;
    }
    decide(read(24), read(32), true);
    0
}

/// The packet rule for the current task: `kill` at the kill tier, else the LSM tier's denial.
#[inline(always)]
fn decide(sock_type: u32, protocol: u32, kill: bool) -> Verdict {
    let Some(rule) = SENSOR_PACKET_RULE.get(0) else {
        return Verdict::Allowed;
    };
    if rule.enforce | rule.audit == 0 {
        return Verdict::Allowed;
    }
    let Some((enforcing, policies)) = applying(rule.enforce, rule.audit, current_policies()) else {
        return Verdict::Allowed;
    };
    let verdict = if !enforcing {
        count(Counter::PacketAudited);
        Verdict::Audited
    } else if !kill {
        count(Counter::PacketDenied);
        Verdict::Blocked
    } else {
        kill_current(Counter::PacketKilled)
    };
    report(
        verdict,
        &Destination {
            hook: ConnectHook::Packet,
            sock_family: AF_PACKET,
            sock_type: sock_type & SOCK_TYPE_MASK,
            protocol,
            // No destination: the socket itself is what is refused.
            dst_family: 0,
            dst_port: 0,
            rule: rule.rule,
            policies,
            dst_addr: [0; 16],
        },
    );
    verdict
}
