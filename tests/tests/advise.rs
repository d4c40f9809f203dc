//! `sensor advise` end to end: a real sensor (audit mode, pods from a test API server) records
//! two workloads — one only reads a file, the other chmods one and connects to a metadata
//! address — into an exported file; `sensor advise --file` turns that into a NetworkPolicy for
//! the quiet namespace only, a prevent-chmod seccomp profile and patches for the quiet
//! workload; the profile, used by runc for a busybox container, makes `chmod` fail with EPERM
//! while `cat` works (and without it the chmod goes through). Every generated manifest passes
//! `kubernetes-validate --strict`, the patches after `kubectl patch --local` onto their kind.

use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use sensor_tests::{
    NetNs, Place, Sensor, TempDir, TestCgroup,
    kubeapi::{KubeApi, pod},
    kubernetes_validate, offline, poll, probe_exec_wait, probe_net, python_tool, require_root,
    sensor_bin, sh, validate_ocsf,
};
use serde_json::{Value, json};

const NODE: &str = "node-a";
const WEB_UID: &str = "6a1e0c2b-1d2e-4f30-8a41-5b6c7d8e9f01";
const AGENT_UID: &str = "7b2f1d3c-2e3f-4a41-9b52-6c7d8e9f0a12";

/// Run `sensor advise ARGS`; (exit code, stdout, stderr).
fn advise(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(sensor_bin())
        .arg("advise")
        .args(args)
        .output()
        .expect("running sensor advise");
    (
        out.status.code().expect("exited"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The exported events, parsed (an empty list while the file does not exist).
fn exported(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("an exported JSON line"))
        .collect()
}

/// An event attributed to a pod of `namespace` (a connect may come `partial`: its process
/// was not in the cache yet, but the pod is named).
fn from_pod(e: &Value, namespace: &str) -> bool {
    e["pod"]["namespace"] == namespace
}

/// A runc container from a busybox rootfs in a TempDir; `runc delete --force` on drop, and the
/// cgroup v1 directories runc makes on a hybrid host removed.
struct Container {
    id: String,
    bundle: TempDir,
    /// `cgroupsPath`, relative to each hierarchy's root.
    cgroup: String,
}

impl Container {
    /// A bundle whose process runs `script` under `sh`, in a new pid, mount, ipc and uts
    /// namespace, in the cgroup `cgroup` (below a test cgroup), with `seccomp` when given.
    fn new(cgroup: &str, seccomp: Option<&Value>, script: &str) -> Self {
        let busybox = Path::new("/bin/busybox");
        assert!(
            busybox.exists(),
            "/bin/busybox missing: run `cargo xtask setup` (installs busybox-static)"
        );
        let bundle = TempDir::new();
        let rootfs = bundle.0.join("rootfs");
        for dir in ["bin", "proc", "dev", "tmp"] {
            std::fs::create_dir_all(rootfs.join(dir)).unwrap();
        }
        std::fs::copy(busybox, rootfs.join("bin/busybox")).unwrap();
        for applet in ["sh", "chmod", "cat", "stat"] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
        std::fs::write(rootfs.join("file"), "hello from the rootfs\n").unwrap();
        std::fs::set_permissions(rootfs.join("file"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        let mut linux = json!({
            "namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "ipc"}, {"type": "uts"}],
            "cgroupsPath": cgroup,
        });
        if let Some(profile) = seccomp {
            linux["seccomp"] = profile.clone();
        }
        let config = json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs", "readonly": false},
            "hostname": "advise-test",
            "process": {
                "terminal": false,
                "user": {"uid": 0, "gid": 0},
                "cwd": "/",
                "args": ["/bin/sh", "-c", script],
                "env": ["PATH=/bin"],
            },
            "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
            "linux": linux,
        });
        std::fs::write(bundle.0.join("config.json"), config.to_string()).unwrap();
        Self {
            id: {
                static SEQ: AtomicU32 = AtomicU32::new(0);
                format!(
                    "sensor-test-advise-{}-{}",
                    std::process::id(),
                    SEQ.fetch_add(1, Ordering::Relaxed)
                )
            },
            bundle,
            cgroup: cgroup.to_owned(),
        }
    }

    /// `runc run` in the foreground: (exit code, stdout + stderr).
    fn run(&self) -> (i32, String) {
        let out = Command::new("runc")
            .arg("run")
            .arg("--bundle")
            .arg(&self.bundle.0)
            .arg(&self.id)
            .output()
            .expect("running runc (cargo xtask setup installs it)");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    }

    fn file(&self) -> PathBuf {
        self.bundle.0.join("rootfs/file")
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("runc")
            .args(["delete", "--force", &self.id])
            .output();
        // cgroup v1 hierarchies (a hybrid host): runc made the parents of `cgroupsPath` too.
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
        for root in mounts.lines().filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(2) == Some(&"cgroup")).then(|| PathBuf::from(f[1]))
        }) {
            let mut path = root.join(self.cgroup.trim_start_matches('/'));
            while path != root {
                let _ = std::fs::remove_dir(&path);
                path.pop();
            }
        }
    }
}

