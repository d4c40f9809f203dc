//! cgroup id -> path, from a walk of the cgroup2 mount.
//!
//! A cgroup v2 id is the inode number of the cgroup's directory (what
//! `bpf_get_current_cgroup_id()` reports), so the index is a depth-bounded walk that records
//! each directory's inode. It is rebuilt on a miss, at most once per `min_rescan_interval`, so
//! cgroups created since are found without a walk per event. Events often arrive after their
//! cgroup is gone (a container that exits): an id a rescan no longer sees stays resolvable for
//! `grace_period`, then is dropped. Time is a parameter of the internal methods, so tests drive
//! the clock.

use std::{
    collections::HashMap,
    ffi::OsString,
    fs, io,
    os::unix::{ffi::OsStringExt as _, fs::MetadataExt as _},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

/// Rescans on a miss happen at most this often.
pub const DEFAULT_MIN_RESCAN_INTERVAL: Duration = Duration::from_millis(100);
/// How long an id stays resolvable after a rescan stops seeing its cgroup.
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(60);
/// Levels below the root the walk descends (a kind node's pods are about 8 deep).
const MAX_DEPTH: usize = 32;
/// Directories one walk records; past this the walk stops with a warning.
const MAX_ENTRIES: usize = 1 << 20;

/// cgroup id -> path relative to the cgroup2 root. See the module documentation.
#[derive(Debug)]
pub struct CgroupIndex {
    root: PathBuf,
    entries: HashMap<u64, Entry>,
    last_scan: Instant,
    min_rescan_interval: Duration,
    grace_period: Duration,
    rescans: u64,
    misses: u64,
}

#[derive(Debug)]
struct Entry {
    path: String,
    /// When a rescan first no longer saw the cgroup.
    gone_since: Option<Instant>,
}

/// Counters of a [`CgroupIndex`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CgroupIndexStats {
    /// Ids held, removed ones in their grace period included.
    pub entries: usize,
    /// Walks after the initial one (on a miss, or [`CgroupIndex::rescan`]).
    pub rescans: u64,
    /// Lookups that found nothing, even after a rescan.
    pub misses: u64,
    /// Ids held whose cgroup a rescan no longer sees (in their grace period).
    pub removed_kept: usize,
}

impl CgroupIndex {
    /// Walk the cgroup2 mount at `root` (e.g. /sys/fs/cgroup/unified or /sys/fs/cgroup),
    /// depth-bounded. Fails only when `root` itself cannot be read; cgroups that vanish during
    /// the walk are skipped.
    pub fn scan(root: &Path) -> io::Result<Self> {
        Self::scan_at(root, Instant::now())
    }

    fn scan_at(root: &Path, now: Instant) -> io::Result<Self> {
        let entries = walk(root)?
            .into_iter()
            .map(|(id, path)| {
                let entry = Entry {
                    path,
                    gone_since: None,
                };
                (id, entry)
            })
            .collect();
        Ok(Self {
            root: root.to_owned(),
            entries,
            last_scan: now,
            min_rescan_interval: DEFAULT_MIN_RESCAN_INTERVAL,
            grace_period: DEFAULT_GRACE_PERIOD,
            rescans: 0,
            misses: 0,
        })
    }

    /// Rescans on a miss at most once per `interval` (default 100 ms).
    pub fn with_min_rescan_interval(mut self, interval: Duration) -> Self {
        self.min_rescan_interval = interval;
        self
    }

    /// Keeps removed cgroups resolvable for `grace` after a rescan stops seeing them
    /// (default 60 s).
    pub fn with_grace_period(mut self, grace: Duration) -> Self {
        self.grace_period = grace;
        self
    }

    /// The walked mount.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Path relative to the root ("/kubepods.slice/..."), rescanning once (rate-limited) on a
    /// miss so new cgroups are found; removed cgroups stay resolvable for the grace period
    /// after a rescan no longer sees them.
    pub fn path(&mut self, id: u64) -> Option<String> {
        self.path_at(id, Instant::now())
    }

    fn path_at(&mut self, id: u64, now: Instant) -> Option<String> {
        if let Some(path) = self.lookup(id, now) {
            return Some(path);
        }
        if now.saturating_duration_since(self.last_scan) >= self.min_rescan_interval {
            if let Err(error) = self.rescan_at(now) {
                tracing::warn!(root = %self.root.display(), %error, "cgroup index rescan failed");
            }
            if let Some(path) = self.lookup(id, now) {
                return Some(path);
            }
        }
        self.misses += 1;
        None
    }

    fn lookup(&mut self, id: u64, now: Instant) -> Option<String> {
        let entry = self.entries.get(&id)?;
        match entry.gone_since {
            Some(since) if now.saturating_duration_since(since) >= self.grace_period => {
                self.entries.remove(&id);
                None
            }
            _ => Some(entry.path.clone()),
        }
    }

