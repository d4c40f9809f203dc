//! Events as OCSF 1.5.0 objects (the mapping table is in docs/export.md).
//!
//! | event | OCSF class | activity |
//! |---|---|---|
//! | connect | Network Activity (4001) | Refuse (blocked, killed), Traffic (UDP send), Open |
//! | chmod | File System Activity (1001) | Set Security (7) |
//! | privilege | Process Activity (1007) | Set User ID (5) |
//! | exec / exit | Process Activity (1007) | Launch (1) / Terminate (2) |
//! | policy | Application Lifecycle (6002) | Update (8) |
//! | lost | Application Error (6008) | General Error (1) |
//!
//! Verdicts become the security-control profile's `action_id` and `disposition_id`; the node
//! is the `device`, the process the `actor.process`, the pod's container the `container`
//! (container profile); what OCSF has no attribute for is under `unmapped.sensor`.

use sensor_proto::v1 as pb;
use serde_json::{Map, Value, json};

use crate::{
    event::compact::to_summary,
    event::names::{kind_name, verdict_name},
    event::proto::kind_of,
};

/// The OCSF schema version the objects follow.
pub const OCSF_VERSION: &str = "1.5.0";
/// `metadata.product`.
pub const PRODUCT_NAME: &str = "sensor";
pub const VENDOR_NAME: &str = "sensor project";

struct Class {
    uid: u32,
    name: &'static str,
    category_uid: u32,
    category_name: &'static str,
}

const NETWORK_ACTIVITY: Class = Class {
    uid: 4001,
    name: "Network Activity",
    category_uid: 4,
    category_name: "Network Activity",
};
const FILE_SYSTEM_ACTIVITY: Class = Class {
    uid: 1001,
    name: "File System Activity",
    category_uid: 1,
    category_name: "System Activity",
};
const PROCESS_ACTIVITY: Class = Class {
    uid: 1007,
    name: "Process Activity",
    category_uid: 1,
    category_name: "System Activity",
};
const APPLICATION_LIFECYCLE: Class = Class {
    uid: 6002,
    name: "Application Lifecycle",
    category_uid: 6,
    category_name: "Application Activity",
};
const COMPLIANCE_FINDING: Class = Class {
    uid: 2003,
    name: "Compliance Finding",
    category_uid: 2,
    category_name: "Findings",
};
const APPLICATION_ERROR: Class = Class {
    uid: 6008,
    name: "Application Error",
    category_uid: 6,
    category_name: "Application Activity",
};

/// Nanoseconds since the epoch as an OCSF `timestamp_t` (milliseconds).
fn ms(unix_ns: i64) -> i64 {
    unix_ns.div_euclid(1_000_000)
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// An OCSF `file` object for a path (`type_id` 0: the type is not known here).
fn file_obj(path: &str) -> Value {
    let name = if path.is_empty() {
        "unknown"
    } else {
        basename(path)
    };
    let mut f = json!({ "name": name, "type_id": 0, "type": "Unknown" });
    if !path.is_empty() {
        f["path"] = json!(path);
    }
    f
}

/// The process of an event as an OCSF `process` object.
fn process_obj(p: &pb::Process) -> Value {
    let mut o = json!({
        "pid": p.pid,
        "tid": p.tid,
        "name": p.comm,
        "user": { "uid": p.uid.to_string(), "type_id": 0, "type": "Unknown" },
    });
    if !p.exe.is_empty() {
        o["file"] = file_obj(&p.exe);
    }
    if !p.args.is_empty() {
        o["cmd_line"] = json!(p.args.join(" "));
    }
    if p.ppid != 0 {
        let mut parent = json!({ "pid": p.ppid });
        if let Some(a) = p.ancestors.first() {
            if !a.exe.is_empty() {
                parent["file"] = file_obj(&a.exe);
            }
            if !a.comm.is_empty() {
                parent["name"] = json!(a.comm);
            }
        }
        o["parent_process"] = parent;
    }
    o
}

/// `(action_id, action, disposition_id, disposition, severity_id)` of a verdict.
fn verdict_fields(e: &pb::Event) -> (u32, &'static str, u32, &'static str, u32) {
    let setid = matches!(&e.body, Some(pb::event::Body::Chmod(c)) if c.mode & 0o6000 != 0);
    match e.verdict() {
        pb::Verdict::Blocked => (2, "Denied", 2, "Blocked", 4),
        // OCSF has no "killed" disposition: Other, with the caption saying what happened.
        pb::Verdict::Killed => (2, "Denied", 99, "Killed", 4),
        pb::Verdict::Audited => (1, "Allowed", 15, "Detected", 3),
        pb::Verdict::Allowed if setid => (1, "Allowed", 1, "Allowed", 3),
        pb::Verdict::Allowed => (1, "Allowed", 1, "Allowed", 1),
        pb::Verdict::Unspecified => (0, "Unknown", 0, "Unknown", 1),
    }
}

const SEVERITIES: [&str; 7] = [
    "Unknown",
    "Informational",
    "Low",
    "Medium",
    "High",
    "Critical",
    "Fatal",
];

fn severity_name(id: u32) -> &'static str {
    SEVERITIES.get(id as usize).copied().unwrap_or("Other")
}

