//! The pod index: the few fields of each pod that enrichment needs, keyed by pod UID, by
//! container id and by static-pod config hash.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard},
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::core::v1::{ContainerStatus, Pod},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use tokio::sync::watch;

use crate::hardening::pod::Finding;

/// Annotation of a static pod's mirror pod: the config hash, which the kubelet uses as the static
/// pod's UID and so in its cgroup path (the mirror pod in the API has a UID of its own).
const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";
/// Label the Deployment controller puts on a ReplicaSet's pods; the ReplicaSet is named
/// `<deployment>-<hash>`.
const POD_TEMPLATE_HASH_LABEL: &str = "pod-template-hash";
/// The CronJob controller names a Job `<cronjob>-<scheduled time in minutes since the epoch>`;
/// that number has had 8 digits since 1989 and keeps them until 2160.
const CRONJOB_SUFFIX_MIN_DIGITS: usize = 8;

/// What enrichment knows about a container's pod. From [`PodIndex::by_pod_uid`] the container
/// fields are empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodView {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub labels: BTreeMap<String, String>,
    pub container_name: String,
    /// Without the runtime prefix (`containerd://` and the like).
    pub container_id: String,
    pub image: String,
    pub image_id: String,
    /// The controller, resolved to the top-level workload where the names allow it
    /// (Deployment, CronJob); `Pod` for a pod without a controller.
    pub owner_kind: String,
    pub owner_name: String,
    pub node: String,
}

/// The container id without the runtime's `scheme://` prefix (`containerd://`, `cri-o://`,
/// `docker://`, ...), as it appears in cgroup paths.
pub fn strip_runtime_prefix(id: &str) -> &str {
    id.split_once("://").map_or(id, |(_, rest)| rest)
}

/// Pods on this node, shared by cheap clones. Reads take a read lock and never wait on the API.
///
/// A deleted pod (and a container that left its pod's status, e.g. after a restart) stays
/// resolvable for the grace period given to [`PodIndex::new`], so that events racing the
/// deletion still find it; it is dropped at the next write or [`PodIndex::purge_expired`]
/// after that, and lookups stop returning it at the deadline whether or not it was purged.
#[derive(Clone)]
pub struct PodIndex {
    shared: Arc<Shared>,
}

struct Shared {
    grace: Duration,
    state: RwLock<State>,
    /// The generation; bumped under the write lock.
    generation: watch::Sender<u64>,
}

#[derive(Default)]
struct State {
    /// By pod UID.
    pods: HashMap<String, PodRec>,
    /// By container id (no runtime prefix).
    containers: HashMap<String, ContainerRec>,
    /// Static pods: config hash -> mirror pod UID.
    mirrors: HashMap<String, String>,
    /// The earliest expiry of any entry: nothing to purge before it.
    next_expiry: Option<Instant>,
}

struct PodRec {
    namespace: String,
    name: String,
    uid: String,
    labels: BTreeMap<String, String>,
    owner_kind: String,
    owner_name: String,
    node: String,
    mirror_hash: Option<String>,
    /// Ids of the containers in the pod's last seen status.
    containers: Vec<String>,
    /// Set when the pod is deleted: from then on lookups miss it.
    expires: Option<Instant>,
    /// Its posture findings ([`crate::hardening::pod`]), in spec order.
    findings: Vec<Finding>,
    /// The findings last handed out by [`PodIndex::posture_changes`] (None: never).
    reported: Option<Vec<Finding>>,
}

impl PodRec {
    /// The finding names, each once, sorted.
    fn finding_names(&self) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = self.findings.iter().map(|f| f.finding).collect();
        names.sort_unstable();
        names.dedup();
        names
    }
}

/// A pod whose posture findings differ from what [`PodIndex::posture_changes`] last handed out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PostureChange {
    /// The pod (container fields empty).
    pub pod: PodView,
    /// Its findings now (may be empty: they went away).
    pub findings: Vec<Finding>,
    /// First seen by this index (else: changed).
    pub appeared: bool,
}

