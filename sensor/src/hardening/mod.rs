//! Hardening from what the sensor sees: `sensor advise` (events in, NetworkPolicies, a seccomp
//! profile and securityContext patches out), the node's posture (`sensor posture`, the daemon's
//! start-up line and gauges) and a pod spec's posture. docs/hardening.md is the guide.

pub mod advise;
pub mod node;
pub mod pod;
pub mod render;
