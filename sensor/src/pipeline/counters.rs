//! Userspace counters of the event path, and the summary printed when `sensor run` stops.

use std::collections::BTreeMap;

use sensor_common::Counter;
use sensor_proto::v1 as pb;
use serde_json::{Map, Value, json};

use crate::{
    event::json::{kind_name, verdict_name},
    event::proto::kind_of,
};

#[derive(Debug, Default)]
pub struct Counters {
    /// Events emitted, by `kind/verdict` (loss records as `lost/<stage>`).
    by_kind: BTreeMap<(i32, i32), u64>,
    /// Records that failed to decode (each one is also logged and reported in-band).
    pub decode_errors: u64,
    /// chmod events whose file name could no longer be resolved through /proc.
    pub name_unresolved: u64,
    /// Journal appends, flushes or syncs that failed (the event was still delivered live).
    pub journal_errors: u64,
    /// Writes of `--stdout-events` that failed.
    pub stdout_errors: u64,
    /// Policy versions applied (1 = the one loaded at start).
    pub policy_generation: u64,
    /// Policy reloads refused (invalid file, or a change that needs a restart).
    pub policy_reload_failures: u64,
    /// Pod cgroups exempted now (pods outside the policy's namespace/label scope).
    pub policy_exemptions: u64,
    /// Kill tier: files whose set-id bits were removed after their chmod caller was killed.
    pub chmod_reverted: u64,
    /// Kill tier: killed chmods whose file could not be reached or changed.
    pub chmod_revert_failed: u64,
    /// chmod calls matched by a rule with `paths` (userspace, report only at this tier).
    pub chmod_path_rule_matches: u64,
}

impl Counters {
    /// Count one emitted event (no allocation: keyed by kind and verdict/stage numbers).
    pub fn record(&mut self, event: &pb::Event) {
        let key = match &event.body {
            Some(pb::event::Body::Lost(l)) => (pb::EventKind::Lost as i32, l.stage),
            _ => (kind_of(event) as i32, event.verdict),
        };
        *self.by_kind.entry(key).or_default() += 1;
    }

    /// Events emitted, all kinds.
    pub fn total_events(&self) -> u64 {
        self.by_kind.values().sum()
    }

    /// Events emitted, by `kind/verdict` (loss records as `lost/<stage>`).
    pub fn events(&self) -> BTreeMap<String, u64> {
        self.by_kind
            .iter()
            .map(|(&(kind, v), &n)| {
                let kind = pb::EventKind::try_from(kind).unwrap_or_default();
                let name = if kind == pb::EventKind::Lost {
                    let stage = pb::LossStage::try_from(v).unwrap_or_default();
                    format!(
                        "lost/{}",
                        stage
                            .as_str_name()
                            .trim_start_matches("LOSS_STAGE_")
                            .to_ascii_lowercase()
                    )
                } else {
                    format!(
                        "{}/{}",
                        kind_name(kind),
                        verdict_name(pb::Verdict::try_from(v).unwrap_or_default())
                    )
                };
                (name, n)
            })
            .collect()
    }

    /// Every counter as `name -> value` (for the status API).
    pub fn flat(&self) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = self
            .events()
            .into_iter()
            .map(|(k, n)| (format!("events_{k}"), n))
            .collect();
        v.extend([
            ("decode_errors".to_owned(), self.decode_errors),
            ("name_unresolved".to_owned(), self.name_unresolved),
            ("journal_errors".to_owned(), self.journal_errors),
            ("stdout_errors".to_owned(), self.stdout_errors),
            ("policy_generation".to_owned(), self.policy_generation),
            (
                "policy_reload_failures".to_owned(),
                self.policy_reload_failures,
            ),
            ("policy_exemptions".to_owned(), self.policy_exemptions),
            ("chmod_reverted".to_owned(), self.chmod_reverted),
            ("chmod_revert_failed".to_owned(), self.chmod_revert_failed),
            (
                "chmod_path_rule_matches".to_owned(),
                self.chmod_path_rule_matches,
            ),
        ]);
        v
    }

    /// `{"counters": {...}}`: userspace counters plus the kernel's.
    pub fn summary(&self, kernel: &[(Counter, u64)], extra: &[(String, u64)]) -> Value {
        let kernel: Map<String, Value> = kernel
            .iter()
            .map(|(c, v)| (c.as_str().to_owned(), json!(v)))
            .collect();
        let mut counters = json!({
            "events": self.events(),
            "decode_errors": self.decode_errors,
            "name_unresolved": self.name_unresolved,
            "journal_errors": self.journal_errors,
            "stdout_errors": self.stdout_errors,
            "policy_generation": self.policy_generation,
            "policy_reload_failures": self.policy_reload_failures,
            "policy_exemptions": self.policy_exemptions,
            "chmod_reverted": self.chmod_reverted,
            "chmod_revert_failed": self.chmod_revert_failed,
            "chmod_path_rule_matches": self.chmod_path_rule_matches,
            "kernel": kernel,
        });
        for (k, v) in extra {
            counters[k.as_str()] = json!(v);
        }
        json!({ "counters": counters })
    }
}
