//! Tests of `index.rs`.

use super::*;

const C1: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const C2: &str = "2222222222222222222222222222222222222222222222222222222222222222";

/// A pod from its JSON form, as the API server sends it.
pub(crate) fn pod(v: serde_json::Value) -> Pod {
    serde_json::from_value(v).expect("valid pod JSON")
}

fn owned(kind: &str, owner: &str, labels: serde_json::Value) -> Pod {
    pod(serde_json::json!({
        "metadata": {
            "name": "p-xyz", "namespace": "ns", "uid": "u-1", "labels": labels,
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "Other", "name": "not-controller", "uid": "x"},
                {"apiVersion": "apps/v1", "kind": kind, "name": owner, "uid": "o", "controller": true}
            ]
        }
    }))
}

fn simple(uid: &str, container_ids: &[&str]) -> Pod {
    let statuses: Vec<_> = container_ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            serde_json::json!({
                "name": format!("c{i}"), "image": "img:1", "imageID": "sha256:abc",
                "containerID": id, "ready": true, "restartCount": 0
            })
        })
        .collect();
    pod(serde_json::json!({
        "metadata": {"name": format!("pod-{uid}"), "namespace": "ns", "uid": uid},
        "spec": {"nodeName": "node-a", "containers": []},
        "status": {"containerStatuses": statuses}
    }))
}

#[test]
fn owner_resolution() {
    let hash = serde_json::json!({"pod-template-hash": "7d9f8b6c5"});
    let none = serde_json::json!({});
    let cases = [
        (
            owned("ReplicaSet", "web-7d9f8b6c5", hash.clone()),
            ("Deployment", "web"),
        ),
        (
            owned("ReplicaSet", "my-web-app-7d9f8b6c5", hash.clone()),
            ("Deployment", "my-web-app"),
        ),
        // No hash label: a bare ReplicaSet.
        (
            owned("ReplicaSet", "web-7d9f8b6c5", none.clone()),
            ("ReplicaSet", "web-7d9f8b6c5"),
        ),
        // The label does not match the name's suffix.
        (
            owned("ReplicaSet", "web-abc", hash.clone()),
            ("ReplicaSet", "web-abc"),
        ),
        // The name is only the hash.
        (
            owned("ReplicaSet", "7d9f8b6c5", hash.clone()),
            ("ReplicaSet", "7d9f8b6c5"),
        ),
        (
            owned("Job", "backup-29012345", none.clone()),
            ("CronJob", "backup"),
        ),
        (
            owned("Job", "nightly-backup-290123456", none.clone()),
            ("CronJob", "nightly-backup"),
        ),
        // Too few digits, or not all digits: a plain Job.
        (
            owned("Job", "backup-1234567", none.clone()),
            ("Job", "backup-1234567"),
        ),
        (
            owned("Job", "backup-2901234a", none.clone()),
            ("Job", "backup-2901234a"),
        ),
        (owned("Job", "29012345", none.clone()), ("Job", "29012345")),
        (
            owned("DaemonSet", "agent", none.clone()),
            ("DaemonSet", "agent"),
        ),
        (
            owned("StatefulSet", "db", none.clone()),
            ("StatefulSet", "db"),
        ),
        (owned("Node", "node-a", none.clone()), ("Node", "node-a")),
        (simple("u-2", &[]), ("Pod", "pod-u-2")),
    ];
    for (pod, (kind, name)) in cases {
        let got = owner_of(&pod.metadata);
        assert_eq!(
            (got.0.as_str(), got.1.as_str()),
            (kind, name),
            "{:?}",
            pod.metadata.owner_references
        );
    }
}

