//! Hardening from what the sensor sees: `sensor advise` (events in, NetworkPolicies, a seccomp
//! profile and securityContext patches out), the node's posture (`sensor posture`, the daemon's
//! start-up line and gauges), a pod spec's posture, and posture records in the event stream. docs/hardening.md is the guide.

pub mod advise;
pub mod node;
pub mod pod;
pub mod render;
pub mod watch;
