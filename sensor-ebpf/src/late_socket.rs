//! Metadata access through a socket the scope's cgroup hooks never see: one created before its
//! process moved into a scoped cgroup, or passed in from outside (the cgroup sock_addr hooks
//! run for the *socket's* cgroup, fixed when it was created).
//!
//! LSM and override tiers: `socket_connect` and `socket_sendmsg` (BPF LSM, or fmod_ret on
//! `security_socket_connect` / `security_socket_sendmsg`), before the call does anything. A task
//! in scope calling a listed destination on a socket whose cgroup is outside the scope is
//! denied with EPERM (`blocked`; `audited` in audit); a socket in scope is left to the cgroup
//! hooks. `socket_sendmsg` covers sendto, sendmsg, sendmmsg and io_uring sends alike; the
//! address is the kernel's copy (no user memory read).
//!
//! Kill tier: `syscalls:sys_enter_connect` / `sys_exit_connect` and `sys_enter_sendto` /
//! `sys_exit_sendto` (the address as a user pointer at offsets 24 and 48). On entry, a task in
//! scope calling a listed destination is noted as pending; the sock_addr and egress programs
//! clear the note when they run for the call (the socket is in scope: they decide). A note
//! still there on exit means no scoped hook saw the call: the kill tier applies (SIGKILL in
//! enforce, verdict `killed`; `audited` in audit) if the call took effect (a failed call did
//! nothing). The call itself has happened (a TCP handshake, or a datagram sent); the caller
//! dies before it can use the connection. A `sendto` with an address on a connected TCP
//! socket (which ignores it) is treated as a call to that address.
//! Not covered by the kill tier: sendmsg/sendmmsg (the address inside a msghdr) and io_uring
//! on such sockets.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel_buf, bpf_probe_read_user_buf},
    macros::{lsm, map, tracepoint},
    maps::LruHashMap,
    programs::{FExitContext, LsmContext, TracePointContext},
};
use sensor_common::{ConnectHook, Counter, KernelOffsets, MAX_SCOPE_DEPTH, Verdict};

use crate::{
    connect::{Destination, covering, lookup, report, verdict_for},
    kstruct::{HookArgs, lsm_ret, offsets, read},
    shared::{applying, count, current_in_scope, current_policies, kill_current, scope_root},
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
    /// The policies whose rules cover the destination: enforcing, auditing.
    enforce: u32,
    audit: u32,
    rule: u32,
    dst_family: u32,
    dst_port: u16,
    dst_addr: [u8; 16],
}

#[map]
static SENSOR_PENDING: LruHashMap<u64, Pending> = LruHashMap::with_max_entries(4096, 0);

#[lsm(hook = "socket_connect")]
pub fn sensor_lsm_socket_connect(ctx: LsmContext) -> i32 {
    socket_connect_hook(&ctx)
}

/// The override tier's twin: fmod_ret on `security_socket_connect` (loaded by the daemon).
#[unsafe(no_mangle)]
#[unsafe(link_section = "fexit/security_socket_connect")]
pub fn sensor_ovr_socket_connect(ctx: *mut core::ffi::c_void) -> i32 {
    socket_connect_hook(&FExitContext::new(ctx))
}

#[lsm(hook = "socket_sendmsg")]
pub fn sensor_lsm_socket_sendmsg(ctx: LsmContext) -> i32 {
    socket_sendmsg_hook(&ctx)
}

/// The override tier's twin: fmod_ret on `security_socket_sendmsg` (loaded by the daemon).
#[unsafe(no_mangle)]
#[unsafe(link_section = "fexit/security_socket_sendmsg")]
pub fn sensor_ovr_socket_sendmsg(ctx: *mut core::ffi::c_void) -> i32 {
    socket_sendmsg_hook(&FExitContext::new(ctx))
}

/// `security_socket_connect(struct socket *sock, struct sockaddr *address, int addrlen)`.
#[inline(always)]
fn socket_connect_hook(ctx: &impl HookArgs) -> i32 {
    let previous: i32 = ctx.arg(3);
    if previous != 0 || !current_in_scope() {
        return previous;
    }
    let sock: *const u8 = ctx.arg(0);
    let address: *const u8 = ctx.arg(1);
    let len: i32 = ctx.arg(2);
    late_call(sock, address, len, ConnectHook::SocketConnect, previous)
}

/// `security_socket_sendmsg(struct socket *sock, struct msghdr *msg, int size)`: only a call
/// with an address (a send on a connected socket goes where its connect went, checked then).
#[inline(always)]
fn socket_sendmsg_hook(ctx: &impl HookArgs) -> i32 {
    let previous: i32 = ctx.arg(3);
    if previous != 0 || !current_in_scope() {
        return previous;
    }
    let Some(off) = offsets() else {
        return previous;
    };
    let sock: *const u8 = ctx.arg(0);
    let msg: *const u8 = ctx.arg(1);
    let Some(address) = read::<*const u8>(msg, off.msghdr_name) else {
        return previous;
    };
    let len = read::<i32>(msg, off.msghdr_namelen).unwrap_or(0);
    late_call(sock, address, len, ConnectHook::SocketSendmsg, previous)
}

