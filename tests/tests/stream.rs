//! The event stream: journal, gRPC `GetEvents`/`GetStatus`, `sensor tail` live, replay,
//! reconnect across a daemon crash, per-subscriber loss, and the listeners' access rules.

use std::{os::unix::fs::PermissionsExt as _, process::Command, time::Duration};

use sensor_proto::v1 as pb;
use sensor_tests::{
    NetNs, Place, Sensor, StateDir, Tail, TempDir, TestCgroup, block_on, chmod_burst, grpc_channel,
    probe_net, require_root, sensor_bin, seqs_of,
};
use serde_json::Value;

fn scoped(cg: &TestCgroup, extra: &[&str]) -> Sensor {
    require_root();
    let mut args = vec!["--scope-cgroup", cg.path.to_str().unwrap()];
    args.extend_from_slice(extra);
    Sensor::start(&args)
}

fn scratch_file(dir: &TempDir) -> std::path::PathBuf {
    let f = dir.0.join("target");
    std::fs::write(&f, b"x").unwrap();
    f
}

fn contiguous(seqs: &[u64]) -> bool {
    seqs.windows(2).all(|w| w[1] == w[0] + 1)
}

#[test]
fn a_blocked_connect_reaches_a_tail_subscriber() {
    let cg = TestCgroup::new();
    let ns = NetNs::with_metadata_addresses();
    let sensor = scoped(&cg, &[]);
    let tail = Tail::start(sensor.socket(), &["-f", "-o", "json"]);
    // Let the tail subscribe before the event.
    std::thread::sleep(Duration::from_millis(300));
    let r = probe_net(&Place::inside(&ns, &cg.path), "tcp", "169.254.169.254", 80);
    assert_eq!(r.errno, libc::EPERM as i64);
    let events = tail.wait_until("the blocked connect", |ev| {
        ev.iter().any(|e| e["pid"] == r.pid)
    });
    let ev = events.iter().find(|e| e["pid"] == r.pid).unwrap();
    assert_eq!(ev["kind"], "connect", "{ev}");
    assert_eq!(ev["verdict"], "blocked", "{ev}");
    assert_eq!(ev["comm"], "probe", "{ev}");
    assert_eq!(ev["cgroup_id"], TestCgroup::id(&cg.path), "{ev}");
    assert_eq!(ev["rule"], "metadata-imds-v4", "{ev}");
    assert_eq!(
        (
            ev["connect"]["dst_addr"].as_str(),
            ev["connect"]["dst_port"].as_u64()
        ),
        (Some("169.254.169.254"), Some(80))
    );
    assert!(ev["seq"].as_u64().unwrap() >= 1, "{ev}");
    assert!(!ev["node"].as_str().unwrap().is_empty(), "{ev}");
    // The same event, same sequence number, on the daemon's own stdout.
    let own = sensor.wait_for(1, |e| e["pid"] == r.pid);
    assert_eq!(own[0]["seq"], ev["seq"]);
}

#[test]
fn replay_from_seq_and_since_then_follow_without_gap_or_duplicate() {
    let cg = TestCgroup::new();
    let dir = TempDir::new();
    let file = scratch_file(&dir);
    let sensor = scoped(&cg, &[]);
    let first = chmod_burst(&cg.path, &file, 20, 0, 0);
    let stored = sensor.wait_for(20, |e| e["pid"] == first && e["kind"] == "chmod");
    let seqs = seqs_of(&stored, first);
    assert!(contiguous(&seqs), "{seqs:?}");

    // --from-seq without -f: exactly the stored events from there, in order, then exit.
    let mut replay = Tail::start(
        sensor.socket(),
        &["--from-seq", &seqs[5].to_string(), "-o", "json"],
    );
    assert!(replay.wait_exit().success(), "{}", replay.stderr_text());
    assert_eq!(seqs_of(&replay.events(), first), seqs[5..]);

    // --since the 10th event's time: the stored events at or after it.
    let t10 = stored[10]["time"].as_str().unwrap().to_owned();
    let mut since = Tail::start(sensor.socket(), &["--since", &t10, "-o", "json"]);
    assert!(since.wait_exit().success(), "{}", since.stderr_text());
    let expected: Vec<u64> = stored
        .iter()
        .filter(|e| e["time"].as_str().unwrap() >= t10.as_str())
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs_of(&since.events(), first), expected);
    assert_eq!(expected.first(), Some(&seqs[10]));

    // --limit stops after N.
    let mut limited = Tail::start(
        sensor.socket(),
        &[
            "--from-seq",
            &seqs[0].to_string(),
            "--limit",
            "3",
            "-o",
            "json",
        ],
    );
    assert!(limited.wait_exit().success());
    assert_eq!(seqs_of(&limited.events(), first), seqs[..3]);

    // --from-seq with -f: stored, then live, seamless.
    let follow = Tail::start(
        sensor.socket(),
        &["--from-seq", &seqs[5].to_string(), "-f", "-o", "json"],
    );
    follow.wait_until("the stored events", |ev| ev.len() >= 15);
    let second = chmod_burst(&cg.path, &file, 20, 0, 0);
    let all = follow.wait_until("the live events", |ev| seqs_of(ev, second).len() >= 20);
    let got: Vec<u64> = all.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(got.first(), Some(&seqs[5]));
    assert!(contiguous(&got), "gap or duplicate at the seam: {got:?}");
    let chmods = all.iter().filter(|e| e["kind"] == "chmod").count();
    assert_eq!(chmods, 35, "15 stored + 20 live chmod events");
}