struct ContainerRec {
    pod_uid: String,
    name: String,
    image: String,
    image_id: String,
    /// Set when the container leaves its pod's status or the pod is deleted.
    expires: Option<Instant>,
}

/// A pod reduced to what the index keeps.
pub(super) struct Parsed {
    pod: PodRec,
    containers: Vec<(String, ContainerRec)>,
}

fn live(expires: Option<Instant>, now: Instant) -> bool {
    expires.is_none_or(|t| t > now)
}

impl PodIndex {
    /// An empty index; deleted pods stay resolvable for `deleted_grace`.
    pub fn new(deleted_grace: Duration) -> Self {
        Self {
            shared: Arc::new(Shared {
                grace: deleted_grace,
                state: RwLock::new(State::default()),
                generation: watch::Sender::new(0),
            }),
        }
    }

    pub fn deleted_grace(&self) -> Duration {
        self.shared.grace
    }

    /// By container id: 64 hex digits; a runtime prefix (`containerd://`, ...) is ignored.
    pub fn by_container_id(&self, id: &str) -> Option<PodView> {
        self.by_container_id_at(id, Instant::now())
    }

    /// By pod UID (with dashes, or with underscores as in systemd cgroup names), or by a static
    /// pod's config hash (the `kubernetes.io/config.mirror` annotation of its mirror pod), since
    /// static pods' cgroups carry the hash. The container fields are empty.
    pub fn by_pod_uid(&self, uid_or_hash: &str) -> Option<PodView> {
        self.by_pod_uid_at(uid_or_hash, Instant::now())
    }

    /// Pods that are not deleted (deleted ones in their grace period still resolve).
    pub fn len(&self) -> usize {
        self.read()
            .pods
            .values()
            .filter(|p| p.expires.is_none())
            .count()
    }

    /// Pods (not deleted) with each posture finding, by namespace: `(namespace, finding)` ->
    /// pods.
    pub fn posture_counts(&self) -> BTreeMap<(String, &'static str), u64> {
        let mut out = BTreeMap::new();
        for pod in self.read().pods.values().filter(|p| p.expires.is_none()) {
            for finding in pod.finding_names() {
                *out.entry((pod.namespace.clone(), finding)).or_default() += 1;
            }
        }
        out
    }

    /// The pods (not deleted) whose findings changed since the last call, in namespace and name
    /// order; a pod first seen without findings is not a change. Marks them handed out.
    pub fn posture_changes(&self) -> Vec<PostureChange> {
        let mut state = self.write();
        let mut out: Vec<PostureChange> = state
            .pods
            .values_mut()
            .filter(|p| p.expires.is_none())
            .filter_map(|p| {
                let appeared = p.reported.is_none();
                let before = p.reported.replace(p.findings.clone()).unwrap_or_default();
                (before != p.findings).then(|| PostureChange {
                    pod: view(p, None),
                    findings: p.findings.clone(),
                    appeared,
                })
            })
            .collect();
        out.sort_by(|a, b| (&a.pod.namespace, &a.pod.name).cmp(&(&b.pod.namespace, &b.pod.name)));
        out
    }

