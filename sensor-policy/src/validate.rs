//! YAML node tree -> [`Policy`], collecting every problem with the position of the offending
//! key or value and the field path (`spec.rules[1].ports[0]: ...`).

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    net::IpAddr,
    path::PathBuf,
};

use super::{
    API_VERSION, CLUSTER_KIND, KIND, NAMESPACED_KIND, RESOURCE_GROUP, RESOURCE_VERSION,
    glob::{Glob, MAX_GLOB_BYTES},
    model::*,
    yaml::{Node, NodeKind, Pos, ScalarType},
};
use crate::destinations::{METADATA_ENDPOINTS, Prefix, PrefixError};

const TOP_FIELDS: &[&str] = &["apiVersion", "kind", "metadata", "spec"];
const RESOURCE_TOP_FIELDS: &[&str] = &["apiVersion", "kind", "metadata", "spec", "status"];
const METADATA_FIELDS: &[&str] = &["name", "description"];
const RESOURCE_METADATA_FIELDS: &[&str] = &["name", "namespace", "description"];
/// The other Kubernetes ObjectMeta fields: a resource may carry them, unchecked (the API
/// server sets and checks them).
const OBJECT_META_FIELDS: &[&str] = &[
    "labels",
    "annotations",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "managedFields",
    "finalizers",
    "ownerReferences",
    "generateName",
    "selfLink",
    "deletionGracePeriodSeconds",
];
const SPEC_FIELDS: &[&str] = &["scope", "rules"];
const SCOPE_FIELDS: &[&str] = &["namespaces", "podSelector", "cgroups"];
const NAMESPACED_SCOPE_FIELDS: &[&str] = &["podSelector"];
const NAMESPACES_FIELDS: &[&str] = &["include", "exclude"];
const SELECTOR_FIELDS: &[&str] = &["matchLabels", "matchExpressions"];
const REQUIREMENT_FIELDS: &[&str] = &["key", "operator", "values"];
const RULE_COMMON_FIELDS: &[&str] = &["name", "type", "action"];
const RULE_TYPES: &[&str] = &["metadata", "chmod", "privilege"];
/// Most chmod rules, and most privilege rules, a policy has (the kernel evaluates at most this
/// many of each).
pub const MAX_KERNEL_RULES: usize = 16;
/// Most ports a metadata rule lists (each kernel trie entry holds this many).
pub const MAX_PORTS: usize = 16;
const METADATA_RULE_FIELDS: &[&str] = &["destinations", "ports"];
const CHMOD_RULE_FIELDS: &[&str] = &["setid", "modeMask", "all", "paths"];
const PRIVILEGE_RULE_FIELDS: &[&str] = &["raises"];

/// The fields only a rule of this type may carry.
fn type_fields(rule_type: &str) -> &'static [&'static str] {
    match rule_type {
        "metadata" => METADATA_RULE_FIELDS,
        "chmod" => CHMOD_RULE_FIELDS,
        "privilege" => PRIVILEGE_RULE_FIELDS,
        _ => &[],
    }
}

/// "a, b or c".
fn one_of(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
    }
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_owned()
    } else {
        format!("{path}.{field}")
    }
}

fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// The collected problems, each with its position.
#[derive(Default)]
pub(crate) struct Checker {
    pub errors: Vec<(Pos, String)>,
}

struct Entry<'n> {
    key: &'n str,
    key_pos: Pos,
    value: &'n Node,
    used: bool,
}

/// A mapping's entries by key, marking those that were looked at.
struct Fields<'n> {
    pos: Pos,
    path: String,
    entries: Vec<Entry<'n>>,
}

impl<'n> Fields<'n> {
    fn get(&mut self, key: &str) -> Option<&'n Node> {
        let entry = self.entries.iter_mut().find(|e| e.key == key)?;
        entry.used = true;
        Some(entry.value)
    }

    fn has(&self, key: &str) -> bool {
        self.entries.iter().any(|e| e.key == key)
    }

    fn key_pos(&self, key: &str) -> Option<Pos> {
        self.entries
            .iter()
            .find(|e| e.key == key)
            .map(|e| e.key_pos)
    }

    fn field_path(&self, key: &str) -> String {
        join(&self.path, key)
    }
}

impl Checker {
    fn error(&mut self, pos: Pos, path: &str, message: impl fmt::Display) {
        let message = if path.is_empty() {
            message.to_string()
        } else {
            format!("{path}: {message}")
        };
        self.errors.push((pos, message));
    }

    fn type_error(&mut self, node: &Node, path: &str, expected: &str) {
        if matches!(node.kind, NodeKind::Invalid) {
            return;
        }
        let hint = match &node.kind {
            NodeKind::Scalar(s)
                if expected == "a string"
                    && matches!(
                        s.resolve(),
                        ScalarType::Bool | ScalarType::Int | ScalarType::Float
                    ) =>
            {
                format!(" (quote it: \"{}\")", s.text)
            }
            NodeKind::Scalar(s)
                if expected == "a list" && !matches!(s.resolve(), ScalarType::Null) =>
            {
                format!(" (write [{}])", flow_item(&s.text))
            }
            NodeKind::Scalar(s)
                if expected == "true or false"
                    && matches!(
                        s.text.as_str(),
                        "yes" | "no" | "on" | "off" | "y" | "n" | "Yes" | "No" | "On" | "Off"
                    ) =>
            {
                " (YAML 1.2 booleans are only true and false)".to_owned()
            }
            _ => String::new(),
        };
        self.error(
            node.pos,
            path,
            format_args!("expected {expected}, found {}{hint}", node.describe()),
        );
    }

