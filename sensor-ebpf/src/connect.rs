//! Metadata-endpoint access: cgroup sock_addr hooks.
//!
//! Kernel hooks: `BPF_CGROUP_INET4_CONNECT`, `BPF_CGROUP_INET6_CONNECT`,
//! `BPF_CGROUP_UDP4_SENDMSG`, `BPF_CGROUP_UDP6_SENDMSG`, run from `__cgroup_bpf_run_filter_sock_addr`
//! with a `struct bpf_sock_addr` context for every task below the cgroup the program is attached
//! to. Returning 0 rejects the call: connect() and sendmsg() fail with EPERM. The connect hooks
//! also run for io_uring connect and TCP Fast Open (both go through `pre_connect`).

use aya_ebpf::{
    bindings::bpf_sock_addr, macros::cgroup_sock_addr, maps::lpm_trie::Key,
    programs::SockAddrContext,
};
use sensor_common::{ConnectEvent, ConnectHook, Counter, DestRule, EventKind, Verdict};

use crate::shared::{
    SENSOR_DEST_V4, SENSOR_DEST_V6, SENSOR_EVENTS, applying, count, current_policies, fill_header,
    wakeup_flags,
};

const ALLOW: i32 = 1;
const DENY: i32 = 0;
const AF_INET: u32 = 2;
const AF_INET6: u32 = 10;

#[cgroup_sock_addr(connect4)]
pub fn sensor_connect4(ctx: SockAddrContext) -> i32 {
    check_v4(&ctx, ConnectHook::Connect4)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn sensor_sendmsg4(ctx: SockAddrContext) -> i32 {
    check_v4(&ctx, ConnectHook::Sendmsg4)
}

#[cgroup_sock_addr(connect6)]
pub fn sensor_connect6(ctx: SockAddrContext) -> i32 {
    check_v6(&ctx, ConnectHook::Connect6)
}

#[cgroup_sock_addr(sendmsg6)]
pub fn sensor_sendmsg6(ctx: SockAddrContext) -> i32 {
    check_v6(&ctx, ConnectHook::Sendmsg6)
}

#[inline(always)]
fn check_v4(ctx: &SockAddrContext, hook: ConnectHook) -> i32 {
    let sa = ctx.sock_addr;
    // SAFETY: the context pointer is valid for the program's run; `user_ip4` may be read in
    // the v4 hooks (4-byte load).
    let ip4 = unsafe { (*sa).user_ip4 };
    let mut addr = [0u8; 16];
    let v4 = ip4.to_ne_bytes();
    addr[0] = v4[0];
    addr[1] = v4[1];
    addr[2] = v4[2];
    addr[3] = v4[3];
    decide(sa, hook, AF_INET, addr)
}

#[inline(always)]
fn check_v6(ctx: &SockAddrContext, hook: ConnectHook) -> i32 {
    let sa = ctx.sock_addr;
    let mut addr = [0u8; 16];
    let mut i = 0;
    while i < 4 {
        // SAFETY: `user_ip6` may be read in the v6 hooks with 4-byte loads.
        let word = unsafe { (*sa).user_ip6[i] }.to_ne_bytes();
        addr[i * 4] = word[0];
        addr[i * 4 + 1] = word[1];
        addr[i * 4 + 2] = word[2];
        addr[i * 4 + 3] = word[3];
        i += 1;
    }
    // An IPv4-mapped destination (::ffff:a.b.c.d) is matched as its IPv4 address.
    let mapped = addr[..10].iter().all(|b| *b == 0) && addr[10] == 0xff && addr[11] == 0xff;
    if mapped {
        let mut v4 = [0u8; 16];
        v4[0] = addr[12];
        v4[1] = addr[13];
        v4[2] = addr[14];
        v4[3] = addr[15];
        decide(sa, hook, AF_INET, v4)
    } else {
        decide(sa, hook, AF_INET6, addr)
    }
}

#[inline(always)]
pub fn lookup(family: u32, addr: &[u8; 16]) -> Option<&'static DestRule> {
    // The entry is read in place (it is too large to copy onto the BPF stack).
    if family == AF_INET {
        let key = Key::new(32, [addr[0], addr[1], addr[2], addr[3]]);
        SENSOR_DEST_V4.get(key)
    } else {
        SENSOR_DEST_V6.get(Key::new(128, *addr))
    }
}

