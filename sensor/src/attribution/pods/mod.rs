//! Pods on this node, from the Kubernetes API: an in-memory index that maps a container id or a
//! pod UID (as found in a process's cgroup path) to the pod's identity, and the watcher that
//! keeps it current.
//!
//! - [`PodIndex`]: lookups by container id, pod UID or static-pod config hash; deleted pods stay
//!   resolvable for a grace period, so that late events of a pod that just went away still
//!   find it.
//! - [`run_watcher`]: list + watch of the node's pods (`fieldSelector=spec.nodeName=<node>`),
//!   with bookmarks, relist on `410 Gone`, and reconnects with backoff while the index keeps
//!   serving what it last knew.
//! - [`client_from_env`]: a client from a kubeconfig or the in-cluster service account, or
//!   `None` on a host that is not a Kubernetes node (host mode).

mod index;
#[cfg(test)]
mod testserver;
mod watch;

pub use index::{PodIndex, PodView, PostureChange, strip_runtime_prefix};
pub use watch::{PodsError, WatchConfig, WatcherStats, client_from_env, run_watcher};
