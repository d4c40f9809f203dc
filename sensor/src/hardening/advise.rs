//! `sensor advise`'s decisions: the recorded events grouped by workload (namespace and pod
//! owner, so replicas merge; host processes by cgroup), and from what each did or never did in
//! the window, the hardening that is safe to apply: a metadata-egress NetworkPolicy per
//! namespace, the `prevent-chmod` seccomp profile and `allowPrivilegeEscalation: false` /
//! `capabilities.drop: [ALL]` per workload. Pure: events in, [`Advice`] out; rendering is in
//! [`super::render`].

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use sensor_policy::destinations::{Destination, metadata_endpoints};
use sensor_proto::v1 as pb;

use crate::event::names::verdict_name;

/// Namespaces left out by default: not user namespaces, and the built-in policy exempts
/// `kube-system` (its connects and raises are not recorded at all).
pub const SYSTEM_NAMESPACES: [&str; 3] = ["kube-system", "kube-public", "kube-node-lease"];

/// Where a workload runs.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Owner {
    /// Pods of one owner (`pod.owner_kind`/`owner_name`; a bare pod is its own owner).
    Pod {
        namespace: String,
        kind: String,
        name: String,
    },
    /// Processes outside Kubernetes pods, by cgroup (no Kubernetes advice).
    Host { cgroup: String },
}

/// How often, and when first and last.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Seen {
    pub count: u64,
    pub first_ns: i64,
    pub last_ns: i64,
}

impl Seen {
    fn add(&mut self, count: u64, first_ns: i64, last_ns: i64) {
        if self.count == 0 || first_ns < self.first_ns {
            self.first_ns = first_ns;
        }
        self.last_ns = self.last_ns.max(last_ns);
        self.count += count;
    }
}

/// A connect to a listed destination.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ConnectKey {
    /// The built-in destination's name (`metadata-imds-v4`), or the event's rule for a
    /// destination outside the built-in list.
    pub destination: String,
    /// `ADDR:PORT` (`[ADDR]:PORT` for IPv6).
    pub address: String,
    pub verdict: String,
}

/// A chmod-family call.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ChmodKey {
    /// Four octal digits.
    pub mode: String,
    /// The mode carries S_ISUID or S_ISGID.
    pub setid: bool,
    pub verdict: String,
}

/// A privilege raise.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct RaiseKey {
    /// `setuid-root`, `setgid-root`, `capset`, `setid-exec`, `file-caps`.
    pub what: String,
    pub verdict: String,
}

/// What one workload did in the window.
#[derive(Clone, Debug, Default)]
pub struct Workload {
    pub pods: BTreeSet<String>,
    pub containers: BTreeSet<String>,
    /// Every event of the workload.
    pub events: Seen,
    /// Connects to a built-in metadata destination.
    pub metadata: BTreeMap<ConnectKey, Seen>,
    /// Connects to other destinations a policy lists.
    pub other_connects: BTreeMap<ConnectKey, Seen>,
    pub chmods: BTreeMap<ChmodKey, Seen>,
    pub raises: BTreeMap<RaiseKey, Seen>,
    /// Some event of it ran with uid or euid 0.
    pub root: bool,
    /// Programs it started in the window (exec events): without any, its start-up (an
    /// entrypoint script, an init container) was not seen.
    pub execs: u64,
}

impl Workload {
    /// It reached a metadata endpoint: a connect that was allowed or audited.
    pub fn reached_metadata(&self) -> bool {
        self.metadata.keys().any(|k| !stopped(&k.verdict))
    }

    /// It tried one and was stopped (blocked or killed).
    pub fn tried_metadata(&self) -> bool {
        self.metadata.keys().any(|k| stopped(&k.verdict))
    }

    fn raised(&self, what: &[&str]) -> bool {
        self.raises.keys().any(|k| what.contains(&k.what.as_str()))
    }
}

fn stopped(verdict: &str) -> bool {
    matches!(verdict, "blocked" | "killed")
}

