//! The daemon's event loop: drain the ring buffer on kernel wakeups and on a timer, and on the
//! slow tick reload the policy if its file changed, refresh exemptions, report kernel counters
//! and sync the journal; until SIGINT or SIGTERM. Also the retirement of earlier pinned
//! generations.

use std::time::Duration;

use aya::maps::{MapData, RingBuf};
use tokio::{io::unix::AsyncFd, signal::unix::Signal};

use super::{RunError, SLOW_TICK, io_err};
use crate::{
    kernel::{self, Loaded, pins::PinDir},
    pipeline::Pipeline,
    policy::reload::Reloader,
};

pub struct Signals {
    pub int: Signal,
    pub term: Signal,
    /// Reload the policy file.
    pub hup: Signal,
}

/// Drain the ring buffer on kernel wakeups and on a timer until SIGINT/SIGTERM.
pub async fn stream(
    events: RingBuf<MapData>,
    mut signals: Signals,
    drain_interval: Duration,
    pipeline: &mut Pipeline,
    loaded: &mut Loaded,
    mut reloader: Reloader,
) -> Result<(), RunError> {
    // SAFETY: the ring buffer owns its map fd, which stays open and unchanged for as long as
    // the `AsyncFd` owns the ring buffer.
    let mut ring = unsafe { AsyncFd::register(events) }.map_err(|e| RunError::Io {
        what: "polling the event ring buffer",
        source: e.into(),
    })?;
    let mut tick = tokio::time::interval(drain_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut slow = tokio::time::interval(SLOW_TICK);
    slow.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let reload =
        |why: &str, reloader: &mut Reloader, pipeline: &mut Pipeline, loaded: &mut Loaded| {
            if let Some(event) = reloader.reload(loaded, why) {
                pipeline.report(event);
            }
            reloader.refresh_exemptions(&mut pipeline.enricher, loaded);
        };
    loop {
        tokio::select! {
            ready = ring.readable_mut() => {
                let mut guard = ready.map_err(io_err("polling the event ring buffer"))?;
                pipeline.drain(guard.get_inner_mut());
                guard.clear_ready();
            }
            _ = tick.tick() => pipeline.drain(ring.get_mut()),
            _ = slow.tick() => {
                pipeline.drain(ring.get_mut());
                if reloader.file_changed() {
                    reload("file changed", &mut reloader, pipeline, loaded);
                } else {
                    reloader.refresh_exemptions(&mut pipeline.enricher, loaded);
                }
                pipeline.kernel_counters(&loaded.kernel_counters()?);
                pipeline.sync_in_background();
            }
            _ = signals.hup.recv() => reload("SIGHUP", &mut reloader, pipeline, loaded),
            _ = signals.int.recv() => break,
            _ = signals.term.recv() => break,
        }
    }
    pipeline.drain(ring.get_mut());
    pipeline.kernel_counters(&loaded.kernel_counters()?);
    Ok(())
}

/// Pinned mode, once this daemon's own programs are attached and pinned: retire the earlier
/// generations (their links detach), keeping the events their ring buffers still hold (the
/// kernel kept deciding and reporting while no daemon ran).
pub fn retire_previous(pin: &PinDir, pipeline: &mut Pipeline) {
    for retired in kernel::retire(pin.previous()) {
        match retired {
            Ok(mut r) => {
                let before = pipeline.counters.total_events();
                if let Some(ring) = &mut r.events {
                    pipeline.drain(ring);
                }
                tracing::info!(
                    generation = %r.dir.display(),
                    links = r.links,
                    events = pipeline.counters.total_events() - before,
                    owner_running = r.owner_running,
                    "retired a previous generation's pinned programs (its daemon, if still running, reads its own events until it exits)"
                );
                if let Err(err) = kernel::pins::remove_generation(&r.dir) {
                    tracing::warn!(generation = %r.dir.display(), error = %err, "removing a retired generation failed");
                }
            }
            Err((dir, err)) => {
                tracing::error!(generation = %dir.display(), error = %err, "could not unpin a previous generation's links: they stay attached");
            }
        }
    }
}
