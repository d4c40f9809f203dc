//! `sensor floor tracepoints|raw-syscalls` (hidden; `cargo xtask bench` runs it): attach the
//! kill tier's hooks with empty programs ([`crate::kernel::floor`]), say `floor ready` on
//! stderr, and keep them attached until SIGINT or SIGTERM.

use std::process::ExitCode;

use crate::kernel::{
    floor::{self, Floor},
    tracefs,
};

use super::EXIT_FAILURE;

pub fn main(which: Floor) -> ExitCode {
    // Blocked before anything is attached, then waited for: the floor never outlives a
    // signal that arrived during the set-up.
    // SAFETY: a local signal set, filled and installed as this thread's mask.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    let attached = tracefs::tracefs_root()
        .and_then(|root| tracefs::available(&root))
        .map_err(|e| e.to_string())
        .and_then(|available| floor::attach(which, &available).map_err(|e| e.to_string()));
    let attached = match attached {
        Ok(a) => a,
        Err(e) => {
            eprintln!("sensor floor: error: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    eprintln!(
        "floor ready: {} attachments ({})",
        attached.targets.len(),
        attached.targets.join(" ")
    );
    let mut sig = 0;
    // SAFETY: the set built above and an out-parameter.
    unsafe { libc::sigwait(&set, &mut sig) };
    drop(attached);
    ExitCode::SUCCESS
}
