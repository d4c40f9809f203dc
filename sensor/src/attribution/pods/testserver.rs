//! A fake Kubernetes API server for the watcher tests: plain HTTP/1.1 on 127.0.0.1, serving
//! `GET /api/v1/pods` as a list, or with `watch=true` as a stream of newline-delimited watch
//! events that the test writes one by one. Every request must carry
//! `fieldSelector=spec.nodeName=<node>`; one that does not is refused with a 400 Status and
//! recorded in [`TestServer::rejected`].

use std::{
    collections::BTreeMap,
    convert::Infallible,
    sync::{Arc, Mutex, PoisonError},
};

use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::{
    Request, Response, StatusCode,
    body::{Bytes, Frame, Incoming},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::{net::TcpListener, sync::mpsc, task::JoinHandle};
use tokio_stream::{StreamExt, wrappers::UnboundedReceiverStream};

type Body = BoxBody<Bytes, Infallible>;
pub type Query = BTreeMap<String, String>;

pub struct TestServer {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    state: Arc<Mutex<State>>,
    accept: JoinHandle<()>,
}

struct State {
    node: String,
    /// What the next list returns.
    list: Value,
    lists: Vec<Query>,
    watches: Vec<Query>,
    rejected: Vec<String>,
    /// The open watch stream (a new watch replaces, and so ends, the previous one).
    watch: Option<mpsc::UnboundedSender<Bytes>>,
}

impl TestServer {
    pub async fn start(node: &str, list: Value) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let state = Arc::new(Mutex::new(State {
            node: node.to_owned(),
            list,
            lists: Vec::new(),
            watches: Vec::new(),
            rejected: Vec::new(),
            watch: None,
        }));
        let shared = state.clone();
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = shared.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(handle(&state, &req)) }
                    });
                    // A client that goes away mid-stream is not a test failure.
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { url, state, accept }
    }

    /// The response of the next lists.
    pub fn set_list(&self, list: Value) {
        self.lock().list = list;
    }

    /// Write one event on the open watch stream.
    pub fn send(&self, event: Value) {
        let state = self.lock();
        let tx = state.watch.as_ref().expect("an open watch");
        let mut line = serde_json::to_vec(&event).expect("json");
        line.push(b'\n');
        tx.send(line.into()).expect("the watch stream is open");
    }

    /// End the open watch stream (as the API server does at its timeout).
    pub fn end_watch(&self) {
        self.lock().watch = None;
    }

    /// Query parameters of each list request so far.
    pub fn lists(&self) -> Vec<Query> {
        self.lock().lists.clone()
    }

    /// Query parameters of each watch request so far.
    pub fn watches(&self) -> Vec<Query> {
        self.lock().watches.clone()
    }

    /// Requests refused, with the reason.
    pub fn rejected(&self) -> Vec<String> {
        self.lock().rejected.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

fn handle(state: &Mutex<State>, req: &Request<Incoming>) -> Response<Body> {
    let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
    let query = parse_query(req.uri().query().unwrap_or(""));
    let target = req.uri().to_string();
    if req.method() != hyper::Method::GET || req.uri().path() != "/api/v1/pods" {
        state
            .rejected
            .push(format!("unexpected request {} {target}", req.method()));
        return status(StatusCode::NOT_FOUND, "NotFound", "no such path");
    }
    let want = format!("spec.nodeName={}", state.node);
    if query.get("fieldSelector") != Some(&want) {
        state.rejected.push(format!("no {want} in {target}"));
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "fieldSelector required",
        );
    }
    if query.get("watch").map(String::as_str) != Some("true") {
        state.lists.push(query);
        let body = serde_json::to_vec(&state.list).expect("json");
        return json_response(Full::new(Bytes::from(body)).boxed());
    }
    if query.get("resourceVersion").is_none_or(String::is_empty) {
        state
            .rejected
            .push(format!("watch without a resourceVersion: {target}"));
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "resourceVersion required",
        );
    }
    state.watches.push(query);
    let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
    state.watch = Some(tx);
    let frames = UnboundedReceiverStream::new(rx).map(|b| Ok::<_, Infallible>(Frame::data(b)));
    json_response(BodyExt::boxed(StreamBody::new(frames)))
}

fn json_response(body: Body) -> Response<Body> {
    Response::builder()
        .header("content-type", "application/json")
        .body(body)
        .expect("response")
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    let body = json!({"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16()});
    let mut resp = json_response(Full::new(Bytes::from(body.to_string())).boxed());
    *resp.status_mut() = code;
    resp
}

fn parse_query(q: &str) -> Query {
    q.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// `application/x-www-form-urlencoded` decoding (`+` is a space).
fn percent_decode(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex: Vec<u8> = bytes.by_ref().take(2).collect();
                let v = std::str::from_utf8(&hex)
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .expect("valid percent escape");
                out.push(v);
            }
            _ => out.push(b),
        }
    }
    String::from_utf8(out).expect("utf-8 query")
}