    /// A mapping whose keys are strings, without duplicates.
    fn mapping<'n>(&mut self, node: &'n Node, path: &str) -> Option<Fields<'n>> {
        let NodeKind::Map(pairs) = &node.kind else {
            self.type_error(node, path, "a mapping");
            return None;
        };
        let mut fields = Fields {
            pos: node.pos,
            path: path.to_owned(),
            entries: Vec::with_capacity(pairs.len()),
        };
        for (key, value) in pairs {
            let text = match &key.kind {
                NodeKind::Scalar(s) if s.resolve() == ScalarType::Str => s.text.as_str(),
                _ => {
                    self.error(
                        key.pos,
                        path,
                        format_args!("keys are field names; found {}", key.describe()),
                    );
                    continue;
                }
            };
            if let Some(first) = fields.entries.iter().find(|e| e.key == text) {
                let line = first.key_pos.line;
                self.error(
                    key.pos,
                    path,
                    format_args!("duplicate key '{text}' (first at line {line})"),
                );
                continue;
            }
            fields.entries.push(Entry {
                key: text,
                key_pos: key.pos,
                value,
                used: false,
            });
        }
        Some(fields)
    }

    /// Reports the fields nobody asked for.
    fn unknown_fields(&mut self, fields: &Fields<'_>, expected: &[&str]) {
        for e in fields.entries.iter().filter(|e| !e.used) {
            self.error(
                e.key_pos,
                &fields.path,
                format_args!("unknown field '{}' (expected {})", e.key, one_of(expected)),
            );
        }
    }

    fn required<'n>(&mut self, fields: &mut Fields<'n>, key: &str) -> Option<&'n Node> {
        let node = fields.get(key);
        if node.is_none() {
            self.error(
                fields.pos,
                &fields.path,
                format_args!("missing field '{key}'"),
            );
        }
        node
    }

    fn string<'n>(&mut self, node: &'n Node, path: &str) -> Option<&'n str> {
        match &node.kind {
            NodeKind::Scalar(s) if s.resolve() == ScalarType::Str => Some(&s.text),
            _ => {
                self.type_error(node, path, "a string");
                None
            }
        }
    }

    fn boolean(&mut self, node: &Node, path: &str) -> Option<bool> {
        match &node.kind {
            NodeKind::Scalar(s) if s.resolve() == ScalarType::Bool => {
                Some(s.text.eq_ignore_ascii_case("true"))
            }
            _ => {
                self.type_error(node, path, "true or false");
                None
            }
        }
    }

    fn list<'n>(&mut self, node: &'n Node, path: &str, may_be_empty: bool) -> Option<&'n [Node]> {
        let NodeKind::Seq(items) = &node.kind else {
            self.type_error(node, path, "a list");
            return None;
        };
        if items.is_empty() && !may_be_empty {
            self.error(node.pos, path, "empty list");
            return None;
        }
        Some(items)
    }

    /// A list of strings, each checked by `check`, without duplicates.
    fn string_list<T>(
        &mut self,
        node: &Node,
        path: &str,
        may_be_empty: bool,
        mut check: impl FnMut(&str) -> Result<T, String>,
    ) -> Option<Vec<T>> {
        let items = self.list(node, path, may_be_empty)?;
        let mut out = Vec::with_capacity(items.len());
        let mut seen: HashMap<&str, usize> = HashMap::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let item_path = index(path, i);
            let Some(text) = self.string(item, &item_path) else {
                ok = false;
                continue;
            };
            if let Some(line) = seen.get(text) {
                self.error(
                    item.pos,
                    &item_path,
                    format_args!("duplicate '{text}' (first at line {line})"),
                );
                ok = false;
                continue;
            }
            seen.insert(text, item.pos.line);
            match check(text) {
                Ok(v) => out.push(v),
                Err(message) => {
                    self.error(item.pos, &item_path, message);
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }
}

/// `text` as an item of a flow list: quoted unless it is plainly safe (`*` would be an alias).
fn flow_item(text: &str) -> String {
    let plain = text
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'))
        && text
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'/');
    if plain {
        text.to_owned()
    } else {
        format!("{text:?}")
    }
}

/// DNS-1123 label: lowercase letters, digits and '-', starting and ending with a letter or
/// digit, at most 63 characters (policy, rule and namespace names).
fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn check_name(s: &str) -> Result<String, String> {
    if is_dns_label(s) {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "'{s}': not a valid name (lowercase letters, digits and '-', at most 63, starting and ending with a letter or digit)"
        ))
    }
}