/// The policies (enforcing, auditing) whose rules in this entry cover `port`; `None` when no
/// policy's does (not this entry's business).
#[inline(always)]
pub fn covering(rule: &DestRule, port: u16) -> Option<(u32, u32)> {
    let (enforce, audit) = rule.policies_at(port);
    (enforce | audit != 0).then_some((enforce, audit))
}

/// What the covering policies that apply to the caller (`members`) make of the call, counted:
/// `Blocked` when one of them enforces, else `Audited`, with the policies that applied. `None`:
/// none applies (exempted, counted).
#[inline(always)]
pub fn verdict_for((enforce, audit): (u32, u32), members: u32) -> Option<(Verdict, u32)> {
    let (enforcing, policies) = applying(enforce, audit, members)?;
    if enforcing {
        count(Counter::Blocked);
        Some((Verdict::Blocked, policies))
    } else {
        count(Counter::Audited);
        Some((Verdict::Audited, policies))
    }
}

#[inline(always)]
fn decide(sa: *mut bpf_sock_addr, hook: ConnectHook, dst_family: u32, dst_addr: [u8; 16]) -> i32 {
    let Some(rule) = lookup(dst_family, &dst_addr) else {
        return ALLOW;
    };
    // SAFETY: the context pointer is valid for the program's run; `user_port` is a 4-byte
    // load holding the port in network order in its low 16 bits.
    let dst_port = u16::from_be(unsafe { (*sa).user_port } as u16);
    let Some(cover) = covering(rule, dst_port) else {
        return ALLOW;
    };
    // This hook runs for the call: the late-socket tracepoints have nothing to decide.
    crate::late_socket::seen_by_hook();
    // Membership is looked up on a match only.
    let Some((verdict, policies)) = verdict_for(cover, current_policies()) else {
        return ALLOW;
    };
    let ret = if verdict == Verdict::Blocked {
        DENY
    } else {
        ALLOW
    };
    // The verdict is decided; reporting it must not change it.
    // SAFETY: the context pointer is valid for the program's run.
    let (family, sock_type, protocol) = unsafe { ((*sa).family, (*sa).type_, (*sa).protocol) };
    report(
        verdict,
        &Destination {
            hook,
            sock_family: family,
            sock_type,
            protocol,
            dst_family,
            dst_port,
            rule: rule.rule,
            policies,
            dst_addr,
        },
    );
    ret
}

/// What a connect event says about the call.
pub struct Destination {
    pub hook: ConnectHook,
    pub sock_family: u32,
    pub sock_type: u32,
    pub protocol: u32,
    pub dst_family: u32,
    pub dst_port: u16,
    pub rule: u32,
    /// The policies (bits) whose rules matched and apply to the caller.
    pub policies: u32,
    pub dst_addr: [u8; 16],
}

/// Submit a connect event (a full ring buffer is counted; the verdict stands either way).
#[inline(always)]
pub fn report(verdict: Verdict, d: &Destination) {
    report_with(d, |header| {
        fill_header(
            header,
            EventKind::Connect,
            core::mem::size_of::<ConnectEvent>(),
            verdict,
        );
    });
}

/// As [`report`], with the header written by `header`.
#[inline(always)]
pub fn report_with(d: &Destination, header: impl FnOnce(&mut sensor_common::EventHeader)) {
    match SENSOR_EVENTS.reserve::<ConnectEvent>(0) {
        Some(mut entry) => {
            let ev = entry.as_mut_ptr();
            // SAFETY: `ev` points to a reserved record of the right size; every field is written.
            unsafe {
                header(&mut (*ev).header);
                (*ev).hook = d.hook as u32;
                (*ev).sock_family = d.sock_family;
                (*ev).sock_type = d.sock_type;
                (*ev).protocol = d.protocol;
                (*ev).dst_family = d.dst_family;
                (*ev).dst_port = u32::from(d.dst_port);
                (*ev).rule = d.rule;
                (*ev).policies = d.policies;
                (*ev).dst_addr = d.dst_addr;
            }
            entry.submit(wakeup_flags::<ConnectEvent>());
        }
        None => count(Counter::RingbufFullConnect),
    }
}
