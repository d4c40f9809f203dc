//! The sensor's kernel programs, one file per protection (see ARCHITECTURE.md, "Where things
//! live"):
//! - `connect`: cgroup sock_addr hooks (connect4/6, sendmsg4/6) that block or audit listed
//!   destinations for every task below the cgroup they are attached to;
//! - `egress`: a cgroup skb egress program for raw and ping sockets (packets to listed
//!   destinations that the sock_addr hooks never see);
//! - `packet`: packet sockets refused while a metadata rule applies;
//! - `late_socket`: sockets created outside the scope (`socket_connect` / `socket_sendmsg`,
//!   or the connect/sendto tracepoints on the kill tier);
//! - `chmod`, `setid_create`: the chmod family and files created with a set-id mode;
//! - `creds`, `capset`, `setid_exec`, `file_caps` (with `privilege`, their shared decision):
//!   the privilege raises;
//! - `process`: exec and exit of tasks in scope, for the daemon's process cache;
//! - `floor`: empty programs for the benchmark's floor (never attached by `sensor run`).
//!
//! Each protection has an LSM program (BPF LSM), its override twin (fmod_ret on the
//! `security_*` function) and kill-tier tracepoints, where it has those tiers; `kstruct` reads
//! kernel structs at offsets from the running kernel's BTF. Everything they report goes through
//! one ring buffer (`shared`).
#![no_std]
#![no_main]

mod capset;
mod chmod;
mod connect;
mod creds;
mod egress;
mod file_caps;
mod floor;
mod kstruct;
mod late_socket;
mod packet;
mod privilege;
mod process;
mod setid_create;
mod setid_exec;
mod shared;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier proves there is no panic path; this is never reached.
    loop {}
}

/// The kernel only loads GPL-compatible programs that use GPL-only helpers.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
