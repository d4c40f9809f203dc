//! The seed corpus of the fuzz targets (`sensor/fuzz`) that take binary input, made by the code
//! itself: ring records laid out as the kernel programs write them, the `sensor.v1.Event`s the
//! pipeline encodes from them, their JSON lines, `GetEvents` requests, and a journal written
//! by the journal. The files are kept in the repository (`sensor/fuzz/corpus/<target>/`);
//! this test fails when they no longer match what the code makes, and `SENSOR_BLESS=1`
//! rewrites them. (The text targets' seeds, pod objects and policy resources, are fixtures
//! kept as they are: docs/testing.md.)

use std::{
    mem::size_of,
    path::{Path, PathBuf},
    sync::Arc,
};

use prost::Message as _;
use sensor_common::{
    ChmodEvent, ConnectEvent, ConnectHook, EventHeader, EventKind, ExecEvent, ExitEvent, ModeCall,
    NO_RULE, PATH_BYTES, PrivilegeCall, PrivilegeEvent, Raise, Verdict, path_status,
};
use sensor_proto::v1 as pb;

use crate::{
    attribution::procs::ProcInfo,
    event::{
        decode,
        encode::{Draft, PodAttr},
        json::to_json,
        proto::{self, Origin},
    },
    policy,
    sinks::journal::{Journal, JournalConfig},
    testing::TestDir,
};

fn as_bytes<T: Copy>(value: &T) -> Vec<u8> {
    // SAFETY: reading the bytes of a plain-old-data `#[repr(C)]` wire type.
    unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
}

fn zeroed<T: Copy>() -> T {
    // SAFETY: the wire types are `#[repr(C)]` integers and byte arrays: all zeroes is a value.
    unsafe { std::mem::zeroed() }
}

fn header<T>(kind: EventKind, verdict: Verdict, comm: &str) -> EventHeader {
    let mut h: EventHeader = zeroed();
    h.kind = kind as u32;
    h.size = size_of::<T>() as u32;
    h.ktime_ns = 81_234_567_890;
    h.cgroup_id = 10_412;
    h.tid = 4242;
    h.pid = 4242;
    h.uid = 1000;
    h.gid = 1000;
    h.verdict = verdict as u32;
    h.comm[..comm.len()].copy_from_slice(comm.as_bytes());
    h
}

fn path_bytes(path: &str) -> ([u8; PATH_BYTES], u32) {
    let mut buf = [0u8; PATH_BYTES];
    let n = path.len().min(PATH_BYTES);
    buf[..n].copy_from_slice(&path.as_bytes()[..n]);
    (buf, n as u32)
}

fn connect(hook: ConnectHook, verdict: Verdict, family: i32, addr: &[u8], port: u32) -> Vec<u8> {
    let mut e: ConnectEvent = zeroed();
    e.header = header::<ConnectEvent>(EventKind::Connect, verdict, "curl");
    e.hook = hook as u32;
    e.sock_family = if family == libc::AF_INET6 { 10 } else { 2 };
    e.sock_type = 1;
    e.protocol = 6;
    e.dst_family = family as u32;
    e.dst_port = port;
    e.rule = 0;
    e.policies = 1;
    e.dst_addr[..addr.len()].copy_from_slice(addr);
    as_bytes(&e)
}

fn chmod(call: ModeCall, status: u32, path: &str, mode: u32) -> Vec<u8> {
    let mut e: ChmodEvent = zeroed();
    e.header = header::<ChmodEvent>(EventKind::Chmod, Verdict::Blocked, "chmod");
    e.syscall = call as u32;
    e.mode = mode;
    e.fd = -100;
    e.path_status = status;
    (e.path, e.path_len) = path_bytes(path);
    e.rule = 0;
    e.policies = 1;
    as_bytes(&e)
}

