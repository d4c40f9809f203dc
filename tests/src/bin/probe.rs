//! `probe`: one scenario step, run where a test puts it.
//!
//! ```text
//! probe [--netns NAME] [--cgroup DIR] tcp ADDR PORT     # connect(); listener set up first
//! probe [--netns NAME] [--cgroup DIR] udp ADDR PORT     # sendto(); receiver set up first
//! probe [--netns NAME] [--cgroup DIR] tfo ADDR PORT     # TCP Fast Open: sendto(MSG_FASTOPEN)
//! probe [--netns NAME] [--cgroup DIR] uring ADDR PORT   # connect through io_uring
//! probe [--netns NAME] [--cgroup DIR] moved ADDR PORT   # socket made before joining the cgroup
//! probe [--netns NAME] [--cgroup DIR] moved-bad ADDR PORT # the same, an IPv6 socket given an
//!                                                       # IPv4 address: the connect fails
//! probe [--netns NAME] [--cgroup DIR] raw ADDR 0        # ICMP echo on a raw socket
//! probe [--netns NAME] [--cgroup DIR] ping ADDR 0       # ICMP echo on a ping socket
//! probe [--netns NAME] [--cgroup DIR] exec PROG ARGS... # exec (pid is kept)
//! probe [--uid UID] uconnect PATH                       # connect to a unix socket
//! probe become-root                                     # setresuid(0, 0, 0) (run set-uid-root)
//! probe [--cgroup DIR] become-root-from UID             # as root: setresuid(UID, 0, 0), then
//!                                                       # setresuid(0, 0, 0) with real uid UID
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
    let network = [
        "tcp",
        "udp",
        "tfo",
        "uring",
        "moved",
        "moved-bad",
        "raw",
        "ping",
    ]
    .contains(&op.as_str());
    let dst = if network {
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
        ("tcp" | "tfo" | "uring" | "moved", Some(d)) => match TcpListener::bind(listen_addr(d)) {
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
    // "moved": the socket belongs to the cgroup the process was in before it joined.
    let early_socket = match (op.as_str(), dst) {
        ("moved", Some(d)) => {
            let (family, _, _) = sockaddr(d);
            // SAFETY: plain socket syscall.
            Some(unsafe { libc::socket(family, libc::SOCK_STREAM, 0) })
        }
        // SAFETY: plain socket syscall.
        ("moved-bad", Some(_)) => {
            Some(unsafe { libc::socket(libc::AF_INET6, libc::SOCK_STREAM, 0) })
        }
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
        ("tfo", Some(d)) => {
            let errno = tcp_fast_open(d);
            drop(tcp_listener);
            println!("{{\"pid\":{pid},\"errno\":{errno},\"received\":false}}");
        }
        ("moved" | "moved-bad", Some(d)) => {
            let (_, sa, len) = sockaddr(d);
            let fd = early_socket.unwrap_or(-1);
            // SAFETY: connect on our own socket with a sockaddr of the length given.
            let rc = unsafe { libc::connect(fd, (&raw const sa).cast(), len) };
            let errno = if rc == 0 {
                0
            } else {
                errno(&std::io::Error::last_os_error())
            };
            drop(tcp_listener);
            println!("{{\"pid\":{pid},\"errno\":{errno},\"received\":false}}");
        }
        ("uring", Some(d)) => {
            let errno = match uring_connect(d) {
                Ok(()) => 0,
                Err(e) => errno(&e),
            };
            drop(tcp_listener);
            println!("{{\"pid\":{pid},\"errno\":{errno},\"received\":false}}");
        }
        ("raw" | "ping", Some(d)) => {
            if op == "ping" {
                // Ping sockets are off by default; this is the test namespace's own setting.
                if let Err(e) = std::fs::write("/proc/sys/net/ipv4/ping_group_range", "0 0") {
                    return fail(&format!("enabling ping sockets: {e}"));
                }
            }
            let (errno, received) = icmp_echo(d.ip(), op == "raw");
            println!("{{\"pid\":{pid},\"errno\":{errno},\"received\":{received}}}");
        }
        ("become-root-from", _) => {
            let Some(real) = args.get(1).and_then(|u| u.parse::<u32>().ok()) else {
                return fail("become-root-from needs a UID");
            };
            // SAFETY: plain syscalls. The first is no raise (the caller is root); the second
            // asks for uid 0 with a real uid that is not 0.
            let errno = unsafe {
                if libc::setresuid(real, 0, 0) != 0 {
                    return fail(&format!(
                        "setresuid({real}, 0, 0): {}",
                        std::io::Error::last_os_error()
                    ));
                }
                if libc::setresuid(0, 0, 0) == 0 {
                    0
                } else {
                    errno(&std::io::Error::last_os_error())
                }
            };
            println!("{{\"pid\":{pid},\"errno\":{errno},\"received\":false}}");
        }
        ("become-root", _) => {
            // SAFETY: plain syscall.
            let rc = unsafe { libc::setresuid(0, 0, 0) };
            let errno = if rc == 0 {
                0
            } else {
                errno(&std::io::Error::last_os_error())
            };
            println!("{{\"pid\":{pid},\"errno\":{errno},\"received\":false}}");
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

/// `sendto(MSG_FASTOPEN)` on a fresh TCP socket: the connect happens inside the send.
fn tcp_fast_open(d: SocketAddr) -> i32 {
    let (family, sa, len) = sockaddr(d);
    // SAFETY: plain socket syscalls on our own fd, with a sockaddr of the length given.
    unsafe {
        let fd = libc::socket(family, libc::SOCK_STREAM, 0);
        if fd < 0 {
            return errno(&std::io::Error::last_os_error());
        }
        let data = b"GET / HTTP/1.0\r\n\r\n";
        let rc = libc::sendto(
            fd,
            data.as_ptr().cast(),
            data.len(),
            libc::MSG_FASTOPEN,
            (&raw const sa).cast(),
            len,
        );
        let e = if rc < 0 {
            errno(&std::io::Error::last_os_error())
        } else {
            0
        };
        libc::close(fd);
        e
    }
}

/// One ICMP echo request on a raw (`SOCK_RAW`) or ping (`SOCK_DGRAM`) socket; whether an echo
/// reply came back within a second.
fn icmp_echo(ip: IpAddr, raw: bool) -> (i32, bool) {
    let d = SocketAddr::new(ip, 0);
    let (family, sa, len) = sockaddr(d);
    let (proto, request, reply) = if d.is_ipv4() {
        (libc::IPPROTO_ICMP, 8u8, 0u8)
    } else {
        (libc::IPPROTO_ICMPV6, 128u8, 129u8)
    };
    let kind = if raw {
        libc::SOCK_RAW
    } else {
        libc::SOCK_DGRAM
    };
    // type, code, checksum (0: the kernel fills it for ping and ICMPv6 sockets), id, seq.
    let mut packet = [
        request, 0, 0, 0, 0x12, 0x34, 0, 1, b'p', b'r', b'o', b'b', b'e', 0, 0, 0,
    ];
    if d.is_ipv4() && raw {
        let sum = checksum(&packet);
        packet[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    // SAFETY: plain socket syscalls on our own fd and buffers of the sizes given.
    unsafe {
        let fd = libc::socket(family, kind, proto);
        if fd < 0 {
            return (errno(&std::io::Error::last_os_error()), false);
        }
        let rc = libc::sendto(
            fd,
            packet.as_ptr().cast(),
            packet.len(),
            0,
            (&raw const sa).cast(),
            len,
        );
        if rc < 0 {
            let e = errno(&std::io::Error::last_os_error());
            libc::close(fd);
            return (e, false);
        }
        let timeout = libc::timeval {
            tv_sec: 1,
            tv_usec: 0,
        };
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const timeout).cast(),
            size_of::<libc::timeval>() as u32,
        );
        let mut received = false;
        let mut buf = [0u8; 256];
        for _ in 0..4 {
            let n = libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0);
            if n <= 0 {
                break;
            }
            // A v4 raw socket receives the IP header too.
            let at = if d.is_ipv4() && raw {
                usize::from(buf[0] & 0x0f) * 4
            } else {
                0
            };
            if buf.get(at) == Some(&reply) {
                received = true;
                break;
            }
        }
        libc::close(fd);
        (0, received)
    }
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A `sockaddr_storage` for `d`, its family and length.
fn sockaddr(d: SocketAddr) -> (i32, libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: an all-zero sockaddr_storage is valid.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match d {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as u16,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in fits in sockaddr_storage.
            unsafe { std::ptr::write((&raw mut ss).cast(), sin) };
            (libc::AF_INET, ss, size_of::<libc::sockaddr_in>() as u32)
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as u16,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: 0,
            };
            // SAFETY: sockaddr_in6 fits in sockaddr_storage.
            unsafe { std::ptr::write((&raw mut ss).cast(), sin6) };
            (libc::AF_INET6, ss, size_of::<libc::sockaddr_in6>() as u32)
        }
    }
}

/// connect() submitted as an io_uring `IORING_OP_CONNECT`: no connect syscall is made.
fn uring_connect(d: SocketAddr) -> std::io::Result<()> {
    use io_uring::{IoUring, opcode, types};
    let (family, sa, len) = sockaddr(d);
    // SAFETY: plain socket syscall.
    let fd = unsafe { libc::socket(family, libc::SOCK_STREAM, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut ring = IoUring::new(2)?;
    let connect = opcode::Connect::new(types::Fd(fd), (&raw const sa).cast(), len).build();
    // SAFETY: the socket and the address outlive the operation (we wait for it below).
    unsafe { ring.submission().push(&connect) }.map_err(std::io::Error::other)?;
    ring.submit_and_wait(1)?;
    let res = ring
        .completion()
        .next()
        .map(|c| c.result())
        .ok_or_else(|| std::io::Error::other("no completion"))?;
    // SAFETY: our own fd.
    unsafe { libc::close(fd) };
    if res < 0 {
        Err(std::io::Error::from_raw_os_error(-res))
    } else {
        Ok(())
    }
}
