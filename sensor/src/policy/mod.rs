//! The rules `sensor run` enforces: from a policy file (`--policy`), or from `--mode` and the
//! built-in default policy; what a reload may change; and [`Shared`], the rules in force as one
//! snapshot that every reader (the pipeline naming events, the API, the metrics) takes whole and
//! the [`reload::Reloader`] replaces whole.

pub mod reload;
pub mod resources;

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc, PoisonError, RwLock,
        atomic::{AtomicU64, Ordering},
    },
};

use sensor_common::{Action, KernelRule, rule_flags};

use sensor_policy::{self as parser, LabelSelector, NamespaceScope, PolicyError};

use crate::kernel::DestEntry;

/// The rules in force, shared: readers take an `Arc` of the whole snapshot (never half of an
/// old and half of a new policy), the reloader swaps it.
#[derive(Clone)]
pub struct Shared(Arc<Inner>);

struct Inner {
    active: RwLock<Arc<ActiveRules>>,
    counters: Counters,
}

/// The policy's counters.
#[derive(Debug, Default)]
pub struct Counters {
    /// Policy versions applied (1 = the one loaded at start).
    pub generation: AtomicU64,
    /// Reloads refused (invalid file, or a change that needs a restart).
    pub reload_failures: AtomicU64,
    /// Pod cgroups exempted now (pods outside the policy's namespace/label scope).
    pub exemptions: AtomicU64,
}

impl Shared {
    /// The rules loaded at start: generation 1.
    pub fn new(rules: ActiveRules) -> Self {
        let counters = Counters::default();
        counters.generation.store(1, Ordering::Relaxed);
        Self(Arc::new(Inner {
            active: RwLock::new(Arc::new(rules)),
            counters,
        }))
    }