    /// Walk the mount again now (not rate-limited): new cgroups are added, removed ones start
    /// their grace period, expired ones are dropped. On error the index is left as it was.
    pub fn rescan(&mut self) -> io::Result<()> {
        self.rescan_at(Instant::now())
    }

    fn rescan_at(&mut self, now: Instant) -> io::Result<()> {
        self.last_scan = now;
        self.rescans += 1;
        let mut seen = walk(&self.root)?;
        let grace = self.grace_period;
        self.entries.retain(|id, entry| match seen.remove(id) {
            Some(path) => {
                entry.path = path;
                entry.gone_since = None;
                true
            }
            None => {
                let since = *entry.gone_since.get_or_insert(now);
                now.saturating_duration_since(since) < grace
            }
        });
        self.entries.extend(seen.into_iter().map(|(id, path)| {
            let entry = Entry {
                path,
                gone_since: None,
            };
            (id, entry)
        }));
        Ok(())
    }

    /// Live cgroups (id, path relative to the root), as of the last scan.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &str)> {
        self.entries
            .iter()
            .filter(|(_, e)| e.gone_since.is_none())
            .map(|(id, e)| (*id, e.path.as_str()))
    }

    pub fn stats(&self) -> CgroupIndexStats {
        CgroupIndexStats {
            entries: self.entries.len(),
            rescans: self.rescans,
            misses: self.misses,
            removed_kept: self
                .entries
                .values()
                .filter(|e| e.gone_since.is_some())
                .count(),
        }
    }
}

/// Inode -> path relative to `root` ("/" for the root) of every directory below `root` on the
/// same file system, `MAX_DEPTH` levels deep at most. Symbolic links are not followed.
fn walk(root: &Path) -> io::Result<HashMap<u64, String>> {
    let meta = fs::metadata(root)?;
    if !meta.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::NotADirectory,
            format!("{} is not a directory", root.display()),
        ));
    }
    let dev = meta.dev();
    let mut found = HashMap::from([(meta.ino(), "/".to_owned())]);
    // Read the root first so that an unreadable root is an error, not an empty index.
    let mut stack = vec![(fs::read_dir(root)?, String::new(), 0)];
    while let Some((dir, rel, depth)) = stack.pop() {
        for entry in dir {
            // A cgroup removed while it is being read: skip it.
            let Ok(entry) = entry else { continue };
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_dir() || meta.dev() != dev {
                continue;
            }
            if found.len() >= MAX_ENTRIES {
                tracing::warn!(
                    root = %root.display(),
                    max = MAX_ENTRIES,
                    "cgroup index: too many cgroups, the rest are not indexed"
                );
                return Ok(found);
            }
            let child = format!("{rel}/{}", entry.file_name().to_string_lossy());
            if depth + 1 < MAX_DEPTH
                && let Ok(sub) = fs::read_dir(entry.path())
            {
                stack.push((sub, child.clone(), depth + 1));
            }
            found.insert(meta.ino(), child);
        }
    }
    Ok(found)
}

/// Find the cgroup2 mount point from /proc/self/mountinfo (prefer /sys/fs/cgroup/unified on
/// hybrid hosts, then /sys/fs/cgroup). A mount of the whole hierarchy (mount root `/`) is
/// preferred over a bind mount of a sub-cgroup, whose paths would not start at the cgroup2 root.
pub fn cgroup2_root() -> io::Result<PathBuf> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")?;
    cgroup2_root_from_mountinfo(&mountinfo).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            "no cgroup2 file system is mounted (none in /proc/self/mountinfo)",
        )
    })
}

