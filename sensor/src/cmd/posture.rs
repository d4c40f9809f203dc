//! `sensor posture`: the node's hardening posture ([`crate::hardening::node`]) and the tier
//! each protection runs on: the daemon's answer when one is reachable, else what the kernel's
//! features imply.

use std::{fmt::Write as _, path::PathBuf, process::ExitCode};

use clap::{Args, ValueEnum};
use serde_json::json;

use super::{DaemonAddr, status};
use crate::{
    hardening::node::NodePosture,
    kernel::catalog::{protection_tiers, tier_name},
};

#[derive(Debug, Args)]
pub struct PostureArgs {
    /// `text`: a compact summary; `json`: one JSON object.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = PostureFormat::Text)]
    pub output: PostureFormat,
    /// Read the node's files below this directory (the host's root mounted in a container).
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/",
        env = "SENSOR_HOST_ROOT"
    )]
    pub root: PathBuf,
    #[command(flatten)]
    pub daemon: DaemonAddr,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PostureFormat {
    Text,
    Json,
}

/// What the daemon says, when one answers.
struct FromDaemon {
    /// Where the tiers come from, and the tiers.
    source: String,
    tiers: Vec<(&'static str, String)>,
    /// The pods on this node with posture findings (`None`: no daemon to ask).
    pods: Option<Vec<sensor_proto::v1::PodPosture>>,
}

fn from_daemon(args: &PostureArgs, node: &NodePosture) -> FromDaemon {
    match status::fetch(&args.daemon) {
        Ok(s) => FromDaemon {
            source: "daemon".to_owned(),
            tiers: protection_tiers(s.attachments.iter().map(|a| a.program.as_str()))
                .into_iter()
                .map(|(p, t)| (p, tier_name(t).to_owned()))
                .collect(),
            pods: Some(s.pod_posture),
        },
        Err(_) => FromDaemon {
            source: "kernel features (daemon not running)".to_owned(),
            tiers: node
                .implied_tiers()
                .into_iter()
                .map(|(p, t)| (p, t.to_owned()))
                .collect(),
            pods: None,
        },
    }
}

pub fn main(args: &PostureArgs) -> ExitCode {
    let node = NodePosture::read(&args.root);
    let d = from_daemon(args, &node);
    match args.output {
        PostureFormat::Json => {
            let mut v = node.to_json();
            v["tiers"] = json!({
                "source": d.source,
                "protections": d.tiers.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
            });
            // null without a daemon to ask (outside Kubernetes: an empty list).
            v["pods"] = d.pods.as_ref().map_or(serde_json::Value::Null, |pods| {
                pods.iter()
                    .map(|p| json!({"namespace": p.namespace, "name": p.name, "findings": p.findings}))
                    .collect()
            });
            println!("{v}");
        }
        PostureFormat::Text => print!("{}", text(&node, &d)),
    }
    ExitCode::SUCCESS
}

fn yes(v: bool) -> &'static str {
    if v { "yes" } else { "no" }
}

fn text(node: &NodePosture, d: &FromDaemon) -> String {
    let (source, tiers) = (&d.source, &d.tiers);
    let mut out = String::new();
    let unknown = || "unknown".to_owned();
    let _ = writeln!(
        out,
        "kernel          {}",
        node.kernel.clone().unwrap_or_else(unknown)
    );
    let _ = writeln!(
        out,
        "bpf lsm         {} (active LSMs: {}; CONFIG_BPF_LSM {})",
        node.bpf_lsm_active().map_or("unknown", yes),
        node.lsms.as_ref().map_or_else(unknown, |l| l.join(",")),
        match node.config_bpf_lsm {
            Some(true) => "y",
            Some(false) => "not set",
            None => "unknown",
        }
    );
    if node.bpf_lsm_active() != Some(true) {
        let _ = writeln!(out, "                {}", node.lsm_advice());
    }
    let _ = writeln!(out, "btf             {}", yes(node.btf));
    let _ = writeln!(out, "reboot pending  {}", yes(node.reboot_pending()));
    for reason in &node.reboot_reasons {
        let _ = writeln!(out, "                {reason}");
    }
    if !node.reboot_packages.is_empty() {
        let _ = writeln!(
            out,
            "                packages: {}",
            node.reboot_packages.join(", ")
        );
    }
    let _ = writeln!(
        out,
        "lockdown        {}",
        node.lockdown.clone().unwrap_or_else(unknown)
    );
    let _ = writeln!(out, "cgroup          {}", node.cgroup.as_str());
    let _ = writeln!(out, "tiers ({source}):");
    for (p, t) in tiers {
        let _ = writeln!(out, "  {p:<24} {t}");
    }
    match &d.pods {
        None => {
            let _ = writeln!(out, "pods            unknown (daemon not running)");
        }
        Some(pods) if pods.is_empty() => {
            let _ = writeln!(out, "pods            no findings");
        }
        Some(pods) => {
            let _ = writeln!(out, "pods with findings ({}):", pods.len());
            for p in pods {
                let _ = writeln!(
                    out,
                    "  {}/{:<30} {}",
                    p.namespace,
                    p.name,
                    p.findings.join(", ")
                );
            }
        }
    }
    out
}