    /// The pods (not deleted) that have posture findings, by namespace and name.
    pub fn posture_pods(&self) -> Vec<(String, String, Vec<&'static str>)> {
        let mut out: Vec<_> = self
            .read()
            .pods
            .values()
            .filter(|p| p.expires.is_none() && !p.findings.is_empty())
            .map(|p| (p.namespace.clone(), p.name.clone(), p.finding_names()))
            .collect();
        out.sort();
        out
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Incremented on every change (add, update, delete, relist).
    pub fn generation(&self) -> u64 {
        *self.shared.generation.borrow()
    }

    /// A receiver of the generation, to wait for pods to arrive or change.
    pub fn changed(&self) -> watch::Receiver<u64> {
        self.shared.generation.subscribe()
    }

    /// Add or update a pod, with its containers from `status.containerStatuses`,
    /// `initContainerStatuses` and `ephemeralContainerStatuses` (and each one's previous
    /// instance from `lastState`). A container gone from the status stays resolvable for the
    /// grace period. A pod without a UID is ignored.
    pub fn apply(&self, pod: &Pod) {
        self.apply_at(pod, Instant::now());
    }

    /// Mark a pod deleted: it resolves for the grace period, then is purged.
    pub fn delete(&self, pod: &Pod) {
        self.delete_at(pod, Instant::now());
    }

    /// Replace the contents with `pods` (after a relist): pods missing from the list are
    /// deleted, with the grace period.
    pub fn replace_all(&self, pods: &[Pod]) {
        self.replace_parsed(pods.iter().filter_map(parse).collect());
    }

    /// Drop the entries whose grace period has ended (writes do this too).
    pub fn purge_expired(&self) {
        let now = Instant::now();
        if self.read().next_expiry.is_some_and(|t| t <= now) {
            self.write().purge(now);
        }
    }

    pub(super) fn replace_parsed(&self, pods: Vec<Parsed>) {
        self.replace_parsed_at(pods, Instant::now());
    }

    fn by_container_id_at(&self, id: &str, now: Instant) -> Option<PodView> {
        let state = self.read();
        let c = state
            .containers
            .get_key_value(strip_runtime_prefix(id))
            .filter(|(_, c)| live(c.expires, now))?;
        let pod = state
            .pods
            .get(&c.1.pod_uid)
            .filter(|p| live(p.expires, now))?;
        Some(view(pod, Some(c)))
    }

    fn by_pod_uid_at(&self, key: &str, now: Instant) -> Option<PodView> {
        let state = self.read();
        let key = if key.contains('_') {
            key.replace('_', "-").into()
        } else {
            std::borrow::Cow::Borrowed(key)
        };
        let pod = state.pods.get(key.as_ref()).or_else(|| {
            let uid = state.mirrors.get(key.as_ref())?;
            state.pods.get(uid)
        })?;
        live(pod.expires, now).then(|| view(pod, None))
    }

    fn apply_at(&self, pod: &Pod, now: Instant) {
        let Some(parsed) = parse(pod) else {
            tracing::debug!(name = ?pod.metadata.name, "pod without a uid, not indexed");
            return;
        };
        let mut state = self.write();
        state.purge(now);
        state.upsert(parsed, now + self.shared.grace);
        self.bump();
    }

    fn delete_at(&self, pod: &Pod, now: Instant) {
        let Some(parsed) = parse(pod) else {
            return;
        };
        let deadline = now + self.shared.grace;
        let mut state = self.write();
        state.purge(now);
        // The deletion carries the pod's last state: index it, so late events still resolve.
        let uid = parsed.pod.uid.clone();
        state.upsert(parsed, deadline);
        state.mark_deleted(&uid, deadline);
        self.bump();
    }

    fn replace_parsed_at(&self, pods: Vec<Parsed>, now: Instant) {
        let deadline = now + self.shared.grace;
        let mut state = self.write();
        state.purge(now);
        let listed: std::collections::HashSet<&str> =
            pods.iter().map(|p| p.pod.uid.as_str()).collect();
        let gone: Vec<String> = state
            .pods
            .keys()
            .filter(|uid| !listed.contains(uid.as_str()))
            .cloned()
            .collect();
        for uid in gone {
            state.mark_deleted(&uid, deadline);
        }
        for parsed in pods {
            state.upsert(parsed, deadline);
        }
        self.bump();
    }

    fn bump(&self) {
        self.shared.generation.send_modify(|g| *g += 1);
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.shared
            .state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.shared
            .state
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl std::fmt::Debug for PodIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodIndex")
            .field("pods", &self.len())
            .field("generation", &self.generation())
            .field("deleted_grace", &self.shared.grace)
            .finish()
    }
}

impl State {
    /// Insert or replace a pod; containers that left its status expire at `retire_at`.
    fn upsert(&mut self, parsed: Parsed, retire_at: Instant) {
        let Parsed {
            mut pod,
            containers,
        } = parsed;
        if let Some(old) = self.pods.remove(&pod.uid) {
            pod.reported = old.reported;
            for id in &old.containers {
                if !containers.iter().any(|(new, _)| new == id) {
                    self.expire_container(id, &old.uid, retire_at);
                }
            }
            if let Some(hash) = old.mirror_hash
                && pod.mirror_hash.as_ref() != Some(&hash)
                && self.mirrors.get(&hash) == Some(&old.uid)
            {
                self.mirrors.remove(&hash);
            }
        }
        pod.containers = containers.iter().map(|(id, _)| id.clone()).collect();
        self.containers.extend(containers);
        if let Some(hash) = &pod.mirror_hash {
            self.mirrors.insert(hash.clone(), pod.uid.clone());
        }
        self.pods.insert(pod.uid.clone(), pod);
    }

