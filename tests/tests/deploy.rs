//! The Kubernetes manifests in `deploy/`, checked offline: each overlay renders with
//! `kubectl kustomize` and passes `kubernetes-validate --strict` (bundled schemas), both run
//! in a fresh network namespace (no network: proof that nothing is fetched), then the
//! project's own rules: not privileged, the exact capability list, NODE_NAME from the
//! downward API, the host mounts and their read-only flags, probes, RBAC.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
};

use sensor_tests::{
    TempDir, kubernetes_validate, offline, python_tool, require_root, sensor_bin, sh,
};
use serde_json::{Value, json};

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// The documents of a YAML file, as JSON (PyYAML from the test venv).
fn yaml_docs(file: &Path) -> Vec<Value> {
    serde_json::from_str(&sh(Command::new(python_tool("python"))
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d]))",
        ])
        .arg(file)))
    .expect("YAML as JSON")
}

/// Render `overlay`, validate it, and return its objects as JSON.
fn render(overlay: &str) -> Vec<Value> {
    require_root();
    let dir = deploy_dir().join("overlays").join(overlay);
    let yaml = sh(offline(&python_tool("kubectl")).arg("kustomize").arg(&dir));
    let tmp = TempDir::new();
    let file = tmp.0.join(format!("{overlay}.yaml"));
    std::fs::write(&file, &yaml).expect("writing the rendered manifests");
    let report = kubernetes_validate(&file);
    let objects = yaml_docs(&file);
    let kinds: Vec<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
    for kind in [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "DaemonSet",
    ] {
        assert_eq!(
            kinds.iter().filter(|k| **k == kind).count(),
            1,
            "{overlay}: one {kind} expected, have {kinds:?}"
        );
    }
    // The policy CRDs, validated above against the bundled apiextensions.k8s.io/v1 schema.
    let crds: Vec<&str> = objects
        .iter()
        .filter(|o| o["kind"] == "CustomResourceDefinition")
        .filter_map(|o| o["metadata"]["name"].as_str())
        .collect();
    assert_eq!(
        crds,
        [
            "sensorclusterpolicies.sensor.dev",
            "sensorpolicies.sensor.dev"
        ],
        "{overlay}"
    );
    assert_eq!(
        report.matches("passed for resource").count(),
        objects.len(),
        "{overlay}: every object validated:\n{report}"
    );
    objects
}

fn one<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"))
}

fn env_of<'a>(container: &'a Value, name: &str) -> &'a Value {
    container["env"]
        .as_array()
        .and_then(|env| env.iter().find(|e| e["name"] == name))
        .unwrap_or_else(|| panic!("env {name} missing: {}", container["env"]))
}

fn env_value<'a>(container: &'a Value, name: &str) -> &'a str {
    env_of(container, name)["value"]
        .as_str()
        .unwrap_or_else(|| panic!("env {name} has no value"))
}