/// The container-level change for one container of a workload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerPatch {
    pub name: String,
    pub no_privilege_escalation: bool,
    pub drop_all_capabilities: bool,
}

/// The strategic-merge patch for one owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Patch {
    pub namespace: String,
    pub kind: String,
    pub name: String,
    /// Pod-level `seccompProfile: Localhost profiles/prevent-chmod.json`.
    pub seccomp: bool,
    /// Only those with something to change.
    pub containers: Vec<ContainerPatch>,
}

impl Patch {
    /// The file name in `--out-dir`.
    pub fn file_name(&self) -> String {
        format!(
            "patch-{}-{}-{}.yaml",
            safe_name(&self.namespace),
            safe_name(&self.kind.to_ascii_lowercase()),
            safe_name(&self.name)
        )
    }
}

/// A name as part of a file name in `--out-dir`: Kubernetes names are DNS-1123, but an owner
/// reference's name is not checked by the API server (and a `--file` can say anything), so
/// anything but `a-z 0-9 . -` becomes `_` and a leading dot too: no `/`, no `..`.
pub fn safe_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.starts_with('.') || out.is_empty() {
        out.insert(0, '_');
    }
    out.truncate(200);
    out
}

/// The window the advice covers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Window {
    /// The requested start (`--since`) and when the advice was made (Unix ns).
    pub since_ns: i64,
    pub until_ns: i64,
    /// Events read (loss records not counted), and the first and last event time.
    pub events: u64,
    pub first_ns: Option<i64>,
    pub last_ns: Option<i64>,
    /// Events the loss records say are missing.
    pub lost: u64,
    /// The nodes the events came from: a NetworkPolicy and a patch act on every node.
    pub nodes: BTreeSet<String>,
}

/// Everything `sensor advise` reports.
#[derive(Clone, Debug, Default)]
pub struct Advice {
    pub window: Window,
    pub workloads: BTreeMap<Owner, Workload>,
    /// Namespaces that get the metadata-egress NetworkPolicy.
    pub network_policies: Vec<String>,
    /// Per namespace (every namespace seen): why it gets no policy, or what to know.
    pub namespace_notes: BTreeMap<String, Vec<String>>,
    pub patches: Vec<Patch>,
    /// Per workload: why a change is not advised.
    pub workload_notes: BTreeMap<Owner, Vec<String>>,
    /// About the whole window.
    pub notes: Vec<String>,
}

/// Where a kind keeps its pod spec, for the patch (None: no patch for that kind).
pub fn pod_spec_path(kind: &str) -> Option<&'static [&'static str]> {
    match kind {
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => {
            Some(&["spec", "template", "spec"])
        }
        "CronJob" => Some(&["spec", "jobTemplate", "spec", "template", "spec"]),
        "Pod" => Some(&["spec"]),
        _ => None,
    }
}

/// The built-in destination a connect went to, if any.
fn metadata_destination<'a>(list: &'a [Destination], addr: &str) -> Option<&'a Destination> {
    let addr: IpAddr = addr.parse().ok()?;
    list.iter().find(|d| contains(d, addr))
}

