//! The daemon's outward face: the gRPC API, health and readiness, Prometheus metrics.

pub mod api;
pub mod codec;
pub mod health;
pub mod http;
pub mod metrics;
pub mod status;
