//! `sensor advise`'s output: the readable report, the JSON object, and the ready-to-apply files
//! of `--out-dir` (NetworkPolicies, the seccomp profile, strategic-merge patches, a README).

use std::{fmt::Write as _, net::IpAddr, path::Path};

use sensor_policy::destinations::metadata_endpoints;
use serde_json::{Value, json};

use super::advise::{Advice, Owner, Patch, Seen, display_owner, pod_spec_path};
use crate::{event::time::rfc3339, policy::resources::yaml_lines};

/// The seccomp profile's file name, below the kubelet's seccomp directory
/// (`/var/lib/kubelet/seccomp/`).
pub const SECCOMP_PROFILE: &str = "profiles/prevent-chmod.json";
/// The NetworkPolicy's name in every namespace.
pub const NETWORK_POLICY_NAME: &str = "deny-metadata-egress";

/// What the journal records, so what the advice can rest on (docs/hardening.md repeats it).
pub const VISIBILITY: [&str; 4] = [
    "chmod: every chmod-family call (chmod, fchmod, fchmodat, fchmodat2) of a process below the scope cgroups is recorded at every tier, with or without set-id bits (verdict allowed when no rule matched), also in pods a policy's namespace scope exempts; at the kill tier fchmodat2 only where the kernel has its tracepoint (6.6 and later); processes outside the scope cgroups are not seen",
    "metadata: connects and sends to a destination a policy in force lists, from pods that policy applies to; a pod its namespace or label scope exempts is allowed without an event, so for such a namespace 'never reached' is no evidence (the built-in policy exempts kube-system, which is why it is excluded by default)",
    "privilege raises: only the kinds a policy in force names (the built-in policy audits all five: setuid-root, setgid-root, capset, setid-exec, file-caps), not from exempted pods; the sensor does not see which capabilities a process uses without raising them",
    "the advice is only as good as the window: a workload that did not run a code path in the window (a monthly job, an upgrade hook, a rare error path) may still need what it did not do here; try the changes in audit or staging first",
];

fn seen_json(s: &Seen) -> Value {
    json!({"count": s.count, "first_seen": rfc3339(s.first_ns), "last_seen": rfc3339(s.last_ns)})
}

fn owner_json(owner: &Owner) -> Value {
    match owner {
        Owner::Pod {
            namespace,
            kind,
            name,
        } => json!({"namespace": namespace, "kind": kind, "name": name}),
        Owner::Host { cgroup } => json!({"host_cgroup": cgroup}),
    }
}

fn window_json(advice: &Advice) -> Value {
    let w = &advice.window;
    json!({
        "since": rfc3339(w.since_ns),
        "until": rfc3339(w.until_ns),
        "events": w.events,
        "lost": w.lost,
        "first_event": w.first_ns.map(rfc3339),
        "last_event": w.last_ns.map(rfc3339),
    })
}

