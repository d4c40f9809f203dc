use super::*;

fn write(root: &std::path::Path, path: &str, text: &str) {
    let p = root.join(path);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

#[test]
fn the_node_record_comes_at_start_and_again_only_when_the_node_changed() {
    let root = std::env::temp_dir().join(format!("sensor-posture-watch-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    write(&root, "proc/sys/kernel/osrelease", "6.1.0-21-amd64\n");
    write(
        &root,
        "sys/kernel/security/lsm",
        "lockdown,capability,apparmor",
    );
    write(
        &root,
        "sys/kernel/security/lockdown",
        "[none] integrity confidentiality\n",
    );
    write(
        &root,
        "proc/mounts",
        "cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n",
    );
    let tiers = BTreeMap::from([("metadata-connect".to_owned(), "cgroup".to_owned())]);
    let t0 = Instant::now();
    let (mut watch, start) = PostureWatch::start(
        root.clone(),
        NodePosture::read(&root),
        Origin::new("node-a", "prod"),
        tiers,
        t0,
    );
    let Some(pb::event::Body::Posture(p)) = &start.body else {
        panic!("{start:?}")
    };
    assert_eq!(p.reason(), pb::PostureReason::Start);
    assert_eq!(p.subject(), pb::PostureSubject::Node);
    let node = p.node.as_ref().unwrap();
    assert_eq!(node.kernel, "6.1.0-21-amd64");
    assert_eq!(node.bpf_lsm_active, Some(false));
    assert!(!node.reboot_pending);
    assert_eq!(node.lockdown, "none");
    assert_eq!(node.cgroup, "v2");
    assert_eq!(node.tiers["metadata-connect"], "cgroup");
    assert_eq!(
        (start.node.as_str(), start.cluster.as_str()),
        ("node-a", "prod")
    );
    // Unchanged, or changed but not yet time to look: nothing.
    assert!(watch.node_changed(t0 + NODE_REREAD).is_none());
    write(
        &root,
        "var/run/reboot-required",
        "*** System restart required ***\n",
    );
    assert!(watch.node_changed(t0 + NODE_REREAD * 3 / 2).is_none());
    let changed = watch
        .node_changed(t0 + NODE_REREAD * 2)
        .expect("a change record");
    let Some(pb::event::Body::Posture(p)) = &changed.body else {
        panic!("{changed:?}")
    };
    assert_eq!(p.reason(), pb::PostureReason::Changed);
    assert!(p.node.as_ref().unwrap().reboot_pending);
    assert!(watch.node_changed(t0 + NODE_REREAD * 3).is_none());
    std::fs::remove_dir_all(&root).unwrap();
}
