//! Metadata-endpoint blocking on the live kernel: cgroup sock_addr programs at a test cgroup,
//! destinations on the `lo` of a test network namespace (docs/testing.md, 'Safety rules for
//! tests').

use sensor_tests::{NetNs, Place, ProbeResult, Sensor, TestCgroup, probe_net, require_root};
use serde_json::Value;

const EPERM: i64 = libc::EPERM as i64;

fn scoped_sensor(cg: &TestCgroup, mode: &str) -> Sensor {
    require_root();
    Sensor::start(&["--scope-cgroup", cg.path.to_str().unwrap(), "--mode", mode])
}

fn connect_events_of(sensor: &Sensor, pid: u64, n: usize) -> Vec<Value> {
    sensor.wait_for(n, |e| e["kind"] == "connect" && e["pid"] == pid)
}

fn assert_event(ev: &Value, cgroup_id: u64, hook: &str, addr: &str, port: u16, verdict: &str) {
    assert_eq!(ev["verdict"], verdict, "{ev}");
    assert_eq!(ev["comm"], "probe", "{ev}");
    assert_eq!(ev["cgroup_id"], cgroup_id, "{ev}");
    let c = &ev["connect"];
    assert_eq!(c["hook"], hook, "{ev}");
    assert_eq!(c["dst_addr"], addr, "{ev}");
    assert_eq!(c["dst_port"], port, "{ev}");
}

#[test]
fn enforce_blocks_tcp_mapped_v6_and_udp_in_scope_with_events() {
    let cg = TestCgroup::new();
    let ns = NetNs::with_metadata_addresses();
    let sensor = scoped_sensor(&cg, "enforce");
    let inside = Place::inside(&ns, &cg.path);
    let id = TestCgroup::id(&cg.path);

    let tcp = probe_net(&inside, "tcp", "169.254.169.254", 80);
    assert_eq!(
        tcp.errno, EPERM,
        "TCP connect to the metadata address must fail with EPERM"
    );
    let ev = &connect_events_of(&sensor, tcp.pid, 1)[0];
    assert_event(ev, id, "connect4", "169.254.169.254", 80, "blocked");
    assert_eq!(
        (ev["connect"]["protocol"].as_str(), ev["rule"].as_str()),
        (Some("tcp"), Some("metadata-imds-v4"))
    );

    let mapped = probe_net(&inside, "tcp", "::ffff:169.254.169.254", 80);
    assert_eq!(
        mapped.errno, EPERM,
        "v4-mapped connect on an AF_INET6 socket must fail with EPERM"
    );
    let ev = &connect_events_of(&sensor, mapped.pid, 1)[0];
    assert_event(ev, id, "connect6", "169.254.169.254", 80, "blocked");
    assert_eq!(ev["connect"]["socket_family"], "inet6");

    let udp = probe_net(&inside, "udp", "169.254.169.254", 53);
    assert_eq!(
        udp.errno, EPERM,
        "UDP sendto the metadata address must fail with EPERM"
    );
    assert!(!udp.received);
    let ev = &connect_events_of(&sensor, udp.pid, 1)[0];
    assert_event(ev, id, "sendmsg4", "169.254.169.254", 53, "blocked");
    assert_eq!(ev["connect"]["protocol"], "udp");

    let v6 = probe_net(&inside, "tcp", "fd00:ec2::254", 80);
    assert_eq!(
        v6.errno, EPERM,
        "TCP connect to the IPv6 metadata address must fail with EPERM"
    );
    let ev = &connect_events_of(&sensor, v6.pid, 1)[0];
    assert_event(ev, id, "connect6", "fd00:ec2::254", 80, "blocked");
    assert_eq!(ev["rule"], "metadata-imds-v6");

    // The second listed destination, with its own name.
    let creds = probe_net(&inside, "tcp", "169.254.170.2", 80);
    assert_eq!(creds.errno, EPERM);
    assert_eq!(
        connect_events_of(&sensor, creds.pid, 1)[0]["rule"],
        "metadata-container-credentials"
    );

    let (status, stderr) = sensor.stop();
    assert!(status.success(), "sensor exit: {status}; stderr:\n{stderr}");
    let counters = counters_line(&stderr);
    assert_eq!(counters["counters"]["kernel"]["blocked"], 5, "{counters}");
    assert_eq!(
        counters["counters"]["events"]["connect/blocked"], 5,
        "{counters}"
    );
    assert_eq!(
        counters["counters"]["kernel"]["ringbuf_full_connect"], 0,
        "{counters}"
    );
}

