//! Each policy resource's status, written back by every node into its own entry
//! (`status.nodes.<node>`): accepted or refused (with the parser's located errors), enforced
//! as written, the tier of each protection its rules use, and its blocked and audited counts
//! since it was accepted. Aggregated: at most one merge patch per resource per interval, and
//! only when the entry changed (the counts change it, the time of the report alone does not).
//! `readyNodes` is recounted from the entries the patch returns.

use std::{collections::BTreeMap, time::Duration};

use kube::{
    Api, Client,
    api::{DynamicObject, Patch, PatchParams},
};
use serde_json::json;

use super::{
    ActiveRules, InForce, Shared,
    resources::NodeStatus,
    watch::{Kind, resource},
};
use crate::kernel::catalog::{PROTECTIONS, Rules, protection_tiers, tier_name};

/// How often the entries are compared and, where changed, written.
pub const STATUS_INTERVAL: Duration = Duration::from_secs(2);

/// The protections a policy's rules use, with their tiers on this node.
fn tiers(policy: &InForce, attached: &[String]) -> BTreeMap<String, String> {
    let raises = policy.privilege.iter().fold(0, |acc, p| acc | p.raises);
    let uses = |rules: &Rules| match rules {
        Rules::Metadata => !policy.dests.is_empty(),
        Rules::Chmod => !policy.chmod.is_empty(),
        Rules::Privilege(r) => raises & (*r as u32) != 0,
        Rules::None => false,
    };
    let served = protection_tiers(attached.iter().map(String::as_str));
    PROTECTIONS
        .iter()
        .zip(served)
        .filter(|(p, _)| uses(&p.rules))
        .map(|(p, (_, tier))| (p.name.to_owned(), tier_name(tier).to_owned()))
        .collect()
}

/// This node's entry for the resource `key`, from the set in force (`None`: the set knows
/// nothing of it, it was deleted).
fn entry(rules: &ActiveRules, key: &str, attached: &[String]) -> Option<NodeStatus> {
    if let Some(errors) = rules.refused.get(key) {
        let in_force = rules.in_force().any(|(_, p)| p.source == key);
        return Some(NodeStatus {
            accepted: false,
            enforced: in_force,
            message: if in_force {
                "the latest version was refused; the previous version stays in force".into()
            } else {
                "refused".into()
            },
            errors: errors.clone(),
            ..Default::default()
        });
    }
    let (_, policy) = rules.in_force().find(|(_, p)| p.source == key)?;
    let tiers = tiers(policy, attached);
    let (blocked, audited) = rules.counts.get(&policy.name);
    let weak = policy.not_enforced();
    let none: Vec<&String> = tiers
        .iter()
        .filter(|(_, t)| t.as_str() == "none")
        .map(|(p, _)| p)
        .collect();
    let enforced = weak.is_empty() && none.is_empty();
    Some(NodeStatus {
        accepted: true,
        enforced,
        message: if enforced {
            "in force".into()
        } else {
            format!(
                "in force; not enforced as written: {}",
                weak.iter()
                    .map(String::as_str)
                    .chain(none.iter().map(|p| p.as_str()))
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        },
        errors: Vec::new(),
        tiers,
        blocked,
        audited,
        observed_generation: None,
        updated: String::new(),
    })
}

/// The kind, namespace and name of a resource key.
fn parse_key(key: &str) -> Option<(Kind, Option<&str>, &str)> {
    let (kind, rest) = key.split_once(' ')?;
    match kind {
        k if k == sensor_policy::CLUSTER_KIND => Some((Kind::Cluster, None, rest)),
        k if k == sensor_policy::NAMESPACED_KIND => {
            let (ns, name) = rest.split_once('/')?;
            Some((Kind::Namespaced, Some(ns), name))
        }
        _ => None,
    }
}

/// Write this node's entry (and the mode), then `readyNodes` from every node's entry.
async fn patch(
    client: &Client,
    key: &str,
    node: &str,
    mode: Option<&str>,
    entry: &NodeStatus,
) -> Result<(), kube::Error> {
    let Some((kind, namespace, name)) = parse_key(key) else {
        return Ok(());
    };
    let api: Api<DynamicObject> = match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource(kind)),
        None => Api::all_with(client.clone(), &resource(kind)),
    };
    let mut entry = serde_json::to_value(entry).unwrap_or_default();
    entry["updated"] = json!(now_rfc3339());
    let mut status = json!({"nodes": {node: entry}});
    if let Some(mode) = mode {
        status["mode"] = json!(mode);
    }
    let params = PatchParams::default();
    let object = api
        .patch_status(name, &params, &Patch::Merge(json!({ "status": status })))
        .await?;
    // Nodes where it is accepted and enforced, as every node reported it.
    let nodes = object.data["status"]["nodes"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let ready = nodes
        .values()
        .filter(|n| n["accepted"] == true && n["enforced"] == true)
        .count();
    if object.data["status"]["readyNodes"] != json!(ready) {
        api.patch_status(
            name,
            &params,
            &Patch::Merge(json!({"status": {"readyNodes": ready}})),
        )
        .await?;
    }
    Ok(())
}

fn now_rfc3339() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    crate::event::time::rfc3339(now.as_nanos() as i64)
}

/// Every [`STATUS_INTERVAL`], write the entries that changed, until `shutdown`. A failed write
/// is retried at the next interval (logged once per failure streak).
pub async fn run(
    client: Client,
    node: String,
    shared: Shared,
    attached: Vec<String>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut written: BTreeMap<String, NodeStatus> = BTreeMap::new();
    let mut failing = false;
    let mut tick = tokio::time::interval(STATUS_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => break,
            _ = tick.tick() => {}
        }
        let rules = shared.current();
        let keys: Vec<String> = rules
            .in_force()
            .map(|(_, p)| p.source.clone())
            .chain(rules.refused.keys().cloned())
            .filter(|k| parse_key(k).is_some())
            .collect();
        written.retain(|k, _| keys.contains(k));
        for key in keys {
            let Some(now) = entry(&rules, &key, &attached) else {
                continue;
            };
            if written.get(&key) == Some(&now) {
                continue;
            }
            let mode = rules
                .in_force()
                .find(|(_, p)| p.source == key)
                .map(|(_, p)| p.mode());
            match patch(&client, &key, &node, mode, &now).await {
                Ok(()) => {
                    failing = false;
                    written.insert(key, now);
                }
                Err(err) => {
                    if !failing {
                        tracing::warn!(resource = %key, error = %err, "policy status not written; retrying");
                    }
                    failing = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_kind_namespace_and_name() {
        assert_eq!(
            parse_key("SensorPolicy prod/guard"),
            Some((Kind::Namespaced, Some("prod"), "guard"))
        );
        assert_eq!(
            parse_key("SensorClusterPolicy all"),
            Some((Kind::Cluster, None, "all"))
        );
        assert_eq!(parse_key("/etc/sensor/policy.yaml"), None);
    }
}
