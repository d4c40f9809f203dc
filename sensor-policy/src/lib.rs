//! sensor policy files: parsing, validation and compilation of `apiVersion: sensor/v1`, `kind: Policy`
//! documents, and of the two Kubernetes resources with the same `spec`
//! (`apiVersion: sensor.dev/v1`, `kind: SensorClusterPolicy` or `SensorPolicy`; see
//! [`PolicyForm`]). The format is documented in `docs/policy.md`.
//!
//! - [`parse`] checks a file strictly (unknown fields, wrong types, bad CIDRs and globs,
//!   duplicate rule names, a rule carrying another type's fields, ...) and reports **every**
//!   problem as `file:line:column: field.path: what is wrong`, at the offending key or value.
//!   A YAML syntax error ends the parse of its file (the YAML parser cannot resume inside a
//!   document), so it is reported alone.
//! - [`default_policy`] is the built-in policy, `sensor/policies/default.yaml`.
//! - [`compile`] flattens a policy into what the kernel maps need ([`Compiled`]).
//!
//! YAML is read with `granit-parser` (events with spans) into a small positioned tree
//! (`yaml.rs`, YAML 1.2 core schema), then checked field by field (`validate.rs`).

mod compile;
pub mod destinations;
mod glob;
mod model;
mod validate;
mod yaml;

#[cfg(test)]
mod tests;

use std::{
    fmt,
    path::{Path, PathBuf},
};

pub use compile::{ChmodEntry, CidrRule, Compiled, PrivilegeEntry, compile};
pub use glob::Glob;
pub use model::{
    Action, DestinationSpec, KernelRule, LabelOperator, LabelRequirement, LabelSelector,
    MetadataRule, NamespaceScope, Policy, PolicyForm, PrivilegeRule, Raise, Rule, RuleKind,
    SETID_BITS, Scope,
};
pub use validate::{MAX_KERNEL_RULES, MAX_PORTS};

/// The `apiVersion` of a policy file.
pub const API_VERSION: &str = "sensor/v1";
/// The `kind` of a policy file.
pub const KIND: &str = "Policy";
/// The API group of the policy resources (their `apiVersion` is `sensor.dev/v1`).
pub const RESOURCE_GROUP: &str = "sensor.dev";
/// The version of the policy resources.
pub const RESOURCE_VERSION: &str = "v1";
/// The cluster-scoped resource: namespace scope as in a policy file, no cgroups.
pub const CLUSTER_KIND: &str = "SensorClusterPolicy";
/// The namespaced resource: applies to the pods of its own namespace only.
pub const NAMESPACED_KIND: &str = "SensorPolicy";
/// The resource name of [`CLUSTER_KIND`] in API paths.
pub const CLUSTER_PLURAL: &str = "sensorclusterpolicies";
/// The resource name of [`NAMESPACED_KIND`] in API paths.
pub const NAMESPACED_PLURAL: &str = "sensorpolicies";
/// Larger files are refused before parsing.
pub const MAX_POLICY_BYTES: usize = 1 << 20;

/// The built-in policy's text.
pub const DEFAULT_POLICY_YAML: &str = include_str!("../../sensor/policies/default.yaml");
/// The file name errors in the built-in policy would carry.
const DEFAULT_POLICY_FILE: &str = "<built-in default.yaml>";

/// One problem in a policy file. `line` and `column` are 1-based (the column counts
/// characters); `line` is 0 when the file could not be read at all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

impl std::error::Error for PolicyError {}

/// The 1-based line and column (in characters) of the first CR not followed by LF.
fn lone_carriage_return(text: &str) -> Option<(usize, usize)> {
    let at = text
        .char_indices()
        .find(|&(i, c)| c == '\r' && !text[i + 1..].starts_with('\n'))?
        .0;
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    Some((line, column))
}