/// Decide a call to `address` (kernel memory, `len` bytes) on `sock` by a task in scope.
#[inline(always)]
fn late_call(
    sock: *const u8,
    address: *const u8,
    len: i32,
    hook: ConnectHook,
    previous: i32,
) -> i32 {
    let Some(off) = offsets() else {
        return previous;
    };
    // The family first, then that family's address; shorter than the family needs, the call
    // fails in the protocol (EINVAL) before it sends anything.
    let mut sa = [0u8; 24];
    if address.is_null() || len < 16 {
        return previous;
    }
    // SAFETY: a kernel pointer read with the fault-tolerant helper into a local buffer.
    if unsafe { bpf_probe_read_kernel_buf(address, &mut sa[..8]) }.is_err() {
        return previous;
    }
    let family = u32::from(u16::from_ne_bytes([sa[0], sa[1]]));
    if family == AF_INET6
        // SAFETY: as above; sockaddr_in6 is 24 bytes and more (checked against `len`).
        && (len < 24 || unsafe { bpf_probe_read_kernel_buf(address, &mut sa) }.is_err())
    {
        return previous;
    }
    let Some((dst_family, addr)) = destination(family, &sa) else {
        return previous;
    };
    let port = u16::from_be_bytes([sa[2], sa[3]]);
    let Some(rule) = lookup(dst_family, &addr) else {
        return previous;
    };
    let Some(cover) = covering(rule, port) else {
        return previous;
    };
    let sk: *const u8 = read(sock, off.socket_sk).unwrap_or(core::ptr::null());
    // A socket in scope is the cgroup hooks' call (they run later in the same call); one
    // whose cgroup cannot be read is treated as outside (checked here).
    if socket_in_scope(sk, off) {
        return previous;
    }
    let Some((verdict, policies)) = verdict_for(cover, current_policies()) else {
        return previous;
    };
    report(
        verdict,
        &Destination {
            hook,
            sock_family: u32::from(read::<u16>(sk, off.sock_family).unwrap_or(0)),
            sock_type: u32::from(read::<u16>(sock, off.socket_type).unwrap_or(0)),
            protocol: u32::from(read::<u16>(sk, off.sock_protocol).unwrap_or(0)),
            dst_family,
            dst_port: port,
            rule: rule.rule,
            policies,
            dst_addr: addr,
        },
    );
    lsm_ret(verdict, previous)
}

/// Whether the socket's cgroup (`sk->sk_cgrp_data.cgroup`, the creator's cgroup v2) is at or
/// below a scope root: its ancestors, root first, as the scope walk of a task.
#[inline(always)]
fn socket_in_scope(sk: *const u8, off: &KernelOffsets) -> bool {
    let Some(cgroup) = read::<*const u8>(sk, off.sock_cgroup) else {
        return false;
    };
    let Some(level) = read::<i32>(cgroup, off.cgroup_level) else {
        return false;
    };
    let mut i: u32 = 0;
    while i < MAX_SCOPE_DEPTH {
        if i as i32 > level {
            return false;
        }
        let Some(ancestor) = read::<*const u8>(cgroup, off.cgroup_ancestors + i * 8) else {
            return false;
        };
        let Some(kn) = read::<*const u8>(ancestor, off.cgroup_kn) else {
            return false;
        };
        let Some(id) = read::<u64>(kn, off.kernfs_id) else {
            return false;
        };
        if scope_root(id) {
            return true;
        }
        i += 1;
    }
    false
}

/// The destination of a sockaddr (`sa`: its first 24 bytes), an IPv4-mapped IPv6 address as
/// IPv4; `None` for other families.
#[inline(always)]
fn destination(family: u32, sa: &[u8; 24]) -> Option<(u32, [u8; 16])> {
    let mut addr = [0u8; 16];
    if family == AF_INET {
        addr[..4].copy_from_slice(&sa[4..8]);
        Some((AF_INET, addr))
    } else if family == AF_INET6 {
        addr.copy_from_slice(&sa[8..24]);
        let mapped = addr[..10].iter().all(|b| *b == 0) && addr[10] == 0xff && addr[11] == 0xff;
        if mapped {
            let v4 = [addr[12], addr[13], addr[14], addr[15]];
            addr = [0u8; 16];
            addr[..4].copy_from_slice(&v4);
            Some((AF_INET, addr))
        } else {
            Some((AF_INET6, addr))
        }
    } else {
        None
    }
}

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
    let Some((dst_family, addr)) = destination(family, &sa) else {
        return 0;
    };
    let Some(rule) = lookup(dst_family, &addr) else {
        return 0;
    };
    let Some((enforce, audit)) = covering(rule, port) else {
        return 0;
    };
    let pending = Pending {
        enforce,
        audit,
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
    let Some((enforcing, policies)) = applying(p.enforce, p.audit, current_policies()) else {
        return 0;
    };
    let verdict = if enforcing {
        kill_current(Counter::LateSocketKilled)
    } else {
        count(Counter::LateSocketAudited);
        Verdict::Audited
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
            policies,
            dst_addr: p.dst_addr,
        },
    );
    0
}