/// A Kubernetes object name (DNS-1123 subdomain): dot-separated parts of lowercase letters,
/// digits and '-', each starting and ending with a letter or digit, at most 253 in all.
fn check_object_name(s: &str) -> Result<String, String> {
    let part_ok = |p: &str| {
        !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !p.starts_with('-')
            && !p.ends_with('-')
    };
    if s.len() <= 253 && s.split('.').all(part_ok) {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "'{s}': not a valid name (a DNS subdomain: lowercase letters, digits, '-' and '.', at most 253, starting and ending with a letter or digit)"
        ))
    }
}

fn check_namespace_pattern(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'*');
    if ok {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "'{s}': not a namespace name or pattern (lowercase letters, digits, '-', and '*' wildcards)"
        ))
    }
}

/// A label name or value segment: at most 63 characters, alphanumerics with '-', '_', '.'
/// inside.
fn is_label_segment(s: &str) -> bool {
    s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && s.bytes().next().is_none_or(|b| b.is_ascii_alphanumeric())
        && s.bytes().last().is_none_or(|b| b.is_ascii_alphanumeric())
}

fn check_label_key(s: &str) -> Result<String, String> {
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    let prefix_ok =
        prefix.is_none_or(|p| !p.is_empty() && p.len() <= 253 && p.split('.').all(is_dns_label));
    if prefix_ok && !name.is_empty() && is_label_segment(name) {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "'{s}': not a valid label key ([prefix/]name: a DNS subdomain prefix, a name of at most 63 letters, digits, '-', '_', '.')"
        ))
    }
}

fn check_label_value(s: &str) -> Result<String, String> {
    if is_label_segment(s) {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "'{s}': not a valid label value (at most 63 letters, digits, '-', '_', '.', starting and ending with a letter or digit)"
        ))
    }
}

fn check_cgroup_path(s: &str) -> Result<PathBuf, String> {
    if !s.starts_with('/') {
        return Err(format!("'{s}': cgroup paths are absolute (start with '/')"));
    }
    if s.len() > MAX_GLOB_BYTES || s.contains('\0') {
        return Err(format!("'{s}': not a usable path"));
    }
    if s == "/" {
        return Err("'/': not a cgroup directory".into());
    }
    if s.ends_with('/') {
        return Err(format!("'{s}': trailing '/'"));
    }
    for component in s[1..].split('/') {
        match component {
            "" => return Err(format!("'{s}': empty path component ('//')")),
            "." | ".." => {
                return Err(format!(
                    "'{s}': '{component}' components are not allowed (give the real path)"
                ));
            }
            _ => {}
        }
    }
    Ok(PathBuf::from(s))
}

fn check_port(node: &Node, ck: &mut Checker, path: &str) -> Option<u16> {
    match &node.kind {
        NodeKind::Scalar(s) if s.resolve() == ScalarType::Int => {
            let unsigned = s.text.strip_prefix(['-', '+']).unwrap_or(&s.text);
            if !unsigned.bytes().all(|b| b.is_ascii_digit()) {
                ck.error(
                    node.pos,
                    path,
                    format_args!("port {}: write ports in decimal, 1 to 65535", s.text),
                );
                return None;
            }
            let value = if s.text.starts_with('-') {
                None
            } else {
                unsigned.parse::<u16>().ok().filter(|&p| p != 0)
            };
            if value.is_none() {
                ck.error(
                    node.pos,
                    path,
                    format_args!("port {} out of range (1 to 65535)", s.text),
                );
            }
            value
        }
        _ => {
            ck.type_error(node, path, "a port number");
            None
        }
    }
}

/// `modeMask`: an octal string, `"0o111"` or `"111"`, or a plain `0o111`; 1 to 4 digits.
fn check_mode_mask(node: &Node, ck: &mut Checker, path: &str) -> Option<u16> {
    let NodeKind::Scalar(s) = &node.kind else {
        ck.type_error(node, path, "an octal mode string like \"0o111\"");
        return None;
    };
    let kind = s.resolve();
    let digits = match kind {
        ScalarType::Str => s.text.strip_prefix("0o").unwrap_or(&s.text),
        ScalarType::Int if s.text.starts_with("0o") => &s.text[2..],
        ScalarType::Int => {
            ck.error(
                node.pos,
                path,
                format_args!(
                    "{}: write the mode as an octal string like \"0o{}\" (YAML 1.1 and 1.2 read a plain number differently)",
                    s.text, s.text
                ),
            );
            return None;
        }
        _ => {
            ck.type_error(node, path, "an octal mode string like \"0o111\"");
            return None;
        }
    };
    if digits.is_empty() || digits.len() > 4 || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b))
    {
        ck.error(
            node.pos,
            path,
            format_args!(
                "'{}': not an octal mode of at most 4 digits (0 to 0o7777)",
                s.text
            ),
        );
        return None;
    }
    match u16::from_str_radix(digits, 8) {
        Ok(0) => {
            ck.error(node.pos, path, "mode mask 0 matches nothing");
            None
        }
        Ok(v) => Some(v),
        Err(_) => None,
    }
}

/// Which document is being checked (the model's [`PolicyForm`] without the namespace).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Form {
    File,
    Cluster,
    Namespaced,
}

/// Where a destination prefix was first listed, to keep each prefix in one rule.
struct Owner {
    rule: String,
    line: usize,
}

