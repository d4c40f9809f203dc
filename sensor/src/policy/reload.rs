//! Changes to the policies in force: the file reloaded (on SIGHUP, and when it changes: the
//! daemon checks every slow tick; the path is followed, so a ConfigMap's symlink swap counts),
//! and policy resources added, changed or deleted (from the resource watcher). All or nothing
//! per change: a file or resource that is invalid, that changes what needs a restart, or that
//! makes the set exceed the kernel's tables is refused (logged with its errors, counted,
//! reported as a `policy` event) and the active set stays. An accepted change is written into
//! the kernel maps in place, and only then becomes the snapshot events are named from.
//!
//! No gap: a change first narrows the membership map to the policies both the old and the new
//! set give each cgroup, then writes the rule tables (each trie entry replaced atomically,
//! rule sets switched with one write), then writes the new membership. A destination or call
//! that a policy in both sets protects is protected at every moment; a slot freed by a deleted
//! policy and taken by a new one never applies the new rules to the old policy's pods.
//! Also keeps the membership of pod cgroups (which policies' scope holds each pod) in step with
//! the pods the node runs.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::atomic::Ordering,
};

use sensor_common::OTHER_CGROUPS;
use sensor_proto::v1 as pb;

use super::{ActiveRules, InForce, Shared, from_file, reload_refusal};
use crate::{
    attribution::Enricher,
    error_chain,
    event::proto::{Origin, policy_change},
    kernel::{Loaded, ProgramsError},
};

/// A pod cgroup and what decides its policies.
type PodOf = (String, BTreeMap<String, String>);

pub struct Reloader {
    path: Option<PathBuf>,
    seen: Option<FileId>,
    shared: Shared,
    origin: Origin,
    /// Pod index generation at the last membership refresh (`None`: refresh at the next one).
    members_generation: Option<u64>,
    /// The pod cgroups at the last refresh, with namespace and labels.
    pods: BTreeMap<u64, PodOf>,
    /// Changes of policy resources from the watchers (Kubernetes mode).
    pending: Option<super::watch::Pending>,
    ticks: u32,
}

/// What identifies a version of the policy file.
type FileId = (u64, u64, i64, i64, u64);

fn file_id(path: &Path) -> Option<FileId> {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::metadata(path).ok()?;
    Some((m.dev(), m.ino(), m.mtime(), m.mtime_nsec(), m.size()))
}

/// The membership map `rules` gives these pods.
fn members_for(rules: &ActiveRules, pods: &BTreeMap<u64, PodOf>) -> BTreeMap<u64, u32> {
    let mut members: BTreeMap<u64, u32> = pods
        .iter()
        .map(|(id, (ns, labels))| (*id, rules.members(ns, labels)))
        .collect();
    members.insert(OTHER_CGROUPS, rules.others());
    members
}

/// Write `next` into the kernel maps over `active` (see the module comment for the order).
fn apply(
    loaded: &mut Loaded,
    active: &ActiveRules,
    next: &ActiveRules,
    pods: &BTreeMap<u64, PodOf>,
) -> Result<(), ProgramsError> {
    let (old, new) = (members_for(active, pods), members_for(next, pods));
    let narrowed: BTreeMap<u64, u32> = new
        .iter()
        .map(|(id, bits)| (*id, bits & old.get(id).copied().unwrap_or(u32::MAX)))
        .collect();
    loaded.set_members(&narrowed)?;
    loaded.replace_chmod_rules(&next.kernel_chmod_rules())?;
    loaded.replace_privilege_rules(&next.kernel_privilege_rules())?;
    loaded.replace_destinations(next.entries())?;
    loaded.set_members(&new)
}

impl Reloader {
    /// `path`: the `--policy` file, if any (without one there is nothing to reload).
    pub fn new(path: Option<PathBuf>, shared: Shared, origin: &Origin) -> Self {
        let seen = path.as_deref().and_then(file_id);
        Self {
            path,
            seen,
            shared,
            origin: origin.clone(),
            members_generation: None,
            pods: BTreeMap::new(),
            pending: None,
            ticks: 0,
        }
    }

    /// Take policy resource changes from `pending` ([`Reloader::apply_pending`]).
    pub fn with_resources(mut self, pending: super::watch::Pending) -> Self {
        self.pending = Some(pending);
        self
    }

    /// Apply the resource changes the watchers left since the last call, one by one; the
    /// `policy` events to put into the stream.
    pub fn apply_pending(&mut self, loaded: &mut Loaded) -> Vec<pb::Event> {
        let Some(pending) = &self.pending else {
            return Vec::new();
        };
        pending
            .take()
            .into_iter()
            .map(|(key, change)| self.resource(loaded, &key, change))
            .collect()
    }

    /// Whether the file changed since it was last read.
    pub fn file_changed(&self) -> bool {
        let Some(path) = &self.path else { return false };
        let now = file_id(path);
        now.is_some() && now != self.seen
    }