/// Following from the next sequence number (nothing stored there yet, as after a reconnect)
/// delivers what comes next, not the journal from its start.
#[test]
fn following_from_the_next_sequence_number_delivers_only_what_comes_next() {
    require_root();
    let cg = TestCgroup::new();
    let dir = TempDir::new();
    let file = scratch_file(&dir);
    let sensor = scoped(&cg, &[]);
    let before = chmod_burst(&cg.path, &file, 5, 0, 0);
    sensor.wait_for(5, |e| e["pid"] == before && e["kind"] == "chmod");
    std::thread::sleep(Duration::from_millis(200));
    let next = sensor.status()["journal"]["next_seq"].as_u64().unwrap();
    let tail = Tail::start(
        sensor.socket(),
        &["-f", "--from-seq", &next.to_string(), "-o", "json"],
    );
    std::thread::sleep(Duration::from_millis(300));
    let after = chmod_burst(&cg.path, &file, 3, 0, 0);
    let got = tail.wait_until("the new events", |ev| seqs_of(ev, after).len() >= 3);
    let seqs: Vec<u64> = got.iter().filter_map(|e| e["seq"].as_u64()).collect();
    assert!(
        seqs.iter().all(|&s| s >= next),
        "only events from seq {next} on: {seqs:?}"
    );
    assert!(contiguous(&seqs), "{seqs:?}");
    assert!(got.iter().all(|e| e["pid"] != before), "{seqs:?}");
}

#[test]
fn sigkill_and_restart_continue_the_sequence_and_a_follower_resumes() {
    require_root();
    let cg = TestCgroup::new();
    let dir = TempDir::new();
    let file = scratch_file(&dir);
    let state = StateDir::new();
    let args = ["--scope-cgroup", cg.path.to_str().unwrap()];
    let a = Sensor::start_in(&state, &args);
    let tail = Tail::start(&state.socket(), &["-f", "-o", "json"]);
    std::thread::sleep(Duration::from_millis(300));
    let before = chmod_burst(&cg.path, &file, 30, 0, 0);
    tail.wait_until("events before the crash", |ev| {
        seqs_of(ev, before).len() >= 30
    });
    let last_a = a
        .events()
        .iter()
        .filter_map(|e| e["seq"].as_u64())
        .max()
        .unwrap();
    a.kill();

    let b = Sensor::start_in(&state, &args);
    let after = chmod_burst(&cg.path, &file, 30, 0, 0);
    b.wait_for(30, |e| e["pid"] == after && e["kind"] == "chmod");
    let b_first = b.events()[0]["seq"].as_u64().unwrap();
    assert!(
        b_first > last_a,
        "the sequence continues after a crash, never repeats: {b_first} <= {last_a}"
    );
    let all = tail.wait_until("events after the restart", |ev| {
        seqs_of(ev, after).len() >= 30
    });
    let got: Vec<u64> = all
        .iter()
        .filter(|e| e["kind"] != "lost")
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert!(
        contiguous(&got),
        "the follower resumed with a gap or a duplicate: {got:?}"
    );
    assert_eq!(all.iter().filter(|e| e["kind"] == "chmod").count(), 60);
    assert!(
        tail.stderr_text().contains("reconnecting"),
        "{}",
        tail.stderr_text()
    );
    // The restarted daemon still has the events from before the crash.
    let mut replay = Tail::start(
        &state.socket(),
        &[
            "--from-seq",
            &seqs_of(&all, before)[0].to_string(),
            "-o",
            "json",
        ],
    );
    assert!(replay.wait_exit().success());
    let replayed = replay.events();
    let chmods: Vec<u64> = replayed
        .iter()
        .filter(|e| e["kind"] == "chmod")
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(
        chmods.len(),
        60,
        "replayed chmod seqs {chmods:?}; live ones {got:?}; replay stderr: {}",
        replay.stderr_text()
    );
}

