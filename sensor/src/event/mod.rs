//! Checked decoding of ring buffer records into domain events.
//!
//! Kernel bytes are never transmuted into enums: the length is checked, `kind` is read as a
//! `u32` and converted with `TryFrom`, every enum field likewise.

pub mod filter;
pub mod json;
pub mod proto;

use std::{
    mem::size_of,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
};

use sensor_common::{
    AT_FDCWD, ChmodEvent, ConnectEvent, ConnectHook, EventHeader, EventKind, ExecEvent, ExitEvent,
    ModeCall, PATH_BYTES, PrivilegeCall, PrivilegeEvent, Raise, Verdict, path_status,
};

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record of {len} bytes is shorter than its header")]
    Short { len: usize },
    #[error("unknown event kind {0}")]
    UnknownKind(u32),
    #[error("{kind} record: size field {size}, record length {len}, expected {expected}")]
    Size {
        kind: &'static str,
        size: u32,
        len: usize,
        expected: usize,
    },
    #[error("{kind} record: invalid {field} {value}")]
    Field {
        kind: &'static str,
        field: &'static str,
        value: u64,
    },
}

/// A decoded event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub ktime_ns: u64,
    pub cgroup_id: u64,
    /// Process id (kernel tgid).
    pub pid: u32,
    /// Thread id (kernel pid).
    pub tid: u32,
    pub uid: u32,
    pub gid: u32,
    pub verdict: Verdict,
    pub comm: String,
    pub body: Body,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    Connect(Connect),
    Chmod(Chmod),
    /// The task completed an exec of `filename`.
    Exec {
        filename: PathArg,
    },
    /// The process exited.
    Exit,
    Privilege(Privilege),
}

/// A set*id call asking for uid/gid 0 by a task whose real uid/gid is not 0.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Privilege {
    pub syscall: PrivilegeCall,
    pub raise: Raise,
    /// The requested ids (`u32::MAX`: unchanged), as many as the syscall takes.
    pub ids: Vec<u32>,
    /// Index of the deciding privilege rule.
    pub rule: u32,
}