/// The whole advice as one JSON object (`-o json`).
pub fn to_json(advice: &Advice) -> Value {
    let workloads: Vec<Value> = advice
        .workloads
        .iter()
        .map(|(owner, wl)| {
            let patch = find_patch(advice, owner);
            let mut v = owner_json(owner);
            let extra = json!({
                "pods": wl.pods,
                "containers": wl.containers,
                "events": seen_json(&wl.events),
                "metadata": wl.metadata.iter().map(|(k, s)| json!({"destination": k.destination, "address": k.address, "verdict": k.verdict, "seen": seen_json(s)})).collect::<Vec<_>>(),
                "other_connects": wl.other_connects.iter().map(|(k, s)| json!({"rule": k.destination, "address": k.address, "verdict": k.verdict, "seen": seen_json(s)})).collect::<Vec<_>>(),
                "chmod": wl.chmods.iter().map(|(k, s)| json!({"mode": k.mode, "setid": k.setid, "verdict": k.verdict, "seen": seen_json(s)})).collect::<Vec<_>>(),
                "privilege": wl.raises.iter().map(|(k, s)| json!({"what": k.what, "verdict": k.verdict, "seen": seen_json(s)})).collect::<Vec<_>>(),
                "ran_as_root": wl.root,
                "advice": {
                    "seccomp_prevent_chmod": patch.is_some_and(|p| p.seccomp),
                    "allow_privilege_escalation_false": patch.map(|p| p.containers.iter().filter(|c| c.no_privilege_escalation).map(|c| c.name.clone()).collect::<Vec<_>>()).unwrap_or_default(),
                    "drop_all_capabilities": patch.map(|p| p.containers.iter().filter(|c| c.drop_all_capabilities).map(|c| c.name.clone()).collect::<Vec<_>>()).unwrap_or_default(),
                    "patch_file": patch.map(Patch::file_name),
                },
                "notes": advice.workload_notes.get(owner).cloned().unwrap_or_default(),
            });
            if let (Value::Object(v), Value::Object(extra)) = (&mut v, extra) {
                v.extend(extra);
            }
            v
        })
        .collect();
    let namespaces: Vec<Value> = advice
        .namespace_notes
        .iter()
        .map(|(ns, notes)| {
            let policy = advice.network_policies.contains(ns);
            json!({"namespace": ns, "network_policy": policy,
                "file": policy.then(|| network_policy_file(ns)), "notes": notes})
        })
        .collect();
    json!({
        "window": window_json(advice),
        "visibility": VISIBILITY,
        "namespaces": namespaces,
        "workloads": workloads,
        "notes": advice.notes,
    })
}

fn find_patch<'a>(advice: &'a Advice, owner: &Owner) -> Option<&'a Patch> {
    let Owner::Pod {
        namespace,
        kind,
        name,
    } = owner
    else {
        return None;
    };
    advice
        .patches
        .iter()
        .find(|p| &p.namespace == namespace && &p.kind == kind && &p.name == name)
}

pub fn network_policy_file(namespace: &str) -> String {
    format!(
        "networkpolicy-{}.yaml",
        crate::hardening::advise::safe_name(namespace)
    )
}

/// The metadata-egress NetworkPolicy of the guidance: every pod of the namespace may reach
/// anything but the built-in metadata prefixes.
pub fn network_policy(namespace: &str) -> Value {
    let (mut v4, mut v6) = (Vec::new(), Vec::new());
    for d in metadata_endpoints() {
        match d.prefix.addr {
            IpAddr::V4(_) => v4.push(d.prefix.to_string()),
            IpAddr::V6(_) => v6.push(d.prefix.to_string()),
        }
    }
    let mut to = vec![json!({"ipBlock": {"cidr": "0.0.0.0/0", "except": v4}})];
    if !v6.is_empty() {
        to.push(json!({"ipBlock": {"cidr": "::/0", "except": v6}}));
    }
    // Pods of the cluster by selector as well: some data planes (Cilium) do not match pod
    // addresses against ipBlock, and without this the policy would cut DNS and all in-cluster
    // traffic there. Metadata endpoints are never pods.
    to.push(json!({"namespaceSelector": {}}));
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": NETWORK_POLICY_NAME,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "sensor-advise"},
        },
        "spec": {
            "podSelector": {},
            "policyTypes": ["Egress"],
            "egress": [{"to": to}],
        },
    })
}

/// The `prevent-chmod` seccomp profile (the OCI / Kubernetes localhost profile format): every
/// call allowed but the chmod family, which fails with EPERM.
pub fn seccomp_profile() -> Value {
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32", "SCMP_ARCH_AARCH64"],
        "syscalls": [{
            "names": ["chmod", "fchmod", "fchmodat", "fchmodat2"],
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": 1,
        }],
    })
}

