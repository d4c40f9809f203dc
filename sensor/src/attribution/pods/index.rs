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
pub(super) mod tests {
    use super::*;

    const C1: &str = "1111111111111111111111111111111111111111111111111111111111111111";
    const C2: &str = "2222222222222222222222222222222222222222222222222222222222222222";

    /// A pod from its JSON form, as the API server sends it.
    pub(crate) fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).expect("valid pod JSON")
    }

    fn owned(kind: &str, owner: &str, labels: serde_json::Value) -> Pod {
        pod(serde_json::json!({
            "metadata": {
                "name": "p-xyz", "namespace": "ns", "uid": "u-1", "labels": labels,
                "ownerReferences": [
                    {"apiVersion": "v1", "kind": "Other", "name": "not-controller", "uid": "x"},
                    {"apiVersion": "apps/v1", "kind": kind, "name": owner, "uid": "o", "controller": true}
                ]
            }
        }))
    }

    fn simple(uid: &str, container_ids: &[&str]) -> Pod {
        let statuses: Vec<_> = container_ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                serde_json::json!({
                    "name": format!("c{i}"), "image": "img:1", "imageID": "sha256:abc",
                    "containerID": id, "ready": true, "restartCount": 0
                })
            })
            .collect();
        pod(serde_json::json!({
            "metadata": {"name": format!("pod-{uid}"), "namespace": "ns", "uid": uid},
            "spec": {"nodeName": "node-a", "containers": []},
            "status": {"containerStatuses": statuses}
        }))
    }

    #[test]
    fn owner_resolution() {
        let hash = serde_json::json!({"pod-template-hash": "7d9f8b6c5"});
        let none = serde_json::json!({});
        let cases = [
            (
                owned("ReplicaSet", "web-7d9f8b6c5", hash.clone()),
                ("Deployment", "web"),
            ),
            (
                owned("ReplicaSet", "my-web-app-7d9f8b6c5", hash.clone()),
                ("Deployment", "my-web-app"),
            ),
            // No hash label: a bare ReplicaSet.
            (
                owned("ReplicaSet", "web-7d9f8b6c5", none.clone()),
                ("ReplicaSet", "web-7d9f8b6c5"),
            ),
            // The label does not match the name's suffix.
            (
                owned("ReplicaSet", "web-abc", hash.clone()),
                ("ReplicaSet", "web-abc"),
            ),
            // The name is only the hash.
            (
                owned("ReplicaSet", "7d9f8b6c5", hash.clone()),
                ("ReplicaSet", "7d9f8b6c5"),
            ),
            (
                owned("Job", "backup-29012345", none.clone()),
                ("CronJob", "backup"),
            ),
            (
                owned("Job", "nightly-backup-290123456", none.clone()),
                ("CronJob", "nightly-backup"),
            ),
            // Too few digits, or not all digits: a plain Job.
            (
                owned("Job", "backup-1234567", none.clone()),
                ("Job", "backup-1234567"),
            ),
            (
                owned("Job", "backup-2901234a", none.clone()),
                ("Job", "backup-2901234a"),
            ),
            (owned("Job", "29012345", none.clone()), ("Job", "29012345")),
            (
                owned("DaemonSet", "agent", none.clone()),
                ("DaemonSet", "agent"),
            ),
            (
                owned("StatefulSet", "db", none.clone()),
                ("StatefulSet", "db"),
            ),
            (owned("Node", "node-a", none.clone()), ("Node", "node-a")),
            (simple("u-2", &[]), ("Pod", "pod-u-2")),
        ];
        for (pod, (kind, name)) in cases {
            let got = owner_of(&pod.metadata);
            assert_eq!(
                (got.0.as_str(), got.1.as_str()),
                (kind, name),
                "{:?}",
                pod.metadata.owner_references
            );
        }
    }

    #[test]
    fn container_id_prefixes_are_stripped() {
        assert_eq!(strip_runtime_prefix(&format!("containerd://{C1}")), C1);
        assert_eq!(strip_runtime_prefix(&format!("cri-o://{C1}")), C1);
        assert_eq!(strip_runtime_prefix(&format!("docker://{C1}")), C1);
        assert_eq!(strip_runtime_prefix(C1), C1);

        let index = PodIndex::new(Duration::from_secs(30));
        index.apply(&simple(
            "u-1",
            &[&format!("containerd://{C1}"), &format!("cri-o://{C2}"), ""],
        ));
        let v = index.by_container_id(C1).expect("by bare id");
        assert_eq!(
            (
                v.container_id.as_str(),
                v.container_name.as_str(),
                v.uid.as_str()
            ),
            (C1, "c0", "u-1")
        );
        assert_eq!(v.image, "img:1");
        assert_eq!(v.image_id, "sha256:abc");
        assert_eq!(v.node, "node-a");
        assert_eq!(index.by_container_id(C2).unwrap().container_name, "c1");
        // A prefixed id also works; the prefixed form is not a key of its own.
        assert_eq!(
            index
                .by_container_id(&format!("docker://{C1}"))
                .unwrap()
                .uid,
            "u-1"
        );
        assert!(index.by_container_id("containerd://").is_none());
        assert!(index.by_container_id("").is_none());
    }

    #[test]
    fn init_ephemeral_and_previous_containers_are_indexed() {
        let c3 = "3".repeat(64);
        let c4 = "4".repeat(64);
        let p = pod(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u-1"},
            "status": {
                "containerStatuses": [{"name": "main", "image": "m", "imageID": "", "ready": true, "restartCount": 1,
                    "containerID": format!("containerd://{C1}"),
                    "lastState": {"terminated": {"exitCode": 1, "containerID": format!("containerd://{C2}")}}}],
                "initContainerStatuses": [{"name": "init", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                    "containerID": format!("containerd://{c3}")}],
                "ephemeralContainerStatuses": [{"name": "debug", "image": "d", "imageID": "", "ready": false, "restartCount": 0,
                    "containerID": format!("containerd://{c4}")}]
            }
        }));
        let index = PodIndex::new(Duration::from_secs(30));
        index.apply(&p);
        let name = |id: &str| index.by_container_id(id).map(|v| v.container_name);
        assert_eq!(name(C1).as_deref(), Some("main"));
        assert_eq!(name(C2).as_deref(), Some("main"));
        assert_eq!(name(&c3).as_deref(), Some("init"));
        assert_eq!(name(&c4).as_deref(), Some("debug"));
    }

    #[test]
    fn lookup_by_uid_and_mirror_hash() {
        let hash = "6e0b6b1e2a3c4d5e6f708192a3b4c5d6";
        let mirror = pod(serde_json::json!({
            "metadata": {
                "name": "kube-apiserver-node-a", "namespace": "kube-system", "uid": "9a1b2c3d-0000-4000-8000-000000000001",
                "annotations": {"kubernetes.io/config.mirror": hash, "kubernetes.io/config.hash": hash},
                "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": "node-a", "uid": "n", "controller": true}]
            },
            "status": {"containerStatuses": [{"name": "kube-apiserver", "image": "k", "imageID": "", "ready": true,
                "restartCount": 0, "containerID": format!("containerd://{C1}")}]}
        }));
        let index = PodIndex::new(Duration::from_secs(30));
        index.apply(&mirror);
        index.apply(&simple("5f2e1d0c-0000-4000-8000-000000000002", &[]));

        let by_hash = index.by_pod_uid(hash).expect("static pod by config hash");
        assert_eq!(by_hash.name, "kube-apiserver-node-a");
        assert_eq!(
            (by_hash.owner_kind.as_str(), by_hash.owner_name.as_str()),
            ("Node", "node-a")
        );
        assert_eq!(by_hash.container_id, "");
        assert_eq!(by_hash.container_name, "");
        assert_eq!(
            index
                .by_pod_uid("9a1b2c3d-0000-4000-8000-000000000001")
                .unwrap()
                .name,
            "kube-apiserver-node-a"
        );
        // systemd cgroup names spell the UID with underscores.
        assert_eq!(
            index
                .by_pod_uid("5f2e1d0c_0000_4000_8000_000000000002")
                .unwrap()
                .uid,
            "5f2e1d0c-0000-4000-8000-000000000002"
        );
        assert!(index.by_pod_uid("6e0b6b1e").is_none());

        // The hash goes with the pod.
        let index0 = PodIndex::new(Duration::ZERO);
        index0.apply(&mirror);
        index0.delete(&mirror);
        assert!(index0.by_pod_uid(hash).is_none());
        index0.purge_expired();
        assert!(index0.read().mirrors.is_empty());
        assert!(index0.read().containers.is_empty());
    }

    #[test]
    fn deleted_pods_resolve_for_the_grace_period_then_are_purged() {
        let grace = Duration::from_secs(30);
        let index = PodIndex::new(grace);
        let t0 = Instant::now();
        index.apply_at(&simple("u-1", &[C1]), t0);
        index.apply_at(&simple("u-2", &[C2]), t0);
        assert_eq!(index.len(), 2);

        index.delete_at(&simple("u-1", &[C1]), t0);
        assert_eq!(index.len(), 1, "a deleted pod is not counted");
        let during = t0 + grace - Duration::from_millis(1);
        assert_eq!(index.by_container_id_at(C1, during).unwrap().uid, "u-1");
        assert_eq!(index.by_pod_uid_at("u-1", during).unwrap().uid, "u-1");

        let after = t0 + grace;
        assert!(index.by_container_id_at(C1, after).is_none());
        assert!(index.by_pod_uid_at("u-1", after).is_none());
        assert_eq!(index.by_container_id_at(C2, after).unwrap().uid, "u-2");
        // Still stored until a write purges it.
        assert_eq!(index.read().pods.len(), 2);
        index.apply_at(&simple("u-2", &[C2]), after);
        assert_eq!(index.read().pods.len(), 1);
        assert_eq!(index.read().containers.len(), 1);
        assert!(index.read().next_expiry.is_none());
    }

    #[test]
    fn a_replaced_container_resolves_for_the_grace_period() {
        let grace = Duration::from_secs(30);
        let index = PodIndex::new(grace);
        let t0 = Instant::now();
        index.apply_at(&simple("u-1", &[C1]), t0);
        index.apply_at(&simple("u-1", &[C2]), t0);
        assert_eq!(index.by_container_id_at(C2, t0).unwrap().uid, "u-1");
        assert_eq!(index.by_container_id_at(C1, t0).unwrap().uid, "u-1");
        assert!(index.by_container_id_at(C1, t0 + grace).is_none());
        assert_eq!(index.by_container_id_at(C2, t0 + grace).unwrap().uid, "u-1");
        assert_eq!(index.len(), 1);
    }

    #[test]
    fn replace_all_deletes_pods_missing_from_the_list() {
        let grace = Duration::from_secs(30);
        let index = PodIndex::new(grace);
        let t0 = Instant::now();
        index.apply_at(&simple("u-1", &[C1]), t0);
        index.apply_at(&simple("u-2", &[C2]), t0);
        index.replace_parsed_at(vec![parse(&simple("u-2", &[C2])).unwrap()], t0);
        assert_eq!(index.len(), 1);
        assert!(
            index.by_pod_uid_at("u-1", t0).is_some(),
            "in its grace period"
        );
        assert!(index.by_pod_uid_at("u-1", t0 + grace).is_none());
        // A deleted pod that shows up in a later list is live again.
        index.replace_all(&[simple("u-1", &[C1]), simple("u-2", &[C2])]);
        assert_eq!(index.len(), 2);
        assert!(index.by_container_id_at(C1, t0 + grace * 2).is_some());
    }

    #[tokio::test]
    async fn generation_and_changed_notify() {
        let index = PodIndex::new(Duration::from_secs(30));
        let mut rx = index.changed();
        assert_eq!(index.generation(), 0);
        assert!(!rx.has_changed().unwrap());

        let waiter = tokio::spawn({
            let mut rx = index.changed();
            async move {
                rx.changed().await.unwrap();
                *rx.borrow_and_update()
            }
        });
        let clone = index.clone();
        clone.apply(&simple("u-1", &[C1]));
        let seen = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the waiter is woken")
            .unwrap();
        assert_eq!(seen, 1);
        assert_eq!(index.generation(), 1, "clones share the index");
        assert!(rx.has_changed().unwrap());
        assert_eq!(*rx.borrow_and_update(), 1);

        index.delete(&simple("u-1", &[C1]));
        index.replace_all(&[]);
        assert_eq!(index.generation(), 3);
        assert_eq!(*rx.borrow_and_update(), 3);
        // A pod without a UID changes nothing.
        index.apply(&pod(serde_json::json!({"metadata": {"name": "x"}})));
        assert_eq!(index.generation(), 3);
    }
}