/// Parses and validates one policy file's text; `file` names it in the errors. On failure,
/// every problem found, ordered by position. The text may be a policy file or either
/// resource, in YAML or in JSON (the daemon passes an API object as pretty-printed JSON,
/// which is YAML too); [`Policy::form`] says which it was.
pub fn parse(file: &str, text: &str) -> Result<Policy, Vec<PolicyError>> {
    let error = |line, column, message: String| PolicyError {
        file: file.to_owned(),
        line,
        column,
        message,
    };
    if text.len() > MAX_POLICY_BYTES {
        return Err(vec![error(
            1,
            1,
            format!(
                "the file is {} bytes; a policy file is at most {MAX_POLICY_BYTES}",
                text.len()
            ),
        )]);
    }
    // YAML counts a lone CR as a line break, editors do not: refuse it, so that every line
    // number below is the one an editor shows.
    if let Some((line, column)) = lone_carriage_return(text) {
        return Err(vec![error(
            line,
            column,
            "a carriage return (\\r) not followed by a newline: save the file with LF or CRLF line ends"
                .to_owned(),
        )]);
    }
    let (root, yaml_errors) = yaml::load(text);
    let mut errors: Vec<PolicyError> = yaml_errors
        .into_iter()
        .map(|e| error(e.pos.line, e.pos.column, e.message))
        .collect();
    let policy = match &root {
        None if errors.is_empty() => {
            errors.push(error(
                1,
                1,
                format!("the file holds no policy (expected apiVersion: {API_VERSION}, kind: {KIND}, metadata, spec)"),
            ));
            None
        }
        None => None,
        Some(root) => {
            let (policy, problems) = validate::policy(root);
            errors.extend(
                problems
                    .into_iter()
                    .map(|(pos, message)| error(pos.line, pos.column, message)),
            );
            policy
        }
    };
    if policy.is_none() && errors.is_empty() {
        errors.push(error(1, 1, "the policy is incomplete".into()));
    }
    errors.sort_by_key(|e| (e.line, e.column));
    match policy {
        Some(policy) if errors.is_empty() => Ok(policy),
        _ => Err(errors),
    }
}

/// Reads and parses a policy file. An unreadable file is one error with line 0; a file that
/// is not UTF-8 is one error at the first bad byte.
pub fn parse_file(path: &Path) -> Result<Policy, Vec<PolicyError>> {
    let file = path.display().to_string();
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            return Err(vec![PolicyError {
                file,
                line: 0,
                column: 0,
                message: format!("cannot read the file: {e}"),
            }]);
        }
    };
    match std::str::from_utf8(&bytes) {
        Ok(text) => parse(&file, text),
        Err(e) => {
            // The prefix up to the error is valid UTF-8.
            let good = String::from_utf8_lossy(&bytes[..e.valid_up_to()]);
            let line = good.matches('\n').count() + 1;
            let column = good.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            Err(vec![PolicyError {
                file,
                line,
                column,
                message: "not UTF-8 text".into(),
            }])
        }
    }
}

/// For `sensor policy check FILE...`: every problem of every file (empty = all good).
pub fn check_files(paths: &[PathBuf]) -> Vec<PolicyError> {
    paths
        .iter()
        .filter_map(|p| parse_file(p).err())
        .flatten()
        .collect()
}

/// The built-in policy (`sensor/policies/default.yaml`): instance-metadata endpoints blocked
/// in every namespace but `kube-system`, set-id chmod denied.
pub fn default_policy() -> Policy {
    match parse(DEFAULT_POLICY_FILE, DEFAULT_POLICY_YAML) {
        Ok(policy) => policy,
        // A unit test parses it; reaching this is a build of a broken default.yaml.
        Err(errors) => panic!(
            "the built-in policy is invalid: {}",
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        ),
    }
}

/// Entry point for a fuzz target: parses arbitrary bytes (lossily decoded) and compiles what
/// parses. Panics only when an invariant breaks: a failure without errors, or an error
/// without a position.
pub fn fuzz_parse(bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    match parse("fuzz.yaml", &text) {
        Ok(policy) => {
            let compiled = compile(&policy);
            assert_eq!(compiled.rule_names.len(), policy.rules.len());
        }
        Err(errors) => {
            assert!(!errors.is_empty(), "a failed parse reports no error");
            for e in &errors {
                assert!(e.line >= 1 && e.column >= 1, "error without position: {e}");
                assert!(!e.message.is_empty(), "error without message at {e}");
            }
        }
    }
}