/// The strategic-merge patch body of `patch`: the pod-level seccomp profile and the
/// container-level securityContext, at the owner kind's pod spec.
pub fn patch_body(patch: &Patch) -> Value {
    let mut spec = serde_json::Map::new();
    if patch.seccomp {
        spec.insert(
            "securityContext".into(),
            json!({"seccompProfile": {"type": "Localhost", "localhostProfile": SECCOMP_PROFILE}}),
        );
    }
    if !patch.containers.is_empty() {
        let containers: Vec<Value> = patch
            .containers
            .iter()
            .map(|c| {
                let mut sc = serde_json::Map::new();
                if c.no_privilege_escalation {
                    sc.insert("allowPrivilegeEscalation".into(), false.into());
                }
                if c.drop_all_capabilities {
                    sc.insert("capabilities".into(), json!({"drop": ["ALL"]}));
                }
                json!({"name": c.name, "securityContext": sc})
            })
            .collect();
        spec.insert("containers".into(), containers.into());
    }
    let path = pod_spec_path(&patch.kind).unwrap_or(&["spec"]);
    path.iter()
        .rev()
        .fold(Value::Object(spec), |inner, key| json!({ *key: inner }))
}

/// A YAML document with a comment header.
fn yaml_doc(header: &str, value: &Value) -> String {
    let mut out = String::new();
    for line in header.lines() {
        let _ = writeln!(out, "# {line}");
    }
    for line in yaml_lines(value) {
        out.push_str(&line);
        out.push('\n');
    }
    out
}

fn patch_file(patch: &Patch) -> String {
    let header = format!(
        "Strategic-merge patch for {kind} {ns}/{name}, from `sensor advise`.\nkubectl -n {ns} patch {kind_lower} {name} --type strategic --patch-file {file}\n{seccomp}Containers are those the window saw; one that is an init container belongs under initContainers.",
        kind = patch.kind,
        ns = patch.namespace,
        name = patch.name,
        kind_lower = patch.kind.to_ascii_lowercase(),
        file = patch.file_name(),
        seccomp = if patch.seccomp {
            format!(
                "The seccomp profile must be on every node first: /var/lib/kubelet/seccomp/{SECCOMP_PROFILE}.\n"
            )
        } else {
            String::new()
        },
    );
    yaml_doc(&header, &patch_body(patch))
}

