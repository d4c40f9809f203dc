//! [`Sensor`]: a running `sensor run`, its stdout events and stderr lines collected.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex, mpsc},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{Lines, TempDir, poll, read_lines, sensor_bin, signal_child, wait_exit};

/// Where a sensor keeps its journal and API socket; shared by restarts of "the same" sensor.
pub struct StateDir(TempDir);

impl StateDir {
    pub fn new() -> Self {
        Self(TempDir::new())
    }

    /// The directory (for files the sensor is started with, such as its policy).
    pub fn path(&self) -> &Path {
        &self.0.0
    }

    pub fn socket(&self) -> PathBuf {
        self.0.0.join("run/sensor.sock")
    }

    pub fn journal(&self) -> PathBuf {
        self.0.0.join("journal")
    }
}

impl Default for StateDir {
    fn default() -> Self {
        Self::new()
    }
}

/// How long a [`Sensor`] may take for each thing the harness waits for.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// From the spawn to the "sensor ready" log line.
    pub ready: Duration,
    /// For events ([`Sensor::wait_for`], [`Sensor::wait_event`]).
    pub events: Duration,
    /// For status counters ([`Sensor::wait_counter`], [`Sensor::wait_status`]).
    pub status: Duration,
    /// From a stop signal to the exit.
    pub exit: Duration,
}

impl Timeouts {
    /// On the host (a debug build on the live kernel).
    pub const HOST: Self = Self {
        ready: Duration::from_secs(30),
        events: Duration::from_secs(10),
        status: Duration::from_secs(15),
        exit: Duration::from_secs(10),
    };
}

/// What dropping a [`Sensor`] that still runs does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnDrop {
    /// SIGKILL at once (a crash).
    Kill,
    /// SIGTERM, up to [`Timeouts::exit`] for the exit, then SIGKILL.
    Terminate,
}

/// How a [`Sensor`] is started and waited for.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// `--stdout-events`; without it stdout is left to the arguments (an `--export stdout`,
    /// whose JSON lines [`Sensor::events`] then collects) or to nothing.
    pub stdout_events: bool,
    pub timeouts: Timeouts,
    pub on_drop: OnDrop,
}

impl Options {
    /// The host suite's: events on stdout, [`Timeouts::HOST`], SIGKILL on drop.
    pub const HOST: Self = Self {
        stdout_events: true,
        timeouts: Timeouts::HOST,
        on_drop: OnDrop::Kill,
    };
}

impl Default for Options {
    fn default() -> Self {
        Self::HOST
    }
}

/// A running `sensor run`; on drop, ended as [`Options::on_drop`] says if the test did not
/// stop it.
pub struct Sensor {
    child: Child,
    events: Arc<Mutex<Vec<Value>>>,
    stderr: Lines,
    socket: PathBuf,
    options: Options,
    /// Until the ready wait: when the spawn happened and where "ready" arrives.
    ready: Option<(Instant, mpsc::Receiver<Instant>)>,
    _own_state: Option<StateDir>,
}

impl Sensor {
    /// Start `sensor run ARGS --stdout-events` with a fresh state directory and wait until it
    /// reports ready.
    pub fn start(args: &[&str]) -> Self {
        Self::start_fresh(args, true)
    }

    /// As [`Sensor::start`]; `stdout_events: false` leaves the events to gRPC subscribers only
    /// (load tests: the harness does not parse every event twice).
    pub fn start_fresh(args: &[&str], stdout_events: bool) -> Self {
        let options = Options {
            stdout_events,
            ..Options::HOST
        };
        Self::start_owning(StateDir::new(), args, &options)
    }

    /// Start with the journal and socket of `state` (for restarts).
    pub fn start_in(state: &StateDir, args: &[&str]) -> Self {
        Self::start_in_with(state, args, &Options::HOST)
    }

    /// As [`Sensor::start_in`], without `--stdout-events`: stdout is left to the args (an
    /// `--export stdout`, whose JSON lines [`Sensor::events`] then collects).
    pub fn start_with_stdout(state: &StateDir, args: &[&str]) -> Self {
        let options = Options {
            stdout_events: false,
            ..Options::HOST
        };
        Self::start_in_with(state, args, &options)
    }