#[test]
fn the_event_pid_is_the_calling_process_and_not_another() {
    let cg = TestCgroup::new();
    let ns = NetNs::with_metadata_addresses();
    let sensor = scoped_sensor(&cg, "enforce");
    let inside = Place::inside(&ns, &cg.path);
    let a = probe_net(&inside, "tcp", "169.254.169.254", 80);
    let b = probe_net(&inside, "tcp", "169.254.169.254", 81);
    assert_ne!(a.pid, b.pid);
    assert_eq!(
        connect_events_of(&sensor, a.pid, 1)[0]["connect"]["dst_port"],
        80
    );
    assert_eq!(
        connect_events_of(&sensor, b.pid, 1)[0]["connect"]["dst_port"],
        81
    );
    assert_eq!(
        sensor
            .events()
            .iter()
            .filter(|e| e["pid"] == a.pid && e["kind"] == "connect")
            .count(),
        1
    );
}

#[test]
fn outside_the_scope_and_unlisted_destinations_connect() {
    let cg = TestCgroup::new();
    let ns = NetNs::with_metadata_addresses();
    let sensor = scoped_sensor(&cg, "enforce");
    let outside = Place {
        netns: Some(&ns),
        cgroup: None,
    };
    let out_tcp = probe_net(&outside, "tcp", "169.254.169.254", 80);
    assert_eq!(out_tcp.errno, 0, "a process outside the scope must connect");
    let out_udp = probe_net(&outside, "udp", "169.254.169.254", 53);
    assert_eq!(
        (out_udp.errno, out_udp.received),
        (0, true),
        "outside the scope UDP must be delivered"
    );

    // In scope, an address that is not listed connects (loopback of the test namespace).
    let inside = Place::inside(&ns, &cg.path);
    let local = probe_net(&inside, "tcp", "127.0.0.1", 8080);
    assert_eq!(local.errno, 0, "unlisted destinations must not be blocked");

    // Marker: once this event is out, anything from the earlier calls would be out too.
    let marker = probe_net(&inside, "tcp", "169.254.169.254", 80);
    assert_eq!(marker.errno, EPERM);
    connect_events_of(&sensor, marker.pid, 1);
    for pid in [out_tcp.pid, out_udp.pid, local.pid] {
        let stray: Vec<Value> = sensor
            .events()
            .into_iter()
            .filter(|e| e["pid"] == pid && e["kind"] == "connect")
            .collect();
        assert!(
            stray.is_empty(),
            "no event expected for pid {pid}: {stray:?}"
        );
    }
}

#[test]
fn a_child_cgroup_of_the_scope_is_blocked_too() {
    let mut cg = TestCgroup::new();
    let child = cg.child("pod-a");
    // Made through the guard, so that a failure below still removes it.
    let grandchild = cg.child("pod-a/container-b");
    let ns = NetNs::with_metadata_addresses();
    let sensor = scoped_sensor(&cg, "enforce");
    // Created after the sensor attached: covered from its first connect.
    let late = cg.child("pod-late");
    for dir in [&child, &grandchild, &late] {
        let r: ProbeResult = probe_net(&Place::inside(&ns, dir), "tcp", "169.254.169.254", 80);
        assert_eq!(
            r.errno,
            EPERM,
            "a process in {} must be blocked",
            dir.display()
        );
        let ev = &connect_events_of(&sensor, r.pid, 1)[0];
        assert_eq!(ev["cgroup_id"], TestCgroup::id(dir), "{ev}");
        assert_eq!(ev["verdict"], "blocked");
    }
}

#[test]
fn audit_mode_allows_and_reports_audited() {
    let cg = TestCgroup::new();
    let ns = NetNs::with_metadata_addresses();
    let sensor = scoped_sensor(&cg, "audit");
    let inside = Place::inside(&ns, &cg.path);
    let id = TestCgroup::id(&cg.path);

    let tcp = probe_net(&inside, "tcp", "169.254.169.254", 80);
    assert_eq!(tcp.errno, 0, "audit mode must let the connect through");
    assert_event(
        &connect_events_of(&sensor, tcp.pid, 1)[0],
        id,
        "connect4",
        "169.254.169.254",
        80,
        "audited",
    );

    let udp = probe_net(&inside, "udp", "169.254.169.254", 53);
    assert_eq!(
        (udp.errno, udp.received),
        (0, true),
        "audit mode must deliver the datagram"
    );
    assert_event(
        &connect_events_of(&sensor, udp.pid, 1)[0],
        id,
        "sendmsg4",
        "169.254.169.254",
        53,
        "audited",
    );

    let (status, stderr) = sensor.stop();
    assert!(status.success());
    let counters = counters_line(&stderr);
    assert_eq!(counters["counters"]["kernel"]["audited"], 2, "{counters}");
    assert_eq!(counters["counters"]["kernel"]["blocked"], 0, "{counters}");
}

