//! Time: kernel monotonic timestamps as wall-clock time, and RFC 3339 text.

use std::time::{Duration, SystemTime};

/// Converts kernel monotonic timestamps to wall-clock time.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// Wall time minus monotonic time, in nanoseconds.
    offset_ns: i128,
}

impl Clock {
    pub fn now() -> Self {
        let mono = clock_ns(libc::CLOCK_MONOTONIC);
        let real = clock_ns(libc::CLOCK_REALTIME);
        Self {
            offset_ns: real - mono,
        }
    }

    /// Nanoseconds since the Unix epoch for a kernel monotonic timestamp.
    pub fn wall_unix_ns(&self, ktime_ns: u64) -> i64 {
        i64::try_from(i128::from(ktime_ns) + self.offset_ns).unwrap_or(0)
    }
}

/// Wall-clock nanoseconds since the Unix epoch, now.
pub fn now_unix_ns() -> i64 {
    i64::try_from(clock_ns(libc::CLOCK_REALTIME)).unwrap_or(0)
}

fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid clock id and timespec pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

/// RFC 3339 UTC with nanoseconds.
pub fn rfc3339(unix_ns: i64) -> String {
    let t = SystemTime::UNIX_EPOCH + Duration::from_nanos(u64::try_from(unix_ns).unwrap_or(0));
    humantime::format_rfc3339_nanos(t).to_string()
}

/// RFC 3339 UTC with microseconds (RFC 5424's TIMESTAMP allows at most six digits).
pub fn rfc3339_micros(unix_ns: i64) -> String {
    let t =
        SystemTime::UNIX_EPOCH + Duration::from_micros(u64::try_from(unix_ns / 1000).unwrap_or(0));
    humantime::format_rfc3339_micros(t).to_string()
}
