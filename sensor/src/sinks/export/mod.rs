//! SIEM export: JSON lines, OCSF objects or CEF lines on stdout, in size-rotated files, to a
//! syslog receiver (RFC 5424 over TCP or TLS) or an OTLP logs receiver, read from the journal
//! with a persisted cursor per destination (`--export`, docs/export.md).
//!
//! Each exporter is a thread of its own that follows the journal: the pipeline never waits for
//! it, nor do the other destinations. After every batch is delivered (a file: written and
//! synced; syslog: acknowledged by the receiver's TCP; OTLP: an OK Export call) it writes its
//! state (cursor, open fold windows, the
//! active file's size): after a restart, even after `kill -9`, it continues after the last line
//! it wrote, with no gap and no duplicate. A destination that is slow or failing falls behind
//! in the journal; what retention deletes before the exporter got to it becomes one `lost`
//! record (stage `journal`) with the count. Flood control (`fold`) folds identical events
//! within a window into one record with a count, and never holds back the first of a window.

pub mod cef;
mod config;
mod facts;
pub mod fold;
pub mod ocsf;
mod otlp;
mod sink;
mod state;
mod syslog;
#[cfg(test)]
mod tests;
mod tls;

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use sensor_proto::v1 as pb;

use crate::{
    event::time::now_unix_ns,
    sinks::journal::{
        Journal,
        follow::{Followed, Follower},
    },
};
pub use config::{Destination, ExportConfig, ExportFlags, Format, Remote, configs};
use fold::Folder;
pub use sink::FileMark;
use sink::{Batch, RotatingFile, Sink};
use state::State;

/// At the latest, how often an exporter that has caught up looks for new journal records (a
/// journal flush wakes it at once).
const POLL: Duration = Duration::from_millis(50);
/// Lines written (and the cursor committed) at least this often during a long catch-up.
const BATCH_RECORDS: usize = 1024;
const BATCH_BYTES: usize = 256 * 1024;
/// Retry delay after a failed write; network destinations double it after every failure in a
/// row, up to [`RETRY_MAX`].
const RETRY: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// At most one warning per exporter this often.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Default rotation size of an export file.
pub const DEFAULT_MAX_BYTES: u64 = 100 << 20;
/// Default number of export files (the active one and rotated ones).
pub const DEFAULT_MAX_FILES: u32 = 5;
/// Default flood-control window.
pub const DEFAULT_FOLD_WINDOW: &str = "10s";

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("export {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("export state {path}: {msg}")]
    State { path: PathBuf, msg: String },
}

/// One exporter's counters.
#[derive(Debug, Default)]
pub struct ExportStats {
    /// The destination, without options (the `destination` label of the metrics).
    pub destination: String,
    /// `json`, `ocsf` or `cef`.
    pub format: &'static str,
    /// The last failed delivery's error while deliveries fail (empty once one succeeded).
    pub error: Mutex<String>,
    /// Records delivered.
    pub records: AtomicU64,
    /// Records delivered by a retry (their batch had failed before).
    pub retried: AtomicU64,
    /// Records the receiver refused for good (OTLP partial success).
    pub rejected: AtomicU64,
    /// Events folded into a repeat record instead of a line of their own.
    pub folded: AtomicU64,
    /// Events unfolded because the fold table was full.
    pub fold_table_full: AtomicU64,
    /// Events the exporter never saw (deleted by journal retention first, or unreadable).
    pub lost: AtomicU64,
    /// Failed deliveries (writes, connections, calls; each retried).
    pub write_errors: AtomicU64,
    /// Uncommitted bytes cut from the file at start (written before a crash, written again).
    pub rolled_back_bytes: AtomicU64,
    /// Journal records not written yet (as of the exporter's last look at the journal).
    pub lag: AtomicU64,
}

/// The running exporters of `sensor run`.
pub struct Exporters {
    stop: Arc<AtomicBool>,
    done: mpsc::Receiver<()>,
    threads: usize,
    stats: ExportCounters,
}

/// The counters of every exporter, for the status board and the stop line.
#[derive(Debug, Clone, Default)]
pub struct ExportCounters {
    /// The `--export` destinations.
    exports: Vec<Arc<ExportStats>>,
    /// `--stdout-events`.
    stdout_events: Option<Arc<ExportStats>>,
}

