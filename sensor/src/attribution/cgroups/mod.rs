//! cgroup v2 attribution: which cgroup an event came from, and which pod and container that is.
//!
//! The kernel reports a cgroup by its v2 id, the inode number of its directory on the cgroup2
//! mount. Attribution takes two steps, each its own submodule:
//!
//! - [`CgroupIndex`] (`index`): cgroup id -> path relative to the cgroup2 root, from a
//!   depth-bounded walk of the mount, rescanned (rate-limited) on a miss; removed cgroups stay
//!   resolvable for a grace period so late events still resolve. [`cgroup2_root`] finds the mount.
//! - [`parse_cgroup_path`] (`path`): path -> [`ContainerRef`] (pod UID, container id, runtime,
//!   QoS class), a pure function over the layouts the kubelet and the runtimes create (systemd
//!   and cgroupfs drivers; containerd, CRI-O, cri-dockerd; kind/k3d nesting; crun sub-cgroups).

mod index;
mod path;

pub use index::{
    CgroupIndex, CgroupIndexStats, DEFAULT_GRACE_PERIOD, DEFAULT_MIN_RESCAN_INTERVAL, cgroup2_root,
};
pub use path::{ContainerRef, Qos, Runtime, parse_cgroup_path};
