//! Flood control: identical events within a window become one record with a count.
//!
//! Events are identical when they share kind, verdict, process (pid and cgroup), rule and
//! target (connect: destination address, port and protocol; chmod: the file and the set-id
//! bits of the requested mode). The first event of a window is written at once, whatever its
//! verdict, so a block is never delayed or hidden; the repeats that follow within the window
//! are counted, and when the window closes one record (the last repeat, with a
//! [`pb::Repeat`]: count, first and last time and sequence number) stands for them. Every
//! window of a flood of blocked connects therefore writes at least one record, and the counts
//! of all records of a flood add up to the number of events.
//!
//! Windows are measured in event time while records flow, and against the wall clock when the
//! exporter has caught up with the journal (so a window closes even if nothing follows).
//! Exec, exit, policy and loss records are never folded.

use std::collections::HashMap;

use sensor_proto::v1 as pb;

/// Open windows at most; past it, events with a new key are written unfolded (counted).
pub const MAX_OPEN: usize = 4096;

/// What makes two events identical.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Key {
    kind: i32,
    verdict: i32,
    pid: u32,
    cgroup_id: u64,
    rule: String,
    target: String,
}

impl Key {
    /// The key of a foldable event, `None` for kinds that are never folded.
    pub fn of(event: &pb::Event) -> Option<Key> {
        use pb::event::Body as B;
        let target = match &event.body {
            Some(B::Connect(c)) => format!("{}:{}/{}", c.dst_addr, c.dst_port, c.protocol),
            Some(B::Chmod(c)) => {
                let file = if c.name.is_empty() { &c.path } else { &c.name };
                format!("{file} {:o} {:?}", c.mode & 0o6000, c.fd)
            }
            _ => return None,
        };
        let p = event.process.as_ref();
        Some(Key {
            kind: crate::event::proto::kind_of(event) as i32,
            verdict: event.verdict,
            pid: p.map_or(0, |p| p.pid),
            cgroup_id: p.map_or(0, |p| p.cgroup_id),
            rule: event.rule.clone(),
            target,
        })
    }
}

/// One open window.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    /// Event time of the event that opened the window.
    pub start_ns: i64,
    /// The latest repeat (the record written when the window closes); `None` while the window
    /// has no repeat yet.
    pub last: Option<pb::Event>,
    pub repeats: u64,
    pub first_time_ns: i64,
    pub first_seq: u64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FoldStats {
    /// Events counted into a repeat record instead of being written on their own.
    pub folded: u64,
    /// Events written unfolded because [`MAX_OPEN`] windows were open.
    pub table_full: u64,
}

#[derive(Debug)]
pub struct Folder {
    window_ns: i64,
    open: HashMap<Key, Window>,
    /// No window closes before this event time (recomputed when reached).
    next_close: i64,
    pub stats: FoldStats,
}

impl Folder {
    /// `window_ns == 0` turns folding off.
    pub fn new(window_ns: i64) -> Self {
        Self {
            window_ns,
            open: HashMap::new(),
            next_close: i64::MAX,
            stats: FoldStats::default(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.window_ns > 0
    }

    /// Take one event (in sequence order); push what is to be written now onto `out`.
    pub fn push(&mut self, event: pb::Event, out: &mut Vec<pb::Event>) {
        if !self.enabled() {
            out.push(event);
            return;
        }
        self.close_until(event.time_unix_ns, out);
        let Some(key) = Key::of(&event) else {
            out.push(event);
            return;
        };
        if let Some(w) = self.open.get_mut(&key) {
            w.repeats += 1;
            if w.repeats == 1 {
                w.first_time_ns = event.time_unix_ns;
                w.first_seq = event.seq;
            }
            w.last = Some(event);
            self.stats.folded += 1;
            return;
        }
        if self.open.len() >= MAX_OPEN {
            self.stats.table_full += 1;
            out.push(event);
            return;
        }
        let start_ns = event.time_unix_ns;
        self.next_close = self.next_close.min(start_ns.saturating_add(self.window_ns));
        self.open.insert(
            key,
            Window {
                start_ns,
                last: None,
                repeats: 0,
                first_time_ns: 0,
                first_seq: 0,
            },
        );
        out.push(event);
    }

    /// Close every window that started at least a window before `now_ns`, writing the repeat
    /// records of those that had repeats (oldest window first).
    pub fn close_until(&mut self, now_ns: i64, out: &mut Vec<pb::Event>) {
        if now_ns < self.next_close {
            return;
        }
        let horizon = now_ns.saturating_sub(self.window_ns);
        let mut closed: Vec<Window> = Vec::new();
        self.open.retain(|_, w| {
            if w.start_ns <= horizon {
                closed.push(w.clone());
                false
            } else {
                true
            }
        });
        self.next_close = self
            .open
            .values()
            .map(|w| w.start_ns.saturating_add(self.window_ns))
            .min()
            .unwrap_or(i64::MAX);
        closed.sort_by_key(|w| (w.start_ns, w.first_seq));
        out.extend(closed.into_iter().filter_map(repeat_record));
    }

    /// Close every window (clean shutdown).
    pub fn close_all(&mut self, out: &mut Vec<pb::Event>) {
        self.next_close = i64::MIN;
        self.close_until(i64::MAX, out);
    }

    /// The open windows, for the persisted state.
    pub fn windows(&self) -> impl Iterator<Item = (&Key, &Window)> {
        self.open.iter()
    }

    /// Reopen a window from the persisted state.
    pub fn restore(&mut self, key: Key, window: Window) {
        self.next_close = self
            .next_close
            .min(window.start_ns.saturating_add(self.window_ns));
        self.open.insert(key, window);
    }
}

/// The record that stands for a window's repeats, if it had any.
fn repeat_record(w: Window) -> Option<pb::Event> {
    let mut last = w.last?;
    last.repeat = Some(pb::Repeat {
        count: w.repeats,
        first_time_unix_ns: w.first_time_ns,
        last_time_unix_ns: last.time_unix_ns,
        first_seq: w.first_seq,
        last_seq: last.seq,
    });
    Some(last)
}

/// How many events a written record stands for.
pub fn count_of(event: &pb::Event) -> u64 {
    event.repeat.as_ref().map_or(1, |r| r.count)
}