#[test]
fn a_stalled_subscriber_gets_exact_loss_records_while_another_gets_everything() {
    let cg = TestCgroup::new();
    let dir = TempDir::new();
    let file = scratch_file(&dir);
    require_root();
    let sensor = Sensor::start_fresh(
        &[
            "--scope-cgroup",
            cg.path.to_str().unwrap(),
            "--subscriber-queue",
            "512",
        ],
        false,
    );
    let stalled = Tail::start(sensor.socket(), &["-f", "-o", "json", "--kind", "chmod"]);
    let healthy = Tail::start(sensor.socket(), &["-f", "-o", "json", "--kind", "chmod"]);
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: stopping and resuming our own child by pid.
    unsafe { libc::kill(stalled.pid() as i32, libc::SIGSTOP) };
    // More than the stalled tail's buffers hold (queue, HTTP/2 windows, pipe), paced (2,000/s)
    // so that a debug build of the healthy tail keeps up on a busy 2-core machine.
    const N: u32 = 8_000;
    let burst = chmod_burst(&cg.path, &file, N, 100, 50);
    healthy.wait_until_for(Duration::from_secs(60), "every event", |ev| {
        seqs_of(ev, burst).len() >= N as usize
    });
    // SAFETY: as above.
    unsafe { libc::kill(stalled.pid() as i32, libc::SIGCONT) };
    // The loss record travels with the next event.
    let marker = chmod_burst(&cg.path, &file, 1, 0, 0);
    let got = stalled.wait_until("the marker", |ev| ev.iter().any(|e| e["pid"] == marker));
    let lost: u64 = got
        .iter()
        .filter(|e| e["kind"] == "lost")
        .map(|e| {
            assert_eq!(e["lost"]["stage"], "subscriber", "{e}");
            e["lost"]["count"].as_u64().unwrap()
        })
        .sum();
    let delivered = seqs_of(&got, burst).len() as u64;
    assert!(
        lost > 0,
        "the stalled subscriber should have lost events (got {delivered})"
    );
    assert_eq!(
        delivered + lost,
        u64::from(N),
        "delivered {delivered} + lost {lost} must be every event"
    );
    let all = healthy.events();
    let seqs = seqs_of(&all, burst);
    assert_eq!(seqs.len(), N as usize);
    assert!(contiguous(&seqs));
    assert!(
        all.iter().all(|e| e["kind"] != "lost"),
        "the healthy subscriber lost nothing"
    );
}

#[test]
fn grpc_status_health_reflection_and_bad_requests() {
    let cg = TestCgroup::new();
    let sensor = scoped(&cg, &[]);
    block_on(async {
        let channel = grpc_channel(sensor.socket()).await;
        let mut client = pb::sensor_client::SensorClient::new(channel.clone());
        let status = client
            .get_status(pb::GetStatusRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(status.version, env!("CARGO_PKG_VERSION"));
        let connect4 = status
            .attachments
            .iter()
            .find(|a| a.program == "sensor_connect4")
            .expect("connect4 attached");
        assert_eq!(
            (connect4.tier.as_str(), connect4.target.as_str()),
            ("cgroup", cg.path.to_str().unwrap())
        );
        assert!(
            status
                .attachments
                .iter()
                .any(|a| a.program == "sensor_chmod" && a.tier == "kill")
        );
        assert!(status.journal.unwrap().next_seq >= 1);

        let bad_kind = pb::GetEventsRequest {
            filter: Some(pb::Filter {
                kinds: vec![99],
                ..Default::default()
            }),
            ..Default::default()
        };
        let err = client.get_events(bad_kind).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("kind"), "{}", err.message());
        let bad_time = pb::GetEventsRequest {
            start: Some(pb::get_events_request::Start::SinceUnixNs(-5)),
            ..Default::default()
        };
        let err = client.get_events(bad_time).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("since_unix_ns"), "{}", err.message());

        let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
        let serving = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: "sensor.v1.Sensor".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            serving.status(),
            tonic_health::pb::health_check_response::ServingStatus::Serving
        );

        use tonic_reflection::pb::v1::{
            ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        };
        let mut reflection = ServerReflectionClient::new(channel);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut responses = reflection
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .unwrap()
            .into_inner();
        let reply = responses.message().await.unwrap().unwrap();
        let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
            panic!("unexpected reply {reply:?}")
        };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        assert!(names.contains(&"sensor.v1.Sensor".to_owned()), "{names:?}");
    });
}

