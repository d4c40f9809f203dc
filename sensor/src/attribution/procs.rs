//! The process cache: pid -> executable, arguments, parent, credentials, start time; and the
//! ancestry chain. Filled by a /proc scan at start-up and by exec/exit events; a miss is filled
//! from /proc when the process still exists, and reported as unknown otherwise (the event is then
//! marked `partial`). Exited processes stay for a grace period, so events that arrive after the
//! exit are still attributed.

use std::{
    collections::VecDeque,
    fs,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

pub use crate::event::encode::ProcParts;

/// Arguments kept per process.
const MAX_ARGS: usize = 32;
/// Bytes kept per argument, and in all.
const MAX_ARG_BYTES: usize = 256;
const MAX_ARGS_TOTAL: usize = 4096;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcInfo {
    pub pid: u32,
    pub ppid: u32,
    pub comm: String,
    pub exe: String,
    pub args: Vec<String>,
    pub uid: u32,
    pub euid: u32,
    pub gid: u32,
    /// Start time in clock ticks after boot (`/proc/<pid>/stat` field 22).
    pub start_ticks: u64,
    /// Its encoded parts, made on first use (events copy them in).
    pub parts: ProcParts,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct ProcStats {
    pub entries: usize,
    /// Lookups filled from /proc after a miss.
    pub filled: u64,
    /// Lookups of processes that were gone (no cache entry, no /proc entry).
    pub unknown: u64,
    /// Entries not cached because the cache was full.
    pub full: u64,
}

struct Entry {
    /// Shared with the events that name it: hot-path lookups do not copy it.
    info: Arc<ProcInfo>,
    exited: Option<Instant>,
}

pub struct ProcessCache {
    root: PathBuf,
    entries: super::IntMap<u32, Entry>,
    exited: VecDeque<(Instant, u32)>,
    cap: usize,
    grace: Duration,
    stats: ProcStats,
}

/// Read one process from `/proc/<pid>`; `None` when it is gone.
pub fn read_proc(root: &Path, pid: u32) -> Option<ProcInfo> {
    let dir = root.join(pid.to_string());
    let stat = fs::read_to_string(dir.join("stat")).ok()?;
    // "pid (comm) state ppid ... starttime(22)": comm may hold spaces and parentheses.
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_owned();
    let rest: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    let ppid = rest.get(1)?.parse().ok()?;
    let start_ticks = rest.get(19).and_then(|s| s.parse().ok()).unwrap_or(0);
    let status = fs::read_to_string(dir.join("status")).unwrap_or_default();
    let ids = |key: &str| -> (u32, u32) {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| {
                let mut it = v.split_whitespace().map(|n| n.parse().unwrap_or(0));
                (it.next().unwrap_or(0), it.next().unwrap_or(0))
            })
            .unwrap_or((0, 0))
    };
    let (uid, euid) = ids("Uid:");
    let (gid, _) = ids("Gid:");
    let exe = fs::read_link(dir.join("exe"))
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let cmdline = fs::read(dir.join("cmdline")).unwrap_or_default();
    Some(ProcInfo {
        pid,
        ppid,
        comm,
        exe,
        args: bounded_args(&cmdline),
        uid,
        euid,
        gid,
        start_ticks,
        parts: ProcParts::default(),
    })
}

/// NUL-separated arguments, bounded in count and size.
fn bounded_args(cmdline: &[u8]) -> Vec<String> {
    let mut total = 0;
    cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .take(MAX_ARGS)
        .map_while(|a| {
            let a = &a[..a.len().min(MAX_ARG_BYTES)];
            total += a.len();
            (total <= MAX_ARGS_TOTAL).then(|| String::from_utf8_lossy(a).into_owned())
        })
        .collect()
}

impl ProcessCache {
    pub fn new(root: &Path, cap: usize, grace: Duration) -> Self {
        Self {
            root: root.to_owned(),
            entries: super::IntMap::default(),
            exited: VecDeque::new(),
            cap,
            grace,
            stats: ProcStats::default(),
        }
    }

    /// Load every process in /proc (start-up).
    pub fn scan(&mut self) -> usize {
        let pids: Vec<u32> = fs::read_dir(&self.root)
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        for pid in pids {
            if let Some(info) = read_proc(&self.root, pid) {
                self.insert(Arc::new(info));
            }
        }
        self.entries.len()
    }

    fn insert(&mut self, info: Arc<ProcInfo>) {
        if self.entries.len() >= self.cap && !self.entries.contains_key(&info.pid) {
            self.expire(Instant::now(), true);
            if self.entries.len() >= self.cap {
                self.stats.full += 1;
                return;
            }
        }
        self.entries.insert(info.pid, Entry { info, exited: None });
    }

    /// A task completed an exec: refresh from /proc (the new image), or build what the event
    /// says when the process is already gone.
    pub fn on_exec(&mut self, pid: u32, filename: Option<&str>, comm: &str) -> Arc<ProcInfo> {
        let info = Arc::new(read_proc(&self.root, pid).unwrap_or_else(|| {
            let old = self
                .entries
                .get(&pid)
                .map(|e| (*e.info).clone())
                .unwrap_or_default();
            ProcInfo {
                pid,
                comm: comm.to_owned(),
                exe: filename.unwrap_or_default().to_owned(),
                args: Vec::new(),
                parts: ProcParts::default(),
                ..old
            }
        }));
        self.insert(Arc::clone(&info));
        info
    }

    /// The process exited: kept for the grace period, then dropped.
    pub fn on_exit(&mut self, pid: u32, now: Instant) {
        if let Some(e) = self.entries.get_mut(&pid)
            && e.exited.is_none()
        {
            e.exited = Some(now);
            self.exited.push_back((now, pid));
        }
        self.expire(now, false);
    }

    /// Drop exited processes past the grace period (`all`: every exited one).
    pub fn expire(&mut self, now: Instant, all: bool) {
        while let Some(&(at, pid)) = self.exited.front() {
            if !all && now.duration_since(at) < self.grace {
                break;
            }
            self.exited.pop_front();
            if self.entries.get(&pid).is_some_and(|e| e.exited == Some(at)) {
                self.entries.remove(&pid);
            }
        }
    }

    /// The process, from the cache or /proc.
    pub fn get(&mut self, pid: u32) -> Option<Arc<ProcInfo>> {
        if let Some(e) = self.entries.get(&pid) {
            return Some(Arc::clone(&e.info));
        }
        match read_proc(&self.root, pid) {
            Some(info) => {
                self.stats.filled += 1;
                let info = Arc::new(info);
                self.insert(Arc::clone(&info));
                Some(info)
            }
            None => {
                self.stats.unknown += 1;
                None
            }
        }
    }

    /// Parent, grandparent, ... of `info` (nearest first), at most `max`; stops at pid 1 or at
    /// an unknown parent.
    pub fn ancestors(&mut self, info: &ProcInfo, max: usize) -> Vec<Arc<ProcInfo>> {
        let mut chain = Vec::new();
        let mut ppid = info.ppid;
        while chain.len() < max && ppid != 0 {
            let Some(parent) = self.get(ppid) else { break };
            ppid = if parent.pid == 1 { 0 } else { parent.ppid };
            chain.push(parent);
        }
        chain
    }

    pub fn stats(&self) -> ProcStats {
        ProcStats {
            entries: self.entries.len(),
            ..self.stats
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake /proc with one process directory.
    fn fake_proc(root: &Path, pid: u32, ppid: u32, comm: &str, exe: &str, cmdline: &[u8]) {
        let dir = root.join(pid.to_string());
        fs::create_dir_all(&dir).unwrap();
        let stat =
            format!("{pid} ({comm}) S {ppid} 1 1 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 4242 0 0");
        fs::write(dir.join("stat"), stat).unwrap();
        fs::write(
            dir.join("status"),
            "Name:\tx\nUid:\t1000\t0\t0\t0\nGid:\t1001\t1001\t1001\t1001\n",
        )
        .unwrap();
        fs::write(dir.join("cmdline"), cmdline).unwrap();
        std::os::unix::fs::symlink(exe, dir.join("exe")).unwrap();
    }

    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn tmp(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("sensor-procs-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        Dir(d)
    }

    #[test]
    fn reads_stat_status_exe_and_bounded_args() {
        let d = tmp("read");
        fake_proc(
            &d.0,
            42,
            7,
            "we ird) name",
            "/usr/bin/curl",
            b"curl\0-s\0http://x\0",
        );
        let p = read_proc(&d.0, 42).unwrap();
        assert_eq!(
            (p.ppid, p.comm.as_str(), p.exe.as_str()),
            (7, "we ird) name", "/usr/bin/curl")
        );
        assert_eq!(p.args, ["curl", "-s", "http://x"]);
        assert_eq!((p.uid, p.euid, p.gid, p.start_ticks), (1000, 0, 1001, 4242));
        assert!(read_proc(&d.0, 43).is_none());
        let many: Vec<u8> = (0..100)
            .flat_map(|i| format!("arg{i}\0").into_bytes())
            .collect();
        assert_eq!(bounded_args(&many).len(), MAX_ARGS);
        let huge = [vec![b'a'; 10_000], vec![0], vec![b'b'; 10]].concat();
        assert_eq!(bounded_args(&huge)[0].len(), MAX_ARG_BYTES);
    }

    #[test]
    fn misses_fill_from_proc_and_gone_processes_are_unknown() {
        let d = tmp("miss");
        let mut cache = ProcessCache::new(&d.0, 100, Duration::from_secs(30));
        assert_eq!(cache.scan(), 0);
        fake_proc(&d.0, 10, 1, "sh", "/bin/sh", b"sh\0");
        assert_eq!(cache.get(10).unwrap().exe, "/bin/sh");
        assert!(cache.get(11).is_none());
        let s = cache.stats();
        assert_eq!((s.filled, s.unknown, s.entries), (1, 1, 1));
    }

    #[test]
    fn exec_refreshes_and_falls_back_to_the_event_when_gone() {
        let d = tmp("exec");
        let mut cache = ProcessCache::new(&d.0, 100, Duration::from_secs(30));
        fake_proc(&d.0, 20, 1, "sh", "/bin/sh", b"sh\0");
        cache.scan();
        // exec into curl: /proc now shows the new image.
        fs::remove_dir_all(d.0.join("20")).unwrap();
        fake_proc(&d.0, 20, 1, "curl", "/usr/bin/curl", b"curl\0x\0");
        assert_eq!(
            cache.on_exec(20, Some("/usr/bin/curl"), "curl").args,
            ["curl", "x"]
        );
        // A process that exec'd and exited before the event was read.
        let gone = cache.on_exec(21, Some("/usr/bin/wget"), "wget");
        assert_eq!(
            (gone.exe.as_str(), gone.comm.as_str()),
            ("/usr/bin/wget", "wget")
        );
        assert_eq!(cache.get(21).unwrap().exe, "/usr/bin/wget");
    }

    #[test]
    fn exited_processes_stay_for_the_grace_period() {
        let d = tmp("exit");
        let mut cache = ProcessCache::new(&d.0, 100, Duration::from_secs(30));
        fake_proc(&d.0, 30, 1, "sh", "/bin/sh", b"sh\0");
        cache.scan();
        fs::remove_dir_all(d.0.join("30")).unwrap();
        let t0 = Instant::now();
        cache.on_exit(30, t0);
        assert!(cache.get(30).is_some(), "kept right after exit");
        cache.expire(t0 + Duration::from_secs(29), false);
        assert!(cache.get(30).is_some());
        cache.expire(t0 + Duration::from_secs(31), false);
        assert!(cache.get(30).is_none(), "dropped after the grace period");
    }

    #[test]
    fn ancestry_is_bounded_and_stops_at_unknown_parents() {
        let d = tmp("anc");
        fake_proc(&d.0, 1, 0, "init", "/sbin/init", b"init\0");
        fake_proc(
            &d.0,
            100,
            1,
            "containerd-shim",
            "/usr/bin/containerd-shim",
            b"shim\0",
        );
        fake_proc(&d.0, 200, 100, "sh", "/bin/sh", b"sh\0");
        fake_proc(&d.0, 300, 200, "curl", "/usr/bin/curl", b"curl\0");
        fake_proc(&d.0, 400, 399, "orphan", "/bin/x", b"x\0");
        let mut cache = ProcessCache::new(&d.0, 100, Duration::from_secs(30));
        cache.scan();
        let curl = cache.get(300).unwrap();
        let chain: Vec<u32> = cache.ancestors(&curl, 8).iter().map(|p| p.pid).collect();
        assert_eq!(chain, [200, 100, 1]);
        assert_eq!(cache.ancestors(&curl, 2).len(), 2);
        let orphan = cache.get(400).unwrap();
        assert!(cache.ancestors(&orphan, 8).is_empty());
    }

    #[test]
    fn a_full_cache_counts_instead_of_growing() {
        let d = tmp("full");
        for pid in 1..=5 {
            fake_proc(&d.0, pid, 0, "p", "/bin/p", b"p\0");
        }
        let mut cache = ProcessCache::new(&d.0, 3, Duration::from_secs(30));
        assert_eq!(cache.scan(), 3);
        assert_eq!(cache.stats().full, 2);
    }
}