/// The rules every overlay must follow; `caps` is its exact capability add list.
fn check(objects: &[Value], overlay: &str, caps: &[&str]) {
    let ds = one(objects, "DaemonSet");
    let ns = one(objects, "Namespace")["metadata"]["name"].clone();
    for o in objects {
        if !matches!(
            o["kind"].as_str(),
            Some("Namespace" | "ClusterRole" | "ClusterRoleBinding" | "CustomResourceDefinition")
        ) {
            assert_eq!(o["metadata"]["namespace"], ns, "{overlay}: {o}");
        }
    }
    let pod = &ds["spec"]["template"]["spec"];
    let containers = pod["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1, "{overlay}: one container");
    assert!(
        pod["initContainers"].is_null(),
        "{overlay}: no init containers"
    );
    let c = &containers[0];

    // Not privileged, no host namespaces, exact capabilities.
    let sc = &c["securityContext"];
    assert_ne!(sc["privileged"], true, "{overlay}: privileged");
    for host in ["hostNetwork", "hostPID", "hostIPC"] {
        assert_ne!(pod[host], true, "{overlay}: {host}");
    }
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]), "{overlay}");
    assert_eq!(sc["capabilities"]["add"], json!(caps), "{overlay}");
    assert_eq!(sc["readOnlyRootFilesystem"], true, "{overlay}");
    assert_eq!(sc["allowPrivilegeEscalation"], false, "{overlay}");
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
        "{overlay}"
    );

    // Node name from the downward API.
    assert_eq!(
        env_of(c, "NODE_NAME")["valueFrom"]["fieldRef"]["fieldPath"],
        "spec.nodeName",
        "{overlay}"
    );

    // Fleet delivery configured from an optional ConfigMap and Secret: a cluster without
    // them still starts (docs/export.md, deploy/README.md).
    for (name, key) in [
        ("SENSOR_CLUSTER_NAME", "cluster-name"),
        ("SENSOR_EXPORT", "export"),
        ("SENSOR_EXPORT_FORMAT", "export-format"),
    ] {
        let r = &env_of(c, name)["valueFrom"]["configMapKeyRef"];
        assert_eq!(
            (&r["name"], &r["key"], &r["optional"]),
            (&json!("sensor-export"), &json!(key), &json!(true)),
            "{overlay}: {name}"
        );
    }
    let export_tls = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "export-tls")
        .expect("export-tls volume");
    assert_eq!(
        export_tls["secret"]["secretName"], "sensor-export",
        "{overlay}"
    );
    assert_eq!(export_tls["secret"]["optional"], true, "{overlay}");

    // Host mounts: exactly these, read-only where the sensor only reads.
    let volumes: BTreeMap<&str, &Value> = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .map(|v| (v["name"].as_str().expect("volume name"), v))
        .collect();
    let mut host_mounts = BTreeMap::new();
    for m in c["volumeMounts"].as_array().expect("volumeMounts") {
        let v = volumes[m["name"].as_str().expect("mount name")];
        if let Some(path) = v["hostPath"]["path"].as_str() {
            host_mounts.insert(
                path,
                (
                    m["mountPath"].as_str().expect("mountPath"),
                    m["readOnly"] == true,
                ),
            );
        }
    }
    let expected: BTreeMap<&str, (&str, bool)> = [
        ("/sys/fs/bpf", ("/sys/fs/bpf", false)),
        ("/sys/fs/cgroup", ("/sys/fs/cgroup", true)),
        ("/sys/kernel/btf", ("/sys/kernel/btf", true)),
        ("/sys/kernel/tracing", ("/sys/kernel/tracing", true)),
        ("/proc", ("/host/proc", true)),
        ("/var/lib/sensor", ("/var/lib/sensor", false)),
        ("/run/sensor", ("/run/sensor", false)),
    ]
    .into_iter()
    .collect();
    assert_eq!(host_mounts, expected, "{overlay}: host mounts");
    assert_eq!(
        volumes
            .values()
            .filter(|v| v["hostPath"].is_object())
            .count(),
        expected.len(),
        "{overlay}: a host volume that is not mounted"
    );

    // The sensor's paths are on those mounts.
    assert_eq!(env_value(c, "SENSOR_PROC_ROOT"), "/host/proc", "{overlay}");
    assert!(env_value(c, "SENSOR_JOURNAL_DIR").starts_with("/var/lib/sensor/"));
    assert!(env_value(c, "SENSOR_SOCKET").starts_with("/run/sensor/"));
    assert_eq!(
        env_value(c, "SENSOR_PIN_DIR"),
        "/sys/fs/bpf/sensor",
        "{overlay}: pinned on the host bpffs (the uninstall Job's default)"
    );
    let policy_path = Path::new(env_value(c, "SENSOR_POLICY"));
    let policy_mount = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| volumes[m["name"].as_str().unwrap()]["configMap"].is_object())
        .expect("a ConfigMap mount for the policy");
    assert_eq!(
        policy_path.parent().and_then(Path::to_str),
        policy_mount["mountPath"].as_str(),
        "{overlay}: SENSOR_POLICY is in the ConfigMap mount"
    );
    let cm = one(objects, "ConfigMap");
    assert_eq!(
        volumes[policy_mount["name"].as_str().unwrap()]["configMap"]["name"],
        cm["metadata"]["name"]
    );
    let key = policy_path.file_name().and_then(|f| f.to_str()).unwrap();
    let default = sh(Command::new(sensor_bin()).args(["policy", "default"]));
    assert_eq!(
        cm["data"][key].as_str(),
        Some(default.as_str()),
        "{overlay}: the ConfigMap policy is the built-in default (deploy/base/policy.yaml)"
    );

    // Every SENSOR_* variable is one `sensor run` reads.
    let help = sh(Command::new(sensor_bin()).args(["run", "--help"]));
    for e in c["env"].as_array().unwrap() {
        let name = e["name"].as_str().unwrap();
        assert!(
            help.contains(&format!("[env: {name}=")),
            "{overlay}: `sensor run` does not read {name}"
        );
    }

    // Metrics port, probes through the gRPC health service.
    let metrics_port = env_value(c, "SENSOR_METRICS_ADDR")
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse::<u64>().ok())
        .expect("SENSOR_METRICS_ADDR port");
    assert!(
        c["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "metrics" && p["containerPort"] == metrics_port),
        "{overlay}: metrics port"
    );
    let command = c["command"].as_array().expect("command");
    let bin = command[0].as_str().unwrap();
    for (probe, service) in [
        ("startupProbe", None),
        ("livenessProbe", None),
        ("readinessProbe", Some("sensor.v1.Sensor")),
    ] {
        let mut want = vec![json!(bin), json!("health")];
        if let Some(s) = service {
            want.extend([json!("--service"), json!(s)]);
        }
        assert_eq!(
            c[probe]["exec"]["command"],
            json!(want),
            "{overlay}: {probe}"
        );
    }

    // Scheduling and updates.
    assert_eq!(pod["priorityClassName"], "system-node-critical");
    assert_eq!(pod["tolerations"], json!([{"operator": "Exists"}]));
    assert_eq!(ds["spec"]["updateStrategy"]["type"], "RollingUpdate");
    for (what, res) in [("requests", "cpu"), ("requests", "memory")]
        .into_iter()
        .chain([("limits", "cpu"), ("limits", "memory")])
    {
        assert!(
            c["resources"][what][res].is_string(),
            "{overlay}: resources.{what}.{res}"
        );
    }

    // RBAC: read pods and the policy resources, write the policies' status, nothing else,
    // bound to the DaemonSet's service account.
    assert_eq!(
        one(objects, "ClusterRole")["rules"],
        json!([
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
            {
                "apiGroups": ["sensor.dev"],
                "resources": ["sensorclusterpolicies", "sensorpolicies"],
                "verbs": ["get", "list", "watch"]
            },
            {
                "apiGroups": ["sensor.dev"],
                "resources": ["sensorclusterpolicies/status", "sensorpolicies/status"],
                "verbs": ["get", "patch"]
            }
        ])
    );
    let binding = one(objects, "ClusterRoleBinding");
    assert_eq!(
        binding["roleRef"]["name"],
        one(objects, "ClusterRole")["metadata"]["name"]
    );
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": pod["serviceAccountName"], "namespace": ns}])
    );

    // The image's binary is where the DaemonSet runs it.
    let dockerfile = std::fs::read_to_string(deploy_dir().join("Dockerfile")).expect("Dockerfile");
    assert!(
        dockerfile
            .lines()
            .any(|l| l.starts_with("COPY") && l.trim_end().ends_with(bin)),
        "the Dockerfile installs the binary at {bin}"
    );
}