struct PolicyChecker {
    ck: Checker,
    rule_names: HashMap<String, usize>,
    /// Keyed by (address, length): `Prefix` is not `Hash`.
    prefixes: HashMap<(IpAddr, u8), Owner>,
}

/// Checks a document and builds the policy; `None` when there were errors (and, on a path
/// that forgot to report one, the caller says the policy is incomplete rather than panic).
pub(crate) fn policy(root: &Node) -> (Option<Policy>, Vec<(Pos, String)>) {
    let mut pc = PolicyChecker {
        ck: Checker::default(),
        rule_names: HashMap::new(),
        prefixes: HashMap::new(),
    };
    let policy = pc.top(root);
    let errors = pc.ck.errors;
    if errors.is_empty() {
        (policy, errors)
    } else {
        (None, errors)
    }
}

impl PolicyChecker {
    fn top(&mut self, root: &Node) -> Option<Policy> {
        let mut f = self.ck.mapping(root, "")?;
        let form = self.form(&mut f);
        let meta = self
            .ck
            .required(&mut f, "metadata")
            .and_then(|n| self.metadata(n, form));
        let spec = self
            .ck
            .required(&mut f, "spec")
            .and_then(|n| self.spec(n, form));
        if form == Form::File {
            self.ck.unknown_fields(&f, TOP_FIELDS);
        } else {
            // The API server's view of the object; the daemon reports into it, never reads it.
            f.get("status");
            self.ck.unknown_fields(&f, RESOURCE_TOP_FIELDS);
        }
        let (name, description, namespace) = meta?;
        let (mut scope, rules) = spec?;
        let form = match form {
            Form::File => PolicyForm::File,
            Form::Cluster => PolicyForm::Cluster,
            Form::Namespaced => {
                scope.namespaces = namespace.clone().map(|ns| NamespaceScope {
                    include: vec![ns],
                    exclude: Vec::new(),
                });
                PolicyForm::Namespaced { namespace }
            }
        };
        Some(Policy {
            form,
            name,
            description,
            scope,
            rules,
        })
    }

    /// `apiVersion` and `kind`. With one of them wrong (reported), the other decides which
    /// rules the rest of the document is checked by.
    fn form(&mut self, f: &mut Fields<'_>) -> Form {
        let api = self
            .ck
            .required(f, "apiVersion")
            .and_then(|n| Some((n, self.ck.string(n, "apiVersion")?)));
        let resource_api = format!("{RESOURCE_GROUP}/{RESOURCE_VERSION}");
        let api_form = match api {
            Some((_, v)) if v == API_VERSION => Some(Form::File),
            Some((_, v)) if v == resource_api => Some(Form::Cluster),
            Some((n, v)) => {
                self.ck.error(
                    n.pos,
                    "apiVersion",
                    format_args!(
                        "unsupported apiVersion '{v}' (this sensor reads {API_VERSION} policy files and {resource_api} resources)"
                    ),
                );
                None
            }
            None => None,
        };
        let kind = self
            .ck
            .required(f, "kind")
            .and_then(|n| Some((n, self.ck.string(n, "kind")?)));
        let kind_form = kind.and_then(|(n, v)| {
            let form = match v {
                KIND => Form::File,
                CLUSTER_KIND => Form::Cluster,
                NAMESPACED_KIND => Form::Namespaced,
                _ if api_form == Some(Form::Cluster) => {
                    self.ck.error(
                        n.pos,
                        "kind",
                        format_args!("expected {CLUSTER_KIND} or {NAMESPACED_KIND}, found '{v}'"),
                    );
                    return None;
                }
                _ => {
                    self.ck
                        .error(n.pos, "kind", format_args!("expected {KIND}, found '{v}'"));
                    return None;
                }
            };
            Some((n, v, form))
        });
        match (api, api_form, kind_form) {
            (Some((n, _)), Some(Form::File), Some((_, v, form))) if form != Form::File => {
                self.ck.error(
                    n.pos,
                    "apiVersion",
                    format_args!(
                        "a {v} is a Kubernetes resource of apiVersion {resource_api} ({API_VERSION} is the policy file format, kind {KIND})"
                    ),
                );
                form
            }
            (_, Some(Form::Cluster), Some((n, v, Form::File))) => {
                self.ck.error(
                    n.pos,
                    "kind",
                    format_args!(
                        "expected {CLUSTER_KIND} or {NAMESPACED_KIND}, found '{v}' (kind {KIND} is a policy file, apiVersion {API_VERSION})"
                    ),
                );
                Form::Cluster
            }
            (_, _, Some((_, _, form))) => form,
            (_, api_form, None) => api_form.unwrap_or(Form::File),
        }
    }

