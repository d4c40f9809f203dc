//! `sensor`: the userspace side of the agent.
//!
//! - [`scope`]: scope roots (cgroup v2 directories) and their validation;
//! - [`cgroups`]: cgroup id -> path index and path -> pod/container parsing;
//! - [`destinations`]: blocked destination prefixes (the built-in metadata list);
//! - [`tracefs`]: syscall tracepoint discovery and layout checks;
//! - [`programs`]: the embedded eBPF object, loading, map filling and attachment;
//! - [`event`]: checked decoding of ring buffer records into domain events;
//! - [`output`]: the JSON lines and compact event formats;
//! - [`counters`]: kernel and userspace counters;
//! - [`journal`]: the on-node event journal (sequenced segments, crash recovery, retention);
//! - [`convert`]: domain <-> `sensor.v1` conversions;
//! - [`filter`]: event filters (server side and offline replay);
//! - [`hub`]: live fan-out with per-subscriber bounded queues and loss records;
//! - [`enrich`]: process and pod attribution, with late enrichment;
//! - [`procs`]: the process cache (exec/exit events, /proc) and ancestry;
//! - [`pipeline`]: ring buffer -> decode -> attribution -> journal -> fan-out;
//! - [`pods`]: this node's pods from the Kubernetes API, indexed by container id and pod UID;
//! - [`policy`]: policy files (`sensor/v1`): strict parsing, the built-in default, compilation;
//! - [`api`]: the gRPC service and its listeners;
//! - [`health`]: readiness, the gRPC health statuses and `sensor health`;
//! - [`metrics`]: Prometheus metrics and `/healthz`, `/readyz` over HTTP;
//! - [`export`]: SIEM export (JSON lines, OCSF) to stdout or rotated files, from the journal;
//! - [`rules`]: the rules `sensor run` enforces (policy file or flags) and their reload;
//! - [`run`]: `sensor run`, wiring the above together;
//! - [`tail`]: `sensor tail`; [`status`]: `sensor status`; [`client`]: their gRPC client.

pub mod api;
pub mod btf;
pub mod cgroups;
pub mod cli;
pub mod client;
pub mod convert;
pub mod counters;

pub mod enrich;
pub mod event;
pub mod export;
pub mod filter;
pub mod health;
pub mod hub;
pub mod journal;
pub mod logging;
pub mod metrics;
pub mod output;
pub mod pins;
pub mod pipeline;
pub mod pods;
pub use sensor_policy as policy;
pub use sensor_policy::destinations;
pub mod procs;
pub mod programs;
pub mod revert;
pub mod rules;
pub mod run;
pub mod scope;
pub mod status;
pub mod tail;
pub mod tracefs;