    /// Start in `state`, which the sensor keeps (and removes when dropped).
    pub fn start_owning(state: StateDir, args: &[&str], options: &Options) -> Self {
        let mut sensor = Self::spawn(&state, args, options);
        sensor._own_state = Some(state);
        sensor.wait_ready();
        sensor
    }

    /// Start in `state` (the caller keeps it, for a restart) and wait until it reports ready.
    pub fn start_in_with(state: &StateDir, args: &[&str], options: &Options) -> Self {
        let mut sensor = Self::spawn(state, args, options);
        sensor.wait_ready();
        sensor
    }

    fn spawn(state: &StateDir, args: &[&str], options: &Options) -> Self {
        let mut child = Command::new(sensor_bin())
            .arg("run")
            .args(args)
            .args(options.stdout_events.then_some("--stdout-events"))
            .arg("--socket")
            .arg(state.socket())
            .arg("--journal-dir")
            .arg(state.journal())
            .env(
                "SENSOR_LOG",
                std::env::var("SENSOR_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", sensor_bin().display()));
        let events = Arc::new(Mutex::new(Vec::new()));
        let ev = Arc::clone(&events);
        read_lines(
            child.stdout.take().expect("stdout"),
            move |line, complete| {
                // A last line without its newline is what a SIGKILLed daemon was writing.
                if complete {
                    let value: Value = serde_json::from_str(line)
                        .unwrap_or_else(|e| panic!("sensor stdout line is not JSON ({e}): {line}"));
                    ev.lock().unwrap().push(value);
                }
            },
        );
        let (ready_tx, ready_rx) = mpsc::channel();
        let stderr = Lines::collect(child.stderr.take().expect("stderr"), move |line| {
            if line.contains("sensor ready") {
                let _ = ready_tx.send(Instant::now());
            }
        });
        Self {
            child,
            events,
            stderr,
            socket: state.socket(),
            options: *options,
            ready: Some((Instant::now(), ready_rx)),
            _own_state: None,
        }
    }

    /// Wait for the "sensor ready" log line, at most [`Timeouts::ready`]; panics with the
    /// exit status and the log when it does not come.
    fn wait_ready(&mut self) {
        let (started, ready) = self.ready.take().expect("waited for once");
        match ready.recv_timeout(self.options.timeouts.ready) {
            Ok(at) => println!("sensor ready in {:.1?}", at - started),
            Err(_) => {
                let status = self.child.try_wait().ok().flatten();
                panic!(
                    "sensor did not become ready in {:?} (exit: {status:?}); stderr:\n{}",
                    self.options.timeouts.ready,
                    self.stderr_text()
                );
            }
        }
    }

