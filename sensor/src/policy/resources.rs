//! The policy resources, `SensorClusterPolicy` and `SensorPolicy` (`sensor.dev/v1`): their
//! Rust types, the CustomResourceDefinitions generated from them (`deploy/base/crds.yaml`,
//! written by [`crd_manifest`]), and the status the daemon reports into them.
//!
//! The `spec` of both is a policy file's `spec` ([`PolicySpec`], documented in
//! docs/policy.md). These types describe it for the API server and for `kubectl explain`;
//! they do not validate it: the daemon hands every object to `sensor_policy::parse`, the
//! strict parser of policy files, which reports each problem at its line and column.
//!
//! So that the API server never hides a problem from that parser, the schema of `spec` and of
//! every object inside it carries `x-kubernetes-preserve-unknown-fields: true` (the flag does
//! not reach into nested properties, so each of those types carries it too): without it the
//! API server would prune an unknown field (a misspelt `podSelctor`, say) without a word, and
//! the sensor would apply a policy that silently lost its selector. With it the field is
//! stored as written and the parser refuses the object, naming the field. The generated
//! properties stay in the schema as documentation (and the API server still checks the types
//! of the fields it knows).

use std::collections::BTreeMap;

use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A policy's `spec`: where it applies and what it denies or audits (docs/policy.md). The
/// same in both kinds; `sensor_policy::parse` says which fields each kind may use.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct PolicySpec {
    /// Where the rules apply. Required in a SensorClusterPolicy; in a SensorPolicy optional
    /// (its own namespace) and limited to podSelector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<ScopeSpec>,
    /// The rules, a non-empty list.
    pub rules: Vec<RuleSpec>,
}

/// `spec.scope`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct ScopeSpec {
    /// Namespace names or `*` patterns (SensorClusterPolicy only; exclude wins over include).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<NamespacesSpec>,
    /// Of those pods, only the ones whose labels match (Kubernetes label selector).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<LabelSelectorSpec>,
    /// cgroup v2 directories: policy files only. Refused in both resources: cgroup roots are
    /// node configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroups: Option<Vec<String>>,
}

/// `spec.scope.namespaces`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct NamespacesSpec {
    /// Non-empty list of namespace names or patterns (`*` matches any run of characters).
    pub include: Vec<String>,
    /// Namespaces left out, same syntax.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude: Option<Vec<String>>,
}

/// `spec.scope.podSelector`: `matchLabels` and `matchExpressions`, ANDed; not empty.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct LabelSelectorSpec {
    /// Labels a pod must carry with these values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_labels: Option<BTreeMap<String, String>>,
    /// Label requirements a pod must meet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_expressions: Option<Vec<LabelRequirementSpec>>,
}

/// One of `matchExpressions`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct LabelRequirementSpec {
    /// A label key.
    pub key: String,
    pub operator: LabelOperatorSpec,
    /// Non-empty for In and NotIn, absent for Exists and DoesNotExist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<String>>,
}

/// A label requirement's operator (NotIn also selects pods without the key).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum LabelOperatorSpec {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

/// One of `spec.rules`: the common fields and those of its `type` (a field of another type is
/// refused).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct RuleSpec {
    /// Unique in the policy; reported as `rule` in events.
    pub name: String,
    #[serde(rename = "type")]
    pub rule_type: RuleTypeSpec,
    pub action: ActionSpec,
    /// metadata: `default` and/or IPv4/IPv6 addresses or CIDR prefixes (required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destinations: Option<Vec<String>>,
    /// metadata: at most 16 destination ports; absent: every port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<u16>>,
    /// chmod: the requested mode carries S_ISUID or S_ISGID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setid: Option<bool>,
    /// chmod: the requested mode has any of these bits, an octal string ("0o111").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode_mask: Option<String>,
    /// chmod: every call, whatever the mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all: Option<bool>,
    /// chmod: only files whose absolute name matches one of these patterns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paths: Option<Vec<String>>,
    /// privilege: the raises the rule matches (required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raises: Option<Vec<RaiseSpec>>,
}

/// A rule's `type`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RuleTypeSpec {
    /// Connects and sends to instance-metadata and other listed destinations.
    Metadata,
    /// chmod-family calls.
    Chmod,
    /// Privilege raises.
    Privilege,
}

/// A rule's `action`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ActionSpec {
    /// Denied (EPERM, or the caller killed at the kill tier).
    Enforce,
    /// Allowed and reported.
    Audit,
}

/// A privilege raise.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RaiseSpec {
    SetuidRoot,
    SetgidRoot,
    Capset,
    SetidExec,
    FileCaps,
}

/// One policy resource: its `spec` type (a [`PolicySpec`], flattened) and, through kube's
/// derive, the resource type named `kind` with the printer columns both kinds show.
macro_rules! policy_resource {
    ($(#[doc = $doc:tt])* $spec:ident: $kind:tt, $plural:tt, $short:tt, $crd_doc:tt $(, $namespaced:ident)?) => {
        $(#[doc = $doc])*
        #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
        #[kube(
            group = "sensor.dev",
            version = "v1",
            kind = $kind,
            plural = $plural,
            shortname = $short,
            $($namespaced,)?
            status = "PolicyStatus",
            derive = "PartialEq",
            doc = $crd_doc,
            printcolumn(name = "Mode", type_ = "string", json_path = ".status.mode"),
            printcolumn(name = "Ready Nodes", type_ = "integer", json_path = ".status.readyNodes"),
            printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
        )]
        #[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
        pub struct $spec {
            #[serde(flatten)]
            pub policy: PolicySpec,
        }
    };
}

