//! Encoding an event once: a [`Draft`] (the decoded kernel event and what attribution found)
//! becomes the bytes of its `sensor.v1.Event` without the `seq` field, the form the journal
//! stores and every subscriber receives (the sequence number is spliced in front when sent:
//! field 1 comes first in the canonical encoding, so the result is byte for byte what prost
//! would encode). Process and pod parts are encoded once per process and per pod and copied in.

use std::sync::{Arc, OnceLock};

use bytes::{BufMut as _, Bytes, BytesMut};
use prost::{
    Message as _,
    encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len},
};
use sensor_proto::v1 as pb;

use super::{
    Event,
    key::{Key, PodKey},
    proto,
};
use crate::{
    attribution::procs::ProcInfo,
    policy::{ActiveRules, Match, deciding},
};

/// A kernel event on its way to the journal: attributed, not yet encoded.
#[derive(Debug)]
pub struct Draft {
    pub event: Event,
    /// The rules in force when it was read (policy and rule names).
    pub rules: Arc<ActiveRules>,
    pub time_unix_ns: i64,
    pub process: Option<Arc<ProcInfo>>,
    /// Parent, grandparent, ... (nearest first).
    pub ancestors: Vec<Arc<ProcInfo>>,
    /// The cgroup v2 path, when known.
    pub cgroup: Option<Arc<str>>,
    pub pod: Option<Arc<PodAttr>>,
    pub enrichment: pb::Enrichment,
}

/// A pod as events carry it: its encoded `pod` field (tag included) and its filter key.
#[derive(Debug)]
pub struct PodAttr {
    encoded: Bytes,
    pub key: Arc<PodKey>,
}

impl PodAttr {
    pub fn new(pod: &pb::Pod) -> Self {
        let mut buf = BytesMut::new();
        prost::encoding::message::encode(6, pod, &mut buf);
        Self {
            encoded: buf.freeze(),
            key: Arc::new(PodKey::of(pod)),
        }
    }

    #[cfg(test)]
    pub fn decoded(&self) -> pb::Pod {
        let mut bytes = &self.encoded[..];
        let _tag = prost::encoding::decode_varint(&mut bytes).unwrap();
        let _len = prost::encoding::decode_varint(&mut bytes).unwrap();
        pb::Pod::decode(bytes).unwrap()
    }
}

/// A process's encoded parts, made on first use (a changed process is a new [`ProcInfo`]).
/// Clones start empty, so a copy never carries another's encoding.
#[derive(Debug, Default)]
pub struct ProcParts {
    /// `exe`, `args`, `ppid`, `euid` of a `sensor.v1.Process`.
    own: OnceLock<Bytes>,
    /// One `ancestors` entry (tag included) naming this process.
    ancestor: OnceLock<Bytes>,
}

