//! The compact one-line text of `sensor tail`: aligned columns, so a decision stands out.
//!
//! `TIME  #SEQ  VERDICT  KIND  WHERE  PROCESS  RULE  WHAT`: WHERE is the pod
//! (`namespace/name`) or the cgroup, PROCESS the executable and its parent, RULE the rule that
//! decided, WHAT the destination or the file. Fixed-width columns keep the start of each
//! column (a long value is cut on the left, where it says least, and marked with `…`); WHAT
//! takes the rest of the line. Colour (the verdict) only when asked.

use std::fmt::Write as _;

use sensor_proto::v1 as pb;

use super::{
    names::{PROTOCOLS, enum_name, kind_name, setid_names, verdict_name},
    proto::kind_of,
    time::rfc3339,
};

/// ANSI colours for the compact format.
const RESET: &str = "\x1b[0m";

/// Column widths (characters).
const SEQ: usize = 7;
const LABEL: usize = 7;
const KIND: usize = 9;
const WHERE: usize = 30;
const PROCESS: usize = 30;
const RULE: usize = 24;

fn verdict_colour(v: pb::Verdict) -> &'static str {
    match v {
        pb::Verdict::Blocked | pb::Verdict::Killed => "\x1b[1;31m",
        pb::Verdict::Audited => "\x1b[1;33m",
        pb::Verdict::Allowed => "\x1b[32m",
        pb::Verdict::Unspecified => "\x1b[1;35m",
    }
}

/// `text` in exactly `width` characters: padded, or cut on the left and marked (`width` 0:
/// as it is).
fn column(text: &str, width: usize) -> String {
    let n = text.chars().count();
    if width == 0 {
        return text.to_owned();
    }
    if n <= width {
        format!("{text:<width$}")
    } else {
        let keep: String = text.chars().skip(n - (width - 1)).collect();
        format!("…{keep}")
    }
}