#[test]
fn enforcement_ends_when_the_sensor_stops() {
    let cg = TestCgroup::new();
    let ns = NetNs::with_metadata_addresses();
    let sensor = scoped_sensor(&cg, "enforce");
    let inside = Place::inside(&ns, &cg.path);
    assert_eq!(
        probe_net(&inside, "tcp", "169.254.169.254", 80).errno,
        EPERM
    );
    let (status, _) = sensor.stop();
    assert!(status.success());
    // Detached cleanly on SIGINT: nothing of ours is attached any more.
    assert_eq!(probe_net(&inside, "tcp", "169.254.169.254", 80).errno, 0);
}

fn counters_line(stderr: &str) -> Value {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("{\"counters\""))
        .unwrap_or_else(|| panic!("no counters line on stderr:\n{stderr}"));
    serde_json::from_str(line).expect("counters line is JSON")
}

/// The paths a naive sensor forgets: TCP Fast Open (the connect happens inside sendto), io_uring
/// connect (no connect syscall at all), raw sockets and ping sockets (no connect or UDP sendmsg hook runs for them: the cgroup skb
/// egress program catches their packets).
#[test]
fn fast_open_io_uring_raw_and_ping_sockets_are_blocked_in_enforce_and_reported_in_audit() {
    let cg = TestCgroup::new();
    let ns = NetNs::with_metadata_addresses();
    let inside = Place::inside(&ns, &cg.path);
    let id = TestCgroup::id(&cg.path);
    let sensor = scoped_sensor(&cg, "enforce");
    let cases = [
        ("tfo", "169.254.169.254", 80, "connect4", "stream"),
        ("uring", "169.254.169.254", 80, "connect4", "stream"),
        ("uring", "fd00:ec2::254", 443, "connect6", "stream"),
        ("raw", "169.254.169.254", 0, "egress", "raw"),
        ("ping", "169.254.169.254", 0, "egress", "dgram"),
        ("raw", "fd00:ec2::254", 0, "egress", "raw"),
    ];
    for (op, addr, port, hook, socket_type) in cases {
        let r = probe_net(&inside, op, addr, port);
        assert_eq!(r.errno, EPERM, "{op} to {addr} must fail with EPERM");
        let ev = &connect_events_of(&sensor, r.pid, 1)[0];
        assert_event(ev, id, hook, addr, port, "blocked");
        assert_eq!(ev["connect"]["socket_type"], socket_type, "{ev}");
    }
    // Outside the scope (same namespace) the echo goes out and is answered.
    let outside = Place {
        netns: Some(&ns),
        cgroup: None,
    };
    let outside = probe_net(&outside, "raw", "169.254.169.254", 0);
    assert_eq!((outside.errno, outside.received), (0, true));
    drop(sensor);

    let sensor = scoped_sensor(&cg, "audit");
    for (op, addr) in [("raw", "169.254.169.254"), ("ping", "fd00:ec2::254")] {
        let r = probe_net(&inside, op, addr, 0);
        assert_eq!(
            (r.errno, r.received),
            (0, true),
            "{op} to {addr} is allowed and answered in audit mode"
        );
        let ev = &connect_events_of(&sensor, r.pid, 1)[0];
        assert_event(ev, id, "egress", addr, 0, "audited");
    }
    for (op, port) in [("uring", 80), ("tfo", 81)] {
        let r = probe_net(&inside, op, "169.254.169.254", port);
        assert_eq!(r.errno, 0, "{op} is allowed in audit mode");
        let ev = &connect_events_of(&sensor, r.pid, 1)[0];
        assert_event(ev, id, "connect4", "169.254.169.254", port, "audited");
    }
}