impl Clone for ProcParts {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl PartialEq for ProcParts {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for ProcParts {}

fn own_part(info: &ProcInfo) -> &Bytes {
    info.parts.own.get_or_init(|| {
        let mut buf = BytesMut::new();
        put_str(&mut buf, 7, &info.exe);
        for a in &info.args {
            prost::encoding::string::encode(8, a, &mut buf);
        }
        put_u64(&mut buf, 9, u64::from(info.ppid));
        // `optional`: present even when 0.
        encode_key(10, WireType::Varint, &mut buf);
        encode_varint(u64::from(info.euid), &mut buf);
        buf.freeze()
    })
}

fn ancestor_part(info: &ProcInfo) -> &Bytes {
    info.parts.ancestor.get_or_init(|| {
        let a = pb::Ancestor {
            pid: info.pid,
            exe: info.exe.clone(),
            comm: info.comm.clone(),
        };
        let mut buf = BytesMut::new();
        prost::encoding::message::encode(11, &a, &mut buf);
        buf.freeze()
    })
}

fn u64_len(tag: u32, v: u64) -> usize {
    if v == 0 {
        0
    } else {
        key_len(tag) + encoded_len_varint(v)
    }
}

fn put_u64(buf: &mut BytesMut, tag: u32, v: u64) {
    if v != 0 {
        encode_key(tag, WireType::Varint, buf);
        encode_varint(v, buf);
    }
}

fn str_len(tag: u32, s: &str) -> usize {
    if s.is_empty() {
        0
    } else {
        key_len(tag) + encoded_len_varint(s.len() as u64) + s.len()
    }
}

fn put_str(buf: &mut BytesMut, tag: u32, s: &str) {
    if !s.is_empty() {
        encode_key(tag, WireType::LengthDelimited, buf);
        encode_varint(s.len() as u64, buf);
        buf.put_slice(s.as_bytes());
    }
}

/// `policy` and `rule` of an event: the deciding match's, or the file policy's name and no
/// rule when nothing matched.
fn named<'a>(rules: &'a ActiveRules, matches: &'a [Match]) -> (&'a str, &'a str) {
    match deciding(matches) {
        Some(m) => (&m.policy, &m.rule),
        None => (rules.policy(), ""),
    }
}

/// A `sensor.v1.RuleMatch`, written as field 12.
fn put_match(buf: &mut BytesMut, m: &Match) {
    let action = m.action.as_str();
    let len = str_len(1, &m.policy) + str_len(2, &m.rule) + str_len(3, action);
    encode_key(12, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
    put_str(buf, 1, &m.policy);
    put_str(buf, 2, &m.rule);
    put_str(buf, 3, action);
}

/// The `sensor.v1.Process` of a draft, written as field 5.
fn put_process(buf: &mut BytesMut, d: &Draft) {
    let e = &d.event;
    let own = d.process.as_deref().map(own_part);
    let ancestors = d.ancestors.iter().map(|a| ancestor_part(a).len());
    let cgroup = d.cgroup.as_deref().unwrap_or("");
    let len = u64_len(1, e.pid.into())
        + u64_len(2, e.tid.into())
        + u64_len(3, e.uid.into())
        + u64_len(4, e.gid.into())
        + str_len(5, &e.comm)
        + u64_len(6, e.cgroup_id)
        + own.map_or(0, Bytes::len)
        + ancestors.sum::<usize>()
        + str_len(12, cgroup);
    encode_key(5, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
    put_u64(buf, 1, e.pid.into());
    put_u64(buf, 2, e.tid.into());
    put_u64(buf, 3, e.uid.into());
    put_u64(buf, 4, e.gid.into());
    put_str(buf, 5, &e.comm);
    put_u64(buf, 6, e.cgroup_id);
    if let Some(own) = own {
        buf.put_slice(own);
    }
    for a in &d.ancestors {
        buf.put_slice(ancestor_part(a));
    }
    put_str(buf, 12, cgroup);
}

/// An encoded event: its bytes without `seq`, and what filters and counters need.
pub struct Encoded {
    pub payload: Bytes,
    pub key: Key,
    pub time_unix_ns: i64,
    /// For the counters: the verdict, or a loss record's stage.
    pub second: i32,
}

impl Draft {
    /// Encode: the `sensor.v1.Event` without `seq`.
    pub fn encode(mut self, origin: &proto::Origin) -> Encoded {
        let kind = proto::kind(self.event.kind());
        let (matches, body) =
            proto::matches_and_body(&mut self.event, &self.rules, self.process.as_deref());
        let (policy, rule) = named(&self.rules, &matches);
        self.rules.counts.count(
            &matches,
            matches!(
                self.event.verdict,
                sensor_common::Verdict::Blocked | sensor_common::Verdict::Killed
            ),
        );
        let verdict = proto::verdict(self.event.verdict) as i32;
        let mut buf = BytesMut::with_capacity(512);
        put_u64(&mut buf, 2, self.event.ktime_ns);
        put_u64(&mut buf, 3, self.time_unix_ns as u64);
        put_str(&mut buf, 4, &origin.node);
        put_process(&mut buf, &self);
        if let Some(pod) = &self.pod {
            buf.put_slice(&pod.encoded);
        }
        put_u64(&mut buf, 7, self.enrichment as i32 as u64);
        put_str(&mut buf, 8, policy);
        put_str(&mut buf, 9, rule);
        put_u64(&mut buf, 10, verdict as u64);
        for m in &matches {
            put_match(&mut buf, m);
        }
        put_str(&mut buf, 13, &origin.cluster);
        body.encode(&mut buf);
        Encoded {
            payload: buf.freeze(),
            key: Key {
                kind,
                verdict,
                pod: self.pod.as_ref().map(|p| Arc::clone(&p.key)),
            },
            time_unix_ns: self.time_unix_ns,
            second: verdict,
        }
    }

    /// The same event as a decoded `sensor.v1.Event` (what [`Draft::encode`] must match).
    #[cfg(test)]
    pub fn to_pb(&self, origin: &proto::Origin) -> pb::Event {
        let mut event = self.event.clone();
        let (matches, body) =
            proto::matches_and_body(&mut event, &self.rules, self.process.as_deref());
        let (policy, rule) = named(&self.rules, &matches);
        let e = &self.event;
        let mut process = pb::Process {
            pid: e.pid,
            tid: e.tid,
            uid: e.uid,
            gid: e.gid,
            comm: e.comm.clone(),
            cgroup_id: e.cgroup_id,
            cgroup: self.cgroup.as_deref().unwrap_or("").to_owned(),
            ..Default::default()
        };
        if let Some(info) = &self.process {
            process.exe = info.exe.clone();
            process.args = info.args.clone();
            process.ppid = info.ppid;
            process.euid = Some(info.euid);
            process.ancestors = self
                .ancestors
                .iter()
                .map(|a| pb::Ancestor {
                    pid: a.pid,
                    exe: a.exe.clone(),
                    comm: a.comm.clone(),
                })
                .collect();
        }
        pb::Event {
            seq: 0,
            ktime_ns: e.ktime_ns,
            time_unix_ns: self.time_unix_ns,
            node: origin.node.clone(),
            cluster: origin.cluster.clone(),
            process: Some(process),
            pod: self.pod.as_ref().map(|p| p.decoded()),
            enrichment: self.enrichment as i32,
            policy: policy.to_owned(),
            rule: rule.to_owned(),
            matches: matches.iter().map(proto::rule_match).collect(),
            verdict: proto::verdict(e.verdict) as i32,
            repeat: None,
            body: Some(body),
        }
    }
}

/// A daemon-made event (loss record, policy change), encoded without `seq`.
pub fn encode_pb(event: &pb::Event) -> Encoded {
    let second = match &event.body {
        Some(pb::event::Body::Lost(l)) => l.stage,
        _ => event.verdict,
    };
    let mut event = event.clone();
    event.seq = 0;
    Encoded {
        payload: Bytes::from(event.encode_to_vec()),
        key: Key::of(&event),
        time_unix_ns: event.time_unix_ns,
        second,
    }
}

/// The length of `seq` as field 1 (0 when there is none).
pub fn seq_len(seq: u64) -> usize {
    u64_len(1, seq)
}

/// Write `seq` as field 1 (nothing when 0): in front of a payload, the whole message.
pub fn put_seq(buf: &mut impl bytes::BufMut, seq: u64) {
    if seq != 0 {
        encode_key(1, WireType::Varint, buf);
        encode_varint(seq, buf);
    }
}

#[cfg(test)]
#[path = "encode_tests.rs"]
mod tests;
