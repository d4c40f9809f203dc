//! cgroup path -> pod and container.
//!
//! Layouts recognised (the `<uid>` is the pod UID; the `<id>` a 64-hex container id):
//!
//! | driver | pod cgroup | container cgroup below it |
//! |---|---|---|
//! | systemd | `kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid with _>.slice` (no `<qos>` level for Guaranteed) | `cri-containerd-<id>.scope`, `crio-<id>.scope`, `docker-<id>.scope` (cri-dockerd) |
//! | cgroupfs | `kubepods/<qos>/pod<uid>` (no `<qos>` level for Guaranteed) | `<id>` (containerd, cri-dockerd), `crio-<id>` |
//!
//! Rules, in the order they apply:
//!
//! - **Prefix**: anything may come before the `kubepods` tree (kind and k3d nodes put it below
//!   their own cgroup, `/system.slice/docker-<node>.scope/...`, and name the slices
//!   `kubelet-kubepods...`). The pod cgroup is found by its own name and its parents, so a
//!   64-hex id in the prefix is never taken for the container.
//! - **Outermost pod wins**: the first pod cgroup from the root is the pod. Whatever a container
//!   creates below itself (a nested kubelet, a delegated subtree) belongs to that container, so
//!   a workload cannot re-attribute itself to another pod by naming its own sub-cgroups.
//! - **systemd slices are checked**: systemd nests `a-b-c.slice` in `a-b.slice` in `a.slice`, so
//!   a systemd pod slice is accepted only below exactly that chain of parents.
//! - **The container is the first cgroup below the pod**; deeper cgroups (crun's `container`
//!   sub-cgroup, cgroups the container makes itself) are attributed to it.
//! - **conmon** (`crio-conmon-<id>[.scope]`) is CRI-O's monitor process, not the container: the
//!   result names the pod (runtime CRI-O) with `container_id: None`, since conmon's cost is the
//!   pod's, not the container's, and the pod is still worth reporting.
//! - **Unrecognised cgroups below the pod** (no valid id) give the pod with `container_id: None`.
//! - **UIDs**: systemd's `_` become `-`, hex is lower-cased, and the result must be a canonical
//!   8-4-4-4-12 UUID, or a 32-hex static-pod config hash (kept as it is, lower-cased: the pod
//!   index keys mirror pods by that hash). Container ids are lower-cased.
//! - The runtime is `None` when the name does not tell it (cgroupfs containerd and cri-dockerd
//!   both use the bare id).
//! - A path with a `.` or `..` component is not canonical and gives `None`.

/// What a cgroup path says about the pod and container it belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerRef {
    /// Pod UID in canonical form (lower-case, with dashes: 8-4-4-4-12). For static pods this is
    /// the config hash as it appears in the path (32 hex chars, no dashes) — the pod index also
    /// keys mirror pods by that hash.
    pub pod_uid: Option<String>,
    /// Container id (64 hex chars, lower-case) when the path names a container.
    pub container_id: Option<String>,
    /// The container runtime, when the cgroup's name tells it.
    pub runtime: Option<Runtime>,
    /// The pod's QoS class, from the kubepods level the pod cgroup sits in.
    pub qos: Option<Qos>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Runtime {
    Containerd,
    Crio,
    /// Docker Engine through cri-dockerd.
    Docker,
}

impl Runtime {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Containerd => "containerd",
            Self::Crio => "cri-o",
            Self::Docker => "docker",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Qos {
    Guaranteed,
    Burstable,
    BestEffort,
}

impl Qos {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Guaranteed => "Guaranteed",
            Self::Burstable => "Burstable",
            Self::BestEffort => "BestEffort",
        }
    }
}