    /// Read the file again and apply it, or refuse it. Returns the `policy` event to put into
    /// the stream (none without a `--policy` file).
    pub fn reload(&mut self, loaded: &mut Loaded, why: &str) -> Option<pb::Event> {
        let Some(path) = self.path.clone() else {
            tracing::info!("{why}: no --policy file to reload");
            return None;
        };
        self.seen = file_id(&path);
        let source = path.display().to_string();
        let file = match from_file(&path) {
            Ok(file) => file,
            Err(errors) => {
                for e in &errors {
                    tracing::error!("{e}");
                }
                let located = errors.iter().map(ToString::to_string).collect();
                return Some(self.refused(&source, format!("{} error(s)", errors.len()), located));
            }
        };
        let active = self.shared.current();
        if let Some(reason) = reload_refusal(&active, &file) {
            return Some(self.refused(&source, reason, Vec::new()));
        }
        let next = match active.with_file(file) {
            Ok(next) => next,
            Err(reason) => return Some(self.refused(&source, reason, Vec::new())),
        };
        let name = next.policy().to_owned();
        Some(self.switch(loaded, &active, next, why, &source, &name))
    }

    /// Add, replace (`Ok(Some)`), or delete (`Ok(None)`) the policy resource `key`, or record
    /// it as refused (`Err`: its located errors; the active set stays). Returns the `policy`
    /// event for the stream.
    pub fn resource(
        &mut self,
        loaded: &mut Loaded,
        key: &str,
        change: Result<Option<InForce>, Vec<String>>,
    ) -> pb::Event {
        let active = self.shared.current();
        let name = match &change {
            Ok(Some(p)) => p.name.clone(),
            _ => key.to_owned(),
        };
        let policy = match change {
            Ok(policy) => policy,
            Err(errors) => {
                for e in &errors {
                    tracing::error!(resource = key, "{e}");
                }
                let mut refused = (*active).clone();
                refused.refused.insert(key.to_owned(), errors.clone());
                self.shared.swap(refused);
                return self.refused(key, format!("{} error(s)", errors.len()), errors);
            }
        };
        let deleted = policy.is_none();
        let next = match active.with_resource(key, policy) {
            Ok(next) => next,
            Err(reason) => {
                let mut refused = (*active).clone();
                refused.refused.insert(key.to_owned(), vec![reason.clone()]);
                self.shared.swap(refused);
                return self.refused(key, reason, Vec::new());
            }
        };
        let why = if deleted {
            "resource deleted"
        } else {
            "resource applied"
        };
        self.switch(loaded, &active, next, why, key, &name)
    }

    fn switch(
        &mut self,
        loaded: &mut Loaded,
        active: &ActiveRules,
        next: ActiveRules,
        why: &str,
        source: &str,
        name: &str,
    ) -> pb::Event {
        if let Err(err) = apply(loaded, active, &next, &self.pods) {
            // Back to the active set, so the kernel runs one set, not half of two.
            if let Err(undo) = apply(loaded, &next, active, &self.pods) {
                tracing::error!("restoring the active rules failed: {}", error_chain(&undo));
            }
            return self.refused(source, error_chain(&err), Vec::new());
        }
        for what in &next.not_enforced() {
            tracing::warn!("not enforced at this tier: {what}");
        }
        let policies = next.in_force().count();
        let destinations = next.entries().len();
        let generation = self.shared.replace(next);
        tracing::info!(
            source,
            generation,
            policies,
            destinations,
            "{why}: policies in force changed"
        );
        policy_change(&self.origin, generation, true, source, name, Vec::new())
    }

    fn refused(&self, source: &str, reason: String, errors: Vec<String>) -> pb::Event {
        let counters = self.shared.counters();
        counters.reload_failures.fetch_add(1, Ordering::Relaxed);
        tracing::error!(
            source,
            "policy change refused, the active policies stay: {reason}"
        );
        let errors = if errors.is_empty() {
            vec![reason]
        } else {
            errors
        };
        policy_change(
            &self.origin,
            self.shared.generation(),
            false,
            source,
            "",
            errors,
        )
    }

    /// Recompute the policy membership of pod cgroups when pods changed, and every 10 ticks
    /// for new cgroups; a refused map update is logged and retried at the next refresh. A pod
    /// not known yet answers to the policies of unclaimed cgroups (file and cluster policies).
    pub fn refresh_members(&mut self, enricher: &mut Enricher, loaded: &mut Loaded) {
        self.ticks += 1;
        let generation = enricher.pods_generation();
        if generation.is_none()
            || (generation == self.members_generation && !self.ticks.is_multiple_of(10))
        {
            return;
        }
        let Some(pods) = enricher.pod_cgroups() else {
            return;
        };
        self.members_generation = generation;
        self.pods = pods;
        let members = members_for(&self.shared.current(), &self.pods);
        match loaded.set_members(&members) {
            Ok(()) => {
                let c = self.shared.counters();
                c.exemptions.store(
                    members.values().filter(|bits| **bits == 0).count() as u64,
                    Ordering::Relaxed,
                );
                c.pod_cgroups
                    .store(self.pods.len() as u64, Ordering::Relaxed);
            }
            Err(err) => {
                self.members_generation = None;
                tracing::warn!(error = %error_chain(&err), "policy membership not applied");
            }
        }
    }
}
