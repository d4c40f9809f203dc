//! The filter key: what a subscriber's filter looks at (kind, verdict, the pod's namespace,
//! name and labels), computed once per event, so the live fan-out and replay never decode the
//! message to filter it. A [`Matcher`] is a `sensor.v1.Filter` compiled once per subscriber.

use std::sync::Arc;

use prost::{
    Message as _,
    encoding::{DecodeContext, WireType},
};
use sensor_proto::v1 as pb;

use super::proto::kind_of;

/// The pod fields filters use.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PodKey {
    pub namespace: String,
    pub name: String,
    /// Sorted by key.
    pub labels: Vec<(String, String)>,
}

impl PodKey {
    pub fn of(pod: &pb::Pod) -> Self {
        let mut labels: Vec<(String, String)> = pod
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        labels.sort_unstable();
        Self {
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            labels,
        }
    }

    fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .binary_search_by(|(k, _)| k.as_str().cmp(key))
            .ok()
            .map(|i| self.labels[i].1.as_str())
    }
}

/// What filters see of one event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Key {
    pub kind: pb::EventKind,
    /// `sensor.v1.Verdict` number.
    pub verdict: i32,
    /// `None` for host processes (or when not looked at: see [`Key::scan`]).
    pub pod: Option<Arc<PodKey>>,
}

impl Key {
    /// The key of a decoded event.
    pub fn of(event: &pb::Event) -> Self {
        Self {
            kind: kind_of(event),
            verdict: event.verdict,
            pod: event.pod.as_ref().map(|p| Arc::new(PodKey::of(p))),
        }
    }

    /// The key of an encoded `sensor.v1.Event`, reading only its top-level fields (and the pod
    /// sub-message when `with_pod`). `None` when the bytes are not a well-formed message at
    /// the top level. What prost decodes gets the key of the decoded event: a pod field that
    /// comes twice is merged, as prost merges it, and groups (wire types 3 and 4) are skipped
    /// as prost skips them.
    pub fn scan(msg: &[u8], with_pod: bool) -> Option<Self> {
        let mut key = Self {
            kind: pb::EventKind::Unspecified,
            verdict: 0,
            pod: None,
        };
        let mut pod: Option<pb::Pod> = None;
        let mut at = 0;
        while at < msg.len() {
            let tag = varint(msg, &mut at)?;
            let field = tag >> 3;
            match tag & 7 {
                0 => {
                    let v = varint(msg, &mut at)?;
                    if field == 10 {
                        key.verdict = v as i32;
                    }
                }
                1 => at = at.checked_add(8).filter(|&a| a <= msg.len())?,
                5 => at = at.checked_add(4).filter(|&a| a <= msg.len())?,
                2 => {
                    let len = usize::try_from(varint(msg, &mut at)?).ok()?;
                    let end = at.checked_add(len).filter(|&e| e <= msg.len())?;
                    match field {
                        6 if with_pod => {
                            pod.get_or_insert_default().merge(&msg[at..end]).ok()?;
                        }
                        20..=27 => key.kind = body_kind(field),
                        _ => {}
                    }
                    at = end;
                }
                3 => {
                    let mut rest = msg.get(at..)?;
                    let before = rest.len();
                    prost::encoding::skip_field(
                        WireType::StartGroup,
                        u32::try_from(field).ok()?,
                        &mut rest,
                        DecodeContext::default(),
                    )
                    .ok()?;
                    at += before - rest.len();
                }
                _ => return None,
            }
        }
        key.pod = pod.map(|p| Arc::new(PodKey::of(&p)));
        Some(key)
    }
}

fn body_kind(field: u64) -> pb::EventKind {
    match field {
        20 => pb::EventKind::Connect,
        21 => pb::EventKind::Chmod,
        22 => pb::EventKind::Privilege,
        23 => pb::EventKind::Exec,
        24 => pb::EventKind::Exit,
        25 => pb::EventKind::Lost,
        26 => pb::EventKind::Policy,
        27 => pb::EventKind::Posture,
        _ => pb::EventKind::Unspecified,
    }
}

fn varint(b: &[u8], at: &mut usize) -> Option<u64> {
    let mut rest = b.get(*at..)?;
    let before = rest.len();
    let v = prost::encoding::decode_varint(&mut rest).ok()?;
    *at += before - rest.len();
    Some(v)
}

