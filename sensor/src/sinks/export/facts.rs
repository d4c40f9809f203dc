//! What every wire format of the network exporters says about an event in the same words: its
//! kind and verdict names, its id across nodes, and how serious it is (syslog severity, OTLP
//! severity number, CEF severity come from one [`Level`]).

use sensor_proto::v1 as pb;

use crate::event::{
    names::{kind_name, verdict_name},
    proto::kind_of,
};

/// How serious an event is (docs/export.md, 'Severity').
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Allowed, exec, exit.
    Info,
    /// Audited (would have been blocked), a policy applied, a posture that fails a check.
    Notice,
    /// Blocked or killed.
    Warning,
    /// Events lost, a policy refused.
    Error,
}

pub fn level(e: &pb::Event) -> Level {
    match &e.body {
        Some(pb::event::Body::Lost(_)) => Level::Error,
        Some(pb::event::Body::PolicyChange(p)) if p.accepted => Level::Notice,
        Some(pb::event::Body::PolicyChange(_)) => Level::Error,
        Some(pb::event::Body::Posture(p)) if posture_fails(p) => Level::Notice,
        Some(pb::event::Body::Posture(_)) => Level::Info,
        _ => match e.verdict() {
            pb::Verdict::Blocked | pb::Verdict::Killed => Level::Warning,
            pb::Verdict::Audited => Level::Notice,
            pb::Verdict::Allowed | pb::Verdict::Unspecified => Level::Info,
        },
    }
}

impl Level {
    /// RFC 5424 severity.
    pub fn syslog(self) -> u8 {
        match self {
            Self::Info => 6,
            Self::Notice => 5,
            Self::Warning => 4,
            Self::Error => 3,
        }
    }

    /// OTLP `SeverityNumber` and its short name.
    pub fn otlp(self) -> (i32, &'static str) {
        match self {
            Self::Info => (9, "INFO"),
            Self::Notice => (10, "INFO2"),
            Self::Warning => (13, "WARN"),
            Self::Error => (17, "ERROR"),
        }
    }

    /// CEF severity (0..10).
    pub fn cef(self) -> u8 {
        match self {
            Self::Info => 3,
            Self::Notice => 5,
            Self::Warning => 7,
            Self::Error => 8,
        }
    }
}

/// `connect`, `chmod`, ... (`unknown` for an event without a body).
pub fn kind(e: &pb::Event) -> String {
    match kind_of(e) {
        pb::EventKind::Unspecified => "unknown".into(),
        k => kind_name(k),
    }
}

/// `blocked`, `audited`, ...; for policy records `applied`/`refused`, for posture records
/// `fail`/`pass`; empty when none.
pub fn verdict(e: &pb::Event) -> String {
    match &e.body {
        Some(pb::event::Body::PolicyChange(p)) => {
            if p.accepted { "applied" } else { "refused" }.into()
        }
        Some(pb::event::Body::Posture(p)) => if posture_fails(p) { "fail" } else { "pass" }.into(),
        _ => match e.verdict() {
            pb::Verdict::Unspecified => String::new(),
            v => verdict_name(v),
        },
    }
}

/// Whether a posture record fails a check: a pod with findings; a node without an active BPF
/// LSM or BTF, with a reboot pending, or not on cgroup v2 (the checks of `sensor_node_posture`
/// but lockdown, which is a choice, not a gap).
pub fn posture_fails(p: &pb::Posture) -> bool {
    match &p.node {
        Some(n) => n.bpf_lsm_active != Some(true) || !n.btf || n.reboot_pending || n.cgroup != "v2",
        None => !p.findings.is_empty(),
    }
}

/// `NODE:SEQ`, unique across a fleet (the OCSF `metadata.uid`); empty for records without a
/// sequence number (journal loss records).
pub fn uid(e: &pb::Event) -> String {
    if e.seq == 0 {
        String::new()
    } else {
        format!("{}:{}", e.node, e.seq)
    }
}

/// The program's name: the executable's file name (what the process cannot rename), else
/// `comm` (which it can, and which is cut to 15 bytes).
pub fn program(p: &pb::Process) -> &str {
    match p.exe.rsplit('/').next() {
        Some(name) if !name.is_empty() => name,
        _ => &p.comm,
    }
}

/// An image reference's repository and tag: `registry:5000/team/app:1.2@sha256:...` ->
/// (`registry:5000/team/app`, `1.2`).
pub fn image_name_tag(image: &str) -> (&str, &str) {
    let image = image.split('@').next().unwrap_or(image);
    match image.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name, tag),
        _ => (image, ""),
    }
}

/// The chmod's file: the resolved name, else the path argument.
pub fn chmod_file(c: &pb::Chmod) -> &str {
    if c.name.is_empty() { &c.path } else { &c.name }
}

/// The IANA name of the connection's protocol (`tcp`, `udp`, `icmp`, `ipv6-icmp`), empty when
/// it has none here.
pub fn transport(c: &pb::Connect) -> &'static str {
    match c.protocol as i32 {
        libc::IPPROTO_TCP => "tcp",
        libc::IPPROTO_UDP => "udp",
        libc::IPPROTO_ICMP => "icmp",
        libc::IPPROTO_ICMPV6 => "ipv6-icmp",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_split_into_repository_and_tag() {
        assert_eq!(image_name_tag("nginx:1.25"), ("nginx", "1.25"));
        assert_eq!(
            image_name_tag("registry:5000/team/app:2@sha256:abcd"),
            ("registry:5000/team/app", "2")
        );
        assert_eq!(
            image_name_tag("registry:5000/team/app"),
            ("registry:5000/team/app", "")
        );
        assert_eq!(image_name_tag("app@sha256:abcd"), ("app", ""));
    }

    #[test]
    fn the_program_is_the_executables_name_not_the_settable_comm() {
        let p = pb::Process {
            exe: "/usr/bin/python3.11".into(),
            comm: "kworker/0:1".into(),
            ..Default::default()
        };
        assert_eq!(program(&p), "python3.11");
        let p = pb::Process {
            comm: "sh".into(),
            ..Default::default()
        };
        assert_eq!(program(&p), "sh");
    }
}
