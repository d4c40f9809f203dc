//! The typed, validated policy. Every value here has passed the checks in `validate.rs`.

use std::{collections::BTreeMap, fmt, path::PathBuf};

use super::glob::{Glob, wildcard_match};
use crate::destinations::Prefix;

/// A validated policy: a policy file (`apiVersion: sensor/v1`, `kind: Policy`) or one of the
/// two resources (`apiVersion: sensor.dev/v1`), as [`Policy::form`] says.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    /// Which document it came from.
    pub form: PolicyForm,
    /// `metadata.name`; reported as `policy` in events.
    pub name: String,
    /// `metadata.description`.
    pub description: Option<String>,
    pub scope: Scope,
    /// In file order; a rule's index here is the rule index the kernel reports.
    pub rules: Vec<Rule>,
}

/// The kind of document a [`Policy`] was read from.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum PolicyForm {
    /// A policy file: `apiVersion: sensor/v1`, `kind: Policy`.
    #[default]
    File,
    /// `apiVersion: sensor.dev/v1`, `kind: SensorClusterPolicy`: cluster-scoped; its scope
    /// has `namespaces` and never `cgroups`.
    Cluster,
    /// `apiVersion: sensor.dev/v1`, `kind: SensorPolicy`: the pods of one namespace.
    /// `namespace` is `metadata.namespace` (the API server always sets it; a manifest may
    /// leave it to `kubectl apply -n`).
    Namespaced { namespace: Option<String> },
}

/// Which workloads the rules apply to (`spec.scope`). At least one of `namespaces` and
/// `cgroups` is set, except in a `SensorPolicy` without `metadata.namespace` (below).
///
/// A `SensorPolicy` cannot name namespaces or cgroups: its `namespaces` is its own namespace
/// (include that one, exclude none) when `metadata.namespace` is given, and `None` when it is
/// not (such a policy selects nothing until it has a namespace); `cgroups` is empty.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Scope {
    /// Kubernetes: pods in these namespaces.
    pub namespaces: Option<NamespaceScope>,
    /// Kubernetes: of those, only pods whose labels match (needs `namespaces`).
    pub pod_selector: Option<LabelSelector>,
    /// Plain host (or in addition on a node): cgroup v2 directories, everything below included.
    pub cgroups: Vec<PathBuf>,
}

/// `spec.scope.namespaces`: names or `*` wildcard patterns; `exclude` wins over `include`.
#[derive(Clone, Debug, PartialEq)]
pub struct NamespaceScope {
    pub include: Vec<String>,
    pub exclude: Vec<String>,
}

impl NamespaceScope {
    /// Whether a namespace is in scope.
    pub fn matches(&self, namespace: &str) -> bool {
        self.include.iter().any(|p| wildcard_match(p, namespace))
            && !self.exclude.iter().any(|p| wildcard_match(p, namespace))
    }
}

/// A Kubernetes label selector (`matchLabels` and `matchExpressions`, ANDed).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct LabelSelector {
    pub match_labels: BTreeMap<String, String>,
    pub match_expressions: Vec<LabelRequirement>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct LabelRequirement {
    pub key: String,
    pub operator: LabelOperator,
    /// Non-empty for `In`/`NotIn`, empty for `Exists`/`DoesNotExist`.
    pub values: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LabelOperator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

impl LabelSelector {
    /// Whether a pod with these labels is selected (Kubernetes semantics: `NotIn` also
    /// selects pods without the key).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| {
                let value = labels.get(&r.key);
                match r.operator {
                    LabelOperator::In => value.is_some_and(|v| r.values.contains(v)),
                    LabelOperator::NotIn => value.is_none_or(|v| !r.values.contains(v)),
                    LabelOperator::Exists => value.is_some(),
                    LabelOperator::DoesNotExist => value.is_none(),
                }
            })
    }
}

/// What a rule does when it matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Deny in the kernel (EPERM); event verdict `blocked`.
    Enforce,
    /// Allow; event verdict `audited`.
    Audit,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Enforce => "enforce",
            Action::Audit => "audit",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    /// Unique in the policy; reported as `rule` in events.
    pub name: String,
    pub action: Action,
    pub kind: RuleKind,
}

/// A rule's `type` with the fields of that type.
#[derive(Clone, Debug, PartialEq)]
pub enum RuleKind {
    Metadata(MetadataRule),
    Chmod(KernelRule),
    Privilege(PrivilegeRule),
}

impl RuleKind {
    /// The `type` value.
    pub fn type_name(&self) -> &'static str {
        match self {
            RuleKind::Metadata(_) => "metadata",
            RuleKind::Chmod(_) => "chmod",
            RuleKind::Privilege(_) => "privilege",
        }
    }
}

/// `type: metadata`: TCP connects and UDP sends to these destinations.
#[derive(Clone, Debug, PartialEq)]
pub struct MetadataRule {
    /// Non-empty, no duplicates.
    pub destinations: Vec<DestinationSpec>,
    /// Destination ports; empty = every port.
    pub ports: Vec<u16>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum DestinationSpec {
    /// `default`: the built-in metadata list ([`crate::destinations::METADATA_ENDPOINTS`]).
    Default,
    /// An IPv4 or IPv6 prefix (an address alone is a /32 or /128).
    Cidr(Prefix),
}

/// `type: chmod`: chmod, fchmod, fchmodat, fchmodat2 calls.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelRule {
    /// Matches a requested mode carrying S_ISUID or S_ISGID.
    pub setid: bool,
    /// Matches a requested mode with any of these bits (0..=0o7777).
    pub mode_mask: Option<u16>,
    /// Matches every chmod (the classic "prevent-chmod" rule).
    pub all: bool,
    /// Only files whose absolute name matches one of these; empty = every file.
    pub paths: Vec<Glob>,
}

/// S_ISUID | S_ISGID.
pub const SETID_BITS: u16 = 0o6000;

impl KernelRule {
    /// The mode bits that make a call match; `None` when every call matches (`all`).
    pub fn mode_bits(&self) -> Option<u16> {
        if self.all {
            return None;
        }
        let setid = if self.setid { SETID_BITS } else { 0 };
        Some(setid | self.mode_mask.unwrap_or(0))
    }

    /// Whether a chmod to `mode` of the file named `path` matches (`path` unknown: only
    /// rules without `paths` match).
    pub fn matches(&self, mode: u32, path: Option<&str>) -> bool {
        let mode_ok = self
            .mode_bits()
            .is_none_or(|bits| mode & u32::from(bits) != 0);
        let path_ok =
            self.paths.is_empty() || path.is_some_and(|p| self.paths.iter().any(|g| g.matches(p)));
        mode_ok && path_ok
    }
}

/// `type: privilege`: privilege raises.
#[derive(Clone, Debug, PartialEq)]
pub struct PrivilegeRule {
    /// Non-empty, no duplicates.
    pub raises: Vec<Raise>,
}

/// A kind of privilege raise: one definition shared with the kernel programs (its value is
/// the bit a kernel rule carries).
pub use sensor_common::Raise;
