//! The policy resources (`SensorClusterPolicy`, `SensorPolicy`) from the API server: each kind
//! listed and watched, every object parsed by the same strict parser as a policy file (the
//! object as the API server returns it, rendered as JSON, which is YAML), and the latest
//! change per object left in [`Pending`] for the event loop to apply at its next slow tick.
//! Pending is bounded by the number of objects (a later change of an object replaces an
//! earlier one not applied yet).

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use futures_util::StreamExt as _;
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject},
    runtime::{
        WatchStreamExt as _,
        watcher::{self, Event},
    },
};
use sensor_policy::{self as parser, PolicyForm};

use super::InForce;

/// What became of a resource: its policy, deleted (`None`), or refused with located errors.
pub type Change = Result<Option<InForce>, Vec<String>>;

/// The latest change per resource key, not applied yet.
#[derive(Clone, Default)]
pub struct Pending(Arc<Mutex<BTreeMap<String, Change>>>);

impl Pending {
    fn put(&self, key: String, change: Change) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, change);
    }

    /// Every change not applied yet, in key order.
    pub fn take(&self) -> BTreeMap<String, Change> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// The two kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Cluster,
    Namespaced,
}

/// The API resource of a kind.
pub fn resource(kind: Kind) -> ApiResource {
    kind.resource()
}

impl Kind {
    fn resource(self) -> ApiResource {
        let (kind, plural) = match self {
            Kind::Cluster => (parser::CLUSTER_KIND, parser::CLUSTER_PLURAL),
            Kind::Namespaced => (parser::NAMESPACED_KIND, parser::NAMESPACED_PLURAL),
        };
        ApiResource {
            group: parser::RESOURCE_GROUP.to_owned(),
            version: parser::RESOURCE_VERSION.to_owned(),
            api_version: format!("{}/{}", parser::RESOURCE_GROUP, parser::RESOURCE_VERSION),
            kind: kind.to_owned(),
            plural: plural.to_owned(),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Cluster => parser::CLUSTER_KIND,
            Kind::Namespaced => parser::NAMESPACED_KIND,
        }
    }
}

/// The key of a resource (also its policy's `source`): `SensorClusterPolicy NAME` or
/// `SensorPolicy NAMESPACE/NAME`.
pub fn key(kind: Kind, namespace: Option<&str>, name: &str) -> String {
    match (kind, namespace) {
        (Kind::Namespaced, Some(ns)) => format!("{} {ns}/{name}", kind.name()),
        _ => format!("{} {name}", kind.name()),
    }
}

/// Parse an object of `kind` as the API server returned it.
pub fn parse_object(kind: Kind, object: &serde_json::Value) -> (String, Change) {
    let meta = &object["metadata"];
    let name = meta["name"].as_str().unwrap_or_default();
    let namespace = meta["namespace"].as_str();
    let key = key(kind, namespace, name);
    let text = serde_json::to_string_pretty(object).unwrap_or_default();
    let change = match parser::parse(&key, &text) {
        Err(errors) => Err(errors.iter().map(ToString::to_string).collect()),
        Ok(mut policy) => match (&mut policy.form, kind) {
            (PolicyForm::Cluster, Kind::Cluster) => Ok(Some(InForce::new(&policy, &key, &text))),
            (PolicyForm::Namespaced { namespace: ns }, Kind::Namespaced) => {
                // The API server's namespace, whatever the object says.
                *ns = namespace.map(str::to_owned);
                Ok(Some(InForce::new(&policy, &key, &text)))
            }
            _ => Err(vec![format!(
                "{key}: a {} served as a {} (apiVersion/kind do not match the resource)",
                match policy.form {
                    PolicyForm::File => "policy file",
                    PolicyForm::Cluster => parser::CLUSTER_KIND,
                    PolicyForm::Namespaced { .. } => parser::NAMESPACED_KIND,
                },
                kind.name()
            )]),
        },
    };
    (key, change)
}

/// At most one warning per this interval while a kind cannot be listed or watched.
const WARN_INTERVAL: Duration = Duration::from_secs(60);

/// List and watch `kind` until `shutdown`, leaving every change in `pending`.
pub async fn run(
    client: Client,
    kind: Kind,
    pending: Pending,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let api: Api<DynamicObject> = Api::all_with(client, &kind.resource());
    let mut stream = Box::pin(watcher::watcher(api, watcher::Config::default()).default_backoff());
    // Keys known from the last complete list and the watch since: a relist removes the others.
    let mut known: BTreeSet<String> = BTreeSet::new();
    let mut listing: BTreeSet<String> = BTreeSet::new();
    let mut last_warn: Option<Instant> = None;
    tracing::info!(kind = kind.name(), "watching policy resources");
    loop {
        let item = tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => break,
            item = stream.next() => item,
        };
        let Some(item) = item else { break };
        let event = match item {
            Ok(event) => event,
            Err(err) => {
                if last_warn.is_none_or(|t| t.elapsed() >= WARN_INTERVAL) {
                    last_warn = Some(Instant::now());
                    tracing::warn!(kind = kind.name(), error = %err, "policy resources cannot be watched (is the CRD installed?); retrying");
                }
                continue;
            }
        };
        let value = |o: &DynamicObject| serde_json::to_value(o).unwrap_or_default();
        match event {
            Event::Init => listing.clear(),
            Event::InitApply(o) | Event::Apply(o) => {
                let (key, change) = parse_object(kind, &value(&o));
                listing.insert(key.clone());
                known.insert(key.clone());
                pending.put(key, change);
            }
            Event::InitDone => {
                for gone in known.difference(&listing) {
                    pending.put(gone.clone(), Ok(None));
                }
                known = std::mem::take(&mut listing);
            }
            Event::Delete(o) => {
                let (key, _) = parse_object(kind, &value(&o));
                known.remove(&key);
                pending.put(key, Ok(None));
            }
        }
    }
}