/// A posture record's finding title, its stable uid (one per node or pod) and one assessment
/// per check: for a pod, each finding (not met; `desc` names the container); for the node, the
/// checks of `sensor_node_posture`.
fn posture_assessments(e: &pb::Event, p: &pb::Posture) -> (String, String, Vec<Value>) {
    if let Some(n) = &p.node {
        let checks = [
            (
                "bpf_lsm_active",
                n.bpf_lsm_active == Some(true),
                n.bpf_lsm_advice.clone(),
            ),
            ("btf", n.btf, "/sys/kernel/btf/vmlinux".to_owned()),
            (
                "no_reboot_pending",
                !n.reboot_pending,
                n.reboot_reasons.join("; "),
            ),
            (
                "cgroup_v2",
                n.cgroup == "v2",
                format!("cgroup {}", n.cgroup),
            ),
        ];
        let assessments = checks
            .into_iter()
            .map(|(name, met, desc)| json!({ "name": name, "meets_criteria": met, "desc": desc }))
            .collect();
        (
            format!("Node posture: {}", e.node),
            format!("posture:node:{}", e.node),
            assessments,
        )
    } else {
        let pod = e.pod.clone().unwrap_or_default();
        let assessments = p
            .findings
            .iter()
            .map(|f| {
                let mut a = json!({ "name": f.finding, "meets_criteria": false });
                if !f.container.is_empty() {
                    a["desc"] = json!(format!("container {}", f.container));
                }
                a
            })
            .collect();
        (
            format!("Pod posture: {}/{}", pod.namespace, pod.name),
            format!("posture:pod:{}", pod.uid),
            assessments,
        )
    }
}