fn cgroup2_root_from_mountinfo(mountinfo: &str) -> Option<PathBuf> {
    let mut best: Option<(u8, PathBuf)> = None;
    for line in mountinfo.lines() {
        // `id parent major:minor root mount-point options [optional...] - fstype source super`
        let Some((mount, fs)) = line.split_once(" - ") else {
            continue;
        };
        if fs.split(' ').next() != Some("cgroup2") {
            continue;
        }
        let mut fields = mount.split(' ').skip(3);
        let (Some(root), Some(point)) = (fields.next(), fields.next()) else {
            continue;
        };
        let point = PathBuf::from(unescape_mountinfo(point));
        let score = u8::from(root == "/") * 4
            + if point == Path::new("/sys/fs/cgroup/unified") {
                2
            } else {
                u8::from(point == Path::new("/sys/fs/cgroup"))
            };
        if best.as_ref().is_none_or(|(b, _)| score > *b) {
            best = Some((score, point));
        }
    }
    best.map(|(_, point)| point)
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo` (octal).
fn unescape_mountinfo(field: &str) -> OsString {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)))
            .map(|d| d.iter().fold(0u32, |n, b| n * 8 + u32::from(b - b'0')))
            .and_then(|n| u8::try_from(n).ok());
        match octal {
            Some(byte) => {
                out.push(byte);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    OsString::from_vec(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch directory tree, removed on drop.
    struct TempTree(PathBuf);

    impl TempTree {
        fn new(name: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("sensor-cgidx-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }

        fn mkdir(&self, rel: &str) -> u64 {
            let path = self.0.join(rel);
            fs::create_dir_all(&path).unwrap();
            fs::metadata(path).unwrap().ino()
        }
    }

    impl Drop for TempTree {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn scan_maps_directory_inodes_to_paths_relative_to_the_root() {
        let tree = TempTree::new("scan");
        let a = tree.mkdir("kubepods.slice");
        let b = tree.mkdir("kubepods.slice/kubepods-pod1.slice");
        let c = tree.mkdir("kubepods.slice/kubepods-pod1.slice/cri-containerd-1.scope");
        let d = tree.mkdir("system.slice");
        fs::write(tree.0.join("system.slice/cgroup.procs"), b"").unwrap();
        std::os::unix::fs::symlink(&tree.0, tree.0.join("system.slice/loop")).unwrap();

        let mut index = CgroupIndex::scan(&tree.0).unwrap();
        let root = fs::metadata(&tree.0).unwrap().ino();
        assert_eq!(index.path(root).as_deref(), Some("/"));
        assert_eq!(index.path(a).as_deref(), Some("/kubepods.slice"));
        assert_eq!(
            index.path(b).as_deref(),
            Some("/kubepods.slice/kubepods-pod1.slice")
        );
        assert_eq!(
            index.path(c).as_deref(),
            Some("/kubepods.slice/kubepods-pod1.slice/cri-containerd-1.scope")
        );
        assert_eq!(index.path(d).as_deref(), Some("/system.slice"));
        // Files and symbolic links are not cgroups.
        assert_eq!(
            index.stats(),
            CgroupIndexStats {
                entries: 5,
                ..Default::default()
            }
        );
    }

    #[test]
    fn walk_is_depth_bounded() {
        let tree = TempTree::new("depth");
        let deep = vec!["d"; MAX_DEPTH + 2].join("/");
        tree.mkdir(&deep);
        let found = walk(&tree.0).unwrap();
        // The root plus MAX_DEPTH levels.
        assert_eq!(found.len(), MAX_DEPTH + 1);
        let deepest = found.values().map(|p| p.matches('/').count()).max();
        assert_eq!(deepest, Some(MAX_DEPTH));
    }

    #[test]
    fn a_missing_root_is_an_error() {
        let err = CgroupIndex::scan(Path::new("/nonexistent/sensor-cgroup-root")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn a_new_cgroup_is_found_on_a_rate_limited_miss() {
        let tree = TempTree::new("miss");
        let t0 = Instant::now();
        let mut index = CgroupIndex::scan_at(&tree.0, t0).unwrap();
        let new = tree.mkdir("kubepods/pod1");

        // Within the rescan interval: no walk, a miss.
        assert_eq!(index.path_at(new, t0 + Duration::from_millis(50)), None);
        assert_eq!((index.stats().rescans, index.stats().misses), (0, 1));

        // Past it: one rescan finds the cgroup.
        let t1 = t0 + Duration::from_millis(150);
        assert_eq!(index.path_at(new, t1).as_deref(), Some("/kubepods/pod1"));
        assert_eq!((index.stats().rescans, index.stats().misses), (1, 1));

        // A hit does not rescan; a miss right after the last rescan does not either.
        assert!(index.path_at(new, t1).is_some());
        assert_eq!(
            index.path_at(u64::MAX, t1 + Duration::from_millis(10)),
            None
        );
        assert_eq!((index.stats().rescans, index.stats().misses), (1, 2));
        assert_eq!(index.stats().entries, 3);
    }

    #[test]
    fn a_removed_cgroup_resolves_for_the_grace_period_then_is_dropped() {
        let tree = TempTree::new("grace");
        let gone = tree.mkdir("kubepods/pod1");
        let t0 = Instant::now();
        let mut index = CgroupIndex::scan_at(&tree.0, t0).unwrap();
        fs::remove_dir(tree.0.join("kubepods/pod1")).unwrap();

        // Still held until a rescan; a miss on another id triggers one.
        let removed_at = t0 + Duration::from_secs(1);
        assert_eq!(index.path_at(u64::MAX, removed_at), None);
        let stats = index.stats();
        assert_eq!(
            (stats.rescans, stats.entries, stats.removed_kept),
            (1, 3, 1)
        );

        // Resolvable through the grace period, without further walks.
        let late = removed_at + DEFAULT_GRACE_PERIOD - Duration::from_millis(1);
        assert_eq!(index.path_at(gone, late).as_deref(), Some("/kubepods/pod1"));
        assert_eq!(index.stats().rescans, 1);

        // Then dropped.
        assert_eq!(index.path_at(gone, removed_at + DEFAULT_GRACE_PERIOD), None);
        let stats = index.stats();
        assert_eq!((stats.entries, stats.removed_kept), (2, 0));
    }

    #[test]
    fn rescans_drop_expired_cgroups_and_revive_recreated_paths() {
        let tree = TempTree::new("expire");
        let a = tree.mkdir("a");
        let b = tree.mkdir("b");
        let t0 = Instant::now();
        let mut index = CgroupIndex::scan_at(&tree.0, t0)
            .unwrap()
            .with_grace_period(Duration::from_secs(5));
        fs::remove_dir(tree.0.join("a")).unwrap();
        fs::remove_dir(tree.0.join("b")).unwrap();
        index.rescan_at(t0 + Duration::from_secs(1)).unwrap();
        assert_eq!(index.stats().removed_kept, 2);
        // `b` comes back, maybe under the same inode (a scratch file system may reuse it;
        // cgroup ids are never reused): whatever was seen again is live again.
        let b2 = tree.mkdir("b");
        let t1 = t0 + Duration::from_secs(7);
        index.rescan_at(t1).unwrap();
        let stats = index.stats();
        assert_eq!(
            (stats.entries, stats.removed_kept),
            (2, 0),
            "old ids expired"
        );
        assert_eq!(index.path_at(b2, t1).as_deref(), Some("/b"));
        for old in [a, b].into_iter().filter(|id| *id != b2) {
            assert_eq!(index.path_at(old, t1), None);
        }
    }

    #[test]
    fn mountinfo_prefers_the_unified_mount_then_sys_fs_cgroup() {
        let hybrid = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
        assert_eq!(
            cgroup2_root_from_mountinfo(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let unified = "\
25 1 0:22 / /run/a\\040b rw shared:2 - cgroup2 cgroup2 rw
26 1 0:22 / /sys/fs/cgroup rw,nosuid shared:4 master:1 - cgroup2 cgroup2 rw,nsdelegate
";
        assert_eq!(
            cgroup2_root_from_mountinfo(unified),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        // A bind mount of a sub-cgroup loses to a mount of the whole hierarchy.
        let bind = "\
50 1 0:22 /kubepods.slice /sys/fs/cgroup rw - cgroup2 cgroup2 rw
51 1 0:22 / /host/cgroup\\040root rw - cgroup2 cgroup2 rw
";
        assert_eq!(
            cgroup2_root_from_mountinfo(bind),
            Some(PathBuf::from("/host/cgroup root"))
        );
        assert_eq!(cgroup2_root_from_mountinfo("garbage\n- cgroup2\n"), None);
        assert_eq!(cgroup2_root_from_mountinfo(""), None);
    }

    /// Test cgroups on the real mount, removed on drop (children first), even on failure.
    struct CgroupGuard(Vec<PathBuf>);

    impl Drop for CgroupGuard {
        fn drop(&mut self) {
            for dir in self.0.iter().rev() {
                if let Err(e) = fs::remove_dir(dir)
                    && e.kind() != io::ErrorKind::NotFound
                {
                    eprintln!("cannot remove test cgroup {}: {e}", dir.display());
                }
            }
        }
    }

    #[test]
    fn real_cgroup2_ids_resolve_to_their_paths() {
        // /proc/self is owned by the effective uid. `cargo xtask test` runs as root; this test
        // fails, never skips, without it.
        assert_eq!(
            fs::metadata("/proc/self").unwrap().uid(),
            0,
            "creating a cgroup needs root"
        );
        let root = cgroup2_root().expect("cgroup2 must be mounted where the tests run");
        let name = format!("sensor-test-cgidx-{}", std::process::id());
        let parent = root.join(&name);
        let child = parent.join("leaf");
        let mut guard = CgroupGuard(Vec::new());
        fs::create_dir(&parent).unwrap();
        guard.0.push(parent.clone());

        let mut index = CgroupIndex::scan(&root).unwrap();
        let parent_id = fs::metadata(&parent).unwrap().ino();
        assert_eq!(index.path(parent_id), Some(format!("/{name}")));
        assert_eq!(
            index.path(1).as_deref(),
            Some("/"),
            "the cgroup2 root is id 1"
        );

        // Created after the scan: found by the rescan on a miss, once the interval has passed.
        fs::create_dir(&child).unwrap();
        guard.0.push(child.clone());
        let child_id = fs::metadata(&child).unwrap().ino();
        std::thread::sleep(DEFAULT_MIN_RESCAN_INTERVAL + Duration::from_millis(20));
        let path = index.path(child_id);
        assert_eq!(path, Some(format!("/{name}/leaf")));
        assert_eq!(
            crate::attribution::cgroups::parse_cgroup_path(&path.unwrap()),
            None
        );
    }
}