/// Ring records of every kind, as the kernel programs lay them out.
fn records() -> Vec<(&'static str, Vec<u8>)> {
    let metadata_v4 = [169, 254, 169, 254];
    let metadata_v6 = [0xfd, 0, 0x0e, 0xc2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x54];
    let mut exec: ExecEvent = zeroed();
    exec.header = header::<ExecEvent>(EventKind::Exec, Verdict::Allowed, "sh");
    exec.filename_status = path_status::OK;
    (exec.filename, exec.filename_len) = path_bytes("/usr/bin/curl");
    let exit = ExitEvent {
        header: header::<ExitEvent>(EventKind::Exit, Verdict::Allowed, "curl"),
    };
    let mut setuid: PrivilegeEvent = zeroed();
    setuid.header = header::<PrivilegeEvent>(EventKind::Privilege, Verdict::Blocked, "su");
    setuid.syscall = PrivilegeCall::Setresuid as u32;
    setuid.raise = Raise::SetuidRoot as u32;
    setuid.ids = [0, 0, u32::MAX];
    setuid.nids = 3;
    setuid.rule = NO_RULE;
    let mut capset = setuid;
    capset.syscall = PrivilegeCall::Capset as u32;
    capset.raise = Raise::Capset as u32;
    capset.ids = [1 << 13, 0, 0];
    capset.nids = 2;
    vec![
        (
            "connect4-blocked",
            connect(
                ConnectHook::Connect4,
                Verdict::Blocked,
                libc::AF_INET,
                &metadata_v4,
                80,
            ),
        ),
        (
            "connect6-audited",
            connect(
                ConnectHook::Connect6,
                Verdict::Audited,
                libc::AF_INET6,
                &metadata_v6,
                80,
            ),
        ),
        (
            "packet-blocked",
            connect(ConnectHook::Packet, Verdict::Blocked, 0, &[], 0),
        ),
        (
            "chmod-setuid",
            chmod(ModeCall::Fchmodat, path_status::OK, "/tmp/payload", 0o4755),
        ),
        (
            "chmod-truncated",
            chmod(
                ModeCall::Chmod,
                path_status::TRUNCATED,
                &"d/".repeat(200),
                0o2755,
            ),
        ),
        (
            "mknod-name",
            chmod(ModeCall::LsmPathMknod, path_status::NAME, "dev", 0o6755),
        ),
        ("exec", as_bytes(&exec)),
        ("exit", as_bytes(&exit)),
        ("setresuid", as_bytes(&setuid)),
        ("capset", as_bytes(&capset)),
    ]
}