    /// `metadata`: the name, the description, and a `SensorPolicy`'s namespace.
    fn metadata(
        &mut self,
        node: &Node,
        form: Form,
    ) -> Option<(String, Option<String>, Option<String>)> {
        let mut f = self.ck.mapping(node, "metadata")?;
        let name = self.ck.required(&mut f, "name").and_then(|n| {
            let s = self.ck.string(n, "metadata.name")?;
            let check = if form == Form::File {
                check_name
            } else {
                check_object_name
            };
            check(s)
                .map_err(|m| self.ck.error(n.pos, "metadata.name", m))
                .ok()
        });
        let mut ok = true;
        let description = f.get("description").and_then(|n| {
            let s = self.ck.string(n, "metadata.description");
            ok &= s.is_some();
            s.map(str::to_owned)
        });
        if form == Form::File {
            self.ck.unknown_fields(&f, METADATA_FIELDS);
            ok.then_some(())?;
            return Some((name?, description, None));
        }
        let namespace = f.get("namespace").and_then(|n| {
            let path = "metadata.namespace";
            if form == Form::Cluster {
                self.ck.error(
                    f.key_pos("namespace").unwrap_or(n.pos),
                    path,
                    format_args!(
                        "a {CLUSTER_KIND} is cluster-scoped and has no namespace (a {NAMESPACED_KIND} applies to one namespace)"
                    ),
                );
                ok = false;
                return None;
            }
            let checked = self
                .ck
                .string(n, path)
                .map(|s| check_name(s).map_err(|m| self.ck.error(n.pos, path, m)));
            ok &= matches!(checked, Some(Ok(_)));
            checked?.ok()
        });
        // The API server's fields: whatever it wrote is fine.
        for field in OBJECT_META_FIELDS {
            f.get(field);
        }
        let mut expected = RESOURCE_METADATA_FIELDS.to_vec();
        expected.extend_from_slice(OBJECT_META_FIELDS);
        self.ck.unknown_fields(&f, &expected);
        ok.then_some(())?;
        Some((name?, description, namespace))
    }

    fn spec(&mut self, node: &Node, form: Form) -> Option<(Scope, Vec<Rule>)> {
        let mut f = self.ck.mapping(node, "spec")?;
        let scope = if form == Form::Namespaced {
            // Optional: without it, every pod of the namespace.
            match f.get("scope") {
                None => Some(Scope::default()),
                Some(n) => self.namespaced_scope(n),
            }
        } else {
            self.ck
                .required(&mut f, "scope")
                .and_then(|n| self.scope(n, form))
        };
        let rules = self
            .ck
            .required(&mut f, "rules")
            .and_then(|n| self.rules(n));
        self.ck.unknown_fields(&f, SPEC_FIELDS);
        Some((scope?, rules?))
    }

    /// A policy file's or a `SensorClusterPolicy`'s scope (no cgroups in the latter).
    fn scope(&mut self, node: &Node, form: Form) -> Option<Scope> {
        let path = "spec.scope";
        let mut f = self.ck.mapping(node, path)?;
        let mut ok = true;
        let namespaces = f
            .get("namespaces")
            .map(|n| self.namespaces(n))
            .map(|r| r.ok_or(()));
        let selector = f.get("podSelector").map(|n| self.selector(n).ok_or(()));
        let cgroups = match (f.get("cgroups"), f.key_pos("cgroups")) {
            (Some(_), Some(pos)) if form == Form::Cluster => {
                self.ck.error(
                    pos,
                    &f.field_path("cgroups"),
                    format_args!(
                        "cgroup roots are node configuration: a {CLUSTER_KIND}, written in the API, must not attach programs to host cgroups (give them to sensor run --scope-cgroup or a policy file on the node)"
                    ),
                );
                Some(Err(()))
            }
            (n, _) => n.map(|n| {
                self.ck
                    .string_list(n, &f.field_path("cgroups"), false, check_cgroup_path)
                    .ok_or(())
            }),
        };
        if let Some(pos) = f.key_pos("podSelector")
            && !f.has("namespaces")
        {
            self.ck.error(
                pos,
                path,
                "podSelector needs namespaces (it selects pods within them)",
            );
            ok = false;
        }
        // With an unknown field (a misspelt `namespaces`?) or a podSelector without
        // namespaces, that error says it all.
        if ok && !f.has("namespaces") && !f.has("cgroups") && f.entries.iter().all(|e| e.used) {
            let give = if form == Form::Cluster {
                "give namespaces"
            } else {
                "give namespaces (Kubernetes) and/or cgroups (plain host)"
            };
            self.ck.error(
                f.pos,
                path,
                format_args!("the scope selects nothing: {give}"),
            );
            ok = false;
        }
        self.ck.unknown_fields(&f, SCOPE_FIELDS);
        let namespaces = namespaces.transpose().ok()?;
        let pod_selector = selector.transpose().ok()?;
        let cgroups = cgroups.transpose().ok()?.unwrap_or_default();
        ok.then_some(Scope {
            namespaces,
            pod_selector,
            cgroups,
        })
    }

    /// A `SensorPolicy`'s scope: its own namespace, narrowed by `podSelector` at most.
    fn namespaced_scope(&mut self, node: &Node) -> Option<Scope> {
        let mut f = self.ck.mapping(node, "spec.scope")?;
        let mut ok = true;
        for field in ["namespaces", "cgroups"] {
            if let (Some(_), Some(pos)) = (f.get(field), f.key_pos(field)) {
                self.ck.error(
                    pos,
                    &f.field_path(field),
                    format_args!(
                        "a {NAMESPACED_KIND} applies to the pods of its own namespace; use podSelector to narrow it"
                    ),
                );
                ok = false;
            }
        }
        let selector = f.get("podSelector").map(|n| self.selector(n).ok_or(()));
        self.ck.unknown_fields(&f, NAMESPACED_SCOPE_FIELDS);
        let pod_selector = selector.transpose().ok()?;
        ok.then_some(Scope {
            namespaces: None,
            pod_selector,
            cgroups: Vec::new(),
        })
    }