/// A `sensor.v1.Filter`, compiled: kinds and verdicts as bit sets.
#[derive(Clone, Debug, Default)]
pub struct Matcher {
    /// Bit per `EventKind` number; 0 = any.
    kinds: u64,
    /// Bit per `Verdict` number; 0 = any.
    verdicts: u64,
    namespaces: Vec<String>,
    pods: Vec<String>,
    labels: Vec<(String, String)>,
}

fn bits(values: &[i32]) -> u64 {
    // Validated filters hold known enum values only; anything else sets bit 63, which no event
    // has: the set is not empty, and that value matches nothing.
    values.iter().fold(0, |m, &v| match u32::try_from(v) {
        Ok(v) if v < 63 => m | 1 << v,
        _ => m | 1 << 63,
    })
}

impl Matcher {
    pub fn new(filter: &pb::Filter) -> Self {
        Self {
            kinds: bits(&filter.kinds),
            verdicts: bits(&filter.verdicts),
            namespaces: filter.namespaces.clone(),
            pods: filter.pods.clone(),
            labels: filter
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }

    /// Whether the filter looks at the pod (replay then reads the pod from the message).
    pub fn needs_pod(&self) -> bool {
        !(self.namespaces.is_empty() && self.pods.is_empty() && self.labels.is_empty())
    }

    /// Whether an event with `key` passes. Loss records always pass: loss is never hidden.
    pub fn matches(&self, key: &Key) -> bool {
        if key.kind == pb::EventKind::Lost {
            return true;
        }
        if self.kinds != 0 && self.kinds & 1 << (key.kind as u32) == 0 {
            return false;
        }
        let verdict_bit = u32::try_from(key.verdict).ok().filter(|v| *v < 64);
        if self.verdicts != 0 && verdict_bit.is_none_or(|v| self.verdicts & 1 << v == 0) {
            return false;
        }
        if !self.needs_pod() {
            return true;
        }
        let Some(pod) = &key.pod else {
            return false;
        };
        (self.namespaces.is_empty() || self.namespaces.contains(&pod.namespace))
            && (self.pods.is_empty() || self.pods.contains(&pod.name))
            && self
                .labels
                .iter()
                .all(|(k, v)| pod.label(k) == Some(v.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::filter;

    /// (namespace, name, labels)
    type PodSpec<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)]);

    fn event(kind: u8, verdict: pb::Verdict, pod: Option<PodSpec<'_>>) -> pb::Event {
        use pb::event::Body as B;
        let body = match kind {
            0 => B::Connect(pb::Connect::default()),
            1 => B::Chmod(pb::Chmod::default()),
            2 => B::Exec(pb::Exec::default()),
            _ => B::Lost(pb::Lost::default()),
        };
        pb::Event {
            seq: 9,
            verdict: verdict as i32,
            node: "n".into(),
            pod: pod.map(|(ns, name, labels)| pb::Pod {
                namespace: ns.into(),
                name: name.into(),
                uid: "u".into(),
                labels: labels
                    .iter()
                    .map(|(k, v)| ((*k).into(), (*v).into()))
                    .collect(),
                ..Default::default()
            }),
            body: Some(body),
            ..Default::default()
        }
    }

    /// The filter's meaning, written out on the decoded event.
    fn reference(f: &pb::Filter, e: &pb::Event) -> bool {
        let kind = kind_of(e) as i32;
        let pod_ok = |p: &pb::Pod| {
            (f.namespaces.is_empty() || f.namespaces.contains(&p.namespace))
                && (f.pods.is_empty() || f.pods.contains(&p.name))
                && f.labels.iter().all(|(k, v)| p.labels.get(k) == Some(v))
        };
        kind == pb::EventKind::Lost as i32
            || ((f.kinds.is_empty() || f.kinds.contains(&kind))
                && (f.verdicts.is_empty() || f.verdicts.contains(&e.verdict))
                && (f.namespaces.is_empty() && f.pods.is_empty() && f.labels.is_empty()
                    || e.pod.as_ref().is_some_and(pod_ok)))
    }

    fn filters() -> Vec<pb::Filter> {
        let s = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let mut out = vec![pb::Filter::default()];
        for kinds in [&[][..], &["connect"], &["chmod", "exec"]] {
            for verdicts in [&[][..], &["blocked"], &["audited", "allowed"]] {
                for ns in [&[][..], &["prod"]] {
                    for labels in [&[][..], &["app=web"], &["app=web", "tier=1"]] {
                        for pods in [&[][..], &["web-1"]] {
                            out.push(
                                filter::build(
                                    &s(kinds),
                                    &s(ns),
                                    &s(pods),
                                    &s(labels),
                                    &s(verdicts),
                                )
                                .unwrap(),
                            );
                        }
                    }
                }
            }
        }
        out
    }

    fn events() -> Vec<pb::Event> {
        let mut out = Vec::new();
        for kind in 0..4 {
            for verdict in [
                pb::Verdict::Blocked,
                pb::Verdict::Audited,
                pb::Verdict::Killed,
            ] {
                out.push(event(kind, verdict, None));
                out.push(event(
                    kind,
                    verdict,
                    Some(("prod", "web-1", &[("app", "web")])),
                ));
                out.push(event(
                    kind,
                    verdict,
                    Some(("prod", "web-2", &[("app", "web"), ("tier", "1")])),
                ));
                out.push(event(
                    kind,
                    verdict,
                    Some(("dev", "web-1", &[("tier", "1")])),
                ));
            }
        }
        out
    }

    #[test]
    fn the_key_read_from_the_bytes_decides_as_the_decoded_event_does() {
        let events = events();
        let mut checked = 0;
        for f in filters() {
            let m = Matcher::new(&f);
            for e in &events {
                let expected = reference(&f, e);
                assert_eq!(m.matches(&Key::of(e)), expected, "{f:?} on {e:?}");
                let bytes = e.encode_to_vec();
                let scanned = Key::scan(&bytes, m.needs_pod()).expect("well-formed");
                assert_eq!(m.matches(&scanned), expected, "{f:?} on the bytes of {e:?}");
                checked += usize::from(expected);
            }
        }
        assert!(checked > 100, "the table has matching cases: {checked}");
    }

    #[test]
    fn scanning_reads_kind_verdict_and_pod_and_refuses_malformed_bytes() {
        let e = event(
            1,
            pb::Verdict::Killed,
            Some(("prod", "web-1", &[("b", "2"), ("a", "1")])),
        );
        let key = Key::scan(&e.encode_to_vec(), true).unwrap();
        assert_eq!(key, Key::of(&e));
        assert_eq!(key.kind, pb::EventKind::Chmod);
        assert_eq!(key.verdict, pb::Verdict::Killed as i32);
        let pod = key.pod.unwrap();
        assert_eq!(
            pod.labels,
            [("a".into(), "1".into()), ("b".into(), "2".into())]
        );
        assert_eq!(Key::scan(&e.encode_to_vec(), false).unwrap().pod, None);
        let mut bytes = e.encode_to_vec();
        bytes.truncate(bytes.len() - 1);
        assert_eq!(Key::scan(&bytes, false), None, "a cut message");
        assert_eq!(Key::scan(&[0x0f], false), None, "wire type 7");
        assert_eq!(
            Key::scan(&[0x0c], false),
            None,
            "an end group without a start"
        );
    }

    /// Found by the `get_events` fuzz target: bytes prost decodes (a group, a pod field twice)
    /// got no key, or the key of the last pod only, so gRPC replay reported a loss or filtered
    /// an event other than the decoding readers (exporters, `sensor tail --file`) do.
    #[test]
    fn scanning_reads_what_prost_decodes_as_prost_does() {
        let pod = |ns: &str, labels: &[(&str, &str)]| pb::Pod {
            namespace: ns.into(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
            ..Default::default()
        };
        let mut bytes = event(1, pb::Verdict::Blocked, None).encode_to_vec();
        // Field 14 as a group holding a varint, then the pod twice.
        bytes.extend_from_slice(&[0x73, 0x08, 0x01, 0x74]);
        prost::encoding::message::encode(6, &pod("prod", &[("a", "1")]), &mut bytes);
        prost::encoding::message::encode(6, &pod("", &[("b", "2")]), &mut bytes);
        let decoded = pb::Event::decode(bytes.as_slice()).unwrap();
        let key = Key::scan(&bytes, true).expect("prost decodes it");
        assert_eq!(key, Key::of(&decoded));
        let pod = key.pod.unwrap();
        assert_eq!(pod.namespace, "prod");
        assert_eq!(
            pod.labels,
            [("a".into(), "1".into()), ("b".into(), "2".into())]
        );
        assert_eq!(
            Key::scan(&[0x32, 0x80], true),
            None,
            "a length past the end"
        );
    }
}