/// The pod and container a cgroup path names, or `None` when it is not a pod or container
/// cgroup. `path` is relative to the cgroup2 root (`/kubepods.slice/...`); see the module
/// documentation for the layouts and rules.
pub fn parse_cgroup_path(path: &str) -> Option<ContainerRef> {
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    if components.iter().any(|c| *c == "." || *c == "..") {
        return None;
    }
    components.iter().enumerate().find_map(|(i, name)| {
        let ancestors = &components[..i];
        let (pod_uid, qos) =
            systemd_pod(ancestors, name).or_else(|| cgroupfs_pod(ancestors, name))?;
        let (container_id, runtime) = components
            .get(i + 1)
            .map_or((None, None), |child| container(child));
        Some(ContainerRef {
            pod_uid: Some(pod_uid),
            container_id,
            runtime,
            qos: Some(qos),
        })
    })
}

/// `[<prefix>-]kubepods[-<qos>]-pod<uid with _>.slice`, below its chain of parent slices.
fn systemd_pod(ancestors: &[&str], name: &str) -> Option<(String, Qos)> {
    let stem = name.strip_suffix(".slice")?;
    let parts: Vec<&str> = stem.split('-').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return None;
    }
    let (last, above) = parts.split_last()?;
    let uid = pod_uid(last.strip_prefix("pod")?)?;
    let qos = kubepods_qos(above)?;
    // `a-b-c.slice` lives in `a-b.slice`, which lives in `a.slice`.
    for k in 1..parts.len() {
        let parent = ancestors.get(ancestors.len().checked_sub(k)?)?;
        let expected = &parts[..parts.len() - k];
        if parent.strip_suffix(".slice") != Some(expected.join("-").as_str()) {
            return None;
        }
    }
    Some((uid, qos))
}

/// `kubepods[/<qos>]/pod<uid>`.
fn cgroupfs_pod(ancestors: &[&str], name: &str) -> Option<(String, Qos)> {
    let uid = pod_uid(name.strip_prefix("pod")?)?;
    Some((uid, kubepods_qos(ancestors)?))
}

/// The QoS class from the levels just above a pod: `kubepods` (Guaranteed) or
/// `kubepods`, `burstable`|`besteffort`.
fn kubepods_qos(above: &[&str]) -> Option<Qos> {
    match above {
        [.., "kubepods"] => Some(Qos::Guaranteed),
        [.., "kubepods", "burstable"] => Some(Qos::Burstable),
        [.., "kubepods", "besteffort"] => Some(Qos::BestEffort),
        _ => None,
    }
}

