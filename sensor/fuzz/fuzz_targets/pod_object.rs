//! Pod objects as the API server sends them (`sensor::attribution::pods`): any JSON that
//! deserializes as a Pod goes into the pod index. A pod without a UID is not indexed; one with
//! a UID resolves by it (and by its mirror hash) with its own namespace, name and labels, each
//! container id of its status resolves to it, also through the cgroup path containerd gives
//! that container, and a resolved owner is one its controller reference names. A deleted pod
//! still resolves during the grace period, uncounted.
#![no_main]

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use libfuzzer_sys::fuzz_target;
use sensor::attribution::{
    cgroups::parse_cgroup_path,
    pods::{PodIndex, strip_runtime_prefix},
};

fn lower_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fuzz_target!(|data: &[u8]| {
    let Ok(pod) = serde_json::from_slice::<Pod>(data) else {
        return;
    };
    let index = PodIndex::new(Duration::from_secs(3600));
    index.apply(&pod);
    let meta = &pod.metadata;
    let Some(uid) = meta.uid.as_deref().filter(|u| !u.is_empty()) else {
        assert!(index.is_empty(), "a pod without a uid was indexed");
        return;
    };
    assert_eq!(index.len(), 1);
    // Lookups by uid take systemd's `_` for `-`; a UID never holds either form but canonical.
    if !uid.contains('_') {
        let view = index
            .by_pod_uid(uid)
            .expect("an indexed pod resolves by its uid");
        assert_eq!(view.uid, uid);
        assert_eq!(view.namespace, meta.namespace.clone().unwrap_or_default());
        assert_eq!(view.name, meta.name.clone().unwrap_or_default());
        assert_eq!(view.labels, meta.labels.clone().unwrap_or_default());
        let controller = meta
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true));
        match (view.owner_kind.as_str(), controller) {
            ("Pod", None) => assert_eq!(view.owner_name, view.name),
            (_, None) => panic!("owner {} without a controller", view.owner_kind),
            ("Deployment", Some(o)) if o.kind == "ReplicaSet" => {
                assert!(o.name.starts_with(&format!("{}-", view.owner_name)))
            }
            ("CronJob", Some(o)) if o.kind == "Job" => {
                assert!(o.name.starts_with(&format!("{}-", view.owner_name)))
            }
            (kind, Some(o)) => assert_eq!((kind, view.owner_name.as_str()), (&*o.kind, &*o.name)),
        }
    }
    let statuses = pod.status.iter().flat_map(|s| {
        [
            &s.container_statuses,
            &s.init_container_statuses,
            &s.ephemeral_container_statuses,
        ]
        .into_iter()
        .flatten()
        .flatten()
    });
    for cs in statuses {
        // As the status says it, `scheme://id` (the lookup ignores the scheme as well).
        let Some(raw) = cs.container_id.as_deref() else {
            continue;
        };
        let id = strip_runtime_prefix(raw);
        if id.is_empty() {
            continue;
        }
        let view = index
            .by_container_id(raw)
            .expect("a container of the status resolves");
        assert_eq!(view.uid, uid);
        assert_eq!(view.container_id, id);
        // The API server's UIDs are lower-case; the cgroup parser lower-cases what it reads.
        if lower_hex(id, 64) && !uid.contains('_') && uid == uid.to_ascii_lowercase() {
            let path = format!(
                "/kubepods.slice/kubepods-pod{}.slice/cri-containerd-{id}.scope",
                uid.replace('-', "_")
            );
            if let Some(target) = parse_cgroup_path(&path) {
                assert_eq!(target.container_id.as_deref(), Some(id));
                let by_path = index.by_container_id(id).map(|v| v.uid);
                assert_eq!(by_path.as_deref(), Some(uid));
                assert_eq!(
                    index
                        .by_pod_uid(target.pod_uid.as_deref().unwrap())
                        .map(|v| v.uid)
                        .as_deref(),
                    Some(uid)
                );
            }
        }
    }
    index.delete(&pod);
    assert_eq!(index.len(), 0, "a deleted pod is still counted");
    index.replace_all(&[]);
    if !uid.contains('_') {
        assert!(
            index.by_pod_uid(uid).is_some(),
            "gone before its grace period"
        );
    }
});
