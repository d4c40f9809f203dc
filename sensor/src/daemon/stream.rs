//! The daemon's event loop, on a thread of its own (the daemon's main thread; tokio serves the
//! network): drain the ring buffer adaptively (every [`BUSY_PAUSE`] while events come, so a
//! drain carries a batch; when quiet, on the kernel's wakeup or the `--drain-interval-ms`
//! timer), and on the slow tick reload the policy if its file changed, refresh exemptions,
//! report kernel counters and sync the journal; until SIGINT or SIGTERM. Also the retirement
//! of earlier pinned generations.

use std::{
    io,
    os::fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use aya::maps::{MapData, RingBuf};
use tokio::signal::unix::Signal;

use super::{RunError, SLOW_TICK};
use crate::{
    hardening::watch::PostureWatch,
    kernel::{self, Loaded, pins::PinDir},
    pipeline::{DRAIN_MAX, Pipeline},
    policy::reload::Reloader,
};

/// While events come, the pause between drains: a drain then carries a batch (one journal
/// write, one publish) and an event waits at most this long (plus the drain) for its turn.
pub const BUSY_PAUSE: Duration = Duration::from_micros(250);
/// Drains stay at [`BUSY_PAUSE`] for this long after the last event.
const BUSY_WINDOW: Duration = Duration::from_millis(10);

pub struct Signals {
    pub int: Signal,
    pub term: Signal,
    /// Reload the policy file.
    pub hup: Signal,
}

/// What the signal task tells the event loop, and the eventfd that wakes it.
pub struct Control {
    stop: AtomicBool,
    hup: AtomicBool,
    wake: OwnedFd,
}

impl Control {
    pub fn new() -> io::Result<Arc<Self>> {
        // SAFETY: plain syscall; the fd is owned below.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Arc::new(Self {
            stop: AtomicBool::new(false),
            hup: AtomicBool::new(false),
            // SAFETY: a fresh fd we own.
            wake: unsafe { OwnedFd::from_raw_fd(fd) },
        }))
    }

    fn wake(&self) {
        let one = 1u64;
        // SAFETY: writes 8 bytes from a valid u64 to our eventfd.
        let _ = unsafe { libc::write(self.wake.as_raw_fd(), (&raw const one).cast(), 8) };
    }

    fn clear(&self) {
        let mut v = 0u64;
        // SAFETY: reads 8 bytes into a valid u64 from our (non-blocking) eventfd.
        let _ = unsafe { libc::read(self.wake.as_raw_fd(), (&raw mut v).cast(), 8) };
    }

    /// Ask the event loop to stop (also used at shutdown by others).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.wake();
    }

    /// The signal task: SIGHUP asks for a reload, SIGINT and SIGTERM for the stop.
    pub async fn watch(self: Arc<Self>, mut signals: Signals) {
        loop {
            tokio::select! {
                _ = signals.hup.recv() => {
                    self.hup.store(true, Ordering::Release);
                    self.wake();
                }
                _ = signals.int.recv() => break,
                _ = signals.term.recv() => break,
            }
        }
        self.stop();
    }
}

/// Wait until `ring` or `wake` is readable, or `timeout` passed.
fn wait(ring: RawFd, wake: RawFd, timeout: Duration) {
    let mut fds = [
        libc::pollfd {
            fd: ring,
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: wake,
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    let ms = i32::try_from(timeout.as_micros().div_ceil(1000)).unwrap_or(i32::MAX);
    // SAFETY: two valid pollfds.
    let _ = unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) };
}

/// What the event loop checks on its slow tick besides the ring buffer.
pub struct Watches {
    /// Policy file and resources.
    pub reloader: Reloader,
    /// Node and pod posture records.
    pub posture: PostureWatch,
}

/// Drain the ring buffer until SIGINT/SIGTERM (blocking: runs on the daemon's main thread,
/// inside the runtime's context for the journal's background syncs).
pub fn stream(
    mut ring: RingBuf<MapData>,
    control: &Control,
    drain_interval: Duration,
    pipeline: &mut Pipeline,
    loaded: &mut Loaded,
    watches: Watches,
) -> Result<(), RunError> {
    let Watches {
        mut reloader,
        mut posture,
    } = watches;
    let ring_fd = ring.as_fd().as_raw_fd();
    let reload =
        |why: &str, reloader: &mut Reloader, pipeline: &mut Pipeline, loaded: &mut Loaded| {
            if let Some(event) = reloader.reload(loaded, why) {
                pipeline.report(event);
            }
            reloader.refresh_members(&mut pipeline.enricher, loaded);
        };
    // The first slow tick at once (exemptions, counters), as before the first drain timer.
    let mut next_slow = Instant::now();
    let mut last_event: Option<Instant> = None;
    loop {
        let n = pipeline.drain(&mut ring);
        let now = Instant::now();
        if n > 0 {
            last_event = Some(now);
        }
        if control.stop.load(Ordering::Acquire) {
            break;
        }
        if control.hup.swap(false, Ordering::AcqRel) {
            reload("SIGHUP", &mut reloader, pipeline, loaded);
        }
        if now >= next_slow {
            for event in reloader.apply_pending(loaded) {
                pipeline.report(event);
            }
            if reloader.file_changed() {
                reload("file changed", &mut reloader, pipeline, loaded);
            } else {
                reloader.refresh_members(&mut pipeline.enricher, loaded);
            }
            let changes = pipeline.enricher.posture_changes();
            for event in posture
                .node_changed(now)
                .into_iter()
                .chain(posture.pod_events(changes))
            {
                pipeline.report(event);
            }
            pipeline.kernel_counters(&loaded.kernel_counters()?);
            pipeline.sync_in_background();
            next_slow = now + SLOW_TICK;
        }
        if n >= DRAIN_MAX {
            continue;
        }
        let until_slow = next_slow.saturating_duration_since(now);
        if last_event.is_some_and(|t| now.duration_since(t) < BUSY_WINDOW) {
            std::thread::sleep(BUSY_PAUSE.min(until_slow));
        } else {
            wait(
                ring_fd,
                control.wake.as_raw_fd(),
                drain_interval.min(until_slow),
            );
            control.clear();
        }
    }
    pipeline.drain(&mut ring);
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
