//! Attribution end to end on the live kernel: events name their process (executable, parent
//! chain) and, for a cgroup laid out like a containerd pod's, the pod from the API server —
//! also when the pod is announced after the event, and `partial` when it never is.

use std::time::Duration;

use sensor_tests::{
    NetNs, Place, Sensor, TempDir, TestCgroup,
    kubeapi::{KubeApi, pod},
    probe_exec_wait, probe_net, probe_net_lingering, require_root,
};
use serde_json::Value;

const EPERM: i64 = libc::EPERM as i64;
const NODE: &str = "node-a";

fn connect_event(sensor: &Sensor, pid: u64) -> Value {
    sensor.wait_for(1, |e| e["pid"] == pid && e["kind"] == "connect")[0].clone()
}

#[test]
fn events_name_the_process_its_parent_chain_and_exec() {
    require_root();
    let cg = TestCgroup::new();
    let ns = NetNs::with_metadata_addresses();
    let sensor = Sensor::start(&["--scope-cgroup", cg.path.to_str().unwrap()]);
    // A process still running when its event is read (a short-lived one that was not seen
    // exec'ing in scope is attributed `partial`; see the short-lived case below).
    let r = probe_net_lingering(
        &Place::inside(&ns, &cg.path),
        "tcp",
        "169.254.169.254",
        80,
        300,
    );
    assert_eq!(r.errno, EPERM);
    let ev = connect_event(&sensor, r.pid);
    assert!(ev["exe"].as_str().unwrap().ends_with("/probe"), "{ev}");
    assert_eq!(ev["args"][1], "--netns", "{ev}");
    assert_eq!(
        ev["ppid"],
        std::process::id(),
        "the probe's parent is this test: {ev}"
    );
    assert_eq!(ev["ancestors"][0]["pid"], std::process::id(), "{ev}");
    assert_eq!(ev["euid"], 0, "{ev}");
    assert_eq!(ev["enrichment"], "complete", "{ev}");
    assert!(ev.get("pod").is_none(), "a host process has no pod: {ev}");

    // exec inside the scope: an exec event with the new image, then its exit.
    let pid = probe_exec_wait(
        &Place::cgroup(&cg.path),
        &["/usr/bin/python3", "-c", "pass"],
    );
    let events = sensor.wait_for(2, |e| {
        e["pid"] == pid && (e["kind"] == "exec" || e["kind"] == "exit")
    });
    assert_eq!(events[0]["kind"], "exec", "{events:?}");
    assert_eq!(events[0]["exec"]["exe"], "/usr/bin/python3", "{events:?}");
    assert_eq!(events[1]["kind"], "exit", "{events:?}");
    assert!(events[0]["seq"].as_u64() < events[1]["seq"].as_u64());

    // A process that moved into the scope after its exec and exited before its event was
    // read: what the kernel reported (pid, comm, cgroup), marked partial — never dropped.
    let gone = probe_net(&Place::inside(&ns, &cg.path), "tcp", "169.254.169.254", 80);
    let ev = connect_event(&sensor, gone.pid);
    assert_eq!(
        (ev["comm"].as_str(), ev["verdict"].as_str()),
        (Some("probe"), Some("blocked")),
        "{ev}"
    );
    if ev.get("exe").is_none() {
        assert_eq!(ev["enrichment"], "partial", "{ev}");
    }
}

