//! Syscall overhead per kernel tier, against the kernel alone and against the floor (the same
//! hooks with empty programs, `sensor floor`): getpid system-wide, chmod and open outside the
//! scope, chmod in scope (one event per call), a loopback TCP connect in scope.
//!
//! Every configuration runs in each of [`ROUNDS`] interleaved rounds (the machine's drift
//! spreads over all of them); medians are reported. Configurations: the kernel alone; the
//! kill tier's tracepoints with empty programs (`floor_tracepoints`); the alternative design
//! of one `tp_btf` sys_enter/sys_exit dispatcher (`floor_raw_syscalls`); and the sensor (audit
//! mode, scoped to the bench cgroup) on each tier this kernel runs: `kill` always, `override`
//! and `lsm` where they load (on this project's CI host they do not; the VM lane prints
//! emulated ratios for them).

use std::{
    io::{BufRead as _, BufReader},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

use super::{Bins, Daemon, Figure, ROUNDS, Scratch, leak, load, median};

/// A configuration the cases run under.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Config {
    Kernel,
    Floor(&'static str),
    Sensor(&'static str),
}

impl Config {
    fn name(self) -> &'static str {
        match self {
            Self::Kernel => "kernel",
            Self::Floor("tracepoints") => "floor_tracepoints",
            Self::Floor(_) => "floor_raw_syscalls",
            Self::Sensor(tier) => tier,
        }
    }
}

/// What a configuration keeps running while the cases run.
enum Running {
    Nothing,
    Floor(Child),
    Sensor(Daemon),
}

impl Running {
    fn stop(self) -> Result<()> {
        match self {
            Self::Nothing => Ok(()),
            Self::Floor(mut child) => {
                let _ = Command::new("kill")
                    .args(["-INT", &child.id().to_string()])
                    .status();
                let st = child.wait()?;
                if !st.success() {
                    bail!("sensor floor ended with {st}");
                }
                Ok(())
            }
            Self::Sensor(d) => d.stop().map(|_| ()),
        }
    }
}

fn start(bins: &Bins, scratch: &Scratch, config: Config) -> Result<Running> {
    match config {
        Config::Kernel => Ok(Running::Nothing),
        Config::Floor(which) => {
            let mut child = Command::new(&bins.sensor)
                .args(["floor", which])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .context("starting sensor floor")?;
            let err = child.stderr.take().context("stderr")?;
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
            let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
            if !line.starts_with("floor ready") {
                let _ = child.kill();
                let _ = child.wait();
                bail!("sensor floor {which}: {line}");
            }
            Ok(Running::Floor(child))
        }
        Config::Sensor(tier) => {
            Daemon::start(bins, scratch, &["--tier", tier]).map(Running::Sensor)
        }
    }
}

/// One measured case: name, whether it runs in the bench cgroup, the generator's arguments.
struct Case<'a> {
    name: &'static str,
    in_scope: bool,
    args: Vec<&'a str>,
}