/// The last component of a path.
fn base(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Where the event happened: the pod, else the cgroup.
fn place(e: &pb::Event) -> String {
    if let Some(pod) = e.pod.as_ref().filter(|p| !p.name.is_empty()) {
        return format!("{}/{}", pod.namespace, pod.name);
    }
    match &e.process {
        Some(p) if !p.cgroup.is_empty() => p.cgroup.clone(),
        Some(p) if p.cgroup_id != 0 => format!("cgroup #{}", p.cgroup_id),
        _ => "-".into(),
    }
}

/// The process (executable, else comm) and its parent.
fn process(e: &pb::Event) -> String {
    let Some(p) = &e.process else {
        return "-".into();
    };
    let name = if p.exe.is_empty() {
        p.comm.as_str()
    } else {
        base(&p.exe)
    };
    let parent = match p.ancestors.first() {
        Some(a) if !a.exe.is_empty() => base(&a.exe).to_owned(),
        Some(a) if !a.comm.is_empty() => a.comm.clone(),
        _ if p.ppid != 0 => format!("pid {}", p.ppid),
        _ => String::new(),
    };
    if p.pid == 0 {
        return "-".into();
    }
    if parent.is_empty() {
        format!("{name}[{}]", p.pid)
    } else {
        format!("{name}[{}] < {parent}", p.pid)
    }
}

/// What the call was about: the destination, the file, the raise.
fn what(e: &pb::Event) -> String {
    use pb::event::Body as B;
    let mut out = String::new();
    match &e.body {
        Some(B::Connect(c)) => {
            let _ = write!(
                out,
                "{}:{} {} ({})",
                c.dst_addr,
                c.dst_port,
                PROTOCOLS.name(c.protocol),
                enum_name(c.hook().as_str_name(), "CONNECT_HOOK_"),
            );
        }
        Some(B::Chmod(c)) => {
            let target = if c.name.is_empty() { &c.path } else { &c.name };
            let setid = setid_names(c.mode).join("+");
            let _ = write!(
                out,
                "{} {:04o} {target}",
                enum_name(c.syscall().as_str_name(), "CHMOD_SYSCALL_"),
                c.mode
            );
            if !setid.is_empty() {
                let _ = write!(out, " [{setid}]");
            }
            if let Some(r) = &c.revert {
                let _ = match r.state() {
                    pb::RevertState::Reverted => write!(out, ": set-id bits removed"),
                    pb::RevertState::NotNeeded => write!(out, ": nothing to revert ({})", r.detail),
                    _ => write!(out, ": NOT reverted ({})", r.detail),
                };
            }
        }
        Some(B::Privilege(p)) => {
            let _ = write!(out, "{} ({}, {})", p.new_value, p.what, p.old_value);
        }
        Some(B::Exec(x)) => out.push_str(&x.exe),
        Some(B::Exit(_)) | None => {}
        Some(B::Lost(_) | B::PolicyChange(_) | B::Posture(_)) => unreachable!("own lines"),
    }
    if let Some(r) = &e.repeat {
        let _ = write!(
            out,
            " (x{} since {}, seq {}..={})",
            r.count,
            rfc3339(r.first_time_unix_ns),
            r.first_seq,
            r.last_seq
        );
    }
    out
}

/// A posture record: `node: ...` or `NAMESPACE/POD: finding (container), ...`, then why.
fn posture(e: &pb::Event, p: &pb::Posture) -> String {
    let reason = enum_name(p.reason().as_str_name(), "POSTURE_REASON_");
    let mut out = String::new();
    if let Some(n) = &p.node {
        let lsm = match n.bpf_lsm_active {
            Some(true) => "active",
            Some(false) => "not active",
            None => "unknown",
        };
        let _ = write!(out, "node: kernel {}, BPF LSM {lsm}", n.kernel);
        let mut tiers: Vec<String> = n.tiers.iter().map(|(p, t)| format!("{p}={t}")).collect();
        tiers.sort();
        let _ = write!(out, ", tiers {}", tiers.join(" "));
        if n.reboot_pending {
            let _ = write!(out, ", REBOOT PENDING ({})", n.reboot_reasons.join("; "));
        }
        let lockdown = if n.lockdown.is_empty() {
            "unknown"
        } else {
            &n.lockdown
        };
        let _ = write!(out, ", lockdown {lockdown}, cgroup {}", n.cgroup);
        if !n.bpf_lsm_boot_parameter.is_empty() {
            let _ = write!(out, "; to enable BPF LSM: {}", n.bpf_lsm_advice);
        }
    } else {
        let _ = write!(out, "{}: ", place(e));
        if p.findings.is_empty() {
            out.push_str("no findings");
        }
        for (i, f) in p.findings.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            if f.container.is_empty() {
                let _ = write!(out, "{sep}{}", f.finding);
            } else {
                let _ = write!(out, "{sep}{} ({})", f.finding, f.container);
            }
        }
    }
    let _ = write!(out, " [{reason}]");
    out
}

/// One readable line per event, in aligned columns.
pub fn to_compact(e: &pb::Event, colour: bool) -> String {
    render(e, colour, true)
}

/// The same line without padding (an OCSF `message`).
pub fn to_summary(e: &pb::Event) -> String {
    render(e, false, false)
}

fn render(e: &pb::Event, colour: bool, aligned: bool) -> String {
    let w = |width: usize| if aligned { width } else { 0 };
    use pb::event::Body as B;
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
        Some(B::Posture(_)) => (
            "POSTURE".to_owned(),
            verdict_colour(pb::Verdict::Unspecified),
        ),
        _ => (
            verdict_name(e.verdict()).to_ascii_uppercase(),
            verdict_colour(e.verdict()),
        ),
    };
    let seq = if e.seq == 0 {
        String::new()
    } else {
        format!("#{}", e.seq)
    };
    let mut line = format!("{} ", rfc3339(e.time_unix_ns));
    if !seq.is_empty() || aligned {
        let _ = write!(line, "{:>width$} ", seq, width = w(SEQ));
    }
    let label = column(&label, w(LABEL));
    if colour {
        let _ = write!(line, "{colour_code}{label}{RESET} ");
    } else {
        let _ = write!(line, "{label} ");
    }
    match &e.body {
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
        Some(B::Posture(p)) => line.push_str(&posture(e, p)),
        _ => {
            let rule = if e.rule.is_empty() { "-" } else { &e.rule };
            let _ = write!(
                line,
                "{} {} {} {} {}",
                column(&kind_name(kind_of(e)), w(KIND)),
                column(&place(e), w(WHERE)),
                column(&process(e), w(PROCESS)),
                column(rule, w(RULE)),
                what(e)
            );
        }
    }
    line.trim_end().to_owned()
}
