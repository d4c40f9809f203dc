//! `sensor run`: validate, load, attach, stream events as JSON lines until SIGINT/SIGTERM.

use std::{
    io::{self, BufWriter},
    path::Path,
    process::ExitCode,
    time::Duration,
};

use aya::maps::{MapData, RingBuf};
use sensor_common::{Action, EventKind};
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{Signal, SignalKind, signal},
};

use crate::{
    cli::{EXIT_FAILURE, EXIT_USAGE, Mode, RunArgs},
    counters::Counters,
    destinations::{Destination, metadata_endpoints},
    event::{self, Body},
    output::{Clock, to_json},
    programs::{self, ProgramsError},
    scope::{ScopeError, ScopeRoot},
    tracefs::{self, TracefsError},
};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Scope(#[from] ScopeError),
    #[error(transparent)]
    Tracefs(#[from] TracefsError),
    #[error(transparent)]
    Programs(#[from] ProgramsError),
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: io::Error,
    },
}

impl RunError {
    fn exit_code(&self) -> u8 {
        match self {
            Self::Scope(_) => EXIT_USAGE,
            _ => EXIT_FAILURE,
        }
    }
}

/// Entry point for `sensor run`; errors become one line on stderr and an exit code.
pub fn main(args: RunArgs) -> ExitCode {
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("sensor: error: {}", error_chain(&err));
            ExitCode::from(err.exit_code())
        }
    }
}

/// The error and its sources on one line, skipping sources its message already contains.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut line = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = s.source();
    }
    line
}

fn io_err(what: &'static str) -> impl FnOnce(io::Error) -> RunError {
    move |source| RunError::Io { what, source }
}

fn run(args: &RunArgs) -> Result<(), RunError> {
    // Validate all input before touching the kernel: a bad flag attaches nothing.
    let scopes = args
        .scope_cgroups
        .iter()
        .map(|p| ScopeRoot::open(p))
        .collect::<Result<Vec<_>, _>>()?;
    // Signal handlers before anything is attached: a SIGTERM right after "ready" must detach
    // cleanly, not kill the process with the default action.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(io_err("starting the runtime"))?;
    let signals = {
        let _ctx = runtime.enter();
        Signals {
            int: signal(SignalKind::interrupt()).map_err(io_err("installing SIGINT handler"))?,
            term: signal(SignalKind::terminate()).map_err(io_err("installing SIGTERM handler"))?,
        }
    };
    let tracefs = tracefs::tracefs_root()?;
    let tracepoints = tracefs::chmod_tracepoints(&tracefs)?;
    let destinations = metadata_endpoints();
    let action = match args.mode {
        Mode::Enforce => Action::Enforce,
        Mode::Audit => Action::Audit,
    };
    let mut loaded = programs::load(&programs::Config {
        scopes: &scopes,
        destinations: &destinations,
        action,
        wakeup_bytes: args.wakeup_bytes,
        tracepoints: &tracepoints,
    })?;
    for a in &loaded.attachments {
        tracing::info!(program = a.program, target = %a.target, "attached");
    }
    let events = loaded.take_events()?;
    tracing::info!(
        mode = action.as_str(),
        scopes = scopes.len(),
        destinations = destinations.len(),
        programs = loaded.attachments.len(),
        "sensor ready"
    );

    let mut counters = Counters::default();
    let result = runtime.block_on(stream(events, signals, args, &destinations, &mut counters));

    let kernel = loaded.kernel_counters()?;
    // Detach everything before reporting that we stopped.
    drop(loaded);
    eprintln!("{}", counters.summary(&kernel));
    tracing::info!("detached; sensor stopped");
    result
}

/// Drain the ring buffer on kernel wakeups and on a timer until SIGINT/SIGTERM.
struct Signals {
    int: Signal,
    term: Signal,
}

async fn stream(
    events: RingBuf<MapData>,
    mut signals: Signals,
    args: &RunArgs,
    rules: &[Destination],
    counters: &mut Counters,
) -> Result<(), RunError> {
    // SAFETY: the ring buffer owns its map fd, which stays open and unchanged for as long as
    // the `AsyncFd` owns the ring buffer.
    let mut ring = unsafe { AsyncFd::register(events) }.map_err(|e| RunError::Io {
        what: "polling the event ring buffer",
        source: e.into(),
    })?;
    let mut tick = tokio::time::interval(Duration::from_millis(args.drain_interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut out = BufWriter::with_capacity(1 << 16, io::stdout());
    loop {
        tokio::select! {
            ready = ring.readable_mut() => {
                let mut guard = ready.map_err(io_err("polling the event ring buffer"))?;
                drain(guard.get_inner_mut(), &mut out, rules, counters)?;
                guard.clear_ready();
            }
            _ = tick.tick() => drain(ring.get_mut(), &mut out, rules, counters)?,
            _ = signals.int.recv() => break,
            _ = signals.term.recv() => break,
        }
    }
    drain(ring.get_mut(), &mut out, rules, counters)
}

fn drain(
    ring: &mut RingBuf<MapData>,
    out: &mut impl io::Write,
    rules: &[Destination],
    counters: &mut Counters,
) -> Result<(), RunError> {
    let clock = Clock::now();
    let mut wrote = false;
    while let Some(item) = ring.next() {
        let mut event = match event::decode(&item) {
            Ok(event) => event,
            Err(err) => {
                counters.decode_errors += 1;
                tracing::warn!(error = %err, "dropping undecodable event record");
                continue;
            }
        };
        drop(item);
        if let Body::Chmod(chmod) = &mut event.body {
            chmod.name = event::resolve_name(Path::new("/proc"), event.pid, chmod);
            if chmod.name.is_none() {
                counters.name_unresolved += 1;
            }
        }
        debug_assert!(matches!(
            event.kind(),
            EventKind::Connect | EventKind::Chmod
        ));
        counters.record(&event);
        writeln!(out, "{}", to_json(&event, &clock, rules))
            .map_err(io_err("writing events to stdout"))?;
        wrote = true;
    }
    if wrote {
        out.flush().map_err(io_err("writing events to stdout"))?;
    }
    Ok(())
}