#[test]
fn container_id_prefixes_are_stripped() {
    assert_eq!(strip_runtime_prefix(&format!("containerd://{C1}")), C1);
    assert_eq!(strip_runtime_prefix(&format!("cri-o://{C1}")), C1);
    assert_eq!(strip_runtime_prefix(&format!("docker://{C1}")), C1);
    assert_eq!(strip_runtime_prefix(C1), C1);

    let index = PodIndex::new(Duration::from_secs(30));
    index.apply(&simple(
        "u-1",
        &[&format!("containerd://{C1}"), &format!("cri-o://{C2}"), ""],
    ));
    let v = index.by_container_id(C1).expect("by bare id");
    assert_eq!(
        (
            v.container_id.as_str(),
            v.container_name.as_str(),
            v.uid.as_str()
        ),
        (C1, "c0", "u-1")
    );
    assert_eq!(v.image, "img:1");
    assert_eq!(v.image_id, "sha256:abc");
    assert_eq!(v.node, "node-a");
    assert_eq!(index.by_container_id(C2).unwrap().container_name, "c1");
    // A prefixed id also works; the prefixed form is not a key of its own.
    assert_eq!(
        index
            .by_container_id(&format!("docker://{C1}"))
            .unwrap()
            .uid,
        "u-1"
    );
    assert!(index.by_container_id("containerd://").is_none());
    assert!(index.by_container_id("").is_none());
}

#[test]
fn init_ephemeral_and_previous_containers_are_indexed() {
    let c3 = "3".repeat(64);
    let c4 = "4".repeat(64);
    let p = pod(serde_json::json!({
        "metadata": {"name": "p", "namespace": "ns", "uid": "u-1"},
        "status": {
            "containerStatuses": [{"name": "main", "image": "m", "imageID": "", "ready": true, "restartCount": 1,
                "containerID": format!("containerd://{C1}"),
                "lastState": {"terminated": {"exitCode": 1, "containerID": format!("containerd://{C2}")}}}],
            "initContainerStatuses": [{"name": "init", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                "containerID": format!("containerd://{c3}")}],
            "ephemeralContainerStatuses": [{"name": "debug", "image": "d", "imageID": "", "ready": false, "restartCount": 0,
                "containerID": format!("containerd://{c4}")}]
        }
    }));
    let index = PodIndex::new(Duration::from_secs(30));
    index.apply(&p);
    let name = |id: &str| index.by_container_id(id).map(|v| v.container_name);
    assert_eq!(name(C1).as_deref(), Some("main"));
    assert_eq!(name(C2).as_deref(), Some("main"));
    assert_eq!(name(&c3).as_deref(), Some("init"));
    assert_eq!(name(&c4).as_deref(), Some("debug"));
}

#[test]
fn lookup_by_uid_and_mirror_hash() {
    let hash = "6e0b6b1e2a3c4d5e6f708192a3b4c5d6";
    let mirror = pod(serde_json::json!({
        "metadata": {
            "name": "kube-apiserver-node-a", "namespace": "kube-system", "uid": "9a1b2c3d-0000-4000-8000-000000000001",
            "annotations": {"kubernetes.io/config.mirror": hash, "kubernetes.io/config.hash": hash},
            "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": "node-a", "uid": "n", "controller": true}]
        },
        "status": {"containerStatuses": [{"name": "kube-apiserver", "image": "k", "imageID": "", "ready": true,
            "restartCount": 0, "containerID": format!("containerd://{C1}")}]}
    }));
    let index = PodIndex::new(Duration::from_secs(30));
    index.apply(&mirror);
    index.apply(&simple("5f2e1d0c-0000-4000-8000-000000000002", &[]));

    let by_hash = index.by_pod_uid(hash).expect("static pod by config hash");
    assert_eq!(by_hash.name, "kube-apiserver-node-a");
    assert_eq!(
        (by_hash.owner_kind.as_str(), by_hash.owner_name.as_str()),
        ("Node", "node-a")
    );
    assert_eq!(by_hash.container_id, "");
    assert_eq!(by_hash.container_name, "");
    assert_eq!(
        index
            .by_pod_uid("9a1b2c3d-0000-4000-8000-000000000001")
            .unwrap()
            .name,
        "kube-apiserver-node-a"
    );
    // systemd cgroup names spell the UID with underscores.
    assert_eq!(
        index
            .by_pod_uid("5f2e1d0c_0000_4000_8000_000000000002")
            .unwrap()
            .uid,
        "5f2e1d0c-0000-4000-8000-000000000002"
    );
    assert!(index.by_pod_uid("6e0b6b1e").is_none());

    // The hash goes with the pod.
    let index0 = PodIndex::new(Duration::ZERO);
    index0.apply(&mirror);
    index0.delete(&mirror);
    assert!(index0.by_pod_uid(hash).is_none());
    index0.purge_expired();
    assert!(index0.read().mirrors.is_empty());
    assert!(index0.read().containers.is_empty());
}

