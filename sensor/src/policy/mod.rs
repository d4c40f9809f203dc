//! The rules `sensor run` enforces: from a policy file (`--policy`), or from `--mode` and the
//! built-in default policy; what a reload may change; and [`Shared`], the rules in force as one
//! snapshot that every reader (the pipeline naming events, the API, the metrics) takes whole and
//! the [`reload::Reloader`] replaces whole.

pub mod reload;
pub mod resources;
pub mod set;
pub mod status;
pub mod watch;

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, PoisonError, RwLock,
        atomic::{AtomicU64, Ordering},
    },
};

use sensor_common::{Action, KernelRule, rule_flags};

use sensor_policy::{self as parser, PolicyError};

pub use self::set::{InForce, Match, Tables, deciding};
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
    /// Pod cgroups no policy applies to now (pods outside every policy's scope).
    pub exemptions: AtomicU64,
    /// Pod cgroups in the membership map now.
    pub pod_cgroups: AtomicU64,
    /// Policies in force now (the file's and the resources').
    pub in_force: AtomicU64,
    /// Policy resources refused now (their last version was invalid or did not fit).
    pub refused: AtomicU64,
}

impl Shared {
    /// The rules loaded at start: generation 1.
    pub fn new(rules: ActiveRules) -> Self {
        let counters = Counters::default();
        counters.generation.store(1, Ordering::Relaxed);
        counters.in_force.store(1, Ordering::Relaxed);
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
        self.swap(rules);
        self.0.counters.generation.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Swap in `rules` that the kernel already runs (the same policies, another list of
    /// refused resources): not a new generation.
    pub fn swap(&self, rules: ActiveRules) {
        let c = &self.0.counters;
        c.in_force
            .store(rules.in_force().count() as u64, Ordering::Relaxed);
        c.refused
            .store(rules.refused.len() as u64, Ordering::Relaxed);
        *self
            .0
            .active
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(rules);
    }

    pub fn counters(&self) -> &Counters {
        &self.0.counters
    }

    /// The generation in force now.
    pub fn generation(&self) -> u64 {
        self.0.counters.generation.load(Ordering::Relaxed)
    }
}

/// The policies in force (by slot), their merged kernel tables, and how events name them.
#[derive(Clone, Debug)]
pub struct ActiveRules {
    /// Slot 0: the file (or built-in) policy; then the resources, each in the slot it got
    /// when it was added (a policy's bit in the kernel's masks is `1 << slot`).
    pub slots: Vec<Option<InForce>>,
    pub tables: Tables,
    /// Scope roots the file policy adds to `--scope-cgroup`.
    pub scope_cgroups: Vec<PathBuf>,
    /// Resources refused (key -> errors), kept for status and `sensor policy show`.
    pub refused: BTreeMap<String, Vec<String>>,
    /// Decisions per policy since it was accepted (shared by every version of the set).
    pub counts: Arc<PolicyCounts>,
}

/// Blocked and audited calls per policy name, since the policy's version in force was
/// accepted. Bounded by the policies in force (a removed policy's entry goes with it).
#[derive(Debug, Default)]
pub struct PolicyCounts(Mutex<HashMap<String, (u64, u64)>>);

impl PolicyCounts {
    /// Count an event's matches: an enforcing match of a blocked or killed call as blocked by
    /// its policy, any other match as audited.
    pub fn count(&self, matches: &[Match], blocked: bool) {
        if matches.is_empty() {
            return;
        }
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        for m in matches {
            let entry = match map.get_mut(&m.policy) {
                Some(e) => e,
                None => map.entry(m.policy.clone()).or_default(),
            };
            if blocked && m.action == parser::Action::Enforce {
                entry.0 += 1;
            } else {
                entry.1 += 1;
            }
        }
    }

    /// (blocked, audited) of a policy.
    pub fn get(&self, policy: &str) -> (u64, u64) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(policy)
            .copied()
            .unwrap_or_default()
    }

    /// Start a policy's counts again (a new version was accepted, or it is gone).
    pub fn reset(&self, policy: &str) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(policy);
    }
}

impl ActiveRules {
    /// What of the policies no tier enforces in the kernel (logged at load).
    pub fn not_enforced(&self) -> Vec<String> {
        self.in_force()
            .flat_map(|(_, p)| p.not_enforced())
            .collect()
    }

    /// The file (or built-in) policy.
    pub fn file(&self) -> &InForce {
        self.slots[0]
            .as_ref()
            .expect("slot 0 holds the file policy")
    }

    /// The file policy's name (`policy` of events no rule decided).
    pub fn policy(&self) -> &str {
        &self.file().name
    }

    pub fn source(&self) -> &str {
        &self.file().source
    }

    pub fn text(&self) -> &str {
        &self.file().text
    }

