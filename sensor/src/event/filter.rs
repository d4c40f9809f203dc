//! Event filters: built from `sensor tail` flags, checked by the server (bad values are
//! `InvalidArgument`), and applied server-side and to offline replays alike.

use sensor_proto::v1 as pb;

use crate::event::{
    key::{Key, Matcher},
    names::{parse_kind, parse_verdict},
};

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error(
        "--kind '{0}': unknown kind (connect, chmod, privilege, exec, exit, policy, posture, lost)"
    )]
    Kind(String),
    #[error("--verdict '{0}': unknown verdict (blocked, audited, allowed, killed)")]
    Verdict(String),
    #[error("--label '{0}': expected KEY=VALUE")]
    Label(String),
    #[error("filter: unknown {what} value {value}")]
    Value { what: &'static str, value: i32 },
    #[error("filter: {count} {what}, at most {max}")]
    TooMany {
        what: &'static str,
        count: usize,
        max: usize,
    },
    #[error("filter: a {what} of {len} bytes, at most {max}")]
    TooLong {
        what: &'static str,
        len: usize,
        max: usize,
    },
}

/// At most this many values in each list of a filter (kinds, verdicts, namespaces, pods,
/// labels): a filter is matched against every event, so its size is bounded.
pub const MAX_FILTER_VALUES: usize = 256;
/// At most this many bytes in a namespace, pod name, label key or value (Kubernetes names are
/// at most 253, label keys 317 with their prefix).
pub const MAX_FILTER_STRING: usize = 320;