#[test]
fn the_plain_overlay_renders_validates_and_uses_sys_admin_for_bpf() {
    let objects = render("plain");
    check(&objects, "plain", &["SYS_ADMIN", "NET_ADMIN", "SYS_PTRACE"]);
}

#[test]
fn the_least_privilege_overlay_renders_validates_and_uses_narrow_capabilities() {
    let objects = render("least-privilege");
    check(
        &objects,
        "least-privilege",
        &["BPF", "PERFMON", "NET_ADMIN", "SYS_PTRACE"],
    );
}

#[test]
fn the_base_policy_is_a_valid_copy_of_the_built_in_default() {
    let policy = deploy_dir().join("base/policy.yaml");
    sh(Command::new(sensor_bin())
        .args(["policy", "check"])
        .arg(&policy));
    assert_eq!(
        std::fs::read_to_string(&policy).unwrap(),
        sh(Command::new(sensor_bin()).args(["policy", "default"]))
    );
}

#[test]
fn the_uninstall_job_validates_and_runs_sensor_uninstall_with_the_bpffs() {
    require_root();
    let template = std::fs::read_to_string(deploy_dir().join("uninstall/job.yaml")).unwrap();
    assert!(template.contains("@NODE@"));
    let tmp = TempDir::new();
    let file = tmp.0.join("job.yaml");
    std::fs::write(&file, template.replace("@NODE@", "node-a")).unwrap();
    kubernetes_validate(&file);
    let job = &yaml_docs(&file)[0];
    let pod = &job["spec"]["template"]["spec"];
    assert_eq!(pod["nodeName"], "node-a");
    let c = &pod["containers"][0];
    assert_eq!(c["command"], json!(["/usr/bin/sensor", "uninstall"]));
    assert_ne!(c["securityContext"]["privileged"], true);
    assert_eq!(c["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
    assert!(
        c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["mountPath"] == "/sys/fs/bpf"),
        "the bpffs is mounted"
    );
}

/// `instance` against the JSON schema `schema` with Python's `jsonschema` (an independent
/// validator): `None` when valid, else its message.
fn jsonschema_error(schema: &Value, instance: &Value) -> Option<String> {
    let tmp = TempDir::new();
    let (schema_file, instance_file) = (tmp.0.join("schema.json"), tmp.0.join("instance.json"));
    std::fs::write(&schema_file, schema.to_string()).unwrap();
    std::fs::write(&instance_file, instance.to_string()).unwrap();
    let out = Command::new(python_tool("python"))
        .args([
            "-c",
            "import json, sys, jsonschema\n\
             schema, instance = (json.load(open(f)) for f in sys.argv[1:3])\n\
             jsonschema.validators.validator_for(schema).check_schema(schema)\n\
             error = jsonschema.exceptions.best_match(jsonschema.validators.validator_for(schema)(schema).iter_errors(instance))\n\
             print('' if error is None else f'{list(error.absolute_path)}: {error.message}')",
        ])
        .arg(&schema_file)
        .arg(&instance_file)
        .output()
        .expect("running python jsonschema");
    assert!(
        out.status.success(),
        "jsonschema: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let message = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (!message.is_empty()).then_some(message)
}

/// `sensor policy check FILE`: its exit code and its error output.
fn policy_check(file: &Path) -> (Option<i32>, String) {
    let out = Command::new(sensor_bin())
        .args(["policy", "check"])
        .arg(file)
        .output()
        .expect("running sensor policy check");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// deploy/examples/policies.yaml: each object is valid for the API server (its CRD's
/// `openAPIV3Schema`, checked by Python's jsonschema) and for the sensor (`sensor policy
/// check`, the real binary); an action the parser refuses is reported at its line.
#[test]
fn the_example_policies_fit_their_crds_and_pass_the_sensors_parser() {
    let crds: BTreeMap<String, Value> = yaml_docs(&deploy_dir().join("base/crds.yaml"))
        .into_iter()
        .map(|crd| {
            let kind = crd["spec"]["names"]["kind"].as_str().unwrap().to_owned();
            (kind, crd)
        })
        .collect();
    let examples = deploy_dir().join("examples/policies.yaml");
    let objects = yaml_docs(&examples);
    let text = std::fs::read_to_string(&examples).unwrap();
    let texts: Vec<&str> = text.split("\n---\n").collect();
    assert_eq!(texts.len(), objects.len(), "one text per object");
    let tmp = TempDir::new();
    let mut kinds = Vec::new();
    for (i, (object, text)) in objects.iter().zip(&texts).enumerate() {
        let kind = object["kind"].as_str().unwrap();
        let crd = &crds[kind];
        let version = &crd["spec"]["versions"][0];
        assert_eq!(
            object["apiVersion"],
            format!(
                "{}/{}",
                crd["spec"]["group"].as_str().unwrap(),
                version["name"].as_str().unwrap()
            )
        );
        // A namespaced kind's objects name their namespace, a cluster kind's do not.
        assert_eq!(
            object["metadata"]["namespace"].is_string(),
            crd["spec"]["scope"] == "Namespaced",
            "object {i}"
        );
        let schema = &version["schema"]["openAPIV3Schema"];
        assert_eq!(
            jsonschema_error(schema, object),
            None,
            "object {i}: {object}"
        );
        let file = tmp.0.join(format!("policy-{i}.yaml"));
        std::fs::write(&file, text).unwrap();
        assert_eq!(policy_check(&file), (Some(0), String::new()), "object {i}");
        kinds.push((
            kind.to_owned(),
            object["metadata"]["namespace"]
                .as_str()
                .unwrap_or("")
                .to_owned(),
        ));
    }
    let kinds: Vec<(&str, &str)> = kinds
        .iter()
        .map(|(k, n)| (k.as_str(), n.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("SensorClusterPolicy", ""),
            ("SensorPolicy", "prod"),
            ("SensorPolicy", "staging")
        ]
    );

    // A deliberately wrong object: the schema's enum refuses it too (so the validator above
    // does validate), and the sensor names the file, line and column.
    let wrong = texts[1].replacen("action: enforce", "action: maybe", 1);
    let line = wrong
        .lines()
        .position(|l| l.contains("action: maybe"))
        .unwrap()
        + 1;
    let mut object = objects[1].clone();
    object["spec"]["rules"][0]["action"] = json!("maybe");
    let refused = jsonschema_error(
        &crds["SensorPolicy"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"],
        &object,
    )
    .expect("the schema refuses action: maybe");
    assert!(refused.contains("'maybe' is not one of"), "{refused}");
    let file = tmp.0.join("wrong.yaml");
    std::fs::write(&file, &wrong).unwrap();
    let (code, stderr) = policy_check(&file);
    assert_eq!(code, Some(2), "{stderr}");
    let expected = format!(
        "{}:{line}:15: spec.rules[0].action: unknown action 'maybe' (expected enforce or audit)",
        file.display()
    );
    assert_eq!(
        stderr.lines().collect::<Vec<_>>(),
        [expected.as_str(), "sensor policy check: 1 error(s)"]
    );
}
