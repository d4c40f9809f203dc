use std::{path::PathBuf, sync::Arc};

use prost::Message as _;
use sensor_common::{ConnectHook, ModeCall, PrivilegeCall, Raise, Verdict};
use sensor_proto::v1 as pb;

use super::*;
use crate::event::proto::Origin;
use crate::{
    event::{Body, Chmod, Connect, PathArg, Privilege},
    pipeline::revert::Revert,
    policy,
};

fn proc_info(pid: u32, ppid: u32, exe: &str, args: &[&str]) -> Arc<ProcInfo> {
    Arc::new(ProcInfo {
        pid,
        ppid,
        comm: exe.rsplit('/').next().unwrap_or("").to_owned(),
        exe: exe.into(),
        args: args.iter().map(|a| (*a).to_owned()).collect(),
        uid: 1000,
        euid: 0,
        gid: 1000,
        start_ticks: 1,
        parts: ProcParts::default(),
    })
}

fn event(body: Body, verdict: Verdict) -> Event {
    Event {
        ktime_ns: 123_456_789,
        cgroup_id: 4242,
        pid: 300,
        tid: 301,
        uid: 1000,
        gid: 1000,
        verdict,
        comm: "curl".into(),
        body,
    }
}

fn bodies() -> Vec<(Body, Verdict)> {
    vec![
        (Body::Connect(Connect::for_test()), Verdict::Blocked),
        (
            Body::Connect(Connect {
                hook: ConnectHook::Syscall,
                sock_family: 10,
                sock_type: 2,
                protocol: 17,
                dst_addr: "fd00:ec2::254".parse().unwrap(),
                dst_port: 0,
                rule: 77,
                policies: 1,
            }),
            Verdict::Audited,
        ),
        (
            Body::Chmod(Chmod {
                name: Some(PathBuf::from("/tmp/x")),
                revert: Some(Revert::Reverted {
                    path: "/tmp/x".into(),
                    before: 0o4755,
                    after: 0o755,
                }),
                ..Chmod::for_test(PathArg::Complete("x".into()), Some(-100), 0o4755)
            }),
            Verdict::Killed,
        ),
        (
            Body::Chmod(Chmod {
                syscall: ModeCall::Fchmod,
                ..Chmod::for_test(PathArg::None, Some(3), 0o600)
            }),
            Verdict::Allowed,
        ),
        (
            Body::Exec {
                filename: PathArg::Complete("/usr/bin/curl".into()),
            },
            Verdict::Allowed,
        ),
        (Body::Exit, Verdict::Allowed),
        (
            Body::Privilege(Privilege {
                syscall: PrivilegeCall::Setresuid,
                raise: Raise::SetuidRoot,
                ids: vec![u32::MAX, 0, u32::MAX],
                rule: 0,
                policies: 1,
            }),
            Verdict::Audited,
        ),
    ]
}

/// One label: prost writes a map in its hash order, so only a one-entry map has one encoding.
fn pod() -> pb::Pod {
    pb::Pod {
        namespace: "shop".into(),
        name: "web-1".into(),
        uid: "0b1c".into(),
        labels: [("app", "web")]
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect(),
        container_name: "c".into(),
        container_id: "abc".into(),
        image: "img".into(),
        image_id: "sha".into(),
        owner_kind: "Deployment".into(),
        owner_name: "web".into(),
    }
}

