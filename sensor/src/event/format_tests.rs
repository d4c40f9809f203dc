//! Tests of the JSON and compact formats.

use sensor_proto::v1 as pb;
use serde_json::Value;

use super::{
    compact::to_compact,
    json::{from_json, to_json},
};

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

fn pod_posture_event() -> pb::Event {
    pb::Event {
        seq: 4,
        time_unix_ns: 3_000_000_000,
        node: "n".into(),
        enrichment: pb::Enrichment::Complete as i32,
        pod: Some(pb::Pod {
            namespace: "shop".into(),
            name: "web-1".into(),
            uid: "u-1".into(),
            owner_kind: "Deployment".into(),
            owner_name: "web".into(),
            ..Default::default()
        }),
        body: Some(pb::event::Body::Posture(pb::Posture {
            subject: pb::PostureSubject::Pod as i32,
            reason: pb::PostureReason::Appeared as i32,
            findings: vec![
                pb::PostureFinding {
                    finding: "no_seccomp_profile".into(),
                    container: "app".into(),
                },
                pb::PostureFinding {
                    finding: "host_network".into(),
                    container: String::new(),
                },
            ],
            node: None,
        })),
        ..Default::default()
    }
}

fn node_posture_event() -> pb::Event {
    pb::Event {
        seq: 1,
        time_unix_ns: 3_000_000_000,
        node: "n".into(),
        enrichment: pb::Enrichment::Complete as i32,
        body: Some(pb::event::Body::Posture(pb::Posture {
            subject: pb::PostureSubject::Node as i32,
            reason: pb::PostureReason::Start as i32,
            findings: Vec::new(),
            node: Some(pb::NodePosture {
                kernel: "6.1.0-21-amd64".into(),
                bpf_lsm_active: Some(false),
                bpf_lsm_boot_parameter: "lsm=lockdown,capability,bpf".into(),
                bpf_lsm_advice: "add lsm=lockdown,capability,bpf in GRUB_CMDLINE_LINUX".into(),
                btf: true,
                reboot_pending: true,
                reboot_reasons: vec!["/var/run/reboot-required".into()],
                lockdown: "none".into(),
                cgroup: "v2".into(),
                tiers: [("metadata-connect", "cgroup"), ("privilege", "kill")]
                    .into_iter()
                    .map(|(p, t)| (p.to_owned(), t.to_owned()))
                    .collect(),
            }),
        })),
        ..Default::default()
    }
}

#[test]
fn posture_records_read_as_lines_and_json() {
    let pod = to_compact(&pod_posture_event(), false);
    assert!(
        pod.ends_with("#4 POSTURE shop/web-1: no_seccomp_profile (app), host_network [appeared]"),
        "{pod}"
    );
    let node = to_compact(&node_posture_event(), false);
    assert!(
        node.contains("POSTURE node: kernel 6.1.0-21-amd64, BPF LSM not active, tiers metadata-connect=cgroup privilege=kill, REBOOT PENDING (/var/run/reboot-required), lockdown none, cgroup v2; to enable BPF LSM: add lsm=")
            && node.ends_with(" [start]"),
        "{node}"
    );
    let json: serde_json::Value = serde_json::from_str(&to_json(&pod_posture_event())).unwrap();
    assert_eq!(json["kind"], "posture");
    assert_eq!(json["posture"]["subject"], "pod");
    assert_eq!(json["posture"]["reason"], "appeared");
    assert_eq!(
        json["posture"]["findings"],
        serde_json::json!([{"finding": "no_seccomp_profile", "container": "app"}, {"finding": "host_network"}])
    );
    let json: serde_json::Value = serde_json::from_str(&to_json(&node_posture_event())).unwrap();
    assert_eq!(json["posture"]["node"]["bpf_lsm_active"], false);
    assert_eq!(json["posture"]["node"]["tiers"]["privilege"], "kill");
    let bad = to_json(&pod_posture_event()).replace("\"appeared\"", "\"vanished\"");
    assert!(
        from_json(&bad)
            .unwrap_err()
            .contains("posture.reason 'vanished': unknown")
    );
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
    let line = to_compact(&privilege, false);
    assert!(
        line.contains("KILLED  privilege cgroup #9")
            && line.contains(" curl[3] ")
            && line.contains(" no-root ")
            && line.ends_with(" setresuid(0, -1, -1) (setuid-root, uid 1000)"),
        "{line}"
    );
    for e in [
        privilege,
        connect_event(),
        chmod_event(),
        killed_chmod_event(),
        lost,
        policy,
        pod_posture_event(),
        node_posture_event(),
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
fn compact_lines_are_readable_and_aligned() {
    let line = to_compact(&connect_event(), false);
    assert_eq!(
        line,
        "2025-11-24T16:00:00.123456789Z     #12 BLOCKED connect   cgroup #9                      curl[3]                        metadata-imds-v4         169.254.169.254:53 udp (sendmsg4)"
    );
    let mut chmod = killed_chmod_event();
    if let Some(p) = &mut chmod.process {
        p.exe = "/usr/bin/python3".into();
        p.cgroup = "/sensor-test-1/a-very-long-cgroup-name-that-does-not-fit".into();
        p.ancestors = vec![pb::Ancestor {
            pid: 2,
            exe: "/bin/bash".into(),
            comm: "bash".into(),
        }];
    }
    if let Some(pod) = &mut chmod.pod {
        pod.name.clear();
    }
    let chmod = to_compact(&chmod, false);
    assert!(
        chmod.ends_with(
            "KILLED  chmod     …cgroup-name-that-does-not-fit python3[3] < bash              deny-setid-chmod         fchmodat 2750 /tmp/x [setgid]: set-id bits removed"
        ),
        "{chmod}"
    );
    // The columns start at the same place (in characters, as a terminal shows them).
    let at = |l: &str, word: &str| l[..l.find(word).unwrap()].chars().count();
    assert_eq!(at(&line, "BLOCKED"), at(&chmod, "KILLED"));
    assert_eq!(at(&line, "cgroup #9"), at(&chmod, "…cgroup"));
    assert_eq!(
        at(&line, "metadata-imds-v4"),
        at(&chmod, "deny-setid-chmod")
    );
    assert!(to_compact(&connect_event(), true).contains("\x1b[1;31mBLOCKED"));
}
