//! Counters of the event path (the pipeline's own; the status board gathers every
//! subsystem's).

use std::collections::BTreeMap;

use sensor_proto::v1 as pb;

use crate::{
    event::names::{enum_name, kind_name, verdict_name},
    event::proto::kind_of,
};

#[derive(Debug, Default, Clone)]
pub struct Counters {
    /// Events emitted, by `kind/verdict` (loss records as `lost/<stage>`).
    by_kind: BTreeMap<(i32, i32), u64>,
    /// Records that failed to decode (each one is also logged and reported in-band).
    pub decode_errors: u64,
    /// chmod events whose file name could no longer be resolved through /proc.
    pub name_unresolved: u64,
    /// Journal appends, flushes or syncs that failed (the event was still delivered live).
    pub journal_errors: u64,
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

    /// Events emitted as (kind, verdict or loss stage name, count), loss records as kind
    /// `lost` with their stage.
    pub fn counts(&self) -> impl Iterator<Item = (String, String, u64)> + '_ {
        self.by_kind.iter().map(|(&(kind, v), &n)| {
            let kind = pb::EventKind::try_from(kind).unwrap_or_default();
            let second = if kind == pb::EventKind::Lost {
                enum_name(
                    pb::LossStage::try_from(v).unwrap_or_default().as_str_name(),
                    "LOSS_STAGE_",
                )
            } else {
                verdict_name(pb::Verdict::try_from(v).unwrap_or_default())
            };
            (kind_name(kind), second, n)
        })
    }

    /// Events emitted, by `kind/verdict` (loss records as `lost/<stage>`).
    pub fn events(&self) -> BTreeMap<String, u64> {
        self.counts()
            .map(|(kind, second, n)| (format!("{kind}/{second}"), n))
            .collect()
    }

    /// Events emitted of `kind` with `verdict`.
    pub fn events_of(&self, kind: pb::EventKind, verdict: pb::Verdict) -> u64 {
        self.by_kind
            .get(&(kind as i32, verdict as i32))
            .copied()
            .unwrap_or(0)
    }

    /// The named counters (not the events), in the names of the status API.
    pub fn named(&self) -> [(&'static str, u64); 6] {
        [
            ("decode_errors", self.decode_errors),
            ("name_unresolved", self.name_unresolved),
            ("journal_errors", self.journal_errors),
            ("chmod_reverted", self.chmod_reverted),
            ("chmod_revert_failed", self.chmod_revert_failed),
            ("chmod_path_rule_matches", self.chmod_path_rule_matches),
        ]
    }
}
