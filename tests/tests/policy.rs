//! Policy files in the daemon: metadata rules from `--policy`, hot reload (SIGHUP and file
//! change) without an enforcement gap, audit -> enforce without a restart, invalid files
//! refused while the active policy stays.

use std::{path::Path, process::Command, time::Duration};

use sensor_tests::{
    ConnectLoop, NetNs, Place, Sensor, TempDir, TestCgroup, probe_exec, probe_net, require_root,
    sensor_bin,
};

const EPERM: i64 = libc::EPERM as i64;

fn policy(cg: &Path, action: &str, version: usize) -> String {
    // Odd versions also list a TEST-NET-3 prefix (never contacted): entries come and go.
    let extra = if version % 2 == 1 {
        ", 203.0.113.0/24"
    } else {
        ""
    };
    format!(
        "apiVersion: sensor/v1\nkind: Policy\nmetadata:\n  name: test-policy\n  description: version {version}\nspec:\n  scope:\n    cgroups: [{}]\n  rules:\n    - name: block-metadata\n      type: metadata\n      action: {action}\n      destinations: [default{extra}]\n",
        cg.display()
    )
}

/// Replace the policy file atomically (write beside it, rename), as a ConfigMap update does: a
/// reader never sees half a file.
fn install(file: &Path, text: String) {
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, file).unwrap();
}

fn hup(sensor: &Sensor) {
    sensor.signal(libc::SIGHUP);
}

