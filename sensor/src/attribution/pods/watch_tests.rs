//! Tests of `watch.rs`.

use std::time::Duration;

use serde_json::{Value, json};

use super::*;
use crate::attribution::pods::testserver::TestServer;

const NODE: &str = "node-a";

fn container_id(c: char) -> String {
    std::iter::repeat_n(c, 64).collect()
}

/// A pod as the API server sends it.
fn pod_json(name: &str, rv: &str, labels: Value, owner: Option<(&str, &str)>, cid: &str) -> Value {
    let owners: Vec<Value> = owner
        .map(|(kind, n)| {
            json!({"apiVersion": "apps/v1", "kind": kind, "name": n, "uid": format!("uid-{n}"),
                   "controller": true, "blockOwnerDeletion": true})
        })
        .into_iter()
        .collect();
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": name, "namespace": "apps", "uid": format!("uid-{name}"), "resourceVersion": rv,
            "labels": labels, "ownerReferences": owners,
            "managedFields": [{"manager": "kubelet", "operation": "Update", "apiVersion": "v1"}]
        },
        "spec": {"nodeName": NODE, "containers": [{"name": "main", "image": "registry.example/app:1"}]},
        "status": {
            "phase": "Running",
            "containerStatuses": [{
                "name": "main", "image": "registry.example/app:1",
                "imageID": "registry.example/app@sha256:0123", "containerID": format!("containerd://{cid}"),
                "ready": true, "restartCount": 0, "state": {"running": {}}
            }]
        }
    })
}

fn pod_list(rv: &str, items: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": rv}, "items": items})
}

/// Wait for `cond`, polling; fails after 20 s.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn client_for_url(url: &str) -> Client {
    Client::try_from(Config::new(url.parse().expect("url"))).expect("client")
}