#[test]
fn a_draft_encodes_byte_for_byte_as_prost_encodes_its_event() {
    let rules = Arc::new(policy::from_default(None));
    let shell = proc_info(200, 100, "/bin/sh", &["sh", "-c", "curl x"]);
    let shim = proc_info(100, 1, "/usr/bin/containerd-shim", &[]);
    let curl = proc_info(
        300,
        200,
        "/usr/bin/curl",
        &["curl", "", "-s", "http://169.254.169.254/"],
    );
    let pod = Arc::new(PodAttr::new(&pod()));
    let mut checked = 0;
    for (body, verdict) in bodies() {
        for attributed in [false, true] {
            let make = || Draft {
                event: event(body.clone(), verdict),
                rules: Arc::clone(&rules),
                time_unix_ns: 1_764_000_000_123_456_789,
                process: attributed.then(|| Arc::clone(&curl)),
                ancestors: if attributed {
                    vec![Arc::clone(&shell), Arc::clone(&shim)]
                } else {
                    Vec::new()
                },
                cgroup: attributed.then(|| Arc::from("/kubepods/pod0b1c/abc")),
                pod: attributed.then(|| Arc::clone(&pod)),
                enrichment: if attributed {
                    pb::Enrichment::Complete
                } else {
                    pb::Enrichment::Partial
                },
            };
            let expected = make().to_pb(&Origin::node("node-1"));
            // Twice: the second time from the processes' cached parts.
            for _ in 0..2 {
                let encoded = make().encode(&Origin::node("node-1"));
                assert_eq!(
                    encoded.payload.as_ref(),
                    expected.encode_to_vec().as_slice(),
                    "{expected:?}"
                );
                assert_eq!(encoded.key, Key::of(&expected));
                assert_eq!(encoded.second, expected.verdict);
                assert_eq!(encoded.time_unix_ns, expected.time_unix_ns);
                checked += 1;
            }
        }
    }
    assert_eq!(checked, bodies().len() * 4);
}

#[test]
fn a_pod_with_several_labels_decodes_as_its_event() {
    let mut labels = pod();
    labels
        .labels
        .extend([("tier".into(), "front".into()), ("z".into(), "1".into())]);
    let draft = Draft {
        event: event(Body::Exit, Verdict::Allowed),
        rules: Arc::new(policy::from_default(None)),
        time_unix_ns: 1,
        process: None,
        ancestors: Vec::new(),
        cgroup: None,
        pod: Some(Arc::new(PodAttr::new(&labels))),
        enrichment: pb::Enrichment::Complete,
    };
    let expected = draft.to_pb(&Origin::node("n"));
    let encoded = draft.encode(&Origin::node("n"));
    assert_eq!(pb::Event::decode(encoded.payload).unwrap(), expected);
    assert_eq!(encoded.key.pod.unwrap().labels.len(), 3);
}

#[test]
fn an_exec_carries_the_process_arguments_and_a_cached_part_follows_a_new_process() {
    let rules = Arc::new(policy::from_default(None));
    let before = proc_info(300, 1, "/bin/sh", &["sh"]);
    let draft = |p: &Arc<ProcInfo>| Draft {
        event: event(
            Body::Exec {
                filename: PathArg::Complete("/usr/bin/curl".into()),
            },
            Verdict::Allowed,
        ),
        rules: Arc::clone(&rules),
        time_unix_ns: 5,
        process: Some(Arc::clone(p)),
        ancestors: Vec::new(),
        cgroup: None,
        pod: None,
        enrichment: pb::Enrichment::Complete,
    };
    let old = pb::Event::decode(draft(&before).encode(&Origin::node("n")).payload).unwrap();
    assert_eq!(old.process.unwrap().exe, "/bin/sh");
    // exec: the cache holds a new ProcInfo (a clone starts without encoded parts).
    let after = Arc::new(ProcInfo {
        exe: "/usr/bin/curl".into(),
        args: vec!["curl".into(), "-s".into()],
        ..(*before).clone()
    });
    let new = pb::Event::decode(draft(&after).encode(&Origin::node("n")).payload).unwrap();
    assert_eq!(new.process.as_ref().unwrap().exe, "/usr/bin/curl");
    match new.body {
        Some(pb::event::Body::Exec(x)) => assert_eq!(x.args, ["curl", "-s"]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn daemon_events_encode_without_seq_and_count_by_stage() {
    let mut lost = crate::event::proto::lost(pb::LossStage::Kernel, 7, &Origin::node("n"), 99);
    lost.seq = 12;
    let e = encode_pb(&lost);
    let decoded = pb::Event::decode(e.payload.clone()).unwrap();
    assert_eq!(
        decoded.seq, 0,
        "the sequence number is the journal's, spliced in when sent"
    );
    assert_eq!(decoded.body, lost.body);
    assert_eq!(e.second, pb::LossStage::Kernel as i32);
    assert_eq!(e.key.kind, pb::EventKind::Lost);
    let mut with_seq = Vec::new();
    put_seq(&mut with_seq, 12);
    with_seq.extend_from_slice(&e.payload);
    assert_eq!(with_seq, lost.encode_to_vec());
    assert_eq!(seq_len(0), 0);
    assert_eq!(seq_len(12), 2);
}
