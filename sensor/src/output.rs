//! The JSON lines event format written by `sensor run` (one object per line on stdout).
//! Field names are stable and documented in README.md ("Event format").

use std::{
    net::IpAddr,
    time::{Duration, SystemTime},
};

use serde::Serialize;

use crate::{
    destinations::Destination,
    event::{Body, Chmod, Connect, Event, PathArg},
};

#[derive(Serialize)]
struct JsonEvent<'a> {
    kind: &'static str,
    verdict: &'static str,
    /// Wall-clock time (RFC 3339, UTC, nanoseconds).
    time: String,
    /// Kernel CLOCK_MONOTONIC timestamp.
    ktime_ns: u64,
    pid: u32,
    tid: u32,
    uid: u32,
    gid: u32,
    comm: &'a str,
    cgroup_id: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    connect: Option<JsonConnect>,
    #[serde(skip_serializing_if = "Option::is_none")]
    chmod: Option<JsonChmod<'a>>,
}

#[derive(Serialize)]
struct JsonConnect {
    hook: &'static str,
    socket_family: String,
    socket_type: String,
    protocol: String,
    dst_addr: IpAddr,
    dst_port: u16,
    rule: String,
}

#[derive(Serialize)]
struct JsonChmod<'a> {
    syscall: &'static str,
    /// Requested mode, four octal digits.
    mode: String,
    /// Set-id bits in the requested mode: "setuid", "setgid".
    setid: Vec<&'static str>,
    /// Whether the requested mode carries S_ISUID or S_ISGID.
    sets_setid: bool,
    /// fchmod: the fd; fchmodat/fchmodat2: the dirfd (-100 = AT_FDCWD); chmod: absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    fd: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    flags: Option<u32>,
    /// The path argument as passed (absent for fchmod or when unreadable).
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<&'a str>,
    path_truncated: bool,
    path_unreadable: bool,
    /// Absolute name of the file (null when it could no longer be resolved).
    name: Option<String>,
}

/// Converts kernel monotonic timestamps to wall-clock time.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// Wall time minus monotonic time, in nanoseconds.
    offset_ns: i128,
}

impl Clock {
    pub fn now() -> Self {
        let mono = clock_ns(libc::CLOCK_MONOTONIC);
        let real = clock_ns(libc::CLOCK_REALTIME);
        Self {
            offset_ns: real - mono,
        }
    }

    pub fn wall(&self, ktime_ns: u64) -> SystemTime {
        let ns = i128::from(ktime_ns) + self.offset_ns;
        SystemTime::UNIX_EPOCH + Duration::from_nanos(u64::try_from(ns).unwrap_or(0))
    }
}

fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid clock id and timespec pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

fn named(value: u32, names: &[(i32, &str)], prefix: &str) -> String {
    names
        .iter()
        .find(|(n, _)| *n as u32 == value)
        .map_or_else(|| format!("{prefix}{value}"), |(_, s)| (*s).to_owned())
}

fn connect_json(c: &Connect, rules: &[Destination]) -> JsonConnect {
    JsonConnect {
        hook: c.hook.as_str(),
        socket_family: named(
            c.sock_family,
            &[(libc::AF_INET, "inet"), (libc::AF_INET6, "inet6")],
            "family-",
        ),
        socket_type: named(
            c.sock_type,
            &[
                (libc::SOCK_STREAM, "stream"),
                (libc::SOCK_DGRAM, "dgram"),
                (libc::SOCK_RAW, "raw"),
            ],
            "type-",
        ),
        protocol: named(
            c.protocol,
            &[
                (libc::IPPROTO_TCP, "tcp"),
                (libc::IPPROTO_UDP, "udp"),
                (libc::IPPROTO_ICMP, "icmp"),
                (libc::IPPROTO_ICMPV6, "icmpv6"),
            ],
            "proto-",
        ),
        dst_addr: c.dst_addr,
        dst_port: c.dst_port,
        rule: rules
            .get(c.rule as usize)
            .map_or_else(|| format!("rule-{}", c.rule), |d| d.name.to_owned()),
    }
}

