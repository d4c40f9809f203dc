//! The child processes of `sensor demo` (`sensor demo-step OP ...`, hidden): one holds the
//! throwaway network namespace with the metadata address on its loopback and a listener behind
//! it; the others each join that namespace and the demo's cgroup and make one attempt, printing
//! `errno N` (0: the call succeeded). Nothing here touches the host's network: every address
//! used exists only inside the namespace.

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::PathBuf,
    process::ExitCode,
};

use clap::{Args, ValueEnum};

/// The metadata address the demo's namespace carries on its loopback.
pub const METADATA: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
pub const TCP_PORT: u16 = 80;
pub const UDP_PORT: u16 = 53;
/// The unprivileged real uid the privilege attempt starts from.
pub const USER: u32 = 1000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Op {
    /// Make the namespace, serve in it until stdin closes.
    HoldNetns,
    /// Stay in the cgroup until stdin closes (a container's main process: the kill tier
    /// reaches a killed caller's files through it).
    Linger,
    Tcp,
    Udp,
    Raw,
    Chmod,
    Setuid,
}

#[derive(Debug, Args)]
pub struct StepArgs {
    #[arg(value_enum)]
    pub op: Op,
    /// The process holding the demo's network namespace.
    #[arg(long)]
    pub netns_pid: Option<u32>,
    /// The demo's cgroup.
    #[arg(long)]
    pub cgroup: Option<PathBuf>,
    /// The file of the chmod attempt.
    #[arg(long)]
    pub file: Option<PathBuf>,
}

