//! The compact one-line text of `sensor tail`.

use std::fmt::Write as _;

use sensor_proto::v1 as pb;

use super::{
    names::{PROTOCOLS, enum_name, kind_name, setid_names, verdict_name},
    proto::kind_of,
    time::rfc3339,
};

/// ANSI colours for the compact format.
const RESET: &str = "\x1b[0m";

fn verdict_colour(v: pb::Verdict) -> &'static str {
    match v {
        pb::Verdict::Blocked | pb::Verdict::Killed => "\x1b[1;31m",
        pb::Verdict::Audited => "\x1b[1;33m",
        pb::Verdict::Allowed => "\x1b[32m",
        pb::Verdict::Unspecified => "\x1b[1;35m",
    }
}

/// One readable line per event: time, sequence, verdict, what, who, where.
pub fn to_compact(e: &pb::Event, colour: bool) -> String {
    use pb::event::Body as B;
    let mut line = String::new();
    let time = rfc3339(e.time_unix_ns);
    let (label, colour_code) = match &e.body {
        Some(B::Lost(_)) => ("LOST".to_owned(), verdict_colour(pb::Verdict::Unspecified)),
        Some(B::PolicyChange(p)) => {
            let v = if p.accepted {
                pb::Verdict::Allowed
            } else {
                pb::Verdict::Blocked
            };
            ("POLICY".to_owned(), verdict_colour(v))
        }
        _ => (
            verdict_name(e.verdict()).to_ascii_uppercase(),
            verdict_colour(e.verdict()),
        ),
    };
    let _ = write!(line, "{time} ");
    if e.seq != 0 {
        let _ = write!(line, "#{} ", e.seq);
    }
    if colour {
        let _ = write!(line, "{colour_code}{label:<7}{RESET} ");
    } else {
        let _ = write!(line, "{label:<7} ");
    }
    let who = e
        .process
        .as_ref()
        .map_or_else(String::new, |p| format!("{}[{}]", p.comm, p.pid));
    let pod = e
        .pod
        .as_ref()
        .map_or_else(String::new, |p| format!(" {}/{}", p.namespace, p.name));
    match &e.body {
        Some(B::Connect(c)) => {
            let _ = write!(
                line,
                "connect {who}{pod} -> {}:{} {} ({}, {})",
                c.dst_addr,
                c.dst_port,
                PROTOCOLS.name(c.protocol),
                enum_name(c.hook().as_str_name(), "CONNECT_HOOK_"),
                e.rule
            );
        }
        Some(B::Chmod(c)) => {
            let target = if !c.name.is_empty() {
                c.name.clone()
            } else {
                c.path.clone()
            };
            let setid = setid_names(c.mode).join("+");
            let _ = write!(
                line,
                "chmod {who}{pod} {} {:04o} {target}{}",
                enum_name(c.syscall().as_str_name(), "CHMOD_SYSCALL_"),
                c.mode,
                if setid.is_empty() {
                    String::new()
                } else {
                    format!(" [{setid}]")
                }
            );
            if let Some(r) = &c.revert {
                let _ = match r.state() {
                    pb::RevertState::Reverted => write!(line, ": set-id bits removed"),
                    pb::RevertState::NotNeeded => {
                        write!(line, ": nothing to revert ({})", r.detail)
                    }
                    _ => write!(line, ": NOT reverted ({})", r.detail),
                };
            }
        }
        Some(B::Lost(l)) => {
            let _ = write!(
                line,
                "{} event(s) lost ({})",
                l.count,
                enum_name(l.stage().as_str_name(), "LOSS_STAGE_")
            );
            if l.first_seq != 0 {
                let _ = write!(line, " seq {}..={}", l.first_seq, l.last_seq);
            }
        }
        Some(B::PolicyChange(p)) => {
            let what = if p.accepted { "applied" } else { "refused" };
            let _ = write!(
                line,
                "policy {what} (generation {}) from {}",
                p.generation, p.source
            );
            for e in &p.errors {
                let _ = write!(line, "; {e}");
            }
        }
        Some(B::Exec(x)) => {
            let _ = write!(line, "exec {who}{pod} {}", x.exe);
        }
        Some(B::Privilege(p)) => {
            let _ = write!(
                line,
                "privilege {who}{pod} {} ({}, {})",
                p.new_value, p.what, p.old_value
            );
        }
        Some(B::Exit(_)) | None => {
            let _ = write!(line, "{} {who}{pod}", kind_name(kind_of(e)));
        }
    }
    if let Some(r) = &e.repeat {
        let _ = write!(
            line,
            " (x{} since {}, seq {}..={})",
            r.count,
            rfc3339(r.first_time_unix_ns),
            r.first_seq,
            r.last_seq
        );
    }
    line
}
