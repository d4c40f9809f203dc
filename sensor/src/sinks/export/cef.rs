//! ArcSight CEF (Common Event Format, revision 25) lines: how Microsoft Sentinel, QRadar and
//! ArcSight ingest agent alerts over syslog. The field mapping is docs/export.md's 'CEF
//! mapping' table; what has no CEF key is in `msg` (the one-line summary).
//!
//! `CEF:0|Vendor|Product|Version|Signature ID|Name|Severity|Extension`. Header fields escape `\`
//! and `|`; extension values escape `\`, `=` and line breaks (`\n`, `\r`); keys are fixed.

use std::fmt::Write as _;

use sensor_proto::v1 as pb;

use super::{
    facts,
    ocsf::{PRODUCT_NAME, VENDOR_NAME},
};
use crate::event::compact::to_summary;

fn header(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '|' => out.push_str("\\|"),
            c if breaks_lines(c) => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Control characters and the Unicode line and paragraph separators: a receiver may split a
/// line at any of them.
fn breaks_lines(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')
}

/// Extension `key=value` pairs; empty values are left out.
#[derive(Default)]
struct Extension(String);

impl Extension {
    fn put(&mut self, key: &str, value: impl std::fmt::Display) {
        let value = value.to_string();
        if value.is_empty() {
            return;
        }
        if !self.0.is_empty() {
            self.0.push(' ');
        }
        self.0.push_str(key);
        self.0.push('=');
        for c in value.chars() {
            match c {
                '\\' => self.0.push_str("\\\\"),
                '=' => self.0.push_str("\\="),
                '\n' => self.0.push_str("\\n"),
                '\r' => self.0.push_str("\\r"),
                c if breaks_lines(c) => self.0.push(' '),
                c => self.0.push(c),
            }
        }
    }

    /// `csNLabel=label csN=value` (custom strings 1..6).
    fn custom(&mut self, n: u8, label: &str, value: &str) {
        if !value.is_empty() {
            self.put(&format!("cs{n}Label"), label);
            self.put(&format!("cs{n}"), value);
        }
    }
}

fn ms(ns: i64) -> String {
    if ns == 0 {
        String::new()
    } else {
        (ns / 1_000_000).to_string()
    }
}

/// One event as a CEF line (no line break).
pub fn to_cef(e: &pb::Event) -> String {
    use pb::event::Body as B;
    let kind = facts::kind(e);
    let verdict = facts::verdict(e);
    let signature = if verdict.is_empty() {
        kind.clone()
    } else {
        format!("{kind}:{verdict}")
    };
    let mut name = if verdict.is_empty() {
        kind.clone()
    } else {
        format!("{kind} {verdict}")
    };
    if !e.rule.is_empty() {
        let _ = write!(name, " ({})", e.rule);
    }
    let mut x = Extension::default();
    x.put("rt", ms(e.time_unix_ns));
    if e.seq != 0 {
        x.put("externalId", e.seq);
    }
    x.put("dvchost", &e.node);
    x.put("cat", &kind);
    x.put("act", &verdict);
    if let Some(p) = &e.process {
        if p.pid != 0 {
            x.put("spid", p.pid);
            x.put("suid", p.uid);
        }
        x.put("sproc", facts::program(p));
    }
    match &e.body {
        Some(B::Connect(c)) => {
            x.put("dst", &c.dst_addr);
            x.put("dpt", c.dst_port);
            x.put("proto", facts::transport(c).to_ascii_uppercase());
        }
        Some(B::Chmod(c)) => x.put("filePath", facts::chmod_file(c)),
        Some(B::Exec(ex)) => x.put("filePath", &ex.exe),
        Some(B::Lost(l)) => x.put("cnt", l.count),
        _ => {}
    }
    if let Some(r) = &e.repeat {
        x.put("cnt", r.count);
        x.put("start", ms(r.first_time_unix_ns));
        x.put("end", ms(r.last_time_unix_ns));
    }
    if let Some(pod) = &e.pod {
        x.custom(1, "namespace", &pod.namespace);
        x.custom(2, "pod", &pod.name);
        x.custom(3, "container", &pod.container_name);
    }
    x.custom(4, "rule", &e.rule);
    x.custom(5, "policy", &e.policy);
    x.custom(6, "cluster", &e.cluster);
    x.put("msg", to_summary(e));
    format!(
        "CEF:0|{}|{}|{}|{}|{}|{}|{}",
        header(VENDOR_NAME),
        header(PRODUCT_NAME),
        header(env!("CARGO_PKG_VERSION")),
        header(&signature),
        header(&name),
        facts::level(e).cef(),
        x.0
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chmod(verdict: pb::Verdict) -> pb::Event {
        pb::Event {
            seq: 42,
            time_unix_ns: 1_700_000_000_123_456_789,
            node: "node-1".into(),
            cluster: "prod-eu".into(),
            verdict: verdict as i32,
            rule: "no-setid".into(),
            policy: "default".into(),
            process: Some(pb::Process {
                pid: 7,
                uid: 1000,
                comm: "ch|mod".into(),
                ..Default::default()
            }),
            pod: Some(pb::Pod {
                namespace: "team=a".into(),
                name: "web-1".into(),
                ..Default::default()
            }),
            body: Some(pb::event::Body::Chmod(pb::Chmod {
                path: "/tmp/a\\b\nc".into(),
                mode: 0o4755,
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    #[test]
    fn header_and_extension_carry_the_documented_fields_escaped() {
        let line = to_cef(&chmod(pb::Verdict::Blocked));
        let (head, ext) = line.split_at(line.find("|7|").unwrap() + 3);
        assert_eq!(
            head,
            format!(
                "CEF:0|sensor project|sensor|{}|chmod:blocked|chmod blocked (no-setid)|7|",
                env!("CARGO_PKG_VERSION")
            )
        );
        for want in [
            "rt=1700000000123 ",
            "externalId=42 ",
            "dvchost=node-1 ",
            "cat=chmod ",
            "act=blocked ",
            "spid=7 ",
            "suid=1000 ",
            "sproc=ch|mod ",
            "filePath=/tmp/a\\\\b\\nc ",
            "cs1Label=namespace cs1=team\\=a ",
            "cs2Label=pod cs2=web-1 ",
            "cs4Label=rule cs4=no-setid ",
            "cs6Label=cluster cs6=prod-eu ",
        ] {
            assert!(ext.contains(want), "{want:?} not in {ext}");
        }
        assert!(!ext.contains("cs3"), "no container, no cs3: {ext}");
        let mut odd = chmod(pb::Verdict::Blocked);
        odd.rule = "a\u{2028}b\u{b}c|d".into();
        let line = to_cef(&odd);
        assert!(line.contains("|chmod blocked (a b c\\|d)|"), "{line}");
        assert!(line.contains("cs4=a b c|d "), "{line}");
        assert!(!line.contains('\n'));
    }

    #[test]
    fn severity_follows_the_verdict() {
        let sev = |v| {
            let line = to_cef(&chmod(v));
            line.split('|').nth(6).unwrap().to_owned()
        };
        assert_eq!(sev(pb::Verdict::Blocked), "7");
        assert_eq!(sev(pb::Verdict::Killed), "7");
        assert_eq!(sev(pb::Verdict::Audited), "5");
        assert_eq!(sev(pb::Verdict::Allowed), "3");
    }
}
