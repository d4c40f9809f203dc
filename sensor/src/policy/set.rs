//! Several policies in force at once: each holds a slot (its bit in the kernel's masks) for as
//! long as it exists, so that adding, changing or removing one never touches another's bit. The
//! kernel tables are the merge of every slot: a destination prefix carries the policies that
//! cover it (its own rules and those of every shorter prefix that contains it) per action and
//! port; chmod and privilege rules are concatenated, each tagged with its policy's bit.
//! ARCHITECTURE.md ("Policies") tells the whole story.

use std::{collections::BTreeMap, net::IpAddr};

use sensor_common::{MAX_KERNEL_RULES, MAX_POLICIES, MAX_RULE_PORTS};
use sensor_policy::{
    self as parser, Action, ChmodEntry, LabelSelector, NamespaceScope, PolicyForm, PrivilegeEntry,
    destinations::Prefix,
};

use crate::kernel::DestEntry;

/// One policy in force.
#[derive(Clone, Debug, PartialEq)]
pub struct InForce {
    /// How events, metrics and status name it: `name`, or `namespace/name` for a namespaced
    /// policy.
    pub name: String,
    pub form: PolicyForm,
    /// Where it came from: the file, "built-in default", or the resource.
    pub source: String,
    /// Its text as loaded (`sensor policy show`).
    pub text: String,
    /// Kubernetes scope: the pods it applies to (namespaced: its own namespace only).
    pub namespaces: Option<NamespaceScope>,
    pub pod_selector: Option<LabelSelector>,
    /// Destination rules, each with the name events report.
    pub dests: Vec<parser::CidrRule>,
    pub rule_names: Vec<String>,
    pub chmod: Vec<ChmodEntry>,
    pub privilege: Vec<PrivilegeEntry>,
}

impl InForce {
    pub fn new(policy: &parser::Policy, source: &str, text: &str) -> Self {
        let compiled = parser::compile(policy);
        let (name, namespaces) = match &policy.form {
            PolicyForm::Namespaced { namespace } => {
                let ns = namespace.clone().unwrap_or_else(|| "default".to_owned());
                (
                    format!("{ns}/{}", policy.name),
                    Some(NamespaceScope {
                        include: vec![ns],
                        exclude: Vec::new(),
                    }),
                )
            }
            _ => (policy.name.clone(), compiled.scope.namespaces.clone()),
        };
        Self {
            name,
            form: policy.form.clone(),
            source: source.to_owned(),
            text: text.to_owned(),
            namespaces,
            pod_selector: compiled.scope.pod_selector.clone(),
            dests: compiled
                .cidr_v4
                .iter()
                .chain(&compiled.cidr_v6)
                .cloned()
                .collect(),
            rule_names: compiled.rule_names.clone(),
            chmod: compiled.chmod.clone(),
            privilege: compiled.privilege.clone(),
        }
    }

    /// Whether it applies to the processes of cgroups no known pod claims (host processes, pods
    /// not seen yet): file and cluster policies do, a namespaced one never.
    pub fn outside_pods(&self) -> bool {
        !matches!(self.form, PolicyForm::Namespaced { .. })
    }

    /// Whether it applies to a pod of `namespace` with `labels`.
    pub fn holds_pod(&self, namespace: &str, labels: &BTreeMap<String, String>) -> bool {
        self.namespaces
            .as_ref()
            .is_none_or(|n| n.matches(namespace))
            && self.pod_selector.as_ref().is_none_or(|s| s.matches(labels))
    }

    /// What of it the kill tier does not enforce in the kernel: enforcing chmod rules with
    /// `paths` (matched in userspace, reported as audited).
    pub fn not_enforced(&self) -> Vec<String> {
        self.chmod
            .iter()
            .filter(|c| !c.paths.is_empty() && c.action == Action::Enforce)
            .map(|c| {
                format!(
                    "chmod rule {} of {} (it has paths: matched in userspace and reported as audited; the tracepoint tier kills only for rules without paths)",
                    self.rule_names[c.rule as usize], self.name
                )
            })
            .collect()
    }

    /// The names events give its rules, with their actions, in file order: a metadata rule
    /// under the names of its destinations (`metadata-imds-v4`, ... for `default`).
    pub fn reported_rules(&self) -> Vec<(String, Action)> {
        let mut out: Vec<(String, Action)> = Vec::new();
        for (index, name) in self.rule_names.iter().enumerate() {
            let dests: Vec<&parser::CidrRule> = self
                .dests
                .iter()
                .filter(|d| d.rule as usize == index)
                .collect();
            let action = self
                .chmod
                .iter()
                .find(|c| c.rule as usize == index)
                .map(|c| c.action)
                .or_else(|| {
                    self.privilege
                        .iter()
                        .find(|p| p.rule as usize == index)
                        .map(|p| p.action)
                });
            match action {
                Some(action) => out.push((name.clone(), action)),
                None => {
                    for d in dests {
                        if !out.iter().any(|(n, _)| *n == d.destination) {
                            out.push((d.destination.clone(), d.action));
                        }
                    }
                }
            }
        }
        out
    }

