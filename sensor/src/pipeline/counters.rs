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
    /// The same for kind and verdict/stage numbers below 8 (no map lookup per event).
    fixed: [[u64; 8]; 8],
    /// Records that failed to decode (each one is also logged and reported in-band).
    pub decode_errors: u64,
    /// chmod events whose file name could no longer be resolved through /proc.
    pub name_unresolved: u64,
    /// Journal writes, reopens and syncs that failed (each failed try once, not per event).
    pub journal_errors: u64,
    /// Events published without a sequence number because the journal could not take them
    /// (still delivered live).
    pub journal_unjournaled: u64,
    /// Times journal writes started failing.
    pub journal_outages: u64,
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
        let second = match &event.body {
            Some(pb::event::Body::Lost(l)) => l.stage,
            _ => event.verdict,
        };
        self.record_key(kind_of(event), second);
    }

    /// Count one emitted event of `kind` with verdict (or, for a loss record, stage) `second`.
    pub fn record_key(&mut self, kind: pb::EventKind, second: i32) {
        let (k, v) = (kind as i32, second);
        match self
            .fixed
            .get_mut(k as usize)
            .and_then(|row| row.get_mut(usize::try_from(v).ok()?))
        {
            Some(n) => *n += 1,
            None => *self.by_kind.entry((k, v)).or_default() += 1,
        }
    }

    /// Every (kind, verdict or stage) with its count, in order.
    fn all(&self) -> BTreeMap<(i32, i32), u64> {
        let mut all = self.by_kind.clone();
        for (k, row) in self.fixed.iter().enumerate() {
            for (v, &n) in row.iter().enumerate() {
                if n > 0 {
                    *all.entry((k as i32, v as i32)).or_default() += n;
                }
            }
        }
        all
    }

    /// Events emitted, all kinds.
    pub fn total_events(&self) -> u64 {
        self.by_kind.values().sum::<u64>() + self.fixed.iter().flatten().sum::<u64>()
    }

    /// Events emitted as (kind, verdict or loss stage name, count), loss records as kind
    /// `lost` with their stage.
    pub fn counts(&self) -> impl Iterator<Item = (String, String, u64)> + '_ {
        self.all().into_iter().map(|((kind, v), n)| {
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
        self.all()
            .get(&(kind as i32, verdict as i32))
            .copied()
            .unwrap_or(0)
    }

    /// The named counters (not the events), in the names of the status API.
    pub fn named(&self) -> [(&'static str, u64); 8] {
        [
            ("decode_errors", self.decode_errors),
            ("name_unresolved", self.name_unresolved),
            ("journal_errors", self.journal_errors),
            ("journal_unjournaled", self.journal_unjournaled),
            ("journal_outages", self.journal_outages),
            ("chmod_reverted", self.chmod_reverted),
            ("chmod_revert_failed", self.chmod_revert_failed),
            ("chmod_path_rule_matches", self.chmod_path_rule_matches),
        ]
    }
}
