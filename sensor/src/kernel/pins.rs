//! Pinned mode (`sensor run --pin-dir DIR`): enforcement that outlives the daemon.
//!
//! Each daemon start is a *generation*: a directory `DIR/gen-<unix ns>-<pid>` on bpffs holding
//! its pinned links (`link-<program>-<n>`) and its event ring buffer (`events`). A pinned link
//! stays attached when the process that made it exits, so a crash, a stop or an upgrade leaves
//! the kernel enforcing. A starting daemon attaches and pins its own programs first, then
//! retires the earlier generations: it removes their link pins (they detach; for a moment both
//! generations run, which is harmless: both deny), reads what their ring buffers still hold,
//! and removes them. `sensor uninstall` removes every generation.

use std::{
    ffi::CString,
    io,
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

/// `BPF_FS_MAGIC` (statfs f_type of bpffs).
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
const GENERATION_PREFIX: &str = "gen-";
/// Prefix of the pinned links in a generation directory.
pub const LINK_PREFIX: &str = "link-";
/// The pinned event ring buffer in a generation directory.
pub const EVENTS_PIN: &str = "events";

#[derive(Debug, thiserror::Error)]
pub enum PinDirError {
    #[error("--pin-dir {}: not on a bpf file system (mount one: mount -t bpf bpf /sys/fs/bpf)", .0.display())]
    NotBpffs(PathBuf),
    #[error("--pin-dir {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The pin directory of a starting daemon: its own new generation and the earlier ones.
#[derive(Debug)]
pub struct PinDir {
    current: PathBuf,
    previous: Vec<PathBuf>,
}

impl PinDir {
    /// Create `root` if needed (on bpffs), list the earlier generations, create a new one.
    pub fn open(root: &Path) -> Result<Self, PinDirError> {
        let io_err = |path: &Path| {
            let path = path.to_owned();
            move |source| PinDirError::Io { path, source }
        };
        std::fs::create_dir_all(root).map_err(io_err(root))?;
        if !is_bpffs(root) {
            return Err(PinDirError::NotBpffs(root.to_owned()));
        }
        let previous = generations(root).map_err(io_err(root))?;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let current = root.join(format!("{GENERATION_PREFIX}{nanos}-{}", std::process::id()));
        std::fs::create_dir(&current).map_err(io_err(&current))?;
        Ok(Self { current, previous })
    }

    /// This daemon's generation directory.
    pub fn current(&self) -> &Path {
        &self.current
    }

    /// Generations found at start, oldest first.
    pub fn previous(&self) -> &[PathBuf] {
        &self.previous
    }
}

/// Check, without creating anything, that `root` is (or would be created) on bpffs.
pub fn check(root: &Path) -> Result<(), PinDirError> {
    let existing = root.ancestors().find(|p| p.exists()).unwrap_or(root);
    if is_bpffs(existing) {
        Ok(())
    } else {
        Err(PinDirError::NotBpffs(root.to_owned()))
    }
}

/// Whether `path` is on bpffs.
pub fn is_bpffs(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: a zeroed statfs is a valid out-parameter.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid NUL-terminated path and out-pointer.
    unsafe { libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == BPF_FS_MAGIC }
}

/// The generation directories under `root`, oldest first.
pub fn generations(root: &Path) -> io::Result<Vec<PathBuf>> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(root)?
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(GENERATION_PREFIX)
        })
        .map(|e| e.path())
        .collect();
    found.sort();
    Ok(found)
}

/// Whether the daemon that made a generation (`gen-<ns>-<pid>`) is still running.
pub fn generation_owner_running(generation: &Path) -> bool {
    let pid = generation
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.rsplit('-').next())
        .and_then(|p| p.parse::<u32>().ok());
    let Some(pid) = pid.filter(|&p| p != std::process::id()) else {
        return false;
    };
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .is_ok_and(|comm| comm.trim_end().starts_with("sensor"))
}

/// Remove the link pins of a generation: each link detaches, unless a running process still
/// holds it (a daemon that has not exited yet lets go when it does). Returns how many.
pub fn unpin_links(generation: &Path) -> io::Result<usize> {
    let mut n = 0;
    for entry in std::fs::read_dir(generation)?.filter_map(Result::ok) {
        if entry.file_name().to_string_lossy().starts_with(LINK_PREFIX) {
            std::fs::remove_file(entry.path())?;
            n += 1;
        }
    }
    Ok(n)
}

/// Remove what is left of a generation (its ring buffer pin) and its directory.
pub fn remove_generation(generation: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(generation)?.filter_map(Result::ok) {
        std::fs::remove_file(entry.path())?;
    }
    std::fs::remove_dir(generation)
}

/// `sensor uninstall`: remove every generation under `root`, then `root`; fail if sensor
/// programs are still loaded (a running daemon holds them).
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generation_knows_whether_its_daemon_runs() {
        let gone = Path::new("/sys/fs/bpf/sensor/gen-1-4294967290");
        assert!(!generation_owner_running(gone));
        // This test process is not a sensor daemon (comm is the test binary's name)...
        let parent = std::os::unix::process::parent_id();
        let other = PathBuf::from(format!("/x/gen-5-{parent}"));
        let comm = std::fs::read_to_string(format!("/proc/{parent}/comm")).unwrap();
        assert_eq!(
            generation_owner_running(&other),
            comm.starts_with("sensor"),
            "{comm}"
        );
        assert!(!generation_owner_running(Path::new("/x/not-a-generation")));
    }

    #[test]
    fn a_directory_off_bpffs_is_refused() {
        let dir = std::env::temp_dir().join(format!("sensor-pins-test-{}", std::process::id()));
        assert!(matches!(
            check(&dir.join("a/b")),
            Err(PinDirError::NotBpffs(_))
        ));
        let err = PinDir::open(&dir).unwrap_err();
        assert!(matches!(err, PinDirError::NotBpffs(_)), "{err}");
        assert!(err.to_string().contains("not on a bpf file system"));
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(!is_bpffs(Path::new("/proc")));
    }
}
