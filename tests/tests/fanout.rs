//! The pre-encoded event stream seen by clients: the generated prost client (an old-style
//! client, decoding plain `sensor.v1.Event` messages) reads it live and from the journal, ten
//! subscribers with different filters each get exactly what matches, and a subscriber that
//! stops reading gets an exact `lost` count while the others get everything.

use std::{path::Path, process::Command, time::Duration};

use sensor_proto::v1 as pb;
use sensor_tests::{
    Sensor, TempDir, TestCgroup, bench_gen_bin, block_on, chmod_burst, grpc_channel, require_root,
};
use tokio_stream::StreamExt as _;

fn scratch_file(dir: &TempDir) -> std::path::PathBuf {
    let f = dir.0.join("target");
    std::fs::write(&f, b"x").unwrap();
    f
}

/// A test cgroup, a scratch file and a sensor scoped to the cgroup (`extra` flags; events only
/// through gRPC).
fn scoped_sensor(extra: &[&str]) -> (TestCgroup, TempDir, std::path::PathBuf, Sensor) {
    let cg = TestCgroup::new();
    let dir = TempDir::new();
    let file = scratch_file(&dir);
    let mut args = vec!["--scope-cgroup", cg.path.to_str().unwrap()];
    args.extend_from_slice(extra);
    let sensor = Sensor::start_fresh(&args, false);
    (cg, dir, file, sensor)
}

