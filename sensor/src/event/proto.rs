//! Domain <-> `sensor.v1` conversions, all in one place.

use sensor_common::{ConnectHook, EventKind, ModeCall, NO_RULE, PrivilegeCall, Raise, Verdict};
use sensor_proto::v1 as pb;

use crate::{
    attribution::procs::ProcInfo,
    event::{Body, Event, PathArg, Privilege},
    pipeline::revert::Revert,
    policy::{ActiveRules, Match},
};

/// Who reports: the node's name and the cluster's (`--cluster-name`, empty when not set), in
/// every event, including the loss and policy records the daemon makes itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    pub node: String,
    pub cluster: String,
}

impl Origin {
    pub fn new(node: &str, cluster: &str) -> Self {
        Self {
            node: node.to_owned(),
            cluster: cluster.to_owned(),
        }
    }

    /// A node outside any named cluster (tests, tools).
    pub fn node(node: &str) -> Self {
        Self::new(node, "")
    }
}

/// A rule match in its `sensor.v1` form.
pub fn rule_match(m: &Match) -> pb::RuleMatch {
    pb::RuleMatch {
        policy: m.policy.clone(),
        rule: m.rule.clone(),
        action: m.action.as_str().to_owned(),
    }
}

pub fn verdict(v: Verdict) -> pb::Verdict {
    match v {
        Verdict::Blocked => pb::Verdict::Blocked,
        Verdict::Audited => pb::Verdict::Audited,
        Verdict::Allowed => pb::Verdict::Allowed,
        Verdict::Killed => pb::Verdict::Killed,
    }
}

pub fn kind(k: EventKind) -> pb::EventKind {
    match k {
        EventKind::Connect => pb::EventKind::Connect,
        EventKind::Chmod => pb::EventKind::Chmod,
        EventKind::Exec => pb::EventKind::Exec,
        EventKind::Exit => pb::EventKind::Exit,
        EventKind::Privilege => pb::EventKind::Privilege,
    }
}

fn hook(h: ConnectHook) -> pb::ConnectHook {
    match h {
        ConnectHook::Connect4 => pb::ConnectHook::Connect4,
        ConnectHook::Connect6 => pb::ConnectHook::Connect6,
        ConnectHook::Sendmsg4 => pb::ConnectHook::Sendmsg4,
        ConnectHook::Sendmsg6 => pb::ConnectHook::Sendmsg6,
        ConnectHook::Egress => pb::ConnectHook::Egress,
        ConnectHook::Syscall => pb::ConnectHook::Syscall,
        ConnectHook::Packet => pb::ConnectHook::Packet,
        ConnectHook::SocketConnect => pb::ConnectHook::SocketConnect,
        ConnectHook::SocketSendmsg => pb::ConnectHook::SocketSendmsg,
    }
}

fn syscall(s: ModeCall) -> pb::ChmodSyscall {
    match s {
        ModeCall::Chmod => pb::ChmodSyscall::Chmod,
        ModeCall::Fchmod => pb::ChmodSyscall::Fchmod,
        ModeCall::Fchmodat => pb::ChmodSyscall::Fchmodat,
        ModeCall::Fchmodat2 => pb::ChmodSyscall::Fchmodat2,
        ModeCall::LsmPathChmod => pb::ChmodSyscall::LsmPathChmod,
        ModeCall::LsmPathMknod => pb::ChmodSyscall::LsmPathMknod,
        ModeCall::Open => pb::ChmodSyscall::Open,
        ModeCall::Openat => pb::ChmodSyscall::Openat,
        ModeCall::Openat2 => pb::ChmodSyscall::Openat2,
        ModeCall::Creat => pb::ChmodSyscall::Creat,
        ModeCall::Mknod => pb::ChmodSyscall::Mknod,
        ModeCall::Mknodat => pb::ChmodSyscall::Mknodat,
    }
}

/// The kind of a proto event, from its body.
pub fn kind_of(event: &pb::Event) -> pb::EventKind {
    use pb::event::Body as B;
    match &event.body {
        Some(B::Connect(_)) => pb::EventKind::Connect,
        Some(B::Chmod(_)) => pb::EventKind::Chmod,
        Some(B::Privilege(_)) => pb::EventKind::Privilege,
        Some(B::Exec(_)) => pb::EventKind::Exec,
        Some(B::Exit(_)) => pb::EventKind::Exit,
        Some(B::Lost(_)) => pb::EventKind::Lost,
        Some(B::PolicyChange(_)) => pb::EventKind::Policy,
        Some(B::Posture(_)) => pb::EventKind::Posture,
        None => pb::EventKind::Unspecified,
    }
}