#[test]
fn deleted_pods_resolve_for_the_grace_period_then_are_purged() {
    let grace = Duration::from_secs(30);
    let index = PodIndex::new(grace);
    let t0 = Instant::now();
    index.apply_at(&simple("u-1", &[C1]), t0);
    index.apply_at(&simple("u-2", &[C2]), t0);
    assert_eq!(index.len(), 2);

    index.delete_at(&simple("u-1", &[C1]), t0);
    assert_eq!(index.len(), 1, "a deleted pod is not counted");
    let during = t0 + grace - Duration::from_millis(1);
    assert_eq!(index.by_container_id_at(C1, during).unwrap().uid, "u-1");
    assert_eq!(index.by_pod_uid_at("u-1", during).unwrap().uid, "u-1");

    let after = t0 + grace;
    assert!(index.by_container_id_at(C1, after).is_none());
    assert!(index.by_pod_uid_at("u-1", after).is_none());
    assert_eq!(index.by_container_id_at(C2, after).unwrap().uid, "u-2");
    // Still stored until a write purges it.
    assert_eq!(index.read().pods.len(), 2);
    index.apply_at(&simple("u-2", &[C2]), after);
    assert_eq!(index.read().pods.len(), 1);
    assert_eq!(index.read().containers.len(), 1);
    assert!(index.read().next_expiry.is_none());
}

#[test]
fn a_replaced_container_resolves_for_the_grace_period() {
    let grace = Duration::from_secs(30);
    let index = PodIndex::new(grace);
    let t0 = Instant::now();
    index.apply_at(&simple("u-1", &[C1]), t0);
    index.apply_at(&simple("u-1", &[C2]), t0);
    assert_eq!(index.by_container_id_at(C2, t0).unwrap().uid, "u-1");
    assert_eq!(index.by_container_id_at(C1, t0).unwrap().uid, "u-1");
    assert!(index.by_container_id_at(C1, t0 + grace).is_none());
    assert_eq!(index.by_container_id_at(C2, t0 + grace).unwrap().uid, "u-1");
    assert_eq!(index.len(), 1);
}

#[test]
fn replace_all_deletes_pods_missing_from_the_list() {
    let grace = Duration::from_secs(30);
    let index = PodIndex::new(grace);
    let t0 = Instant::now();
    index.apply_at(&simple("u-1", &[C1]), t0);
    index.apply_at(&simple("u-2", &[C2]), t0);
    index.replace_parsed_at(vec![parse(&simple("u-2", &[C2])).unwrap()], t0);
    assert_eq!(index.len(), 1);
    assert!(
        index.by_pod_uid_at("u-1", t0).is_some(),
        "in its grace period"
    );
    assert!(index.by_pod_uid_at("u-1", t0 + grace).is_none());
    // A deleted pod that shows up in a later list is live again.
    index.replace_all(&[simple("u-1", &[C1]), simple("u-2", &[C2])]);
    assert_eq!(index.len(), 2);
    assert!(index.by_container_id_at(C1, t0 + grace * 2).is_some());
}

#[tokio::test]
async fn generation_and_changed_notify() {
    let index = PodIndex::new(Duration::from_secs(30));
    let mut rx = index.changed();
    assert_eq!(index.generation(), 0);
    assert!(!rx.has_changed().unwrap());

    let waiter = tokio::spawn({
        let mut rx = index.changed();
        async move {
            rx.changed().await.unwrap();
            *rx.borrow_and_update()
        }
    });
    let clone = index.clone();
    clone.apply(&simple("u-1", &[C1]));
    let seen = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("the waiter is woken")
        .unwrap();
    assert_eq!(seen, 1);
    assert_eq!(index.generation(), 1, "clones share the index");
    assert!(rx.has_changed().unwrap());
    assert_eq!(*rx.borrow_and_update(), 1);

    index.delete(&simple("u-1", &[C1]));
    index.replace_all(&[]);
    assert_eq!(index.generation(), 3);
    assert_eq!(*rx.borrow_and_update(), 3);
    // A pod without a UID changes nothing.
    index.apply(&pod(serde_json::json!({"metadata": {"name": "x"}})));
    assert_eq!(index.generation(), 3);
}

