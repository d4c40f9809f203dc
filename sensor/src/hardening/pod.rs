//! Pod posture: what a pod's spec leaves open, from the k8s-openapi `Pod` alone (no events):
//! containers that may escalate privileges, run privileged, run as root or without a seccomp
//! profile, and pods that mount host paths or share the host's network or PID namespace.

use k8s_openapi::api::core::v1::{Container, Pod, PodSecurityContext, SecurityContext};

/// One finding. `container` is empty for pod-level findings.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Finding {
    pub finding: &'static str,
    pub container: String,
}

/// The finding names (the `finding` label of `sensor_pod_posture_findings`).
pub const FINDINGS: [&str; 7] = [
    "allow_privilege_escalation",
    "privileged",
    "runs_as_root",
    "no_seccomp_profile",
    "host_path",
    "host_network",
    "host_pid",
];

/// Every finding of `pod`, containers and init containers included (in spec order).
pub fn findings(pod: &Pod) -> Vec<Finding> {
    let mut out = Vec::new();
    let Some(spec) = &pod.spec else {
        return out;
    };
    let pod_sc = spec.security_context.as_ref();
    let containers = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter());
    for c in containers {
        for finding in container_findings(c, pod_sc) {
            out.push(Finding {
                finding,
                container: c.name.clone(),
            });
        }
    }
    let pod_level = [
        (
            "host_path",
            spec.volumes.iter().flatten().any(|v| v.host_path.is_some()),
        ),
        ("host_network", spec.host_network == Some(true)),
        ("host_pid", spec.host_pid == Some(true)),
    ];
    for (finding, yes) in pod_level {
        if yes {
            out.push(Finding {
                finding,
                container: String::new(),
            });
        }
    }
    out
}

fn container_findings(c: &Container, pod: Option<&PodSecurityContext>) -> Vec<&'static str> {
    let sc: Option<&SecurityContext> = c.security_context.as_ref();
    let mut out = Vec::new();
    let privileged = sc.and_then(|s| s.privileged) == Some(true);
    // Unset means allowed (the kernel's default without no_new_privs).
    if sc.and_then(|s| s.allow_privilege_escalation) != Some(false) {
        out.push("allow_privilege_escalation");
    }
    if privileged {
        out.push("privileged");
    }
    let run_as_user = sc
        .and_then(|s| s.run_as_user)
        .or_else(|| pod.and_then(|p| p.run_as_user));
    let non_root = sc
        .and_then(|s| s.run_as_non_root)
        .or_else(|| pod.and_then(|p| p.run_as_non_root));
    let root = match run_as_user {
        Some(uid) => uid == 0,
        None => non_root != Some(true),
    };
    if root {
        out.push("runs_as_root");
    }
    let profile = sc
        .and_then(|s| s.seccomp_profile.as_ref())
        .or_else(|| pod.and_then(|p| p.seccomp_profile.as_ref()));
    if profile.is_none_or(|p| p.type_ == "Unconfined") {
        out.push("no_seccomp_profile");
    }
    out
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{HostPathVolumeSource, PodSpec, SeccompProfile, Volume};

    use super::*;

    fn container(name: &str, sc: Option<SecurityContext>) -> Container {
        Container {
            name: name.into(),
            security_context: sc,
            ..Default::default()
        }
    }

    fn profile(type_: &str) -> Option<SeccompProfile> {
        Some(SeccompProfile {
            type_: type_.into(),
            ..Default::default()
        })
    }

    fn names(pod: &Pod) -> Vec<(String, &'static str)> {
        findings(pod)
            .into_iter()
            .map(|f| (f.container, f.finding))
            .collect()
    }

    #[test]
    fn a_bare_container_has_every_container_finding() {
        let pod = Pod {
            spec: Some(PodSpec {
                containers: vec![container("app", None)],
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            names(&pod),
            [
                ("app".into(), "allow_privilege_escalation"),
                ("app".into(), "runs_as_root"),
                ("app".into(), "no_seccomp_profile"),
            ]
        );
    }

    #[test]
    fn a_hardened_pod_has_none_and_pod_level_settings_count_for_every_container() {
        let pod = Pod {
            spec: Some(PodSpec {
                security_context: Some(PodSecurityContext {
                    run_as_non_root: Some(true),
                    seccomp_profile: profile("RuntimeDefault"),
                    ..Default::default()
                }),
                containers: vec![container(
                    "app",
                    Some(SecurityContext {
                        allow_privilege_escalation: Some(false),
                        ..Default::default()
                    }),
                )],
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(names(&pod), []);
    }

    #[test]
    fn container_settings_win_over_the_pods_and_init_containers_count() {
        let pod = Pod {
            spec: Some(PodSpec {
                security_context: Some(PodSecurityContext {
                    run_as_user: Some(1000),
                    seccomp_profile: profile("RuntimeDefault"),
                    ..Default::default()
                }),
                init_containers: Some(vec![container(
                    "init",
                    Some(SecurityContext {
                        allow_privilege_escalation: Some(false),
                        run_as_user: Some(0),
                        seccomp_profile: profile("Unconfined"),
                        ..Default::default()
                    }),
                )]),
                containers: vec![container(
                    "app",
                    Some(SecurityContext {
                        privileged: Some(true),
                        allow_privilege_escalation: Some(true),
                        ..Default::default()
                    }),
                )],
                host_network: Some(true),
                host_pid: Some(true),
                volumes: Some(vec![Volume {
                    name: "root".into(),
                    host_path: Some(HostPathVolumeSource {
                        path: "/".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            names(&pod),
            [
                ("init".into(), "runs_as_root"),
                ("init".into(), "no_seccomp_profile"),
                ("app".into(), "allow_privilege_escalation"),
                ("app".into(), "privileged"),
                (String::new(), "host_path"),
                (String::new(), "host_network"),
                (String::new(), "host_pid"),
            ]
        );
    }

    #[test]
    fn run_as_non_root_false_without_a_uid_is_root() {
        let pod = Pod {
            spec: Some(PodSpec {
                containers: vec![container(
                    "app",
                    Some(SecurityContext {
                        run_as_non_root: Some(false),
                        allow_privilege_escalation: Some(false),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "Localhost".into(),
                            localhost_profile: Some("profiles/prevent-chmod.json".into()),
                        }),
                        ..Default::default()
                    }),
                )],
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(names(&pod), [("app".into(), "runs_as_root")]);
    }
}