impl ExportCounters {
    /// Counters over all `--export` destinations (`lag`: the largest), by status-API name.
    pub fn named(&self) -> [(&'static str, u64); 9] {
        let sum = |f: fn(&ExportStats) -> &AtomicU64| {
            self.exports
                .iter()
                .map(|s| f(s).load(Ordering::Relaxed))
                .sum::<u64>()
        };
        let lag = self
            .exports
            .iter()
            .map(|s| s.lag.load(Ordering::Relaxed))
            .max()
            .unwrap_or(0);
        [
            ("export_records", sum(|s| &s.records)),
            ("export_folded", sum(|s| &s.folded)),
            ("export_fold_table_full", sum(|s| &s.fold_table_full)),
            ("export_lost", sum(|s| &s.lost)),
            ("export_write_errors", sum(|s| &s.write_errors)),
            ("export_retried", sum(|s| &s.retried)),
            ("export_rejected", sum(|s| &s.rejected)),
            ("export_rolled_back_bytes", sum(|s| &s.rolled_back_bytes)),
            ("export_lag", lag),
        ]
    }

    /// Every `--export` destination's own counters.
    pub fn per_destination(&self) -> &[Arc<ExportStats>] {
        &self.exports
    }

    /// Every `--export` destination, for the status API.
    pub fn states(&self) -> Vec<pb::ExportState> {
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        self.exports
            .iter()
            .map(|s| pb::ExportState {
                destination: s.destination.clone(),
                format: s.format.to_owned(),
                delivered: n(&s.records),
                failures: n(&s.write_errors),
                retried: n(&s.retried),
                rejected: n(&s.rejected),
                lost: n(&s.lost),
                lag: n(&s.lag),
                error: s
                    .error
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone(),
            })
            .collect()
    }

    /// Failed writes of `--stdout-events` (retried).
    pub fn stdout_events_write_errors(&self) -> u64 {
        self.stdout_events
            .as_ref()
            .map_or(0, |s| s.write_errors.load(Ordering::Relaxed))
    }
}

impl Exporters {
    /// Open every destination and its state (errors here are start-up errors), then start one
    /// thread per exporter.
    pub fn start(
        configs: Vec<ExportConfig>,
        journal: &Arc<Mutex<Journal>>,
    ) -> Result<Self, ExportError> {
        let stop = Arc::new(AtomicBool::new(false));
        let (done_tx, done) = mpsc::channel();
        let mut exporters = Vec::new();
        for cfg in configs {
            exporters.push(Exporter::open(cfg, Arc::clone(journal))?);
        }
        let mut stats = ExportCounters::default();
        for e in &exporters {
            if e.cfg.persist {
                stats.exports.push(Arc::clone(&e.stats));
            } else {
                stats.stdout_events = Some(Arc::clone(&e.stats));
            }
        }
        let threads = exporters.len();
        for exporter in exporters {
            let (stop, done_tx) = (Arc::clone(&stop), done_tx.clone());
            thread::Builder::new()
                .name("sensor-export".into())
                .spawn(move || {
                    exporter.run(&stop);
                    let _ = done_tx.send(());
                })
                .map_err(|source| ExportError::Io {
                    what: "thread",
                    path: PathBuf::new(),
                    source,
                })?;
        }
        Ok(Self {
            stop,
            done,
            threads,
            stats,
        })
    }

