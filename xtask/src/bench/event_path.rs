//! Event-path figures: the daemon's CPU per event with the journal only (no subscriber), one
//! and ten subscribers, the daemon's capacity (events per CPU second, independent of the generator),
//! and kernel-to-subscriber latency at 10k and 100k events/s.
//!
//! The load generator is pinned to CPU 0 and the daemon to CPU 1, so the generator's speed
//! does not decide how much CPU the daemon gets. Subscribers are `bench-sub` (a gRPC client
//! that reads each message's top-level fields without decoding it into an event), unpinned:
//! ten `sensor tail -o json` would need more CPU than the machine has.

use std::{
    io::{BufRead as _, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use super::{Bins, Daemon, Figure, Scratch, cpu_seconds, leak};
use crate::target_dir;

/// Events per CPU-cost run.
const CPU_EVENTS: u64 = 1_000_000;

/// `SENSOR_BENCH_EVENT_PATH_ONLY=1 cargo xtask bench`: only these figures (a quicker run).
pub(super) fn only() -> bool {
    std::env::var_os("SENSOR_BENCH_EVENT_PATH_ONLY").is_some_and(|v| v == "1")
}

fn bench_sub() -> PathBuf {
    target_dir().join("release/bench-sub")
}

/// Pin every thread of `pid` to `cpu`.
fn pin(pid: u32, cpu: u32) -> Result<()> {
    let ok = Command::new("taskset")
        .args(["-a", "-p", "-c", &cpu.to_string(), &pid.to_string()])
        .stdout(Stdio::null())
        .status()?
        .success();
    if !ok {
        bail!("taskset -a -p -c {cpu} {pid} failed");
    }
    Ok(())
}

/// A running `bench-sub`, subscribed.
struct LightSub {
    child: Child,
    out: BufReader<std::process::ChildStdout>,
}

impl LightSub {
    fn start(scratch: &Scratch, n: u64, kind: Option<i32>) -> Result<Self> {
        let mut cmd = Command::new(bench_sub());
        cmd.arg(Daemon::socket(scratch))
            .args([n.to_string(), "5000".into()]);
        if let Some(k) = kind {
            cmd.args(["--kind", &k.to_string()]);
        }
        let mut child = cmd.stdout(Stdio::piped()).spawn()?;
        let mut out = BufReader::new(child.stdout.take().context("stdout")?);
        let mut line = String::new();
        out.read_line(&mut line)?;
        if !line.contains("subscribed") {
            bail!("bench-sub did not subscribe: {line}");
        }
        Ok(Self { child, out })
    }

    /// Wait for its summary line.
    fn finish(mut self) -> Result<Value> {
        let mut line = String::new();
        self.out.read_line(&mut line)?;
        let _ = self.child.wait();
        serde_json::from_str(&line).with_context(|| format!("bench-sub said {line:?}"))
    }
}

impl Drop for LightSub {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn wall_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// bench-gen on CPU 0.
fn generate(bins: &Bins, scratch: &Scratch, args: &[&str]) -> Result<()> {
    let out = Command::new("taskset")
        .args(["-c", "0"])
        .arg(&bins.generator)
        .arg("--cgroup")
        .arg(&scratch.cgroup)
        .args(args)
        .output()?;
    if !out.status.success() {
        bail!(
            "bench-gen {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn events_journaled(counters: &Value) -> u64 {
    counters["counters"]["events"]
        .as_object()
        .map_or(0, |m| m.values().filter_map(Value::as_u64).sum())
}

struct CpuRun {
    cpu_us_per_event: f64,
    journaled: u64,
    delivered: u64,
    lost: u64,
    kernel_lost: u64,
    rate: f64,
}

/// One full-speed run of `CPU_EVENTS` chmods with `subs` light subscribers (all reading).
fn cpu_run(bins: &Bins, scratch: &Scratch, file: &str, subs: usize) -> Result<CpuRun> {
    let daemon = Daemon::start(bins, scratch, &[])?;
    pin(daemon.pid(), 1)?;
    let readers = (0..subs)
        .map(|_| LightSub::start(scratch, CPU_EVENTS, None))
        .collect::<Result<Vec<_>>>()?;
    thread::sleep(Duration::from_millis(200));
    let cpu0 = cpu_seconds(daemon.pid());
    let t0 = wall_ns();
    generate(bins, scratch, &["chmod", &CPU_EVENTS.to_string(), file])?;
    let (mut delivered, mut lost, mut last) = (0, 0, t0);
    for r in readers {
        let v = r.finish()?;
        delivered += v["events"].as_u64().unwrap_or(0);
        lost += v["lost"].as_u64().unwrap_or(0);
        last = last.max(v["last_arrival_unix_ns"].as_i64().unwrap_or(0));
    }
    if subs == 0 {
        // Let the daemon drain the ring buffer before its CPU is read.
        thread::sleep(Duration::from_secs(2));
    }
    let cpu = cpu_seconds(daemon.pid()) - cpu0;
    let counters = daemon.stop()?;
    let journaled = events_journaled(&counters);
    let kernel_lost = counters["counters"]["kernel"]["ringbuf_full_chmod"]
        .as_u64()
        .unwrap_or(0);
    let elapsed = (last - t0).max(1) as f64 / 1e9;
    Ok(CpuRun {
        cpu_us_per_event: cpu * 1e6 / journaled.max(1) as f64,
        journaled,
        delivered,
        lost,
        kernel_lost,
        rate: delivered as f64 / subs.max(1) as f64 / elapsed,
    })
}

fn fig(
    name: String,
    value: f64,
    unit: &'static str,
    target: Option<(&'static str, f64)>,
) -> Figure {
    Figure {
        name: leak(name),
        value,
        unit,
        target,
    }
}

/// Daemon CPU per event with the journal only (no subscriber), one and ten subscribers; the
/// daemon's capacity.
pub(super) fn cpu_figures(
    bins: &Bins,
    scratch: &Scratch,
    file: &str,
    out: &mut Vec<Figure>,
) -> Result<()> {
    let cases: [(&str, usize); 3] = [("journal_only", 0), ("1_sub", 1), ("10_subs", 10)];
    let mut per = Vec::new();
    for (name, subs) in cases {
        eprintln!("bench: daemon CPU per event, {name}");
        let run = cpu_run(bins, scratch, file, subs)?;
        eprintln!(
            "bench:   {:.3} µs/event, journaled {}, delivered {}, subscriber lost {}, kernel lost {}",
            run.cpu_us_per_event, run.journaled, run.delivered, run.lost, run.kernel_lost
        );
        let target = match name {
            "1_sub" => Some(("<=", 1.0)),
            _ => None,
        };
        out.extend([
            fig(
                format!("daemon_cpu_us_per_event_{name}"),
                run.cpu_us_per_event,
                "µs",
                target,
            ),
            fig(
                format!("pinned_{name}_journaled"),
                run.journaled as f64,
                "events",
                None,
            ),
            fig(
                format!("pinned_{name}_subscriber_lost"),
                run.lost as f64,
                "events",
                None,
            ),
            fig(
                format!("pinned_{name}_kernel_lost"),
                run.kernel_lost as f64,
                "events",
                None,
            ),
        ]);
        if subs > 0 {
            out.push(fig(
                format!("pinned_{name}_delivered_rate"),
                run.rate,
                "events/s",
                None,
            ));
        }
        per.push(run.cpu_us_per_event);
    }
    out.extend([
        fig(
            "daemon_cpu_10_subs_over_1_sub".into(),
            per[2] / per[1],
            "x",
            Some(("<=", 1.5)),
        ),
        fig(
            "daemon_capacity_events_per_cpu_s".into(),
            1e6 / per[1],
            "events/s",
            None,
        ),
    ]);
    Ok(())
}

/// Kernel-to-subscriber latency (light subscriber) at 10k and 100k events/s.
pub(super) fn latency_figures(
    bins: &Bins,
    scratch: &Scratch,
    file: &str,
    out: &mut Vec<Figure>,
) -> Result<()> {
    for (label, rate, n) in [("10k", 10_000u64, 20_000u64), ("100k", 100_000, 200_000)] {
        eprintln!("bench: latency at {label} events/s (bench-sub)");
        let daemon = Daemon::start(bins, scratch, &[])?;
        pin(daemon.pid(), 1)?;
        let sub = LightSub::start(scratch, n, None)?;
        generate(
            bins,
            scratch,
            &["paced", &rate.to_string(), &n.to_string(), file],
        )?;
        let v = sub.finish()?;
        daemon.stop()?;
        let ms = |k: &str| v[k].as_f64().unwrap_or(f64::NAN) / 1e6;
        let target = (label == "10k").then_some(("<=", 1.0));
        out.extend([
            fig(
                format!("light_latency_{label}_p50_ms"),
                ms("lat_p50_ns"),
                "ms",
                None,
            ),
            fig(
                format!("light_latency_{label}_p99_ms"),
                ms("lat_p99_ns"),
                "ms",
                target,
            ),
            fig(
                format!("light_latency_{label}_max_ms"),
                ms("lat_max_ns"),
                "ms",
                None,
            ),
            fig(
                format!("light_latency_{label}_lost"),
                v["lost"].as_f64().unwrap_or(0.0)
                    + (n as f64
                        - v["events"].as_f64().unwrap_or(0.0)
                        - v["lost"].as_f64().unwrap_or(0.0)),
                "events",
                None,
            ),
        ]);
    }
    Ok(())
}
