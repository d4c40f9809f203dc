//! Policy resources end to end on the live kernel, with the real kube client against the test
//! API server: SensorPolicy objects enforce in one namespace and audit in another for the same
//! connect; a SensorClusterPolicy's scope exempts a namespace whose own SensorPolicy audits;
//! policies added, changed and deleted 100 times never let a connect through that a policy in
//! force before and after the change blocks; an invalid resource is refused with located
//! errors while the active set stays; status is written back per node.

use std::time::{Duration, Instant};

use sensor_tests::{
    ConnectLoop, NetNs, Place, Sensor, TempDir, TestCgroup,
    kubeapi::{CLUSTER_POLICIES, KubeApi, POLICIES, pod},
    probe_net, require_root,
};
use serde_json::{Value, json};

const EPERM: i64 = libc::EPERM as i64;
const NODE: &str = "node-a";

/// A metadata rule on the built-in destinations.
fn metadata_rule(action: &str) -> Value {
    json!({"name": "imds", "type": "metadata", "action": action, "destinations": ["default"]})
}

fn namespaced(namespace: &str, name: &str, rules: Vec<Value>) -> Value {
    json!({
        "apiVersion": "sensor.dev/v1", "kind": "SensorPolicy",
        "metadata": {"name": name, "namespace": namespace, "uid": format!("uid-{namespace}-{name}"), "generation": 1},
        "spec": {"rules": rules}
    })
}

fn cluster(name: &str, include: &[&str], exclude: &[&str], rules: Vec<Value>) -> Value {
    json!({
        "apiVersion": "sensor.dev/v1", "kind": "SensorClusterPolicy",
        "metadata": {"name": name, "uid": format!("uid-{name}"), "generation": 1},
        "spec": {"scope": {"namespaces": {"include": include, "exclude": exclude}}, "rules": rules}
    })
}

/// A node with two pods (namespaces `prod` and `staging`) in a test cgroup, and a sensor whose
/// file policy covers the cgroup but no metadata endpoint (a TEST-NET-3 prefix, never
/// contacted): every metadata decision below comes from the resources.
struct Node {
    api: KubeApi,
    sensor: Sensor,
    ns: NetNs,
    prod: std::path::PathBuf,
    staging: std::path::PathBuf,
    _cg: TestCgroup,
    _dir: TempDir,
}

impl Node {
    fn start() -> Self {
        require_root();
        let mut cg = TestCgroup::new();
        let ns = NetNs::with_metadata_addresses();
        let dir = TempDir::new();
        let (prod_uid, prod_ctr) = ("1a1a1a1a-1111-4222-8333-444444444444", "a7".repeat(32));
        let (stg_uid, stg_ctr) = ("2b2b2b2b-1111-4222-8333-444444444444", "b8".repeat(32));
        let api = KubeApi::start();
        for (namespace, uid, ctr) in [
            ("prod", prod_uid, &prod_ctr),
            ("staging", stg_uid, &stg_ctr),
        ] {
            api.add(pod(
                namespace,
                &format!("web-{namespace}"),
                uid,
                ctr,
                "registry.local/web:1",
                "web",
                NODE,
            ));
        }
        let prod = cg.pod_container(prod_uid, &prod_ctr);
        let staging = cg.pod_container(stg_uid, &stg_ctr);
        let file = dir.0.join("policy.yaml");
        std::fs::write(
            &file,
            format!(
                "apiVersion: sensor/v1\nkind: Policy\nmetadata: {{name: node}}\nspec:\n  scope:\n    cgroups: [{}]\n  rules:\n    - {{name: test-net, type: metadata, action: audit, destinations: [203.0.113.0/24]}}\n",
                cg.path.display()
            ),
        )
        .unwrap();
        let kubeconfig = api.kubeconfig(&dir.0);
        let sensor = Sensor::start(&[
            "--policy",
            file.to_str().unwrap(),
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--node-name",
            NODE,
        ]);
        let node = Self {
            api,
            sensor,
            ns,
            prod,
            staging,
            _cg: cg,
            _dir: dir,
        };
        node.wait_watching();
        node.sensor.wait_counter("policy_pod_cgroups", 2);
        node
    }