    pub fn counters(&self) -> ExportCounters {
        self.stats.clone()
    }
    /// Let every exporter write what the journal holds, close its fold windows and commit;
    /// wait at most `timeout` (a blocked stdout must not hold up shutdown: its cursor stays
    /// where its last write ended).
    pub fn stop(&self, timeout: Duration) {
        self.stop.store(true, Ordering::Release);
        let deadline = Instant::now() + timeout;
        for _ in 0..self.threads {
            let left = deadline.saturating_duration_since(Instant::now());
            if self.done.recv_timeout(left).is_err() {
                tracing::warn!("an exporter did not finish within {timeout:?}");
                return;
            }
        }
    }
}

struct Exporter {
    cfg: ExportConfig,
    journal: Arc<Mutex<Journal>>,
    sink: Sink,
    /// Where the cursor is kept (`None`: not kept).
    state_path: Option<PathBuf>,
    /// The next journal record to export: everything before it is rendered.
    cursor: u64,
    /// The journal from `cursor` on (it may read ahead of it within a batch).
    follower: Follower,
    /// The cursor of the last saved state: everything before it is written.
    committed: u64,
    folder: Folder,
    stats: Arc<ExportStats>,
    /// Events to render.
    out: Vec<pb::Event>,
    /// Rendered records not delivered yet (kept across a failed delivery).
    batch: Batch,
    /// Journal records consumed since the last commit.
    uncommitted: usize,
    /// Failed deliveries in a row.
    failures: u32,
    /// The syslog facility (syslog destinations).
    facility: u8,
    last_warn: Option<Instant>,
}

fn lock(journal: &Mutex<Journal>) -> std::sync::MutexGuard<'_, Journal> {
    journal
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Exporter {
    fn open(cfg: ExportConfig, journal: Arc<Mutex<Journal>>) -> Result<Self, ExportError> {
        let io = |what, path: &Path| {
            let path = path.to_owned();
            move |source| ExportError::Io { what, path, source }
        };
        if cfg.persist {
            std::fs::create_dir_all(&cfg.state_dir)
                .map_err(io("state directory", &cfg.state_dir))?;
        }
        let state_path = cfg
            .persist
            .then(|| cfg.state_dir.join(cfg.destination.state_name()));
        let mut state = match &state_path {
            Some(path) => State::load(path).map_err(|msg| ExportError::State {
                path: path.clone(),
                msg,
            })?,
            None => None,
        };
        let mut stats = ExportStats {
            destination: cfg.destination.label(),
            format: cfg.format.name(),
            ..ExportStats::default()
        };
        let remote_error = |msg: String| ExportError::State {
            path: PathBuf::from(cfg.destination.label()),
            msg,
        };
        let mut facility = 0;
        let sink = match &cfg.destination {
            Destination::Stdout => Sink::Stdout(std::io::stdout()),
            Destination::Syslog(remote) => {
                facility = remote.facility;
                Sink::Syslog(
                    syslog::SyslogClient::new(remote, cfg.tls.as_ref()).map_err(remote_error)?,
                )
            }
            Destination::Otlp(remote) => Sink::Otlp(Box::new(
                otlp::OtlpClient::new(remote, cfg.tls.as_ref(), &cfg.origin)
                    .map_err(remote_error)?,
            )),
            Destination::File(path) => {
                let committed = state.as_ref().and_then(|s| s.file);
                let (file, cut) = RotatingFile::open(path, cfg.max_bytes, cfg.max_files, committed)
                    .map_err(io("file", path))?;
                if cut > 0 {
                    tracing::info!(file = %path.display(), bytes = cut, "export: cut lines written after the last committed cursor (they are written again)");
                }
                *stats.rolled_back_bytes.get_mut() = cut;
                Sink::File(file)
            }
        };
        let window_ns = i64::try_from(cfg.fold_window.as_nanos()).unwrap_or(i64::MAX);
        let mut folder = Folder::new(window_ns);
        let next_seq = lock(&journal).next_seq();
        let cursor = match &mut state {
            // A journal that was removed starts again at 1: a cursor beyond its end would
            // skip every new event.
            Some(s) if s.cursor > next_seq => {
                tracing::warn!(
                    cursor = s.cursor,
                    next_seq,
                    "export: cursor beyond the end of the journal (journal removed?): continuing with new events"
                );
                next_seq
            }
            Some(s) => {
                let unreadable = s.restore_windows(&mut folder);
                *stats.lost.get_mut() += unreadable;
                s.cursor
            }
            // A new exporter starts with what comes next, not with the whole journal.
            None => next_seq,
        };
        tracing::info!(destination = %cfg.destination.label(), format = ?cfg.format, cursor, "exporter ready");
        Ok(Self {
            follower: Follower::from_seq(cursor, &cfg.origin),
            cursor,
            cfg,
            journal,
            sink,
            state_path,
            committed: cursor,
            folder,
            stats: Arc::new(stats),
            out: Vec::new(),
            batch: Batch::default(),
            uncommitted: 0,
            failures: 0,
            facility,
            last_warn: None,
        })
    }

    fn run(mut self, stop: &AtomicBool) {
        let flushes = lock(&self.journal).flushes();
        let mut seen = 0;
        loop {
            let stopping = stop.load(Ordering::Acquire);
            let caught_up = self.pass();
            if caught_up {
                if stopping {
                    self.folder.close_all(&mut self.out);
                } else {
                    self.folder.close_until(now_unix_ns(), &mut self.out);
                }
                self.render();
                if !self.commit() && !stopping {
                    self.pause(stop);
                    continue;
                }
                if stopping {
                    return;
                }
            } else if !self.batch.is_empty() {
                // A delivery failed: retry later, the journal keeps the events meanwhile.
                if stopping {
                    return;
                }
                self.pause(stop);
                continue;
            }
            if !stopping {
                // Woken by the next journal flush (or at the latest after POLL, for the stop
                // flag and fold windows that close by time).
                seen = flushes.wait_after(seen, POLL);
            }
        }
    }

    /// Wait before a retry (backoff for network destinations), or until the daemon stops.
    fn pause(&self, stop: &AtomicBool) {
        let delay = if self.sink.remote() {
            // Jittered (75..125 %), so that the nodes of a fleet do not retry a receiver that
            // comes back all at the same moment.
            let base = RETRY
                .saturating_mul(1 << self.failures.saturating_sub(1).min(5))
                .min(RETRY_MAX);
            let spread = u64::from(now_unix_ns().unsigned_abs() as u32 % 501);
            base.mul_f64(0.75 + spread as f64 / 1000.0)
        } else {
            RETRY
        };
        let until = Instant::now() + delay;
        while Instant::now() < until && !stop.load(Ordering::Acquire) {
            thread::sleep(POLL.min(until.saturating_duration_since(Instant::now())));
        }
    }

    /// Export what the journal holds now. `true` when everything was read and delivered.
    fn pass(&mut self) -> bool {
        let next_seq = lock(&self.journal).next_seq();
        self.stats
            .lag
            .store(next_seq.saturating_sub(self.committed), Ordering::Relaxed);
        if !self.batch.is_empty() && !self.commit() {
            return false;
        }
        // A batch cut short by a failed write: read again after the last rendered record.
        self.follower.reset(self.cursor);
        loop {
            let batch = match self.follower.next_batch(&self.journal, BATCH_RECORDS) {
                Ok(batch) => batch,
                Err(err) => {
                    self.warn(&format!("journal: {err}"));
                    return false;
                }
            };
            if batch.is_empty() {
                return self.commit();
            }
            for item in batch {
                self.cursor = item.next_seq();
                match item {
                    Followed::Event(event) => self.folder.push(event, &mut self.out),
                    Followed::Lost(loss) => {
                        if let Some(pb::event::Body::Lost(l)) = &loss.body {
                            self.stats.lost.fetch_add(l.count, Ordering::Relaxed);
                        }
                        self.out.push(loss);
                    }
                }
                self.uncommitted += 1;
                self.render();
                if (self.uncommitted >= BATCH_RECORDS
                    || self.batch.size >= BATCH_BYTES
                    || self.file_full())
                    && !self.commit()
                {
                    return false;
                }
            }
        }
    }

    fn file_full(&self) -> bool {
        match &self.sink {
            Sink::File(f) => {
                f.mark().size + self.batch.size as u64 >= self.cfg.max_bytes
                    && !self.batch.is_empty()
            }
            _ => false,
        }
    }

    /// Render the events into the batch.
    fn render(&mut self) {
        for event in self.out.drain(..) {
            let payload = self.cfg.format.line(&event);
            self.sink
                .render(&event, payload, self.facility, &mut self.batch);
        }
    }

    /// Deliver the rendered records, then save the state; rotate a full file. `false` when
    /// the delivery failed (the records stay in the batch, the state is not saved).
    fn commit(&mut self) -> bool {
        if self.batch.is_empty() && self.uncommitted == 0 {
            return true;
        }
        let records = self.batch.records;
        let rejected = match self.sink.deliver(&mut self.batch) {
            Ok(rejected) => {
                if rejected > 0 {
                    self.stats.rejected.fetch_add(rejected, Ordering::Relaxed);
                    tracing::warn!(destination = %self.cfg.destination.label(), "export: the receiver refused {rejected} of {records} records for good (partial success; not sent again)");
                }
                rejected
            }
            Err(err) => {
                self.failures = self.failures.saturating_add(1);
                self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
                self.set_error(err.clone());
                self.warn(&err);
                return false;
            }
        };
        if self.failures > 0 {
            self.set_error(String::new());
            self.stats.retried.fetch_add(records, Ordering::Relaxed);
            tracing::info!(destination = %self.cfg.destination.label(), failures = self.failures, "export: delivered again");
            self.failures = 0;
        }
        self.stats
            .records
            .fetch_add(records.saturating_sub(rejected), Ordering::Relaxed);
        self.stats
            .folded
            .store(self.folder.stats.folded, Ordering::Relaxed);
        self.stats
            .fold_table_full
            .store(self.folder.stats.table_full, Ordering::Relaxed);
        if !self.save_state() {
            return true;
        }
        if let Sink::File(f) = &mut self.sink
            && f.full()
        {
            match f.rotate() {
                Ok(()) => {
                    self.save_state();
                }
                Err(err) => self.warn(&format!("rotate: {err}")),
            }
        }
        true
    }

    fn save_state(&mut self) -> bool {
        let cursor = self.cursor;
        let Some(state_path) = &self.state_path else {
            self.uncommitted = 0;
            self.committed = cursor;
            return true;
        };
        let state = State::new(cursor, self.sink.mark(), &self.folder);
        match state.save(state_path) {
            Ok(()) => {
                self.uncommitted = 0;
                self.committed = cursor;
                true
            }
            Err(err) => {
                self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
                let what = format!("state {}: {err}", state_path.display());
                self.warn(&what);
                false
            }
        }
    }

    fn set_error(&self, error: String) {
        *self
            .stats
            .error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = error;
    }

    fn warn(&mut self, what: &str) {
        if self.last_warn.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
            self.last_warn = Some(Instant::now());
            tracing::warn!(destination = %self.cfg.destination.label(), "export: {what} (retrying; further warnings within a minute are not logged)");
        }
    }
}