/// A pod UID as it appears after `pod`: canonical UUID (systemd's `_` for `-`) or a 32-hex
/// static-pod config hash; lower-cased.
fn pod_uid(raw: &str) -> Option<String> {
    let uid: String = raw
        .chars()
        .map(|c| {
            if c == '_' {
                '-'
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect();
    (is_uuid(&uid) || is_hex(&uid, 32)).then_some(uid)
}

/// The container a cgroup directly below the pod names: `(id, runtime)`.
fn container(name: &str) -> (Option<String>, Option<Runtime>) {
    let (stem, systemd) = match name.strip_suffix(".scope") {
        Some(stem) => (stem, true),
        None => (name, false),
    };
    if let Some(id) = stem.strip_prefix("crio-conmon-") {
        // conmon: the pod's, not the container's (see the module documentation).
        let runtime = is_hex(id, 64).then_some(Runtime::Crio);
        return (None, runtime);
    }
    let (id, runtime) = if systemd {
        let known = [
            ("cri-containerd-", Runtime::Containerd),
            ("crio-", Runtime::Crio),
            ("docker-", Runtime::Docker),
        ];
        match known
            .into_iter()
            .find_map(|(prefix, rt)| Some((stem.strip_prefix(prefix)?, Some(rt))))
        {
            Some(found) => found,
            None => return (None, None),
        }
    } else if let Some(id) = stem.strip_prefix("crio-") {
        (id, Some(Runtime::Crio))
    } else {
        (stem, None)
    };
    if is_hex(id, 64) {
        (Some(id.to_ascii_lowercase()), runtime)
    } else {
        (None, None)
    }
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Lower-case 8-4-4-4-12.
fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "8e1f1d7c-3b4a-4f62-9c1e-2a9d5b7c6e10";
    const UID_SYSTEMD: &str = "8e1f1d7c_3b4a_4f62_9c1e_2a9d5b7c6e10";
    const UID_UPPER: &str = "8E1F1D7C-3B4A-4F62-9C1E-2A9D5B7C6E10";
    const UID_SYSTEMD_UPPER: &str = "8E1F1D7C_3B4A_4F62_9C1E_2A9D5B7C6E10";
    const UID2: &str = "0b6e4c52-91d3-4a8f-b7e2-5c3d1f9a8e04";
    /// A static pod's config hash (md5 of the manifest).
    const HASH: &str = "6ad3b5c1e7f04d2a9b8c0e1f2a3b4c5d";
    const CID: &str = "3f5c2b9e0a1d4c7b8e6f2a1b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d";
    const CID2: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
    /// The kind node's own container (a docker id in the prefix).
    const NODE: &str = "9f8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1a0";

    fn found(
        uid: &str,
        cid: Option<&str>,
        runtime: Option<Runtime>,
        qos: Qos,
    ) -> Option<ContainerRef> {
        Some(ContainerRef {
            pod_uid: Some(uid.to_owned()),
            container_id: cid.map(str::to_owned),
            runtime,
            qos: Some(qos),
        })
    }

    fn table() -> Vec<(&'static str, String, Option<ContainerRef>)> {
        use Qos::*;
        use Runtime::*;
        let upper_cid = CID.to_ascii_uppercase();
        let sd_burst = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_SYSTEMD}.slice"
        );
        vec![
            // systemd driver, one row per runtime, each QoS class.
            (
                "systemd containerd burstable",
                format!("{sd_burst}/cri-containerd-{CID}.scope"),
                found(UID, Some(CID), Some(Containerd), Burstable),
            ),
            (
                "systemd cri-o besteffort",
                format!(
                    "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_SYSTEMD}.slice/crio-{CID}.scope"
                ),
                found(UID, Some(CID), Some(Crio), BestEffort),
            ),
            (
                "systemd cri-dockerd guaranteed (no QoS level)",
                format!("/kubepods.slice/kubepods-pod{UID_SYSTEMD}.slice/docker-{CID}.scope"),
                found(UID, Some(CID), Some(Docker), Guaranteed),
            ),
            // cgroupfs driver: containerd and cri-dockerd use the bare id, CRI-O `crio-<id>`.
            (
                "cgroupfs containerd burstable",
                format!("/kubepods/burstable/pod{UID}/{CID}"),
                found(UID, Some(CID), None, Burstable),
            ),
            (
                "cgroupfs cri-dockerd guaranteed (no QoS level)",
                format!("/kubepods/pod{UID}/{CID}"),
                found(UID, Some(CID), None, Guaranteed),
            ),
            (
                "cgroupfs besteffort",
                format!("/kubepods/besteffort/pod{UID}/{CID}"),
                found(UID, Some(CID), None, BestEffort),
            ),
            (
                "cgroupfs cri-o",
                format!("/kubepods/burstable/pod{UID}/crio-{CID}"),
                found(UID, Some(CID), Some(Crio), Burstable),
            ),
            // Case and separators.
            (
                "cgroupfs upper-case uid and id",
                format!("/kubepods/burstable/pod{UID_UPPER}/{upper_cid}"),
                found(UID, Some(CID), None, Burstable),
            ),
            (
                "systemd upper-case uid and id",
                format!(
                    "/kubepods.slice/kubepods-pod{UID_SYSTEMD_UPPER}.slice/cri-containerd-{upper_cid}.scope"
                ),
                found(UID, Some(CID), Some(Containerd), Guaranteed),
            ),
            (
                "cgroupfs uid with _",
                format!("/kubepods/pod{UID_SYSTEMD}/{CID}"),
                found(UID, Some(CID), None, Guaranteed),
            ),
            // Static pods: the config hash, kept without dashes.
            (
                "systemd static pod",
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{HASH}.slice/cri-containerd-{CID}.scope"
                ),
                found(HASH, Some(CID), Some(Containerd), Burstable),
            ),
            (
                "cgroupfs static pod, upper-case hash",
                format!("/kubepods/pod{}/{CID}", HASH.to_ascii_uppercase()),
                found(HASH, Some(CID), None, Guaranteed),
            ),
            // Nested prefixes: kind and k3d nodes.
            (
                "kind systemd (inside the node)",
                format!(
                    "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{UID_SYSTEMD}.slice/cri-containerd-{CID}.scope"
                ),
                found(UID, Some(CID), Some(Containerd), BestEffort),
            ),
            (
                "kind systemd guaranteed",
                format!(
                    "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-pod{UID_SYSTEMD}.slice/cri-containerd-{CID}.scope"
                ),
                found(UID, Some(CID), Some(Containerd), Guaranteed),
            ),
            (
                "kind systemd seen from the host",
                format!(
                    "/system.slice/docker-{NODE}.scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-burstable.slice/kubelet-kubepods-burstable-pod{UID_SYSTEMD}.slice/cri-containerd-{CID}.scope"
                ),
                found(UID, Some(CID), Some(Containerd), Burstable),
            ),
            (
                "kind cgroupfs seen from the host: the id below the pod, not the node's",
                format!("/system.slice/docker-{NODE}.scope/kubepods/burstable/pod{UID}/{CID}"),
                found(UID, Some(CID), None, Burstable),
            ),
            (
                "k3d node",
                format!("/docker/{NODE}/kubepods/besteffort/pod{UID}/{CID}"),
                found(UID, Some(CID), None, BestEffort),
            ),
            // crun sub-cgroups: the container is the parent.
            (
                "systemd crun sub-cgroup",
                format!(
                    "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_SYSTEMD}.slice/crio-{CID}.scope/container"
                ),
                found(UID, Some(CID), Some(Crio), BestEffort),
            ),
            (
                "cgroupfs crun sub-cgroup",
                format!("/kubepods/burstable/pod{UID}/{CID}/container"),
                found(UID, Some(CID), None, Burstable),
            ),
            // conmon: the pod, no container.
            (
                "systemd conmon",
                format!("{sd_burst}/crio-conmon-{CID}.scope"),
                found(UID, None, Some(Crio), Burstable),
            ),
            (
                "cgroupfs conmon",
                format!("/kubepods/burstable/pod{UID}/crio-conmon-{CID}"),
                found(UID, None, Some(Crio), Burstable),
            ),
            // Pod-level cgroups and unrecognised children.
            (
                "systemd pod cgroup",
                sd_burst.clone(),
                found(UID, None, None, Burstable),
            ),
            (
                "cgroupfs pod cgroup, trailing slash",
                format!("/kubepods/besteffort/pod{UID}/"),
                found(UID, None, None, BestEffort),
            ),
            (
                "doubled slashes",
                format!("//kubepods//pod{UID}//{CID}"),
                found(UID, Some(CID), None, Guaranteed),
            ),
            (
                "unknown child of a pod",
                format!("/kubepods/pod{UID}/something"),
                found(UID, None, None, Guaranteed),
            ),
            (
                "short container id",
                format!("{sd_burst}/cri-containerd-abc123.scope"),
                found(UID, None, None, Burstable),
            ),
            (
                "unknown scope prefix",
                format!("{sd_burst}/runc-{CID}.scope"),
                found(UID, None, None, Burstable),
            ),
            (
                "outermost pod wins over one nested in a container",
                format!("/kubepods/burstable/pod{UID}/{CID}/kubepods/besteffort/pod{UID2}/{CID2}"),
                found(UID, Some(CID), None, Burstable),
            ),
            // Not pod cgroups.
            ("root", "/".into(), None),
            ("empty", String::new(), None),
            ("sshd", "/system.slice/sshd.service".into(), None),
            (
                "user session",
                "/user.slice/user-1000.slice/session-3.scope".into(),
                None,
            ),
            (
                "containerd itself",
                "/system.slice/containerd.service".into(),
                None,
            ),
            (
                "plain docker container",
                format!("/system.slice/docker-{CID}.scope"),
                None,
            ),
            ("kubepods root", "/kubepods.slice".into(), None),
            (
                "QoS level",
                "/kubepods.slice/kubepods-burstable.slice".into(),
                None,
            ),
            ("cgroupfs QoS level", "/kubepods/burstable".into(), None),
            (
                "invalid uid",
                format!("/kubepods/burstable/podnot-a-uid/{CID}"),
                None,
            ),
            (
                "uid one char short",
                format!("/kubepods/pod{}/{CID}", &UID[1..]),
                None,
            ),
            (
                "unknown QoS level",
                format!("/kubepods/gold/pod{UID}/{CID}"),
                None,
            ),
            ("pod outside kubepods", format!("/foo/pod{UID}/{CID}"), None),
            (
                "systemd pod slice without its parent slices",
                format!("/kubepods-burstable-pod{UID_SYSTEMD}.slice/cri-containerd-{CID}.scope"),
                None,
            ),
            (
                "systemd pod slice below the wrong parent",
                format!("/kubepods.slice/other.slice/kubepods-pod{UID_SYSTEMD}.slice"),
                None,
            ),
            (
                "dot-dot component",
                format!("/kubepods/burstable/pod{UID}/../pod{UID2}/{CID}"),
                None,
            ),
        ]
    }

    #[test]
    fn real_world_paths() {
        for (name, path, want) in table() {
            assert_eq!(parse_cgroup_path(&path), want, "{name}: {path}");
        }
    }

    /// Checks what any `Some` result promises.
    fn check_invariants(input: &str, got: &Option<ContainerRef>) {
        let Some(r) = got else { return };
        let uid = r.pod_uid.as_deref().expect("a result always names the pod");
        assert!(
            is_uuid(uid) || (is_hex(uid, 32) && uid == uid.to_ascii_lowercase()),
            "{input:?} -> {r:?}"
        );
        if let Some(id) = &r.container_id {
            assert!(
                is_hex(id, 64) && *id == id.to_ascii_lowercase(),
                "{input:?} -> {r:?}"
            );
        }
        assert!(r.qos.is_some(), "{input:?} -> {r:?}");
    }

    #[test]
    fn garbage_never_panics() {
        // xorshift64*: deterministic, no dependency.
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            state.wrapping_mul(0x2545_F491_4F6C_DD1D)
        };
        let tokens = [
            "/",
            "/",
            "-",
            "_",
            ".",
            "..",
            ".slice",
            ".scope",
            "pod",
            "kubepods",
            "kubelet",
            "burstable",
            "besteffort",
            "crio-",
            "conmon-",
            "cri-containerd-",
            "docker-",
            UID,
            UID_SYSTEMD,
            HASH,
            CID,
            "a",
            "F",
            "0",
            "é",
            "\u{1F980}",
            "\0",
            "\n",
            " ",
            "\\",
        ];
        for _ in 0..20_000 {
            let len = (next() % 24) as usize;
            let s: String = (0..len)
                .map(|_| tokens[(next() % tokens.len() as u64) as usize])
                .collect();
            check_invariants(&s, &parse_cgroup_path(&s));
        }
        // Every prefix and single-character mutation of every table path.
        for (_, path, _) in table() {
            for (i, _) in path.char_indices() {
                check_invariants(&path[..i], &parse_cgroup_path(&path[..i]));
                let mut m = path.clone();
                m.remove(i);
                check_invariants(&m, &parse_cgroup_path(&m));
                for c in ['/', '-', '_', 'x', 'é', '.'] {
                    let mut m = path.clone();
                    m.insert(i, c);
                    check_invariants(&m, &parse_cgroup_path(&m));
                }
            }
        }
        // Long inputs.
        for s in [
            "/".repeat(100_000),
            "kubepods-".repeat(10_000) + "pod.slice",
            format!("/kubepods/pod{UID}/").repeat(1_000),
        ] {
            check_invariants(&s, &parse_cgroup_path(&s));
        }
    }
}