    /// Until the pods and both policy kinds are watched.
    fn wait_watching(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let watched = |what: &str| {
            self.api
                .requests()
                .iter()
                .any(|r| r.contains(what) && r.contains("watch="))
        };
        while !(watched("/api/v1/pods") && watched(POLICIES) && watched(CLUSTER_POLICIES)) {
            assert!(
                Instant::now() < deadline,
                "not watched: {:?}",
                self.api.requests()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The latest status patch of `resource` `namespace/name` whose node entry satisfies
    /// `pred`, waited for (the daemon writes every 2 s what changed).
    fn wait_status(
        &self,
        resource: &str,
        namespace: &str,
        name: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            // The latest patch with this node's entry (a `readyNodes` patch follows each).
            let found = self.api.statuses().into_iter().rev().find(|(r, ns, n, p)| {
                r == resource
                    && ns == namespace
                    && n == name
                    && !p["status"]["nodes"][NODE].is_null()
            });
            if let Some((_, _, _, patch)) = &found
                && pred(&patch["status"]["nodes"][NODE])
            {
                return patch.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no status for {resource} {namespace}/{name} as wanted; latest: {found:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Until `n` accepted `policy` events name `source` (its key: `SensorPolicy ns/name`).
    fn wait_accepted(&self, source: &str, n: usize) {
        self.sensor.wait_for(n, |e| {
            e["kind"] == "policy"
                && e["policy_change"]["accepted"] == true
                && e["policy_change"]["source"] == source
        });
    }

    /// A connect from `cgroup`, and its event (a later one than any seen so far: pids of
    /// earlier probes come again).
    fn connect(&self, cgroup: &std::path::Path) -> (i64, Value) {
        let after = self
            .sensor
            .events()
            .iter()
            .filter_map(|e| e["seq"].as_u64())
            .max()
            .unwrap_or(0);
        let r = probe_net(
            &Place::inside(&self.ns, cgroup),
            "tcp",
            "169.254.169.254",
            80,
        );
        let ev = self.sensor.wait_for(1, |e| {
            e["pid"] == r.pid && e["kind"] == "connect" && e["seq"].as_u64() > Some(after)
        })[0]
            .clone();
        (r.errno, ev)
    }
}

#[test]
fn namespaced_policies_enforce_in_one_namespace_and_audit_in_another_for_the_same_connect() {
    let node = Node::start();
    // Before any resource: nothing covers the metadata endpoint.
    let r = probe_net(
        &Place::inside(&node.ns, &node.prod),
        "tcp",
        "169.254.169.254",
        80,
    );
    assert_eq!(r.errno, 0, "no policy blocks metadata yet");

    node.api.apply(
        POLICIES,
        namespaced("prod", "no-imds", vec![metadata_rule("enforce")]),
    );
    node.api.apply(
        POLICIES,
        namespaced("staging", "no-imds", vec![metadata_rule("audit")]),
    );
    node.wait_accepted("SensorPolicy prod/no-imds", 1);
    node.wait_accepted("SensorPolicy staging/no-imds", 1);

    let (errno, ev) = node.connect(&node.prod);
    assert_eq!(errno, EPERM, "prod enforces: {ev}");
    assert_eq!(
        (
            ev["verdict"].as_str(),
            ev["policy"].as_str(),
            ev["rule"].as_str()
        ),
        (
            Some("blocked"),
            Some("prod/no-imds"),
            Some("metadata-imds-v4")
        ),
        "{ev}"
    );
    assert_eq!(
        ev["matches"],
        json!([{"policy": "prod/no-imds", "rule": "metadata-imds-v4", "action": "enforce"}]),
        "only the policies of the pod's namespace match: {ev}"
    );
    let (errno, ev) = node.connect(&node.staging);
    assert_eq!(errno, 0, "staging audits: {ev}");
    assert_eq!(
        (ev["verdict"].as_str(), ev["policy"].as_str()),
        (Some("audited"), Some("staging/no-imds")),
        "{ev}"
    );

    // Status, per node, written back: accepted, enforced at this node's tiers, the counts.
    let patch = node.wait_status(POLICIES, "prod", "no-imds", |n| {
        n["blocked"].as_u64() >= Some(1)
    });
    let entry = &patch["status"]["nodes"][NODE];
    assert_eq!(
        (entry["accepted"].as_bool(), entry["enforced"].as_bool()),
        (Some(true), Some(true)),
        "{patch}"
    );
    assert_eq!(entry["tiers"]["metadata-connect"], "cgroup", "{patch}");
    assert_eq!(patch["status"]["mode"], "enforce", "{patch}");
    let patch = node.wait_status(POLICIES, "staging", "no-imds", |n| {
        n["audited"].as_u64() >= Some(1)
    });
    assert_eq!(patch["status"]["mode"], "audit", "{patch}");

    // A cluster policy enforcing everywhere but staging: prod now matches two policies (both
    // named), staging still only audits (the cluster policy's scope exempts it; its own
    // SensorPolicy cannot be overridden by another namespace's).
    node.api.apply(
        CLUSTER_POLICIES,
        cluster(
            "imds-everywhere",
            &["*"],
            &["staging"],
            vec![metadata_rule("enforce")],
        ),
    );
    node.wait_accepted("SensorClusterPolicy imds-everywhere", 1);
    let (errno, ev) = node.connect(&node.prod);
    assert_eq!(errno, EPERM);
    let mut policies: Vec<&str> = ev["matches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["policy"].as_str().unwrap())
        .collect();
    policies.sort_unstable();
    assert_eq!(policies, ["imds-everywhere", "prod/no-imds"], "{ev}");
    let (errno, ev) = node.connect(&node.staging);
    assert_eq!(
        (errno, ev["verdict"].as_str()),
        (0, Some("audited")),
        "{ev}"
    );

    // Deleting the staging policy leaves staging with no metadata rule at all (the cluster
    // policy excludes it): the connect goes through unreported.
    node.api.delete(POLICIES, "staging", "no-imds");
    node.wait_accepted("SensorPolicy staging/no-imds", 2);
    let r = probe_net(
        &Place::inside(&node.ns, &node.staging),
        "tcp",
        "169.254.169.254",
        80,
    );
    assert_eq!(r.errno, 0);
    assert_eq!(
        node.sensor.counter("policies_in_force"),
        3,
        "file, prod, cluster"
    );
}

#[test]
fn a_connect_loop_never_succeeds_while_policies_are_added_changed_and_deleted_100_times() {
    let node = Node::start();
    node.api.apply(
        POLICIES,
        namespaced("prod", "p0", vec![metadata_rule("enforce")]),
    );
    node.wait_accepted("SensorPolicy prod/p0", 1);
    let looper = ConnectLoop::start(&node.ns, &node.prod);
    // Each step hands the protection to a new policy: add p<i>, change it (a second rule),
    // delete p<i-1>. At every moment a policy in force both before and after the change blocks
    // the connect; freed slots are taken again by later policies.
    for i in 1..=100 {
        let name = format!("p{i}");
        let source = format!("SensorPolicy prod/{name}");
        node.api.apply(
            POLICIES,
            namespaced("prod", &name, vec![metadata_rule("enforce")]),
        );
        node.wait_accepted(&source, 1);
        let extra = json!({"name": "test-net", "type": "metadata", "action": "audit", "destinations": ["203.0.113.0/24"]});
        node.api.apply(
            POLICIES,
            namespaced("prod", &name, vec![metadata_rule("enforce"), extra]),
        );
        node.wait_accepted(&source, 2);
        node.api.delete(POLICIES, "prod", &format!("p{}", i - 1));
        node.wait_accepted(
            &format!("SensorPolicy prod/p{}", i - 1),
            if i == 1 { 2 } else { 3 },
        );
    }
    let (tries, through) = looper.stop();
    assert!(tries >= 10, "the connect loop ran {tries} times");
    assert_eq!(through, 0, "a connect got through while policies changed");
    assert_eq!(
        node.sensor.counter("policies_in_force"),
        2,
        "the file and p100"
    );
    let (errno, ev) = node.connect(&node.prod);
    assert_eq!(
        (errno, ev["policy"].as_str()),
        (EPERM, Some("prod/p100")),
        "{ev}"
    );
}

#[test]
fn an_invalid_resource_is_refused_with_located_errors_and_the_active_set_stays() {
    let node = Node::start();
    node.api.apply(
        POLICIES,
        namespaced("prod", "guard", vec![metadata_rule("enforce")]),
    );
    node.wait_accepted("SensorPolicy prod/guard", 1);
    // The same object with a bad action: refused, the previous version stays in force.
    node.api.apply(
        POLICIES,
        namespaced("prod", "guard", vec![metadata_rule("maybe")]),
    );
    let refused = node.sensor.wait_for(1, |e| {
        e["kind"] == "policy" && e["policy_change"]["accepted"] == false
    })[0]
        .clone();
    let errors = refused["policy_change"]["errors"].to_string();
    assert!(
        errors.contains("SensorPolicy prod/guard:")
            && errors.contains("spec.rules[0].action")
            && errors.contains("maybe"),
        "{refused}"
    );
    assert_eq!(node.sensor.counter("policies_refused"), 1);
    let patch = node.wait_status(POLICIES, "prod", "guard", |n| n["accepted"] == false);
    let entry = &patch["status"]["nodes"][NODE];
    assert!(
        entry["errors"].to_string().contains("spec.rules[0].action"),
        "{patch}"
    );
    assert_eq!(
        entry["enforced"], true,
        "the previous version stays in force: {patch}"
    );
    let shown = node.sensor.cli(&["policy", "show"]);
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.contains("REFUSED") && shown.contains("SensorPolicy prod/guard"),
        "{shown}"
    );
    let (errno, ev) = node.connect(&node.prod);
    assert_eq!(
        (errno, ev["policy"].as_str()),
        (EPERM, Some("prod/guard")),
        "{ev}"
    );
    // A namespaced policy cannot widen itself to other namespaces.
    let mut wide = namespaced("staging", "wide", vec![metadata_rule("enforce")]);
    wide["spec"]["scope"] = json!({"namespaces": {"include": ["*"]}});
    node.api.apply(POLICIES, wide);
    node.sensor.wait_for(1, |e| {
        e["kind"] == "policy"
            && e["policy_change"]["accepted"] == false
            && e["policy_change"]["source"] == "SensorPolicy staging/wide"
    });
    let r = probe_net(
        &Place::inside(&node.ns, &node.staging),
        "tcp",
        "169.254.169.254",
        80,
    );
    assert_eq!(r.errno, 0, "the refused policy blocks nothing");
}