fn contains(d: &Destination, addr: IpAddr) -> bool {
    let len = u32::from(d.prefix.len);
    match (d.prefix.addr, addr) {
        (IpAddr::V4(p), IpAddr::V4(a)) => {
            let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
            u32::from(p) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(p), IpAddr::V6(a)) => {
            let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
            u128::from(p) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

/// Who an event belongs to; None for a pod event without a namespace (partial enrichment).
fn owner(event: &pb::Event) -> Option<Owner> {
    match &event.pod {
        Some(pod) if pod.namespace.is_empty() => None,
        Some(pod) => {
            let (kind, name) = if pod.owner_kind.is_empty() {
                ("Pod", pod.name.as_str())
            } else {
                (pod.owner_kind.as_str(), pod.owner_name.as_str())
            };
            Some(Owner::Pod {
                namespace: pod.namespace.clone(),
                kind: kind.to_owned(),
                name: name.to_owned(),
            })
        }
        None => {
            let cgroup = event.process.as_ref().map_or("", |p| p.cgroup.as_str());
            Some(Owner::Host {
                cgroup: if cgroup.is_empty() {
                    format!(
                        "cgroup id {}",
                        event.process.as_ref().map_or(0, |p| p.cgroup_id)
                    )
                } else {
                    format!("/{}", cgroup.trim_start_matches('/'))
                },
            })
        }
    }
}

/// What an unattributed event did that matters for the advice.
#[derive(Default)]
struct Unattributed {
    events: u64,
    metadata_reached: u64,
    chmods: u64,
    raises: u64,
}

/// The advice for `events` read for a window from `since_ns`, made at `until_ns`; namespaces in
/// `excluded` get no Kubernetes advice.
pub fn advise(events: &[pb::Event], since_ns: i64, until_ns: i64, excluded: &[String]) -> Advice {
    let list = metadata_endpoints();
    let mut advice = Advice {
        window: Window {
            since_ns,
            until_ns,
            ..Window::default()
        },
        ..Advice::default()
    };
    let mut unattributed = Unattributed::default();
    for event in events {
        if let Some(pb::event::Body::Lost(lost)) = &event.body {
            advice.window.lost += lost.count;
            continue;
        }
        let (count, first, last) = match &event.repeat {
            Some(r) if r.count > 0 => (r.count, r.first_time_unix_ns, r.last_time_unix_ns),
            _ => (1, event.time_unix_ns, event.time_unix_ns),
        };
        let w = &mut advice.window;
        if !event.node.is_empty() && !w.nodes.contains(&event.node) {
            w.nodes.insert(event.node.clone());
        }
        w.events += count;
        w.first_ns = Some(w.first_ns.map_or(first, |f| f.min(first)));
        w.last_ns = Some(w.last_ns.map_or(last, |l| l.max(last)));
        let verdict = verdict_name(pb::Verdict::try_from(event.verdict).unwrap_or_default());
        let Some(owner) = owner(event) else {
            unattributed.events += count;
            match &event.body {
                Some(pb::event::Body::Connect(c))
                    if !stopped(&verdict) && metadata_destination(&list, &c.dst_addr).is_some() =>
                {
                    unattributed.metadata_reached += count;
                }
                Some(pb::event::Body::Chmod(_)) => unattributed.chmods += count,
                Some(pb::event::Body::Privilege(_)) => unattributed.raises += count,
                _ => {}
            }
            continue;
        };
        let times = (count, first, last);
        let wl = advice.workloads.entry(owner).or_default();
        wl.events.add(count, first, last);
        if let Some(pod) = &event.pod {
            if !pod.name.is_empty() {
                wl.pods.insert(pod.name.clone());
            }
            if !pod.container_name.is_empty() {
                wl.containers.insert(pod.container_name.clone());
            }
        }
        if let Some(p) = &event.process {
            wl.root |= p.uid == 0 || p.euid == Some(0);
        }
        match &event.body {
            Some(pb::event::Body::Connect(c)) if c.hook != pb::ConnectHook::Packet as i32 => {
                let address = match c.dst_addr.parse::<IpAddr>() {
                    Ok(IpAddr::V6(a)) => format!("[{a}]:{}", c.dst_port),
                    _ => format!("{}:{}", c.dst_addr, c.dst_port),
                };
                let (map, destination) = match metadata_destination(&list, &c.dst_addr) {
                    Some(d) => (&mut wl.metadata, d.name.to_owned()),
                    None => (&mut wl.other_connects, event.rule.clone()),
                };
                let key = ConnectKey {
                    destination,
                    address,
                    verdict,
                };
                record(map, key, times);
            }
            Some(pb::event::Body::Chmod(c)) => {
                let key = ChmodKey {
                    mode: format!("{:04o}", c.mode & 0o7777),
                    setid: c.mode & 0o6000 != 0,
                    verdict,
                };
                record(&mut wl.chmods, key, times);
            }
            Some(pb::event::Body::Privilege(p)) => {
                let key = RaiseKey {
                    what: p.what.clone(),
                    verdict,
                };
                record(&mut wl.raises, key, times);
            }
            Some(pb::event::Body::Exec(_)) => wl.execs += count,
            _ => {}
        }
    }
    let gaps = Gaps {
        network: advice.window.lost > 0 || unattributed.metadata_reached > 0,
        chmod: advice.window.lost > 0 || unattributed.chmods > 0,
        raise: advice.window.lost > 0 || unattributed.raises > 0,
    };
    decide(&mut advice, excluded, gaps);
    window_notes(&mut advice, &unattributed);
    advice
}

/// Count `times` (count, first, last) under `key`.
fn record<K: Ord>(map: &mut BTreeMap<K, Seen>, key: K, (count, first, last): (u64, i64, i64)) {
    map.entry(key).or_default().add(count, first, last);
}

/// Evidence the window lacks, by kind of advice: lost events (what they were is not known) or
/// events of pods the sensor could not name. Advice that such an event could contradict is
/// withheld, not given with a note.
#[derive(Clone, Copy, Default)]
struct Gaps {
    network: bool,
    chmod: bool,
    raise: bool,
}

const GAP: &str =
    "the window has gaps (lost events, or events of pods the sensor could not name: see the notes)";

/// The NetworkPolicies, patches and their notes from the grouped workloads.
fn decide(advice: &mut Advice, excluded: &[String], gaps: Gaps) {
    let mut namespaces: BTreeMap<&str, Vec<&Owner>> = BTreeMap::new();
    for owner in advice.workloads.keys() {
        if let Owner::Pod { namespace, .. } = owner {
            namespaces.entry(namespace).or_default().push(owner);
        }
    }
    for (namespace, owners) in &namespaces {
        let notes = advice
            .namespace_notes
            .entry((*namespace).to_owned())
            .or_default();
        if excluded.iter().any(|e| e == namespace) {
            notes.push(format!(
                "excluded (--exclude-namespace): no advice for {namespace}"
            ));
            continue;
        }
        let names = |pred: fn(&Workload) -> bool| {
            owners
                .iter()
                .filter(|o| pred(&advice.workloads[**o]))
                .map(|o| display_owner(o))
                .collect::<Vec<_>>()
        };
        let reached = names(Workload::reached_metadata);
        let tried = names(Workload::tried_metadata);
        if gaps.network {
            notes.push(format!(
                "no NetworkPolicy: {GAP}; one of them may have reached a metadata endpoint"
            ));
        } else if reached.is_empty() {
            advice.network_policies.push((*namespace).to_owned());
            if !tried.is_empty() {
                notes.push(format!(
                    "tried a metadata endpoint and was already blocked by the sensor: {} (the NetworkPolicy blocks it a second time, at the network)",
                    tried.join(", ")
                ));
            }
        } else {
            notes.push(format!(
                "no NetworkPolicy: reached a metadata endpoint (allowed or audited) in the window: {}; blocking it would break them",
                reached.join(", ")
            ));
        }
    }
    let owners: Vec<Owner> = advice.workloads.keys().cloned().collect();
    for owner in owners {
        let Owner::Pod {
            namespace,
            kind,
            name,
        } = &owner
        else {
            continue;
        };
        if excluded.iter().any(|e| e == namespace) {
            continue;
        }
        let wl = &advice.workloads[&owner];
        let mut notes = Vec::new();
        if pod_spec_path(kind).is_none() {
            notes.push(format!(
                "no patch: owner kind {kind} is not one whose pod template the advice knows (Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob, Pod)"
            ));
            advice.workload_notes.insert(owner, notes);
            continue;
        }
        let started = wl.execs > 0;
        if !started {
            notes.push(
                "no seccomp or privilege patch: its start-up was not seen in the window (no exec of it): an entrypoint script or an init container may chmod or need privileges the sensor did not see".to_owned(),
            );
        }
        if gaps.chmod && started {
            notes.push(format!("no prevent-chmod profile: {GAP}"));
        }
        if gaps.raise && started {
            notes.push(format!("no privilege patch: {GAP}"));
        }
        let seccomp = wl.chmods.is_empty() && started && !gaps.chmod;
        if !wl.chmods.is_empty() {
            let modes: BTreeSet<&str> = wl.chmods.keys().map(|k| k.mode.as_str()).collect();
            let n: u64 = wl.chmods.values().map(|s| s.count).sum();
            notes.push(format!(
                "no prevent-chmod profile: {n} chmod call(s) in the window (modes {})",
                modes.into_iter().collect::<Vec<_>>().join(", ")
            ));
        }
        let escalation = wl.raises.is_empty() && started && !gaps.raise;
        if !wl.raises.is_empty() {
            let what: BTreeSet<&str> = wl.raises.keys().map(|k| k.what.as_str()).collect();
            notes.push(format!(
                "no allowPrivilegeEscalation: false: raised privileges in the window ({})",
                what.into_iter().collect::<Vec<_>>().join(", ")
            ));
        }
        let drop_all = !wl.raised(&["capset", "file-caps"]) && !wl.root && escalation;
        if escalation && !drop_all && wl.root {
            notes.push(
                "no capabilities.drop: [ALL]: it ran as root (uid or euid 0) in the window, and the sensor does not see which capabilities a root process uses".to_owned(),
            );
        }
        let containers: Vec<ContainerPatch> = if escalation {
            wl.containers
                .iter()
                .map(|c| ContainerPatch {
                    name: c.clone(),
                    no_privilege_escalation: true,
                    drop_all_capabilities: drop_all,
                })
                .collect()
        } else {
            Vec::new()
        };
        if escalation && containers.is_empty() {
            notes.push(
                "no container-level patch: no event named a container of it (partial enrichment)"
                    .to_owned(),
            );
        }
        if kind == "Pod" || kind == "Job" {
            notes.push(format!(
                "a {kind}'s pod template cannot be changed in place: apply the patch to its manifest and recreate it"
            ));
        }
        if seccomp || !containers.is_empty() {
            advice.patches.push(Patch {
                namespace: namespace.clone(),
                kind: kind.clone(),
                name: name.clone(),
                seccomp,
                containers,
            });
        }
        if !notes.is_empty() {
            advice.workload_notes.insert(owner, notes);
        }
    }
}

fn window_notes(advice: &mut Advice, unattributed: &Unattributed) {
    let notes = &mut advice.notes;
    if advice.window.lost > 0 {
        notes.push(format!(
            "{} event(s) were lost in the window (loss records): what they were is not known, so the advice may miss calls",
            advice.window.lost
        ));
    }
    if unattributed.events > 0 {
        notes.push(format!(
            "{} event(s) came from pods the sensor could not name (partial enrichment: no namespace or owner); of them {} reached a metadata endpoint, {} were chmod calls and {} privilege raises, which the advice for their workload does not take into account",
            unattributed.events, unattributed.metadata_reached, unattributed.chmods, unattributed.raises
        ));
    }
    if advice.window.events == 0 {
        notes.push("no events in the window: nothing to advise from".to_owned());
    }
    if !advice.window.nodes.is_empty() {
        notes.push(format!(
            "the events came from {} node(s) ({}): a NetworkPolicy and a patch apply to the workload's pods on every node; what its pods did on other nodes is not in this window (advise from a fleet export that merges every node's events to cover them)",
            advice.window.nodes.len(),
            advice.window.nodes.iter().cloned().collect::<Vec<_>>().join(", ")
        ));
    }
}

/// `namespace/Kind/name`, or `host cgroup PATH`.
pub fn display_owner(owner: &Owner) -> String {
    match owner {
        Owner::Pod {
            namespace,
            kind,
            name,
        } => format!("{namespace}/{kind}/{name}"),
        Owner::Host { cgroup } => format!("host {cgroup}"),
    }
}

#[cfg(test)]
#[path = "advise_tests.rs"]
mod tests;
