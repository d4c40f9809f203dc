//! A minimal Kubernetes API server for the end-to-end attribution tests: `GET /api/v1/pods`
//! lists the pods it holds, `...&watch=true` streams watch events pushed with [`KubeApi::add`].
//! Plain HTTP on 127.0.0.1 only; one thread per connection; stops with the test process.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    sync::{Arc, Condvar, Mutex},
    thread,
    time::Duration,
};

use serde_json::{Value, json};

#[derive(Default)]
struct State {
    pods: Vec<Value>,
    /// Watch events in order; a watcher sends those it has not sent yet.
    events: Vec<Value>,
    resource_version: u64,
    requests: Vec<String>,
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

    /// Add a pod: in later lists, and as an ADDED event to watchers.
    pub fn add(&self, pod: Value) {
        let (lock, cv) = &*self.state;
        let mut st = lock.lock().unwrap();
        st.resource_version += 1;
        let mut pod = pod;
        pod["metadata"]["resourceVersion"] = json!(st.resource_version.to_string());
        st.pods.push(pod.clone());
        st.events.push(json!({"type": "ADDED", "object": pod}));
        cv.notify_all();
    }

    /// Request lines seen so far.
    pub fn requests(&self) -> Vec<String> {
        self.state.0.lock().unwrap().requests.clone()
    }
}

fn serve(conn: TcpStream, state: &(Mutex<State>, Condvar)) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut out = conn;
    loop {
        let mut request = String::new();
        if reader.read_line(&mut request)? == 0 {
            return Ok(());
        }
        // Headers up to the blank line (GET requests have no body).
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
                break;
            }
        }
        let target = request.split_whitespace().nth(1).unwrap_or("").to_owned();
        state.0.lock().unwrap().requests.push(target.clone());
        if !target.starts_with("/api/v1/pods") {
            let body = r#"{"kind":"Status","apiVersion":"v1","status":"Failure","code":404}"#;
            write!(
                out,
                "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )?;
            continue;
        }
        if !target.contains("watch=true") && !target.contains("watch=1") {
            let body = {
                let st = state.0.lock().unwrap();
                json!({"kind": "PodList", "apiVersion": "v1",
                       "metadata": {"resourceVersion": st.resource_version.to_string()}, "items": st.pods})
                .to_string()
            };
            write!(
                out,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )?;
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
                st.events[sent..].to_vec()
            };
            for ev in &pending {
                let line = format!("{ev}\n");
                write!(out, "{:x}\r\n{line}\r\n", line.len())?;
            }
            sent += pending.len();
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
