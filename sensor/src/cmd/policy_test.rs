//! `sensor policy test FILE`: what a candidate policy would have done to the events the node
//! recorded (the journal, through the daemon's replay, or an exported JSON file): per rule, the
//! calls it would have blocked or audited, and how many of those the policies in force did
//! not block (or did not report at all). docs/policy.md ("Dry run") says what the journal can
//! and cannot answer: only calls some policy in force reported were recorded.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    process::ExitCode,
    time::SystemTime,
};

use clap::Args;
use sensor_common::Raise;
use sensor_policy::{self as parser, Action};
use sensor_proto::v1 as pb;

use super::{DaemonAddr, EXIT_USAGE, tail::parse_since};
use crate::policy::{ActiveRules, InForce, Match, set};

#[derive(Debug, Args)]
pub struct TestArgs {
    /// The candidate policy (a policy file, a SensorClusterPolicy or a SensorPolicy).
    #[arg(value_name = "FILE")]
    pub policy: PathBuf,
    /// How far back: a duration (`24h`, `90m`) or an RFC 3339 time.
    #[arg(long, default_value = "24h")]
    pub since: String,
    /// Read the events from an exported JSON file (`--export file:PATH`, `sensor tail -o
    /// json`) instead of the daemon's journal.
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub daemon: DaemonAddr,
}

/// What one candidate rule would have done.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RuleOutcome {
    pub policy: String,
    pub rule: String,
    pub action: String,
    /// Events it matched.
    pub matched: u64,
    /// Of those, calls the policies in force neither blocked nor killed (for an enforcing rule:
    /// what enforcing it would newly deny) or did not report as a decision at all (for an
    /// audit rule: allowed telemetry it would turn into audits).
    pub new: u64,
    /// The first few sequence numbers of the `new` ones.
    pub examples: Vec<u64>,
}

const EXAMPLES: usize = 5;

/// The candidate as a policy set of its own (slot 0).
fn candidate(path: &Path) -> Result<ActiveRules, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let policy = parser::parse(&path.display().to_string(), &text).map_err(|errors| {
        errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    })?;
    ActiveRules::single(InForce::new(&policy, &path.display().to_string(), &text))
}

/// The candidate's matches for a recorded event (empty: not its business).
pub fn matches(rules: &ActiveRules, event: &pb::Event) -> Vec<Match> {
    let policy = rules.file();
    let applies = match &event.pod {
        Some(pod) => policy.holds_pod(&pod.namespace, &pod.labels.clone().into_iter().collect()),
        None => policy.outside_pods(),
    };
    if !applies {
        return Vec::new();
    }
    let bits = set::bit(0);
    match &event.body {
        Some(pb::event::Body::Connect(c)) if c.hook == pb::ConnectHook::Packet as i32 => {
            rules.packet_matches(bits)
        }
        Some(pb::event::Body::Connect(c)) => match c.dst_addr.parse::<IpAddr>() {
            Ok(addr) => rules.connect_matches(addr, u16::try_from(c.dst_port).unwrap_or(0), bits),
            Err(_) => Vec::new(),
        },
        Some(pb::event::Body::Chmod(c)) => {
            let name = if c.name.is_empty() { &c.path } else { &c.name };
            rules
                .tables
                .chmod
                .iter()
                .filter(|(_, r)| {
                    (r.match_all || c.mode & u32::from(r.mode_bits) != 0)
                        && (r.paths.is_empty() || r.paths.iter().any(|g| g.matches(name)))
                })
                .map(|(_, r)| Match {
                    policy: policy.name.clone(),
                    rule: policy.rule_names[r.rule as usize].clone(),
                    action: r.action,
                })
                .collect()
        }
        Some(pb::event::Body::Privilege(p)) => {
            let Some(raise) = Raise::ALL.iter().find(|r| r.as_str() == p.what) else {
                return Vec::new();
            };
            rules
                .tables
                .privilege
                .iter()
                .filter(|(_, r)| r.raises & (*raise as u32) != 0)
                .map(|(_, r)| Match {
                    policy: policy.name.clone(),
                    rule: policy.rule_names[r.rule as usize].clone(),
                    action: r.action,
                })
                .collect()
        }
        _ => Vec::new(),
    }
}

/// Every rule of the candidate with what it would have done to `events`, in file order
/// (rules that matched nothing too).
pub fn evaluate(rules: &ActiveRules, events: &[pb::Event]) -> Vec<RuleOutcome> {
    let policy = rules.file();
    let mut out: Vec<RuleOutcome> = policy
        .reported_rules()
        .into_iter()
        .map(|(rule, action)| RuleOutcome {
            policy: policy.name.clone(),
            rule,
            action: action.as_str().to_owned(),
            ..Default::default()
        })
        .collect();
    for event in events {
        let verdict = pb::Verdict::try_from(event.verdict).unwrap_or(pb::Verdict::Unspecified);
        let stopped = matches!(verdict, pb::Verdict::Blocked | pb::Verdict::Killed);
        let decided = stopped || verdict == pb::Verdict::Audited;
        for m in matches(rules, event) {
            let Some(o) = out.iter_mut().find(|o| o.rule == m.rule) else {
                continue;
            };
            o.matched += 1;
            let new = match m.action {
                Action::Enforce => !stopped,
                Action::Audit => !decided,
            };
            if new {
                o.new += 1;
                if o.examples.len() < EXAMPLES {
                    o.examples.push(event.seq);
                }
            }
        }
    }
    out
}

