//! The sensor's kernel programs. One hook area per file:
//! - `connect`: cgroup sock_addr hooks (connect4/6, sendmsg4/6) that block or audit listed
//!   destinations for every task below the cgroup they are attached to;
//! - `egress`: a cgroup skb egress program for raw and ping sockets (packets to listed
//!   destinations that the sock_addr hooks never see);
//! - `packet`: packet sockets refused (LSM tier) or their creators killed while a metadata
//!   rule applies;
//! - `late_socket`: connect/sendto tracepoints for sockets created outside the scope (kill tier);
//! - `chmod`: syscall tracepoints for the chmod family (detection) for tasks in scope;
//! - `creds`: set*id syscall tracepoints (kill tier for raises to uid/gid 0);
//! - `setid`: kill tier for set-id file creation, file capabilities, capset and set-id exec;
//! - `process`: exec and exit of tasks in scope, for the daemon's process cache;
//! - `lsm`: BPF LSM programs (the LSM tier: deny with EPERM before the change happens).
//!
//! Everything they report goes through one ring buffer (`shared`).
#![no_std]
#![no_main]

mod capset;
mod chmod;
mod connect;
mod creds;
mod egress;
mod file_caps;
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
