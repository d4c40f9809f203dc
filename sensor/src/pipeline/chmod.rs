//! The chmod step of the pipeline, for `chmod` events (chmod family and set-id file
//! creation) before attribution: the file's absolute name through `/proc`, the chmod rules with
//! `paths` (matched here, reported, never enforced), and for a killed call the outcome of the
//! revert of the set-id bits it added (the kill tier's second half: [`super::reverter`] has
//! normally done it ahead of the pipeline; [`super::revert`] is how).

use std::path::{Path, PathBuf};

use sensor_common::{AT_FDCWD, SETID_BITS, Verdict};
use sensor_policy::{Action, ChmodEntry};

use super::{
    counters::Counters,
    revert::{self, Revert},
    reverter::Outcomes,
};
use crate::{
    attribution::Enricher,
    event::{Chmod, Event, PathArg},
};

/// Complete a chmod event: name, path rule, revert. `rules`: the active chmod rules with the
/// slot of their policy (a rule's position is the index events report); `outcomes`: the revert thread's
/// ([`super::reverter`]), which has normally undone a killed call already.
pub fn step(
    event: &mut Event,
    rules: &[(usize, ChmodEntry)],
    proc_root: &Path,
    enricher: &mut Enricher,
    counters: &mut Counters,
    outcomes: Option<&Outcomes>,
) {
    let crate::event::Body::Chmod(chmod) = &mut event.body else {
        return;
    };
    // The kernel copies only killed calls that asked for set-id bits to the revert thread;
    // for any other kill (a rule on other mode bits, or every chmod) no outcome will come.
    let outcome = if event.verdict == Verdict::Killed && chmod.mode & SETID_BITS != 0 {
        outcomes.and_then(|o| o.take(event.pid, event.tid))
    } else {
        None
    };
    // The LSM tier names the file by its last component only: nothing to resolve.
    if !matches!(chmod.path, PathArg::Name(_)) {
        chmod.name = outcome
            .as_ref()
            .and_then(|o| o.name.clone())
            .or_else(|| resolve_name(proc_root, event.pid, chmod));
        if chmod.name.is_none() {
            counters.name_unresolved += 1;
        }
    }
    if event.verdict == Verdict::Allowed
        && let Some(rule) = path_rule(rules, chmod)
    {
        // Reported, never enforced: the tracepoint tier cannot match paths.
        chmod.rule = rule;
        event.verdict = Verdict::Audited;
        counters.chmod_path_rule_matches += 1;
    }
    if event.verdict == Verdict::Killed {
        let done = match outcome {
            Some(o) => o.revert,
            // No copy reached the revert thread: revert from the event, now.
            None if revert::wait_for_call_end(
                proc_root,
                event.pid,
                event.tid,
                revert::CALL_END_WAIT,
            ) =>
            {
                let dir = enricher.cgroup_dir(event.cgroup_id);
                revert::setid_bits(proc_root, event.pid, dir.as_deref(), chmod)
            }
            // Undoing a call that has not happened yet would be undone by it.
            None => Revert::Failed(format!(
                "the caller was still running {:?} after the kill",
                revert::CALL_END_WAIT
            )),
        };
        match &done {
            Revert::Reverted { .. } => counters.chmod_reverted += 1,
            Revert::Failed(why) => {
                counters.chmod_revert_failed += 1;
                tracing::warn!(pid = event.pid, "killed chmod not reverted: {why}");
            }
            Revert::NotNeeded(_) => {}
        }
        chmod.revert = Some(done);
    }
}

/// The index of the rule with `paths` that names this call, among the rules of the policies
/// the caller answers to (`chmod.policies`): the first enforcing match in set order, else the
/// first audit match (docs/policy.md, "When several rules match").
fn path_rule(rules: &[(usize, ChmodEntry)], chmod: &Chmod) -> Option<u32> {
    let name = match (&chmod.path, &chmod.name) {
        (_, Some(name)) => name.to_str()?,
        (PathArg::Complete(p), None) if p.starts_with('/') => p.as_str(),
        _ => return None,
    };
    let matching = |action| {
        rules.iter().position(|(slot, r)| {
            chmod.policies & crate::policy::set::bit(*slot) != 0
                && r.action == action
                && !r.paths.is_empty()
                && (r.match_all || chmod.mode & u32::from(r.mode_bits) != 0)
                && r.paths.iter().any(|g| g.matches(name))
        })
    };
    matching(Action::Enforce)
        .or_else(|| matching(Action::Audit))
        .map(|i| i as u32)
}

/// Resolve the absolute name a chmod-family call acted on, through `/proc/<pid>`: the fd's link
/// for fchmod, the dirfd's (or the cwd's) link joined with a relative path. Best effort: the
/// process may have exited or closed the fd by the time the event is read.
pub fn resolve_name(proc_root: &Path, pid: u32, chmod: &Chmod) -> Option<PathBuf> {
    let link = |rel: String| std::fs::read_link(proc_root.join(pid.to_string()).join(rel)).ok();
    match (&chmod.path, chmod.fd) {
        (PathArg::Complete(p), _) if p.starts_with('/') => Some(PathBuf::from(p)),
        (PathArg::Complete(p), None) => link("cwd".into()).map(|d| d.join(p)),
        (PathArg::Complete(p), Some(AT_FDCWD)) => link("cwd".into()).map(|d| d.join(p)),
        (PathArg::Complete(p), Some(dirfd)) => link(format!("fd/{dirfd}")).map(|d| d.join(p)),
        (PathArg::None, Some(fd)) => link(format!("fd/{fd}")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_names_through_proc() {
        let dir = std::env::temp_dir().join(format!("sensor-proc-test-{}", std::process::id()));
        let fd_dir = dir.join("5/fd");
        std::fs::create_dir_all(&fd_dir).unwrap();
        std::os::unix::fs::symlink("/data/dir", fd_dir.join("7")).unwrap();
        std::os::unix::fs::symlink("/work", dir.join("5/cwd")).unwrap();
        let c = |path, fd| Chmod::for_test(path, fd, 0);
        let proc = dir.as_path();
        let name = |chmod: &Chmod| resolve_name(proc, 5, chmod);
        assert_eq!(
            name(&c(PathArg::Complete("f".into()), Some(7))),
            Some("/data/dir/f".into())
        );
        assert_eq!(
            name(&c(PathArg::Complete("f".into()), Some(AT_FDCWD))),
            Some("/work/f".into())
        );
        assert_eq!(
            name(&c(PathArg::Complete("/abs".into()), Some(7))),
            Some("/abs".into())
        );
        assert_eq!(name(&c(PathArg::None, Some(7))), Some("/data/dir".into()));
        assert_eq!(name(&c(PathArg::None, Some(8))), None);
        assert_eq!(name(&c(PathArg::Truncated("f".into()), Some(7))), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
