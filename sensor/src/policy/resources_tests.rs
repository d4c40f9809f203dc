use serde_json::json;

use super::*;

#[test]
fn the_crd_manifest_is_generated_from_the_types() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/base/crds.yaml");
    let manifest = crd_manifest();
    if std::env::var_os("SENSOR_BLESS").is_some() {
        std::fs::write(path, &manifest).unwrap();
        return;
    }
    let file = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        file == manifest,
        "{CRD_MANIFEST} is stale: run with SENSOR_BLESS=1"
    );
}

/// The names the daemon and the manifests use are the parser's.
#[test]
fn the_crds_carry_the_contracts_names_and_columns() {
    use sensor_policy::{
        CLUSTER_KIND, CLUSTER_PLURAL, NAMESPACED_KIND, NAMESPACED_PLURAL, RESOURCE_GROUP,
        RESOURCE_VERSION,
    };
    let crds = [
        (
            SensorClusterPolicy::crd(),
            CLUSTER_KIND,
            CLUSTER_PLURAL,
            "scpol",
            "Cluster",
        ),
        (
            SensorPolicy::crd(),
            NAMESPACED_KIND,
            NAMESPACED_PLURAL,
            "spol",
            "Namespaced",
        ),
    ];
    for (crd, kind, plural, short, scope) in crds {
        let crd = serde_json::to_value(&crd).unwrap();
        assert_eq!(
            crd["metadata"]["name"],
            format!("{plural}.{RESOURCE_GROUP}")
        );
        let spec = &crd["spec"];
        assert_eq!(spec["group"], RESOURCE_GROUP);
        assert_eq!(spec["scope"], scope);
        assert_eq!(spec["names"]["kind"], kind);
        assert_eq!(spec["names"]["plural"], plural);
        assert_eq!(spec["names"]["shortNames"], json!([short]));
        let versions = spec["versions"].as_array().unwrap();
        assert_eq!(versions.len(), 1, "{kind}");
        let v = &versions[0];
        assert_eq!(
            (&v["name"], &v["served"], &v["storage"]),
            (&json!(RESOURCE_VERSION), &json!(true), &json!(true))
        );
        assert_eq!(v["subresources"], json!({"status": {}}), "{kind}");
        assert_eq!(
            v["additionalPrinterColumns"],
            json!([
                {"name": "Mode", "type": "string", "jsonPath": ".status.mode"},
                {"name": "Ready Nodes", "type": "integer", "jsonPath": ".status.readyNodes"},
                {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
            ]),
            "{kind}"
        );
        let schema = &v["schema"]["openAPIV3Schema"]["properties"];
        // Unknown fields reach the parser (which reports them) instead of being pruned, at
        // every depth of the spec.
        let objects = objects_with_properties(&schema["spec"]);
        let paths: Vec<&str> = objects.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "",
                ".rules[]",
                ".scope",
                ".scope.namespaces",
                ".scope.podSelector",
                ".scope.podSelector.matchExpressions[]"
            ],
            "{kind}"
        );
        for (path, object) in objects {
            assert_eq!(
                object["x-kubernetes-preserve-unknown-fields"], true,
                "{kind}: spec{path} prunes unknown fields"
            );
        }
        assert_eq!(schema["spec"]["required"], json!(["rules"]), "{kind}");
        let rule = &schema["spec"]["properties"]["rules"]["items"]["properties"];
        let mut fields: Vec<&str> = rule
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        fields.sort_unstable();
        assert_eq!(
            fields,
            [
                "action",
                "all",
                "destinations",
                "modeMask",
                "name",
                "paths",
                "ports",
                "raises",
                "setid",
                "type"
            ],
            "{kind}"
        );
        assert_eq!(
            rule["action"]["enum"],
            json!(["enforce", "audit"]),
            "{kind}"
        );
        assert_eq!(
            rule["type"]["enum"],
            json!(["metadata", "chmod", "privilege"]),
            "{kind}"
        );
        let status = &schema["status"]["properties"];
        assert!(
            status["nodes"]["additionalProperties"]["properties"]["observedGeneration"].is_object(),
            "{kind}: {status}"
        );
    }
}

/// Every schema node below `schema` (included) that lists `properties`, with its path.
fn objects_with_properties(schema: &Value) -> Vec<(String, &Value)> {
    fn walk<'v>(path: String, node: &'v Value, out: &mut Vec<(String, &'v Value)>) {
        if let Some(properties) = node["properties"].as_object() {
            out.push((path.clone(), node));
            for (name, child) in properties {
                walk(format!("{path}.{name}"), child, out);
            }
        }
        if node["items"].is_object() {
            walk(format!("{path}[]"), &node["items"], out);
        }
    }
    let mut out = Vec::new();
    walk(String::new(), schema, &mut out);
    out
}

fn rule(name: &str, rule_type: RuleTypeSpec, action: ActionSpec) -> RuleSpec {
    RuleSpec {
        name: name.into(),
        rule_type,
        action,
        destinations: None,
        ports: None,
        setid: None,
        mode_mask: None,
        all: None,
        paths: None,
        raises: None,
    }
}

/// One rule of each type, with every field of its type.
fn rules() -> Vec<RuleSpec> {
    vec![
        RuleSpec {
            destinations: Some(vec!["default".into(), "10.20.0.0/16".into()]),
            ports: Some(vec![80, 443]),
            ..rule(
                "block-metadata",
                RuleTypeSpec::Metadata,
                ActionSpec::Enforce,
            )
        },
        RuleSpec {
            setid: Some(true),
            mode_mask: Some("0o111".into()),
            paths: Some(vec!["/usr/**".into()]),
            ..rule("deny-setid-chmod", RuleTypeSpec::Chmod, ActionSpec::Audit)
        },
        RuleSpec {
            all: Some(true),
            ..rule("prevent-chmod", RuleTypeSpec::Chmod, ActionSpec::Enforce)
        },
        RuleSpec {
            raises: Some(vec![
                RaiseSpec::SetuidRoot,
                RaiseSpec::SetgidRoot,
                RaiseSpec::Capset,
                RaiseSpec::SetidExec,
                RaiseSpec::FileCaps,
            ]),
            ..rule("log-raises", RuleTypeSpec::Privilege, ActionSpec::Audit)
        },
    ]
}

