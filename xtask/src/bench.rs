//! `cargo xtask bench`: the sensor's cost and throughput against the kernel's own baseline.
//!
//! Release builds; every overhead case runs as interleaved rounds without and with the sensor
//! (audit mode, scoped to a bench cgroup), reporting medians and ratios. Then pipeline
//! throughput (generator at full speed, the daemon, one `sensor tail`), the highest paced rate
//! with zero loss, kernel-to-subscriber latency at 10k events/s, memory (idle, with a 10,000-pod
//! cache from a local fake API server, at full throughput) and start-up time. Prints a table and
//! writes every figure to `target/bench/bench-<commit>.json`.

use std::{
    io::{BufRead as _, BufReader},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use crate::{setup, target_dir, workspace_root};

mod event_path;
mod tiers;

const ROUNDS: usize = 5;

struct Bins {
    sensor: PathBuf,
    generator: PathBuf,
    fake_kube: PathBuf,
}

/// A cgroup and a scratch directory for the bench, removed on drop.
struct Scratch {
    cgroup: PathBuf,
    dir: PathBuf,
}

impl Scratch {
    fn new() -> Result<Self> {
        let root = setup::cgroup2_mounts()?
            .into_iter()
            .next()
            .context("no cgroup2 mount")?;
        let cgroup = root.join(format!("sensor-bench-{}", std::process::id()));
        std::fs::create_dir(&cgroup).with_context(|| format!("creating {}", cgroup.display()))?;
        let dir = std::env::temp_dir().join(format!("sensor-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(Self { cgroup, dir })
    }

    fn file(&self) -> PathBuf {
        let f = self.dir.join("target");
        let _ = std::fs::write(&f, b"x");
        f
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for _ in 0..100 {
            if std::fs::remove_dir(&self.cgroup).is_ok() || !self.cgroup.exists() {
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A running sensor; killed on drop if not stopped.
struct Daemon {
    child: Child,
    stderr: Arc<Mutex<Vec<String>>>,
    /// Process start to "sensor ready" (programs attached, enforcement active).
    ready_after: Duration,
}

impl Daemon {
    fn start(bins: &Bins, scratch: &Scratch, extra: &[&str]) -> Result<Self> {
        Self::start_mode(bins, scratch, "audit", extra)
    }

    /// As [`Daemon::start`], the built-in policy in `mode`.
    fn start_mode(bins: &Bins, scratch: &Scratch, mode: &str, extra: &[&str]) -> Result<Self> {
        let state = scratch.dir.join("state");
        let _ = std::fs::remove_dir_all(&state);
        let started = Instant::now();
        let mut child = Command::new(&bins.sensor)
            .args(["run", "--mode", mode, "--scope-cgroup"])
            .arg(&scratch.cgroup)
            .arg("--socket")
            .arg(state.join("sensor.sock"))
            .arg("--journal-dir")
            .arg(state.join("journal"))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting the sensor")?;
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let lines = Arc::clone(&stderr);
        let err = child.stderr.take().context("stderr")?;
        thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if line.contains("sensor ready") {
                    let _ = tx.send(Instant::now());
                }
                lines.lock().unwrap().push(line);
            }
        });
        let Ok(ready) = rx.recv_timeout(Duration::from_secs(60)) else {
            // Exited (a tier this kernel refuses) or hung: reaped either way.
            let _ = child.kill();
            let _ = child.wait();
            bail!("sensor not ready: {}", stderr.lock().unwrap().join("\n"));
        };
        Ok(Self {
            child,
            stderr,
            ready_after: ready - started,
        })
    }

    fn socket(scratch: &Scratch) -> PathBuf {
        scratch.dir.join("state/sensor.sock")
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGINT and wait; returns the counters line.
    fn stop(mut self) -> Result<Value> {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                bail!("sensor did not stop");
            }
            thread::sleep(Duration::from_millis(10));
        }
        thread::sleep(Duration::from_millis(50));
        let lines = self.stderr.lock().unwrap().clone();
        let line = lines
            .iter()
            .find(|l| l.starts_with("{\"counters\""))
            .context("no counters line")?;
        Ok(serde_json::from_str(line)?)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `sensor tail -f -o json` whose lines are counted (and, for latency, timed) as they arrive.
struct Subscriber {
    child: Child,
    chmods: Arc<AtomicU64>,
    lost: Arc<AtomicU64>,
    last_arrival: Arc<Mutex<Option<Instant>>>,
    latencies_ns: Arc<Mutex<Vec<i64>>>,
}

impl Subscriber {
    fn start(bins: &Bins, scratch: &Scratch, measure_latency: bool) -> Result<Self> {
        let mut child = Command::new(&bins.sensor)
            .args(["tail", "-f", "-o", "json", "--kind", "chmod", "--server"])
            .arg(Daemon::socket(scratch))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let out = child.stdout.take().context("stdout")?;
        let (chmods, lost) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let last_arrival = Arc::new(Mutex::new(None));
        let latencies_ns = Arc::new(Mutex::new(Vec::new()));
        let (c, l, la, lat) = (
            Arc::clone(&chmods),
            Arc::clone(&lost),
            Arc::clone(&last_arrival),
            Arc::clone(&latencies_ns),
        );
        thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let now = Instant::now();
                let wall = SystemTime::now();
                if line.contains("\"kind\":\"lost\"") {
                    let v: Value = serde_json::from_str(&line).unwrap_or_default();
                    l.fetch_add(v["lost"]["count"].as_u64().unwrap_or(0), Ordering::Relaxed);
                    continue;
                }
                c.fetch_add(1, Ordering::Relaxed);
                *la.lock().unwrap() = Some(now);
                if measure_latency {
                    let v: Value = serde_json::from_str(&line).unwrap_or_default();
                    if let Some(t) = v["time"]
                        .as_str()
                        .and_then(|t| humantime::parse_rfc3339(t).ok())
                    {
                        let d = match wall.duration_since(t) {
                            Ok(d) => d.as_nanos() as i64,
                            Err(e) => -(e.duration().as_nanos() as i64),
                        };
                        lat.lock().unwrap().push(d);
                    }
                }
            }
        });
        // Let it subscribe.
        thread::sleep(Duration::from_millis(300));
        Ok(Self {
            child,
            chmods,
            lost,
            last_arrival,
            latencies_ns,
        })
    }

    /// Wait until `n` chmod events (delivered + lost) arrived, or `idle` passed without progress.
    fn wait_for(&self, n: u64, idle: Duration) {
        let mut last = (0, Instant::now());
        loop {
            let seen = self.chmods.load(Ordering::Relaxed) + self.lost.load(Ordering::Relaxed);
            if seen >= n {
                return;
            }
            if seen != last.0 {
                last = (seen, Instant::now());
            } else if last.1.elapsed() > idle {
                return;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn load(bins: &Bins, cgroup: Option<&Path>, args: &[&str]) -> Result<f64> {
    let mut cmd = Command::new(&bins.generator);
    if let Some(cg) = cgroup {
        cmd.arg("--cgroup").arg(cg);
    }
    let out = cmd.args(args).output()?;
    if !out.status.success() {
        bail!(
            "bench-gen {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let v: Value = serde_json::from_slice(&out.stdout)?;
    v["ns_per_op"].as_f64().context("ns_per_op")
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

fn percentile(sorted: &[i64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i] as f64
}

/// Process CPU seconds (utime + stime) from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: f64 = rest
        .get(11)
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(0.0)
        + rest
            .get(12)
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(0.0);
    ticks / 100.0
}

fn rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

struct Figure {
    name: &'static str,
    value: f64,
    unit: &'static str,
    /// (comparison, target): "<=" or ">=".
    target: Option<(&'static str, f64)>,
}

pub fn run() -> Result<()> {
    if std::fs::metadata("/proc/self")?.uid() != 0 {
        bail!("cargo xtask bench needs root (cgroups, BPF)");
    }
    setup::all()?;
    crate::build_bins(true)?;
    let rel = target_dir().join("release");
    let bins = Bins {
        sensor: rel.join("sensor"),
        generator: rel.join("bench-gen"),
        fake_kube: rel.join("fake-kube"),
    };
    let scratch = Scratch::new()?;
    let file = scratch.file();
    let f = file.to_str().context("utf-8 path")?.to_owned();
    let cg = scratch.cgroup.clone();
    let mut figures = Vec::new();
    if event_path::only() {
        event_path::cpu_figures(&bins, &scratch, &f, &mut figures)?;
        event_path::latency_figures(&bins, &scratch, &f, &mut figures)?;
        return report(&figures);
    }

    // 1. Syscall overhead per tier, against the kernel alone and the hooks' floor.
    // SENSOR_BENCH_TIERS_ONLY=1 stops after this section, =revert runs only the revert figures.
    let tiers_only = std::env::var("SENSOR_BENCH_TIERS_ONLY").unwrap_or_default();
    let mut ready = Vec::new();
    if tiers_only != "revert" {
        figures.extend(tiers::figures(&bins, &scratch, &f, &mut ready)?);
    }
    figures.extend(tiers::revert_figures(&bins, &scratch, &f)?);
    if tiers_only == "1" || tiers_only == "revert" {
        return report(&figures);
    }
    figures.push(Figure {
        name: "startup_to_ready_s",
        value: median(&mut ready),
        unit: "s",
        target: Some(("<=", 0.5)),
    });

    // 2. Throughput at full speed, with one subscriber.
    eprintln!("bench: pipeline throughput");
    const FULL: u64 = 1_000_000;
    let daemon = Daemon::start(&bins, &scratch, &[])?;
    let idle_rss = {
        thread::sleep(Duration::from_secs(1));
        rss_mb(daemon.pid())
    };
    let sub = Subscriber::start(&bins, &scratch, false)?;
    let cpu0 = cpu_seconds(daemon.pid());
    let sampling = Arc::new(AtomicBool::new(true));
    let peak = Arc::new(Mutex::new(0f64));
    let sampler = {
        let (s, p, pid) = (Arc::clone(&sampling), Arc::clone(&peak), daemon.pid());
        thread::spawn(move || {
            while s.load(Ordering::Relaxed) {
                let r = rss_mb(pid);
                let mut m = p.lock().unwrap();
                if r > *m {
                    *m = r;
                }
                drop(m);
                thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let t0 = Instant::now();
    load(&bins, Some(&cg), &["chmod", &FULL.to_string(), &f])?;
    let generated_in = t0.elapsed();
    sub.wait_for(FULL, Duration::from_secs(5));
    let end = sub
        .last_arrival
        .lock()
        .unwrap()
        .unwrap_or_else(Instant::now);
    let cpu = cpu_seconds(daemon.pid()) - cpu0;
    sampling.store(false, Ordering::Relaxed);
    let _ = sampler.join();
    let delivered = sub.chmods.load(Ordering::Relaxed);
    let sub_lost = sub.lost.load(Ordering::Relaxed);
    drop(sub);
    let counters = daemon.stop()?;
    let kernel_lost = counters["counters"]["kernel"]["ringbuf_full_chmod"]
        .as_u64()
        .unwrap_or(0);
    let elapsed = (end - t0).as_secs_f64();
    figures.extend([
        Figure {
            name: "full_speed_generated",
            value: FULL as f64,
            unit: "events",
            target: None,
        },
        Figure {
            name: "full_speed_generator_rate",
            value: FULL as f64 / generated_in.as_secs_f64(),
            unit: "events/s",
            target: None,
        },
        Figure {
            name: "full_speed_delivered",
            value: delivered as f64,
            unit: "events",
            target: None,
        },
        Figure {
            name: "full_speed_kernel_lost",
            value: kernel_lost as f64,
            unit: "events",
            target: None,
        },
        Figure {
            name: "full_speed_subscriber_lost",
            value: sub_lost as f64,
            unit: "events",
            target: None,
        },
        Figure {
            name: "full_speed_delivered_rate",
            value: delivered as f64 / elapsed,
            unit: "events/s",
            target: Some((">=", 500_000.0)),
        },
        Figure {
            name: "daemon_cpu_s_per_million_events",
            value: cpu / (delivered.max(1) as f64 / 1e6),
            unit: "s",
            target: None,
        },
        Figure {
            name: "rss_idle_mb",
            value: idle_rss,
            unit: "MB",
            target: Some(("<=", 30.0)),
        },
        Figure {
            name: "rss_full_throughput_peak_mb",
            value: *peak.lock().unwrap(),
            unit: "MB",
            target: None,
        },
    ]);

    // Highest paced rate with zero loss (kernel or subscriber), one second per rate.
    eprintln!("bench: zero-loss rate search");
    let mut best = 0u64;
    for rate in [25_000u64, 50_000, 100_000, 200_000, 400_000, 800_000] {
        let daemon = Daemon::start(&bins, &scratch, &[])?;
        let sub = Subscriber::start(&bins, &scratch, false)?;
        load(
            &bins,
            Some(&cg),
            &["paced", &rate.to_string(), &rate.to_string(), &f],
        )?;
        sub.wait_for(rate, Duration::from_secs(3));
        let delivered = sub.chmods.load(Ordering::Relaxed);
        drop(sub);
        let counters = daemon.stop()?;
        let kernel_lost = counters["counters"]["kernel"]["ringbuf_full_chmod"]
            .as_u64()
            .unwrap_or(0);
        eprintln!("bench:   {rate}/s: delivered {delivered}, kernel lost {kernel_lost}");
        if delivered == rate && kernel_lost == 0 {
            best = rate;
        } else {
            break;
        }
    }
    figures.push(Figure {
        name: "highest_zero_loss_rate",
        value: best as f64,
        unit: "events/s",
        target: Some((">=", 500_000.0)),
    });

    // 3. Latency at 10k events/s.
    eprintln!("bench: latency at 10k events/s");
    let daemon = Daemon::start(&bins, &scratch, &[])?;
    let sub = Subscriber::start(&bins, &scratch, true)?;
    load(&bins, Some(&cg), &["paced", "10000", "20000", &f])?;
    sub.wait_for(20_000, Duration::from_secs(3));
    let mut lat = sub.latencies_ns.lock().unwrap().clone();
    drop(sub);
    daemon.stop()?;
    lat.sort_unstable();
    figures.extend([
        Figure {
            name: "latency_p50_ms",
            value: percentile(&lat, 0.50) / 1e6,
            unit: "ms",
            target: None,
        },
        Figure {
            name: "latency_p99_ms",
            value: percentile(&lat, 0.99) / 1e6,
            unit: "ms",
            target: Some(("<=", 1.0)),
        },
        Figure {
            name: "latency_max_ms",
            value: lat.last().copied().unwrap_or(0) as f64 / 1e6,
            unit: "ms",
            target: None,
        },
    ]);

    // Event path: CPU per event (journal only, 1 and 10 subscribers), capacity, latency.
    event_path::cpu_figures(&bins, &scratch, &f, &mut figures)?;
    event_path::latency_figures(&bins, &scratch, &f, &mut figures)?;

    // 4. Memory with a 10,000-pod cache.
    eprintln!("bench: memory with 10,000 pods");
    let kubeconfig = scratch.dir.join("kubeconfig.yaml");
    let mut fake = Command::new(&bins.fake_kube)
        .args(["10000", "node-bench"])
        .arg(&kubeconfig)
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(fake.stdout.take().context("stdout")?).read_line(&mut line)?;
    let kc = kubeconfig.to_str().context("utf-8")?.to_owned();
    let pods_rss = Daemon::start(
        &bins,
        &scratch,
        &["--kubeconfig", &kc, "--node-name", "node-bench"],
    )
    .and_then(|daemon| {
        // List, decode and index 10,000 pods.
        thread::sleep(Duration::from_secs(5));
        let rss = rss_mb(daemon.pid());
        daemon.stop()?;
        Ok(rss)
    });
    let _ = fake.kill();
    let _ = fake.wait();
    figures.push(Figure {
        name: "rss_10000_pods_mb",
        value: pods_rss?,
        unit: "MB",
        target: None,
    });

    report(&figures)
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

fn report(figures: &[Figure]) -> Result<()> {
    println!(
        "{:<44} {:>14} {:<9} {:>12}",
        "figure", "value", "unit", "target"
    );
    for f in figures {
        let (target, verdict) = match f.target {
            Some((op, t)) => {
                let met = if op == "<=" {
                    f.value <= t
                } else {
                    f.value >= t
                };
                (format!("{op} {t}"), if met { "met" } else { "MISSED" })
            }
            None => (String::new(), ""),
        };
        println!(
            "{:<44} {:>14.3} {:<9} {:>12} {verdict}",
            f.name, f.value, f.unit, target
        );
    }
    let sh = |cmd: &str, args: &[&str]| {
        Command::new(cmd)
            .args(args)
            .current_dir(workspace_root())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    };
    let commit = sh("git", &["rev-parse", "HEAD"]);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .and_then(|v| v.split(':').nth(1))
                .map(|v| v.trim().to_owned())
        })
        .unwrap_or_default();
    let doc = json!({
        "commit": commit,
        "kernel": sh("uname", &["-r"]),
        "cpu": cpu,
        "cpus": thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "rounds": ROUNDS,
        "figures": figures.iter().map(|f| json!({
            "name": f.name, "value": f.value, "unit": f.unit,
            "target": f.target.map(|(op, t)| format!("{op} {t}")),
            "met": f.target.map(|(op, t)| if op == "<=" { f.value <= t } else { f.value >= t }),
        })).collect::<Vec<_>>(),
    });
    let dir = target_dir().join("bench");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("bench-{}.json", &commit[..commit.len().min(12)]));
    std::fs::write(&path, serde_json::to_string_pretty(&doc)?)?;
    println!("\nwritten: {}", path.display());
    Ok(())
}