    /// "enforce", "audit" or "mixed": what its rules do.
    pub fn mode(&self) -> &'static str {
        let actions: Vec<Action> = self
            .dests
            .iter()
            .map(|d| d.action)
            .chain(self.chmod.iter().map(|c| c.action))
            .chain(self.privilege.iter().map(|p| p.action))
            .collect();
        if actions.iter().all(|a| *a == Action::Enforce) {
            "enforce"
        } else if actions.iter().all(|a| *a == Action::Audit) {
            "audit"
        } else {
            "mixed"
        }
    }
}

/// The bit of slot `i`.
pub fn bit(slot: usize) -> u32 {
    1 << slot
}

/// Whether `outer` contains `inner` (same family, not longer, same leading bits).
pub fn prefix_contains(outer: &Prefix, inner: &Prefix) -> bool {
    outer.len <= inner.len && addr_in(outer, inner.addr)
}

/// Whether `addr` is in `prefix`.
pub fn addr_in(prefix: &Prefix, addr: IpAddr) -> bool {
    let (a, b, width) = match (prefix.addr, addr) {
        (IpAddr::V4(p), IpAddr::V4(a)) => (
            u128::from(u32::from(p)) << 96,
            u128::from(u32::from(a)) << 96,
            32,
        ),
        (IpAddr::V6(p), IpAddr::V6(a)) => (u128::from(p), u128::from(a), 128),
        _ => return false,
    };
    let len = u32::from(prefix.len).min(width);
    len == 0 || (a ^ b) >> (128 - len) == 0
}

/// The kernel's tables for a set of slots, or why the set does not fit them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tables {
    pub entries: Vec<DestEntry>,
    /// chmod rules, every slot's in slot order then file order; a rule's position is the
    /// index the kernel reports. With the slot each came from.
    pub chmod: Vec<(usize, ChmodEntry)>,
    pub privilege: Vec<(usize, PrivilegeEntry)>,
}

/// Merge the slots into the kernel's tables; an error names the limit the set exceeds.
pub fn merge(slots: &[Option<InForce>]) -> Result<Tables, String> {
    if slots.len() > MAX_POLICIES {
        return Err(format!(
            "{} policies: at most {MAX_POLICIES} can be in force at once",
            slots.iter().flatten().count()
        ));
    }
    let mut tables = Tables::default();
    let prefixes: Vec<Prefix> = {
        let mut all: Vec<Prefix> = slots
            .iter()
            .flatten()
            .flat_map(|p| p.dests.iter().map(|d| d.prefix))
            .collect();
        all.sort_by_key(|p| (p.addr, p.len));
        all.dedup();
        all
    };
    for prefix in prefixes {
        let mut entry = DestEntry {
            prefix,
            enforce: 0,
            audit: 0,
            ports: Vec::new(),
            rule: tables.entries.len() as u32,
        };
        for (slot, policy) in slots.iter().enumerate() {
            let Some(policy) = policy else { continue };
            for d in policy
                .dests
                .iter()
                .filter(|d| prefix_contains(&d.prefix, &prefix))
            {
                let enforce = d.action == Action::Enforce;
                if d.ports.is_empty() {
                    if enforce {
                        entry.enforce |= bit(slot);
                    } else {
                        entry.audit |= bit(slot);
                    }
                }
                for port in &d.ports {
                    let at = match entry.ports.iter().position(|(p, _, _)| p == port) {
                        Some(at) => at,
                        None => {
                            entry.ports.push((*port, 0, 0));
                            entry.ports.len() - 1
                        }
                    };
                    if enforce {
                        entry.ports[at].1 |= bit(slot);
                    } else {
                        entry.ports[at].2 |= bit(slot);
                    }
                }
            }
        }
        if entry.ports.len() > MAX_RULE_PORTS {
            return Err(format!(
                "destination {}/{}: the policies in force list {} ports for it; the kernel holds at most {MAX_RULE_PORTS} per destination",
                prefix.addr,
                prefix.len,
                entry.ports.len()
            ));
        }
        tables.entries.push(entry);
    }
    for (slot, policy) in slots.iter().enumerate() {
        let Some(policy) = policy else { continue };
        tables
            .chmod
            .extend(policy.chmod.iter().map(|c| (slot, c.clone())));
        tables
            .privilege
            .extend(policy.privilege.iter().map(|p| (slot, p.clone())));
    }
    for (what, n) in [
        ("chmod", tables.chmod.len()),
        ("privilege", tables.privilege.len()),
    ] {
        if n > MAX_KERNEL_RULES {
            return Err(format!(
                "{n} {what} rules in the policies in force: the kernel holds at most {MAX_KERNEL_RULES}"
            ));
        }
    }
    Ok(tables)
}

/// A rule that matched an event: its policy, its name, its action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Match {
    pub policy: String,
    pub rule: String,
    pub action: Action,
}

