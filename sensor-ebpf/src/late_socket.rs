//! Metadata access through a socket the scope's cgroup hooks never see: one created before its
//! process moved into a scoped cgroup, or passed in from outside (the cgroup sock_addr hooks
//! run for the *socket's* cgroup, fixed when it was created).
//!
//! Kernel hooks: `syscalls:sys_enter_connect` / `sys_exit_connect` and `sys_enter_sendto` /
//! `sys_exit_sendto` (the address as a user pointer at offsets 24 and 48). On entry, a task in
//! scope calling a listed destination is noted as pending; the sock_addr and egress programs
//! clear the note when they run for the call (the socket is in scope: they decide). A note
//! still there on exit means no scoped hook saw the call: the kill tier applies (SIGKILL in
//! enforce, verdict `killed`; `audited` in audit) if the call took effect (a failed call did
//! nothing). The call itself has happened (a TCP handshake, or a datagram sent); the caller
//! dies before it can use the connection. A `sendto` with an address on a connected TCP
//! socket (which ignores it) is treated as a call to that address.
//! Not covered: sendmsg/sendmmsg (the address inside a msghdr) and io_uring on such sockets.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user_buf},
    macros::{map, tracepoint},
    maps::LruHashMap,
    programs::TracePointContext,
};
use sensor_common::{Action, ConnectHook, Counter, Verdict};

use crate::{
    connect::{Destination, lookup, port_listed, report},
    shared::{count, current_exempt, current_in_scope, kill_current},
};

const AF_INET: u32 = 2;
const AF_INET6: u32 = 10;
/// `sys_enter_connect`: `struct sockaddr *uservaddr`.
const CONNECT_ADDR: usize = 24;
/// `sys_enter_sendto`: `struct sockaddr *addr`.
const SENDTO_ADDR: usize = 48;
/// `sys_exit_*`: `long ret`.
const RET: usize = 16;
const EINPROGRESS: i64 = 115;

/// A call on its way, by thread id, waiting to be seen by a scoped cgroup hook.
#[derive(Clone, Copy)]
pub struct Pending {
    action: u32,
    rule: u32,
    dst_family: u32,
    dst_port: u16,
    dst_addr: [u8; 16],
}

#[map]
static SENSOR_PENDING: LruHashMap<u64, Pending> = LruHashMap::with_max_entries(4096, 0);

/// A scoped cgroup hook ran for the current task's call: it decides, not the exit tracepoint.
#[inline(always)]
pub fn seen_by_hook() {
    let _ = SENSOR_PENDING.remove(&bpf_get_current_pid_tgid());
}

#[tracepoint]
pub fn sensor_conn_enter(ctx: TracePointContext) -> u32 {
    enter(&ctx, CONNECT_ADDR)
}

#[tracepoint]
pub fn sensor_sendto_enter(ctx: TracePointContext) -> u32 {
    enter(&ctx, SENDTO_ADDR)
}

#[tracepoint]
pub fn sensor_conn_exit(ctx: TracePointContext) -> u32 {
    // A connect that got somewhere: done, or under way on a non-blocking socket.
    exit(&ctx, |ret| ret == 0 || ret == -EINPROGRESS)
}

#[tracepoint]
pub fn sensor_sendto_exit(ctx: TracePointContext) -> u32 {
    exit(&ctx, |ret| ret >= 0)
}

#[inline(always)]
fn enter(ctx: &TracePointContext, addr_offset: usize) -> u32 {
    if !current_in_scope() {
        return 0;
    }
    // SAFETY: the offset of the address argument, checked against the format file at start-up.
    let Ok(uaddr) = (unsafe { ctx.read_at::<u64>(addr_offset) }) else {
        return 0;
    };
    if uaddr == 0 {
        return 0;
    }
    // The family first, then exactly the bytes of that family's address: a longer read could
    // fault on a sockaddr_in placed at the end of a mapped page, and let the call through.
    let mut sa = [0u8; 24];
    // SAFETY: a user pointer read with the fault-tolerant helper into a local buffer.
    if unsafe { bpf_probe_read_user_buf(uaddr as *const u8, &mut sa[..8]) }.is_err() {
        return 0;
    }
    let family = u32::from(u16::from_ne_bytes([sa[0], sa[1]]));
    // SAFETY: as above; sockaddr_in6 is at least 24 bytes (the kernel requires them).
    if family == AF_INET6
        && unsafe { bpf_probe_read_user_buf(uaddr as *const u8, &mut sa) }.is_err()
    {
        return 0;
    }
    let port = u16::from_be_bytes([sa[2], sa[3]]);
    let mut addr = [0u8; 16];
    let dst_family = if family == AF_INET {
        addr[..4].copy_from_slice(&sa[4..8]);
        AF_INET
    } else if family == AF_INET6 {
        addr.copy_from_slice(&sa[8..24]);
        let mapped = addr[..10].iter().all(|b| *b == 0) && addr[10] == 0xff && addr[11] == 0xff;
        if mapped {
            let v4 = [addr[12], addr[13], addr[14], addr[15]];
            addr = [0u8; 16];
            addr[..4].copy_from_slice(&v4);
            AF_INET
        } else {
            AF_INET6
        }
    } else {
        return 0;
    };
    let Some(rule) = lookup(dst_family, &addr) else {
        return 0;
    };
    if !port_listed(&rule, port) {
        return 0;
    }
    let pending = Pending {
        action: rule.action,
        rule: rule.rule,
        dst_family,
        dst_port: port,
        dst_addr: addr,
    };
    let _ = SENSOR_PENDING.insert(&bpf_get_current_pid_tgid(), &pending, 0);
    0
}

#[inline(always)]
fn exit(ctx: &TracePointContext, took_effect: impl Fn(i64) -> bool) -> u32 {
    let tid = bpf_get_current_pid_tgid();
    // SAFETY: the value is copied out at once.
    let Some(p) = (unsafe { SENSOR_PENDING.get(&tid) }).copied() else {
        return 0;
    };
    let _ = SENSOR_PENDING.remove(&tid);
    // A call that failed before it reached the network (a bad fd, a family mismatch, ...)
    // did nothing to stop.
    // SAFETY: `long ret` of the exit record, checked against the format file at start-up.
    let Ok(ret) = (unsafe { ctx.read_at::<i64>(RET) }) else {
        return 0;
    };
    if !took_effect(ret) {
        return 0;
    }
    if current_exempt() {
        count(Counter::Exempted);
        return 0;
    }
    let verdict = if p.action == Action::Audit as u32 {
        count(Counter::LateSocketAudited);
        Verdict::Audited
    } else {
        kill_current(Counter::LateSocketKilled)
    };
    report(
        verdict,
        &Destination {
            hook: ConnectHook::Syscall,
            sock_family: 0,
            sock_type: 0,
            protocol: 0,
            dst_family: p.dst_family,
            dst_port: p.dst_port,
            rule: p.rule,
            dst_addr: p.dst_addr,
        },
    );
    0
}
