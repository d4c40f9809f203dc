//! Names of event values as the JSON and compact formats write them (and read them back).

use sensor_proto::v1 as pb;

/// Names of numeric socket attributes, both ways; unknown values are written `<prefix>N`.
pub struct Names {
    prefix: &'static str,
    table: &'static [(i32, &'static str)],
}

pub const FAMILIES: Names = Names {
    prefix: "family-",
    table: &[
        (libc::AF_INET, "inet"),
        (libc::AF_INET6, "inet6"),
        (libc::AF_PACKET, "packet"),
    ],
};
pub const SOCK_TYPES: Names = Names {
    prefix: "type-",
    table: &[
        (libc::SOCK_STREAM, "stream"),
        (libc::SOCK_DGRAM, "dgram"),
        (libc::SOCK_RAW, "raw"),
    ],
};
pub const PROTOCOLS: Names = Names {
    prefix: "proto-",
    table: &[
        (libc::IPPROTO_TCP, "tcp"),
        (libc::IPPROTO_UDP, "udp"),
        (libc::IPPROTO_ICMP, "icmp"),
        (libc::IPPROTO_ICMPV6, "icmpv6"),
    ],
};

impl Names {
    pub fn name(&self, v: u32) -> String {
        self.table
            .iter()
            .find(|(n, _)| *n as u32 == v)
            .map_or_else(|| format!("{}{v}", self.prefix), |(_, s)| (*s).to_owned())
    }

    pub fn value(&self, s: &str) -> Option<u32> {
        self.table
            .iter()
            .find(|(_, name)| *name == s)
            .map(|(n, _)| *n as u32)
            .or_else(|| s.strip_prefix(self.prefix)?.parse().ok())
    }
}

/// Lower-case name of a proto enum value without its prefix (`VERDICT_BLOCKED` -> `blocked`).
pub fn enum_name(full: &str, prefix: &str) -> String {
    full.strip_prefix(prefix)
        .unwrap_or(full)
        .to_ascii_lowercase()
}

pub fn enum_value(name: &str, prefix: &str) -> String {
    format!("{prefix}{}", name.to_ascii_uppercase())
}

pub fn verdict_name(v: pb::Verdict) -> String {
    enum_name(v.as_str_name(), "VERDICT_")
}

pub fn kind_name(k: pb::EventKind) -> String {
    enum_name(k.as_str_name(), "EVENT_KIND_")
}

pub fn parse_verdict(s: &str) -> Option<pb::Verdict> {
    pb::Verdict::from_str_name(&enum_value(s, "VERDICT_"))
        .filter(|v| *v != pb::Verdict::Unspecified)
}

pub fn parse_kind(s: &str) -> Option<pb::EventKind> {
    pb::EventKind::from_str_name(&enum_value(s, "EVENT_KIND_"))
        .filter(|k| *k != pb::EventKind::Unspecified)
}

pub fn setid_names(mode: u32) -> Vec<String> {
    let mut v = Vec::new();
    if mode & 0o4000 != 0 {
        v.push("setuid".to_owned());
    }
    if mode & 0o2000 != 0 {
        v.push("setgid".to_owned());
    }
    v
}
