//! The daemon's outward face: the gRPC API, health and readiness, Prometheus metrics.

pub mod api;
pub mod health;
pub mod metrics;
