//! Userspace counters of the event path, and the summary printed when `sensor run` stops.

use std::collections::BTreeMap;

use sensor_common::Counter;
use serde_json::{Map, Value, json};

use crate::event::Event;

#[derive(Debug, Default)]
pub struct Counters {
    /// Events written, by `kind/verdict`.
    pub events: BTreeMap<String, u64>,
    /// Records that failed to decode (each one is also logged).
    pub decode_errors: u64,
    /// chmod events whose file name could no longer be resolved through /proc.
    pub name_unresolved: u64,
}

impl Counters {
    pub fn record(&mut self, event: &Event) {
        let key = format!("{}/{}", event.kind().as_str(), event.verdict.as_str());
        *self.events.entry(key).or_default() += 1;
    }

    /// `{"counters": {...}}`: userspace counters plus the kernel's.
    pub fn summary(&self, kernel: &[(Counter, u64)]) -> Value {
        let kernel: Map<String, Value> = kernel
            .iter()
            .map(|(c, v)| (c.as_str().to_owned(), json!(v)))
            .collect();
        json!({
            "counters": {
                "events": self.events,
                "decode_errors": self.decode_errors,
                "name_unresolved": self.name_unresolved,
                "kernel": kernel,
            }
        })
    }
}