/// The events the pipeline makes of the records (the first one attributed to a process and a
/// pod), with their sequence numbers, and two the daemon makes itself.
fn events() -> Vec<(&'static str, pb::Event)> {
    let origin = Origin::new("node-a", "prod-eu");
    let rules = Arc::new(policy::from_default(None));
    let process = Arc::new(ProcInfo {
        pid: 4242,
        ppid: 1,
        comm: "curl".into(),
        exe: "/usr/bin/curl".into(),
        args: vec!["curl".into(), "http://169.254.169.254/".into()],
        uid: 1000,
        euid: 1000,
        gid: 1000,
        ..Default::default()
    });
    let pod = Arc::new(PodAttr::new(&pb::Pod {
        namespace: "shop".into(),
        name: "cart-5d8f7c9b7-x2x4q".into(),
        uid: "8d2b1c3e-1111-4a2b-9c3d-0123456789ab".into(),
        // One label: the message's map has no order, the seeds must not change run to run.
        labels: [("app".into(), "cart".into())].into_iter().collect(),
        container_name: "app".into(),
        container_id: "ab".repeat(32),
        image: "registry.example/cart:1.4".into(),
        owner_kind: "Deployment".into(),
        owner_name: "cart".into(),
        image_id: format!("registry.example/cart@sha256:{}", "cd".repeat(32)),
    }));
    let mut out: Vec<(&'static str, pb::Event)> = records()
        .into_iter()
        .enumerate()
        .map(|(i, (name, bytes))| {
            let first = i == 0;
            let draft = Draft {
                event: decode(&bytes).expect("a seed record decodes"),
                rules: Arc::clone(&rules),
                time_unix_ns: 1_764_000_000_000_000_000 + i as i64 * 1_000_000,
                process: first.then(|| Arc::clone(&process)),
                ancestors: Vec::new(),
                cgroup: first.then(|| {
                    "/kubepods.slice/kubepods-pod8d2b1c3e_1111_4a2b_9c3d_0123456789ab.slice".into()
                }),
                pod: first.then(|| Arc::clone(&pod)),
                enrichment: if first {
                    pb::Enrichment::Complete
                } else {
                    pb::Enrichment::Partial
                },
            };
            let encoded = draft.encode(&origin);
            let mut event = pb::Event::decode(encoded.payload.as_ref()).expect("encoded event");
            event.seq = i as u64 + 1;
            (name, event)
        })
        .collect();
    let mut lost = crate::sinks::journal::follow::journal_loss(&origin, 11, 17);
    lost.time_unix_ns = 1_764_000_000_500_000_000;
    out.push(("lost", lost));
    let mut change = proto::policy_change(&origin, 3, false, "SensorPolicy shop/deny", "deny", {
        vec!["SensorPolicy shop/deny:7:5: spec.rules[0].action: unknown value 'block'".into()]
    });
    change.time_unix_ns = 1_764_000_000_600_000_000;
    out.push(("policy-refused", change));
    out
}

/// A journal of the events' encodings in three segments, as one file: the segments in name
/// order (the `journal_open` target splits its input at each segment header's magic).
fn journal_bytes() -> Vec<u8> {
    let dir = TestDir::new("fuzz-corpus-journal");
    let config = JournalConfig {
        dir: dir.path().to_owned(),
        segment_bytes: 700,
        max_total_bytes: u64::MAX,
        max_age: None,
    };
    let (mut journal, _) = Journal::open(config).unwrap();
    for (_, event) in events() {
        let mut event = event;
        event.seq = 0;
        journal
            .append(event.time_unix_ns, &event.encode_to_vec())
            .unwrap();
        journal.flush().unwrap();
    }
    drop(journal);
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    assert!(names.len() >= 3, "{names:?}");
    names
        .iter()
        .flat_map(|p| std::fs::read(p).unwrap())
        .collect()
}

/// A `get_events` input: a `GetEventsRequest`'s length (u16, little-endian), the request,
/// then an encoded event (without `seq`, as the journal stores it).
fn request_and_event(req: &pb::GetEventsRequest, event: &pb::Event) -> Vec<u8> {
    let req = req.encode_to_vec();
    let mut event = event.clone();
    event.seq = 0;
    let mut out = (req.len() as u16).to_le_bytes().to_vec();
    out.extend_from_slice(&req);
    out.extend_from_slice(&event.encode_to_vec());
    out
}

fn requests() -> Vec<(&'static str, Vec<u8>)> {
    use pb::get_events_request::Start;
    let events = events();
    let event = |name: &str| &events.iter().find(|(n, _)| *n == name).unwrap().1;
    let filter = |kinds: &[pb::EventKind], verdicts: &[pb::Verdict]| pb::Filter {
        kinds: kinds.iter().map(|k| *k as i32).collect(),
        verdicts: verdicts.iter().map(|v| *v as i32).collect(),
        ..Default::default()
    };
    vec![
        (
            "from-seq-connect",
            request_and_event(
                &pb::GetEventsRequest {
                    start: Some(Start::FromSeq(2)),
                    follow: false,
                    filter: Some(filter(&[pb::EventKind::Connect], &[pb::Verdict::Blocked])),
                    limit: 10,
                },
                event("connect4-blocked"),
            ),
        ),
        (
            "since-pod-labels",
            request_and_event(
                &pb::GetEventsRequest {
                    start: Some(Start::SinceUnixNs(1_764_000_000_003_000_000)),
                    follow: true,
                    filter: Some(pb::Filter {
                        namespaces: vec!["shop".into()],
                        pods: vec!["cart-5d8f7c9b7-x2x4q".into()],
                        labels: [("app".into(), "cart".into())].into_iter().collect(),
                        ..Default::default()
                    }),
                    limit: 0,
                },
                event("connect4-blocked"),
            ),
        ),
        (
            "live-lost",
            request_and_event(
                &pb::GetEventsRequest {
                    start: None,
                    follow: true,
                    filter: Some(filter(&[pb::EventKind::Chmod], &[])),
                    limit: 0,
                },
                event("lost"),
            ),
        ),
        (
            "from-seq-privilege",
            request_and_event(
                &pb::GetEventsRequest {
                    start: Some(Start::FromSeq(0)),
                    follow: false,
                    filter: None,
                    limit: 1,
                },
                event("setresuid"),
            ),
        ),
    ]
}

/// Every seed, by target and file name.
fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out = Vec::new();
    for (name, bytes) in records() {
        out.push(("event_decode", format!("{name}.bin"), bytes));
    }
    let mut all_lines = String::new();
    for (name, event) in events() {
        let line = to_json(&event);
        all_lines.push_str(&line);
        all_lines.push('\n');
        out.push(("json_lines", format!("{name}.json"), line.into_bytes()));
    }
    out.push(("json_lines", "export.jsonl".into(), all_lines.into_bytes()));
    out.push(("journal_open", "three-segments.bin".into(), journal_bytes()));
    for (name, bytes) in requests() {
        out.push(("get_events", format!("{name}.bin"), bytes));
    }
    out
}

/// The targets whose seeds this module makes.
const TARGETS: [&str; 4] = ["event_decode", "json_lines", "journal_open", "get_events"];

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus")
}

#[test]
fn the_fuzz_corpus_is_what_the_code_makes() {
    let seeds = seeds();
    let root = corpus_dir();
    if std::env::var_os("SENSOR_BLESS").is_some() {
        for target in TARGETS {
            let _ = std::fs::remove_dir_all(root.join(target));
            std::fs::create_dir_all(root.join(target)).unwrap();
        }
        for (target, name, bytes) in &seeds {
            std::fs::write(root.join(target).join(name), bytes).unwrap();
        }
    }
    let mut stale = Vec::new();
    for (target, name, bytes) in &seeds {
        let path = root.join(target).join(name);
        if std::fs::read(&path).ok().as_ref() != Some(bytes) {
            stale.push(path.display().to_string());
        }
    }
    for target in TARGETS {
        for entry in std::fs::read_dir(root.join(target)).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            if !seeds.iter().any(|(t, n, _)| *t == target && *n == name) {
                stale.push(format!("{target}/{name} (made by nothing)"));
            }
        }
    }
    assert!(
        stale.is_empty(),
        "the fuzz corpus is stale ({stale:?}): run with SENSOR_BLESS=1"
    );
}