#[test]
fn the_socket_is_root_only_and_plain_tcp_is_refused() {
    let cg = TestCgroup::new();
    let sensor = scoped(&cg, &[]);
    let meta = std::fs::metadata(sensor.socket()).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), 0);
    let out = Command::new(sensor_tests::probe_bin())
        .args(["--uid", "65534", "uconnect"])
        .arg(sensor.socket())
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(
        v["errno"],
        libc::EACCES,
        "another user must not connect: {v}"
    );

    let out = Command::new(sensor_bin())
        .args([
            "run",
            "--scope-cgroup",
            cg.path.to_str().unwrap(),
            "--listen-tcp",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("plain TCP is refused"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn tls_tcp_listener_requires_a_client_certificate() {
    let cg = TestCgroup::new();
    let dir = TempDir::new();
    let pki = Pki::new(&dir.0);
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let sensor = scoped(
        &cg,
        &[
            "--listen-tcp",
            &addr,
            "--tls-cert",
            pki.server_cert.to_str().unwrap(),
            "--tls-key",
            pki.server_key.to_str().unwrap(),
            "--tls-client-ca",
            pki.ca.to_str().unwrap(),
        ],
    );
    let server = format!("https://127.0.0.1:{port}");
    let tail = |client: bool| {
        let mut cmd = Command::new(sensor_bin());
        cmd.args([
            "tail",
            "--server",
            &server,
            "-o",
            "json",
            "--tls-ca",
            pki.ca.to_str().unwrap(),
        ]);
        if client {
            cmd.args([
                "--tls-client-cert",
                pki.client_cert.to_str().unwrap(),
                "--tls-client-key",
                pki.client_key.to_str().unwrap(),
            ]);
        }
        cmd.output().unwrap()
    };
    let ok = tail(true);
    assert!(
        ok.status.success(),
        "mTLS tail failed: {}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let refused = tail(false);
    assert!(
        !refused.status.success(),
        "a client without a certificate must be refused"
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    drop(sensor);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A throwaway CA with a server certificate (127.0.0.1, localhost) and a client certificate.
struct Pki {
    ca: std::path::PathBuf,
    server_cert: std::path::PathBuf,
    server_key: std::path::PathBuf,
    client_cert: std::path::PathBuf,
    client_key: std::path::PathBuf,
}

impl Pki {
    fn new(dir: &std::path::Path) -> Self {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let leaf = |names: Vec<String>| {
            let key = KeyPair::generate().unwrap();
            let cert = CertificateParams::new(names)
                .unwrap()
                .signed_by(&key, &issuer)
                .unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) = leaf(vec!["127.0.0.1".into(), "localhost".into()]);
        let (client_cert, client_key) = leaf(vec!["collector".into()]);
        let write = |name: &str, pem: &str| {
            let p = dir.join(name);
            std::fs::write(&p, pem).unwrap();
            p
        };
        Self {
            ca: write("ca.pem", &ca_cert.pem()),
            server_cert: write("server.pem", &server_cert),
            server_key: write("server.key", &server_key),
            client_cert: write("client.pem", &client_cert),
            client_key: write("client.key", &client_key),
        }
    }
}

#[test]
fn tail_errors_are_one_line() {
    let dir = TempDir::new();
    let run = |args: &[&str]| {
        let out = Command::new(sensor_bin())
            .arg("tail")
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code().unwrap(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let missing = dir.0.join("nope.sock");
    let (code, err) = run(&["--server", missing.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("is the daemon running?") && err.lines().count() == 1,
        "{err}"
    );
    let (code, err) = run(&["--server", missing.to_str().unwrap(), "--kind", "bogus"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--kind 'bogus'") && err.lines().count() == 1,
        "{err}"
    );
    let (code, err) = run(&[
        "--server",
        missing.to_str().unwrap(),
        "--since",
        "last tuesday",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--since 'last tuesday'") && err.lines().count() == 1,
        "{err}"
    );
}

#[test]
fn tail_replays_an_exported_file_with_filters() {
    require_root();
    let cg = TestCgroup::new();
    let ns = NetNs::with_metadata_addresses();
    let dir = TempDir::new();
    let file = scratch_file(&dir);
    let sensor = scoped(&cg, &["--mode", "audit"]);
    let chmods = chmod_burst(&cg.path, &file, 3, 0, 0);
    let conn = probe_net(&Place::inside(&ns, &cg.path), "tcp", "169.254.169.254", 80);
    sensor.wait_for(1, |e| e["pid"] == conn.pid);
    sensor.wait_for(3, |e| e["pid"] == chmods);
    let mut export = Tail::start(sensor.socket(), &["--from-seq", "1", "-o", "json"]);
    assert!(export.wait_exit().success());
    let exported = dir.0.join("events.jsonl");
    std::fs::write(&exported, export.lines().join("\n") + "\n").unwrap();

    let replay = |args: &[&str]| {
        let out = Command::new(sensor_bin())
            .args(["tail", "--file", exported.to_str().unwrap()])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    // The same bytes back, unfiltered.
    assert_eq!(
        replay(&["-o", "json", "--all"]),
        std::fs::read_to_string(&exported).unwrap()
    );
    let audited: Vec<Value> = replay(&["-o", "json", "--verdict", "audited"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(audited.len(), 1);
    assert_eq!(audited[0]["pid"], conn.pid);
    let compact = replay(&["--kind", "chmod", "--limit", "2"]);
    assert_eq!(compact.lines().count(), 2, "{compact}");
    assert!(
        compact
            .lines()
            .all(|l| l.contains("ALLOWED") && l.contains(" chmod ")),
        "{compact}"
    );

    // A damaged line: file, line number and what is wrong.
    let mut lines: Vec<String> = std::fs::read_to_string(&exported)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    lines[1] = lines[1].replace("\"kind\":\"", "\"kind\":\"x");
    std::fs::write(&exported, lines.join("\n")).unwrap();
    let out = Command::new(sensor_bin())
        .args(["tail", "--file", exported.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}:2: kind", exported.display())),
        "{err}"
    );
}

#[test]
fn sensor_status_names_every_program_and_its_tier() {
    let cg = TestCgroup::new();
    let sensor = scoped(&cg, &[]);
    let out = sensor.cli(&["status"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    for (program, tier) in [
        ("sensor_connect4", "cgroup"),
        ("sensor_sendmsg6", "cgroup"),
        ("sensor_chmod", "kill"),
        ("sensor_exec", "tracepoint"),
    ] {
        assert!(
            text.lines()
                .any(|l| l.contains(program) && l.contains(tier)),
            "{program} ({tier}) missing:\n{text}"
        );
    }
    let out = sensor.cli(&["status", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["attachments"].as_array().unwrap().len() >= 10, "{v}");
    // This kernel refuses BPF LSM: every privilege hook falls back to the kill tier (the VM
    // lane checks `lsm`).
    assert_eq!(
        v["protections"],
        serde_json::json!({
            "metadata-connect": "cgroup", "metadata-raw-packet": "cgroup",
            "metadata-packet": "kill", "metadata-late-connect": "kill",
            "metadata-late-send": "kill", "chmod": "kill", "setid-create": "kill",
            "setuid-root": "kill", "setgid-root": "kill", "capset": "kill",
            "setid-exec": "kill", "file-caps": "kill",
        }),
        "{v}"
    );
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with("chmod") && l.trim_end().ends_with("kill")),
        "{text}"
    );
    assert!(v["counters"]["kernel_blocked"].is_u64(), "{v}");
    drop(sensor);
    let missing = TempDir::new();
    let out = Command::new(sensor_bin())
        .args(["status", "--server"])
        .arg(missing.0.join("x.sock"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is the daemon running?") && err.lines().count() == 1,
        "{err}"
    );
}
