use super::*;

use pb::Verdict::{Allowed, Audited, Blocked};

const T0: i64 = 1_700_000_000_000_000_000;

fn base(seq: u64, pod: Option<(&str, &str, &str, &str)>, verdict: pb::Verdict) -> pb::Event {
    pb::Event {
        seq,
        time_unix_ns: T0 + i64::try_from(seq).unwrap() * 1_000_000_000,
        verdict: verdict as i32,
        pod: pod.map(|(namespace, kind, owner, pod)| pb::Pod {
            namespace: namespace.into(),
            name: pod.into(),
            owner_kind: kind.into(),
            owner_name: owner.into(),
            container_name: "app".into(),
            ..Default::default()
        }),
        process: Some(pb::Process {
            uid: 1000,
            euid: Some(1000),
            cgroup: "system.slice/cron.service".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn connect(seq: u64, pod: (&str, &str, &str, &str), addr: &str, v: pb::Verdict) -> pb::Event {
    pb::Event {
        rule: "metadata-imds-v4".into(),
        body: Some(pb::event::Body::Connect(pb::Connect {
            hook: pb::ConnectHook::Connect4 as i32,
            dst_addr: addr.into(),
            dst_port: 80,
            ..Default::default()
        })),
        ..base(seq, Some(pod), v)
    }
}

fn chmod(seq: u64, pod: Option<(&str, &str, &str, &str)>, mode: u32) -> pb::Event {
    pb::Event {
        body: Some(pb::event::Body::Chmod(pb::Chmod {
            mode,
            ..Default::default()
        })),
        ..base(seq, pod, Allowed)
    }
}

fn raise(seq: u64, pod: (&str, &str, &str, &str), what: &str) -> pb::Event {
    pb::Event {
        body: Some(pb::event::Body::Privilege(pb::PrivilegeChange {
            what: what.into(),
            ..Default::default()
        })),
        ..base(seq, Some(pod), Audited)
    }
}

fn exec(seq: u64, pod: (&str, &str, &str, &str)) -> pb::Event {
    pb::Event {
        body: Some(pb::event::Body::Exec(pb::Exec::default())),
        ..base(seq, Some(pod), Allowed)
    }
}

fn pod_owner(namespace: &str, kind: &str, name: &str) -> Owner {
    Owner::Pod {
        namespace: namespace.into(),
        kind: kind.into(),
        name: name.into(),
    }
}

const WEB_A: (&str, &str, &str, &str) = ("shop", "Deployment", "web", "web-7d9f-a");
const WEB_B: (&str, &str, &str, &str) = ("shop", "Deployment", "web", "web-7d9f-b");
const CART: (&str, &str, &str, &str) = ("shop", "StatefulSet", "cart", "cart-0");
const AGENT: (&str, &str, &str, &str) = ("ops", "DaemonSet", "agent", "agent-x1");
const LEGACY: (&str, &str, &str, &str) = ("legacy", "Deployment", "app", "app-1");
const SYS: (&str, &str, &str, &str) = ("kube-system", "DaemonSet", "proxy", "proxy-1");

fn excluded() -> Vec<String> {
    SYSTEM_NAMESPACES.map(String::from).to_vec()
}

#[test]
fn replicas_merge_and_host_processes_group_by_cgroup() {
    let events = vec![
        exec(1, WEB_A),
        exec(2, WEB_B),
        chmod(3, None, 0o644),
        chmod(4, None, 0o4755),
    ];
    let a = advise(&events, T0, T0 + 100, &excluded());
    let web = &a.workloads[&pod_owner("shop", "Deployment", "web")];
    assert_eq!(
        web.pods.iter().map(String::as_str).collect::<Vec<_>>(),
        ["web-7d9f-a", "web-7d9f-b"]
    );
    assert_eq!(web.events.count, 2);
    assert_eq!(
        (web.events.first_ns, web.events.last_ns),
        (T0 + 1_000_000_000, T0 + 2_000_000_000)
    );
    let host = &a.workloads[&Owner::Host {
        cgroup: "/system.slice/cron.service".into(),
    }];
    let modes: Vec<(&str, bool)> = host
        .chmods
        .keys()
        .map(|k| (k.mode.as_str(), k.setid))
        .collect();
    assert_eq!(modes, [("0644", false), ("4755", true)]);
    assert_eq!(a.window.events, 4);
    // Host processes get no Kubernetes advice.
    assert!(a.patches.iter().all(|p| p.namespace == "shop"));
    assert_eq!(a.network_policies, ["shop"]);
}

#[test]
fn a_namespace_where_a_workload_reached_a_metadata_endpoint_gets_no_network_policy() {
    let events = vec![
        connect(1, WEB_A, "169.254.169.254", Blocked),
        exec(2, CART),
        connect(3, AGENT, "169.254.170.2", Audited),
        connect(4, LEGACY, "fd00:ec2::254", Allowed),
        // Not a built-in metadata destination: does not count.
        connect(5, ("other", "Deployment", "x", "x-1"), "10.1.2.3", Audited),
        exec(6, SYS),
    ];
    let a = advise(&events, T0, T0 + 100, &excluded());
    assert_eq!(a.network_policies, ["other", "shop"]);
    let shop = &a.namespace_notes["shop"];
    assert_eq!(shop.len(), 1);
    assert!(
        shop[0].contains("already blocked") && shop[0].contains("shop/Deployment/web"),
        "{shop:?}"
    );
    let ops = &a.namespace_notes["ops"];
    assert!(
        ops[0].starts_with("no NetworkPolicy") && ops[0].contains("ops/DaemonSet/agent"),
        "{ops:?}"
    );
    assert!(a.namespace_notes["legacy"][0].contains("legacy/Deployment/app"));
    assert!(a.namespace_notes["kube-system"][0].contains("excluded"));
    let web = &a.workloads[&pod_owner("shop", "Deployment", "web")];
    let key = web.metadata.keys().next().unwrap();
    assert_eq!(
        (
            key.destination.as_str(),
            key.address.as_str(),
            key.verdict.as_str()
        ),
        ("metadata-imds-v4", "169.254.169.254:80", "blocked")
    );
    let legacy = &a.workloads[&pod_owner("legacy", "Deployment", "app")];
    assert_eq!(
        legacy.metadata.keys().next().unwrap().address,
        "[fd00:ec2::254]:80"
    );
    let other = &a.workloads[&pod_owner("other", "Deployment", "x")];
    assert!(other.metadata.is_empty() && other.other_connects.len() == 1);
    assert!(a.patches.iter().all(|p| p.namespace != "kube-system"));
}

#[test]
fn patches_follow_what_each_workload_did() {
    let mut root_exec = exec(5, LEGACY);
    root_exec.process.as_mut().unwrap().euid = Some(0);
    let events = vec![
        exec(1, WEB_A),                          // nothing: every patch
        chmod(2, Some(CART), 0o640),             // chmod without set-id: no seccomp
        raise(3, AGENT, "setuid-root"),          // raised: no container patch
        exec(4, ("ops", "Rollout", "r", "r-1")), // unknown kind: no patch
        root_exec,                               // root: no drop ALL
        raise(6, ("batch", "CronJob", "nightly", "nightly-1-x"), "capset"),
        exec(7, ("batch", "CronJob", "report", "report-1-y")),
    ];
    let a = advise(&events, T0, T0 + 100, &excluded());
    type Row = (String, bool, Vec<(String, bool, bool)>);
    let got: Vec<Row> = a
        .patches
        .iter()
        .map(|p| {
            (
                format!("{}/{}/{}", p.namespace, p.kind, p.name),
                p.seccomp,
                p.containers
                    .iter()
                    .map(|c| {
                        (
                            c.name.clone(),
                            c.no_privilege_escalation,
                            c.drop_all_capabilities,
                        )
                    })
                    .collect(),
            )
        })
        .collect();
    let app = |ape, drop| vec![("app".to_owned(), ape, drop)];
    // cart, agent and nightly were not seen starting (no exec): no patch at all.
    assert_eq!(
        got,
        [
            ("batch/CronJob/report".into(), true, app(true, true)),
            ("legacy/Deployment/app".into(), true, app(true, false)),
            ("shop/Deployment/web".into(), true, app(true, true)),
        ]
    );
    let note = |ns, kind, name| a.workload_notes[&pod_owner(ns, kind, name)].join(" | ");
    assert!(note("shop", "StatefulSet", "cart").contains("modes 0640"));
    assert!(note("ops", "DaemonSet", "agent").contains("setuid-root"));
    assert!(note("ops", "Rollout", "r").contains("owner kind Rollout"));
    assert!(note("legacy", "Deployment", "app").contains("ran as root"));
    assert!(note("batch", "CronJob", "nightly").contains("capset"));
    assert!(note("shop", "StatefulSet", "cart").contains("start-up was not seen"));
    assert_eq!(a.patches[2].file_name(), "patch-shop-deployment-web.yaml");
}

#[test]
fn losses_partial_events_and_folded_records_are_accounted_for() {
    let mut partial = connect(2, WEB_A, "169.254.169.254", Allowed);
    partial.pod = Some(pb::Pod {
        uid: "1234".into(),
        ..Default::default()
    });
    let mut folded = chmod(3, Some(CART), 0o600);
    folded.repeat = Some(pb::Repeat {
        count: 7,
        first_time_unix_ns: T0,
        last_time_unix_ns: T0 + 9,
        ..Default::default()
    });
    let lost = pb::Event {
        body: Some(pb::event::Body::Lost(pb::Lost {
            count: 12,
            ..Default::default()
        })),
        ..Default::default()
    };
    let a = advise(
        &[exec(1, WEB_A), exec(4, CART), partial, folded, lost],
        T0,
        T0 + 100,
        &[],
    );
    assert_eq!((a.window.events, a.window.lost), (10, 12));
    assert_eq!(a.window.first_ns, Some(T0));
    let cart = &a.workloads[&pod_owner("shop", "StatefulSet", "cart")];
    assert_eq!(cart.chmods.values().next().unwrap().count, 7);
    assert!(
        a.notes[0].contains("12 event(s) were lost"),
        "{:?}",
        a.notes
    );
    assert!(
        a.notes[1].contains("1 event(s) came from pods the sensor could not name")
            && a.notes[1].contains("1 reached a metadata endpoint"),
        "{:?}",
        a.notes
    );
    // Lost events could be anything: no advice the window cannot back.
    assert!(a.network_policies.is_empty(), "{:?}", a.network_policies);
    assert!(a.patches.is_empty(), "{:?}", a.patches);
    assert!(
        a.namespace_notes["shop"]
            .join(" ")
            .contains("the window has gaps")
    );
    // Without the loss, the unnamed pod that reached a metadata endpoint still withholds
    // every NetworkPolicy, and nothing else.
    let mut partial = connect(2, WEB_A, "169.254.169.254", Allowed);
    partial.pod = Some(pb::Pod::default());
    let a = advise(&[exec(1, WEB_A), partial], T0, T0 + 100, &[]);
    assert!(a.network_policies.is_empty());
    assert_eq!(a.patches.len(), 1, "{:?}", a.patches);
}

#[test]
fn out_dir_file_names_cannot_leave_the_directory() {
    let p = Patch {
        namespace: "shop".into(),
        kind: "Deployment".into(),
        name: "x/../../../../etc/kubernetes/manifests/kube-apiserver".into(),
        seccomp: true,
        containers: vec![],
    };
    let name = p.file_name();
    assert!(!name.contains('/'), "{name}");
    assert_eq!(
        name,
        "patch-shop-deployment-x_.._.._.._.._etc_kubernetes_manifests_kube-apiserver.yaml"
    );
    assert_eq!(safe_name(".."), "_..");
    assert_eq!(safe_name(""), "_");
}

#[test]
fn no_events_say_so() {
    let a = advise(&[], T0, T0 + 100, &[]);
    assert!(a.network_policies.is_empty() && a.patches.is_empty());
    assert!(a.notes[0].contains("no events"));
}