    /// The merged destination entries.
    pub fn entries(&self) -> &[DestEntry] {
        &self.tables.entries
    }

    /// The policies in force, with their slots.
    pub fn in_force(&self) -> impl Iterator<Item = (usize, &InForce)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.as_ref().map(|p| (i, p)))
    }

    /// The chmod rules as the kernel evaluates them; rules with `paths` are marked for
    /// userspace (the tracepoint tier cannot match paths in the kernel).
    pub fn kernel_chmod_rules(&self) -> Vec<KernelRule> {
        self.tables
            .chmod
            .iter()
            .enumerate()
            .map(|(i, (slot, c))| KernelRule {
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
                policy: set::bit(*slot),
                _pad: 0,
            })
            .collect()
    }

    /// The privilege rules as the kernel evaluates them (`mode_bits` = the raise kinds; each
    /// program matches the kinds it sees: the kill tier only set*id to uid/gid 0).
    pub fn kernel_privilege_rules(&self) -> Vec<KernelRule> {
        self.tables
            .privilege
            .iter()
            .enumerate()
            .map(|(i, (slot, p))| KernelRule {
                rule: i as u32,
                action: kernel_action(p.action) as u32,
                mode_bits: p.raises,
                flags: 0,
                policy: set::bit(*slot),
                _pad: 0,
            })
            .collect()
    }

    /// The policies (bits) that apply to a pod of `namespace` with `labels`.
    pub fn members(&self, namespace: &str, labels: &BTreeMap<String, String>) -> u32 {
        self.in_force()
            .filter(|(_, p)| p.holds_pod(namespace, labels))
            .fold(0, |acc, (i, _)| acc | set::bit(i))
    }

    /// The policies (bits) that apply to cgroups no known pod claims.
    pub fn others(&self) -> u32 {
        self.in_force()
            .filter(|(_, p)| p.outside_pods())
            .fold(0, |acc, (i, _)| acc | set::bit(i))
    }

    /// Every rule of the policies in `policies` that a connect to `addr`:`port` matched.
    pub fn connect_matches(&self, addr: IpAddr, port: u16, policies: u32) -> Vec<Match> {
        let mut out = Vec::new();
        for (slot, p) in self.in_force() {
            if policies & set::bit(slot) == 0 {
                continue;
            }
            for d in &p.dests {
                let port_ok = d.ports.is_empty() || d.ports.contains(&port);
                let m = Match {
                    policy: p.name.clone(),
                    rule: d.destination.clone(),
                    action: d.action,
                };
                if port_ok && set::addr_in(&d.prefix, addr) && !out.contains(&m) {
                    out.push(m);
                }
            }
        }
        out
    }

    /// For a packet socket (which can reach any destination): per policy in `policies`, its
    /// first enforcing destination rule, else its first one.
    pub fn packet_matches(&self, policies: u32) -> Vec<Match> {
        self.in_force()
            .filter(|(slot, _)| policies & set::bit(*slot) != 0)
            .filter_map(|(_, p)| {
                let d = p
                    .dests
                    .iter()
                    .find(|d| d.action == parser::Action::Enforce)
                    .or_else(|| p.dests.first())?;
                Some(Match {
                    policy: p.name.clone(),
                    rule: d.destination.clone(),
                    action: d.action,
                })
            })
            .collect()
    }

    /// A match of rule `rule` (its index in its policy) of the policy in `slot`.
    fn named(&self, slot: usize, rule: u32, action: parser::Action) -> Match {
        let policy = self.slots[slot].as_ref();
        Match {
            policy: policy.map_or_else(String::new, |p| p.name.clone()),
            rule: policy
                .and_then(|p| p.rule_names.get(rule as usize))
                .cloned()
                .unwrap_or_default(),
            action,
        }
    }

    /// Of a kernel table (`(slot, rule index, action)` per position), the deciding entry
    /// `decided` first, then every other entry of `policies` that `hit` says matched.
    fn matches_in(
        &self,
        table: impl Iterator<Item = (usize, u32, parser::Action)> + Clone,
        decided: u32,
        policies: u32,
        hit: impl Fn(usize) -> bool,
    ) -> Vec<Match> {
        let first = table
            .clone()
            .nth(decided as usize)
            .map(|(slot, rule, action)| self.named(slot, rule, action));
        let others = table
            .enumerate()
            .filter(|(i, (slot, _, _))| {
                *i as u32 != decided && policies & set::bit(*slot) != 0 && hit(*i)
            })
            .map(|(_, (slot, rule, action))| self.named(slot, rule, action));
        first.into_iter().chain(others).collect()
    }

    /// The chmod rules of `policies` that a call to `mode` matched (rules with paths only as
    /// `rule`, the one userspace matched), the deciding `rule` first.
    pub fn chmod_matches(&self, rule: u32, mode: u32, policies: u32) -> Vec<Match> {
        let table = &self.tables.chmod;
        self.matches_in(
            table.iter().map(|(slot, c)| (*slot, c.rule, c.action)),
            rule,
            policies,
            |i| {
                let c = &table[i].1;
                c.paths.is_empty() && (c.match_all || mode & u32::from(c.mode_bits) != 0)
            },
        )
    }

    /// The privilege rules of `policies` that a raise of `kind` matched, the deciding first.
    pub fn privilege_matches(&self, rule: u32, kind: u32, policies: u32) -> Vec<Match> {
        let table = &self.tables.privilege;
        self.matches_in(
            table.iter().map(|(slot, p)| (*slot, p.rule, p.action)),
            rule,
            policies,
            |i| table[i].1.raises & kind != 0,
        )
    }

    /// The same policies with `file` in slot 0.
    pub fn with_file(&self, file: ActiveRules) -> Result<ActiveRules, String> {
        let mut slots = self.slots.clone();
        slots[0] = file.slots.into_iter().next().flatten();
        let mut next = Self::build(slots, file.scope_cgroups)?;
        next.refused = self.refused.clone();
        next.counts = Arc::clone(&self.counts);
        next.counts.reset(next.policy());
        Ok(next)
    }

    /// The same policies with the resource `key` added or replaced by `policy` (it keeps its
    /// slot), or removed (`None`).
    pub fn with_resource(&self, key: &str, policy: Option<InForce>) -> Result<ActiveRules, String> {
        let mut slots = self.slots.clone();
        let name = slots
            .iter()
            .flatten()
            .find(|p| p.source == key)
            .map(|p| p.name.clone())
            .or_else(|| policy.as_ref().map(|p| p.name.clone()));
        let at = slots
            .iter()
            .position(|s| s.as_ref().is_some_and(|p| p.source == key));
        match (at, policy) {
            (Some(i), Some(p)) => slots[i] = Some(p),
            (Some(i), None) => slots[i] = None,
            (None, Some(p)) => match slots.iter().skip(1).position(Option::is_none) {
                Some(free) => slots[free + 1] = Some(p),
                None => slots.push(Some(p)),
            },
            (None, None) => {}
        }
        while slots.len() > 1 && slots.last().is_some_and(Option::is_none) {
            slots.pop();
        }
        let mut next = Self::build(slots, self.scope_cgroups.clone())?;
        next.refused = self.refused.clone();
        next.refused.remove(key);
        next.counts = Arc::clone(&self.counts);
        if let Some(name) = name {
            next.counts.reset(&name);
        }
        Ok(next)
    }

    /// One policy alone (in slot 0), e.g. a candidate to test against recorded events.
    pub fn single(policy: InForce) -> Result<ActiveRules, String> {
        Self::build(vec![Some(policy)], Vec::new())
    }

    fn build(
        slots: Vec<Option<InForce>>,
        scope_cgroups: Vec<PathBuf>,
    ) -> Result<ActiveRules, String> {
        let tables = set::merge(&slots)?;
        Ok(ActiveRules {
            slots,
            tables,
            scope_cgroups,
            refused: BTreeMap::new(),
            counts: Arc::default(),
        })
    }
}

