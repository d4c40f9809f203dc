//! What the kernel side needs from a policy, as plain tables (no kernel calls here).

use std::net::IpAddr;

use super::{
    glob::Glob,
    model::{Action, DestinationSpec, Policy, RuleKind, Scope},
};
use crate::destinations::{Prefix, metadata_endpoints};

/// A policy flattened into per-hook tables. Rule indices are positions in
/// [`Policy::rules`] (and [`Compiled::rule_names`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Compiled {
    /// `metadata.name`, reported as `policy` in events.
    pub policy: String,
    /// Rule index -> rule name, reported as `rule` in chmod and privilege events.
    pub rule_names: Vec<String>,
    /// Where the rules apply: namespaces include/exclude, label selector, cgroup paths.
    pub scope: Scope,
    /// IPv4 destination prefixes (for the `connect4`/`sendmsg4` trie; v4-mapped IPv6
    /// destinations are canonicalized to IPv4 in the kernel and meet these too).
    pub cidr_v4: Vec<CidrRule>,
    /// IPv6 destination prefixes.
    pub cidr_v6: Vec<CidrRule>,
    /// chmod rules in file order.
    pub chmod: Vec<ChmodEntry>,
    /// Privilege rules in file order.
    pub privilege: Vec<PrivilegeEntry>,
}

/// One trie entry. A prefix appears in at most one entry of a policy (the parser refuses a
/// prefix listed twice), so the trie holds exactly these.
#[derive(Clone, Debug, PartialEq)]
pub struct CidrRule {
    pub prefix: Prefix,
    /// Index of the metadata rule that listed it.
    pub rule: u32,
    pub action: Action,
    /// Destination ports; empty = every port.
    pub ports: Vec<u16>,
    /// Reported as `rule` in connect events: the built-in name (`metadata-imds-v4`) for
    /// entries from `default`, the rule's name for a CIDR of its own.
    pub destination: String,
}

/// A chmod rule: a call matches when its mode has any of `mode_bits` (or `match_all`) and
/// its file name matches one of `paths` (or `paths` is empty).
#[derive(Clone, Debug, PartialEq)]
pub struct ChmodEntry {
    pub rule: u32,
    pub action: Action,
    /// Every chmod matches, whatever the mode (`all: true`).
    pub match_all: bool,
    /// `setid` (S_ISUID | S_ISGID) ORed with `modeMask`; 0 when `match_all`.
    pub mode_bits: u16,
    pub paths: Vec<Glob>,
}

/// A privilege rule: the kinds it covers as a bit set (each [`super::Raise`] value is its bit).
#[derive(Clone, Debug, PartialEq)]
pub struct PrivilegeEntry {
    pub rule: u32,
    pub action: Action,
    pub raises: u32,
}

/// Flattens a validated policy.
pub fn compile(policy: &Policy) -> Compiled {
    let mut out = Compiled {
        policy: policy.name.clone(),
        rule_names: policy.rules.iter().map(|r| r.name.clone()).collect(),
        scope: policy.scope.clone(),
        cidr_v4: Vec::new(),
        cidr_v6: Vec::new(),
        chmod: Vec::new(),
        privilege: Vec::new(),
    };
    for (index, rule) in policy.rules.iter().enumerate() {
        // The parser caps the file size far below u32::MAX rules.
        let index = u32::try_from(index).unwrap_or(u32::MAX);
        match &rule.kind {
            RuleKind::Metadata(m) => {
                for dest in &m.destinations {
                    let entries: Vec<(Prefix, String)> = match dest {
                        DestinationSpec::Default => metadata_endpoints()
                            .into_iter()
                            .map(|d| (d.prefix, d.name.to_owned()))
                            .collect(),
                        DestinationSpec::Cidr(p) => vec![(*p, rule.name.clone())],
                    };
                    for (prefix, destination) in entries {
                        let entry = CidrRule {
                            prefix,
                            rule: index,
                            action: rule.action,
                            ports: m.ports.clone(),
                            destination,
                        };
                        match prefix.addr {
                            IpAddr::V4(_) => out.cidr_v4.push(entry),
                            IpAddr::V6(_) => out.cidr_v6.push(entry),
                        }
                    }
                }
            }
            RuleKind::Chmod(c) => out.chmod.push(ChmodEntry {
                rule: index,
                action: rule.action,
                match_all: c.all,
                mode_bits: c.mode_bits().unwrap_or(0),
                paths: c.paths.clone(),
            }),
            RuleKind::Privilege(p) => out.privilege.push(PrivilegeEntry {
                rule: index,
                action: rule.action,
                raises: p.raises.iter().fold(0, |acc, r| acc | *r as u32),
            }),
        }
    }
    out
}
