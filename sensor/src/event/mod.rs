//! Events: what the kernel reports, decoded with checks ([`decode`]), as the daemon's own types;
//! their `sensor.v1` form ([`proto`]), the JSON-lines and compact formats ([`json`],
//! [`compact`]), filters ([`filter`]) and time ([`time`]).

pub mod compact;
pub mod decode;
pub mod encode;
pub mod filter;
#[cfg(test)]
mod format_tests;
pub mod json;
pub mod key;
pub mod names;
pub mod proto;
pub mod time;

use std::{net::IpAddr, path::PathBuf};

use sensor_common::{ConnectHook, EventKind, ModeCall, PrivilegeCall, Raise, Verdict};

pub use decode::{DecodeError, decode};

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
    /// The policies (bits) whose matching rules applied to the caller.
    pub policies: u32,
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
    /// The policies (bits) whose matching rules applied to the caller.
    pub policies: u32,
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
    /// The policies (bits) whose matching rules applied to the caller; when no kernel rule
    /// decided and some rule has paths, the caller's policies.
    pub policies: u32,
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

#[cfg(test)]
impl Connect {
    /// A TCP connect to 169.254.169.254:80 (rule 0) for tests.
    pub fn for_test() -> Self {
        Self {
            hook: ConnectHook::Connect4,
            sock_family: 2,
            sock_type: 1,
            protocol: 6,
            dst_addr: IpAddr::from([169, 254, 169, 254]),
            dst_port: 80,
            rule: 0,
            policies: 1,
        }
    }
}

#[cfg(test)]
impl Chmod {
    /// An fchmodat event body for tests.
    pub fn for_test(path: PathArg, fd: Option<i32>, mode: u32) -> Self {
        Self {
            syscall: ModeCall::Fchmodat,
            mode,
            fd,
            flags: 0,
            path,
            name: None,
            rule: sensor_common::NO_RULE,
            policies: 0,
            revert: None,
        }
    }
}