#[tokio::test]
async fn list_watch_bookmark_gone_relist_against_a_test_api_server() {
    let (ca, cb, cc1, cc2, cd) = (
        container_id('a'),
        container_id('b'),
        container_id('c'),
        container_id('e'),
        container_id('d'),
    );
    let web = pod_json(
        "web-5d8f7c6b9-x2x4z",
        "90",
        json!({"app": "web", "pod-template-hash": "5d8f7c6b9"}),
        Some(("ReplicaSet", "web-5d8f7c6b9")),
        &ca,
    );
    let agent = pod_json(
        "agent-7xk2p",
        "91",
        json!({"app": "agent"}),
        Some(("DaemonSet", "agent")),
        &cb,
    );
    let server = TestServer::start(NODE, pod_list("100", vec![web.clone(), agent.clone()])).await;

    // Grace zero: a deletion is visible at once.
    let index = PodIndex::new(Duration::ZERO);
    let stats = Arc::new(WatcherStats::default());
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(run_watcher(
        client_for_url(&server.url),
        WatchConfig {
            node_name: NODE.to_owned(),
            kubeconfig: None,
        },
        index.clone(),
        stats.clone(),
        shutdown,
    ));

    // The initial list.
    eventually("the initial list in the index", || {
        index.len() == 2 && stats.synced.load(Ordering::Relaxed)
    })
    .await;
    let v = index.by_container_id(&ca).expect("web by container id");
    assert_eq!(
        (v.namespace.as_str(), v.name.as_str()),
        ("apps", "web-5d8f7c6b9-x2x4z")
    );
    assert_eq!(
        (v.owner_kind.as_str(), v.owner_name.as_str()),
        ("Deployment", "web")
    );
    assert_eq!((v.container_name.as_str(), v.node.as_str()), ("main", NODE));
    assert_eq!(v.image_id, "registry.example/app@sha256:0123");
    let v = index.by_pod_uid("uid-agent-7xk2p").expect("agent by uid");
    assert_eq!(
        (v.owner_kind.as_str(), v.owner_name.as_str()),
        ("DaemonSet", "agent")
    );
    assert_eq!(v.container_id, "");
    let lists = server.lists();
    assert_eq!(lists.len(), 1);
    assert_eq!(
        lists[0].get("fieldSelector").map(String::as_str),
        Some("spec.nodeName=node-a")
    );

    // The watch starts from the list's resource version, with bookmarks.
    eventually("a watch", || server.watches().len() == 1).await;
    let w = &server.watches()[0];
    assert_eq!(w.get("resourceVersion").map(String::as_str), Some("100"));
    assert_eq!(
        w.get("allowWatchBookmarks").map(String::as_str),
        Some("true")
    );
    assert_eq!(
        w.get("fieldSelector").map(String::as_str),
        Some("spec.nodeName=node-a")
    );

    // ADDED.
    let gen_before = index.generation();
    let cache = pod_json("cache", "101", json!({"app": "cache"}), None, &cc1);
    server.send(json!({"type": "ADDED", "object": cache}));
    eventually("the added pod", || index.by_container_id(&cc1).is_some()).await;
    assert_eq!(index.len(), 3);
    assert!(index.generation() > gen_before);
    let v = index.by_container_id(&cc1).unwrap();
    assert_eq!(
        (v.owner_kind.as_str(), v.owner_name.as_str()),
        ("Pod", "cache")
    );

    // MODIFIED: a label changes and the container was replaced.
    let cache2 = pod_json(
        "cache",
        "102",
        json!({"app": "cache", "tier": "hot"}),
        None,
        &cc2,
    );
    server.send(json!({"type": "MODIFIED", "object": cache2}));
    eventually("the modified pod", || index.by_container_id(&cc2).is_some()).await;
    let v = index.by_container_id(&cc2).unwrap();
    assert_eq!(v.labels.get("tier").map(String::as_str), Some("hot"));
    assert_eq!(v.uid, "uid-cache");
    assert!(
        index.by_container_id(&cc1).is_none(),
        "the old container is gone (grace 0)"
    );
    assert_eq!(index.len(), 3);

    // DELETED.
    let agent_deleted = pod_json(
        "agent-7xk2p",
        "103",
        json!({"app": "agent"}),
        Some(("DaemonSet", "agent")),
        &cb,
    );
    server.send(json!({"type": "DELETED", "object": agent_deleted}));
    eventually("the deleted pod gone", || {
        index.by_pod_uid("uid-agent-7xk2p").is_none()
    })
    .await;
    assert!(index.by_container_id(&cb).is_none());
    assert_eq!(index.len(), 2);

    // BOOKMARK, then the server ends the watch: the next one resumes from the bookmark.
    server.send(
        json!({"type": "BOOKMARK", "object": {"apiVersion": "v1", "kind": "Pod",
        "metadata": {"resourceVersion": "104"}}}),
    );
    server.end_watch();
    eventually("a resumed watch", || server.watches().len() == 2).await;
    assert_eq!(
        server.watches()[1]
            .get("resourceVersion")
            .map(String::as_str),
        Some("104")
    );
    assert_eq!(server.lists().len(), 1, "resuming does not relist");

    // 410 Gone: relist. The new list lacks `cache` and has a new pod.
    let db = pod_json(
        "db-0",
        "150",
        json!({"app": "db"}),
        Some(("StatefulSet", "db")),
        &cd,
    );
    server.set_list(pod_list("200", vec![web.clone(), db]));
    server.send(json!({"type": "ERROR", "object": {"apiVersion": "v1", "kind": "Status", "metadata": {},
        "status": "Failure", "message": "too old resource version: 104 (180)", "reason": "Expired", "code": 410}}));
    eventually("a second list", || server.lists().len() == 2).await;
    eventually("the index matching the relist", || {
        index.by_container_id(&cd).is_some() && index.by_pod_uid("uid-cache").is_none()
    })
    .await;
    assert_eq!(index.len(), 2);
    assert!(index.by_container_id(&cc2).is_none());
    assert_eq!(index.by_container_id(&ca).unwrap().owner_name, "web");
    assert_eq!(
        index.by_container_id(&cd).unwrap().owner_kind,
        "StatefulSet"
    );
    eventually("a watch after the relist", || server.watches().len() == 3).await;
    assert_eq!(
        server.watches()[2]
            .get("resourceVersion")
            .map(String::as_str),
        Some("200")
    );

    assert_eq!(server.rejected(), Vec::<String>::new());
    assert_eq!(stats.relists.load(Ordering::Relaxed), 1);
    assert_eq!(stats.errors.load(Ordering::Relaxed), 0);
    // 2 listed + ADDED + MODIFIED + DELETED + 2 relisted.
    assert_eq!(stats.events.load(Ordering::Relaxed), 7);
    assert!(!stats.failing.load(Ordering::Relaxed));

    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the watcher stops on shutdown")
        .unwrap();
}

#[tokio::test]
async fn a_missing_field_selector_is_rejected_by_the_test_server() {
    // The server's check must be able to fail: a client that lists all pods is refused.
    let server = TestServer::start(NODE, pod_list("1", vec![])).await;
    let api: Api<Pod> = Api::all(client_for_url(&server.url));
    let err = api.list(&Default::default()).await.expect_err("refused");
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 400),
        "{err}"
    );
    assert_eq!(server.rejected().len(), 1);
}