/// The rules that matched (the deciding one first) and the body of a kernel event in its
/// `sensor.v1` form; `process`: what the process cache knows (an exec event's arguments). The
/// event's strings move into the body (its path and name are left empty).
pub fn matches_and_body(
    event: &mut Event,
    rules: &ActiveRules,
    process: Option<&ProcInfo>,
) -> (Vec<Match>, pb::event::Body) {
    let body = std::mem::replace(&mut event.body, Body::Exit);
    let event: &Event = event;
    match body {
        Body::Connect(c) => (
            if c.hook == ConnectHook::Packet {
                rules.packet_matches(c.policies)
            } else {
                rules.connect_matches(c.dst_addr, c.dst_port, c.policies)
            },
            pb::event::Body::Connect(pb::Connect {
                hook: hook(c.hook) as i32,
                socket_family: c.sock_family,
                socket_type: c.sock_type,
                protocol: c.protocol,
                dst_addr: c.dst_addr.to_string(),
                dst_port: u32::from(c.dst_port),
            }),
        ),
        Body::Chmod(c) => {
            let (path, state) = match c.path {
                PathArg::None => (String::new(), pb::PathState::None),
                PathArg::Complete(p) => (p, pb::PathState::Complete),
                PathArg::Truncated(p) => (p, pb::PathState::Truncated),
                PathArg::Unreadable => (String::new(), pb::PathState::Unreadable),
                PathArg::Name(p) => (p, pb::PathState::Name),
            };
            (
                if c.rule == NO_RULE {
                    Vec::new()
                } else {
                    rules.chmod_matches(c.rule, c.mode, c.policies)
                },
                pb::event::Body::Chmod(pb::Chmod {
                    syscall: syscall(c.syscall) as i32,
                    mode: c.mode,
                    fd: c.fd,
                    flags: c.flags,
                    path,
                    path_state: state as i32,
                    name: c
                        .name
                        .map(|n| {
                            n.into_os_string()
                                .into_string()
                                .unwrap_or_else(|n| n.to_string_lossy().into_owned())
                        })
                        .unwrap_or_default(),
                    revert: c.revert.as_ref().map(revert),
                }),
            )
        }
        Body::Exec { filename } => (
            Vec::new(),
            pb::event::Body::Exec(pb::Exec {
                exe: filename.text().unwrap_or_default().to_owned(),
                args: process.map(|p| p.args.clone()).unwrap_or_default(),
            }),
        ),
        Body::Exit => (Vec::new(), pb::event::Body::Exit(pb::Exit { code: None })),
        Body::Privilege(p) => (
            if p.rule == NO_RULE {
                Vec::new()
            } else {
                rules.privilege_matches(p.rule, p.raise as u32, p.policies)
            },
            pb::event::Body::Privilege(privilege(event, &p)),
        ),
    }
}

/// A privilege raise: the raise kind, the id before (the caller's real one) and what the call
/// asked for, in words per kind.
fn privilege(event: &Event, p: &Privilege) -> pb::PrivilegeChange {
    let (id, real) = if p.raise == Raise::SetgidRoot {
        ("gid", event.gid)
    } else {
        ("uid", event.uid)
    };
    let ids: Vec<String> = p
        .ids
        .iter()
        .map(|&i| {
            if i == u32::MAX {
                "-1".into()
            } else {
                i.to_string()
            }
        })
        .collect();
    let id_at = |i: usize| ids.get(i).map_or("?", String::as_str);
    let call = p.syscall.as_str();
    let new_value = match p.raise {
        // The capabilities the call would add, as a mask.
        Raise::Capset => format!(
            "{call}(gains 0x{:x})",
            u64::from(p.ids.first().copied().unwrap_or(0))
                | u64::from(p.ids.get(1).copied().unwrap_or(0)) << 32
        ),
        // Kill tier: the ids the exec left (real uid, effective uid and gid).
        Raise::SetidExec if p.syscall == PrivilegeCall::Execve => format!(
            "execve(uid {}, euid {}, egid {})",
            id_at(0),
            id_at(1),
            id_at(2)
        ),
        Raise::SetidExec => format!(
            "{call}(owner {}, group {}, mode {:o})",
            id_at(0),
            id_at(1),
            p.ids.get(2).copied().unwrap_or(0)
        ),
        Raise::FileCaps => format!("{call}(security.capability)"),
        Raise::SetuidRoot | Raise::SetgidRoot => format!("{call}({})", ids.join(", ")),
    };
    pb::PrivilegeChange {
        what: p.raise.as_str().to_owned(),
        old_value: format!("{id} {real}"),
        new_value,
    }
}

fn revert(r: &Revert) -> pb::ChmodRevert {
    match r {
        Revert::Reverted {
            path,
            before,
            after,
        } => pb::ChmodRevert {
            state: pb::RevertState::Reverted as i32,
            detail: path.display().to_string(),
            mode_before: *before,
            mode_after: *after,
        },
        Revert::NotNeeded(why) => pb::ChmodRevert {
            state: pb::RevertState::NotNeeded as i32,
            detail: why.clone(),
            ..Default::default()
        },
        Revert::Failed(why) => pb::ChmodRevert {
            state: pb::RevertState::Failed as i32,
            detail: why.clone(),
            ..Default::default()
        },
    }
}

/// A `policy` event: a policy applied (`accepted`) or refused, with its errors.
pub fn policy_change(
    origin: &Origin,
    generation: u64,
    accepted: bool,
    source: &str,
    policy: &str,
    errors: Vec<String>,
) -> pb::Event {
    pb::Event {
        node: origin.node.clone(),
        cluster: origin.cluster.clone(),
        time_unix_ns: super::time::now_unix_ns(),
        policy: policy.to_owned(),
        enrichment: pb::Enrichment::Complete as i32,
        body: Some(pb::event::Body::PolicyChange(pb::PolicyChange {
            generation,
            accepted,
            source: source.to_owned(),
            policy: policy.to_owned(),
            errors,
        })),
        ..Default::default()
    }
}

/// An in-band loss record.
pub fn lost(stage: pb::LossStage, count: u64, origin: &Origin, time_unix_ns: i64) -> pb::Event {
    pb::Event {
        node: origin.node.clone(),
        cluster: origin.cluster.clone(),
        time_unix_ns,
        body: Some(pb::event::Body::Lost(pb::Lost {
            count,
            stage: stage as i32,
            first_seq: 0,
            last_seq: 0,
        })),
        ..Default::default()
    }
}