/// The tier figures; `startup` gets the kill tier's start-up times (process start to ready).
pub(super) fn figures(
    bins: &Bins,
    scratch: &Scratch,
    file: &str,
    startup: &mut Vec<f64>,
) -> Result<Vec<Figure>> {
    let cases = [
        Case {
            name: "getpid_system_wide",
            in_scope: false,
            args: vec!["getpid", "2000000"],
        },
        Case {
            name: "chmod_out_of_scope",
            in_scope: false,
            args: vec!["chmod", "200000", file],
        },
        Case {
            name: "open_out_of_scope",
            in_scope: false,
            args: vec!["open", "200000", file],
        },
        Case {
            name: "chmod_in_scope_event_per_call",
            in_scope: true,
            args: vec!["chmod", "200000", file],
        },
        Case {
            name: "tcp_connect_loopback_in_scope",
            in_scope: true,
            args: vec!["connect", "20000"],
        },
    ];
    let mut configs = vec![
        Config::Kernel,
        Config::Floor("tracepoints"),
        Config::Floor("raw-syscalls"),
        Config::Sensor("kill"),
    ];
    // The better tiers, where this kernel runs them.
    for tier in ["override", "lsm"] {
        match Daemon::start(bins, scratch, &["--tier", tier]) {
            Ok(d) => {
                d.stop()?;
                configs.push(Config::Sensor(tier));
            }
            Err(e) => {
                let why = e.to_string();
                let why = why
                    .lines()
                    .rev()
                    .find(|l| l.contains("error"))
                    .unwrap_or("refused");
                eprintln!("bench:   tier {tier} not available here: {why}");
            }
        }
    }
    eprintln!(
        "bench: syscall overhead per tier ({ROUNDS} rounds: {})",
        configs
            .iter()
            .map(|c| c.name())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut ns = vec![vec![Vec::new(); cases.len()]; configs.len()];
    for _ in 0..ROUNDS {
        for (c, config) in configs.iter().enumerate() {
            let running = start(bins, scratch, *config)?;
            if let Running::Sensor(d) = &running
                && *config == Config::Sensor("kill")
            {
                startup.push(d.ready_after.as_secs_f64());
            }
            for (i, case) in cases.iter().enumerate() {
                let cgroup = case.in_scope.then_some(scratch.cgroup.as_path());
                ns[c][i].push(load(bins, cgroup, &case.args)?);
            }
            running.stop()?;
        }
    }
    let medians: Vec<Vec<f64>> = ns
        .iter_mut()
        .map(|per_case| per_case.iter_mut().map(|v| median(v)).collect())
        .collect();
    let mut figures = Vec::new();
    let floor = configs
        .iter()
        .position(|c| *c == Config::Floor("tracepoints"))
        .expect("listed");
    for (i, case) in cases.iter().enumerate() {
        let base = medians[0][i];
        figures.push(ns_figure(case.name, "kernel", base));
        for (c, config) in configs.iter().enumerate().skip(1) {
            let v = medians[c][i];
            figures.push(ns_figure(case.name, config.name(), v));
            figures.push(Figure {
                name: leak(format!("{}_{}_ratio", case.name, config.name())),
                value: v / base,
                unit: "x",
                target: target(case, *config),
            });
        }
        // The kill tier against its floor: what the programs add to the hooks' own cost.
        if !case.in_scope {
            let kill = configs
                .iter()
                .position(|c| *c == Config::Sensor("kill"))
                .expect("listed");
            figures.push(Figure {
                name: leak(format!("{}_kill_vs_floor", case.name)),
                value: medians[kill][i] / medians[floor][i],
                unit: "x",
                target: Some(("<=", 1.10)),
            });
        }
    }
    Ok(figures)
}

fn ns_figure(case: &str, config: &str, value: f64) -> Figure {
    Figure {
        name: leak(format!("{case}_{config}_ns")),
        value,
        unit: "ns/op",
        target: None,
    }
}

/// The targets: the tiers with trampolines 1.02x out of scope and 1.20x for an
/// in-scope chmod with an event; the kill tier 1.30x for that chmod (its out-of-scope target is
/// relative to the floor, `_kill_vs_floor`).
fn target(case: &Case<'_>, config: Config) -> Option<(&'static str, f64)> {
    match (config, case.in_scope, case.name) {
        (Config::Sensor("override" | "lsm"), false, _) => Some(("<=", 1.02)),
        (Config::Sensor("override" | "lsm"), true, "chmod_in_scope_event_per_call") => {
            Some(("<=", 1.20))
        }
        (Config::Sensor("kill"), true, "chmod_in_scope_event_per_call") => Some(("<=", 1.30)),
        _ => None,
    }
}

/// Kill tier: how long a killed set-id chmod's bits stay, from the caller's end (its exit seen
/// by `waitpid`) to the mode without them (polled every 50 µs), while another process of the
/// scope floods the daemon with 50,000 chmod events a second; the sensor enforces the
/// built-in policy (`--mode enforce`).
pub(super) fn revert_figures(
    bins: &Bins,
    scratch: &Scratch,
    flood_file: &str,
) -> Result<Vec<Figure>> {
    use std::os::unix::fs::PermissionsExt as _;
    const SAMPLES: usize = 200;
    eprintln!("bench: set-id revert during a 50k/s flood ({SAMPLES} kills)");
    let daemon = Daemon::start_mode(bins, scratch, "enforce", &["--tier", "kill"])?;
    let cg = scratch.cgroup.clone();
    // A container's main process: the daemon reaches the files through it.
    let mut main = Command::new(&bins.generator)
        .arg("--cgroup")
        .arg(&cg)
        .args(["paced", "1", "1000", flood_file])
        .stdout(Stdio::null())
        .spawn()?;
    let mut flood = Command::new(&bins.generator)
        .arg("--cgroup")
        .arg(&cg)
        .args(["paced", "50000", "10000000", flood_file])
        .stdout(Stdio::null())
        .spawn()?;
    std::thread::sleep(Duration::from_secs(1));
    let mut took = Vec::with_capacity(SAMPLES);
    let mut not_reverted = 0;
    let target = scratch.dir.join("revert-target");
    for _ in 0..SAMPLES {
        std::fs::write(&target, b"x")?;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755))?;
        let status = Command::new(&bins.generator)
            .arg("--cgroup")
            .arg(&cg)
            .args(["--setid", "chmod", "1"])
            .arg(&target)
            .stdout(Stdio::null())
            .status()?;
        let ended = std::time::Instant::now();
        if status.success() {
            bail!("the set-id chmod was not killed ({status})");
        }
        let deadline = ended + Duration::from_secs(2);
        loop {
            let mode = std::fs::metadata(&target)?.permissions().mode() & 0o7777;
            if mode & 0o6000 == 0 {
                took.push(ended.elapsed().as_secs_f64() * 1e3);
                break;
            }
            if std::time::Instant::now() > deadline {
                not_reverted += 1;
                break;
            }
            std::thread::sleep(Duration::from_micros(50));
        }
    }
    let flood_alive = matches!(flood.try_wait(), Ok(None));
    let _ = flood.kill();
    let _ = flood.wait();
    let _ = main.kill();
    let _ = main.wait();
    let counters = daemon.stop()?;
    if !flood_alive {
        bail!("the flood ended before the kills were measured");
    }
    took.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        took.get(((took.len().max(1) - 1) as f64 * p).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    Ok(vec![
        Figure {
            name: "revert_during_flood_p50_ms",
            value: pct(0.5),
            unit: "ms",
            target: None,
        },
        Figure {
            name: "revert_during_flood_p99_ms",
            value: pct(0.99),
            unit: "ms",
            target: Some(("<=", 5.0)),
        },
        Figure {
            name: "revert_during_flood_max_ms",
            value: took.last().copied().unwrap_or(f64::NAN),
            unit: "ms",
            target: None,
        },
        Figure {
            name: "revert_during_flood_not_reverted",
            value: f64::from(not_reverted),
            unit: "calls",
            target: Some(("<=", 0.0)),
        },
        Figure {
            name: "revert_during_flood_ring_full",
            value: counters["counters"]["kernel"]["ringbuf_full_revert"]
                .as_f64()
                .unwrap_or(f64::NAN),
            unit: "copies",
            target: Some(("<=", 0.0)),
        },
    ])
}