    fn namespaces(&mut self, node: &Node) -> Option<NamespaceScope> {
        let path = "spec.scope.namespaces";
        let mut f = self.ck.mapping(node, path)?;
        let include = self.ck.required(&mut f, "include").and_then(|n| {
            self.ck
                .string_list(n, &f.field_path("include"), false, check_namespace_pattern)
        });
        let exclude = match f.get("exclude") {
            None => Some(Vec::new()),
            Some(n) => {
                self.ck
                    .string_list(n, &f.field_path("exclude"), true, check_namespace_pattern)
            }
        };
        self.ck.unknown_fields(&f, NAMESPACES_FIELDS);
        Some(NamespaceScope {
            include: include?,
            exclude: exclude?,
        })
    }

    fn selector(&mut self, node: &Node) -> Option<LabelSelector> {
        let path = "spec.scope.podSelector";
        let mut f = self.ck.mapping(node, path)?;
        let mut ok = true;
        let mut match_labels = BTreeMap::new();
        if let Some(n) = f.get("matchLabels") {
            let lpath = f.field_path("matchLabels");
            match self.ck.mapping(n, &lpath) {
                None => ok = false,
                Some(labels) => {
                    for e in &labels.entries {
                        let kpath = join(&lpath, e.key);
                        if let Err(m) = check_label_key(e.key) {
                            self.ck.error(e.key_pos, &kpath, m);
                            ok = false;
                        }
                        match self.ck.string(e.value, &kpath).map(check_label_value) {
                            Some(Ok(v)) => {
                                match_labels.insert(e.key.to_owned(), v);
                            }
                            Some(Err(m)) => {
                                self.ck.error(e.value.pos, &kpath, m);
                                ok = false;
                            }
                            None => ok = false,
                        }
                    }
                }
            }
        }
        let mut match_expressions = Vec::new();
        if let Some(n) = f.get("matchExpressions") {
            let epath = f.field_path("matchExpressions");
            match self.ck.list(n, &epath, true) {
                None => ok = false,
                Some(items) => {
                    for (i, item) in items.iter().enumerate() {
                        match self.requirement(item, &index(&epath, i)) {
                            Some(r) => match_expressions.push(r),
                            None => ok = false,
                        }
                    }
                }
            }
        }
        self.ck.unknown_fields(&f, SELECTOR_FIELDS);
        if ok && match_labels.is_empty() && match_expressions.is_empty() {
            self.ck.error(
                f.pos,
                path,
                "an empty selector selects every pod: omit podSelector, or give matchLabels or matchExpressions",
            );
            ok = false;
        }
        ok.then_some(LabelSelector {
            match_labels,
            match_expressions,
        })
    }

    fn requirement(&mut self, node: &Node, path: &str) -> Option<LabelRequirement> {
        let mut f = self.ck.mapping(node, path)?;
        let key = self.ck.required(&mut f, "key").and_then(|n| {
            let s = self.ck.string(n, &join(path, "key"))?;
            check_label_key(s)
                .map_err(|m| self.ck.error(n.pos, &join(path, "key"), m))
                .ok()
        });
        let operator_node = self.ck.required(&mut f, "operator");
        let operator = operator_node.and_then(|n| {
            let s = self.ck.string(n, &join(path, "operator"))?;
            let op = match s {
                "In" => LabelOperator::In,
                "NotIn" => LabelOperator::NotIn,
                "Exists" => LabelOperator::Exists,
                "DoesNotExist" => LabelOperator::DoesNotExist,
                _ => {
                    self.ck.error(
                        n.pos,
                        &join(path, "operator"),
                        format_args!(
                            "unknown operator '{s}' (expected In, NotIn, Exists or DoesNotExist)"
                        ),
                    );
                    return None;
                }
            };
            Some(op)
        });
        let values_node = f.get("values");
        let values = match values_node {
            None => Some(Vec::new()),
            Some(n) => self
                .ck
                .string_list(n, &join(path, "values"), true, check_label_value),
        };
        self.ck.unknown_fields(&f, REQUIREMENT_FIELDS);
        let (key, operator, values) = (key?, operator?, values?);
        let needs_values = matches!(operator, LabelOperator::In | LabelOperator::NotIn);
        if needs_values && values.is_empty() {
            let pos = values_node.map_or(f.pos, |n| n.pos);
            self.ck.error(
                pos,
                &join(path, "values"),
                "In and NotIn need at least one value",
            );
            return None;
        }
        if !needs_values && !values.is_empty() {
            let pos = values_node.map_or(f.pos, |n| n.pos);
            self.ck.error(
                pos,
                &join(path, "values"),
                "Exists and DoesNotExist take no values",
            );
            return None;
        }
        Some(LabelRequirement {
            key,
            operator,
            values,
        })
    }

