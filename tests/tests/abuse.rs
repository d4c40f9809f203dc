//! Abusive API clients (docs/events.md, "The gRPC API"): while a chmod flood runs, 1,000
//! clients connect, open a stream and go away, and 16 open streams and never read; a steady
//! subscriber still receives every event once, in order, with no loss record, the daemon's
//! memory stays bounded, and every refused request gets its gRPC code: one stream more than
//! `--max-streams` (ResourceExhausted), a filter over its bounds (InvalidArgument), cursors in
//! the future (OutOfRange). (A TLS client without a certificate is refused in
//! stream.rs, `tls_tcp_listener_requires_a_client_certificate`.)

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use sensor_proto::v1 as pb;
use sensor_tests::{
    Sensor, Tail, TempDir, TestCgroup, chmod_burst, grpc_channel, require_root, seqs_of,
};
use tonic::Code;

const MAX_STREAMS: usize = 48;
const NEVER_READ: usize = 16;
const CHURN: u64 = 1000;
const FLOOD: u32 = 20_000;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

fn client(
    channel: tonic::transport::Channel,
) -> pb::sensor_client::SensorClient<tonic::transport::Channel> {
    pb::sensor_client::SensorClient::new(channel)
}

fn live(filter: pb::Filter) -> pb::GetEventsRequest {
    pb::GetEventsRequest {
        start: None,
        follow: true,
        filter: Some(filter),
        limit: 0,
    }
}

/// The code a `GetEvents` call gets.
async fn code_of(socket: &Path, request: pb::GetEventsRequest) -> (Code, String) {
    match client(grpc_channel(socket).await).get_events(request).await {
        Ok(_) => (Code::Ok, String::new()),
        Err(s) => (s.code(), s.message().to_owned()),
    }
}

/// Open `n` live streams on their own connections and keep them, unread.
async fn hold_streams(socket: &Path, n: usize) -> Vec<tonic::Streaming<pb::Event>> {
    let mut held = Vec::new();
    for _ in 0..n {
        let response = client(grpc_channel(socket).await)
            .get_events(live(pb::Filter::default()))
            .await
            .expect("a stream within the limit");
        held.push(response.into_inner());
    }
    held
}

