//! Attribution: which process (executable, arguments, parent chain) and which pod (namespace,
//! name, container, image, owner) an event belongs to.
//!
//! Process: from the [`ProcessCache`]. Pod: cgroup id -> path ([`CgroupIndex`]) -> pod UID and
//! container id ([`parse_cgroup_path`]) -> [`PodIndex`]. An event whose pod (or container) is
//! not known yet waits in a bounded queue and is completed when the pod appears; past the wait
//! bound, or when the queue is full, it goes out `partial` with what is known (pod UID,
//! container id). Nothing is dropped.

pub mod cgroups;
pub mod pods;
pub mod procs;

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    hash::{BuildHasherDefault, Hasher},
    sync::Arc,
    time::{Duration, Instant},
};

use sensor_proto::v1 as pb;

use crate::{
    attribution::cgroups::{CgroupIndex, ContainerRef, parse_cgroup_path},
    attribution::pods::{PodIndex, PodView},
    attribution::procs::ProcessCache,
    event::{
        Body,
        encode::{Draft, PodAttr},
    },
};

/// A hash map keyed by integers (pids, cgroup ids) with a fast hasher.
pub type IntMap<K, V> = HashMap<K, V, BuildHasherDefault<IntHasher>>;

/// A multiply-fold hasher for integer keys (pids and cgroup ids are not chosen by an attacker
/// who could aim for collisions: the kernel hands them out).
#[derive(Default, Clone, Copy)]
pub struct IntHasher(u64);

impl Hasher for IntHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        let m = u128::from(self.0 ^ n) * 0x9e37_79b9_7f4a_7c15;
        self.0 = (m as u64) ^ ((m >> 64) as u64);
    }
}

/// Parsed cgroup paths kept (cleared when full).
const PARSED_CACHE_CAP: usize = 65_536;
/// Ancestors reported per event.
const MAX_ANCESTORS: usize = 5;

#[derive(Debug, Default, Clone, Copy)]
pub struct EnrichStats {
    /// Events waiting for their pod now.
    pub pending: u64,
    /// Events completed after waiting.
    pub completed_late: u64,
    /// Events emitted `partial` (pod never appeared within the bound, queue full, process gone).
    pub partial: u64,
    /// Events that could not wait because the queue was full (also counted in `partial`).
    pub queue_full: u64,
}

struct Parked {
    since: Instant,
    draft: Draft,
    target: ContainerRef,
}

pub struct Enricher {
    procs: ProcessCache,
    cgroups: Option<CgroupIndex>,
    pods: Option<PodIndex>,
    parked: VecDeque<Parked>,
    wait: Duration,
    cap: usize,
    stats: EnrichStats,
    /// Pod index generation at the last full poll.
    polled_generation: u64,
    /// cgroup id -> what its path says (None: not a pod's cgroup).
    parsed: IntMap<u64, Parsed>,
    /// cgroup id -> its pod, encoded, as of pod index generation `pod_cache_generation`.
    pod_cache: IntMap<u64, Arc<PodAttr>>,
    pod_cache_generation: u64,
    /// Pod index generation at the last [`Enricher::posture_changes`].
    posture_generation: u64,
}

/// What a cgroup's path says, parsed once per cgroup id.
#[derive(Clone)]
struct Parsed {
    /// The path, relative to the cgroup2 mount.
    path: std::sync::Arc<str>,
    /// The pod and container it names, if it is a pod's cgroup.
    target: Option<ContainerRef>,
}

enum PodMatch {
    /// Not a pod's cgroup (a host process).
    NotAPod,
    Found(Arc<PodAttr>),
    /// A pod's cgroup, but the index does not (yet) know the pod or the container.
    Unknown(ContainerRef),
}

fn pod_from_view(v: PodView, target: &ContainerRef) -> pb::Pod {
    let mut pod = v.into_proto();
    if pod.container_id.is_empty() {
        pod.container_id = target.container_id.clone().unwrap_or_default();
    }
    pod
}

impl PodView {
    pub fn into_proto(self) -> pb::Pod {
        pb::Pod {
            namespace: self.namespace,
            name: self.name,
            uid: self.uid,
            labels: self.labels.into_iter().collect(),
            container_name: self.container_name,
            container_id: self.container_id,
            image: self.image,
            owner_kind: self.owner_kind,
            owner_name: self.owner_name,
            image_id: self.image_id,
        }
    }
}

/// What the cgroup path alone says about the pod.
fn pod_from_ref(target: &ContainerRef) -> pb::Pod {
    pb::Pod {
        uid: target.pod_uid.clone().unwrap_or_default(),
        container_id: target.container_id.clone().unwrap_or_default(),
        ..Default::default()
    }
}