/// `bench-gen` in `cgroup`: `args` after `--cgroup` (e.g. `chmod N FILE`).
fn generate(cgroup: &Path, args: &[&str]) {
    let out = Command::new(bench_gen_bin())
        .arg("--cgroup")
        .arg(cgroup)
        .args(args)
        .output()
        .expect("running bench-gen");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn kind(e: &pb::Event) -> i32 {
    use pb::event::Body as B;
    (match &e.body {
        Some(B::Connect(_)) => pb::EventKind::Connect,
        Some(B::Chmod(_)) => pb::EventKind::Chmod,
        Some(B::Privilege(_)) => pb::EventKind::Privilege,
        Some(B::Exec(_)) => pb::EventKind::Exec,
        Some(B::Exit(_)) => pb::EventKind::Exit,
        Some(B::Lost(_)) => pb::EventKind::Lost,
        Some(B::PolicyChange(_)) => pb::EventKind::Policy,
        Some(B::Posture(_)) => pb::EventKind::Posture,
        None => pb::EventKind::Unspecified,
    }) as i32
}

/// What the filter means (docs/events.md), on the decoded event.
fn passes(f: &pb::Filter, e: &pb::Event) -> bool {
    let pod_ok = |p: &pb::Pod| {
        (f.namespaces.is_empty() || f.namespaces.contains(&p.namespace))
            && (f.pods.is_empty() || f.pods.contains(&p.name))
            && f.labels.iter().all(|(k, v)| p.labels.get(k) == Some(v))
    };
    kind(e) == pb::EventKind::Lost as i32
        || ((f.kinds.is_empty() || f.kinds.contains(&kind(e)))
            && (f.verdicts.is_empty() || f.verdicts.contains(&e.verdict))
            && ((f.namespaces.is_empty() && f.pods.is_empty() && f.labels.is_empty())
                || e.pod.as_ref().is_some_and(pod_ok)))
}

fn filter(kinds: &[pb::EventKind], verdicts: &[pb::Verdict]) -> pb::Filter {
    pb::Filter {
        kinds: kinds.iter().map(|k| *k as i32).collect(),
        verdicts: verdicts.iter().map(|v| *v as i32).collect(),
        ..Default::default()
    }
}

async fn open(socket: &Path, request: pb::GetEventsRequest) -> tonic::Streaming<pb::Event> {
    // A connection per subscriber: a stream that is not read holds its connection's window.
    let mut client = pb::sensor_client::SensorClient::new(grpc_channel(socket).await);
    client
        .get_events(request)
        .await
        .expect("GetEvents")
        .into_inner()
}

fn live(f: pb::Filter) -> pb::GetEventsRequest {
    pb::GetEventsRequest {
        follow: true,
        filter: Some(f),
        ..Default::default()
    }
}

/// Read until `done` holds for what was read, or `idle` passes without a message.
async fn read_until(
    stream: &mut tonic::Streaming<pb::Event>,
    idle: Duration,
    done: impl Fn(&[pb::Event]) -> bool,
) -> Vec<pb::Event> {
    let mut got = Vec::new();
    while !done(&got) {
        match tokio::time::timeout(idle, stream.next()).await {
            Ok(Some(Ok(e))) => got.push(e),
            Ok(Some(Err(status))) => panic!("stream error: {status}"),
            Ok(None) | Err(_) => break,
        }
    }
    got
}

fn chmods(events: &[pb::Event]) -> usize {
    events
        .iter()
        .filter(|e| kind(e) == pb::EventKind::Chmod as i32)
        .count()
}

#[test]
fn the_generated_prost_client_reads_live_and_stored_events() {
    require_root();
    let cg = TestCgroup::new();
    let dir = TempDir::new();
    let file = scratch_file(&dir);
    let sensor = Sensor::start(&["--scope-cgroup", cg.path.to_str().unwrap()]);
    block_on(async {
        let mut stream = open(sensor.socket(), live(filter(&[pb::EventKind::Chmod], &[]))).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let pid = chmod_burst(&cg.path, &file, 40, 0, 0);
        let got = read_until(&mut stream, Duration::from_secs(20), |e| e.len() >= 40).await;
        assert_eq!(got.len(), 40, "{got:?}");
        for (e, next) in got.iter().zip(&got[1..]) {
            assert!(next.seq > e.seq, "increasing sequence numbers");
        }
        let own = sensor.wait_for(40, |e| e["pid"] == pid && e["kind"] == "chmod");
        for (e, j) in got.iter().zip(&own) {
            // The daemon's own JSON (from the journal) names the same event.
            assert_eq!(Some(e.seq), j["seq"].as_u64());
            let p = e.process.as_ref().expect("process");
            assert_eq!(p.pid, pid);
            assert_eq!(p.comm, "python3");
            assert!(p.exe.contains("python"), "{p:?}");
            assert!(!p.ancestors.is_empty(), "{p:?}");
            assert_eq!(e.verdict, pb::Verdict::Allowed as i32);
            assert!(!e.node.is_empty() && e.time_unix_ns > 0);
            match &e.body {
                Some(pb::event::Body::Chmod(c)) => {
                    assert_eq!(c.name, file.to_str().unwrap());
                    assert!(c.mode == 0o600 || c.mode == 0o640, "{c:?}");
                }
                other => panic!("{other:?}"),
            }
        }
        // From the journal: the same events, decoded to the same values.
        let mut stored = open(
            sensor.socket(),
            pb::GetEventsRequest {
                start: Some(pb::get_events_request::Start::FromSeq(got[0].seq)),
                filter: Some(filter(&[pb::EventKind::Chmod], &[])),
                ..Default::default()
            },
        )
        .await;
        let replayed = read_until(&mut stored, Duration::from_secs(10), |_| false).await;
        assert_eq!(replayed, got, "replay and live carry the same events");
    });
}

#[test]
fn ten_subscribers_with_different_filters_each_get_exactly_what_matches() {
    require_root();
    let (cg, _dir, file, sensor) = scoped_sensor(&["--mode", "audit"]);
    let f = file.to_str().unwrap();
    use pb::{EventKind as K, Verdict as V};
    let filters = vec![
        pb::Filter::default(),
        filter(&[K::Chmod], &[]),
        filter(&[K::Exit], &[]),
        filter(&[], &[V::Audited]),
        filter(&[], &[V::Allowed]),
        filter(&[K::Chmod], &[V::Audited]),
        filter(&[K::Connect], &[]),
        pb::Filter {
            namespaces: vec!["prod".into()],
            ..Default::default()
        },
        filter(&[K::Exec, K::Exit], &[]),
        filter(&[K::Chmod, K::Exit], &[V::Allowed]),
    ];
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let streams: Vec<_> = runtime.block_on(async {
        let mut v = Vec::new();
        for f in &filters {
            v.push(open(sensor.socket(), live(f.clone())).await);
        }
        v
    });
    std::thread::sleep(Duration::from_millis(300));
    // Allowed chmods, audited set-uid chmods (audit mode), an exec (the burst's python is
    // exec'd inside the cgroup) and exits.
    generate(&cg.path, &["chmod", "300", f]);
    generate(&cg.path, &["--setid", "chmod", "200", f]);
    chmod_burst(&cg.path, &file, 50, 0, 0);
    let readers: Vec<_> = streams
        .into_iter()
        .map(|mut s| {
            runtime
                .spawn(async move { read_until(&mut s, Duration::from_secs(3), |_| false).await })
        })
        .collect();
    let got: Vec<Vec<pb::Event>> = runtime.block_on(async {
        let mut v = Vec::new();
        for r in readers {
            v.push(r.await.unwrap());
        }
        v
    });
    let all = &got[0];
    assert_eq!(
        chmods(all),
        550,
        "every chmod reached the unfiltered subscriber"
    );
    assert!(
        all.iter().all(|e| kind(e) != K::Lost as i32),
        "nothing lost"
    );
    for (f, events) in filters.iter().zip(&got) {
        let expected: Vec<u64> = all.iter().filter(|e| passes(f, e)).map(|e| e.seq).collect();
        let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, expected, "filter {f:?}");
    }
    let count = |i: usize| got[i].len();
    assert_eq!(count(1), 550);
    assert_eq!(count(5), 200, "audited chmods");
    assert!(count(2) >= 3, "the generators' exits");
    assert!(count(8) > count(2), "an exec too");
    assert_eq!((count(6), count(7)), (0, 0), "no connect, no pod");
    drop(sensor);
}