fn chmod_json(c: &Chmod) -> JsonChmod<'_> {
    let mut setid = Vec::new();
    if c.mode & 0o4000 != 0 {
        setid.push("setuid");
    }
    if c.mode & 0o2000 != 0 {
        setid.push("setgid");
    }
    JsonChmod {
        syscall: c.syscall.as_str(),
        mode: format!("{:04o}", c.mode),
        sets_setid: !setid.is_empty(),
        setid,
        fd: c.fd,
        flags: (c.syscall == sensor_common::ChmodSyscall::Fchmodat2).then_some(c.flags),
        path: c.path.text(),
        path_truncated: matches!(c.path, PathArg::Truncated(_)),
        path_unreadable: c.path == PathArg::Unreadable,
        name: c.name.as_ref().map(|p| p.display().to_string()),
    }
}

/// One event as a JSON object (no trailing newline).
pub fn to_json(event: &Event, clock: &Clock, rules: &[Destination]) -> String {
    let json = JsonEvent {
        kind: event.kind().as_str(),
        verdict: event.verdict.as_str(),
        time: humantime::format_rfc3339_nanos(clock.wall(event.ktime_ns)).to_string(),
        ktime_ns: event.ktime_ns,
        pid: event.pid,
        tid: event.tid,
        uid: event.uid,
        gid: event.gid,
        comm: &event.comm,
        cgroup_id: event.cgroup_id,
        connect: match &event.body {
            Body::Connect(c) => Some(connect_json(c, rules)),
            Body::Chmod(_) => None,
        },
        chmod: match &event.body {
            Body::Chmod(c) => Some(chmod_json(c)),
            Body::Connect(_) => None,
        },
    };
    serde_json::to_string(&json).expect("event serialization cannot fail")
}

#[cfg(test)]
mod tests {
    use sensor_common::{ChmodSyscall, ConnectHook, Verdict};
    use serde_json::Value;

    use super::*;
    use crate::destinations::metadata_endpoints;

    fn event(body: Body) -> Event {
        Event {
            ktime_ns: 5,
            cgroup_id: 9,
            pid: 3,
            tid: 4,
            uid: 0,
            gid: 0,
            verdict: Verdict::Blocked,
            comm: "curl".into(),
            body,
        }
    }

    #[test]
    fn connect_fields_are_stable() {
        let ev = event(Body::Connect(Connect {
            hook: ConnectHook::Sendmsg4,
            sock_family: libc::AF_INET as u32,
            sock_type: libc::SOCK_DGRAM as u32,
            protocol: libc::IPPROTO_UDP as u32,
            dst_addr: "169.254.169.254".parse().unwrap(),
            dst_port: 53,
            rule: 0,
        }));
        let v: Value =
            serde_json::from_str(&to_json(&ev, &Clock::now(), &metadata_endpoints())).unwrap();
        assert_eq!(v["kind"], "connect");
        assert_eq!(v["verdict"], "blocked");
        assert_eq!(
            (
                v["pid"].as_u64(),
                v["tid"].as_u64(),
                v["cgroup_id"].as_u64()
            ),
            (Some(3), Some(4), Some(9))
        );
        let c = &v["connect"];
        assert_eq!(
            (
                c["hook"].as_str(),
                c["protocol"].as_str(),
                c["socket_type"].as_str()
            ),
            (Some("sendmsg4"), Some("udp"), Some("dgram"))
        );
        assert_eq!(
            (c["dst_addr"].as_str(), c["dst_port"].as_u64()),
            (Some("169.254.169.254"), Some(53))
        );
        assert_eq!(c["rule"], "metadata-imds-v4");
        assert!(v.get("chmod").is_none());
        assert!(v["time"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn chmod_fields_are_stable() {
        let ev = event(Body::Chmod(Chmod {
            syscall: ChmodSyscall::Fchmodat,
            mode: 0o2750,
            fd: Some(-100),
            flags: 0,
            path: PathArg::Complete("x".into()),
            name: Some("/tmp/x".into()),
        }));
        let v: Value = serde_json::from_str(&to_json(&ev, &Clock::now(), &[])).unwrap();
        let c = &v["chmod"];
        assert_eq!(c["mode"], "2750");
        assert_eq!(c["setid"], serde_json::json!(["setgid"]));
        assert_eq!(c["sets_setid"], true);
        assert_eq!(
            (c["fd"].as_i64(), c["path"].as_str(), c["name"].as_str()),
            (Some(-100), Some("x"), Some("/tmp/x"))
        );
        assert!(c.get("flags").is_none());
    }
}