pub fn step(args: &StepArgs) -> ExitCode {
    let result = match args.op {
        Op::HoldNetns => hold_netns(),
        Op::Linger => linger(args),
        op => enter(args).and_then(|()| attempt(op, args)),
    };
    match result {
        Ok(errno) => {
            println!("errno {errno}");
            ExitCode::SUCCESS
        }
        Err(msg) => {
            eprintln!("sensor demo-step: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Join the demo's cgroup, then its network namespace.
fn enter(args: &StepArgs) -> Result<(), String> {
    let (Some(pid), Some(cgroup)) = (args.netns_pid, &args.cgroup) else {
        return Err("--netns-pid and --cgroup are needed".into());
    };
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))
        .map_err(|e| format!("the demo's network namespace: {e}"))?;
    std::fs::write(cgroup.join("cgroup.procs"), std::process::id().to_string())
        .map_err(|e| format!("joining {}: {e}", cgroup.display()))?;
    // SAFETY: a namespace fd we opened; this process has one thread.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(format!("setns: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// One attempt: its errno (0 = it succeeded).
fn attempt(op: Op, args: &StepArgs) -> Result<i32, String> {
    let errno = |e: std::io::Error| e.raw_os_error().unwrap_or(-1);
    Ok(match op {
        Op::Tcp => {
            TcpStream::connect(SocketAddrV4::new(METADATA, TCP_PORT)).map_or_else(errno, |_| 0)
        }
        Op::Udp => {
            let socket = UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
            socket
                .send_to(b"demo", SocketAddrV4::new(METADATA, UDP_PORT))
                .map_or_else(errno, |_| 0)
        }
        Op::Raw => icmp_echo(),
        Op::Chmod => {
            let file = args.file.as_ref().ok_or("--file is needed")?;
            let path = std::ffi::CString::new(file.as_os_str().as_encoded_bytes())
                .map_err(|e| e.to_string())?;
            // SAFETY: a valid path string.
            if unsafe { libc::chmod(path.as_ptr(), 0o4755) } == 0 {
                0
            } else {
                last_errno()
            }
        }
        Op::Setuid => {
            // Real uid 1000, effective and saved uid 0 (not a raise: the caller is root), then
            // ask for uid 0 with the real uid not 0: the raise the setuid-root protection is for.
            // SAFETY: plain credential syscalls on this process.
            unsafe {
                if libc::setresuid(USER, 0, 0) != 0 {
                    return Err(format!(
                        "setresuid({USER}, 0, 0): {}",
                        std::io::Error::last_os_error()
                    ));
                }
                if libc::setresuid(0, 0, 0) == 0 {
                    0
                } else {
                    last_errno()
                }
            }
        }
        Op::HoldNetns | Op::Linger => unreachable!("not an attempt"),
    })
}

/// Join the cgroup, say so, and wait until stdin closes.
fn linger(args: &StepArgs) -> Result<i32, String> {
    let cgroup = args.cgroup.as_ref().ok_or("--cgroup is needed")?;
    std::fs::write(cgroup.join("cgroup.procs"), std::process::id().to_string())
        .map_err(|e| format!("joining {}: {e}", cgroup.display()))?;
    wait_for_stdin_end();
    Ok(0)
}

/// Print `ready`, then block until stdin closes (the demo ends, or dies).
fn wait_for_stdin_end() {
    println!("ready");
    let _ = std::io::stdout().flush();
    let mut sink = Vec::new();
    let _ = std::io::stdin().lock().read_to_end(&mut sink);
}

/// One ICMP echo request on a raw socket (the packets the sock_addr hooks never see).
fn icmp_echo() -> i32 {
    // type 8 (echo), code, checksum, id, seq, payload.
    let mut packet = [8u8, 0, 0, 0, 0x12, 0x34, 0, 1, b'd', b'e', b'm', b'o'];
    let sum = checksum(&packet);
    packet[2..4].copy_from_slice(&sum.to_be_bytes());
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(METADATA).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: plain socket syscalls on our own fd and buffers of the sizes given.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP);
        if fd < 0 {
            return last_errno();
        }
        let fd = OwnedFd::from_raw_fd(fd);
        let rc = libc::sendto(
            fd.as_raw_fd(),
            packet.as_ptr().cast(),
            packet.len(),
            0,
            std::ptr::from_ref(&sin).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        if rc < 0 { last_errno() } else { 0 }
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

/// `struct ifreq` with an address, and with flags (`linux/if.h`).
#[repr(C)]
struct IfreqAddr {
    name: [u8; 16],
    addr: libc::sockaddr_in,
    _pad: [u8; 8],
}

#[repr(C)]
struct IfreqFlags {
    name: [u8; 16],
    flags: libc::c_short,
    _pad: [u8; 22],
}

const SIOCGIFFLAGS: libc::Ioctl = 0x8913;
const SIOCSIFFLAGS: libc::Ioctl = 0x8914;
const SIOCSIFADDR: libc::Ioctl = 0x8916;

/// A network namespace of our own, its loopback up with the metadata address, and listeners
/// on it (TCP and UDP) until stdin closes.
fn hold_netns() -> Result<i32, String> {
    // SAFETY: this process has one thread: the new namespace is the whole process's.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(format!(
            "unshare(CLONE_NEWNET): {}",
            std::io::Error::last_os_error()
        ));
    }
    loopback_with(METADATA)?;
    let tcp =
        TcpListener::bind(SocketAddrV4::new(METADATA, TCP_PORT)).map_err(|e| e.to_string())?;
    let udp = UdpSocket::bind(SocketAddrV4::new(METADATA, UDP_PORT)).map_err(|e| e.to_string())?;
    std::thread::spawn(move || {
        for stream in tcp.incoming().map_while(Result::ok) {
            let _ = (&stream).write_all(b"metadata of the demo namespace\n");
        }
    });
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while udp.recv_from(&mut buf).is_ok() {}
    });
    wait_for_stdin_end();
    Ok(0)
}

/// Bring `lo` up with `addr` as its address (inside the new namespace only).
fn loopback_with(addr: Ipv4Addr) -> Result<(), String> {
    let mut name = [0u8; 16];
    name[..2].copy_from_slice(b"lo");
    // SAFETY: an ioctl socket, and requests of the layouts the ioctls take.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        if fd < 0 {
            return Err(format!("socket: {}", std::io::Error::last_os_error()));
        }
        let fd = OwnedFd::from_raw_fd(fd);
        let mut set = IfreqAddr {
            name,
            addr: libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: 0,
                sin_addr: libc::in_addr {
                    s_addr: u32::from(addr).to_be(),
                },
                sin_zero: [0; 8],
            },
            _pad: [0; 8],
        };
        if libc::ioctl(fd.as_raw_fd(), SIOCSIFADDR, &raw mut set) != 0 {
            return Err(format!(
                "setting {addr} on lo: {}",
                std::io::Error::last_os_error()
            ));
        }
        let mut flags = IfreqFlags {
            name,
            flags: 0,
            _pad: [0; 22],
        };
        if libc::ioctl(fd.as_raw_fd(), SIOCGIFFLAGS, &raw mut flags) != 0 {
            return Err(format!("lo flags: {}", std::io::Error::last_os_error()));
        }
        flags.flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(fd.as_raw_fd(), SIOCSIFFLAGS, &raw mut flags) != 0 {
            return Err(format!("lo up: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}