pub fn main(args: &TestArgs) -> ExitCode {
    let usage = |msg: String| {
        eprintln!("sensor policy test: {msg}");
        ExitCode::from(EXIT_USAGE)
    };
    let rules = match candidate(&args.policy) {
        Ok(r) => r,
        Err(msg) => return usage(msg),
    };
    let since = match parse_since(&args.since, SystemTime::now()) {
        Ok(t) => t,
        Err(e) => return usage(e.to_string()),
    };
    let events = match super::recorded::events(args.file.as_deref(), &args.daemon, since) {
        Ok(e) => e,
        Err((msg, code)) => {
            eprintln!("sensor policy test: {msg}");
            return ExitCode::from(code);
        }
    };
    let outcomes = evaluate(&rules, &events);
    if args.json {
        let rules: Vec<_> = outcomes
            .iter()
            .map(|o| {
                serde_json::json!({"policy": o.policy, "rule": o.rule, "action": o.action,
                    "matched": o.matched, "new": o.new, "examples": o.examples})
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({"events": events.len(), "since_unix_ns": since, "rules": rules})
        );
    } else {
        println!(
            "{} recorded events since {}; what '{}' would have done:",
            events.len(),
            crate::event::time::rfc3339(since),
            rules.policy()
        );
        println!(
            "{:<32} {:<8} {:>8} {:>8}  first new (seq)",
            "rule", "action", "matched", "new"
        );
        for o in &outcomes {
            println!(
                "{:<32} {:<8} {:>8} {:>8}  {}",
                o.rule,
                o.action,
                o.matched,
                o.new,
                o.examples
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(" ")
            );
        }
        println!(
            "new: for an enforcing rule, calls the policies in force let through; for an audit rule, calls they did not report as decisions. Calls no policy in force reported were never recorded (docs/policy.md, \"Dry run\")."
        );
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connect(
        seq: u64,
        namespace: &str,
        addr: &str,
        port: u32,
        verdict: pb::Verdict,
    ) -> pb::Event {
        pb::Event {
            seq,
            verdict: verdict as i32,
            pod: Some(pb::Pod {
                namespace: namespace.into(),
                ..Default::default()
            }),
            body: Some(pb::event::Body::Connect(pb::Connect {
                hook: pb::ConnectHook::Connect4 as i32,
                dst_addr: addr.into(),
                dst_port: port,
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    fn chmod(seq: u64, mode: u32, path: &str, verdict: pb::Verdict) -> pb::Event {
        pb::Event {
            seq,
            verdict: verdict as i32,
            body: Some(pb::event::Body::Chmod(pb::Chmod {
                mode,
                path: path.into(),
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    #[test]
    fn each_rule_counts_what_it_matched_and_what_the_policies_in_force_let_through() {
        let text = "apiVersion: sensor.dev/v1\nkind: SensorClusterPolicy\nmetadata: {name: cand}\nspec:\n  scope:\n    namespaces: {include: [\"*\"], exclude: [kube-system]}\n  rules:\n    - {name: imds, type: metadata, action: enforce, destinations: [169.254.169.254], ports: [80]}\n    - {name: setid, type: chmod, action: audit, setid: true}\n    - {name: never, type: privilege, action: enforce, raises: [capset]}\n";
        let policy = parser::parse("c.yaml", text).unwrap();
        let rules = ActiveRules::single(InForce::new(&policy, "c.yaml", text)).unwrap();
        use pb::Verdict::{Allowed, Audited, Blocked};
        let events = vec![
            connect(1, "shop", "169.254.169.254", 80, Blocked), // matched, already blocked
            connect(2, "shop", "169.254.169.254", 80, Audited), // matched, new
            connect(3, "shop", "169.254.169.254", 443, Audited), // another port: not matched
            connect(4, "kube-system", "169.254.169.254", 80, Audited), // out of scope
            connect(5, "web", "169.254.169.254", 80, Allowed),  // matched, new
            chmod(6, 0o4755, "/tmp/x", Allowed),                // matched, new (not a decision)
            chmod(7, 0o2755, "/tmp/y", Audited),                // matched, already audited
            chmod(8, 0o755, "/tmp/z", Allowed),                 // no set-id bit
        ];
        let out = evaluate(&rules, &events);
        let got: Vec<(&str, &str, u64, u64, Vec<u64>)> = out
            .iter()
            .map(|o| {
                (
                    o.rule.as_str(),
                    o.action.as_str(),
                    o.matched,
                    o.new,
                    o.examples.clone(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("imds", "enforce", 3, 2, vec![2, 5]),
                ("setid", "audit", 2, 1, vec![6]),
                ("never", "enforce", 0, 0, vec![]),
            ]
        );
    }
}