/// One event as an OCSF object.
pub fn to_ocsf(e: &pb::Event) -> Value {
    use pb::event::Body as B;
    let blocked = matches!(e.verdict(), pb::Verdict::Blocked | pb::Verdict::Killed);
    let (class, activity_id, activity_name) = match &e.body {
        Some(B::Connect(c)) => {
            let sendmsg = matches!(
                c.hook(),
                pb::ConnectHook::Sendmsg4
                    | pb::ConnectHook::Sendmsg6
                    | pb::ConnectHook::SocketSendmsg
            );
            match (blocked, sendmsg) {
                (true, _) => (NETWORK_ACTIVITY, 5, "Refuse"),
                (false, true) => (NETWORK_ACTIVITY, 6, "Traffic"),
                (false, false) => (NETWORK_ACTIVITY, 1, "Open"),
            }
        }
        Some(B::Chmod(_)) => (FILE_SYSTEM_ACTIVITY, 7, "Set Security"),
        Some(B::Privilege(_)) => (PROCESS_ACTIVITY, 5, "Set User ID"),
        Some(B::Exec(_)) => (PROCESS_ACTIVITY, 1, "Launch"),
        Some(B::Exit(_)) => (PROCESS_ACTIVITY, 2, "Terminate"),
        Some(B::PolicyChange(_)) => (APPLICATION_LIFECYCLE, 8, "Update"),
        Some(B::Posture(p)) => match p.reason() {
            pb::PostureReason::Changed if p.node.is_none() && p.findings.is_empty() => {
                (COMPLIANCE_FINDING, 3, "Close")
            }
            pb::PostureReason::Changed => (COMPLIANCE_FINDING, 2, "Update"),
            _ => (COMPLIANCE_FINDING, 1, "Create"),
        },
        Some(B::Lost(_)) | None => (APPLICATION_ERROR, 1, "General Error"),
    };
    let process = e.process.clone().unwrap_or_default();
    let has_verdict = e.verdict() != pb::Verdict::Unspecified;
    let (action_id, action, disposition_id, disposition, mut severity_id) = verdict_fields(e);

    let mut profiles = vec!["host"];
    let mut o = json!({
        "class_uid": class.uid,
        "class_name": class.name,
        "category_uid": class.category_uid,
        "category_name": class.category_name,
        "activity_id": activity_id,
        "activity_name": activity_name,
        "type_uid": class.uid * 100 + activity_id,
        "type_name": format!("{}: {activity_name}", class.name),
        "time": ms(e.time_unix_ns),
        "message": to_summary(e),
        "device": {
            "hostname": e.node,
            "name": e.node,
            // Whether the node is a VM or hardware is not known here.
            "type_id": 0,
            "type": "Unknown",
        },
    });
    let mut sensor = Map::new();
    sensor.insert("kind".into(), json!(kind_name(kind_of(e))));
    if e.seq != 0 {
        sensor.insert("seq".into(), json!(e.seq));
    }
    if has_verdict {
        profiles.push("security_control");
        o["action_id"] = json!(action_id);
        o["action"] = json!(action);
        o["disposition_id"] = json!(disposition_id);
        o["disposition"] = json!(disposition);
        o["status_id"] = json!(if blocked { 2 } else { 1 });
        o["status"] = json!(if blocked { "Failure" } else { "Success" });
        if blocked {
            o["status_detail"] = json!(if e.verdict() == pb::Verdict::Killed {
                "process killed"
            } else {
                "EPERM"
            });
        }
        sensor.insert("verdict".into(), json!(verdict_name(e.verdict())));
    }
    for (k, v) in [("rule", &e.rule), ("policy", &e.policy)] {
        if !v.is_empty() {
            sensor.insert(k.into(), json!(v));
        }
    }
    if e.enrichment() != pb::Enrichment::Unspecified {
        let partial = e.enrichment() == pb::Enrichment::Partial;
        sensor.insert(
            "enrichment".into(),
            json!(if partial { "partial" } else { "complete" }),
        );
    }
    if e.process.is_some() {
        sensor.insert("cgroup_id".into(), json!(process.cgroup_id));
        sensor.insert("gid".into(), json!(process.gid));
        if let Some(euid) = process.euid {
            sensor.insert("euid".into(), json!(euid));
        }
        o["actor"] = json!({ "process": process_obj(&process) });
    }
    if e.ktime_ns != 0 {
        sensor.insert("ktime_ns".into(), json!(e.ktime_ns));
    }
    if let Some(pod) = &e.pod {
        // A posture record is about the pod, not one of its containers.
        if !matches!(e.body, Some(B::Posture(_))) {
            profiles.push("container");
            let mut c = json!({ "uid": pod.container_id, "orchestrator": "kubernetes", "pod_uuid": pod.uid });
            if !pod.container_name.is_empty() {
                c["name"] = json!(pod.container_name);
            }
            let image_uid = if pod.image_id.is_empty() {
                &pod.image
            } else {
                &pod.image_id
            };
            if !image_uid.is_empty() {
                c["image"] = json!({ "uid": image_uid, "name": pod.image });
            }
            o["container"] = c;
        }
        let mut p = json!({ "namespace": pod.namespace, "name": pod.name, "uid": pod.uid });
        if !pod.labels.is_empty() {
            p["labels"] = json!(pod.labels);
        }
        if !pod.owner_kind.is_empty() {
            p["owner_kind"] = json!(pod.owner_kind);
            p["owner_name"] = json!(pod.owner_name);
        }
        sensor.insert("pod".into(), p);
    }
    match &e.body {
        Some(B::Connect(c)) => {
            let v6 = c.dst_addr.contains(':');
            o["dst_endpoint"] = json!({ "ip": c.dst_addr, "port": c.dst_port });
            let protocol = super::facts::transport(c);
            let mut info = json!({
                "protocol_num": c.protocol,
                "direction_id": 2,
                "direction": "Outbound",
                "protocol_ver_id": if v6 { 6 } else { 4 },
                "protocol_ver": if v6 { "Internet Protocol version 6 (IPv6)" } else { "Internet Protocol version 4 (IPv4)" },
            });
            if !protocol.is_empty() {
                info["protocol_name"] = json!(protocol);
            }
            o["connection_info"] = info;
            sensor.insert(
                "connect".into(),
                json!({ "hook": c.hook().as_str_name().trim_start_matches("CONNECT_HOOK_").to_ascii_lowercase(), "socket_family": c.socket_family, "socket_type": c.socket_type }),
            );
        }
        Some(B::Chmod(c)) => {
            o["file"] = file_obj(super::facts::chmod_file(c));
            let mut ch = json!({
                "syscall": c.syscall().as_str_name().trim_start_matches("CHMOD_SYSCALL_").to_ascii_lowercase(),
                "mode": format!("{:04o}", c.mode),
                "sets_setid": c.mode & 0o6000 != 0,
            });
            if let Some(fd) = c.fd {
                ch["fd"] = json!(fd);
            }
            if !c.path.is_empty() {
                ch["path"] = json!(c.path);
            }
            sensor.insert("chmod".into(), ch);
        }
        Some(B::Privilege(p)) => {
            o["process"] = process_obj(&process);
            sensor.insert(
                "privilege".into(),
                json!({ "what": p.what, "old_value": p.old_value, "new_value": p.new_value }),
            );
        }
        Some(B::Exec(x)) => {
            let mut launched = process_obj(&process);
            launched["file"] = file_obj(&x.exe);
            o["process"] = launched;
            if let Some(parent) = o["process"].get("parent_process").cloned() {
                o["actor"] = json!({ "process": parent });
            }
        }
        Some(B::Exit(x)) => {
            o["process"] = process_obj(&process);
            if let Some(code) = x.code {
                o["exit_code"] = json!(code);
            }
        }
        Some(B::PolicyChange(p)) => {
            o["app"] = json!({
                "name": PRODUCT_NAME,
                "vendor_name": VENDOR_NAME,
                "version": env!("CARGO_PKG_VERSION"),
            });
            o["status_id"] = json!(if p.accepted { 1 } else { 2 });
            o["status"] = json!(if p.accepted { "Success" } else { "Failure" });
            if !p.accepted {
                severity_id = 3;
                o["status_detail"] = json!(p.errors.join("; "));
            }
            sensor.insert(
                "policy_change".into(),
                json!({ "generation": p.generation, "accepted": p.accepted, "source": p.source, "policy": p.policy, "errors": p.errors }),
            );
        }
        Some(B::Posture(p)) => {
            let (title, uid, assessments) = posture_assessments(e, p);
            let pass = !super::facts::posture_fails(p);
            if !pass {
                severity_id = 2;
            }
            o["finding_info"] = json!({ "uid": uid, "title": title });
            let standard = if p.node.is_some() {
                "sensor node posture (docs/hardening.md)"
            } else {
                "Kubernetes Pod Security Standards"
            };
            o["compliance"] = json!({
                "standards": [standard],
                "status_id": if pass { 1 } else { 3 },
                "status": if pass { "Pass" } else { "Fail" },
                "assessments": assessments,
            });
            let mut posture = json!({
                "subject": p.subject().as_str_name().trim_start_matches("POSTURE_SUBJECT_").to_ascii_lowercase(),
                "reason": p.reason().as_str_name().trim_start_matches("POSTURE_REASON_").to_ascii_lowercase(),
            });
            if let Some(n) = &p.node {
                posture["node"] = json!({
                    "kernel": n.kernel,
                    "bpf_lsm_active": n.bpf_lsm_active,
                    "bpf_lsm_boot_parameter": n.bpf_lsm_boot_parameter,
                    "bpf_lsm_advice": n.bpf_lsm_advice,
                    "reboot_reasons": n.reboot_reasons,
                    "lockdown": n.lockdown,
                    "cgroup": n.cgroup,
                    "tiers": n.tiers.iter().collect::<std::collections::BTreeMap<_, _>>(),
                });
                if !n.kernel.is_empty() {
                    o["device"]["os"] = json!({ "name": "Linux", "type_id": 200, "type": "Linux", "kernel_release": n.kernel });
                }
            }
            sensor.insert("posture".into(), posture);
        }
        Some(B::Lost(l)) => {
            severity_id = 3;
            let mut lost = json!({
                "count": l.count,
                "stage": l.stage().as_str_name().trim_start_matches("LOSS_STAGE_").to_ascii_lowercase(),
            });
            if l.first_seq != 0 {
                lost["first_seq"] = json!(l.first_seq);
                lost["last_seq"] = json!(l.last_seq);
            }
            sensor.insert("lost".into(), lost);
        }
        None => {}
    }
    if let Some(r) = &e.repeat {
        o["count"] = json!(r.count);
        o["start_time"] = json!(ms(r.first_time_unix_ns));
        o["end_time"] = json!(ms(r.last_time_unix_ns));
        sensor.insert(
            "repeat".into(),
            json!({ "count": r.count, "first_seq": r.first_seq, "last_seq": r.last_seq }),
        );
    }
    o["severity_id"] = json!(severity_id);
    o["severity"] = json!(severity_name(severity_id));
    let mut metadata = json!({
        "version": OCSF_VERSION,
        "product": {
            "name": PRODUCT_NAME,
            "vendor_name": VENDOR_NAME,
            "version": env!("CARGO_PKG_VERSION"),
        },
        "profiles": profiles,
        "log_name": "sensor",
        "event_code": kind_name(kind_of(e)),
    });
    if e.seq != 0 {
        metadata["uid"] = json!(super::facts::uid(e));
        metadata["sequence"] = json!(e.seq);
    }
    o["metadata"] = metadata;
    // OCSF 1.5 has no attribute for a cluster (`cloud` has account, region and zone).
    if !e.cluster.is_empty() {
        sensor.insert("cluster".into(), json!(e.cluster));
    }
    o["unmapped"] = json!({ "sensor": sensor });
    o
}