/// The policies in force, then the resources refused, as `sensor status` reports them.
pub fn states(rules: &ActiveRules) -> Vec<sensor_proto::v1::PolicyState> {
    let in_force = rules.in_force().map(|(_, p)| {
        let (blocked, audited) = rules.counts.get(&p.name);
        sensor_proto::v1::PolicyState {
            name: p.name.clone(),
            source: p.source.clone(),
            mode: p.mode().to_owned(),
            accepted: !rules.refused.contains_key(&p.source),
            blocked,
            audited,
            errors: rules.refused.get(&p.source).cloned().unwrap_or_default(),
        }
    });
    let refused = rules
        .refused
        .iter()
        .filter(|(key, _)| !rules.in_force().any(|(_, p)| &p.source == *key))
        .map(|(key, errors)| sensor_proto::v1::PolicyState {
            name: String::new(),
            source: key.clone(),
            errors: errors.clone(),
            ..Default::default()
        });
    in_force.chain(refused).collect()
}

fn kernel_action(a: parser::Action) -> Action {
    match a {
        parser::Action::Enforce => Action::Enforce,
        parser::Action::Audit => Action::Audit,
    }
}

/// The embedded default policy (no `--policy`); `--mode` sets the action of all its rules.
pub fn from_default(mode: Option<Action>) -> ActiveRules {
    let mut policy = parser::default_policy();
    if let Some(action) = mode {
        let action = match action {
            Action::Audit => parser::Action::Audit,
            _ => parser::Action::Enforce,
        };
        for rule in &mut policy.rules {
            rule.action = action;
        }
    }
    from_policy(&policy, "built-in default", parser::DEFAULT_POLICY_YAML)
}