/// Of `matches`, the one that decides: the first enforcing, else the first.
pub fn deciding(matches: &[Match]) -> Option<&Match> {
    matches
        .iter()
        .find(|m| m.action == Action::Enforce)
        .or_else(|| matches.first())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(form: PolicyForm, name: &str, rules: &str) -> InForce {
        let (api, kind, ns) = match &form {
            PolicyForm::File => ("sensor/v1", "Policy", String::new()),
            PolicyForm::Cluster => ("sensor.dev/v1", "SensorClusterPolicy", String::new()),
            PolicyForm::Namespaced { namespace } => (
                "sensor.dev/v1",
                "SensorPolicy",
                format!(
                    "\n  namespace: {}",
                    namespace.as_deref().unwrap_or("default")
                ),
            ),
        };
        let scope = if matches!(form, PolicyForm::Namespaced { .. }) {
            String::new()
        } else {
            "  scope:\n    namespaces: {include: [\"*\"]}\n".to_owned()
        };
        let text = format!(
            "apiVersion: {api}\nkind: {kind}\nmetadata:\n  name: {name}{ns}\nspec:\n{scope}  rules:\n{rules}"
        );
        let parsed = parser::parse("t.yaml", &text).unwrap_or_else(|e| panic!("{e:?}\n{text}"));
        InForce::new(&parsed, "test", &text)
    }

    const META_ENFORCE: &str =
        "    - {name: m, type: metadata, action: enforce, destinations: [169.254.169.254]}\n";
    const META_AUDIT_16: &str =
        "    - {name: wide, type: metadata, action: audit, destinations: [169.254.0.0/16]}\n";
    const META_PORT: &str = "    - {name: p80, type: metadata, action: enforce, destinations: [169.254.169.254], ports: [80]}\n";

    #[test]
    fn a_prefix_carries_the_policies_of_every_prefix_that_contains_it() {
        let slots = vec![
            Some(policy(PolicyForm::File, "a", META_AUDIT_16)),
            Some(policy(
                PolicyForm::Namespaced {
                    namespace: Some("prod".into()),
                },
                "b",
                META_PORT,
            )),
        ];
        let t = merge(&slots).unwrap();
        assert_eq!(t.entries.len(), 2);
        let host = t.entries.iter().find(|e| e.prefix.len == 32).unwrap();
        // The /16 audit of slot 0 on every port; slot 1 enforces port 80 only.
        assert_eq!((host.enforce, host.audit), (0, 0b01));
        assert_eq!(host.ports, vec![(80, 0b10, 0)]);
        let wide = t.entries.iter().find(|e| e.prefix.len == 16).unwrap();
        assert_eq!((wide.enforce, wide.audit, wide.ports.len()), (0, 0b01, 0));
    }

    #[test]
    fn free_slots_keep_the_bits_of_the_others() {
        let slots = vec![None, Some(policy(PolicyForm::Cluster, "c", META_ENFORCE))];
        let t = merge(&slots).unwrap();
        assert_eq!(t.entries[0].enforce, 0b10);
    }

    #[test]
    fn a_namespaced_policy_holds_only_pods_of_its_namespace() {
        let p = policy(
            PolicyForm::Namespaced {
                namespace: Some("prod".into()),
            },
            "n",
            META_ENFORCE,
        );
        assert_eq!(p.name, "prod/n");
        assert!(p.holds_pod("prod", &BTreeMap::new()));
        assert!(!p.holds_pod("staging", &BTreeMap::new()));
        assert!(!p.outside_pods());
        assert_eq!(p.mode(), "enforce");
    }

    #[test]
    fn too_many_rules_for_the_kernel_are_refused_with_the_limit() {
        let chmod = "    - {name: c, type: chmod, action: audit, setid: true}\n";
        let slots: Vec<_> = (0..MAX_KERNEL_RULES + 1)
            .map(|i| Some(policy(PolicyForm::Cluster, &format!("p{i}"), chmod)))
            .collect();
        let err = merge(&slots).unwrap_err();
        assert!(err.contains("at most 32"), "{err}");
    }

    #[test]
    fn containment_follows_the_prefix_bits() {
        let p = |s: &str, len| Prefix {
            addr: s.parse().unwrap(),
            len,
        };
        assert!(prefix_contains(
            &p("169.254.0.0", 16),
            &p("169.254.169.254", 32)
        ));
        assert!(!prefix_contains(
            &p("169.254.169.254", 32),
            &p("169.254.0.0", 16)
        ));
        assert!(!prefix_contains(
            &p("10.0.0.0", 8),
            &p("169.254.169.254", 32)
        ));
        assert!(addr_in(
            &p("fd00:ec2::", 64),
            "fd00:ec2::254".parse().unwrap()
        ));
        assert!(!addr_in(
            &p("fd00:ec2::", 64),
            "169.254.169.254".parse().unwrap()
        ));
    }
}
