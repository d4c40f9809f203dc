//! Event output formats: JSON lines (stable field names, documented in README.md "Event
//! format"), parsed back for offline replay, and the compact one-line text of `sensor tail`.

use std::{
    fmt::Write as _,
    time::{Duration, SystemTime},
};

use sensor_proto::v1 as pb;
use serde::{Deserialize, Serialize};

use crate::event::proto::kind_of;

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

    /// Nanoseconds since the Unix epoch for a kernel monotonic timestamp.
    pub fn wall_unix_ns(&self, ktime_ns: u64) -> i64 {
        i64::try_from(i128::from(ktime_ns) + self.offset_ns).unwrap_or(0)
    }
}

/// Wall-clock nanoseconds since the Unix epoch, now.
pub fn now_unix_ns() -> i64 {
    i64::try_from(clock_ns(libc::CLOCK_REALTIME)).unwrap_or(0)
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

/// RFC 3339 UTC with nanoseconds.
pub fn rfc3339(unix_ns: i64) -> String {
    let t = SystemTime::UNIX_EPOCH + Duration::from_nanos(u64::try_from(unix_ns).unwrap_or(0));
    humantime::format_rfc3339_nanos(t).to_string()
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonEvent {
    #[serde(default, skip_serializing_if = "is_zero")]
    seq: u64,
    kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    verdict: Option<String>,
    time: String,
    #[serde(default)]
    ktime_ns: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    node: String,
    #[serde(default)]
    pid: u32,
    #[serde(default)]
    tid: u32,
    #[serde(default)]
    uid: u32,
    #[serde(default)]
    gid: u32,
    #[serde(default)]
    comm: String,
    #[serde(default)]
    cgroup_id: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exe: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    args: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ppid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    euid: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    ancestors: Vec<JsonAncestor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pod: Option<JsonPod>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    enrichment: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    policy: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    rule: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    connect: Option<JsonConnect>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    chmod: Option<JsonChmod>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lost: Option<JsonLost>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exec: Option<JsonExec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    privilege: Option<JsonPrivilege>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exit: Option<JsonExit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    policy_change: Option<JsonPolicyChange>,
    /// Exporter flood control: this line stands for `count` identical events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    repeat: Option<JsonRepeat>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonRepeat {
    count: u64,
    first_time: String,
    last_time: String,
    first_seq: u64,
    last_seq: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonPolicyChange {
    generation: u64,
    accepted: bool,
    source: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    policy: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    errors: Vec<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonAncestor {
    pid: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    exe: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    comm: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonPrivilege {
    /// What changed (`setuid`, `setgid`, `capset`, `setid-exec`, ...).
    what: String,
    #[serde(default)]
    old_value: String,
    #[serde(default)]
    new_value: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonExec {
    /// The file passed to exec.
    exe: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonExit {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    code: Option<i32>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonPod {
    namespace: String,
    name: String,
    #[serde(default)]
    uid: String,
    #[serde(default, skip_serializing_if = "std::collections::HashMap::is_empty")]
    labels: std::collections::HashMap<String, String>,
    #[serde(default)]
    container_name: String,
    #[serde(default)]
    container_id: String,
    #[serde(default)]
    image: String,
    #[serde(default)]
    owner_kind: String,
    #[serde(default)]
    owner_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    image_id: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonConnect {
    hook: String,
    socket_family: String,
    socket_type: String,
    protocol: String,
    dst_addr: String,
    dst_port: u16,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonChmod {
    syscall: String,
    /// Requested mode, four octal digits.
    mode: String,
    /// Set-id bits in the requested mode (derived from `mode`).
    #[serde(default)]
    setid: Vec<String>,
    #[serde(default)]
    sets_setid: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fd: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    flags: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    path: Option<String>,
    #[serde(default)]
    path_truncated: bool,
    #[serde(default)]
    path_unreadable: bool,
    /// LSM tier: the file's own name (last component), instead of a path argument.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    file_name: Option<String>,
    /// LSM tier (path_chmod): the mode the file had, four octal digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mode_before: Option<String>,
    #[serde(default)]
    name: Option<String>,
    /// Kill tier: what the daemon did about the file afterwards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    revert: Option<JsonRevert>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonRevert {
    /// `reverted`, `not_needed` or `failed`.
    state: String,
    detail: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mode_before: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mode_after: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonLost {
    count: u64,
    stage: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    first_seq: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    last_seq: u64,
}

/// Names of numeric socket attributes, both ways; unknown values are written `<prefix>N`.
struct Names {
    prefix: &'static str,
    table: &'static [(i32, &'static str)],
}

const FAMILIES: Names = Names {
    prefix: "family-",
    table: &[
        (libc::AF_INET, "inet"),
        (libc::AF_INET6, "inet6"),
        (libc::AF_PACKET, "packet"),
    ],
};
const SOCK_TYPES: Names = Names {
    prefix: "type-",
    table: &[
        (libc::SOCK_STREAM, "stream"),
        (libc::SOCK_DGRAM, "dgram"),
        (libc::SOCK_RAW, "raw"),
    ],
};
const PROTOCOLS: Names = Names {
    prefix: "proto-",
    table: &[
        (libc::IPPROTO_TCP, "tcp"),
        (libc::IPPROTO_UDP, "udp"),
        (libc::IPPROTO_ICMP, "icmp"),
        (libc::IPPROTO_ICMPV6, "icmpv6"),
    ],
};

impl Names {
    fn name(&self, v: u32) -> String {
        self.table
            .iter()
            .find(|(n, _)| *n as u32 == v)
            .map_or_else(|| format!("{}{v}", self.prefix), |(_, s)| (*s).to_owned())
    }

    fn value(&self, s: &str) -> Option<u32> {
        self.table
            .iter()
            .find(|(_, name)| *name == s)
            .map(|(n, _)| *n as u32)
            .or_else(|| s.strip_prefix(self.prefix)?.parse().ok())
    }
}

/// Lower-case name of a proto enum value without its prefix (`VERDICT_BLOCKED` -> `blocked`).
fn enum_name(full: &str, prefix: &str) -> String {
    full.strip_prefix(prefix)
        .unwrap_or(full)
        .to_ascii_lowercase()
}

fn enum_value(name: &str, prefix: &str) -> String {
    format!("{prefix}{}", name.to_ascii_uppercase())
}

fn revert_from_json(r: JsonRevert) -> Result<pb::ChmodRevert, String> {
    let state = pb::RevertState::from_str_name(&enum_value(&r.state, "REVERT_STATE_"))
        .ok_or_else(|| format!("chmod.revert.state '{}': unknown", r.state))?;
    let mode = |field: &str, m: Option<String>| match m {
        None => Ok(0),
        Some(text) => u32::from_str_radix(&text, 8)
            .ok()
            .filter(|m| *m <= 0o7777)
            .ok_or_else(|| format!("chmod.revert.{field} '{text}': not an octal mode")),
    };
    Ok(pb::ChmodRevert {
        state: state as i32,
        detail: r.detail,
        mode_before: mode("mode_before", r.mode_before)?,
        mode_after: mode("mode_after", r.mode_after)?,
    })
}

pub fn verdict_name(v: pb::Verdict) -> String {
    enum_name(v.as_str_name(), "VERDICT_")
}

pub fn kind_name(k: pb::EventKind) -> String {
    enum_name(k.as_str_name(), "EVENT_KIND_")
}

pub fn parse_verdict(s: &str) -> Option<pb::Verdict> {
    pb::Verdict::from_str_name(&enum_value(s, "VERDICT_"))
        .filter(|v| *v != pb::Verdict::Unspecified)
}

pub fn parse_kind(s: &str) -> Option<pb::EventKind> {
    pb::EventKind::from_str_name(&enum_value(s, "EVENT_KIND_"))
        .filter(|k| *k != pb::EventKind::Unspecified)
}

fn setid_names(mode: u32) -> Vec<String> {
    let mut v = Vec::new();
    if mode & 0o4000 != 0 {
        v.push("setuid".to_owned());
    }
    if mode & 0o2000 != 0 {
        v.push("setgid".to_owned());
    }
    v
}

fn to_json_event(e: &pb::Event) -> JsonEvent {
    use pb::event::Body as B;
    let p = e.process.clone().unwrap_or_default();
    let mut j = JsonEvent {
        seq: e.seq,
        kind: kind_name(kind_of(e)),
        verdict: (e.verdict() != pb::Verdict::Unspecified).then(|| verdict_name(e.verdict())),
        time: rfc3339(e.time_unix_ns),
        ktime_ns: e.ktime_ns,
        node: e.node.clone(),
        pid: p.pid,
        tid: p.tid,
        uid: p.uid,
        gid: p.gid,
        comm: p.comm,
        cgroup_id: p.cgroup_id,
        exe: (!p.exe.is_empty()).then_some(p.exe),
        args: p.args,
        ppid: (p.ppid != 0).then_some(p.ppid),
        euid: p.euid,
        ancestors: p
            .ancestors
            .into_iter()
            .map(|a| JsonAncestor {
                pid: a.pid,
                exe: a.exe,
                comm: a.comm,
            })
            .collect(),
        pod: e.pod.clone().map(|pod| JsonPod {
            namespace: pod.namespace,
            name: pod.name,
            uid: pod.uid,
            labels: pod.labels,
            container_name: pod.container_name,
            container_id: pod.container_id,
            image: pod.image,
            owner_kind: pod.owner_kind,
            owner_name: pod.owner_name,
            image_id: pod.image_id,
        }),
        enrichment: (e.enrichment() != pb::Enrichment::Unspecified)
            .then(|| enum_name(e.enrichment().as_str_name(), "ENRICHMENT_")),
        policy: e.policy.clone(),
        rule: e.rule.clone(),
        repeat: e.repeat.as_ref().map(|r| JsonRepeat {
            count: r.count,
            first_time: rfc3339(r.first_time_unix_ns),
            last_time: rfc3339(r.last_time_unix_ns),
            first_seq: r.first_seq,
            last_seq: r.last_seq,
        }),
        ..Default::default()
    };
    match &e.body {
        Some(B::Connect(c)) => {
            j.connect = Some(JsonConnect {
                hook: enum_name(c.hook().as_str_name(), "CONNECT_HOOK_"),
                socket_family: FAMILIES.name(c.socket_family),
                socket_type: SOCK_TYPES.name(c.socket_type),
                protocol: PROTOCOLS.name(c.protocol),
                dst_addr: c.dst_addr.clone(),
                dst_port: u16::try_from(c.dst_port).unwrap_or(0),
            })
        }
        Some(B::Chmod(c)) => {
            let setid = setid_names(c.mode);
            j.chmod = Some(JsonChmod {
                syscall: enum_name(c.syscall().as_str_name(), "CHMOD_SYSCALL_"),
                mode: format!("{:04o}", c.mode),
                sets_setid: !setid.is_empty(),
                setid,
                fd: c.fd,
                flags: (c.syscall() == pb::ChmodSyscall::Fchmodat2).then_some(c.flags),
                path: matches!(
                    c.path_state(),
                    pb::PathState::Complete | pb::PathState::Truncated
                )
                .then(|| c.path.clone()),
                path_truncated: c.path_state() == pb::PathState::Truncated,
                path_unreadable: c.path_state() == pb::PathState::Unreadable,
                file_name: (c.path_state() == pb::PathState::Name).then(|| c.path.clone()),
                mode_before: (c.syscall() == pb::ChmodSyscall::LsmPathChmod)
                    .then(|| format!("{:04o}", c.flags)),
                name: (!c.name.is_empty()).then(|| c.name.clone()),
                revert: c.revert.as_ref().map(|r| {
                    let reverted = r.state() == pb::RevertState::Reverted;
                    JsonRevert {
                        state: enum_name(r.state().as_str_name(), "REVERT_STATE_"),
                        detail: r.detail.clone(),
                        mode_before: reverted.then(|| format!("{:04o}", r.mode_before)),
                        mode_after: reverted.then(|| format!("{:04o}", r.mode_after)),
                    }
                }),
            })
        }
        Some(B::Lost(l)) => {
            j.lost = Some(JsonLost {
                count: l.count,
                stage: enum_name(l.stage().as_str_name(), "LOSS_STAGE_"),
                first_seq: l.first_seq,
                last_seq: l.last_seq,
            })
        }
        Some(B::Exec(x)) => j.exec = Some(JsonExec { exe: x.exe.clone() }),
        Some(B::Privilege(p)) => {
            j.privilege = Some(JsonPrivilege {
                what: p.what.clone(),
                old_value: p.old_value.clone(),
                new_value: p.new_value.clone(),
            })
        }
        Some(B::PolicyChange(p)) => {
            j.policy_change = Some(JsonPolicyChange {
                generation: p.generation,
                accepted: p.accepted,
                source: p.source.clone(),
                policy: p.policy.clone(),
                errors: p.errors.clone(),
            })
        }
        Some(B::Exit(x)) => j.exit = Some(JsonExit { code: x.code }),
        None => {}
    }
    j
}

/// An RFC 3339 time as nanoseconds since the Unix epoch; the error names `field`.
fn parse_time(field: &str, text: &str) -> Result<i64, String> {
    humantime::parse_rfc3339(text)
        .map_err(|e| format!("{field} '{text}': {e}"))?
        .duration_since(SystemTime::UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_nanos()).ok())
        .ok_or_else(|| format!("{field} '{text}': before 1970"))
}

/// One event as a JSON object (no trailing newline).
pub fn to_json(event: &pb::Event) -> String {
    serde_json::to_string(&to_json_event(event)).expect("event serialization cannot fail")
}

/// Parse one JSON line written by [`to_json`]; the error says which field is wrong.
pub fn from_json(line: &str) -> Result<pb::Event, String> {
    let j: JsonEvent = serde_json::from_str(line).map_err(|e| e.to_string())?;
    let time_unix_ns = parse_time("time", &j.time)?;
    let repeat = match &j.repeat {
        None => None,
        Some(r) => Some(pb::Repeat {
            count: r.count,
            first_time_unix_ns: parse_time("repeat.first_time", &r.first_time)?,
            last_time_unix_ns: parse_time("repeat.last_time", &r.last_time)?,
            first_seq: r.first_seq,
            last_seq: r.last_seq,
        }),
    };
    let verdict = match &j.verdict {
        None => pb::Verdict::Unspecified,
        Some(v) => parse_verdict(v).ok_or_else(|| format!("verdict '{v}': unknown"))?,
    };
    let kind = parse_kind(&j.kind).ok_or_else(|| format!("kind '{}': unknown", j.kind))?;
    let enrichment = match &j.enrichment {
        None => pb::Enrichment::Unspecified,
        Some(s) => pb::Enrichment::from_str_name(&enum_value(s, "ENRICHMENT_"))
            .ok_or_else(|| format!("enrichment '{s}': unknown"))?,
    };
    let missing = |what: &str| format!("kind '{}' needs a '{what}' object", j.kind);
    let body = match kind {
        pb::EventKind::Connect => {
            let c = j.connect.ok_or_else(|| missing("connect"))?;
            let bad = |field: &str, v: &str| format!("connect.{field} '{v}': unknown");
            pb::event::Body::Connect(pb::Connect {
                hook: pb::ConnectHook::from_str_name(&enum_value(&c.hook, "CONNECT_HOOK_"))
                    .ok_or_else(|| bad("hook", &c.hook))? as i32,
                socket_family: FAMILIES
                    .value(&c.socket_family)
                    .ok_or_else(|| bad("socket_family", &c.socket_family))?,
                socket_type: SOCK_TYPES
                    .value(&c.socket_type)
                    .ok_or_else(|| bad("socket_type", &c.socket_type))?,
                protocol: PROTOCOLS
                    .value(&c.protocol)
                    .ok_or_else(|| bad("protocol", &c.protocol))?,
                dst_addr: c.dst_addr,
                dst_port: u32::from(c.dst_port),
            })
        }
        pb::EventKind::Chmod => {
            let c = j.chmod.ok_or_else(|| missing("chmod"))?;
            let syscall =
                pb::ChmodSyscall::from_str_name(&enum_value(&c.syscall, "CHMOD_SYSCALL_"))
                    .ok_or_else(|| format!("chmod.syscall '{}': unknown", c.syscall))?;
            let mode = u32::from_str_radix(&c.mode, 8)
                .ok()
                .filter(|m| *m <= 0o7777)
                .ok_or_else(|| format!("chmod.mode '{}': not an octal mode", c.mode))?;
            let mode_before = c
                .mode_before
                .as_deref()
                .map(|m| {
                    u32::from_str_radix(m, 8)
                        .ok()
                        .filter(|m| *m <= 0o7777)
                        .ok_or_else(|| format!("chmod.mode_before '{m}': not an octal mode"))
                })
                .transpose()?;
            let path_state = if c.file_name.is_some() {
                pb::PathState::Name
            } else if c.path_unreadable {
                pb::PathState::Unreadable
            } else if c.path_truncated {
                pb::PathState::Truncated
            } else if c.path.is_some() {
                pb::PathState::Complete
            } else {
                pb::PathState::None
            };
            pb::event::Body::Chmod(pb::Chmod {
                syscall: syscall as i32,
                mode,
                fd: c.fd,
                flags: mode_before.or(c.flags).unwrap_or(0),
                path: c.file_name.or(c.path).unwrap_or_default(),
                path_state: path_state as i32,
                name: c.name.unwrap_or_default(),
                revert: c.revert.map(revert_from_json).transpose()?,
            })
        }
        pb::EventKind::Lost => {
            let l = j.lost.ok_or_else(|| missing("lost"))?;
            let stage = pb::LossStage::from_str_name(&enum_value(&l.stage, "LOSS_STAGE_"))
                .ok_or_else(|| format!("lost.stage '{}': unknown", l.stage))?;
            pb::event::Body::Lost(pb::Lost {
                count: l.count,
                stage: stage as i32,
                first_seq: l.first_seq,
                last_seq: l.last_seq,
            })
        }
        pb::EventKind::Privilege => {
            let p = j.privilege.ok_or_else(|| missing("privilege"))?;
            pb::event::Body::Privilege(pb::PrivilegeChange {
                what: p.what,
                old_value: p.old_value,
                new_value: p.new_value,
            })
        }
        pb::EventKind::Exec => {
            let x = j.exec.ok_or_else(|| missing("exec"))?;
            pb::event::Body::Exec(pb::Exec {
                exe: x.exe,
                args: Vec::new(),
            })
        }
        pb::EventKind::Policy => {
            let p = j.policy_change.ok_or_else(|| missing("policy_change"))?;
            pb::event::Body::PolicyChange(pb::PolicyChange {
                generation: p.generation,
                accepted: p.accepted,
                source: p.source,
                policy: p.policy,
                errors: p.errors,
            })
        }
        pb::EventKind::Exit => pb::event::Body::Exit(pb::Exit {
            code: j.exit.ok_or_else(|| missing("exit"))?.code,
        }),
        other => {
            return Err(format!(
                "kind '{}': not supported in files yet",
                kind_name(other)
            ));
        }
    };
    Ok(pb::Event {
        seq: j.seq,
        ktime_ns: j.ktime_ns,
        time_unix_ns,
        node: j.node,
        process: Some(pb::Process {
            pid: j.pid,
            tid: j.tid,
            uid: j.uid,
            gid: j.gid,
            comm: j.comm,
            cgroup_id: j.cgroup_id,
            exe: j.exe.unwrap_or_default(),
            args: j.args,
            ppid: j.ppid.unwrap_or(0),
            euid: j.euid,
            ancestors: j
                .ancestors
                .into_iter()
                .map(|a| pb::Ancestor {
                    pid: a.pid,
                    exe: a.exe,
                    comm: a.comm,
                })
                .collect(),
        }),
        pod: j.pod.map(|p| pb::Pod {
            namespace: p.namespace,
            name: p.name,
            uid: p.uid,
            labels: p.labels,
            container_name: p.container_name,
            container_id: p.container_id,
            image: p.image,
            owner_kind: p.owner_kind,
            owner_name: p.owner_name,
            image_id: p.image_id,
        }),
        enrichment: enrichment as i32,
        policy: j.policy,
        rule: j.rule,
        verdict: verdict as i32,
        repeat,
        body: Some(body),
    })
}

/// ANSI colours for the compact format.
const RESET: &str = "\x1b[0m";

fn verdict_colour(v: pb::Verdict) -> &'static str {
    match v {
        pb::Verdict::Blocked | pb::Verdict::Killed => "\x1b[1;31m",
        pb::Verdict::Audited => "\x1b[1;33m",
        pb::Verdict::Allowed => "\x1b[32m",
        pb::Verdict::Unspecified => "\x1b[1;35m",
    }
}

/// One readable line per event: time, sequence, verdict, what, who, where.
pub fn to_compact(e: &pb::Event, colour: bool) -> String {
    use pb::event::Body as B;
    let mut line = String::new();
    let time = rfc3339(e.time_unix_ns);
    let (label, colour_code) = match &e.body {
        Some(B::Lost(_)) => ("LOST".to_owned(), verdict_colour(pb::Verdict::Unspecified)),
        Some(B::PolicyChange(p)) => {
            let v = if p.accepted {
                pb::Verdict::Allowed
            } else {
                pb::Verdict::Blocked
            };
            ("POLICY".to_owned(), verdict_colour(v))
        }
        _ => (
            verdict_name(e.verdict()).to_ascii_uppercase(),
            verdict_colour(e.verdict()),
        ),
    };
    let _ = write!(line, "{time} ");
    if e.seq != 0 {
        let _ = write!(line, "#{} ", e.seq);
    }
    if colour {
        let _ = write!(line, "{colour_code}{label:<7}{RESET} ");
    } else {
        let _ = write!(line, "{label:<7} ");
    }
    let who = e
        .process
        .as_ref()
        .map_or_else(String::new, |p| format!("{}[{}]", p.comm, p.pid));
    let pod = e
        .pod
        .as_ref()
        .map_or_else(String::new, |p| format!(" {}/{}", p.namespace, p.name));
    match &e.body {
        Some(B::Connect(c)) => {
            let _ = write!(
                line,
                "connect {who}{pod} -> {}:{} {} ({}, {})",
                c.dst_addr,
                c.dst_port,
                PROTOCOLS.name(c.protocol),
                enum_name(c.hook().as_str_name(), "CONNECT_HOOK_"),
                e.rule
            );
        }
        Some(B::Chmod(c)) => {
            let target = if !c.name.is_empty() {
                c.name.clone()
            } else {
                c.path.clone()
            };
            let setid = setid_names(c.mode).join("+");
            let _ = write!(
                line,
                "chmod {who}{pod} {} {:04o} {target}{}",
                enum_name(c.syscall().as_str_name(), "CHMOD_SYSCALL_"),
                c.mode,
                if setid.is_empty() {
                    String::new()
                } else {
                    format!(" [{setid}]")
                }
            );
            if let Some(r) = &c.revert {
                let _ = match r.state() {
                    pb::RevertState::Reverted => write!(line, ": set-id bits removed"),
                    pb::RevertState::NotNeeded => {
                        write!(line, ": nothing to revert ({})", r.detail)
                    }
                    _ => write!(line, ": NOT reverted ({})", r.detail),
                };
            }
        }
        Some(B::Lost(l)) => {
            let _ = write!(
                line,
                "{} event(s) lost ({})",
                l.count,
                enum_name(l.stage().as_str_name(), "LOSS_STAGE_")
            );
            if l.first_seq != 0 {
                let _ = write!(line, " seq {}..={}", l.first_seq, l.last_seq);
            }
        }
        Some(B::PolicyChange(p)) => {
            let what = if p.accepted { "applied" } else { "refused" };
            let _ = write!(
                line,
                "policy {what} (generation {}) from {}",
                p.generation, p.source
            );
            for e in &p.errors {
                let _ = write!(line, "; {e}");
            }
        }
        Some(B::Exec(x)) => {
            let _ = write!(line, "exec {who}{pod} {}", x.exe);
        }
        Some(B::Privilege(p)) => {
            let _ = write!(
                line,
                "privilege {who}{pod} {} ({}, {})",
                p.new_value, p.what, p.old_value
            );
        }
        Some(B::Exit(_)) | None => {
            let _ = write!(line, "{} {who}{pod}", kind_name(kind_of(e)));
        }
    }
    if let Some(r) = &e.repeat {
        let _ = write!(
            line,
            " (x{} since {}, seq {}..={})",
            r.count,
            rfc3339(r.first_time_unix_ns),
            r.first_seq,
            r.last_seq
        );
    }
    line
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn connect_event() -> pb::Event {
        pb::Event {
            seq: 12,
            ktime_ns: 5,
            time_unix_ns: 1_764_000_000_123_456_789,
            node: "node-a".into(),
            process: Some(pb::Process {
                pid: 3,
                tid: 4,
                comm: "curl".into(),
                cgroup_id: 9,
                ..Default::default()
            }),
            enrichment: pb::Enrichment::Complete as i32,
            policy: "default".into(),
            rule: "metadata-imds-v4".into(),
            verdict: pb::Verdict::Blocked as i32,
            body: Some(pb::event::Body::Connect(pb::Connect {
                hook: pb::ConnectHook::Sendmsg4 as i32,
                socket_family: libc::AF_INET as u32,
                socket_type: libc::SOCK_DGRAM as u32,
                protocol: libc::IPPROTO_UDP as u32,
                dst_addr: "169.254.169.254".into(),
                dst_port: 53,
            })),
            ..Default::default()
        }
    }

    fn chmod_event() -> pb::Event {
        pb::Event {
            body: Some(pb::event::Body::Chmod(pb::Chmod {
                syscall: pb::ChmodSyscall::Fchmodat as i32,
                mode: 0o2750,
                fd: Some(-100),
                flags: 0,
                path: "x".into(),
                path_state: pb::PathState::Complete as i32,
                name: "/tmp/x".into(),
                revert: None,
            })),
            verdict: pb::Verdict::Allowed as i32,
            rule: String::new(),
            ..connect_event()
        }
    }

    fn killed_chmod_event() -> pb::Event {
        let mut e = chmod_event();
        e.verdict = pb::Verdict::Killed as i32;
        e.rule = "deny-setid-chmod".into();
        if let Some(pb::event::Body::Chmod(c)) = &mut e.body {
            c.revert = Some(pb::ChmodRevert {
                state: pb::RevertState::Reverted as i32,
                detail: "/tmp/x".into(),
                mode_before: 0o2750,
                mode_after: 0o750,
            });
        }
        e
    }

    #[test]
    fn an_lsm_chmod_names_the_file_and_its_mode_before_and_round_trips() {
        let mut e = chmod_event();
        e.verdict = pb::Verdict::Blocked as i32;
        if let Some(pb::event::Body::Chmod(c)) = &mut e.body {
            c.syscall = pb::ChmodSyscall::LsmPathChmod as i32;
            c.path = "tool".into();
            c.path_state = pb::PathState::Name as i32;
            c.fd = None;
            c.flags = 0o755;
            c.name = String::new();
        }
        let line = to_json(&e);
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["chmod"]["syscall"], "lsm_path_chmod", "{v}");
        assert_eq!(v["chmod"]["file_name"], "tool", "{v}");
        assert_eq!(v["chmod"]["mode_before"], "0755", "{v}");
        assert!(v["chmod"].get("path").is_none(), "{v}");
        assert_eq!(from_json(&line).unwrap(), e);
    }

    #[test]
    fn a_killed_chmod_says_what_was_reverted() {
        let v: Value = serde_json::from_str(&to_json(&killed_chmod_event())).unwrap();
        assert_eq!(
            (v["verdict"].as_str(), v["rule"].as_str()),
            (Some("killed"), Some("deny-setid-chmod"))
        );
        assert_eq!(
            v["chmod"]["revert"],
            serde_json::json!({"state": "reverted", "detail": "/tmp/x", "mode_before": "2750", "mode_after": "0750"})
        );
        let mut failed = killed_chmod_event();
        if let Some(pb::event::Body::Chmod(c)) = &mut failed.body {
            c.revert = Some(pb::ChmodRevert {
                state: pb::RevertState::Failed as i32,
                detail: "gone".into(),
                ..Default::default()
            });
        }
        let v: Value = serde_json::from_str(&to_json(&failed)).unwrap();
        assert_eq!(
            v["chmod"]["revert"],
            serde_json::json!({"state": "failed", "detail": "gone"})
        );
        assert!(to_compact(&killed_chmod_event(), false).contains("KILLED"));
        assert!(to_compact(&killed_chmod_event(), false).ends_with("set-id bits removed"));
    }

    #[test]
    fn connect_fields_are_stable() {
        let v: Value = serde_json::from_str(&to_json(&connect_event())).unwrap();
        assert_eq!(
            (v["seq"].as_u64(), v["kind"].as_str(), v["verdict"].as_str()),
            (Some(12), Some("connect"), Some("blocked"))
        );
        assert_eq!(
            (
                v["pid"].as_u64(),
                v["tid"].as_u64(),
                v["cgroup_id"].as_u64()
            ),
            (Some(3), Some(4), Some(9))
        );
        assert_eq!(v["time"], "2025-11-24T16:00:00.123456789Z");
        assert_eq!(
            (v["rule"].as_str(), v["node"].as_str()),
            (Some("metadata-imds-v4"), Some("node-a"))
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
        assert!(v.get("chmod").is_none());
    }

    #[test]
    fn chmod_fields_are_stable() {
        let v: Value = serde_json::from_str(&to_json(&chmod_event())).unwrap();
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

    #[test]
    fn json_round_trips() {
        let lost = pb::Event {
            time_unix_ns: 1_000_000_000,
            body: Some(pb::event::Body::Lost(pb::Lost {
                count: 7,
                stage: pb::LossStage::Subscriber as i32,
                first_seq: 0,
                last_seq: 0,
            })),
            ..Default::default()
        };
        let policy = pb::Event {
            seq: 9,
            time_unix_ns: 2_000_000_000,
            node: "n".into(),
            policy: "p".into(),
            enrichment: pb::Enrichment::Complete as i32,
            body: Some(pb::event::Body::PolicyChange(pb::PolicyChange {
                generation: 3,
                accepted: false,
                source: "/etc/sensor/policy.yaml".into(),
                policy: String::new(),
                errors: vec!["/etc/sensor/policy.yaml:3:5: bad".into()],
            })),
            ..Default::default()
        };
        let privilege = pb::Event {
            body: Some(pb::event::Body::Privilege(pb::PrivilegeChange {
                what: "setuid-root".into(),
                old_value: "uid 1000".into(),
                new_value: "setresuid(0, -1, -1)".into(),
            })),
            verdict: pb::Verdict::Killed as i32,
            rule: "no-root".into(),
            ..connect_event()
        };
        assert!(
            to_compact(&privilege, false)
                .ends_with("privilege curl[3] setresuid(0, -1, -1) (setuid-root, uid 1000)")
        );
        for e in [
            privilege,
            connect_event(),
            chmod_event(),
            killed_chmod_event(),
            lost,
            policy,
        ] {
            let line = to_json(&e);
            let back = from_json(&line).unwrap_or_else(|err| panic!("{line}: {err}"));
            // Lost records carry no process; the parser fills an empty one.
            assert_eq!(to_json(&back), line);
        }
    }

    #[test]
    fn bad_json_lines_say_what_is_wrong() {
        let good = to_json(&connect_event());
        let cases = [
            (good.replace("\"blocked\"", "\"maybe\""), "verdict 'maybe'"),
            (
                good.replace("\"udp\"", "\"sctpish\""),
                "connect.protocol 'sctpish'",
            ),
            (
                good.replace("2025-11-24T16:00:00.123456789Z", "yesterday"),
                "time 'yesterday'",
            ),
            (
                good.replace("\"kind\":\"connect\"", "\"kind\":\"chmod\""),
                "needs a 'chmod' object",
            ),
            (good.replace("\"seq\":12", "\"seq\":\"x\""), "invalid type"),
            (
                good.replace("\"seq\":12", "\"sequence\":12"),
                "unknown field `sequence`",
            ),
            ("not json".to_owned(), "expected"),
        ];
        for (line, mention) in cases {
            let err = from_json(&line).unwrap_err();
            assert!(
                err.contains(mention),
                "{line}: {err} should mention {mention}"
            );
        }
    }

    #[test]
    fn compact_lines_are_readable() {
        let line = to_compact(&connect_event(), false);
        assert_eq!(
            line,
            "2025-11-24T16:00:00.123456789Z #12 BLOCKED connect curl[3] -> 169.254.169.254:53 udp (sendmsg4, metadata-imds-v4)"
        );
        assert!(
            to_compact(&chmod_event(), false)
                .ends_with("chmod curl[3] fchmodat 2750 /tmp/x [setgid]")
        );
        assert!(to_compact(&connect_event(), true).contains("\x1b[1;31mBLOCKED"));
    }
}
