//! Policy hot reload: on SIGHUP, and when the file changes (the daemon checks every slow tick;
//! the path is followed, so a ConfigMap's symlink swap counts). All or nothing: a new file that
//! is invalid, or that changes what needs a restart, is refused (logged with its errors,
//! counted, reported as a `policy` event) and the active rules stay; an accepted one is written
//! into the kernel maps in place (no gap for a destination or call both versions protect), and
//! only then becomes the snapshot events are named from. Also keeps the exempted pod cgroups
//! (pods outside the policy's namespace/label scope) in step with the pods the node runs.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    sync::atomic::Ordering,
};

use sensor_proto::v1 as pb;

use super::{ActiveRules, Shared, from_file, reload_refusal};
use crate::{
    attribution::Enricher,
    error_chain,
    event::proto::policy_change,
    kernel::{Loaded, ProgramsError},
};

pub struct Reloader {
    path: Option<PathBuf>,
    seen: Option<FileId>,
    shared: Shared,
    node: String,
    /// Pod index generation at the last exemption refresh (`None`: refresh at the next one).
    exempt_generation: Option<u64>,
    ticks: u32,
}

/// What identifies a version of the policy file.
type FileId = (u64, u64, i64, i64, u64);

fn file_id(path: &Path) -> Option<FileId> {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::metadata(path).ok()?;
    Some((m.dev(), m.ino(), m.mtime(), m.mtime_nsec(), m.size()))
}

/// Write `rules` into the kernel maps: chmod rules, privilege rules, destinations.
fn apply(loaded: &mut Loaded, rules: &ActiveRules) -> Result<(), ProgramsError> {
    loaded.replace_chmod_rules(&rules.kernel_chmod_rules())?;
    loaded.replace_privilege_rules(&rules.kernel_privilege_rules())?;
    loaded.replace_destinations(&rules.entries)
}

impl Reloader {
    /// `path`: the `--policy` file, if any (without one there is nothing to reload).
    pub fn new(path: Option<PathBuf>, shared: Shared, node: &str) -> Self {
        let seen = path.as_deref().and_then(file_id);
        Self {
            path,
            seen,
            shared,
            node: node.to_owned(),
            exempt_generation: None,
            ticks: 0,
        }
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
        let new = match from_file(&path) {
            Ok(new) => new,
            Err(errors) => {
                for e in &errors {
                    tracing::error!("{e}");
                }
                let located = errors.iter().map(ToString::to_string).collect();
                return Some(self.refused(&path, format!("{} error(s)", errors.len()), located));
            }
        };
        let active = self.shared.current();
        if let Some(reason) = reload_refusal(&active, &new) {
            return Some(self.refused(&path, reason, Vec::new()));
        }
        if let Err(err) = apply(loaded, &new) {
            // Back to the active rules, so the kernel runs one policy, not half of two.
            if let Err(undo) = apply(loaded, &active) {
                tracing::error!("restoring the active rules failed: {}", error_chain(&undo));
            }
            return Some(self.refused(&path, error_chain(&err), Vec::new()));
        }
        for what in &new.not_enforced {
            tracing::warn!(policy = %new.policy, "not enforced at this tier: {what}");
        }
        let event_source = new.source.clone();
        let policy = new.policy.clone();
        let destinations = new.entries.len();
        let generation = self.shared.replace(new);
        // Scope changes take effect at the next refresh.
        self.exempt_generation = None;
        tracing::info!(policy = %policy, generation, destinations, "{why}: policy reloaded");
        Some(policy_change(
            &self.node,
            generation,
            true,
            &event_source,
            &policy,
            Vec::new(),
        ))
    }

    fn refused(&self, path: &Path, reason: String, errors: Vec<String>) -> pb::Event {
        let counters = self.shared.counters();
        counters.reload_failures.fetch_add(1, Ordering::Relaxed);
        tracing::error!(file = %path.display(), "policy reload refused, the active policy stays: {reason}");
        let errors = if errors.is_empty() {
            vec![reason]
        } else {
            errors
        };
        policy_change(
            &self.node,
            self.shared.generation(),
            false,
            &path.display().to_string(),
            "",
            errors,
        )
    }

    /// Recompute the exempted pod cgroups (pods outside the policy's namespace/label scope)
    /// when pods changed, and every 10 ticks for new cgroups; a refused map update is logged
    /// and retried at the next refresh. Exemptions only ever remove protection for the pods
    /// they name: a pod not known yet stays protected.
    pub fn refresh_exemptions(&mut self, enricher: &mut Enricher, loaded: &mut Loaded) {
        let active = self.shared.current();
        let Some(namespaces) = &active.namespaces else {
            if self.shared.counters().exemptions.load(Ordering::Relaxed) > 0 {
                self.apply_exemptions(loaded, &BTreeSet::new());
            }
            return;
        };
        self.ticks += 1;
        let generation = enricher.pods_generation();
        if generation.is_none()
            || (generation == self.exempt_generation && !self.ticks.is_multiple_of(10))
        {
            return;
        }
        let Some(exempt) = enricher.exempt_cgroups(namespaces, active.pod_selector.as_ref()) else {
            return;
        };
        self.exempt_generation = generation;
        self.apply_exemptions(loaded, &exempt);
    }

    fn apply_exemptions(&mut self, loaded: &mut Loaded, exempt: &BTreeSet<u64>) {
        match loaded.set_exemptions(exempt) {
            Ok(()) => self
                .shared
                .counters()
                .exemptions
                .store(exempt.len() as u64, Ordering::Relaxed),
            Err(err) => {
                self.exempt_generation = None;
                tracing::warn!(error = %error_chain(&err), "exemptions not applied");
            }
        }
    }
}