/// Build a filter from flag values (each may also be comma-separated).
pub fn build(
    kinds: &[String],
    namespaces: &[String],
    pods: &[String],
    labels: &[String],
    verdicts: &[String],
) -> Result<pb::Filter, FilterError> {
    let split = |v: &[String]| -> Vec<String> {
        v.iter()
            .flat_map(|s| s.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let kinds = split(kinds)
        .iter()
        .map(|k| {
            parse_kind(k)
                .map(|k| k as i32)
                .ok_or_else(|| FilterError::Kind(k.clone()))
        })
        .collect::<Result<_, _>>()?;
    let verdicts = split(verdicts)
        .iter()
        .map(|v| {
            parse_verdict(v)
                .map(|v| v as i32)
                .ok_or_else(|| FilterError::Verdict(v.clone()))
        })
        .collect::<Result<_, _>>()?;
    let labels = split(labels)
        .iter()
        .map(|l| match l.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
            _ => Err(FilterError::Label(l.clone())),
        })
        .collect::<Result<_, _>>()?;
    Ok(pb::Filter {
        kinds,
        namespaces: split(namespaces),
        pods: split(pods),
        labels,
        verdicts,
    })
}

/// Reject enum values this build does not know (a newer client, or garbage), and filters over
/// the bounds ([`MAX_FILTER_VALUES`], [`MAX_FILTER_STRING`]).
pub fn validate(filter: &pb::Filter) -> Result<(), FilterError> {
    let lists = [
        ("kinds", filter.kinds.len()),
        ("verdicts", filter.verdicts.len()),
        ("namespaces", filter.namespaces.len()),
        ("pods", filter.pods.len()),
        ("labels", filter.labels.len()),
    ];
    for (what, count) in lists {
        if count > MAX_FILTER_VALUES {
            return Err(FilterError::TooMany {
                what,
                count,
                max: MAX_FILTER_VALUES,
            });
        }
    }
    let strings = filter
        .namespaces
        .iter()
        .map(|s| ("namespace", s))
        .chain(filter.pods.iter().map(|s| ("pod name", s)))
        .chain(
            filter
                .labels
                .iter()
                .flat_map(|(k, v)| [("label key", k), ("label value", v)]),
        );
    for (what, s) in strings {
        if s.len() > MAX_FILTER_STRING {
            return Err(FilterError::TooLong {
                what,
                len: s.len(),
                max: MAX_FILTER_STRING,
            });
        }
    }
    for &k in &filter.kinds {
        if pb::EventKind::try_from(k).map_or(true, |k| k == pb::EventKind::Unspecified) {
            return Err(FilterError::Value {
                what: "kind",
                value: k,
            });
        }
    }
    for &v in &filter.verdicts {
        if pb::Verdict::try_from(v).map_or(true, |v| v == pb::Verdict::Unspecified) {
            return Err(FilterError::Value {
                what: "verdict",
                value: v,
            });
        }
    }
    Ok(())
}

/// Whether `event` passes. Loss records always pass: loss is never hidden. (The server
/// compiles the filter once and matches the events' keys: [`Matcher`].)
pub fn matches(filter: &pb::Filter, event: &pb::Event) -> bool {
    Matcher::new(filter).matches(&Key::of(event))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    /// (namespace, name, labels)
    type PodSpec<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)]);

    fn event(verdict: pb::Verdict, pod: Option<PodSpec<'_>>) -> pb::Event {
        pb::Event {
            verdict: verdict as i32,
            pod: pod.map(|(ns, name, labels)| pb::Pod {
                namespace: ns.into(),
                name: name.into(),
                labels: labels
                    .iter()
                    .map(|(k, v)| ((*k).into(), (*v).into()))
                    .collect(),
                ..Default::default()
            }),
            body: Some(pb::event::Body::Connect(pb::Connect::default())),
            ..Default::default()
        }
    }

    #[test]
    fn builds_and_rejects_flag_values() {
        let f = build(
            &s(&["connect,chmod"]),
            &s(&["prod"]),
            &[],
            &s(&["app=web"]),
            &s(&["blocked"]),
        )
        .unwrap();
        assert_eq!(
            f.kinds,
            [pb::EventKind::Connect as i32, pb::EventKind::Chmod as i32]
        );
        assert_eq!(f.labels.get("app").map(String::as_str), Some("web"));
        assert_eq!(
            build(&s(&["conect"]), &[], &[], &[], &[]),
            Err(FilterError::Kind("conect".into()))
        );
        assert_eq!(
            build(&[], &[], &[], &[], &s(&["deny"])),
            Err(FilterError::Verdict("deny".into()))
        );
        assert_eq!(
            build(&[], &[], &[], &s(&["app"]), &[]),
            Err(FilterError::Label("app".into()))
        );
        assert!(
            validate(&pb::Filter {
                kinds: vec![99],
                ..Default::default()
            })
            .is_err()
        );
        assert!(
            validate(&pb::Filter {
                verdicts: vec![0],
                ..Default::default()
            })
            .is_err()
        );
    }

    #[test]
    fn filters_over_the_bounds_are_refused_and_say_which_bound() {
        let at_most = pb::Filter {
            namespaces: vec!["n".repeat(MAX_FILTER_STRING); MAX_FILTER_VALUES],
            kinds: vec![pb::EventKind::Chmod as i32; MAX_FILTER_VALUES],
            ..Default::default()
        };
        assert_eq!(validate(&at_most), Ok(()));
        let mut many = at_most.clone();
        many.namespaces.push("one-more".into());
        assert_eq!(
            validate(&many).unwrap_err().to_string(),
            "filter: 257 namespaces, at most 256"
        );
        let mut long = pb::Filter::default();
        long.labels
            .insert("app".into(), "v".repeat(MAX_FILTER_STRING + 1));
        assert_eq!(
            validate(&long).unwrap_err().to_string(),
            "filter: a label value of 321 bytes, at most 320"
        );
        let pods = pb::Filter {
            pods: vec!["p".repeat(10_000)],
            ..Default::default()
        };
        assert!(matches!(
            validate(&pods),
            Err(FilterError::TooLong {
                what: "pod name",
                ..
            })
        ));
    }

    #[test]
    fn matches_by_kind_verdict_pod_and_labels() {
        let f = build(
            &s(&["connect"]),
            &s(&["prod"]),
            &[],
            &s(&["app=web"]),
            &s(&["blocked"]),
        )
        .unwrap();
        assert!(matches(
            &f,
            &event(
                pb::Verdict::Blocked,
                Some(("prod", "web-1", &[("app", "web")]))
            )
        ));
        assert!(!matches(
            &f,
            &event(
                pb::Verdict::Audited,
                Some(("prod", "web-1", &[("app", "web")]))
            )
        ));
        assert!(!matches(
            &f,
            &event(
                pb::Verdict::Blocked,
                Some(("dev", "web-1", &[("app", "web")]))
            )
        ));
        assert!(!matches(
            &f,
            &event(
                pb::Verdict::Blocked,
                Some(("prod", "web-1", &[("app", "db")]))
            )
        ));
        assert!(!matches(&f, &event(pb::Verdict::Blocked, None)));
        let lost = pb::Event {
            body: Some(pb::event::Body::Lost(pb::Lost::default())),
            ..Default::default()
        };
        assert!(matches(&f, &lost), "loss records always pass");
        assert!(matches(
            &pb::Filter::default(),
            &event(pb::Verdict::Allowed, None)
        ));
    }
}