/// The readable report (`-o report`, and the body of `--out-dir`'s README).
pub fn report(advice: &Advice) -> String {
    let mut out = String::new();
    let w = &advice.window;
    let _ = writeln!(
        out,
        "Window: {} to {} ({} event(s){}{})",
        rfc3339(w.since_ns),
        rfc3339(w.until_ns),
        w.events,
        match (w.first_ns, w.last_ns) {
            (Some(f), Some(l)) => format!(", first {} last {}", rfc3339(f), rfc3339(l)),
            _ => String::new(),
        },
        if w.lost > 0 {
            format!(", {} lost", w.lost)
        } else {
            String::new()
        }
    );
    for note in &advice.notes {
        let _ = writeln!(out, "note: {note}");
    }
    let _ = writeln!(out, "\nWhat the sensor could see:");
    for v in VISIBILITY {
        let _ = writeln!(out, "  - {v}");
    }
    let _ = writeln!(out, "\nWorkloads:");
    for (owner, wl) in &advice.workloads {
        let _ = writeln!(
            out,
            "\n{}  ({} event(s), {} to {}{}{})",
            display_owner(owner),
            wl.events.count,
            rfc3339(wl.events.first_ns),
            rfc3339(wl.events.last_ns),
            if wl.pods.is_empty() {
                String::new()
            } else {
                format!(
                    "; pods {}",
                    wl.pods.iter().cloned().collect::<Vec<_>>().join(", ")
                )
            },
            if wl.containers.is_empty() {
                String::new()
            } else {
                format!(
                    "; containers {}",
                    wl.containers.iter().cloned().collect::<Vec<_>>().join(", ")
                )
            },
        );
        let line = |out: &mut String, what: String, s: &Seen| {
            let _ = writeln!(
                out,
                "  {what:<52} x{:<6} {} .. {}",
                s.count,
                rfc3339(s.first_ns),
                rfc3339(s.last_ns)
            );
        };
        for (k, s) in &wl.metadata {
            line(
                &mut out,
                format!("metadata {} {} {}", k.destination, k.address, k.verdict),
                s,
            );
        }
        for (k, s) in &wl.other_connects {
            line(
                &mut out,
                format!("connect {} {} {}", k.destination, k.address, k.verdict),
                s,
            );
        }
        for (k, s) in &wl.chmods {
            let setid = if k.setid { "set-id" } else { "no set-id" };
            line(
                &mut out,
                format!("chmod {} ({setid}) {}", k.mode, k.verdict),
                s,
            );
        }
        for (k, s) in &wl.raises {
            line(&mut out, format!("privilege {} {}", k.what, k.verdict), s);
        }
        if let Some(p) = find_patch(advice, owner) {
            let mut what = Vec::new();
            if p.seccomp {
                what.push("seccomp prevent-chmod".to_owned());
            }
            for c in &p.containers {
                what.push(format!(
                    "{}: allowPrivilegeEscalation false{}",
                    c.name,
                    if c.drop_all_capabilities {
                        ", drop ALL capabilities"
                    } else {
                        ""
                    }
                ));
            }
            let _ = writeln!(out, "  advice: {} ({})", what.join("; "), p.file_name());
        }
        if matches!(owner, Owner::Host { .. }) {
            let _ = writeln!(
                out,
                "  advice: none (a host process, not a Kubernetes workload)"
            );
        }
        for note in advice.workload_notes.get(owner).into_iter().flatten() {
            let _ = writeln!(out, "  note: {note}");
        }
    }
    let _ = writeln!(out, "\nNamespaces:");
    for (ns, notes) in &advice.namespace_notes {
        if advice.network_policies.contains(ns) {
            let _ = writeln!(
                out,
                "  {ns}: NetworkPolicy {NETWORK_POLICY_NAME} blocking egress to the metadata endpoints ({})",
                network_policy_file(ns)
            );
        } else {
            let _ = writeln!(out, "  {ns}: no NetworkPolicy");
        }
        for note in notes {
            let _ = writeln!(out, "    note: {note}");
        }
    }
    out
}