#[test]
fn reloads_keep_blocking_and_audit_to_enforce_takes_effect_without_restart() {
    require_root();
    let cg = TestCgroup::new();
    let ns = NetNs::with_metadata_addresses();
    let dir = TempDir::new();
    let file = dir.0.join("policy.yaml");
    install(&file, policy(&cg.path, "enforce", 0));
    let sensor = Sensor::start(&["--policy", file.to_str().unwrap()]);
    let inside = Place::inside(&ns, &cg.path);
    let first = probe_net(&inside, "tcp", "169.254.169.254", 80);
    assert_eq!(first.errno, EPERM);
    let ev = &sensor.wait_for(1, |e| e["pid"] == first.pid && e["kind"] == "connect")[0];
    assert_eq!(
        (ev["policy"].as_str(), ev["rule"].as_str()),
        (Some("test-policy"), Some("metadata-imds-v4")),
        "{ev}"
    );

    // A loop of connects while the policy is reloaded 100 times: none may get through.
    let looper = ConnectLoop::start(&ns, &cg.path);
    // Each reload is awaited (its `policy` event), so 100 really happen: signals sent faster
    // than the daemon handles them would coalesce.
    for version in 1..=100 {
        install(&file, policy(&cg.path, "enforce", version));
        hup(&sensor);
        sensor.wait_for(version, |e| {
            e["kind"] == "policy" && e["policy_change"]["accepted"] == true
        });
    }
    sensor.wait_counter("policy_generation", 101);
    let (tries, through) = looper.stop();
    assert!(tries >= 10, "the connect loop ran {} times", tries);
    assert_eq!(through, 0, "a connect got through during a reload");

    // audit: allowed and reported; then enforce again: the next connect fails. No restart.
    let generation = sensor.counter("policy_generation");
    install(&file, policy(&cg.path, "audit", 200));
    hup(&sensor);
    sensor.wait_counter("policy_generation", generation + 1);
    let audited = probe_net(&inside, "tcp", "169.254.169.254", 80);
    assert_eq!(audited.errno, 0, "audit mode lets the connect through");
    assert_eq!(
        sensor.wait_for(1, |e| e["pid"] == audited.pid && e["kind"] == "connect")[0]["verdict"],
        "audited"
    );
    install(&file, policy(&cg.path, "enforce", 202));
    hup(&sensor);
    sensor.wait_counter("policy_generation", generation + 2);
    assert_eq!(
        probe_net(&inside, "tcp", "169.254.169.254", 80).errno,
        EPERM
    );

    // `sensor policy show`: the policy in force, as loaded.
    let out = sensor.cli(&["policy", "show"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown = String::from_utf8(out.stdout).unwrap();
    assert!(
        shown.starts_with(&format!("# policy 'test-policy' from {}", file.display())),
        "{shown}"
    );
    assert!(
        shown.contains("description: version 202") && shown.contains("action: enforce"),
        "{shown}"
    );
}

#[test]
fn without_a_file_the_built_in_default_policy_runs() {
    require_root();
    let cg = TestCgroup::new();
    let sensor = Sensor::start(&["--scope-cgroup", cg.path.to_str().unwrap()]);
    let out = sensor.cli(&["policy", "show"]);
    let shown = String::from_utf8(out.stdout).unwrap();
    assert!(
        shown.starts_with("# policy 'default' from built-in default"),
        "{shown}"
    );
    assert!(shown.contains("exclude: [kube-system]"), "{shown}");
}

#[test]
fn an_invalid_new_policy_is_refused_and_a_changed_file_reloads_without_a_signal() {
    require_root();
    let cg = TestCgroup::new();
    let ns = NetNs::with_metadata_addresses();
    let dir = TempDir::new();
    let file = dir.0.join("policy.yaml");
    install(&file, policy(&cg.path, "enforce", 0));
    let sensor = Sensor::start(&["--policy", file.to_str().unwrap()]);
    let inside = Place::inside(&ns, &cg.path);

    install(&file, policy(&cg.path, "maybe", 1));
    hup(&sensor);
    sensor.wait_counter("policy_reload_failures", 1);
    assert_eq!(
        sensor.counter("policy_generation"),
        1,
        "the refused file is not applied"
    );
    // The refusal is an event too, with the located errors.
    let refusal = sensor.wait_for(1, |e| {
        e["kind"] == "policy" && e["policy_change"]["accepted"] == false
    })[0]
        .clone();
    let errors = refusal["policy_change"]["errors"].as_array().unwrap();
    assert!(
        errors.iter().any(|e| e
            .as_str()
            .unwrap()
            .starts_with(&format!("{}:12:", file.display()))),
        "{refusal}"
    );
    assert_eq!(refusal["policy_change"]["generation"], 1, "{refusal}");
    assert!(
        sensor
            .stderr_text()
            .contains(&format!("{}:12:", file.display())),
        "the error is located:\n{}",
        sensor.stderr_text()
    );
    assert_eq!(
        probe_net(&inside, "tcp", "169.254.169.254", 80).errno,
        EPERM,
        "the active policy stays"
    );

    // A valid change, picked up from the file alone (as a ConfigMap update arrives).
    install(&file, policy(&cg.path, "audit", 2));
    sensor.wait_counter("policy_generation", 2);
    let applied = sensor.wait_for(1, |e| {
        e["kind"] == "policy" && e["policy_change"]["accepted"] == true
    })[0]
        .clone();
    assert_eq!(
        (
            applied["policy_change"]["generation"].as_u64(),
            applied["policy"].as_str()
        ),
        (Some(2), Some("test-policy")),
        "{applied}"
    );
    assert!(
        applied["seq"].as_u64().is_some(),
        "policy events are journaled: {applied}"
    );
    assert_eq!(probe_net(&inside, "tcp", "169.254.169.254", 80).errno, 0);
}

#[test]
fn a_bad_policy_at_start_is_a_located_usage_error() {
    let dir = TempDir::new();
    let file = dir.0.join("bad.yaml");
    std::fs::write(
        &file,
        policy(Path::new("/sys/fs/cgroup/unified/x"), "block", 0),
    )
    .unwrap();
    let out = Command::new(sensor_bin())
        .args(["run", "--policy"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}:12:", file.display())) && err.lines().count() == 1,
        "{err}"
    );
}

#[test]
fn an_excluded_namespace_connects_and_a_new_pod_elsewhere_is_blocked_on_its_first_connect() {
    use sensor_tests::kubeapi::{KubeApi, pod};
    require_root();
    let mut cg = TestCgroup::new();
    let ns = NetNs::with_metadata_addresses();
    let dir = TempDir::new();
    let (dns_uid, dns_ctr) = ("0a0a0a0a-1111-4222-8333-444444444444", "d1".repeat(32));
    let (web_uid, web_ctr) = ("0b0b0b0b-1111-4222-8333-444444444444", "e2".repeat(32));
    let (new_uid, new_ctr) = ("0c0c0c0c-1111-4222-8333-444444444444", "f3".repeat(32));
    let api = KubeApi::start();
    api.add(pod(
        "kube-system",
        "coredns-1",
        dns_uid,
        &dns_ctr,
        "registry.local/dns:1",
        "coredns",
        "node-a",
    ));
    api.add(pod(
        "shop",
        "web-1",
        web_uid,
        &web_ctr,
        "registry.local/web:1",
        "web",
        "node-a",
    ));
    let dns_cg = cg.pod_container(dns_uid, &dns_ctr);
    let web_cg = cg.pod_container(web_uid, &web_ctr);
    let file = dir.0.join("policy.yaml");
    std::fs::write(
        &file,
        format!(
            "apiVersion: sensor/v1\nkind: Policy\nmetadata: {{name: ns-policy}}\nspec:\n  scope:\n    namespaces: {{include: [\"*\"], exclude: [kube-system]}}\n    cgroups: [{}]\n  rules:\n    - name: block-metadata\n      type: metadata\n      action: enforce\n      destinations: [default]\n    - name: deny-setid-chmod\n      type: chmod\n      action: enforce\n      setid: true\n",
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
        "node-a",
    ]);
    sensor.wait_counter("policy_exemptions", 1);
    assert_eq!(
        sensor.counter("policy_exemptions"),
        1,
        "only the kube-system pod is exempted"
    );

    let dns = probe_net(&Place::inside(&ns, &dns_cg), "tcp", "169.254.169.254", 80);
    assert_eq!(dns.errno, 0, "the excluded namespace's pod connects");
    let web = probe_net(&Place::inside(&ns, &web_cg), "tcp", "169.254.169.254", 80);
    assert_eq!(
        web.errno, EPERM,
        "a pod in a protected namespace is blocked"
    );
    // A pod that started after the policy loaded, not yet known to the daemon: blocked on
    // its very first connect (the scope root covers it; exemptions only ever name pods).
    let new_cg = cg.pod_container(new_uid, &new_ctr);
    let first = probe_net(&Place::inside(&ns, &new_cg), "tcp", "169.254.169.254", 80);
    assert_eq!(
        first.errno, EPERM,
        "a new pod is protected from its first connect"
    );
    sensor.wait_counter("kernel_exempted", 1);
    assert!(
        !sensor
            .events()
            .iter()
            .any(|e| e["pid"] == dns.pid && e["kind"] == "connect"),
        "exempted connects are not reported as blocked or audited"
    );

    // The chmod kill tier honours the same exemptions.
    let chmod_u_s = |place: &Place<'_>, name: &str| {
        let f = dir.0.join(name);
        std::fs::write(&f, "x").unwrap();
        let mut child = probe_exec(place, &["chmod", "u+s", f.to_str().unwrap()]);
        drop(child.stdin.take());
        child.wait().unwrap()
    };
    let status = chmod_u_s(&Place::cgroup(&dns_cg), "dns-tool");
    assert!(
        status.success(),
        "the excluded namespace's pod may chmod u+s: {status}"
    );
    let status = chmod_u_s(&Place::cgroup(&web_cg), "web-tool");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL),
        "a protected pod's chmod u+s is killed"
    );
    sensor.wait_counter("kernel_exempted", 2);
}

