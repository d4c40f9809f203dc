//! Metadata access by raw packets: a cgroup skb egress program at the scope roots.
//!
//! Kernel hook: `BPF_CGROUP_INET_EGRESS`, run from `ip_finish_output`/`ip6_finish_output` with a
//! `struct __sk_buff` whose data starts at the IP header, for every packet a socket below the
//! cgroup sends. Returning 0 drops the packet and the sender gets EPERM. TCP and UDP sockets
//! are left to the sock_addr hooks (connect/sendmsg), which decide once per call; this program
//! covers the sockets they never see: raw sockets (IP_HDRINCL or not) and ping sockets.

use aya_ebpf::{
    bindings::bpf_sock,
    helpers::{bpf_ktime_get_ns, bpf_sk_fullsock, bpf_skb_ancestor_cgroup_id, bpf_skb_cgroup_id},
    macros::cgroup_skb,
    programs::SkBuffContext,
};
use sensor_common::{ConnectHook, EventKind, Verdict};

use crate::{
    connect::{Destination, covering, lookup, report, report_with, verdict_for},
    shared::policies_of,
};

const PASS: i32 = 1;
const DROP: i32 = 0;
const AF_INET: u32 = 2;
const AF_INET6: u32 = 10;
const SOCK_STREAM: u32 = 1;
const SOCK_DGRAM: u32 = 2;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

#[cgroup_skb(egress)]
pub fn sensor_egress(ctx: SkBuffContext) -> i32 {
    match try_egress::<true>(&ctx) {
        Ok(v) | Err(v) => v,
    }
}

/// The same for kernels that refuse current-task helpers in cgroup skb programs (before
/// 6.x; Debian's 6.1 and 6.12 among them): the event names the packet's cgroup, not the
/// process (pid 0, uid/gid unknown). The loader uses it when [`sensor_egress`] fails to load.
#[cgroup_skb(egress)]
pub fn sensor_egress_compat(ctx: SkBuffContext) -> i32 {
    match try_egress::<false>(&ctx) {
        Ok(v) | Err(v) => v,
    }
}

/// `TASK`: current-task helpers are allowed (the event names the sending process).
#[inline(always)]
fn try_egress<const TASK: bool>(ctx: &SkBuffContext) -> Result<i32, i32> {
    let skb = ctx.skb.skb;
    // SAFETY: the context pointer is valid for the program's run; `sk` may be read in cgroup
    // skb programs (it may be null).
    let sk = unsafe { (*skb).__bindgen_anon_2.sk };
    if sk.is_null() {
        return Ok(PASS);
    }
    // SAFETY: helper call on the context's socket pointer.
    let full: *mut bpf_sock = unsafe { bpf_sk_fullsock(sk) };
    if full.is_null() {
        return Ok(PASS);
    }
    // SAFETY: a full socket returned by the helper, readable for this run.
    let (sock_type, protocol, family) =
        unsafe { ((*full).type_, (*full).protocol, (*full).family) };
    // TCP and UDP sockets meet the sock_addr hooks.
    if (sock_type == SOCK_STREAM && protocol == IPPROTO_TCP as u32)
        || (sock_type == SOCK_DGRAM && protocol == IPPROTO_UDP as u32)
    {
        return Ok(PASS);
    }
    let version = ctx.load::<u8>(0).map_err(|_| PASS)? >> 4;
    let mut addr = [0u8; 16];
    let (dst_family, l4, l4_offset) = if version == 4 {
        let dst = ctx.load::<[u8; 4]>(16).map_err(|_| PASS)?;
        addr[..4].copy_from_slice(&dst);
        let ihl = (ctx.load::<u8>(0).map_err(|_| PASS)? & 0x0f) as usize * 4;
        (AF_INET, ctx.load::<u8>(9).map_err(|_| PASS)?, ihl)
    } else if version == 6 {
        addr = ctx.load::<[u8; 16]>(24).map_err(|_| PASS)?;
        // The next header right after the fixed header (extension headers: port 0).
        (AF_INET6, ctx.load::<u8>(6).map_err(|_| PASS)?, 40)
    } else {
        return Ok(PASS);
    };
    let Some(rule) = lookup(dst_family, &addr) else {
        return Ok(PASS);
    };
    // A crafted TCP/UDP header carries a destination port; other protocols have none (0).
    let dst_port = if l4 == IPPROTO_TCP || l4 == IPPROTO_UDP {
        u16::from_be(ctx.load::<u16>(l4_offset + 2).unwrap_or(0))
    } else {
        0
    };
    let Some(cover) = covering(rule, dst_port) else {
        return Ok(PASS);
    };
    if TASK {
        crate::late_socket::seen_by_hook();
    }
    // SAFETY: helper call on the context's skb.
    let members = policies_of(|level| unsafe { bpf_skb_ancestor_cgroup_id(skb.cast(), level) });
    let Some((verdict, policies)) = verdict_for(cover, members) else {
        return Ok(PASS);
    };
    let ret = if verdict == Verdict::Blocked {
        DROP
    } else {
        PASS
    };
    let d = Destination {
        hook: ConnectHook::Egress,
        sock_family: family,
        sock_type,
        protocol,
        dst_family,
        dst_port,
        rule: rule.rule,
        policies,
        dst_addr: addr,
    };
    if TASK {
        report(verdict, &d);
    } else {
        report_with(&d, |h| {
            h.kind = EventKind::Connect as u32;
            h.size = core::mem::size_of::<sensor_common::ConnectEvent>() as u32;
            // SAFETY: helper calls without pointer arguments / on the context's skb.
            h.ktime_ns = unsafe { bpf_ktime_get_ns() };
            h.cgroup_id = unsafe { bpf_skb_cgroup_id(skb.cast()) };
            h.tid = 0;
            h.pid = 0;
            h.uid = u32::MAX;
            h.gid = u32::MAX;
            h.verdict = verdict as u32;
            h._pad = 0;
            h.comm = [0; sensor_common::COMM_BYTES];
        });
    }
    Ok(ret)
}