fn selector() -> LabelSelectorSpec {
    LabelSelectorSpec {
        match_labels: Some([("app".to_owned(), "web".to_owned())].into()),
        match_expressions: Some(vec![
            LabelRequirementSpec {
                key: "tier".into(),
                operator: LabelOperatorSpec::In,
                values: Some(vec!["front".into()]),
            },
            LabelRequirementSpec {
                key: "sensor.dev/exempt".into(),
                operator: LabelOperatorSpec::DoesNotExist,
                values: None,
            },
        ]),
    }
}

/// What these types write is what the parser reads: every field name and value spelling.
#[test]
fn typed_objects_serialize_to_policies_the_parser_accepts() {
    let mut cluster = SensorClusterPolicy::new(
        "baseline",
        ClusterPolicySpec {
            policy: PolicySpec {
                scope: Some(ScopeSpec {
                    namespaces: Some(NamespacesSpec {
                        include: vec!["*".into()],
                        exclude: Some(vec!["kube-system".into()]),
                    }),
                    pod_selector: Some(selector()),
                    cgroups: None,
                }),
                rules: rules(),
            },
        },
    );
    cluster.status = Some(PolicyStatus {
        mode: Some("mixed".into()),
        ready_nodes: Some(1),
        nodes: [("node-a".to_owned(), NodeStatus::default())].into(),
    });
    let text = serde_json::to_string_pretty(&cluster).unwrap();
    let p = sensor_policy::parse("cluster", &text).unwrap_or_else(|e| panic!("{e:#?}\n{text}"));
    assert_eq!(p.form, sensor_policy::PolicyForm::Cluster);
    assert_eq!((p.name.as_str(), p.rules.len()), ("baseline", 4));
    let ns = p.scope.namespaces.unwrap();
    assert!(ns.matches("default") && !ns.matches("kube-system"));
    let labels = [
        ("app".to_owned(), "web".to_owned()),
        ("tier".to_owned(), "front".to_owned()),
    ]
    .into();
    assert!(p.scope.pod_selector.unwrap().matches(&labels));

    let mut namespaced = SensorPolicy::new(
        "metadata",
        NamespacedPolicySpec {
            policy: PolicySpec {
                scope: Some(ScopeSpec {
                    pod_selector: Some(selector()),
                    ..ScopeSpec::default()
                }),
                rules: rules(),
            },
        },
    );
    namespaced.metadata.namespace = Some("prod".into());
    let text = serde_json::to_string_pretty(&namespaced).unwrap();
    let p = sensor_policy::parse("namespaced", &text).unwrap_or_else(|e| panic!("{e:#?}\n{text}"));
    assert_eq!(
        p.form,
        sensor_policy::PolicyForm::Namespaced {
            namespace: Some("prod".into())
        }
    );
    assert_eq!(
        p.rules,
        sensor_policy::parse("cluster", &serde_json::to_string_pretty(&cluster).unwrap())
            .unwrap()
            .rules
    );
}

#[test]
fn the_status_is_camel_case() {
    let status = PolicyStatus {
        mode: Some("enforce".into()),
        ready_nodes: Some(2),
        nodes: [(
            "node-a".to_owned(),
            NodeStatus {
                accepted: true,
                enforced: true,
                message: "enforced".into(),
                errors: vec![],
                tiers: [("chmod".to_owned(), "lsm".to_owned())].into(),
                blocked: 3,
                audited: 4,
                observed_generation: Some(5),
                updated: "2026-01-01T00:00:00Z".into(),
            },
        )]
        .into(),
    };
    let value = serde_json::to_value(&status).unwrap();
    assert_eq!(
        value,
        json!({
            "mode": "enforce",
            "readyNodes": 2,
            "nodes": {"node-a": {
                "accepted": true, "enforced": true, "message": "enforced", "errors": [],
                "tiers": {"chmod": "lsm"}, "blocked": 3, "audited": 4,
                "observedGeneration": 5, "updated": "2026-01-01T00:00:00Z"
            }}
        })
    );
    assert_eq!(
        serde_json::from_value::<PolicyStatus>(value).unwrap(),
        status
    );
    // A partial report (another node's daemon of an older version) still reads.
    let partial: PolicyStatus =
        serde_json::from_value(json!({"nodes": {"b": {"accepted": true}}})).unwrap();
    assert!(partial.nodes["b"].accepted && partial.mode.is_none());
}

#[test]
fn the_yaml_emitter_keeps_every_value_as_it_is() {
    let value = json!({
        "a": {"b": [1, {"c": "on", "d": []}, [true, null]], "e": {}},
        "on": "x: y",
        "x-kubernetes-preserve-unknown-fields": true,
        "f:spec": 1.5,
        "text": "line\n\"quoted\"",
    });
    assert_eq!(
        yaml_lines(&value).join("\n"),
        "\
a:
  b:
    - 1
    - c: \"on\"
      d: []
    - - true
      - null
  e: {}
\"f:spec\": 1.5
\"on\": \"x: y\"
text: \"line\\n\\\"quoted\\\"\"
x-kubernetes-preserve-unknown-fields: true"
    );
}