/// A socket created before its process joined the scoped cgroup belongs to the old cgroup: the
/// scope's connect hook never runs for it. The connect tracepoints catch the call: the caller
/// is killed in enforce mode (after the handshake, before it can send a byte), reported in
/// audit mode.
#[test]
fn a_socket_made_before_joining_the_scope_is_caught_by_the_kill_tier() {
    use std::os::unix::process::ExitStatusExt as _;
    let cg = TestCgroup::new();
    let ns = NetNs::with_metadata_addresses();
    let moved_op = |op: &str, port: u16| {
        let child = std::process::Command::new(sensor_tests::probe_bin())
            .args(["--netns", &ns.name, "--cgroup"])
            .arg(&cg.path)
            .args([op, "169.254.169.254", &port.to_string()])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pid = u64::from(child.id());
        let out = child.wait_with_output().unwrap();
        (
            pid,
            out.status,
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let moved = |port: u16| moved_op("moved", port);
    let sensor = scoped_sensor(&cg, "enforce");
    let (pid, status, out) = moved(80);
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status} {out}");
    let ev = &connect_events_of(&sensor, pid, 1)[0];
    assert_eq!(
        (ev["verdict"].as_str(), ev["connect"]["hook"].as_str()),
        (Some("killed"), Some("syscall")),
        "{ev}"
    );
    assert_eq!(ev["connect"]["dst_addr"], "169.254.169.254", "{ev}");
    // A connect that fails before it reaches the network (an IPv6 socket given an IPv4
    // address) did nothing: no kill, no event.
    let (pid, status, out) = moved_op("moved-bad", 80);
    assert!(
        status.success() && !out.contains("\"errno\":0"),
        "{status} {out}"
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        !sensor
            .events()
            .iter()
            .any(|e| e["pid"] == pid && e["kind"] == "connect"),
        "a failed call is not reported"
    );
    // A socket made inside the scope still meets the connect hook (EPERM), not a kill.
    let inside = probe_net(&Place::inside(&ns, &cg.path), "tcp", "169.254.169.254", 80);
    assert_eq!(inside.errno, EPERM);
    drop(sensor);

    let sensor = scoped_sensor(&cg, "audit");
    let (pid, status, out) = moved(80);
    assert!(
        status.success() && out.contains("\"errno\":0"),
        "{status} {out}"
    );
    let ev = &connect_events_of(&sensor, pid, 1)[0];
    assert_eq!(
        (ev["verdict"].as_str(), ev["connect"]["hook"].as_str()),
        (Some("audited"), Some("syscall")),
        "{ev}"
    );
}

/// Packet sockets skip the IP output path (no destination check can see their frames): while a
/// metadata rule applies, a process in scope may not have one. This kernel refuses BPF LSM, so
/// the kill tier kills the creator at `socket()` (the VM lane checks the LSM tier's EPERM).
/// Creating a socket sends nothing; it still happens inside a test namespace.
#[test]
fn packet_sockets_are_refused_in_scope_while_a_metadata_rule_applies() {
    use std::os::unix::process::ExitStatusExt as _;
    let cg = TestCgroup::new();
    let ns = NetNs::with_metadata_addresses();
    let id = TestCgroup::id(&cg.path);
    let open_packet_socket = |place: &Place<'_>| {
        let child = sensor_tests::probe_exec(
            place,
            &[
                "/usr/bin/python3",
                "-c",
                "import socket; socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0x0300); print('created')",
            ],
        );
        let pid = u64::from(child.id());
        let out = child.wait_with_output().expect("waiting for probe");
        (
            pid,
            out.status,
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let inside = Place::inside(&ns, &cg.path);
    let outside = Place {
        netns: Some(&ns),
        cgroup: None,
    };
    let sensor = scoped_sensor(&cg, "enforce");
    assert_eq!(sensor.status()["protections"]["metadata-packet"], "kill");
    let (pid, status, out) = open_packet_socket(&inside);
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status} {out}");
    assert!(out.is_empty(), "the socket must not be used: {out}");
    let ev = &connect_events_of(&sensor, pid, 1)[0];
    assert_eq!(
        (ev["verdict"].as_str(), ev["cgroup_id"].as_u64()),
        (Some("killed"), Some(id)),
        "{ev}"
    );
    // The deciding entry is the first enforcing metadata destination.
    assert_eq!(ev["rule"], "metadata-imds-v4", "{ev}");
    assert_eq!(
        (
            ev["connect"]["hook"].as_str(),
            ev["connect"]["socket_family"].as_str()
        ),
        (Some("packet"), Some("packet")),
        "{ev}"
    );
    let (pid, status, out) = open_packet_socket(&outside);
    assert!(
        status.success() && out.contains("created"),
        "outside: {status} {out}"
    );
    sensor.wait_counter("kernel_packet_killed", 1);
    assert!(
        !sensor
            .events()
            .iter()
            .any(|e| e["pid"] == pid && e["kind"] == "connect"),
        "nothing reported outside the scope"
    );
    drop(sensor);

    let sensor = scoped_sensor(&cg, "audit");
    let (pid, status, out) = open_packet_socket(&inside);
    assert!(
        status.success() && out.contains("created"),
        "audit: {status} {out}"
    );
    let ev = &connect_events_of(&sensor, pid, 1)[0];
    assert_eq!(
        (ev["verdict"].as_str(), ev["connect"]["hook"].as_str()),
        (Some("audited"), Some("packet")),
        "{ev}"
    );
}