#[test]
fn the_advised_seccomp_profile_denies_chmod_in_a_runc_container_of_a_workload_that_never_chmods() {
    require_root();
    let mut cg = TestCgroup::new();
    let ns = NetNs::with_metadata_addresses();
    let dir = TempDir::new();
    let web_container = "c1".repeat(32);
    let agent_container = "d2".repeat(32);
    let api = KubeApi::start();
    api.add(pod(
        "shop",
        "web-5d8f7c9b7-aaaaa",
        WEB_UID,
        &web_container,
        "registry.local/web:1",
        "web",
        NODE,
    ));
    api.add(pod(
        "ops",
        "agent-5d8f7c9b7-bbbbb",
        AGENT_UID,
        &agent_container,
        "registry.local/agent:1",
        "agent",
        NODE,
    ));
    let web_cg = cg.pod_container(WEB_UID, &web_container);
    let agent_cg = cg.pod_container(AGENT_UID, &agent_container);
    let kubeconfig = api.kubeconfig(&dir.0);
    let export = dir.0.join("events.jsonl");
    let dest = format!("file:{}", export.display());
    // Audit: the agent's metadata connect goes through (audited), as in a namespace where a
    // workload legitimately reaches the endpoint.
    let sensor = Sensor::start_fresh(
        &[
            "--scope-cgroup",
            cg.path.to_str().unwrap(),
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--node-name",
            NODE,
            "--mode",
            "audit",
            "--export",
            &dest,
            "--export-fold-window",
            "0s",
        ],
        false,
    );
    api.wait_for_watch(NODE);
    let files = TempDir::new();
    let read_me = files.0.join("read-me");
    std::fs::write(&read_me, "data\n").unwrap();
    let chmod_me = files.0.join("chmod-me");
    std::fs::write(&chmod_me, "data\n").unwrap();
    // The web workload only reads.
    probe_exec_wait(
        &Place::cgroup(&web_cg),
        &["/bin/busybox", "cat", read_me.to_str().unwrap()],
    );
    // The agent chmods a file (no set-id bits) and connects to a metadata address.
    probe_exec_wait(
        &Place::cgroup(&agent_cg),
        &["/bin/chmod", "644", chmod_me.to_str().unwrap()],
    );
    probe_net(&Place::inside(&ns, &agent_cg), "tcp", "169.254.169.254", 80);
    let recorded = poll(Duration::from_secs(15), Duration::from_millis(100), || {
        let events = exported(&export);
        let web = events
            .iter()
            .any(|e| from_pod(e, "shop") && e["kind"] == "exec");
        let chmod = events
            .iter()
            .any(|e| from_pod(e, "ops") && e["kind"] == "chmod");
        let connect = events
            .iter()
            .any(|e| from_pod(e, "ops") && e["kind"] == "connect" && e["verdict"] == "audited");
        (web && chmod && connect).then_some(events)
    })
    .unwrap_or_else(|| {
        panic!(
            "the export never held the three workloads' events: {:#?}",
            exported(&export)
        )
    });
    // The same advice from the daemon's journal (its replay API) as from the export.
    let from_journal: Value = serde_json::from_slice(&sensor.cli(&["advise", "-o", "json"]).stdout)
        .expect("advise -o json from the journal");
    let (status, _) = sensor.stop();
    assert!(status.success());
    assert!(
        recorded
            .iter()
            .all(|e| !(from_pod(e, "shop") && e["kind"] == "chmod")),
        "the web workload never chmods"
    );

    let out_dir = dir.0.join("advice");
    let (code, stdout, stderr) = advise(&[
        "--file",
        export.to_str().unwrap(),
        "-o",
        "json",
        "--out-dir",
        out_dir.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let advice: Value = serde_json::from_str(&stdout).expect("advise -o json");
    assert!(
        advice["window"]["events"].as_u64().unwrap() >= 3,
        "{advice:#}"
    );
    let namespace = |name: &str| {
        advice["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["namespace"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no namespace {name}: {advice:#}"))
    };
    assert_eq!(namespace("shop")["network_policy"], true, "{advice:#}");
    assert_eq!(
        from_journal["namespaces"], advice["namespaces"],
        "{from_journal:#}"
    );
    assert_eq!(namespace("ops")["network_policy"], false, "{advice:#}");
    assert!(
        namespace("ops")["notes"][0]
            .as_str()
            .unwrap()
            .contains("ops/Deployment/agent"),
        "{advice:#}"
    );
    let workload = |ns: &str| {
        advice["workloads"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["namespace"] == ns)
            .cloned()
            .unwrap()
    };
    let web = workload("shop");
    assert_eq!(
        (web["kind"].as_str(), web["name"].as_str()),
        (Some("Deployment"), Some("web"))
    );
    assert_eq!(web["advice"]["seccomp_prevent_chmod"], true, "{web:#}");
    assert_eq!(
        web["advice"]["allow_privilege_escalation_false"],
        json!(["app"])
    );
    let agent = workload("ops");
    assert_eq!(agent["advice"]["seccomp_prevent_chmod"], false, "{agent:#}");
    assert_eq!(agent["chmod"][0]["mode"], "0644", "{agent:#}");
    assert_eq!(agent["chmod"][0]["setid"], false, "{agent:#}");
    assert_eq!(
        agent["metadata"][0]["destination"], "metadata-imds-v4",
        "{agent:#}"
    );
    for file in [
        "networkpolicy-shop.yaml",
        "seccomp/prevent-chmod.json",
        "patch-shop-deployment-web.yaml",
        "README.md",
    ] {
        assert!(out_dir.join(file).exists(), "{file} not written");
    }
    assert!(!out_dir.join("networkpolicy-ops.yaml").exists());
    let readme = std::fs::read_to_string(out_dir.join("README.md")).unwrap();
    assert!(readme.contains("only as good as that window"), "{readme}");

    // The profile in use: runc, a busybox container in a cgroup below the test's.
    let profile: Value = serde_json::from_str(
        &std::fs::read_to_string(out_dir.join("seccomp/prevent-chmod.json")).unwrap(),
    )
    .unwrap();
    let script = "cat /file && chmod 644 /file";
    let runc_cg = cg.child("runc");
    let relative = runc_cg.strip_prefix(sensor_tests::cgroup2_root()).unwrap();
    let confined = Container::new(
        &format!("/{}/confined", relative.display()),
        Some(&profile),
        script,
    );
    let (code, output) = confined.run();
    assert!(
        output.contains("hello from the rootfs"),
        "cat works: {output}"
    );
    assert!(
        output.contains("Operation not permitted"),
        "chmod fails with EPERM: {output}"
    );
    assert_ne!(code, 0, "{output}");
    assert_eq!(
        std::fs::metadata(confined.file())
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o600,
        "the mode is unchanged"
    );
    let open = Container::new(&format!("/{}/open", relative.display()), None, script);
    let (code, output) = open.run();
    assert_eq!(
        code, 0,
        "without the profile the chmod goes through: {output}"
    );
    assert_eq!(
        std::fs::metadata(open.file()).unwrap().permissions().mode() & 0o7777,
        0o644
    );
}

/// A minimal valid object of `kind` whose pod template has the containers `containers`.
fn base_object(kind: &str, namespace: &str, name: &str, containers: &[&str]) -> Value {
    let labels = json!({"app": name});
    let pod_spec = json!({"containers": containers.iter().map(|c| json!({"name": c, "image": "registry.local/x:1"})).collect::<Vec<_>>()});
    let template = json!({"metadata": {"labels": labels}, "spec": pod_spec});
    let job_template = {
        let mut t = template.clone();
        t["spec"]["restartPolicy"] = json!("Never");
        t
    };
    let (api_version, spec) = match kind {
        "Deployment" | "ReplicaSet" | "DaemonSet" => (
            "apps/v1",
            json!({"selector": {"matchLabels": labels}, "template": template}),
        ),
        "StatefulSet" => (
            "apps/v1",
            json!({"selector": {"matchLabels": labels}, "serviceName": name, "template": template}),
        ),
        "Job" => ("batch/v1", json!({"template": job_template})),
        "CronJob" => (
            "batch/v1",
            json!({"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": job_template}}}),
        ),
        "Pod" => ("v1", pod_spec),
        other => panic!("no base object for {other}"),
    };
    json!({"apiVersion": api_version, "kind": kind,
           "metadata": {"name": name, "namespace": namespace}, "spec": spec})
}

