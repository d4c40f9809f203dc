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

/// Where the tiers come from, and the tiers.
fn tiers(args: &PostureArgs, node: &NodePosture) -> (String, Vec<(&'static str, String)>) {
    match status::fetch(&args.daemon) {
        Ok(s) => (
            "daemon".to_owned(),
            protection_tiers(s.attachments.iter().map(|a| a.program.as_str()))
                .into_iter()
                .map(|(p, t)| (p, tier_name(t).to_owned()))
                .collect(),
        ),
        Err(_) => (
            "kernel features (daemon not running)".to_owned(),
            node.implied_tiers()
                .into_iter()
                .map(|(p, t)| (p, t.to_owned()))
                .collect(),
        ),
    }
}

pub fn main(args: &PostureArgs) -> ExitCode {
    let node = NodePosture::read(&args.root);
    let (source, tiers) = tiers(args, &node);
    match args.output {
        PostureFormat::Json => {
            let mut v = node.to_json();
            v["tiers"] = json!({
                "source": source,
                "protections": tiers.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
            });
            println!("{v}");
        }
        PostureFormat::Text => print!("{}", text(&node, &source, &tiers)),
    }
    ExitCode::SUCCESS
}

fn yes(v: bool) -> &'static str {
    if v { "yes" } else { "no" }
}

fn text(node: &NodePosture, source: &str, tiers: &[(&str, String)]) -> String {
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
    out
}
