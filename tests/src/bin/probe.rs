//! `probe`: one scenario step, run where a test puts it.
//!
//! ```text
//! probe [--netns NAME] [--cgroup DIR] tcp ADDR PORT     # connect(); listener set up first
//! probe [--netns NAME] [--cgroup DIR] udp ADDR PORT     # sendto(); receiver set up first
//! probe [--netns NAME] [--cgroup DIR] exec PROG ARGS... # exec (pid is kept)
//! probe [--uid UID] uconnect PATH                       # connect to a unix socket
//! ```
//!
//! `--linger-ms N` keeps the process alive N ms after the operation (a process that is still
//! running when the daemon reads its event, like most container processes).
//!
//! Order: enter the network namespace, create the listener/receiver for the destination (so
//! the connect has someone to talk to inside that namespace), then move into the cgroup, then
//! act. Network operations refuse to run without `--netns`: metadata addresses are only ever
//! contacted inside a namespace the test created. Prints `{"pid":..,"errno":..,"received":..}`.

use std::{
    net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::unix::process::CommandExt as _,
    process::{Command, ExitCode},
    time::Duration,
};

fn fail(msg: &str) -> ExitCode {
    eprintln!("probe: {msg}");
    ExitCode::from(2)
}

fn enter_netns(name: &str) -> Result<(), String> {
    let path = format!("/run/netns/{name}");
    let file = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
    // SAFETY: a valid fd to a network namespace; this process is single-threaded here.
    let rc = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(format!("setns {path}: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

fn join_cgroup(dir: &str) -> Result<(), String> {
    let procs = format!("{dir}/cgroup.procs");
    std::fs::write(&procs, std::process::id().to_string()).map_err(|e| format!("{procs}: {e}"))
}

/// The address a listener binds for a destination: a v4-mapped IPv6 address is served by an
/// IPv4 listener (the kernel connects the mapped address over IPv4).
fn listen_addr(dst: SocketAddr) -> SocketAddr {
    match dst.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), dst.port()),
            None => dst,
        },
        IpAddr::V4(_) => dst,
    }
}

fn errno(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(-1)
}

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut netns = None;
    let mut cgroup = None;
    let mut uid = None;
    let mut linger_ms = 0u64;
    while args.first().is_some_and(|a| a.starts_with("--")) {
        let flag = args.remove(0);
        if args.is_empty() {
            return fail(&format!("{flag} needs a value"));
        }
        let value = args.remove(0);
        match flag.as_str() {
            "--netns" => netns = Some(value),
            "--cgroup" => cgroup = Some(value),
            "--linger-ms" => match value.parse::<u64>() {
                Ok(ms) => linger_ms = ms,
                Err(_) => return fail("--linger-ms needs a number"),
            },
            "--uid" => match value.parse::<u32>() {
                Ok(u) => uid = Some(u),
                Err(_) => return fail("--uid needs a number"),
            },
            other => return fail(&format!("unknown flag {other}")),
        }
    }
    let Some(op) = args.first().cloned() else {
        return fail(
            "usage: probe [--netns NAME] [--cgroup DIR] tcp|udp ADDR PORT | exec PROG ARGS...",
        );
    };
    if let Some(ns) = &netns
        && let Err(e) = enter_netns(ns)
    {
        return fail(&e);
    }
    let dst = if op == "tcp" || op == "udp" {
        if netns.is_none() {
            return fail("network operations run only inside a test network namespace (--netns)");
        }
        let (Some(addr), Some(port)) = (args.get(1), args.get(2)) else {
            return fail("tcp|udp need ADDR PORT");
        };
        let (Ok(ip), Ok(port)) = (addr.parse::<IpAddr>(), port.parse::<u16>()) else {
            return fail("bad ADDR or PORT");
        };
        Some(SocketAddr::new(ip, port))
    } else {
        None
    };
    // Listener / receiver, created before joining the cgroup.
    let tcp_listener = match (op.as_str(), dst) {
        ("tcp", Some(d)) => match TcpListener::bind(listen_addr(d)) {
            Ok(l) => Some(l),
            Err(e) => return fail(&format!("listen on {}: {e}", listen_addr(d))),
        },
        _ => None,
    };
    let udp_receiver = match (op.as_str(), dst) {
        ("udp", Some(d)) => match UdpSocket::bind(listen_addr(d)) {
            Ok(s) => Some(s),
            Err(e) => return fail(&format!("bind {}: {e}", listen_addr(d))),
        },
        _ => None,
    };
    if let Some(dir) = &cgroup
        && let Err(e) = join_cgroup(dir)
    {
        return fail(&e);
    }
    if let Some(uid) = uid {
        // SAFETY: plain syscalls; drop the group first, then the user.
        if unsafe { libc::setgid(uid) } != 0 || unsafe { libc::setuid(uid) } != 0 {
            return fail(&format!(
                "setuid {uid}: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    let pid = std::process::id();
    match (op.as_str(), dst) {
        ("uconnect", _) => {
            let Some(path) = args.get(1) else {
                return fail("uconnect needs PATH");
            };
            let errno = match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => 0,
                Err(e) => errno(&e),
            };
            println!("{{\"pid\":{pid},\"errno\":{errno},\"received\":false}}");
        }
        ("tcp", Some(d)) => {
            let errno = match TcpStream::connect_timeout(&d, Duration::from_secs(5)) {
                Ok(_) => 0,
                Err(e) => errno(&e),
            };
            drop(tcp_listener);
            println!("{{\"pid\":{pid},\"errno\":{errno},\"received\":false}}");
        }
        ("udp", Some(d)) => {
            let any: SocketAddr = if d.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }
                .parse()
                .unwrap();
            let sock = match UdpSocket::bind(any) {
                Ok(s) => s,
                Err(e) => return fail(&format!("bind {any}: {e}")),
            };
            let (errno, received) = match sock.send_to(b"probe", d) {
                Ok(_) => {
                    let rx = udp_receiver.expect("receiver");
                    rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                    let mut buf = [0u8; 16];
                    (
                        0,
                        rx.recv_from(&mut buf)
                            .is_ok_and(|(n, _)| &buf[..n] == b"probe"),
                    )
                }
                Err(e) => (errno(&e), false),
            };
            println!("{{\"pid\":{pid},\"errno\":{errno},\"received\":{received}}}");
        }
        ("exec", _) => {
            let Some(prog) = args.get(1) else {
                return fail("exec needs PROG");
            };
            let err = Command::new(prog).args(&args[2..]).exec();
            return fail(&format!("exec {prog}: {err}"));
        }
        (other, _) => return fail(&format!("unknown operation {other}")),
    }
    std::thread::sleep(Duration::from_millis(linger_ms));
    ExitCode::SUCCESS
}
