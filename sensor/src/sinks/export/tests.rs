use std::{fs, path::PathBuf, sync::atomic::Ordering};

use prost::Message as _;
use serde_json::Value;

use super::*;
use crate::sinks::journal::JournalConfig;
use crate::testing::TestDir;

const BASE_NS: i64 = 1_764_000_000_000_000_000;
const SECOND: i64 = 1_000_000_000;

fn chmod(pid: u32, path: &str, verdict: pb::Verdict, time_ns: i64) -> pb::Event {
    pb::Event {
        time_unix_ns: time_ns,
        node: "node-a".into(),
        process: Some(pb::Process {
            pid,
            tid: pid,
            comm: "python3".into(),
            cgroup_id: 77,
            exe: "/usr/bin/python3".into(),
            ppid: 1,
            ..Default::default()
        }),
        enrichment: pb::Enrichment::Complete as i32,
        verdict: verdict as i32,
        body: Some(pb::event::Body::Chmod(pb::Chmod {
            syscall: pb::ChmodSyscall::Fchmodat as i32,
            mode: 0o640,
            fd: Some(-100),
            path: path.into(),
            path_state: pb::PathState::Complete as i32,
            name: path.into(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn connect(pid: u32, verdict: pb::Verdict, time_ns: i64) -> pb::Event {
    pb::Event {
        time_unix_ns: time_ns,
        node: "node-a".into(),
        process: Some(pb::Process {
            pid,
            tid: pid,
            comm: "curl".into(),
            cgroup_id: 78,
            ..Default::default()
        }),
        pod: Some(pb::Pod {
            namespace: "team-a".into(),
            name: "web-1".into(),
            uid: "0f1e2d3c-0000-4000-8000-000000000001".into(),
            container_name: "web".into(),
            container_id: "abc123".into(),
            image: "nginx:1.27".into(),
            ..Default::default()
        }),
        enrichment: pb::Enrichment::Complete as i32,
        policy: "default".into(),
        rule: "metadata-imds-v4".into(),
        verdict: verdict as i32,
        body: Some(pb::event::Body::Connect(pb::Connect {
            hook: pb::ConnectHook::Connect4 as i32,
            socket_family: libc::AF_INET as u32,
            socket_type: libc::SOCK_STREAM as u32,
            protocol: libc::IPPROTO_TCP as u32,
            dst_addr: "169.254.169.254".into(),
            dst_port: 80,
        })),
        ..Default::default()
    }
}

fn numbered(mut events: Vec<pb::Event>) -> Vec<pb::Event> {
    for (i, e) in events.iter_mut().enumerate() {
        e.seq = i as u64 + 1;
    }
    events
}

fn fold_all(window: Duration, events: Vec<pb::Event>) -> (Vec<pb::Event>, FoldStats) {
    let mut folder = Folder::new(window.as_nanos() as i64);
    let mut out = Vec::new();
    for e in events {
        folder.push(e, &mut out);
    }
    folder.close_all(&mut out);
    (out, folder.stats)
}

use fold::{FoldStats, count_of};

#[test]
fn a_flood_of_identical_audited_chmods_becomes_a_few_records_whose_counts_add_up() {
    // 10,000 identical chmods over 3 s (one every 300 us), a 1 s window.
    let events = numbered(
        (0..10_000)
            .map(|i| chmod(42, "/tmp/f", pb::Verdict::Allowed, BASE_NS + i * 300_000))
            .collect(),
    );
    let (out, stats) = fold_all(Duration::from_secs(1), events);
    assert!(out.len() <= 8, "{} records", out.len());
    assert_eq!(out.iter().map(count_of).sum::<u64>(), 10_000);
    assert_eq!(
        stats.folded,
        10_000 - out.iter().filter(|e| e.repeat.is_none()).count() as u64
    );
    // Each window: its first event at once, then one record for the repeats.
    let r = out[1]
        .repeat
        .as_ref()
        .expect("the second record stands for repeats");
    assert_eq!((r.first_seq, out[0].seq), (2, 1));
    assert_eq!(r.last_seq, out[1].seq);
    assert!(r.last_time_unix_ns - r.first_time_unix_ns < SECOND);
}

#[test]
fn blocked_floods_write_at_least_one_record_per_window_and_different_things_stay_apart() {
    // 5 windows of blocked connects, plus one from another process and an exec in between.
    let mut events: Vec<pb::Event> = (0..500)
        .map(|i| connect(7, pb::Verdict::Blocked, BASE_NS + i * 10_000_000))
        .collect();
    events.insert(100, connect(8, pb::Verdict::Blocked, BASE_NS + 999_000_000));
    events.insert(
        200,
        pb::Event {
            time_unix_ns: BASE_NS + 1_999_000_000,
            body: Some(pb::event::Body::Exec(pb::Exec::default())),
            ..Default::default()
        },
    );
    let (out, _) = fold_all(Duration::from_secs(1), numbered(events));
    let of_pid = |pid| {
        out.iter()
            .filter(|e| e.process.as_ref().is_some_and(|p| p.pid == pid))
            .collect::<Vec<_>>()
    };
    assert_eq!(of_pid(7).iter().map(|e| count_of(e)).sum::<u64>(), 500);
    assert_eq!(of_pid(8).len(), 1);
    // Every second of the flood (a window each) has a record of its own.
    for second in 0..5 {
        let start = BASE_NS + second * SECOND;
        assert!(
            of_pid(7)
                .iter()
                .any(|e| e.time_unix_ns >= start && e.time_unix_ns < start + SECOND),
            "no record in window {second}"
        );
    }
    assert_eq!(
        out.iter()
            .filter(|e| matches!(e.body, Some(pb::event::Body::Exec(_))))
            .count(),
        1
    );
}

#[test]
fn a_zero_window_writes_every_event() {
    let events = numbered(
        (0..100)
            .map(|i| chmod(42, "/tmp/f", pb::Verdict::Audited, BASE_NS + i))
            .collect(),
    );
    let (out, stats) = fold_all(Duration::ZERO, events);
    assert_eq!(out.len(), 100);
    assert_eq!(stats.folded, 0);
}

#[test]
fn ocsf_objects_carry_class_activity_verdict_device_actor_and_container() {
    let mut e = connect(7, pb::Verdict::Blocked, BASE_NS + 1_234_567);
    e.seq = 9;
    let o = ocsf::to_ocsf(&e);
    assert_eq!(o["class_uid"], 4001);
    assert_eq!(o["category_uid"], 4);
    assert_eq!(o["activity_id"], 5);
    assert_eq!(o["type_uid"], 400_105);
    assert_eq!(
        (o["action_id"].clone(), o["disposition_id"].clone()),
        (2.into(), 2.into())
    );
    assert_eq!(o["severity_id"], 4);
    assert_eq!(o["time"], BASE_NS / 1_000_000 + 1);
    assert_eq!(o["dst_endpoint"]["ip"], "169.254.169.254");
    assert_eq!(o["dst_endpoint"]["port"], 80);
    assert_eq!(o["actor"]["process"]["pid"], 7);
    assert_eq!(o["device"]["hostname"], "node-a");
    assert_eq!(o["container"]["uid"], "abc123");
    assert_eq!(
        o["container"]["pod_uuid"],
        "0f1e2d3c-0000-4000-8000-000000000001"
    );
    assert_eq!(o["unmapped"]["sensor"]["pod"]["namespace"], "team-a");
    assert_eq!(o["metadata"]["product"]["name"], "sensor");
    assert_eq!(o["metadata"]["sequence"], 9);
    assert_eq!(o["metadata"]["version"], ocsf::OCSF_VERSION);

    let c = ocsf::to_ocsf(&chmod(3, "/srv/tool", pb::Verdict::Killed, BASE_NS));
    assert_eq!(
        (c["class_uid"].clone(), c["activity_id"].clone()),
        (1001.into(), 7.into())
    );
    assert_eq!(c["activity_name"], "Set Security");
    assert_eq!(c["file"]["path"], "/srv/tool");
    assert_eq!(c["file"]["name"], "tool");
    assert_eq!(
        (c["disposition_id"].clone(), c["disposition"].clone()),
        (99.into(), "Killed".into())
    );

    let mut folded = chmod(3, "/srv/tool", pb::Verdict::Audited, BASE_NS + 5 * SECOND);
    folded.repeat = Some(pb::Repeat {
        count: 41,
        first_time_unix_ns: BASE_NS,
        last_time_unix_ns: BASE_NS + 5 * SECOND,
        first_seq: 2,
        last_seq: 50,
    });
    let f = ocsf::to_ocsf(&folded);
    assert_eq!(f["count"], 41);
    assert_eq!(f["start_time"], BASE_NS / 1_000_000);
    assert_eq!(f["end_time"], BASE_NS / 1_000_000 + 5000);
}

#[test]
fn json_repeat_records_round_trip_through_the_file_format() {
    let mut e = chmod(3, "/srv/tool", pb::Verdict::Audited, BASE_NS + 5 * SECOND);
    e.seq = 50;
    e.repeat = Some(pb::Repeat {
        count: 41,
        first_time_unix_ns: BASE_NS,
        last_time_unix_ns: BASE_NS + 5 * SECOND,
        first_seq: 2,
        last_seq: 50,
    });
    let line = Format::Json.line(&e);
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["repeat"]["count"], 41, "{line}");
    assert_eq!(crate::event::json::from_json(&line).unwrap(), e);
}

// --- the exporter against a real journal ---

struct Setup {
    _dir: TestDir,
    journal: Arc<Mutex<Journal>>,
    out: PathBuf,
    state: PathBuf,
}

fn setup(name: &str, max_total_bytes: u64) -> Setup {
    let dir = TestDir::new(name);
    let (journal, _) = Journal::open(JournalConfig {
        dir: dir.0.join("journal"),
        segment_bytes: 16 << 10,
        max_total_bytes,
        max_age: None,
    })
    .unwrap();
    Setup {
        out: dir.0.join("out/events.jsonl"),
        state: dir.0.join("export"),
        journal: Arc::new(Mutex::new(journal)),
        _dir: dir,
    }
}

impl Setup {
    fn append(&self, events: impl IntoIterator<Item = pb::Event>) {
        let mut j = lock(&self.journal);
        for e in events {
            j.append(e.time_unix_ns, &e.encode_to_vec()).unwrap();
        }
        j.flush().unwrap();
    }

    fn exporter(&self, max_bytes: u64, window: Duration) -> Exporter {
        fs::create_dir_all(self.out.parent().unwrap()).unwrap();
        self.exporter_to(Destination::File(self.out.clone()), max_bytes, window)
    }

    fn exporter_to(&self, destination: Destination, max_bytes: u64, window: Duration) -> Exporter {
        Exporter::open(
            ExportConfig {
                destination,
                format: Format::Json,
                max_bytes,
                max_files: 1000,
                fold_window: window,
                state_dir: self.state.clone(),
                origin: crate::event::proto::Origin::node("node-a"),
                persist: true,
                tls: None,
            },
            Arc::clone(&self.journal),
        )
        .unwrap()
    }

    /// Every line of the rotated files (oldest first), then the active one.
    fn lines(&self) -> Vec<Value> {
        let mut files: Vec<(u32, PathBuf)> = fs::read_dir(self.out.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter_map(|p| {
                let name = p.file_name()?.to_str()?.to_owned();
                let n = match name.strip_prefix("events.jsonl") {
                    Some("") => 0,
                    Some(rest) => rest.strip_prefix('.')?.parse().ok()?,
                    None => return None,
                };
                Some((n, p))
            })
            .collect();
        files.sort_by_key(|(n, _)| std::cmp::Reverse(*n));
        files
            .iter()
            .flat_map(|(_, p)| {
                let text = fs::read_to_string(p).unwrap();
                assert!(
                    text.is_empty() || text.ends_with('\n'),
                    "{} ends mid-line",
                    p.display()
                );
                text.lines()
                    .map(|l| serde_json::from_str::<Value>(l).unwrap())
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

fn seqs(lines: &[Value]) -> Vec<u64> {
    lines.iter().filter_map(|l| l["seq"].as_u64()).collect()
}

/// `seqs` is exactly `from..=to`, in order (a short message when not).
fn assert_exactly(seqs: &[u64], from: u64, to: u64) {
    let want: Vec<u64> = (from..=to).collect();
    if seqs != want {
        let first_bad = seqs.iter().zip(&want).position(|(a, b)| a != b);
        panic!(
            "{} seqs, want {}..={} ({}): first difference at index {first_bad:?}, around {:?}",
            seqs.len(),
            from,
            to,
            want.len(),
            first_bad.map(|i| &seqs[i.saturating_sub(2)..(i + 3).min(seqs.len())])
        );
    }
}

fn chmods(from: i64, n: i64) -> Vec<pb::Event> {
    // Distinct paths: nothing folds.
    (from..from + n)
        .map(|i| chmod(42, &format!("/tmp/f{i}"), pb::Verdict::Allowed, BASE_NS + i))
        .collect()
}

#[test]
fn rotation_keeps_every_event_once_in_sequence_order_across_the_files() {
    let s = setup("rotate", u64::MAX);
    let mut exporter = s.exporter(8192, Duration::from_secs(10));
    s.append(chmods(0, 3000));
    assert!(exporter.pass());
    let files = fs::read_dir(s.out.parent().unwrap()).unwrap().count();
    assert!(files > 10, "only {files} files");
    for entry in fs::read_dir(s.out.parent().unwrap()).unwrap() {
        let len = entry.unwrap().metadata().unwrap().len();
        // Rotated before the line that would pass the size: never more than a line over.
        assert!(len <= 8192 + 1024, "{len} bytes");
    }
    assert_exactly(&seqs(&s.lines()), 1, 3000);
    assert_eq!(exporter.stats.records.load(Ordering::Relaxed), 3000);
}

#[test]
fn a_restart_continues_after_the_last_line_and_cuts_an_uncommitted_tail() {
    let s = setup("restart", u64::MAX);
    s.append(chmods(0, 500));
    {
        let mut exporter = s.exporter(1 << 20, Duration::ZERO);
        // The exporter of a fresh state starts with what comes next.
        assert!(exporter.pass());
        assert!(s.lines().is_empty());
        s.append(chmods(500, 500));
        assert!(exporter.pass());
    }
    // A crash after a write and before its cursor was saved: a line that will come again.
    let mut f = fs::OpenOptions::new().append(true).open(&s.out).unwrap();
    let torn = b"{\"seq\":1001,\"kind\":\"chmod\"}\n";
    std::io::Write::write_all(&mut f, torn).unwrap();
    drop(f);
    s.append(chmods(1000, 500));
    let mut exporter = s.exporter(1 << 20, Duration::ZERO);
    assert_eq!(
        exporter.stats.rolled_back_bytes.load(Ordering::Relaxed),
        torn.len() as u64
    );
    assert!(exporter.pass());
    assert_exactly(&seqs(&s.lines()), 501, 1500);
}

#[test]
fn open_fold_windows_survive_a_restart() {
    let s = setup("fold-restart", u64::MAX);
    let mut exporter = s.exporter(1 << 20, Duration::from_secs(3600));
    s.append((0..100).map(|i| chmod(42, "/tmp/f", pb::Verdict::Audited, BASE_NS + i)));
    exporter.cursor = 1;
    assert!(exporter.pass());
    drop(exporter);
    s.append((100..250).map(|i| chmod(42, "/tmp/f", pb::Verdict::Audited, BASE_NS + i)));
    let mut exporter = s.exporter(1 << 20, Duration::from_secs(3600));
    assert!(exporter.pass());
    exporter.folder.close_all(&mut exporter.out);
    exporter.render();
    assert!(exporter.commit());
    let lines = s.lines();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[1]["repeat"]["count"], 249);
    assert_eq!(lines[1]["repeat"]["first_seq"], 2);
    assert_eq!(lines[1]["repeat"]["last_seq"], 250);
}

#[test]
fn an_exporter_behind_retention_writes_one_loss_record_with_the_count() {
    let s = setup("retention", 64 << 10);
    let mut exporter = s.exporter(1 << 20, Duration::ZERO);
    // The destination "stalls" while the journal goes round.
    s.append(chmods(0, 3000));
    lock(&s.journal).apply_retention();
    let first = lock(&s.journal).range().unwrap().first_seq;
    assert!(first > 1);
    assert!(exporter.pass());
    let lines = s.lines();
    assert_eq!(lines[0]["kind"], "lost", "{}", lines[0]);
    assert_eq!(lines[0]["lost"]["stage"], "journal");
    assert_eq!(lines[0]["lost"]["count"], first - 1);
    assert_exactly(&seqs(&lines), first, 3000);
    assert_eq!(exporter.stats.lost.load(Ordering::Relaxed), first - 1);
}

#[test]
fn a_cursor_beyond_a_removed_journal_continues_with_new_events() {
    let s = setup("removed-journal", u64::MAX);
    s.append(chmods(0, 10));
    fs::create_dir_all(&s.state).unwrap();
    State {
        version: 1,
        cursor: 5000,
        file: None,
        windows: Vec::new(),
    }
    .save(&s.state.join(Destination::File(s.out.clone()).state_name()))
    .unwrap();
    let mut exporter = s.exporter(1 << 20, Duration::ZERO);
    s.append(chmods(10, 5));
    assert!(exporter.pass());
    assert_exactly(&seqs(&s.lines()), 11, 15);
}

/// Octet-counted messages read from `stream` until `n` arrived.
fn read_frames(stream: &mut std::net::TcpStream, n: usize) -> Vec<String> {
    use std::io::Read as _;
    let mut data = Vec::new();
    let mut frames = Vec::new();
    let mut buf = [0u8; 65536];
    while frames.len() < n {
        let got = stream.read(&mut buf).unwrap();
        assert!(got > 0, "connection closed after {} messages", frames.len());
        data.extend_from_slice(&buf[..got]);
        while let Some(sp) = data.iter().position(|&b| b == b' ') {
            let len: usize = std::str::from_utf8(&data[..sp]).unwrap().parse().unwrap();
            if data.len() < sp + 1 + len {
                break;
            }
            frames.push(String::from_utf8(data[sp + 1..sp + 1 + len].to_vec()).unwrap());
            data.drain(..sp + 1 + len);
        }
    }
    frames
}

#[test]
fn a_syslog_receiver_that_is_down_keeps_the_batch_and_gets_it_whole_once_it_listens() {
    let s = setup("syslog-down", u64::MAX);
    // A port nobody listens on (bound, then closed).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dest = Destination::parse(&format!("syslog://127.0.0.1:{port}?facility=local0")).unwrap();
    let mut exporter = s.exporter_to(dest.clone(), 1 << 20, Duration::ZERO);
    s.append(chmods(0, 50));
    assert!(!exporter.pass(), "nothing listens: not delivered");
    assert!(exporter.stats.write_errors.load(Ordering::Relaxed) >= 1);
    assert_eq!(exporter.stats.records.load(Ordering::Relaxed), 0);
    assert_eq!(exporter.committed, 1, "the cursor stays before the batch");

    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    s.append(chmods(50, 10));
    assert!(exporter.pass(), "delivered once the receiver listens");
    let (mut conn, _) = listener.accept().unwrap();
    let frames = read_frames(&mut conn, 60);
    let seqs: Vec<u64> = frames
        .iter()
        .map(|f| {
            // <PRI>1 TIME HOST APP PROCID MSGID [SD] MSG: local0 (16) * 8 + info (6).
            assert!(f.starts_with("<134>1 "), "{f}");
            let json = &f[f.find("] {").unwrap() + 2..];
            serde_json::from_str::<Value>(json).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_exactly(&seqs, 1, 60);
    assert_eq!(exporter.stats.records.load(Ordering::Relaxed), 60);
    // The 50 of the failed batch came by a retry; the 10 after it in a batch of their own.
    assert_eq!(exporter.stats.retried.load(Ordering::Relaxed), 50);
    assert_eq!(exporter.committed, 61);
    // The cursor was saved: a new exporter for the same destination continues after it.
    drop(exporter);
    s.append(chmods(60, 5));
    let mut again = s.exporter_to(dest, 1 << 20, Duration::ZERO);
    assert!(again.pass());
    let (mut conn, _) = listener.accept().unwrap();
    let frames = read_frames(&mut conn, 5);
    assert!(frames[0].contains("seq=\"61\""), "{}", frames[0]);
}

#[test]
fn a_syslog_receiver_that_closes_unread_after_its_tcp_acknowledged_is_not_a_delivery() {
    let s = setup("syslog-refuses", u64::MAX);
    // Accepts, lets its TCP acknowledge what comes, and closes without reading (a session
    // limit, a sender check): the sensor's data was acknowledged and never read.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let refuser = std::thread::spawn(move || {
        for _ in 0..2 {
            let (conn, _) = listener.accept().unwrap();
            std::thread::sleep(Duration::from_millis(200));
            drop(conn);
        }
    });
    let dest = Destination::parse(&format!("syslog://127.0.0.1:{port}")).unwrap();
    let mut exporter = s.exporter_to(dest, 1 << 20, Duration::ZERO);
    s.append(chmods(0, 20));
    assert!(!exporter.pass(), "closed unread: not delivered");
    assert!(!exporter.pass(), "again on a new connection: not delivered");
    refuser.join().unwrap();
    assert_eq!(exporter.stats.records.load(Ordering::Relaxed), 0);
    assert_eq!(exporter.stats.write_errors.load(Ordering::Relaxed), 2);
    assert_eq!(exporter.committed, 1, "the cursor stays before the batch");
}