    fn rules(&mut self, node: &Node) -> Option<Vec<Rule>> {
        let items = self.ck.list(node, "spec.rules", false)?;
        let mut rules = Vec::with_capacity(items.len());
        let mut ok = true;
        // Each kind's rules fill one kernel rule set.
        let (mut chmod_rules, mut privilege_rules) = (0, 0);
        for (i, item) in items.iter().enumerate() {
            match self.rule(item, &index("spec.rules", i)) {
                Some(r) => {
                    let (n, kind) = match r.kind {
                        RuleKind::Chmod(_) => (&mut chmod_rules, "chmod"),
                        RuleKind::Privilege(_) => (&mut privilege_rules, "privilege"),
                        RuleKind::Metadata(_) => {
                            rules.push(r);
                            continue;
                        }
                    };
                    *n += 1;
                    if *n == MAX_KERNEL_RULES + 1 {
                        self.ck.error(
                            item.pos,
                            &index("spec.rules", i),
                            format_args!("at most {MAX_KERNEL_RULES} {kind} rules per policy"),
                        );
                        ok = false;
                    }
                    rules.push(r);
                }
                None => ok = false,
            }
        }
        ok.then_some(rules)
    }

    fn rule(&mut self, node: &Node, path: &str) -> Option<Rule> {
        let mut f = self.ck.mapping(node, path)?;
        let name = self.ck.required(&mut f, "name").and_then(|n| {
            let npath = join(path, "name");
            let s = self.ck.string(n, &npath)?;
            if let Err(m) = check_name(s) {
                self.ck.error(n.pos, &npath, m);
                return None;
            }
            if let Some(line) = self.rule_names.get(s) {
                self.ck.error(
                    n.pos,
                    &npath,
                    format_args!("duplicate rule name '{s}' (first at line {line})"),
                );
                return None;
            }
            self.rule_names.insert(s.to_owned(), n.pos.line);
            Some(s.to_owned())
        });
        let action = self.ck.required(&mut f, "action").and_then(|n| {
            let apath = join(path, "action");
            match self.ck.string(n, &apath)? {
                "enforce" => Some(Action::Enforce),
                "audit" => Some(Action::Audit),
                other => {
                    self.ck.error(
                        n.pos,
                        &apath,
                        format_args!("unknown action '{other}' (expected enforce or audit)"),
                    );
                    None
                }
            }
        });
        let rule_type = self.ck.required(&mut f, "type").and_then(|n| {
            let tpath = join(path, "type");
            let s = self.ck.string(n, &tpath)?;
            if RULE_TYPES.contains(&s) {
                Some(s)
            } else {
                self.ck.error(
                    n.pos,
                    &tpath,
                    format_args!("unknown rule type '{s}' (expected {})", one_of(RULE_TYPES)),
                );
                None
            }
        });

        // Fields of another rule type, and fields of no rule type at all.
        let own = rule_type.map(type_fields).unwrap_or_default();
        let mut foreign = false;
        for e in f
            .entries
            .iter()
            .filter(|e| !e.used && !own.contains(&e.key))
        {
            let owner = RULE_TYPES.iter().find(|t| type_fields(t).contains(&e.key));
            match (owner, rule_type) {
                (Some(owner), Some(t)) => {
                    self.ck.error(
                        e.key_pos,
                        path,
                        format_args!("'{}' is a field of {owner} rules, not of {t} rules", e.key),
                    );
                    foreign = true;
                }
                // Without a valid type, only fields of no type are reported.
                (Some(_), None) => {}
                (None, _) => {
                    let mut expected = RULE_COMMON_FIELDS.to_vec();
                    if rule_type.is_some() {
                        expected.extend_from_slice(own);
                    } else {
                        for t in RULE_TYPES {
                            expected.extend_from_slice(type_fields(t));
                        }
                    }
                    let what = rule_type.map_or(String::new(), |t| format!(" of a {t} rule"));
                    self.ck.error(
                        e.key_pos,
                        path,
                        format_args!(
                            "unknown field '{}'{what} (expected {})",
                            e.key,
                            one_of(&expected)
                        ),
                    );
                    foreign = true;
                }
            }
        }

        let kind = match rule_type? {
            "metadata" => self.metadata_rule(&mut f, path, name.as_deref()),
            "chmod" => self.chmod_rule(&mut f, path),
            _ => self.privilege_rule(&mut f, path),
        };
        if foreign {
            return None;
        }
        Some(Rule {
            name: name?,
            action: action?,
            kind: kind?,
        })
    }

    fn metadata_rule(
        &mut self,
        f: &mut Fields<'_>,
        path: &str,
        rule_name: Option<&str>,
    ) -> Option<RuleKind> {
        let destinations = self
            .ck
            .required(f, "destinations")
            .and_then(|n| self.destinations(n, &join(path, "destinations"), rule_name));
        let ports = match f.get("ports") {
            None => Some(Vec::new()),
            Some(n) => self.ports(n, &join(path, "ports")),
        };
        Some(RuleKind::Metadata(MetadataRule {
            destinations: destinations?,
            ports: ports?,
        }))
    }

