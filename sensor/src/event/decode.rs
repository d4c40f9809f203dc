//! Checked decoding of ring buffer records into [`Event`]s.
//!
//! Kernel bytes are never transmuted into enums: the length is checked, `kind` is read as a
//! `u32` and converted with `TryFrom`, every enum field likewise.

use std::{
    mem::size_of,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use sensor_common::{
    ChmodEvent, ConnectEvent, ConnectHook, EventHeader, EventKind, ExecEvent, ExitEvent, ModeCall,
    PATH_BYTES, PrivilegeCall, PrivilegeEvent, Raise, Verdict, path_status,
};

use super::{Body, Chmod, Connect, Event, PathArg, Privilege};

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
                policies: ev.policies,
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
                // fchmodat2's flags; the mode the file had (path_chmod), as bits of a mode
                // like `mode`; nothing for the other calls (the kernel programs write 0).
                flags: match syscall {
                    ModeCall::Fchmodat2 => ev.flags,
                    ModeCall::LsmPathChmod => ev.flags & 0o7777,
                    _ => 0,
                },
                path,
                name: None,
                rule: ev.rule,
                policies: ev.policies,
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
                policies: ev.policies,
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
            policies: 1,
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
            policies: 1,
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

    /// Found by the `event_decode` fuzz target: `flags` of a call that has none, or an old mode
    /// with file-type bits, made events whose JSON line `sensor tail --file` refused or read
    /// back different.
    #[test]
    fn chmod_flags_are_kept_only_where_the_call_has_them() {
        let flags = |syscall, raw| {
            let mut ev = chmod(syscall, -1, path_status::OK, "f");
            ev.flags = raw;
            match decode(&as_bytes(&ev)).unwrap().body {
                Body::Chmod(c) => c.flags,
                _ => panic!("not a chmod event"),
            }
        };
        assert_eq!(flags(ModeCall::Fchmodat2, 0x100), 0x100);
        assert_eq!(flags(ModeCall::LsmPathChmod, 0o100755), 0o755);
        for call in [ModeCall::Chmod, ModeCall::Fchmodat, ModeCall::LsmPathMknod] {
            assert_eq!(flags(call, 0x0800_0000), 0, "{call:?}");
        }
    }
}
