//! Posture records in the event stream (docs/hardening.md, "Posture in the stream"): the node's
//! posture when the daemon starts and when it changes (re-read every [`NODE_REREAD`]), and a
//! pod's findings when it first appears with findings or when they change (also to none).

use std::{
    collections::BTreeMap,
    path::PathBuf,
    time::{Duration, Instant},
};

use sensor_proto::v1 as pb;

use super::{node::NodePosture, pod::Finding};
use crate::{
    attribution::pods::PostureChange,
    event::{proto::Origin, time::now_unix_ns},
};

/// How often the daemon re-reads the node's posture (a pending reboot and the lockdown mode
/// can change while it runs).
pub const NODE_REREAD: Duration = Duration::from_secs(60);

/// What the daemon last reported of the node, and when to look again.
pub struct PostureWatch {
    root: PathBuf,
    origin: Origin,
    /// Protection -> the tier this daemon attached it at.
    tiers: BTreeMap<String, String>,
    node: NodePosture,
    next_read: Instant,
}

impl PostureWatch {
    /// `node`: the posture as read below `root` at start; returns the watch and the start
    /// record.
    pub fn start(
        root: PathBuf,
        node: NodePosture,
        origin: Origin,
        tiers: BTreeMap<String, String>,
        now: Instant,
    ) -> (Self, pb::Event) {
        let watch = Self {
            root,
            origin,
            tiers,
            node,
            next_read: now + NODE_REREAD,
        };
        let start = watch.node_event(pb::PostureReason::Start);
        (watch, start)
    }

    /// A record when the node's posture changed since the last one (read at most every
    /// [`NODE_REREAD`]).
    pub fn node_changed(&mut self, now: Instant) -> Option<pb::Event> {
        if now < self.next_read {
            return None;
        }
        self.next_read = now + NODE_REREAD;
        let node = self.node.reread(&self.root);
        if node == self.node {
            return None;
        }
        self.node = node;
        Some(self.node_event(pb::PostureReason::Changed))
    }

    fn node_event(&self, reason: pb::PostureReason) -> pb::Event {
        record(
            &self.origin,
            None,
            pb::Posture {
                subject: pb::PostureSubject::Node as i32,
                reason: reason as i32,
                findings: Vec::new(),
                node: Some(self.node.to_proto(&self.tiers)),
            },
        )
    }

    /// One record per pod whose findings changed ([`crate::attribution::pods::PodIndex::posture_changes`]).
    pub fn pod_events(&self, changes: Vec<PostureChange>) -> Vec<pb::Event> {
        changes
            .into_iter()
            .map(|c| {
                let reason = if c.appeared {
                    pb::PostureReason::Appeared
                } else {
                    pb::PostureReason::Changed
                };
                record(
                    &self.origin,
                    Some(c.pod.into_proto()),
                    pb::Posture {
                        subject: pb::PostureSubject::Pod as i32,
                        reason: reason as i32,
                        findings: c.findings.iter().map(finding).collect(),
                        node: None,
                    },
                )
            })
            .collect()
    }
}

fn finding(f: &Finding) -> pb::PostureFinding {
    pb::PostureFinding {
        finding: f.finding.to_owned(),
        container: f.container.clone(),
    }
}

fn record(origin: &Origin, pod: Option<pb::Pod>, posture: pb::Posture) -> pb::Event {
    pb::Event {
        node: origin.node.clone(),
        cluster: origin.cluster.clone(),
        time_unix_ns: now_unix_ns(),
        enrichment: pb::Enrichment::Complete as i32,
        pod,
        body: Some(pb::event::Body::Posture(posture)),
        ..Default::default()
    }
}

#[cfg(test)]
#[path = "watch_tests.rs"]
mod tests;
