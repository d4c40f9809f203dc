//! `bench-gen`: the load generator of `cargo xtask bench`.
//!
//! ```text
//! bench-gen [--cgroup DIR] chmod N FILE            # N chmod(2) calls, as fast as possible
//! bench-gen [--cgroup DIR] getpid N                # N getpid(2) calls (raw syscall)
//! bench-gen [--cgroup DIR] open N FILE             # N open(2) + close(2) pairs, read-only
//! bench-gen [--cgroup DIR] connect N               # N TCP connects to a listener on 127.0.0.1
//! bench-gen [--cgroup DIR] paced RATE N FILE       # N chmod calls at RATE per second (bursts ~1/ms)
//! ```
//!
//! `--setid` (after `--cgroup`) makes the chmod modes set-uid ones (`4640`/`4600`), which the
//! default policy's `deny-setid-chmod` rule matches (audited under `--mode audit`).
//!
//! Joins the cgroup first (so every measured call is in scope), then prints one JSON line:
//! `{"ops":N,"elapsed_ns":T,"ns_per_op":T/N}`. Connects go to 127.0.0.1 only.

use std::{
    ffi::CString,
    net::{TcpListener, TcpStream},
    process::ExitCode,
    time::{Duration, Instant},
};

fn fail(msg: &str) -> ExitCode {
    eprintln!("bench-gen: {msg}");
    ExitCode::from(2)
}

fn chmod(path: &CString, mode: libc::mode_t) {
    // SAFETY: a valid NUL-terminated path.
    unsafe { libc::chmod(path.as_ptr(), mode) };
}

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_some_and(|a| a == "--cgroup") {
        if args.len() < 2 {
            return fail("--cgroup needs DIR");
        }
        let dir = args.remove(1);
        args.remove(0);
        let procs = format!("{dir}/cgroup.procs");
        if let Err(e) = std::fs::write(&procs, std::process::id().to_string()) {
            return fail(&format!("{procs}: {e}"));
        }
    }
    let setid: libc::mode_t = if args.first().is_some_and(|a| a == "--setid") {
        args.remove(0);
        0o4000
    } else {
        0
    };
    let num = |i: usize| args.get(i).and_then(|s| s.parse::<u64>().ok());
    let path = |i: usize| args.get(i).and_then(|s| CString::new(s.as_str()).ok());
    let start = Instant::now();
    let ops = match args.first().map(String::as_str) {
        Some("chmod") => {
            let (Some(n), Some(p)) = (num(1), path(2)) else {
                return fail("chmod N FILE");
            };
            for i in 0..n {
                chmod(&p, setid | if i % 2 == 0 { 0o640 } else { 0o600 });
            }
            n
        }
        Some("open") => {
            let (Some(n), Some(p)) = (num(1), path(2)) else {
                return fail("open N FILE");
            };
            for _ in 0..n {
                // SAFETY: a valid path; the descriptor is closed at once.
                unsafe {
                    let fd = libc::open(p.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
                    if fd >= 0 {
                        libc::close(fd);
                    }
                }
            }
            n
        }
        Some("getpid") => {
            let Some(n) = num(1) else {
                return fail("getpid N");
            };
            for _ in 0..n {
                // SAFETY: no arguments.
                unsafe { libc::syscall(libc::SYS_getpid) };
            }
            n
        }
        Some("connect") => {
            let Some(n) = num(1) else {
                return fail("connect N");
            };
            let listener = match TcpListener::bind("127.0.0.1:0") {
                Ok(l) => l,
                Err(e) => return fail(&format!("listen: {e}")),
            };
            let addr = listener.local_addr().expect("bound");
            // Accept (and drop) so the backlog never fills.
            std::thread::spawn(move || {
                for c in listener.incoming() {
                    drop(c)
                }
            });
            let start = Instant::now();
            for _ in 0..n {
                if let Err(e) = TcpStream::connect(addr) {
                    return fail(&format!("connect: {e}"));
                }
            }
            let elapsed = start.elapsed().as_nanos() as u64;
            println!(
                "{{\"ops\":{n},\"elapsed_ns\":{elapsed},\"ns_per_op\":{}}}",
                elapsed / n.max(1)
            );
            return ExitCode::SUCCESS;
        }
        Some("paced") => {
            let (Some(rate), Some(n), Some(p)) = (num(1), num(2), path(3)) else {
                return fail("paced RATE N FILE");
            };
            // Bursts of `batch` calls about once per millisecond, sleeping in between: a
            // spinning generator would take a whole core from the daemon on a 2-core machine.
            let rate = rate.max(1);
            let batch = (rate / 1000).max(1);
            let interval = Duration::from_nanos(1_000_000_000 * batch / rate);
            let begin = Instant::now();
            let mut done = 0u64;
            let mut bursts = 0u32;
            while done < n {
                for _ in 0..batch.min(n - done) {
                    chmod(
                        &p,
                        setid | if done.is_multiple_of(2) { 0o640 } else { 0o600 },
                    );
                    done += 1;
                }
                bursts += 1;
                let due = begin + interval * bursts;
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
            }
            n
        }
        _ => {
            return fail(
                "usage: bench-gen [--cgroup DIR] chmod N FILE | getpid N | open N FILE | connect N | paced RATE N FILE",
            );
        }
    };
    let elapsed = start.elapsed().as_nanos() as u64;
    println!(
        "{{\"ops\":{ops},\"elapsed_ns\":{elapsed},\"ns_per_op\":{}}}",
        elapsed / ops.max(1)
    );
    ExitCode::SUCCESS
}