    /// The API socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Run `sensor ARGS --server <this sensor's socket>` (status, policy show, ...).
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(sensor_bin())
            .args(args)
            .arg("--server")
            .arg(&self.socket)
            .output()
            .expect("running sensor")
    }

    /// `sensor status --json` of this sensor.
    pub fn status(&self) -> Value {
        let out = self.cli(&["status", "--json"]);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "status ({}): {e}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    /// One counter from `sensor status` (`kernel_*` for the kernel's).
    pub fn counter(&self, name: &str) -> u64 {
        let v = self.status();
        v["counters"][name]
            .as_u64()
            .unwrap_or_else(|| panic!("no counter {name}: {v}"))
    }

    /// Poll `sensor status` until `pred` holds for it, at most [`Timeouts::status`]; the
    /// status is the daemon's board, refreshed periodically (200 ms), not per event. Panics
    /// with `what`, the last status and the log on timeout.
    pub fn wait_status(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.poll_status(what, pred, Value::to_string)
    }

    /// Wait until every named counter reaches its value; the status that showed it. On
    /// timeout the failure names the last value of each.
    pub fn wait_counters(&self, wanted: &[(&str, u64)]) -> Value {
        let what: Vec<String> = wanted.iter().map(|(n, v)| format!("{n} >= {v}")).collect();
        let reached = |status: &Value| {
            wanted
                .iter()
                .all(|(name, at_least)| status["counters"][name].as_u64() >= Some(*at_least))
        };
        let show = |status: &Value| {
            let have: Vec<String> = wanted
                .iter()
                .map(|(name, _)| match status["counters"].get(name) {
                    Some(v) => format!("{name}={v}"),
                    None => format!("no counter {name}"),
                })
                .collect();
            have.join(", ")
        };
        self.poll_status(&what.join(", "), reached, show)
    }

    fn poll_status(
        &self,
        what: &str,
        pred: impl Fn(&Value) -> bool,
        show: impl Fn(&Value) -> String,
    ) -> Value {
        let timeout = self.options.timeouts.status;
        let mut last = Value::Null;
        poll(timeout, Duration::from_millis(50), || {
            last = self.status();
            pred(&last).then(|| last.clone())
        })
        .unwrap_or_else(|| {
            panic!(
                "waited {timeout:?} for {what}; last status: {}\nstderr:\n{}",
                show(&last),
                self.stderr_text()
            )
        })
    }

    /// Wait until a counter reaches `at_least`.
    pub fn wait_counter(&self, name: &str, at_least: u64) {
        self.wait_counters(&[(name, at_least)]);
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send `signal` (SIGHUP: reload the policy) without waiting.
    pub fn signal(&self, signal: i32) {
        signal_child(&self.child, signal);
    }

    /// SIGKILL (a crash), and wait for it.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.text()
    }

    pub fn events(&self) -> Vec<Value> {
        self.events.lock().unwrap().clone()
    }

    /// Wait for `n` events matching `pred`, at most [`Timeouts::events`]; panics with
    /// everything seen on timeout.
    pub fn wait_for(&self, n: usize, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        self.wait_events(&format!("{n} matching events"), n, pred)
    }

    /// The first event matching `pred` (`what` names it in the failure).
    pub fn wait_event(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.wait_events(what, 1, pred).swap_remove(0)
    }

    fn wait_events(&self, what: &str, n: usize, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        let timeout = self.options.timeouts.events;
        // Each poll looks only at the events that came since the last one: a test that makes
        // events by the hundred thousand must not spend the machine rescanning them.
        let mut found: Vec<Value> = Vec::new();
        let mut scanned = 0;
        let mut have = 0;
        poll(timeout, Duration::from_millis(10), || {
            let events = self.events.lock().unwrap();
            if scanned > events.len() {
                (scanned, found) = (0, Vec::new());
            }
            found.extend(events[scanned..].iter().filter(|e| pred(e)).cloned());
            scanned = events.len();
            have = found.len();
            (found.len() >= n).then(|| found.clone())
        })
        .unwrap_or_else(|| {
            panic!(
                "waited {timeout:?} for {what}, have {have}; all events:\n{}\nstderr:\n{}",
                self.events()
                    .iter()
                    .map(Value::to_string)
                    .collect::<Vec<_>>()
                    .join("\n"),
                self.stderr_text()
            )
        })
    }

    /// SIGINT, wait for exit; returns the status and stderr.
    pub fn stop(self) -> (ExitStatus, String) {
        self.stop_with(libc::SIGINT)
    }

    /// Send `signal` (by pid), wait for exit (at most [`Timeouts::exit`]); returns the status
    /// and stderr. Panics when it does not exit (the drop then ends it).
    pub fn stop_with(mut self, signal: i32) -> (ExitStatus, String) {
        signal_child(&self.child, signal);
        let status = wait_exit(&mut self.child, self.options.timeouts.exit).unwrap_or_else(|| {
            panic!(
                "sensor did not exit after signal {signal}; stderr:\n{}",
                self.stderr_text()
            )
        });
        // Let the reader threads take the last lines.
        thread::sleep(Duration::from_millis(100));
        (status, self.stderr_text())
    }
}

impl Drop for Sensor {
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        if self.options.on_drop == OnDrop::Terminate {
            signal_child(&self.child, libc::SIGTERM);
            if wait_exit(&mut self.child, self.options.timeouts.exit).is_some() {
                return;
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