    /// Start a pod's grace period (no-op when it already runs or the pod is unknown).
    fn mark_deleted(&mut self, uid: &str, deadline: Instant) {
        let Some(pod) = self.pods.get_mut(uid) else {
            return;
        };
        if pod.expires.is_some() {
            return;
        }
        pod.expires = Some(deadline);
        let ids = pod.containers.clone();
        for id in &ids {
            self.expire_container(id, uid, deadline);
        }
        self.note_expiry(deadline);
    }

    fn expire_container(&mut self, id: &str, uid: &str, deadline: Instant) {
        if let Some(c) = self.containers.get_mut(id)
            && c.pod_uid == uid
            && c.expires.is_none()
        {
            c.expires = Some(deadline);
            self.note_expiry(deadline);
        }
    }

    fn note_expiry(&mut self, at: Instant) {
        self.next_expiry = Some(self.next_expiry.map_or(at, |t| t.min(at)));
    }

    /// Drop every entry whose grace period ended by `now`.
    fn purge(&mut self, now: Instant) {
        if self.next_expiry.is_none_or(|t| t > now) {
            return;
        }
        self.pods.retain(|_, p| live(p.expires, now));
        let pods = &self.pods;
        self.containers
            .retain(|_, c| live(c.expires, now) && pods.contains_key(&c.pod_uid));
        self.mirrors.retain(|_, uid| pods.contains_key(uid));
        self.next_expiry = self
            .pods
            .values()
            .filter_map(|p| p.expires)
            .chain(self.containers.values().filter_map(|c| c.expires))
            .min();
    }
}

fn view(pod: &PodRec, container: Option<(&String, &ContainerRec)>) -> PodView {
    let (container_id, container_name, image, image_id) = match container {
        Some((id, c)) => (
            id.clone(),
            c.name.clone(),
            c.image.clone(),
            c.image_id.clone(),
        ),
        None => Default::default(),
    };
    PodView {
        namespace: pod.namespace.clone(),
        name: pod.name.clone(),
        uid: pod.uid.clone(),
        labels: pod.labels.clone(),
        container_name,
        container_id,
        image,
        image_id,
        owner_kind: pod.owner_kind.clone(),
        owner_name: pod.owner_name.clone(),
        node: pod.node.clone(),
    }
}

/// Reduce a pod to the indexed fields; `None` without a UID.
pub(super) fn parse(pod: &Pod) -> Option<Parsed> {
    let meta = &pod.metadata;
    let uid = meta.uid.clone().filter(|u| !u.is_empty())?;
    let (owner_kind, owner_name) = owner_of(meta);
    let mut containers: Vec<(String, ContainerRec)> = Vec::new();
    if let Some(status) = &pod.status {
        let statuses = [
            &status.container_statuses,
            &status.init_container_statuses,
            &status.ephemeral_container_statuses,
        ];
        for cs in statuses.into_iter().flatten().flatten() {
            for id in container_ids(cs) {
                if !containers.iter().any(|(seen, _)| seen == id) {
                    containers.push((
                        id.to_owned(),
                        ContainerRec {
                            pod_uid: uid.clone(),
                            name: cs.name.clone(),
                            image: cs.image.clone(),
                            image_id: cs.image_id.clone(),
                            expires: None,
                        },
                    ));
                }
            }
        }
    }
    Some(Parsed {
        pod: PodRec {
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            labels: meta.labels.clone().unwrap_or_default(),
            mirror_hash: meta
                .annotations
                .as_ref()
                .and_then(|a| a.get(MIRROR_ANNOTATION))
                .filter(|h| !h.is_empty())
                .cloned(),
            node: pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default(),
            uid,
            owner_kind,
            owner_name,
            containers: Vec::new(),
            expires: None,
            findings: crate::hardening::pod::findings(pod),
            reported: None,
        },
        containers,
    })
}

/// The current container's id and the previous instance's (kept by the kubelet after a
/// restart), without runtime prefixes.
fn container_ids(cs: &ContainerStatus) -> impl Iterator<Item = &str> {
    let previous = cs
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .and_then(|t| t.container_id.as_deref());
    [cs.container_id.as_deref(), previous]
        .into_iter()
        .flatten()
        .map(strip_runtime_prefix)
        .filter(|id| !id.is_empty())
}

/// `(kind, name)` of the pod's controller, resolved one level up where the names allow:
///
/// - ReplicaSet `<d>-<h>` with the pod's `pod-template-hash` label equal to `<h>` -> Deployment
///   `<d>` (a ReplicaSet without the label, or whose name does not end in it, stays as is);
/// - Job `<c>-<n>`, `<n>` all digits and at least 8 of them -> CronJob `<c>`. This is a name
///   heuristic (the CronJob controller appends the scheduled time in minutes since the epoch);
///   a hand-made Job named like that is reported as a CronJob too.
/// - any other controller (DaemonSet, StatefulSet, Node for mirror pods, ...) as is;
/// - no controller reference -> `Pod` and the pod's own name.
fn owner_of(meta: &ObjectMeta) -> (String, String) {
    let Some(owner) = meta
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
    else {
        return ("Pod".to_owned(), meta.name.clone().unwrap_or_default());
    };
    let resolved = match owner.kind.as_str() {
        "ReplicaSet" => meta
            .labels
            .as_ref()
            .and_then(|l| l.get(POD_TEMPLATE_HASH_LABEL))
            .and_then(|hash| deployment_of(&owner.name, hash))
            .map(|d| ("Deployment", d)),
        "Job" => cronjob_of(&owner.name).map(|c| ("CronJob", c)),
        _ => None,
    };
    match resolved {
        Some((kind, name)) => (kind.to_owned(), name.to_owned()),
        None => (owner.kind.clone(), owner.name.clone()),
    }
}

fn deployment_of<'a>(replica_set: &'a str, hash: &str) -> Option<&'a str> {
    if hash.is_empty() {
        return None;
    }
    replica_set
        .strip_suffix(hash)?
        .strip_suffix('-')
        .filter(|d| !d.is_empty())
}

fn cronjob_of(job: &str) -> Option<&str> {
    let (cronjob, suffix) = job.rsplit_once('-')?;
    (!cronjob.is_empty()
        && suffix.len() >= CRONJOB_SUFFIX_MIN_DIGITS
        && suffix.bytes().all(|b| b.is_ascii_digit()))
    .then_some(cronjob)
}

#[cfg(test)]
#[path = "index_tests.rs"]
pub(super) mod tests;
