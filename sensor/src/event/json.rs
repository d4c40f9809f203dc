//! The JSON-lines event format (stable field names, documented in docs/events.md), and its
//! parser for offline replay (`sensor tail --file`).

use std::time::SystemTime;

use sensor_proto::v1 as pb;
use serde::{Deserialize, Serialize};

use super::{
    names::{
        FAMILIES, PROTOCOLS, SOCK_TYPES, enum_name, enum_value, kind_name, parse_kind,
        parse_verdict, setid_names, verdict_name,
    },
    proto::kind_of,
    time::rfc3339,
};

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
    #[serde(default, skip_serializing_if = "String::is_empty")]
    cluster: String,
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
    /// The cgroup v2 path, relative to the cgroup2 mount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cgroup: Option<String>,
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
    /// Every rule that matched (`policy`/`rule` name the deciding one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    matches: Vec<JsonMatch>,
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    posture: Option<JsonPosture>,
    /// Exporter flood control: this line stands for `count` identical events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    repeat: Option<JsonRepeat>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonMatch {
    policy: String,
    rule: String,
    action: String,
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
struct JsonPosture {
    /// `node` or `pod`.
    subject: String,
    /// `start`, `appeared` or `changed`.
    reason: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    findings: Vec<JsonFinding>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    node: Option<JsonNodePosture>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonFinding {
    finding: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    container: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonNodePosture {
    #[serde(default)]
    kernel: String,
    /// Absent when the active LSM list is unreadable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bpf_lsm_active: Option<bool>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    bpf_lsm_boot_parameter: String,
    #[serde(default)]
    bpf_lsm_advice: String,
    #[serde(default)]
    btf: bool,
    #[serde(default)]
    reboot_pending: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    reboot_reasons: Vec<String>,
    #[serde(default)]
    lockdown: String,
    #[serde(default)]
    cgroup: String,
    #[serde(default)]
    tiers: std::collections::BTreeMap<String, String>,
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
        cluster: e.cluster.clone(),
        pid: p.pid,
        tid: p.tid,
        uid: p.uid,
        gid: p.gid,
        comm: p.comm,
        cgroup_id: p.cgroup_id,
        cgroup: (!p.cgroup.is_empty()).then_some(p.cgroup),
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
        matches: e
            .matches
            .iter()
            .map(|m| JsonMatch {
                policy: m.policy.clone(),
                rule: m.rule.clone(),
                action: m.action.clone(),
            })
            .collect(),
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
        Some(B::Posture(p)) => {
            j.posture = Some(JsonPosture {
                subject: enum_name(p.subject().as_str_name(), "POSTURE_SUBJECT_"),
                reason: enum_name(p.reason().as_str_name(), "POSTURE_REASON_"),
                findings: p
                    .findings
                    .iter()
                    .map(|f| JsonFinding {
                        finding: f.finding.clone(),
                        container: f.container.clone(),
                    })
                    .collect(),
                node: p.node.as_ref().map(|n| JsonNodePosture {
                    kernel: n.kernel.clone(),
                    bpf_lsm_active: n.bpf_lsm_active,
                    bpf_lsm_boot_parameter: n.bpf_lsm_boot_parameter.clone(),
                    bpf_lsm_advice: n.bpf_lsm_advice.clone(),
                    btf: n.btf,
                    reboot_pending: n.reboot_pending,
                    reboot_reasons: n.reboot_reasons.clone(),
                    lockdown: n.lockdown.clone(),
                    cgroup: n.cgroup.clone(),
                    tiers: n
                        .tiers
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                }),
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
        pb::EventKind::Posture => {
            let p = j.posture.ok_or_else(|| missing("posture"))?;
            let subject =
                pb::PostureSubject::from_str_name(&enum_value(&p.subject, "POSTURE_SUBJECT_"))
                    .filter(|s| *s != pb::PostureSubject::Unspecified)
                    .ok_or_else(|| format!("posture.subject '{}': unknown", p.subject))?;
            let reason =
                pb::PostureReason::from_str_name(&enum_value(&p.reason, "POSTURE_REASON_"))
                    .filter(|r| *r != pb::PostureReason::Unspecified)
                    .ok_or_else(|| format!("posture.reason '{}': unknown", p.reason))?;
            pb::event::Body::Posture(pb::Posture {
                subject: subject as i32,
                reason: reason as i32,
                findings: p
                    .findings
                    .into_iter()
                    .map(|f| pb::PostureFinding {
                        finding: f.finding,
                        container: f.container,
                    })
                    .collect(),
                node: p.node.map(|n| pb::NodePosture {
                    kernel: n.kernel,
                    bpf_lsm_active: n.bpf_lsm_active,
                    bpf_lsm_boot_parameter: n.bpf_lsm_boot_parameter,
                    bpf_lsm_advice: n.bpf_lsm_advice,
                    btf: n.btf,
                    reboot_pending: n.reboot_pending,
                    reboot_reasons: n.reboot_reasons,
                    lockdown: n.lockdown,
                    cgroup: n.cgroup,
                    tiers: n.tiers.into_iter().collect(),
                }),
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
        cluster: j.cluster,
        process: Some(pb::Process {
            pid: j.pid,
            tid: j.tid,
            uid: j.uid,
            gid: j.gid,
            comm: j.comm,
            cgroup_id: j.cgroup_id,
            cgroup: j.cgroup.unwrap_or_default(),
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
        matches: j
            .matches
            .into_iter()
            .map(|m| pb::RuleMatch {
                policy: m.policy,
                rule: m.rule,
                action: m.action,
            })
            .collect(),
        verdict: verdict as i32,
        repeat,
        body: Some(body),
    })
}