#[test]
fn abusive_clients_get_the_right_codes_and_do_not_disturb_the_others() {
    require_root();
    let cg = TestCgroup::new();
    let dir = TempDir::new();
    let file: PathBuf = dir.0.join("target");
    std::fs::write(&file, b"x").unwrap();
    let max = MAX_STREAMS.to_string();
    let sensor = Sensor::start_fresh(
        &[
            "--scope-cgroup",
            cg.path.to_str().unwrap(),
            "--max-streams",
            &max,
            // More than the flood: whether the steady subscriber loses nothing must not depend
            // on how fast a debug-build tail runs on a busy machine (losses of a slow reader
            // are fanout.rs's subject).
            "--subscriber-queue",
            "32768",
        ],
        false,
    );
    let socket = sensor.socket().to_owned();
    let rss_before = rss_kib(sensor.pid());

    let steady = Tail::start(&socket, &["-f", "-o", "json", "--kind", "chmod"]);
    sensor.wait_status("the steady subscriber", |s| {
        s["counters"]["streams_open"] == 1
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let never_read = runtime.block_on(hold_streams(&socket, NEVER_READ));
    sensor.wait_status("the silent subscribers", |s| {
        s["counters"]["streams_open"] == 1 + NEVER_READ as u64
    });

    // 1,000 clients: connect, open a stream, go away; 8 at a time, during the flood.
    let opened = Arc::new(AtomicU64::new(0));
    let churn = {
        let (socket, opened) = (socket.clone(), Arc::clone(&opened));
        let handle = runtime.handle().clone();
        thread::spawn(move || {
            handle.block_on(async move {
                let mut tasks = Vec::new();
                for worker in 0..8 {
                    let (socket, opened) = (socket.clone(), Arc::clone(&opened));
                    tasks.push(tokio::spawn(async move {
                        for _ in (worker..CHURN).step_by(8) {
                            let mut c = client(grpc_channel(&socket).await);
                            match c.get_events(live(pb::Filter::default())).await {
                                Ok(stream) => {
                                    opened.fetch_add(1, Ordering::Relaxed);
                                    drop(stream);
                                }
                                Err(s) => panic!("churn client refused: {s}"),
                            }
                        }
                    }));
                }
                for t in tasks {
                    t.await.unwrap();
                }
            })
        })
    };
    let started = Instant::now();
    // Paced for a debug-build tail (about 10k/s at most).
    let pid = chmod_burst(&cg.path, &file, FLOOD, 100, 10);
    let flood_took = started.elapsed();
    churn.join().expect("the churn clients");
    assert_eq!(opened.load(Ordering::Relaxed), CHURN);

    // The steady subscriber: every chmod, once, in order, and no loss record.
    let events = steady.wait_until_for(
        Duration::from_secs(90),
        "every chmod of the flood",
        |events| seqs_of(events, pid).len() >= FLOOD as usize,
    );
    let seqs = seqs_of(&events, pid);
    assert_eq!(seqs.len(), FLOOD as usize);
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "out of order");
    assert!(
        events.iter().all(|e| e["kind"] != "lost"),
        "the steady subscriber lost events"
    );
    // The silent ones hold the whole flood in their queues (shared batches), unread.
    assert_eq!(sensor.counter("subscriber_lost"), 0);
    eprintln!(
        "{FLOOD} chmods in {flood_took:.2?} with {CHURN} churning clients and {NEVER_READ} silent ones"
    );

    // The churned clients' sessions ended with them (also those that saw no event).
    sensor.wait_status("the churned streams closed", |s| {
        s["counters"]["streams_open"] == 1 + NEVER_READ as u64
    });
    runtime.block_on(async {
        // Up to the limit, and one more is refused.
        let open = MAX_STREAMS - 1 - NEVER_READ;
        let extra = hold_streams(&socket, open).await;
        let (code, message) = code_of(&socket, live(pb::Filter::default())).await;
        assert_eq!(code, Code::ResourceExhausted, "{message}");
        assert!(message.contains("--max-streams"), "{message}");
        drop(extra);
        // Filters over the bounds.
        let huge = pb::Filter {
            namespaces: (0..257).map(|i| format!("ns-{i}")).collect(),
            ..Default::default()
        };
        let (code, message) = code_of(&socket, live(huge)).await;
        assert_eq!(code, Code::InvalidArgument, "{message}");
        assert!(message.contains("257 namespaces, at most 256"), "{message}");
        let long = pb::Filter {
            pods: vec!["p".repeat(100_000)],
            ..Default::default()
        };
        let (code, message) = code_of(&socket, live(long)).await;
        assert_eq!(code, Code::InvalidArgument, "{message}");
        // Cursors in the future; one at the next sequence number is fine.
        let from = |seq| pb::GetEventsRequest {
            start: Some(pb::get_events_request::Start::FromSeq(seq)),
            follow: false,
            filter: None,
            limit: 1,
        };
        let (code, message) = code_of(&socket, from(u64::MAX)).await;
        assert_eq!(code, Code::OutOfRange, "{message}");
        let since = pb::GetEventsRequest {
            start: Some(pb::get_events_request::Start::SinceUnixNs(i64::MAX)),
            ..from(0)
        };
        let (code, message) = code_of(&socket, since).await;
        assert_eq!(code, Code::OutOfRange, "{message}");
        let next = sensor.status()["journal"]["next_seq"].as_u64().unwrap();
        assert_eq!(code_of(&socket, from(next)).await.0, Code::Ok);
    });
    assert_eq!(sensor.counter("streams_refused"), 1);
    drop(never_read);
    sensor.wait_status("every abusive stream closed", |s| {
        s["counters"]["streams_open"] == 1
    });
    // Memory: the queues are bounded; 1,000 clients came and went.
    let rss_after = rss_kib(sensor.pid());
    eprintln!("daemon RSS {rss_before} KiB before, {rss_after} KiB after");
    assert!(
        rss_after < rss_before + 64 * 1024,
        "RSS grew from {rss_before} to {rss_after} KiB"
    );
    drop(steady);
    let (status, stderr) = sensor.stop();
    assert!(status.success(), "{stderr}");
}
