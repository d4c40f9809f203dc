//! A minimal Kubernetes API server for the end-to-end tests: `GET /api/v1/pods` lists the pods
//! it holds and `...&watch=true` streams the watch events pushed with [`KubeApi::add`]; the
//! policy resources (`/apis/sensor.dev/v1/sensorpolicies`, `.../sensorclusterpolicies`) the
//! same, changed with [`KubeApi::apply`] and [`KubeApi::delete`]; `PATCH .../status` of a
//! policy resource is recorded ([`KubeApi::statuses`]). Plain HTTP on 127.0.0.1 only; one
//! thread per connection; stops with the test process.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    sync::{Arc, Condvar, Mutex},
    thread,
    time::Duration,
};

use serde_json::{Value, json};

/// The resources served: pods and the two policy kinds.
pub const PODS: &str = "pods";
pub const POLICIES: &str = "sensorpolicies";
pub const CLUSTER_POLICIES: &str = "sensorclusterpolicies";

#[derive(Default)]
struct State {
    /// Objects by resource.
    objects: std::collections::BTreeMap<&'static str, Vec<Value>>,
    /// Watch events in order, with their resource; a watcher sends those of its resource it
    /// has not sent yet.
    events: Vec<(&'static str, Value)>,
    resource_version: u64,
    requests: Vec<String>,
    /// Status patches received: (resource, namespace, name, body).
    statuses: Vec<(String, String, String, Value)>,
}

/// The resource a request path names, and the object name for `.../NAME/status`.
fn route(path: &str) -> Option<(&'static str, Option<(String, String)>)> {
    let path = path.split('?').next().unwrap_or("");
    if path == "/api/v1/pods" {
        return Some((PODS, None));
    }
    let rest = path.strip_prefix("/apis/sensor.dev/v1/")?;
    let parts: Vec<&str> = rest.split('/').collect();
    let resource = |r: &str| [POLICIES, CLUSTER_POLICIES].into_iter().find(|x| *x == r);
    match parts.as_slice() {
        [r] => Some((resource(r)?, None)),
        ["namespaces", ns, r, name, "status"] => {
            Some((resource(r)?, Some(((*ns).to_owned(), (*name).to_owned()))))
        }
        [r, name, "status"] => Some((resource(r)?, Some((String::new(), (*name).to_owned())))),
        _ => None,
    }
}

pub struct KubeApi {
    pub port: u16,
    state: Arc<(Mutex<State>, Condvar)>,
}

impl KubeApi {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the test API server");
        let port = listener.local_addr().expect("addr").port();
        let state = Arc::new((
            Mutex::new(State {
                resource_version: 1,
                ..Default::default()
            }),
            Condvar::new(),
        ));
        let s = Arc::clone(&state);
        thread::spawn(move || {
            for conn in listener.incoming().map_while(Result::ok) {
                let s = Arc::clone(&s);
                thread::spawn(move || {
                    let _ = serve(conn, &s);
                });
            }
        });
        Self { port, state }
    }

    /// A kubeconfig pointing at this server, written into `dir`.
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: http://127.0.0.1:{}\n\
             users:\n- name: test\n  user: {{}}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: test\n\
             current-context: test\n",
            self.port
        );
        std::fs::write(&path, text).expect("writing kubeconfig");
        path
    }

    /// Wait until a sensor's pod watcher is watching (it listed this node's pods and opened a
    /// watch).
    pub fn wait_for_watch(&self, node: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let pods = |r: &String| r.starts_with("/api/v1/pods");
        while !self
            .requests()
            .iter()
            .any(|r| pods(r) && r.contains("watch="))
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the sensor never watched pods: {:?}",
                self.requests()
            );
            thread::sleep(Duration::from_millis(20));
        }
        let list = self
            .requests()
            .into_iter()
            .find(|r| pods(r) && !r.contains("watch="))
            .expect("a list request");
        assert!(
            list.contains(&format!("spec.nodeName%3D{node}"))
                || list.contains(&format!("spec.nodeName={node}")),
            "{list}"
        );
    }

    /// Add a pod: in later lists, and as an ADDED event to watchers.
    pub fn add(&self, pod: Value) {
        self.apply(PODS, pod);
    }

    /// Create or replace (by namespace and name) an object of `resource`: in later lists, and
    /// as an ADDED or MODIFIED event to watchers.
    pub fn apply(&self, resource: &'static str, object: Value) {
        let (lock, cv) = &*self.state;
        let mut st = lock.lock().unwrap();
        st.resource_version += 1;
        let mut object = object;
        object["metadata"]["resourceVersion"] = json!(st.resource_version.to_string());
        let objects = st.objects.entry(resource).or_default();
        let same = |o: &Value| {
            o["metadata"]["namespace"] == object["metadata"]["namespace"]
                && o["metadata"]["name"] == object["metadata"]["name"]
        };
        let kind = match objects.iter().position(same) {
            Some(i) => {
                objects[i] = object.clone();
                "MODIFIED"
            }
            None => {
                objects.push(object.clone());
                "ADDED"
            }
        };
        st.events
            .push((resource, json!({"type": kind, "object": object})));
        cv.notify_all();
    }

    /// Delete an object of `resource` (`namespace` "" for a cluster-scoped one): gone from
    /// later lists, and a DELETED event to watchers.
    pub fn delete(&self, resource: &'static str, namespace: &str, name: &str) {
        let (lock, cv) = &*self.state;
        let mut st = lock.lock().unwrap();
        st.resource_version += 1;
        let rv = st.resource_version.to_string();
        let objects = st.objects.entry(resource).or_default();
        let Some(i) = objects.iter().position(|o| {
            o["metadata"]["namespace"].as_str().unwrap_or("") == namespace
                && o["metadata"]["name"] == name
        }) else {
            return;
        };
        let mut object = objects.remove(i);
        object["metadata"]["resourceVersion"] = json!(rv);
        st.events
            .push((resource, json!({"type": "DELETED", "object": object})));
        cv.notify_all();
    }

    /// Status patches received so far: (resource, namespace, name, patch body).
    pub fn statuses(&self) -> Vec<(String, String, String, Value)> {
        self.state.0.lock().unwrap().statuses.clone()
    }

    /// Request lines seen so far.
    pub fn requests(&self) -> Vec<String> {
        self.state.0.lock().unwrap().requests.clone()
    }
}