#[test]
fn a_subscriber_that_stops_reading_gets_an_exact_loss_count_and_the_others_everything() {
    require_root();
    let (cg, _dir, file, sensor) = scoped_sensor(&["--subscriber-queue", "4096"]);
    let f = file.to_str().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    const N: usize = 30_000;
    let only_chmod = || live(filter(&[pb::EventKind::Chmod], &[]));
    let mut stalled = runtime.block_on(open(sensor.socket(), only_chmod()));
    let healthy: Vec<_> = (0..3)
        .map(|_| {
            let mut s = runtime.block_on(open(sensor.socket(), only_chmod()));
            runtime.spawn(async move {
                read_until(&mut s, Duration::from_secs(30), |e| chmods(e) > N).await
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // More than the stalled stream's queue, session chunks, HTTP/2 window and buffers hold,
    // paced so that three debug-built readers keep up on a busy 2-core machine (at 2,000/s
    // one came 154 events short once in CI; the assertion below now also counts its loss
    // records, to tell a reported loss from a silent one).
    generate(&cg.path, &["paced", "1000", &N.to_string(), f]);
    std::thread::sleep(Duration::from_millis(500));
    // It reads again; the loss record travels with the next event (the marker).
    let first = runtime.block_on(read_until(&mut stalled, Duration::from_secs(2), |_| false));
    generate(&cg.path, &["chmod", "1", f]);
    let rest = runtime.block_on(read_until(&mut stalled, Duration::from_secs(5), |e| {
        chmods(e) >= 1
    }));
    let got: Vec<pb::Event> = first.into_iter().chain(rest).collect();
    let lost: u64 = got
        .iter()
        .filter_map(|e| match &e.body {
            Some(pb::event::Body::Lost(l)) => {
                assert_eq!(l.stage, pb::LossStage::Subscriber as i32, "{l:?}");
                Some(l.count)
            }
            _ => None,
        })
        .sum();
    let delivered = chmods(&got) as u64;
    assert!(
        lost > 0,
        "the stalled subscriber should have lost events (got {delivered})"
    );
    assert_eq!(
        delivered + lost,
        N as u64 + 1,
        "delivered {delivered} + lost {lost}"
    );
    for h in healthy {
        let events = runtime.block_on(h).unwrap();
        let lost_records = events
            .iter()
            .filter(|e| kind(e) == pb::EventKind::Lost as i32)
            .count();
        assert_eq!(
            (chmods(&events), lost_records),
            (N + 1, 0),
            "a healthy subscriber got every event and no loss record"
        );
        assert!(events.windows(2).all(|w| w[1].seq > w[0].seq));
    }
}