#[test]
fn every_generated_network_policy_and_patch_validates_strictly() {
    require_root();
    let dir = TempDir::new();
    // A JSON-lines file in the documented event format: one exec per workload (two
    // containers for the Deployment), one workload of each kind the patches know.
    let kinds = [
        ("shop", "Deployment", "web"),
        ("shop", "StatefulSet", "db"),
        ("ops", "DaemonSet", "agent"),
        ("batch", "Job", "once"),
        ("batch", "CronJob", "nightly"),
        ("batch", "ReplicaSet", "rs"),
        ("lab", "Pod", "scratch"),
    ];
    let mut lines = Vec::new();
    let mut seq = 0;
    for (ns, kind, name) in kinds {
        for container in ["app", "sidecar"]
            .iter()
            .take(if kind == "Deployment" { 2 } else { 1 })
        {
            seq += 1;
            let (owner_kind, owner_name, pod_name) = if kind == "Pod" {
                ("", "", name.to_owned())
            } else {
                (kind, name, format!("{name}-0"))
            };
            lines.push(json!({
                "seq": seq, "kind": "exec", "verdict": "allowed", "time": "2030-01-01T00:00:00Z",
                "pid": 100 + seq, "uid": 1000, "euid": 1000, "comm": "app", "cgroup_id": 7,
                "pod": {"namespace": ns, "name": pod_name, "owner_kind": owner_kind,
                        "owner_name": owner_name, "container_name": container},
                "exec": {"exe": "/app"},
            }).to_string());
        }
    }
    let events = dir.0.join("events.jsonl");
    std::fs::write(&events, lines.join("\n") + "\n").unwrap();
    let out_dir = dir.0.join("advice");
    let (code, _, stderr) = advise(&[
        "--file",
        events.to_str().unwrap(),
        "--since",
        "2029-12-31T00:00:00Z",
        "--out-dir",
        out_dir.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    for ns in ["shop", "ops", "batch", "lab"] {
        kubernetes_validate(&out_dir.join(format!("networkpolicy-{ns}.yaml")));
    }
    let kubectl = python_tool("kubectl");
    for (ns, kind, name) in kinds {
        let patch = out_dir.join(format!(
            "patch-{ns}-{}-{name}.yaml",
            kind.to_ascii_lowercase()
        ));
        assert!(patch.exists(), "{} not written", patch.display());
        let containers: &[&str] = if kind == "Deployment" {
            &["app", "sidecar"]
        } else {
            &["app"]
        };
        let base = dir.0.join(format!("base-{name}.json"));
        std::fs::write(&base, base_object(kind, ns, name, containers).to_string()).unwrap();
        let patched = sh(offline(&kubectl)
            .args([
                "patch",
                "--local",
                "--type",
                "strategic",
                "-o",
                "json",
                "-f",
            ])
            .arg(&base)
            .arg("--patch-file")
            .arg(&patch));
        let object: Value = serde_json::from_str(&patched).expect("kubectl patch output");
        let pod_spec = match kind {
            "Pod" => &object["spec"],
            "CronJob" => &object["spec"]["jobTemplate"]["spec"]["template"]["spec"],
            _ => &object["spec"]["template"]["spec"],
        };
        assert_eq!(
            pod_spec["securityContext"]["seccompProfile"],
            json!({"type": "Localhost", "localhostProfile": "profiles/prevent-chmod.json"}),
            "{kind}: {object:#}"
        );
        let merged = pod_spec["containers"].as_array().unwrap();
        assert_eq!(
            merged.len(),
            containers.len(),
            "{kind}: no container added: {object:#}"
        );
        for c in merged {
            assert_eq!(c["image"], "registry.local/x:1", "{kind}: {object:#}");
            assert_eq!(
                c["securityContext"]["allowPrivilegeEscalation"], false,
                "{kind}: {object:#}"
            );
            assert_eq!(
                c["securityContext"]["capabilities"]["drop"],
                json!(["ALL"]),
                "{kind}: {object:#}"
            );
        }
        let file = dir.0.join(format!("patched-{name}.json"));
        std::fs::write(&file, patched).unwrap();
        kubernetes_validate(&file);
    }
}

/// Posture records in the stream: the node's first, at start (with the daemon's own tiers), then one per pod with findings as it appears — none for a
/// hardened pod — and one more when a pod's spec changes: hardened, its findings go to none.
/// The OCSF form of each passes the independent validator.
#[test]
fn posture_records_follow_the_node_and_the_pods() {
    require_root();
    let cg = TestCgroup::new();
    let dir = TempDir::new();
    let api = KubeApi::start();
    let container = "e7".repeat(32);
    let mut open = pod(
        "shop",
        "web-5d8f7c9b7-aaaaa",
        WEB_UID,
        &container,
        "registry.local/web:1",
        "web",
        NODE,
    );
    open["spec"]["hostNetwork"] = json!(true);
    let hardened_sc = json!({
        "allowPrivilegeEscalation": false,
        "runAsNonRoot": true,
        "seccompProfile": {"type": "RuntimeDefault"},
    });
    let mut hardened = pod(
        "shop",
        "agent-5d8f7c9b7-bbbbb",
        AGENT_UID,
        &"e8".repeat(32),
        "registry.local/agent:1",
        "agent",
        NODE,
    );
    hardened["spec"]["containers"][0]["securityContext"] = hardened_sc.clone();
    api.add(open.clone());
    api.add(hardened);
    let kubeconfig = api.kubeconfig(&dir.0);
    let sensor = Sensor::start(&[
        "--scope-cgroup",
        cg.path.to_str().unwrap(),
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--node-name",
        NODE,
    ]);
    let is_posture =
        |e: &Value, subject: &str| e["kind"] == "posture" && e["posture"]["subject"] == subject;
    // The node's record is the first of this start.
    let node = sensor.wait_event("the node posture record", |e| is_posture(e, "node"));
    assert_eq!(sensor.events()[0], node, "not the first record");
    assert_eq!(node["seq"], 1, "{node}");
    assert_eq!(node["node"], NODE);
    assert_eq!(node["posture"]["reason"], "start");
    let n = &node["posture"]["node"];
    // As the kernel says (bpf may be in the list even where loading LSM programs is refused).
    let lsms = std::fs::read_to_string("/sys/kernel/security/lsm").unwrap();
    let bpf_lsm = lsms.trim().split(',').any(|l| l == "bpf");
    assert_eq!(n["bpf_lsm_active"], bpf_lsm, "{node}");
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_eq!(n["kernel"], release.trim());
    // The tiers are what `sensor posture` reads from this daemon's attachments.
    let cli: Value =
        serde_json::from_slice(&sensor.cli(&["posture", "-o", "json"]).stdout).unwrap();
    assert_eq!(cli["tiers"]["source"], "daemon", "{cli}");
    assert_eq!(n["tiers"], cli["tiers"]["protections"], "{node}\n{cli}");
    assert_eq!(n["tiers"]["metadata-connect"], "cgroup", "{node}");
    // The open pod, with exactly its findings; nothing for the hardened one.
    let web = sensor.wait_event("the open pod's record", |e| is_posture(e, "pod"));
    assert_eq!(web["pod"]["name"], "web-5d8f7c9b7-aaaaa", "{web}");
    assert_eq!(web["pod"]["owner_kind"], "Deployment");
    assert_eq!(web["posture"]["reason"], "appeared");
    let findings = |e: &Value| -> Vec<(String, String)> {
        e["posture"]["findings"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|f| {
                        (
                            f["finding"].as_str().unwrap().to_owned(),
                            f["container"].as_str().unwrap_or("").to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let own = |f: &str, c: &str| (f.to_owned(), c.to_owned());
    assert_eq!(
        findings(&web),
        [
            own("allow_privilege_escalation", "app"),
            own("runs_as_root", "app"),
            own("no_seccomp_profile", "app"),
            own("host_network", ""),
        ]
    );
    // Hardened: one record, with no findings.
    let mut fixed = open;
    fixed["spec"]["hostNetwork"] = json!(false);
    fixed["spec"]["containers"][0]["securityContext"] = hardened_sc;
    api.add(fixed);
    let changed = sensor.wait_event("the change record", |e| {
        is_posture(e, "pod") && e["posture"]["reason"] == "changed"
    });
    assert_eq!(changed["pod"]["name"], "web-5d8f7c9b7-aaaaa", "{changed}");
    assert!(findings(&changed).is_empty(), "{changed}");
    // A relist or an unchanged update adds nothing; exactly these three records.
    std::thread::sleep(Duration::from_millis(600));
    let posture: Vec<Value> = sensor
        .events()
        .into_iter()
        .filter(|e| e["kind"] == "posture")
        .collect();
    assert_eq!(posture.len(), 3, "{posture:#?}");
    assert!(
        posture
            .iter()
            .all(|e| e["pod"]["name"] != "agent-5d8f7c9b7-bbbbb")
    );
    // Replayed from the journal as OCSF, each is a valid Compliance Finding.
    let out = sensor.cli(&["tail", "--from-seq", "1", "--kind", "posture", "-o", "ocsf"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ocsf: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(ocsf.len(), 3, "{ocsf:#?}");
    validate_ocsf(&ocsf, &dir.0);
    assert!(ocsf.iter().all(|o| o["class_uid"] == 2003));
    let node_passes =
        bpf_lsm && n["btf"] == true && n["reboot_pending"] == false && n["cgroup"] == "v2";
    assert_eq!(
        ocsf[0]["compliance"]["status"],
        if node_passes { "Pass" } else { "Fail" },
        "{}",
        ocsf[0]
    );
    assert_eq!(
        ocsf[1]["finding_info"]["uid"],
        format!("posture:pod:{WEB_UID}")
    );
    assert_eq!(ocsf[2]["activity_name"], "Close");
    assert_eq!(ocsf[2]["compliance"]["status"], "Pass");
}