impl Enricher {
    /// The cgroup v2 directory of a cgroup id, when the index knows it.
    pub fn cgroup_dir(&mut self, id: u64) -> Option<std::path::PathBuf> {
        let index = self.cgroups.as_mut()?;
        let path = index.path(id)?;
        Some(index.root().join(path.trim_start_matches('/')))
    }

    pub fn new(
        procs: ProcessCache,
        cgroups: Option<CgroupIndex>,
        pods: Option<PodIndex>,
        wait: Duration,
        cap: usize,
    ) -> Self {
        Self {
            procs,
            cgroups,
            pods,
            parked: VecDeque::new(),
            wait,
            cap,
            stats: EnrichStats::default(),
            polled_generation: 0,
            parsed: IntMap::default(),
            pod_cache: IntMap::default(),
            pod_cache_generation: 0,
            posture_generation: 0,
        }
    }

    pub fn stats(&self) -> EnrichStats {
        EnrichStats {
            pending: self.parked.len() as u64,
            ..self.stats
        }
    }

    pub fn procs(&self) -> &ProcessCache {
        &self.procs
    }

    /// Attribute `draft`. Returns it when it is ready to go out, or `None` when it waits for
    /// its pod (it comes back from [`Enricher::poll`]).
    pub fn enrich(&mut self, mut draft: Draft, now: Instant) -> Option<Draft> {
        let process_known = self.attribute_process(&mut draft, now);
        let cgroup_id = draft.event.cgroup_id;
        let parsed = self.parsed(cgroup_id);
        draft.cgroup = parsed.as_ref().map(|p| Arc::clone(&p.path));
        let complete = match self.match_pod(cgroup_id, parsed) {
            PodMatch::NotAPod => process_known,
            PodMatch::Found(pod) => {
                draft.pod = Some(pod);
                process_known
            }
            PodMatch::Unknown(target) if self.pods.is_some() => {
                if self.parked.len() < self.cap {
                    self.parked.push_back(Parked {
                        since: now,
                        draft,
                        target,
                    });
                    return None;
                }
                self.stats.queue_full += 1;
                draft.pod = Some(Arc::new(PodAttr::new(&pod_from_ref(&target))));
                false
            }
            // Host mode on a Kubernetes node: the path is all we know.
            PodMatch::Unknown(target) => {
                draft.pod = Some(Arc::new(PodAttr::new(&pod_from_ref(&target))));
                false
            }
        };
        Some(self.finish(draft, complete))
    }

    fn finish(&mut self, mut draft: Draft, complete: bool) -> Draft {
        if !complete {
            self.stats.partial += 1;
        }
        draft.enrichment = if complete {
            pb::Enrichment::Complete
        } else {
            pb::Enrichment::Partial
        };
        draft
    }

    fn attribute_process(&mut self, draft: &mut Draft, now: Instant) -> bool {
        let event = &draft.event;
        if let Body::Exec { filename } = &event.body {
            self.procs.on_exec(event.pid, filename.text(), &event.comm);
        }
        let info = self.procs.get(event.pid);
        if let Body::Exit = event.body {
            self.procs.on_exit(event.pid, now);
        }
        let Some(info) = info else {
            tracing::debug!(pid = event.pid, comm = %event.comm, "process unknown (exited before its event was read)");
            return false;
        };
        // A zombie's /proc entry has no executable any more: known, but not completely.
        let complete = !info.exe.is_empty();
        draft.ancestors = self.procs.ancestors(&info, MAX_ANCESTORS);
        draft.process = Some(info);
        complete
    }

    /// The cgroup's path and what it says (`None`: the index does not know the id).
    fn parsed(&mut self, cgroup_id: u64) -> Option<Parsed> {
        // A cgroup's id never changes meaning while it exists: parse each path once.
        if let Some(p) = self.parsed.get(&cgroup_id) {
            return Some(p.clone());
        }
        let path = self.cgroups.as_mut().and_then(|c| c.path(cgroup_id))?;
        let parsed = Parsed {
            target: parse_cgroup_path(&path),
            path: path.into(),
        };
        if self.parsed.len() >= PARSED_CACHE_CAP {
            self.parsed.clear();
        }
        self.parsed.insert(cgroup_id, parsed.clone());
        Some(parsed)
    }