impl Event {
    pub fn kind(&self) -> EventKind {
        match self.body {
            Body::Connect(_) => EventKind::Connect,
            Body::Chmod(_) => EventKind::Chmod,
            Body::Exec { .. } => EventKind::Exec,
            Body::Exit => EventKind::Exit,
            Body::Privilege(_) => EventKind::Privilege,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connect {
    pub hook: ConnectHook,
    pub sock_family: u32,
    pub sock_type: u32,
    pub protocol: u32,
    /// Canonical destination: a v4-mapped IPv6 address is reported as IPv4.
    pub dst_addr: IpAddr,
    pub dst_port: u16,
    /// Index into the destination table.
    pub rule: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chmod {
    pub syscall: ModeCall,
    pub mode: u32,
    /// fchmod: the fd; fchmodat/fchmodat2: the dirfd (`AT_FDCWD` = -100); chmod: `None`.
    pub fd: Option<i32>,
    pub flags: u32,
    pub path: PathArg,
    /// Absolute name of the file, resolved through `/proc` after the fact (see [`resolve_name`]).
    pub name: Option<PathBuf>,
    /// Index of the deciding chmod rule ([`sensor_common::NO_RULE`]: none).
    pub rule: u32,
    /// Kill tier: what the daemon did about the file afterwards.
    pub revert: Option<crate::pipeline::revert::Revert>,
}

/// The path argument as the kernel could read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathArg {
    /// The call has no path argument (fchmod).
    None,
    Complete(String),
    /// The first `PATH_BYTES - 1` bytes of a longer argument.
    Truncated(String),
    /// User memory could not be read.
    Unreadable,
    /// LSM tier: the file's own name (last component), not the argument.
    Name(String),
}

impl PathArg {
    pub fn text(&self) -> Option<&str> {
        match self {
            Self::Complete(s) | Self::Truncated(s) | Self::Name(s) => Some(s),
            Self::None | Self::Unreadable => None,
        }
    }
}

fn read<T: Copy>(bytes: &[u8]) -> T {
    assert!(bytes.len() >= size_of::<T>());
    // SAFETY: length checked above; `T` is a `#[repr(C)]` plain-old-data wire type.
    unsafe { bytes.as_ptr().cast::<T>().read_unaligned() }
}

fn cstr(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// A string argument read by the kernel, from its status and length.
fn path_arg(status: u32, len: u32, buf: &[u8; PATH_BYTES]) -> Result<PathArg, u32> {
    let text = || cstr(&buf[..(len as usize).min(PATH_BYTES)]);
    Ok(match status {
        path_status::OK => PathArg::Complete(text()),
        path_status::TRUNCATED => PathArg::Truncated(text()),
        path_status::FAULT => PathArg::Unreadable,
        path_status::NONE => PathArg::None,
        path_status::NAME => PathArg::Name(text()),
        other => return Err(other),
    })
}

/// Decode one ring buffer record.
pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
    if bytes.len() < size_of::<EventHeader>() {
        return Err(DecodeError::Short { len: bytes.len() });
    }
    let header: EventHeader = read(bytes);
    let kind = EventKind::try_from(header.kind).map_err(DecodeError::UnknownKind)?;
    let expected = match kind {
        EventKind::Connect => size_of::<ConnectEvent>(),
        EventKind::Chmod => size_of::<ChmodEvent>(),
        EventKind::Exec => size_of::<ExecEvent>(),
        EventKind::Exit => size_of::<ExitEvent>(),
        EventKind::Privilege => size_of::<PrivilegeEvent>(),
    };
    if header.size as usize != expected || bytes.len() < expected {
        return Err(DecodeError::Size {
            kind: kind.as_str(),
            size: header.size,
            len: bytes.len(),
            expected,
        });
    }
    let field = |field, value: u32| DecodeError::Field {
        kind: kind.as_str(),
        field,
        value: value.into(),
    };
    let verdict = Verdict::try_from(header.verdict).map_err(|v| field("verdict", v))?;
    let body = match kind {
        EventKind::Connect => {
            let ev: ConnectEvent = read(bytes);
            let hook = ConnectHook::try_from(ev.hook).map_err(|v| field("hook", v))?;
            let dst_addr = match ev.dst_family as i32 {
                libc::AF_INET => {
                    let [a, b, c, d, ..] = ev.dst_addr;
                    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
                }
                libc::AF_INET6 => IpAddr::V6(Ipv6Addr::from(ev.dst_addr)),
                // A packet socket refused at creation has no destination.
                0 if hook == ConnectHook::Packet => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                _ => return Err(field("dst_family", ev.dst_family)),
            };
            let dst_port =
                u16::try_from(ev.dst_port).map_err(|_| field("dst_port", ev.dst_port))?;
            Body::Connect(Connect {
                hook,
                sock_family: ev.sock_family,
                sock_type: ev.sock_type,
                protocol: ev.protocol,
                dst_addr,
                dst_port,
                rule: ev.rule,
            })
        }
        EventKind::Chmod => {
            let ev: ChmodEvent = read(bytes);
            let syscall = ModeCall::try_from(ev.syscall).map_err(|v| field("syscall", v))?;
            let path = path_arg(ev.path_status, ev.path_len, &ev.path)
                .map_err(|v| field("path_status", v))?;
            Body::Chmod(Chmod {
                syscall,
                mode: ev.mode & 0o7777,
                fd: matches!(
                    syscall,
                    ModeCall::Fchmod
                        | ModeCall::Fchmodat
                        | ModeCall::Fchmodat2
                        | ModeCall::Openat
                        | ModeCall::Openat2
                        | ModeCall::Mknodat
                )
                .then_some(ev.fd),
                flags: ev.flags,
                path,
                name: None,
                rule: ev.rule,
                revert: None,
            })
        }
        EventKind::Exec => {
            let ev: ExecEvent = read(bytes);
            let filename = path_arg(ev.filename_status, ev.filename_len, &ev.filename)
                .map_err(|v| field("filename_status", v))?;
            Body::Exec { filename }
        }
        EventKind::Exit => Body::Exit,
        EventKind::Privilege => {
            let ev: PrivilegeEvent = read(bytes);
            let syscall = PrivilegeCall::try_from(ev.syscall).map_err(|v| field("syscall", v))?;
            let raise = Raise::try_from(ev.raise).map_err(|v| field("raise", v))?;
            let n = (ev.nids as usize).min(ev.ids.len());
            Body::Privilege(Privilege {
                syscall,
                raise,
                ids: ev.ids[..n].to_vec(),
                rule: ev.rule,
            })
        }
    };
    Ok(Event {
        ktime_ns: header.ktime_ns,
        cgroup_id: header.cgroup_id,
        pid: header.pid,
        tid: header.tid,
        uid: header.uid,
        gid: header.gid,
        verdict,
        comm: cstr(&header.comm),
        body,
    })
}

/// Resolve the absolute name a chmod-family call acted on, through `/proc/<pid>`: the fd's link
/// for fchmod, the dirfd's (or the cwd's) link joined with a relative path. Best effort: the
/// process may have exited or closed the fd by the time the event is read.
pub fn resolve_name(proc_root: &Path, pid: u32, chmod: &Chmod) -> Option<PathBuf> {
    let link = |rel: String| std::fs::read_link(proc_root.join(pid.to_string()).join(rel)).ok();
    match (&chmod.path, chmod.fd) {
        (PathArg::Complete(p), _) if p.starts_with('/') => Some(PathBuf::from(p)),
        (PathArg::Complete(p), None) => link("cwd".into()).map(|d| d.join(p)),
        (PathArg::Complete(p), Some(AT_FDCWD)) => link("cwd".into()).map(|d| d.join(p)),
        (PathArg::Complete(p), Some(dirfd)) => link(format!("fd/{dirfd}")).map(|d| d.join(p)),
        (PathArg::None, Some(fd)) => link(format!("fd/{fd}")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn as_bytes<T>(value: &T) -> Vec<u8> {
        // SAFETY: reading the bytes of a plain-old-data value.
        unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }
            .to_vec()
    }

    fn header(kind: EventKind, size: usize, verdict: Verdict) -> EventHeader {
        let mut comm = [0u8; 16];
        comm[..5].copy_from_slice(b"probe");
        EventHeader {
            kind: kind as u32,
            size: size as u32,
            ktime_ns: 7,
            cgroup_id: 42,
            tid: 11,
            pid: 10,
            uid: 1000,
            gid: 1001,
            verdict: verdict as u32,
            _pad: 0,
            comm,
        }
    }

    fn connect(dst_family: u32, dst_addr: [u8; 16]) -> ConnectEvent {
        ConnectEvent {
            header: header(
                EventKind::Connect,
                size_of::<ConnectEvent>(),
                Verdict::Blocked,
            ),
            hook: ConnectHook::Connect6 as u32,
            sock_family: libc::AF_INET6 as u32,
            sock_type: libc::SOCK_STREAM as u32,
            protocol: libc::IPPROTO_TCP as u32,
            dst_family,
            dst_port: 80,
            rule: 0,
            _pad: 0,
            dst_addr,
        }
    }

    #[test]
    fn decodes_a_connect_event() {
        let mut addr = [0u8; 16];
        addr[..4].copy_from_slice(&[169, 254, 169, 254]);
        let ev = decode(&as_bytes(&connect(libc::AF_INET as u32, addr))).unwrap();
        assert_eq!(
            (ev.pid, ev.tid, ev.comm.as_str(), ev.cgroup_id),
            (10, 11, "probe", 42)
        );
        assert_eq!(ev.verdict, Verdict::Blocked);
        let Body::Connect(c) = ev.body else {
            panic!("not a connect event")
        };
        assert_eq!(c.dst_addr, "169.254.169.254".parse::<IpAddr>().unwrap());
        assert_eq!((c.hook, c.dst_port), (ConnectHook::Connect6, 80));
    }

    #[test]
    fn rejects_short_unknown_and_inconsistent_records() {
        let good = as_bytes(&connect(libc::AF_INET as u32, [0; 16]));
        assert_eq!(decode(&good[..10]), Err(DecodeError::Short { len: 10 }));
        assert!(matches!(decode(&good[..80]), Err(DecodeError::Size { .. })));
        let mut unknown = good.clone();
        unknown[..4].copy_from_slice(&99u32.to_ne_bytes());
        assert_eq!(decode(&unknown), Err(DecodeError::UnknownKind(99)));
        let bad_family = as_bytes(&connect(77, [0; 16]));
        assert!(matches!(
            decode(&bad_family),
            Err(DecodeError::Field {
                field: "dst_family",
                ..
            })
        ));
        let mut bad_verdict = good;
        bad_verdict[40..44].copy_from_slice(&0u32.to_ne_bytes());
        assert!(matches!(
            decode(&bad_verdict),
            Err(DecodeError::Field {
                field: "verdict",
                ..
            })
        ));
    }

    fn chmod(syscall: ModeCall, fd: i32, status: u32, path: &str) -> ChmodEvent {
        let mut buf = [0u8; PATH_BYTES];
        buf[..path.len()].copy_from_slice(path.as_bytes());
        ChmodEvent {
            header: header(EventKind::Chmod, size_of::<ChmodEvent>(), Verdict::Allowed),
            syscall: syscall as u32,
            mode: 0o104755,
            fd,
            flags: 0,
            path_status: status,
            path_len: path.len() as u32,
            rule: 3,
            _pad: 0,
            path: buf,
        }
    }

    #[test]
    fn decodes_chmod_events_and_path_states() {
        let ev = decode(&as_bytes(&chmod(
            ModeCall::Fchmodat,
            -100,
            path_status::OK,
            "a/b",
        )))
        .unwrap();
        let Body::Chmod(c) = ev.body else {
            panic!("not a chmod event")
        };
        assert_eq!(
            (c.syscall, c.mode, c.fd, c.rule),
            (ModeCall::Fchmodat, 0o4755, Some(-100), 3)
        );
        assert_eq!(c.path, PathArg::Complete("a/b".into()));

        let ev = decode(&as_bytes(&chmod(
            ModeCall::Chmod,
            -1,
            path_status::TRUNCATED,
            "x",
        )))
        .unwrap();
        let Body::Chmod(c) = ev.body else {
            panic!("not a chmod event")
        };
        assert_eq!((c.fd, c.path), (None, PathArg::Truncated("x".into())));

        let bad = as_bytes(&chmod(ModeCall::Fchmod, 3, 9, ""));
        assert!(matches!(
            decode(&bad),
            Err(DecodeError::Field {
                field: "path_status",
                ..
            })
        ));
    }

    #[test]
    fn resolves_names_through_proc() {
        let dir = std::env::temp_dir().join(format!("sensor-proc-test-{}", std::process::id()));
        let fd_dir = dir.join("5/fd");
        std::fs::create_dir_all(&fd_dir).unwrap();
        std::os::unix::fs::symlink("/data/dir", fd_dir.join("7")).unwrap();
        std::os::unix::fs::symlink("/work", dir.join("5/cwd")).unwrap();
        let c = |path, fd| Chmod {
            syscall: ModeCall::Fchmodat,
            mode: 0,
            fd,
            flags: 0,
            path,
            name: None,
            rule: sensor_common::NO_RULE,
            revert: None,
        };
        let proc = dir.as_path();
        let name = |chmod: &Chmod| resolve_name(proc, 5, chmod);
        assert_eq!(
            name(&c(PathArg::Complete("f".into()), Some(7))),
            Some("/data/dir/f".into())
        );
        assert_eq!(
            name(&c(PathArg::Complete("f".into()), Some(AT_FDCWD))),
            Some("/work/f".into())
        );
        assert_eq!(
            name(&c(PathArg::Complete("/abs".into()), Some(7))),
            Some("/abs".into())
        );
        assert_eq!(name(&c(PathArg::None, Some(7))), Some("/data/dir".into()));
        assert_eq!(name(&c(PathArg::None, Some(8))), None);
        assert_eq!(name(&c(PathArg::Truncated("f".into()), Some(7))), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