policy_resource! {
    /// Where the policy applies and what it denies or audits: a policy file's spec
    /// (docs/policy.md). Checked by the sensor, which reports errors in the status.
    ClusterPolicySpec: "SensorClusterPolicy", "sensorclusterpolicies", "scpol",
    "A sensor policy for the namespaces its scope selects (docs/policy.md)."
}

policy_resource! {
    /// Where the policy applies and what it denies or audits: a policy file's spec, without
    /// namespaces or cgroups (docs/policy.md). Checked by the sensor, which reports errors in
    /// the status.
    NamespacedPolicySpec: "SensorPolicy", "sensorpolicies", "spol",
    "A sensor policy for the pods of its own namespace (docs/policy.md).",
    namespaced
}

/// What the sensors report about a policy (the `status` subresource).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct PolicyStatus {
    /// `enforce`, `audit` or `mixed`, when it is the same on every node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Nodes where the policy is accepted and enforced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready_nodes: Option<u32>,
    /// Per node, by node name.
    pub nodes: BTreeMap<String, NodeStatus>,
}

/// One node's report.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct NodeStatus {
    /// The policy parsed and is in force.
    pub accepted: bool,
    /// Every rule is enforced as written at this node's tiers.
    pub enforced: bool,
    /// One line for people.
    pub message: String,
    /// The parser's errors, each `FILE:LINE:COLUMN: field.path: what is wrong`.
    pub errors: Vec<String>,
    /// The tier of each protection (protection name -> tier).
    pub tiers: BTreeMap<String, String>,
    /// Calls this policy blocked on the node.
    pub blocked: u64,
    /// Calls this policy audited on the node.
    pub audited: u64,
    /// The `metadata.generation` the report is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When the report was written (RFC 3339).
    pub updated: String,
}

/// Where the generated manifest lives, from the crate's directory.
pub const CRD_MANIFEST: &str = "deploy/base/crds.yaml";

/// `deploy/base/crds.yaml`: both CustomResourceDefinitions, as YAML.
pub fn crd_manifest() -> String {
    let mut out = String::from(
        "# Generated from sensor/src/policy/resources.rs: do not edit. After a change to the types,\n\
         # SENSOR_BLESS=1 cargo test -p sensor --lib policy::resources rewrites it.\n",
    );
    for crd in [SensorClusterPolicy::crd(), SensorPolicy::crd()] {
        // Serializing a k8s-openapi type to JSON cannot fail.
        let value = serde_json::to_value(&crd).unwrap_or_default();
        out.push_str("---\n");
        for line in yaml_lines(&value) {
            out.push_str(&line);
            out.push('\n');
        }
    }
    out
}

/// A JSON value as block-style YAML lines, without a trailing newline. Strings are written as
/// JSON strings (YAML's double-quoted style reads them the same), so no value can change type
/// on the way (`"on"`, `"1.0"`, `"null"` stay strings).
pub(crate) fn yaml_lines(value: &Value) -> Vec<String> {
    let mut lines = Vec::new();
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, item) in map {
                let key = yaml_key(key);
                if is_block(item) {
                    lines.push(format!("{key}:"));
                    lines.extend(yaml_lines(item).into_iter().map(|l| format!("  {l}")));
                } else {
                    lines.push(format!("{key}: {}", yaml_scalar(item)));
                }
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for item in items {
                if is_block(item) {
                    let mut block = yaml_lines(item).into_iter();
                    lines.push(format!("- {}", block.next().unwrap_or_default()));
                    lines.extend(block.map(|l| format!("  {l}")));
                } else {
                    lines.push(format!("- {}", yaml_scalar(item)));
                }
            }
        }
        _ => lines.push(yaml_scalar(value)),
    }
    lines
}

/// A non-empty mapping or list (written as a block; empty ones are `{}` and `[]`).
fn is_block(value: &Value) -> bool {
    match value {
        Value::Object(map) => !map.is_empty(),
        Value::Array(items) => !items.is_empty(),
        _ => false,
    }
}

/// A value on one line: a scalar, `{}` or `[]`.
fn yaml_scalar(value: &Value) -> String {
    match value {
        Value::Object(_) => "{}".to_owned(),
        Value::Array(_) => "[]".to_owned(),
        // JSON's null, booleans, numbers and quoted strings are YAML's.
        other => other.to_string(),
    }
}

/// A mapping key: plain when no YAML reader can take it for anything but that string
/// (`y`, `on` and `null` are booleans or null to YAML 1.1 readers), quoted otherwise.
fn yaml_key(key: &str) -> String {
    let plain = key.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'))
        && !matches!(
            key.to_ascii_lowercase().as_str(),
            "y" | "n" | "yes" | "no" | "on" | "off" | "true" | "false" | "null"
        );
    if plain {
        key.to_owned()
    } else {
        Value::from(key).to_string()
    }
}

#[cfg(test)]
#[path = "resources_tests.rs"]
mod tests;