#[test]
fn a_rule_with_ports_blocks_those_ports_only() {
    require_root();
    let cg = TestCgroup::new();
    let ns = NetNs::with_metadata_addresses();
    let dir = TempDir::new();
    let file = dir.0.join("policy.yaml");
    install(
        &file,
        format!(
            "apiVersion: sensor/v1\nkind: Policy\nmetadata: {{name: ports}}\nspec:\n  scope:\n    cgroups: [{}]\n  rules:\n    - name: imds-http\n      type: metadata\n      action: enforce\n      destinations: [169.254.169.254, fd00:ec2::254]\n      ports: [80, 443]\n",
            cg.path.display()
        ),
    );
    let sensor = Sensor::start(&["--policy", file.to_str().unwrap()]);
    let inside = Place::inside(&ns, &cg.path);
    for (op, addr, port) in [
        ("tcp", "169.254.169.254", 80),
        ("tcp", "169.254.169.254", 443),
        ("udp", "169.254.169.254", 443),
        ("tcp", "fd00:ec2::254", 80),
        ("tcp", "::ffff:169.254.169.254", 443),
    ] {
        let r = probe_net(&inside, op, addr, port);
        assert_eq!(r.errno, EPERM, "{op} {addr} port {port} must be blocked");
    }
    for (op, addr, port) in [
        ("tcp", "169.254.169.254", 8080),
        ("udp", "169.254.169.254", 53),
        ("tcp", "fd00:ec2::254", 8443),
    ] {
        let r = probe_net(&inside, op, addr, port);
        assert_eq!(r.errno, 0, "{op} {addr} port {port} is not a listed port");
    }
    let events = sensor.wait_for(5, |e| e["kind"] == "connect");
    let ports: Vec<u64> = events
        .iter()
        .map(|e| e["connect"]["dst_port"].as_u64().expect("dst_port"))
        .collect();
    assert_eq!(ports, [80, 443, 443, 80, 443], "{events:#?}");
    assert!(events.iter().all(|e| e["verdict"] == "blocked"));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        sensor
            .events()
            .iter()
            .filter(|e| e["kind"] == "connect")
            .count(),
        5,
        "unlisted ports produce no event"
    );
}