#[test]
fn posture_findings_are_counted_per_namespace_for_pods_not_deleted() {
    let index = PodIndex::new(Duration::from_secs(60));
    let spec = |host_network: bool| {
        serde_json::json!({"hostNetwork": host_network, "containers": [
            {"name": "a", "image": "i"}, {"name": "b", "image": "i"}]})
    };
    let mk = |uid: &str, ns: &str, host_network: bool| {
        pod(serde_json::json!({
            "metadata": {"name": uid, "namespace": ns, "uid": uid},
            "spec": spec(host_network),
        }))
    };
    index.apply(&mk("u1", "shop", true));
    index.apply(&mk("u2", "shop", false));
    index.apply(&mk("u3", "ops", false));
    index.delete(&mk("u3", "ops", false));
    let counts = index.posture_counts();
    // Two containers with the same finding count the pod once.
    assert_eq!(counts[&("shop".to_owned(), "runs_as_root")], 2);
    assert_eq!(counts[&("shop".to_owned(), "host_network")], 1);
    assert!(!counts.keys().any(|(ns, _)| ns == "ops"), "{counts:?}");
}

#[test]
fn posture_changes_are_handed_out_once_per_change() {
    let index = PodIndex::new(Duration::from_secs(60));
    let mk = |uid: &str, sc: serde_json::Value| {
        pod(serde_json::json!({
            "metadata": {"name": format!("pod-{uid}"), "namespace": "shop", "uid": uid},
            "spec": {"containers": [{"name": "app", "image": "i", "securityContext": sc}]},
        }))
    };
    let hardened = serde_json::json!({
        "allowPrivilegeEscalation": false, "runAsNonRoot": true,
        "seccompProfile": {"type": "RuntimeDefault"}});
    let open = serde_json::json!({"privileged": true});
    index.apply(&mk("u1", open.clone()));
    index.apply(&mk("u2", hardened.clone()));
    let first = index.posture_changes();
    // The hardened pod has nothing to report: no record for it.
    assert_eq!(first.len(), 1, "{first:?}");
    assert!(first[0].appeared);
    assert_eq!(first[0].pod.name, "pod-u1");
    let names: Vec<&str> = first[0].findings.iter().map(|f| f.finding).collect();
    assert_eq!(
        names,
        [
            "allow_privilege_escalation",
            "privileged",
            "runs_as_root",
            "no_seccomp_profile"
        ]
    );
    assert!(first[0].findings.iter().all(|f| f.container == "app"));
    // Nothing changed: nothing again, also after an identical update or a relist.
    index.apply(&mk("u1", open.clone()));
    assert!(index.posture_changes().is_empty());
    index.replace_all(&[mk("u1", open), mk("u2", hardened.clone())]);
    assert!(index.posture_changes().is_empty());
    // Fixed: a change to no findings. Loosened: a change with the new findings.
    index.apply(&mk("u1", hardened));
    index.apply(&mk(
        "u2",
        serde_json::json!({"allowPrivilegeEscalation": false, "runAsNonRoot": true}),
    ));
    let changed = index.posture_changes();
    assert_eq!(changed.len(), 2, "{changed:?}");
    assert!(!changed[0].appeared && changed[0].findings.is_empty());
    assert!(!changed[1].appeared);
    assert_eq!(changed[1].findings.len(), 1);
    assert_eq!(changed[1].findings[0].finding, "no_seccomp_profile");
    // A deleted pod is not reported.
    index.delete(&mk("u2", serde_json::json!({"privileged": true})));
    assert!(index.posture_changes().is_empty());
}