    fn destinations(
        &mut self,
        node: &Node,
        path: &str,
        rule_name: Option<&str>,
    ) -> Option<Vec<DestinationSpec>> {
        let items = self.ck.list(node, path, false)?;
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let ipath = index(path, i);
            let Some(text) = self.ck.string(item, &ipath) else {
                ok = false;
                continue;
            };
            let (spec, prefixes) = if text == "default" {
                let prefixes = METADATA_ENDPOINTS
                    .iter()
                    .filter_map(|(_, cidr)| cidr.parse::<Prefix>().ok())
                    .collect();
                (DestinationSpec::Default, prefixes)
            } else {
                match text.parse::<Prefix>() {
                    Ok(p) => (DestinationSpec::Cidr(p), vec![p]),
                    Err(e) => {
                        let hint = match e {
                            PrefixError::Address(_) => {
                                " (give 'default' or an IPv4/IPv6 address or CIDR prefix)"
                            }
                            _ => "",
                        };
                        self.ck.error(item.pos, &ipath, format_args!("{e}{hint}"));
                        ok = false;
                        continue;
                    }
                }
            };
            for prefix in prefixes {
                if let Some(owner) = self.prefixes.get(&(prefix.addr, prefix.len)) {
                    let what = if spec == DestinationSpec::Default {
                        format!("'default' includes {prefix}, which")
                    } else {
                        format!("{prefix}")
                    };
                    self.ck.error(
                        item.pos,
                        &ipath,
                        format_args!(
                            "{what} is already listed by rule '{}' (line {}); a destination belongs to one rule",
                            owner.rule, owner.line
                        ),
                    );
                    ok = false;
                } else {
                    self.prefixes.insert(
                        (prefix.addr, prefix.len),
                        Owner {
                            rule: rule_name.unwrap_or("?").to_owned(),
                            line: item.pos.line,
                        },
                    );
                }
            }
            out.push(spec);
        }
        ok.then_some(out)
    }

    fn ports(&mut self, node: &Node, path: &str) -> Option<Vec<u16>> {
        let items = self.ck.list(node, path, false)?;
        let mut out: Vec<u16> = Vec::with_capacity(items.len());
        let mut first_line: HashMap<u16, usize> = HashMap::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let ipath = index(path, i);
            if i == MAX_PORTS {
                self.ck.error(
                    item.pos,
                    &ipath,
                    format_args!("at most {MAX_PORTS} ports per rule"),
                );
                ok = false;
            }
            match check_port(item, &mut self.ck, &ipath) {
                Some(p) => {
                    if let Some(line) = first_line.get(&p) {
                        self.ck.error(
                            item.pos,
                            &ipath,
                            format_args!("duplicate port {p} (first at line {line})"),
                        );
                        ok = false;
                    } else {
                        first_line.insert(p, item.pos.line);
                        out.push(p);
                    }
                }
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn chmod_rule(&mut self, f: &mut Fields<'_>, path: &str) -> Option<RuleKind> {
        let mut ok = true;
        let mut flag = |this: &mut Self, key: &str| -> Option<(bool, Pos)> {
            let n = f.get(key)?;
            let v = this.ck.boolean(n, &join(path, key));
            ok &= v.is_some();
            v.map(|v| (v, n.pos))
        };
        let setid = flag(self, "setid");
        let all = flag(self, "all");
        let mode_mask = f.get("modeMask").map(|n| {
            let v = check_mode_mask(n, &mut self.ck, &join(path, "modeMask"));
            ok &= v.is_some();
            v
        });
        let paths = match f.get("paths") {
            None => Vec::new(),
            Some(n) => match self
                .ck
                .string_list(n, &join(path, "paths"), false, Glob::new)
            {
                Some(p) => p,
                None => {
                    ok = false;
                    Vec::new()
                }
            },
        };
        if !ok {
            return None;
        }
        let setid_on = setid.is_some_and(|(v, _)| v);
        let mode_mask = mode_mask.flatten();
        match all {
            Some((true, pos)) if setid_on || mode_mask.is_some() => {
                self.ck.error(
                    pos,
                    &join(path, "all"),
                    "all: true matches every chmod; remove setid and modeMask",
                );
                return None;
            }
            Some((true, _)) => {}
            _ if !setid_on && mode_mask.is_none() => {
                self.ck.error(
                    f.pos,
                    path,
                    "the chmod rule matches nothing: set setid: true, modeMask, or all: true",
                );
                return None;
            }
            _ => {}
        }
        Some(RuleKind::Chmod(KernelRule {
            setid: setid_on,
            mode_mask,
            all: all.is_some_and(|(v, _)| v),
            paths,
        }))
    }

    fn privilege_rule(&mut self, f: &mut Fields<'_>, path: &str) -> Option<RuleKind> {
        let names: Vec<&str> = Raise::ALL.iter().map(|r| r.as_str()).collect();
        let raises = self.ck.required(f, "raises").and_then(|n| {
            self.ck.string_list(n, &join(path, "raises"), false, |s| {
                Raise::ALL
                    .iter()
                    .find(|r| r.as_str() == s)
                    .copied()
                    .ok_or_else(|| format!("unknown raise '{s}' (expected {})", one_of(&names)))
            })
        });
        Some(RuleKind::Privilege(PrivilegeRule { raises: raises? }))
    }
}