    fn match_pod(&mut self, cgroup_id: u64, parsed: Option<Parsed>) -> PodMatch {
        let Some(target) = parsed.and_then(|p| p.target) else {
            return PodMatch::NotAPod;
        };
        // A pod found for a cgroup stays its pod until the index changes.
        let generation = self.pods_generation().unwrap_or(0);
        if generation != self.pod_cache_generation {
            self.pod_cache.clear();
            self.pod_cache_generation = generation;
        }
        if let Some(pod) = self.pod_cache.get(&cgroup_id) {
            return PodMatch::Found(Arc::clone(pod));
        }
        match self.lookup(&target) {
            Some(pod) => {
                let pod = Arc::new(PodAttr::new(&pod));
                if self.pod_cache.len() >= PARSED_CACHE_CAP {
                    self.pod_cache.clear();
                }
                self.pod_cache.insert(cgroup_id, Arc::clone(&pod));
                PodMatch::Found(pod)
            }
            None => PodMatch::Unknown(target),
        }
    }

    /// The pod for `target`; with a container id, only a view that knows the container.
    fn lookup(&self, target: &ContainerRef) -> Option<pb::Pod> {
        let pods = self.pods.as_ref()?;
        if let Some(id) = &target.container_id {
            return pods.by_container_id(id).map(|v| pod_from_view(v, target));
        }
        let uid = target.pod_uid.as_ref()?;
        pods.by_pod_uid(uid).map(|v| pod_from_view(v, target))
    }

    /// Pods whose posture findings changed since the last call (Kubernetes mode; cheap while
    /// the pod index has not changed).
    pub fn posture_changes(&mut self) -> Vec<crate::attribution::pods::PostureChange> {
        let Some(pods) = &self.pods else {
            return Vec::new();
        };
        let generation = pods.generation();
        if generation == self.posture_generation {
            return Vec::new();
        }
        self.posture_generation = generation;
        pods.posture_changes()
    }

    /// The pod index generation (Kubernetes mode).
    pub fn pods_generation(&self) -> Option<u64> {
        self.pods.as_ref().map(PodIndex::generation)
    }

    /// The pod-level cgroups of known pods, each with the pod's namespace and labels; `None`
    /// in host mode. Pods the index does not know are left out (they answer to the policies
    /// of unclaimed cgroups).
    #[allow(clippy::type_complexity)]
    pub fn pod_cgroups(&mut self) -> Option<BTreeMap<u64, (String, BTreeMap<String, String>)>> {
        let pods = self.pods.as_ref()?;
        let cgroups = self.cgroups.as_mut()?;
        if let Err(err) = cgroups.rescan() {
            tracing::warn!(error = %err, "cgroup rescan failed; policy membership not refreshed");
            return None;
        }
        let mut out = BTreeMap::new();
        for (id, path) in cgroups.iter() {
            let Some(target) = parse_cgroup_path(path) else {
                continue;
            };
            let (Some(uid), None) = (&target.pod_uid, &target.container_id) else {
                continue;
            };
            let Some(pod) = pods.by_pod_uid(uid) else {
                continue;
            };
            out.insert(id, (pod.namespace.clone(), pod.labels.clone()));
        }
        Some(out)
    }

    /// Parked events that are now complete, or past the wait bound (`partial`), in arrival
    /// order; `flush_all` releases everything (shutdown).
    pub fn poll(&mut self, now: Instant, flush_all: bool) -> Vec<Draft> {
        // Cheap when nothing can have changed: no new pods and the oldest wait not over.
        let generation = self.pods.as_ref().map_or(0, PodIndex::generation);
        let oldest_due = self
            .parked
            .front()
            .is_some_and(|p| now.duration_since(p.since) >= self.wait);
        if self.parked.is_empty()
            || (!flush_all && !oldest_due && generation == self.polled_generation)
        {
            return Vec::new();
        }
        self.polled_generation = generation;
        let mut out = Vec::new();
        let mut keep = VecDeque::new();
        while let Some(mut p) = self.parked.pop_front() {
            if let Some(pod) = self.lookup(&p.target) {
                p.draft.pod = Some(Arc::new(PodAttr::new(&pod)));
                self.stats.completed_late += 1;
                let process_known = p
                    .draft
                    .process
                    .as_ref()
                    .is_some_and(|pr| !pr.exe.is_empty());
                out.push(self.finish(p.draft, process_known));
            } else if flush_all || now.duration_since(p.since) >= self.wait {
                p.draft.pod = Some(Arc::new(PodAttr::new(&pod_from_ref(&p.target))));
                out.push(self.finish(p.draft, false));
            } else {
                keep.push_back(p);
            }
        }
        self.parked = keep;
        out
    }
}
