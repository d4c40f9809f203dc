//! cgroup paths (`sensor::attribution::cgroups::parse_cgroup_path`): any directory a workload
//! can name. What it finds is well-formed (a canonical pod UID or a 32-hex static-pod hash, a
//! 64-hex container id, both lower-case and spelled in the path) and cgroups made below it
//! cannot change it, not even ones laid out like another pod's.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sensor::attribution::cgroups::parse_cgroup_path;

fn hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn canonical_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12]) && parts.iter().all(|p| hex(p))
}

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    let Some(found) = parse_cgroup_path(path) else {
        return;
    };
    let spelled = path.to_ascii_lowercase().replace('_', "-");
    let uid = found.pod_uid.as_deref().expect("a result names its pod");
    assert!(
        canonical_uuid(uid) || (uid.len() == 32 && hex(uid)),
        "pod uid {uid:?}"
    );
    assert!(spelled.contains(uid), "{uid} is not in {path:?}");
    assert!(found.qos.is_some());
    if let Some(id) = &found.container_id {
        assert!(id.len() == 64 && hex(id), "container id {id:?}");
        assert!(spelled.contains(id.as_str()));
    }
    for below in [
        "/kubepods/pod11111111-2222-4333-8444-555555555555",
        "/kubepods.slice/kubepods-pod11111111_2222_4333_8444_555555555555.slice",
        "/container/cri-containerd-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.scope",
    ] {
        assert_eq!(
            parse_cgroup_path(&format!("{path}{below}")).as_ref(),
            Some(&found),
            "a cgroup below {path:?} changed what it names"
        );
    }
});