#[test]
fn a_connect_from_a_containerd_pod_cgroup_names_the_pod() {
    require_root();
    let mut cg = TestCgroup::new();
    let ns = NetNs::with_metadata_addresses();
    let dir = TempDir::new();
    let uid = "3f9c1e2a-7b4d-4c8e-9a1f-2b3c4d5e6f70";
    let container = "a1".repeat(32);
    let api = KubeApi::start();
    api.add(pod(
        "shop",
        "web-5d8f7c9b7-x2x9k",
        uid,
        &container,
        "registry.local/web:1.2",
        "web",
        NODE,
    ));
    let container_cg = cg.pod_container(uid, &container);
    let kubeconfig = api.kubeconfig(&dir.0);
    let sensor = Sensor::start(&[
        "--scope-cgroup",
        cg.path.to_str().unwrap(),
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--node-name",
        NODE,
    ]);
    api.wait_for_watch(NODE);
    let r = probe_net_lingering(
        &Place::inside(&ns, &container_cg),
        "tcp",
        "169.254.169.254",
        80,
        300,
    );
    assert_eq!(r.errno, EPERM);
    let ev = connect_event(&sensor, r.pid);
    let p = &ev["pod"];
    assert_eq!(
        (
            p["namespace"].as_str(),
            p["name"].as_str(),
            p["uid"].as_str()
        ),
        (Some("shop"), Some("web-5d8f7c9b7-x2x9k"), Some(uid)),
        "{ev}"
    );
    assert_eq!(
        (p["container_name"].as_str(), p["container_id"].as_str()),
        (Some("app"), Some(container.as_str())),
        "{ev}"
    );
    assert_eq!(p["image"], "registry.local/web:1.2", "{ev}");
    assert_eq!(
        (p["owner_kind"].as_str(), p["owner_name"].as_str()),
        (Some("Deployment"), Some("web")),
        "{ev}"
    );
    assert_eq!(p["labels"]["app"], "web", "{ev}");
    assert_eq!(ev["enrichment"], "complete", "{ev}");
    assert!(ev["exe"].as_str().unwrap().ends_with("/probe"), "{ev}");
    assert_eq!(ev["ppid"], std::process::id(), "{ev}");
    assert_eq!(ev["cgroup_id"], TestCgroup::id(&container_cg), "{ev}");
}

#[test]
fn an_event_before_its_pod_waits_for_it_and_goes_out_partial_past_the_bound() {
    require_root();
    let mut cg = TestCgroup::new();
    let ns = NetNs::with_metadata_addresses();
    let dir = TempDir::new();
    let late_uid = "11111111-2222-4333-8444-555555555555";
    let late_container = "b2".repeat(32);
    let never_uid = "99999999-8888-4777-8666-555555555555";
    let never_container = "c3".repeat(32);
    let api = KubeApi::start();
    let late_cg = cg.pod_container(late_uid, &late_container);
    let never_cg = cg.pod_container(never_uid, &never_container);
    let kubeconfig = api.kubeconfig(&dir.0);
    let sensor = Sensor::start(&[
        "--scope-cgroup",
        cg.path.to_str().unwrap(),
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--node-name",
        NODE,
        "--enrichment-wait-ms",
        "3000",
    ]);
    api.wait_for_watch(NODE);

    // The pod is announced after its event: the event waits, then is completed.
    let late = probe_net_lingering(
        &Place::inside(&ns, &late_cg),
        "tcp",
        "169.254.169.254",
        80,
        300,
    );
    assert_eq!(
        late.errno, EPERM,
        "enforcement does not wait for attribution"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !sensor
            .events()
            .iter()
            .any(|e| e["pid"] == late.pid && e["kind"] == "connect"),
        "the event waits for its pod"
    );
    api.add(pod(
        "jobs",
        "late-pod",
        late_uid,
        &late_container,
        "registry.local/late:1",
        "late",
        NODE,
    ));
    let ev = connect_event(&sensor, late.pid);
    assert_eq!(ev["pod"]["name"], "late-pod", "{ev}");
    assert_eq!(ev["enrichment"], "complete", "{ev}");

    // Never announced: out after the bound, partial, with what the cgroup path says.
    let never = probe_net(&Place::inside(&ns, &never_cg), "tcp", "169.254.169.254", 80);
    assert_eq!(never.errno, EPERM);
    let ev = connect_event(&sensor, never.pid);
    assert_eq!(ev["enrichment"], "partial", "{ev}");
    assert_eq!(
        (
            ev["pod"]["uid"].as_str(),
            ev["pod"]["container_id"].as_str()
        ),
        (Some(never_uid), Some(never_container.as_str())),
        "{ev}"
    );
    assert_eq!(ev["pod"]["name"], "", "{ev}");
    assert_eq!(ev["verdict"], "blocked");

    let (status, stderr) = sensor.stop();
    assert!(status.success());
    let counters: Value = serde_json::from_str(
        stderr
            .lines()
            .find(|l| l.starts_with("{\"counters\""))
            .unwrap(),
    )
    .unwrap();
    assert!(
        counters["counters"]["enrichment_completed_late"].as_u64() >= Some(1),
        "{counters}"
    );
    assert!(
        counters["counters"]["enrichment_partial"].as_u64() >= Some(1),
        "{counters}"
    );
}