/// Read, validate and compile a policy file.
pub fn from_file(path: &Path) -> Result<ActiveRules, Vec<PolicyError>> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    Ok(from_policy(
        &parser::parse_file(path)?,
        &path.display().to_string(),
        &text,
    ))
}

fn from_policy(policy: &parser::Policy, source: &str, text: &str) -> ActiveRules {
    let file = InForce::new(policy, source, text);
    let scope_cgroups = policy.scope.cgroups.clone();
    // One policy always fits: the parser holds it within the kernel's limits.
    ActiveRules::build(vec![Some(file)], scope_cgroups)
        .unwrap_or_else(|e| panic!("one valid policy exceeds the kernel's tables: {e}"))
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
    fn a_policy_becomes_entries_of_its_slot_with_their_actions() {
        let p = write("ok", POLICY);
        let r = from_file(&p).unwrap();
        std::fs::remove_file(&p).unwrap();
        assert_eq!(r.policy(), "web");
        assert_eq!(r.entries().len(), 2);
        assert!(r.entries().iter().all(|e| (e.enforce, e.audit) == (0, 1)));
        assert_eq!(
            r.entries().iter().map(|e| e.rule).collect::<Vec<_>>(),
            [0, 1]
        );
        let imds = r.connect_matches("169.254.169.254".parse().unwrap(), 80, 1);
        assert_eq!(
            imds,
            [Match {
                policy: "web".into(),
                rule: "imds".into(),
                action: parser::Action::Audit
            }]
        );
        // Bits of other policies name nothing of this one.
        assert!(
            r.connect_matches("169.254.169.254".parse().unwrap(), 80, 2)
                .is_empty()
        );
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
        assert_eq!((r.policy(), r.source()), ("default", "built-in default"));
        assert_eq!(r.entries().len(), 7);
        assert!(r.entries().iter().all(|e| (e.enforce, e.audit) == (1, 0)));
        assert_eq!(r.others(), 1);
        assert_eq!(r.members("kube-system", &BTreeMap::new()), 0);
        assert_eq!(r.members("shop", &BTreeMap::new()), 1);
        assert!(
            from_default(Some(Action::Audit))
                .entries()
                .iter()
                .all(|e| (e.enforce, e.audit) == (0, 1))
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
        let k = r.kernel_privilege_rules();
        assert_eq!(k.len(), 1);
        assert_eq!(
            (k[0].rule, k[0].action, k[0].mode_bits, k[0].policy),
            (
                0,
                Action::Enforce as u32,
                (Raise::SetuidRoot as u32) | (Raise::SetgidRoot as u32) | (Raise::Capset as u32),
                1
            )
        );
        let m = r.privilege_matches(0, Raise::Capset as u32, 1);
        assert_eq!((m.len(), m[0].rule.as_str()), (1, "no-root"));
    }

    #[test]
    fn resources_keep_their_slots_and_the_file_keeps_slot_0() {
        let file = from_default(None);
        let ns = |name: &str, action: &str| {
            let text = format!(
                "apiVersion: sensor.dev/v1\nkind: SensorPolicy\nmetadata: {{name: {name}, namespace: {name}}}\nspec:\n  rules:\n    - {{name: m, type: metadata, action: {action}, destinations: [169.254.169.254]}}\n"
            );
            InForce::new(
                &parser::parse("r.yaml", &text).unwrap(),
                &format!("SensorPolicy {name}/{name}"),
                &text,
            )
        };
        let a = file
            .with_resource("SensorPolicy prod/prod", Some(ns("prod", "enforce")))
            .unwrap();
        let b = a
            .with_resource("SensorPolicy staging/staging", Some(ns("staging", "audit")))
            .unwrap();
        assert_eq!(b.members("prod", &BTreeMap::new()), 0b011);
        assert_eq!(b.members("staging", &BTreeMap::new()), 0b101);
        // Namespaced policies never apply outside pods.
        assert_eq!(b.others(), 0b001);
        let host = b
            .entries()
            .iter()
            .find(|e| e.prefix.len == 32 && e.prefix.addr.is_ipv4() && e.enforce & 0b010 != 0)
            .unwrap();
        assert_eq!((host.enforce, host.audit), (0b011, 0b100));
        // Deleting the first frees slot 1 and leaves staging in slot 2.
        let c = b.with_resource("SensorPolicy prod/prod", None).unwrap();
        assert_eq!(c.members("staging", &BTreeMap::new()), 0b101);
        assert!(c.slots[1].is_none());
        // A file reload keeps the resources.
        let d = c.with_file(from_default(Some(Action::Audit))).unwrap();
        assert_eq!(d.members("staging", &BTreeMap::new()), 0b101);
        assert_eq!(d.file().mode(), "audit");
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