    /// The rules in force now.
    pub fn current(&self) -> Arc<ActiveRules> {
        Arc::clone(&self.0.active.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Make `rules` the rules in force (after the kernel maps hold them); returns the new
    /// generation.
    pub fn replace(&self, rules: ActiveRules) -> u64 {
        *self
            .0
            .active
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(rules);
        self.0.counters.generation.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn counters(&self) -> &Counters {
        &self.0.counters
    }

    /// The generation in force now.
    pub fn generation(&self) -> u64 {
        self.0.counters.generation.load(Ordering::Relaxed)
    }
}

/// What is active in the kernel's destination tries, and how events name it.
#[derive(Clone, Debug, PartialEq)]
pub struct ActiveRules {
    /// `policy` in events.
    pub policy: String,
    /// Where it came from: the file, or "built-in default".
    pub source: String,
    /// The policy's YAML as loaded (`sensor policy show`).
    pub text: String,
    pub entries: Vec<DestEntry>,
    /// Name of each entry, by its kernel rule index (`rule` in connect events).
    pub names: Vec<String>,
    /// Scope roots the policy adds to `--scope-cgroup`.
    pub scope_cgroups: Vec<PathBuf>,
    /// Kubernetes scope: pods outside it (by namespace, then labels) are exempted.
    pub namespaces: Option<NamespaceScope>,
    pub pod_selector: Option<LabelSelector>,
    /// chmod rules in file order; a rule's position is the index the kernel reports.
    pub chmod: Vec<parser::ChmodEntry>,
    /// Name of each chmod rule, by that index.
    pub chmod_names: Vec<String>,
    /// Privilege rules in file order; a rule's position is the index the kernel reports.
    pub privilege: Vec<parser::PrivilegeEntry>,
    /// Name of each privilege rule, by that index.
    pub privilege_names: Vec<String>,
    /// What of the policy no tier enforces in the kernel (logged at load).
    pub not_enforced: Vec<String>,
}

impl ActiveRules {
    /// The chmod rules as the kernel evaluates them; rules with `paths` are marked for
    /// userspace (the tracepoint tier cannot match paths in the kernel).
    pub fn kernel_chmod_rules(&self) -> Vec<KernelRule> {
        self.chmod
            .iter()
            .enumerate()
            .map(|(i, c)| KernelRule {
                rule: i as u32,
                action: kernel_action(c.action) as u32,
                mode_bits: u32::from(c.mode_bits),
                flags: if c.match_all {
                    rule_flags::MATCH_ALL
                } else {
                    0
                } | if c.paths.is_empty() {
                    0
                } else {
                    rule_flags::USERSPACE_PATHS
                },
            })
            .collect()
    }
}

impl ActiveRules {
    /// The privilege rules as the kernel evaluates them (`mode_bits` = the raise kinds; each
    /// program matches the kinds it sees: the kill tier only set*id to uid/gid 0).
    pub fn kernel_privilege_rules(&self) -> Vec<KernelRule> {
        self.privilege
            .iter()
            .enumerate()
            .map(|(i, p)| KernelRule {
                rule: i as u32,
                action: kernel_action(p.action) as u32,
                mode_bits: p.raises,
                flags: 0,
            })
            .collect()
    }
}

fn kernel_action(a: parser::Action) -> Action {
    match a {
        parser::Action::Enforce => Action::Enforce,
        parser::Action::Audit => Action::Audit,
    }
}

/// The embedded default policy (no `--policy`); `--mode` sets the action of all its rules.
pub fn from_default(mode: Option<Action>) -> ActiveRules {
    let mut rules = from_policy(&parser::default_policy(), "built-in default");
    if let Some(action) = mode {
        for e in &mut rules.entries {
            e.action = action;
        }
        let action = match action {
            Action::Audit => parser::Action::Audit,
            _ => parser::Action::Enforce,
        };
        for c in &mut rules.chmod {
            c.action = action;
        }
        for p in &mut rules.privilege {
            p.action = action;
        }
    }
    rules
}

/// Read, validate and compile a policy file.
pub fn from_file(path: &Path) -> Result<ActiveRules, Vec<PolicyError>> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut rules = from_policy(&parser::parse_file(path)?, &path.display().to_string());
    rules.text = text;
    Ok(rules)
}

fn from_policy(policy: &parser::Policy, source: &str) -> ActiveRules {
    let compiled = parser::compile(policy);
    let mut entries = Vec::new();
    let mut names = Vec::new();
    let mut not_enforced = Vec::new();
    for c in compiled.cidr_v4.iter().chain(&compiled.cidr_v6) {
        let action = kernel_action(c.action);
        entries.push(DestEntry {
            prefix: c.prefix,
            action,
            rule: entries.len() as u32,
            ports: c.ports.clone(),
        });
        names.push(c.destination.clone());
    }
    for c in compiled.chmod.iter().filter(|c| !c.paths.is_empty()) {
        if c.action == parser::Action::Enforce {
            not_enforced.push(format!(
                "chmod rule {} (it has paths: matched in userspace and reported as audited; the tracepoint tier kills only for rules without paths)",
                compiled.rule_names[c.rule as usize]
            ));
        }
    }
    ActiveRules {
        policy: compiled.policy.clone(),
        source: source.to_owned(),
        text: parser::DEFAULT_POLICY_YAML.to_owned(),
        entries,
        names,
        scope_cgroups: compiled.scope.cgroups.clone(),
        namespaces: compiled.scope.namespaces.clone(),
        pod_selector: compiled.scope.pod_selector.clone(),
        chmod_names: compiled
            .chmod
            .iter()
            .map(|c| compiled.rule_names[c.rule as usize].clone())
            .collect(),
        chmod: compiled.chmod.clone(),
        privilege_names: compiled
            .privilege
            .iter()
            .map(|p| compiled.rule_names[p.rule as usize].clone())
            .collect(),
        privilege: compiled.privilege.clone(),
        not_enforced,
    }
}

/// Why a reload is refused although the file is valid.
pub fn reload_refusal(active: &ActiveRules, new: &ActiveRules) -> Option<String> {
    (active.scope_cgroups != new.scope_cgroups)
        .then(|| "scope.cgroups changed: attaching to other cgroups needs a restart".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sensor_common::Raise;

    fn write(name: &str, text: &str) -> PathBuf {
        let p =
            std::env::temp_dir().join(format!("sensor-rules-{name}-{}.yaml", std::process::id()));
        std::fs::write(&p, text).unwrap();
        p
    }

    const POLICY: &str = "apiVersion: sensor/v1\nkind: Policy\nmetadata: {name: web}\nspec:\n  scope:\n    cgroups: [/sys/fs/cgroup/unified/x]\n  rules:\n    - name: imds\n      type: metadata\n      action: audit\n      destinations: [169.254.169.254/32, \"fd00:ec2::254/128\"]\n";

    #[test]
    fn a_policy_becomes_named_entries_with_their_actions() {
        let p = write("ok", POLICY);
        let r = from_file(&p).unwrap();
        std::fs::remove_file(&p).unwrap();
        assert_eq!(r.policy, "web");
        assert_eq!(r.entries.len(), 2);
        assert!(r.entries.iter().all(|e| e.action == Action::Audit));
        assert_eq!(r.entries.iter().map(|e| e.rule).collect::<Vec<_>>(), [0, 1]);
        assert_eq!(r.names, ["imds", "imds"]);
        assert_eq!(r.scope_cgroups, [PathBuf::from("/sys/fs/cgroup/unified/x")]);
        assert!(reload_refusal(&r, &r).is_none());
        let moved = ActiveRules {
            scope_cgroups: vec![PathBuf::from("/y")],
            ..r.clone()
        };
        assert!(reload_refusal(&r, &moved).is_some());
    }

    #[test]
    fn without_a_file_the_default_policy_applies_and_the_mode_sets_its_actions() {
        let r = from_default(None);
        assert_eq!(
            (r.policy.as_str(), r.source.as_str()),
            ("default", "built-in default")
        );
        assert_eq!(r.entries.len(), 7);
        assert_eq!(r.names[0], "metadata-imds-v4");
        assert!(r.entries.iter().all(|e| e.action == Action::Enforce));
        assert!(
            r.namespaces
                .as_ref()
                .is_some_and(|n| !n.matches("kube-system") && n.matches("shop"))
        );
        assert!(
            from_default(Some(Action::Audit))
                .entries
                .iter()
                .all(|e| e.action == Action::Audit)
        );
    }

    #[test]
    fn privilege_rules_reach_the_kernel_with_every_raise_kind() {
        let text = POLICY.replace(
            "    - name: imds\n",
            "    - name: no-root\n      type: privilege\n      action: enforce\n      raises: [capset, setgid-root, setuid-root]\n    - name: imds\n",
        );
        let p = write("priv", &text);
        let r = from_file(&p).unwrap();
        std::fs::remove_file(&p).unwrap();
        assert_eq!(r.privilege_names, ["no-root"]);
        let k = r.kernel_privilege_rules();
        assert_eq!(k.len(), 1);
        assert_eq!(
            (k[0].rule, k[0].action, k[0].mode_bits),
            (
                0,
                Action::Enforce as u32,
                (Raise::SetuidRoot as u32) | (Raise::SetgidRoot as u32) | (Raise::Capset as u32)
            )
        );
    }

    #[test]
    fn a_bad_file_gives_located_errors() {
        let p = write("bad", &POLICY.replace("action: audit", "action: maybe"));
        let errs = from_file(&p).unwrap_err();
        std::fs::remove_file(&p).unwrap();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].line, 10, "{}", errs[0]);
    }
}