/// Write the ready-to-apply files into `dir` (created when missing); returns the files written.
pub fn write_dir(advice: &Advice, dir: &Path) -> std::io::Result<Vec<String>> {
    let err = |what: &Path, e: std::io::Error| {
        std::io::Error::new(e.kind(), format!("{}: {e}", what.display()))
    };
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| err(parent, e))?;
        }
        std::fs::write(&path, text).map_err(|e| err(&path, e))
    };
    let mut files = Vec::new();
    for ns in &advice.network_policies {
        let name = network_policy_file(ns);
        write(
            &name,
            &yaml_doc(
                &format!(
                    "From `sensor advise`: no pod of {ns} reached a metadata endpoint in the window.\nkubectl apply -f {name}"
                ),
                &network_policy(ns),
            ),
        )?;
        files.push(name);
    }
    if advice.patches.iter().any(|p| p.seccomp) {
        let name = "seccomp/prevent-chmod.json";
        let text = serde_json::to_string_pretty(&seccomp_profile()).unwrap_or_default() + "\n";
        write(name, &text)?;
        files.push(name.to_owned());
    }
    for patch in &advice.patches {
        let name = patch.file_name();
        write(&name, &patch_file(patch))?;
        files.push(name);
    }
    let mut readme = String::from("# Hardening advice from `sensor advise`\n\n");
    let _ = writeln!(
        readme,
        "Covers {} to {}: {} events. The advice is only as good as that window: a workload that did not run a code path in it may still need what it did not do. docs/hardening.md explains each file.\n",
        rfc3339(advice.window.since_ns),
        rfc3339(advice.window.until_ns),
        advice.window.events
    );
    let _ = writeln!(readme, "Files:\n");
    for f in &files {
        let what = if f.starts_with("networkpolicy-") {
            "NetworkPolicy blocking pod egress to the metadata endpoints: `kubectl apply -f`"
        } else if f.starts_with("seccomp/") {
            "seccomp profile: copy to /var/lib/kubelet/seccomp/profiles/ on every node before applying a patch that names it"
        } else {
            "strategic-merge patch: `kubectl patch --type strategic --patch-file` (the command is in its header)"
        };
        let _ = writeln!(readme, "- `{f}`: {what}");
    }
    if files.iter().any(|f| f.starts_with("seccomp/")) {
        let _ = writeln!(
            readme,
            "\n`prevent-chmod` allows every call but the chmod family (the guidance's profile): it *replaces* the container runtime's default profile. Apply its patch to workloads that run without a profile today (`sensor posture`, `sensor_pod_posture_findings{{finding=\"no_seccomp_profile\"}}`); for a workload on `RuntimeDefault`, add its chmod rule to a copy of your runtime's default profile instead, or it loses the default's other denials. `fchmodat2` (Linux 6.6) is denied only where the node's libseccomp knows it (2.5.5 and later, or Debian's 2.5.4-1+deb12u1); an older one skips the name and the call stays allowed. A container-level `seccompProfile` overrides the pod-level one the patch sets."
        );
    }
    let _ = writeln!(
        readme,
        "\nA NetworkPolicy only blocks what no other egress policy of the namespace allows (policies add up), and does not apply to hostNetwork pods. Both it and the patches act on every node: the events came from {} only.\n\n```text\n{}```",
        if advice.window.nodes.is_empty() {
            "no node".to_owned()
        } else {
            advice
                .window
                .nodes
                .iter()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        },
        report(advice)
    );
    write("README.md", &readme)?;
    files.push("README.md".to_owned());
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hardening::advise::ContainerPatch;

    #[test]
    fn the_network_policy_excepts_every_built_in_metadata_prefix() {
        let np = network_policy("shop");
        assert_eq!(np["metadata"]["namespace"], "shop");
        assert_eq!(np["spec"]["podSelector"], json!({}));
        assert_eq!(np["spec"]["policyTypes"], json!(["Egress"]));
        assert_eq!(
            np["spec"]["egress"][0]["to"],
            json!([
                {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.169.254/32", "169.254.170.2/32", "169.254.170.23/32", "100.100.100.200/32", "168.63.129.16/32"]}},
                {"ipBlock": {"cidr": "::/0", "except": ["fd00:ec2::254/128", "fd00:ec2::23/128"]}},
                {"namespaceSelector": {}},
            ])
        );
    }

    #[test]
    fn patches_go_where_the_kind_keeps_its_pod_spec() {
        let mut patch = Patch {
            namespace: "batch".into(),
            kind: "CronJob".into(),
            name: "nightly".into(),
            seccomp: true,
            containers: vec![ContainerPatch {
                name: "app".into(),
                no_privilege_escalation: true,
                drop_all_capabilities: false,
            }],
        };
        let body = patch_body(&patch);
        let spec = &body["spec"]["jobTemplate"]["spec"]["template"]["spec"];
        assert_eq!(
            spec["securityContext"]["seccompProfile"],
            json!({"type": "Localhost", "localhostProfile": "profiles/prevent-chmod.json"})
        );
        assert_eq!(
            spec["containers"],
            json!([{"name": "app", "securityContext": {"allowPrivilegeEscalation": false}}])
        );
        patch.kind = "Pod".into();
        patch.seccomp = false;
        let body = patch_body(&patch);
        assert!(body["spec"]["securityContext"].is_null());
        assert_eq!(body["spec"]["containers"][0]["name"], "app");
    }

    #[test]
    fn the_seccomp_profile_denies_the_chmod_family_with_eperm() {
        let p = seccomp_profile();
        assert_eq!(p["defaultAction"], "SCMP_ACT_ALLOW");
        assert_eq!(p["syscalls"][0]["errnoRet"], libc::EPERM);
        assert_eq!(
            p["syscalls"][0]["names"],
            json!(["chmod", "fchmod", "fchmodat", "fchmodat2"])
        );
    }
}