#[tokio::test]
async fn an_unreachable_api_server_is_counted_and_retried_until_shutdown() {
    // A port with nothing listening on it.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let index = PodIndex::new(Duration::from_secs(30));
    let stats = Arc::new(WatcherStats::default());
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(run_watcher(
        client_for_url(&format!("http://127.0.0.1:{port}")),
        WatchConfig {
            node_name: NODE.to_owned(),
            kubeconfig: None,
        },
        index.clone(),
        stats.clone(),
        shutdown,
    ));
    eventually("two failed attempts", || {
        stats.errors.load(Ordering::Relaxed) >= 2
    })
    .await;
    assert!(stats.failing.load(Ordering::Relaxed));
    assert!(!stats.synced.load(Ordering::Relaxed));
    assert!(index.is_empty());
    // Shutdown interrupts the backoff.
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the watcher stops on shutdown")
        .unwrap();
}

#[test]
fn backoff_grows_with_jitter_and_resets() {
    let mut b = Backoff::default();
    let d: Vec<Duration> = (0..10).map(|_| b.next_delay()).collect();
    assert!(d[0] >= BACKOFF_MIN / 2 && d[0] <= BACKOFF_MIN, "{d:?}");
    assert!(d[3] >= BACKOFF_MIN * 4 && d[3] <= BACKOFF_MIN * 8, "{d:?}");
    assert!(d.iter().all(|d| *d <= BACKOFF_MAX), "{d:?}");
    assert!(d[9] >= BACKOFF_MAX / 2, "{d:?}");
    b.reset();
    assert!(b.next_delay() <= BACKOFF_MIN);
}

#[test]
fn config_source_order_and_host_mode() {
    let cfg = |path: Option<&str>| WatchConfig {
        node_name: NODE.to_owned(),
        kubeconfig: path.map(PathBuf::from),
    };
    let env = |kubeconfig: Option<&str>, host: Option<&str>, home: Option<&str>| Env {
        kubeconfig: kubeconfig.map(OsString::from),
        service_host: host.map(OsString::from),
        home: home.map(OsString::from),
    };
    let home_has_config = |p: &Path| p == Path::new("/home/u/.kube/config");
    let no_files = |_: &Path| false;

    assert_eq!(
        config_source(&cfg(None), &env(None, None, None), no_files),
        ConfigSource::Host
    );
    assert_eq!(
        config_source(
            &cfg(None),
            &env(Some(""), Some(""), Some("/home/u")),
            no_files
        ),
        ConfigSource::Host,
        "empty variables and a home without a kubeconfig"
    );
    assert_eq!(
        config_source(
            &cfg(None),
            &env(None, None, Some("/home/u")),
            home_has_config
        ),
        ConfigSource::File("/home/u/.kube/config".into())
    );
    assert_eq!(
        config_source(
            &cfg(None),
            &env(None, Some("10.0.0.1"), Some("/home/u")),
            home_has_config
        ),
        ConfigSource::InCluster
    );
    assert_eq!(
        config_source(
            &cfg(None),
            &env(Some("/k/a:/k/b"), Some("10.0.0.1"), None),
            no_files
        ),
        ConfigSource::KubeconfigEnv
    );
    assert_eq!(
        config_source(
            &cfg(Some("/etc/k")),
            &env(Some("/k/a"), Some("10.0.0.1"), None),
            no_files
        ),
        ConfigSource::File("/etc/k".into())
    );
}

#[tokio::test]
async fn host_mode_gives_no_client_and_an_explicit_kubeconfig_does() {
    let cfg = WatchConfig {
        node_name: NODE.to_owned(),
        kubeconfig: None,
    };
    let source = config_source(&cfg, &Env::default(), |_| false);
    assert!(
        client_for(source)
            .await
            .expect("host mode is not an error")
            .is_none()
    );

    let dir = std::env::temp_dir().join(format!("sensor-pods-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n\
         clusters: [{name: k, cluster: {server: 'http://127.0.0.1:1'}}]\n\
         users: [{name: u, user: {token: t}}]\n\
         contexts: [{name: c, context: {cluster: k, user: u}}]\n",
    )
    .unwrap();
    let cfg = WatchConfig {
        kubeconfig: Some(path.clone()),
        ..cfg
    };
    let source = config_source(&cfg, &Env::default(), |_| false);
    let client = client_for(source).await;
    let missing = client_for(ConfigSource::File(dir.join("missing"))).await;
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(client.expect("a usable kubeconfig").is_some());
    assert!(matches!(missing, Err(PodsError::Kubeconfig { .. })));
}