const NOT_FOUND: &str = r#"{"kind":"Status","apiVersion":"v1","status":"Failure","code":404}"#;

fn respond(out: &mut TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    write!(
        out,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn serve(conn: TcpStream, state: &(Mutex<State>, Condvar)) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut out = conn;
    loop {
        let mut request = String::new();
        if reader.read_line(&mut request)? == 0 {
            return Ok(());
        }
        // Headers up to the blank line; a body only with Content-Length.
        let mut length = 0usize;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
                break;
            }
            if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; length];
        std::io::Read::read_exact(&mut reader, &mut body)?;
        let method = request.split_whitespace().next().unwrap_or("").to_owned();
        let target = request.split_whitespace().nth(1).unwrap_or("").to_owned();
        state.0.lock().unwrap().requests.push(format!(
            "{}{target}",
            if method == "GET" {
                String::new()
            } else {
                format!("{method} ")
            }
        ));
        let Some((resource, object)) = route(&target) else {
            respond(&mut out, "404 Not Found", NOT_FOUND)?;
            continue;
        };
        if let Some((namespace, name)) = object {
            let patch: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let mut st = state.0.lock().unwrap();
            st.statuses.push((
                resource.to_owned(),
                namespace.clone(),
                name.clone(),
                patch.clone(),
            ));
            let found = st.objects.get(resource).and_then(|objects| {
                objects.iter().find(|o| {
                    o["metadata"]["namespace"].as_str().unwrap_or("") == namespace
                        && o["metadata"]["name"] == name.as_str()
                })
            });
            match found {
                Some(o) => {
                    let mut o = o.clone();
                    o["status"] = patch["status"].clone();
                    let text = o.to_string();
                    drop(st);
                    respond(&mut out, "200 OK", &text)?;
                }
                None => {
                    drop(st);
                    respond(&mut out, "404 Not Found", NOT_FOUND)?;
                }
            }
            continue;
        }
        if !target.contains("watch=true") && !target.contains("watch=1") {
            let body = {
                let st = state.0.lock().unwrap();
                let items = st.objects.get(resource).cloned().unwrap_or_default();
                json!({"kind": "List", "apiVersion": "v1",
                       "metadata": {"resourceVersion": st.resource_version.to_string()}, "items": items})
                .to_string()
            };
            respond(&mut out, "200 OK", &body)?;
            continue;
        }
        // Watch: events that come after the list, streamed as chunks, until the peer goes away.
        write!(
            out,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )?;
        out.flush()?;
        let mut sent = state.0.lock().unwrap().events.len();
        loop {
            let pending: Vec<Value> = {
                let (lock, cv) = state;
                let st = lock.lock().unwrap();
                let (st, _) = cv.wait_timeout(st, Duration::from_secs(1)).unwrap();
                let new = st.events[sent..]
                    .iter()
                    .filter(|(r, _)| *r == resource)
                    .map(|(_, e)| e.clone())
                    .collect();
                sent = st.events.len();
                new
            };
            for ev in &pending {
                let line = format!("{ev}\n");
                write!(out, "{:x}\r\n{line}\r\n", line.len())?;
            }
            out.flush()?;
        }
    }
}

/// A pod as the API server would return it: `uid` in the canonical form, one container running
/// with `container_id` (64 hex), owned by ReplicaSet `<deployment>-<hash>`.
pub fn pod(
    namespace: &str,
    name: &str,
    uid: &str,
    container_id: &str,
    image: &str,
    deployment: &str,
    node: &str,
) -> Value {
    let hash = "5d8f7c9b7";
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name, "namespace": namespace, "uid": uid,
            "labels": {"app": deployment, "pod-template-hash": hash},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("{deployment}-{hash}"),
                                 "uid": "0f0f0f0f-0000-4000-8000-000000000001", "controller": true}],
        },
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": image}]},
        "status": {
            "phase": "Running",
            "containerStatuses": [{
                "name": "app", "image": image, "imageID": format!("{image}@sha256:{}", "ab".repeat(32)),
                "containerID": format!("containerd://{container_id}"),
                "ready": true, "restartCount": 0, "state": {"running": {}}
            }]
        }
    })
}
