//! The second half of the kill tier for chmod: after the kernel killed a caller whose chmod
//! matched an enforcing rule (the call may have taken effect before the signal was delivered),
//! remove the set-id bits the call asked for from the file, where the daemon can still reach it.
//!
//! The file is looked up inside the caller's own root: through `/proc/<pid>/root` while the
//! process is still there, otherwise through a live process of the same cgroup (a container's
//! other processes share its root). The lookup is confined to that root (`openat2` with
//! `RESOLVE_IN_ROOT`, so an absolute symlink planted in a container cannot point the daemon at a
//! host file), the file is held by an `O_PATH` descriptor, and only the set-id bits the call
//! requested are cleared, and only if the file still has them. Removing set-id bits is the safe
//! direction: if the file had them before the call, they are gone too (the event says so).

use std::{
    ffi::CString,
    fs::File,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::{ffi::OsStrExt, fs::MetadataExt},
    },
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use sensor_common::SETID_BITS;

use crate::event::{Chmod, PathArg};

/// What the daemon did about the file of a killed chmod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Revert {
    /// Set-id bits removed: the file's mode before and after.
    Reverted {
        path: PathBuf,
        before: u32,
        after: u32,
    },
    /// Nothing to undo: the call asked for no set-id bits, or the file no longer has them.
    NotNeeded(String),
    /// The file could not be reached or changed; why.
    Failed(String),
}

/// How long [`wait_for_call_end`] waits at most.
pub const CALL_END_WAIT: Duration = Duration::from_millis(50);

/// The event is submitted before the call runs and SIGKILL ends the thread only after it: wait
/// (at most `max`) until thread `tid` of `pid` is dead or a zombie, so the call is over before
/// it is undone. Returns whether it ended in time.
pub fn wait_for_call_end(proc_root: &Path, pid: u32, tid: u32, max: Duration) -> bool {
    let stat = proc_root.join(format!("{pid}/task/{tid}/stat"));
    let deadline = Instant::now() + max;
    loop {
        let state = std::fs::read_to_string(&stat).ok().and_then(|s| {
            // "tid (comm) S ...": the state follows the last ')'.
            s.rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next())
        });
        if matches!(state, None | Some('Z' | 'X' | 'x')) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Undo the set-id part of a killed chmod-family call by `pid`, whose cgroup is `cgroup_dir`
/// (the cgroup v2 directory, when known). `proc_root` is `/proc`. Call it once the call is over
/// ([`wait_for_call_end`]).
pub fn setid_bits(proc_root: &Path, pid: u32, cgroup_dir: Option<&Path>, chmod: &Chmod) -> Revert {
    let own = File::open(proc_root.join(pid.to_string()).join("root")).ok();
    setid_bits_from(own, proc_root, pid, cgroup_dir, chmod)
}

/// As [`setid_bits`], with the caller's root directory opened beforehand (`own`: by the
/// revert thread while the caller was still alive, so that a container whose only process
/// was killed is still reachable).
pub fn setid_bits_from(
    own: Option<File>,
    proc_root: &Path,
    pid: u32,
    cgroup_dir: Option<&Path>,
    chmod: &Chmod,
) -> Revert {
    let bits = chmod.mode & SETID_BITS;
    if bits == 0 {
        return Revert::NotNeeded("the call asked for no set-id bits".into());
    }
    let target = match (&chmod.path, chmod.fd) {
        (PathArg::Complete(p), _) if p.starts_with('/') => PathBuf::from(p),
        // Resolved through /proc while the caller was still there.
        _ => match &chmod.name {
            Some(name) => name.clone(),
            None => {
                return Revert::Failed(match chmod.path {
                    PathArg::None => {
                        "the file was named by a descriptor of a process that is gone".into()
                    }
                    PathArg::Truncated(_) => "the path was longer than the event carries".into(),
                    PathArg::Unreadable => "the path argument could not be read".into(),
                    PathArg::Complete(_) => {
                        "a relative path, and the caller (its working directory) is gone".into()
                    }
                    // Never killed: the LSM tier denies instead.
                    PathArg::Name(_) => "the event carries the file's name only".into(),
                });
            }
        },
    };
    let peers = cgroup_dir
        .map(|dir| std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default())
        .unwrap_or_default();
    let peer_roots = peers
        .lines()
        .filter(|p| *p != pid.to_string())
        .filter_map(|p| File::open(proc_root.join(p.trim()).join("root")).ok());
    let mut last_error = String::from("no live process of its cgroup to reach the file through");
    for root_dir in own.into_iter().chain(peer_roots) {
        match clear_in_root(&root_dir, &target, bits) {
            Ok(revert) => return revert,
            Err(err) => last_error = format!("{}: {err}", target.display()),
        }
    }
    Revert::Failed(last_error)
}

/// Open `target` confined to `root` and clear `bits` if it has them.
fn clear_in_root(root: &File, target: &Path, bits: u32) -> std::io::Result<Revert> {
    let file = open_in_root(root, target)?;
    let before = file.metadata()?.mode() & 0o7777;
    if before & bits == 0 {
        return Ok(Revert::NotNeeded(format!(
            "{} no longer has the set-id bits",
            target.display()
        )));
    }
    let after = before & !bits;
    // chmod through the O_PATH descriptor's magic link: the file that was opened, not a name
    // that could be swapped in between.
    let link = CString::new(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .map_err(std::io::Error::other)?;
    // SAFETY: valid NUL-terminated path.
    if unsafe { libc::chmod(link.as_ptr(), after) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(Revert::Reverted {
        path: target.to_owned(),
        before,
        after,
    })
}

fn open_in_root(root: &File, target: &Path) -> std::io::Result<File> {
    let relative = target.strip_prefix("/").unwrap_or(target);
    let name = CString::new(relative.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    /// `struct open_how` (linux/openat2.h; libc's is non-exhaustive).
    #[repr(C)]
    struct OpenHow {
        flags: u64,
        mode: u64,
        resolve: u64,
    }
    let how = OpenHow {
        flags: (libc::O_PATH | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: openat2 with a valid dirfd, NUL-terminated name and an `open_how` of the size
    // passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            name.as_ptr(),
            &how as *const OpenHow,
            size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a descriptor the kernel just returned, owned by nobody else.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd as i32) }))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn chmod(path: PathArg, fd: Option<i32>, mode: u32) -> Chmod {
        Chmod::for_test(path, fd, mode)
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sensor-revert-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn mode_of(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().mode() & 0o7777
    }

    #[test]
    fn clears_only_the_requested_bits_through_the_callers_root() {
        let dir = temp_dir("clear");
        let file = dir.join("tool");
        std::fs::write(&file, "x").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o6755)).unwrap();
        // Our own process stands in for the caller: /proc/self/root is "/".
        let me = std::process::id();
        let call = chmod(
            PathArg::Complete(file.display().to_string()),
            Some(-100),
            0o4755,
        );
        let r = setid_bits(Path::new("/proc"), me, None, &call);
        assert_eq!(
            r,
            Revert::Reverted {
                path: file.clone(),
                before: 0o6755,
                after: 0o2755
            }
        );
        assert_eq!(mode_of(&file), 0o2755, "setgid was not requested: kept");
        let again = setid_bits(Path::new("/proc"), me, None, &call);
        assert!(matches!(again, Revert::NotNeeded(_)), "{again:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn waits_for_the_caller_to_end() {
        let proc = Path::new("/proc");
        assert!(
            wait_for_call_end(proc, u32::MAX - 1, u32::MAX - 1, CALL_END_WAIT),
            "gone"
        );
        let me = std::process::id();
        let start = Instant::now();
        assert!(
            !wait_for_call_end(proc, me, me, Duration::from_millis(20)),
            "alive"
        );
        assert!(start.elapsed() >= Duration::from_millis(20));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Not reaped yet: a zombie once it exits, which counts as ended.
        assert!(wait_for_call_end(proc, pid, pid, Duration::from_secs(5)));
        child.wait().unwrap();
    }

    #[test]
    fn nothing_to_do_or_nothing_to_reach() {
        let plain = chmod(PathArg::Complete("/x".into()), Some(-100), 0o755);
        assert!(matches!(
            setid_bits(Path::new("/proc"), 1, None, &plain),
            Revert::NotNeeded(_)
        ));
        let by_fd = chmod(PathArg::None, Some(3), 0o4755);
        assert_eq!(
            setid_bits(Path::new("/proc"), 1, None, &by_fd),
            Revert::Failed("the file was named by a descriptor of a process that is gone".into())
        );
        let relative = chmod(PathArg::Complete("tool".into()), Some(-100), 0o4755);
        assert!(matches!(
            setid_bits(Path::new("/proc"), 1, None, &relative),
            Revert::Failed(m) if m.contains("relative path")
        ));
        // A pid that does not exist and no cgroup peers: nothing to reach the file through.
        let gone = chmod(
            PathArg::Complete("/etc/hostname".into()),
            Some(-100),
            0o4755,
        );
        assert!(matches!(
            setid_bits(Path::new("/proc"), u32::MAX - 1, None, &gone),
            Revert::Failed(m) if m.contains("no live process")
        ));
    }

    #[test]
    fn an_absolute_symlink_resolves_inside_the_callers_root() {
        // A fake "container root" with a symlink pointing at an absolute path: resolved in the
        // root, it must land on the container's file, not the host's.
        let dir = temp_dir("root");
        let root = dir.join("rootfs");
        std::fs::create_dir_all(root.join("bin")).unwrap();
        let inside = root.join("bin/tool");
        std::fs::write(&inside, "x").unwrap();
        std::fs::set_permissions(&inside, std::fs::Permissions::from_mode(0o4755)).unwrap();
        let host_target = dir.join("host-tool");
        std::fs::write(&host_target, "x").unwrap();
        std::fs::set_permissions(&host_target, std::fs::Permissions::from_mode(0o4755)).unwrap();
        // In the root, /link -> <host path>; <host path> does not exist inside the root.
        std::os::unix::fs::symlink(&host_target, root.join("link")).unwrap();
        let root_dir = File::open(&root).unwrap();
        let r = clear_in_root(&root_dir, Path::new("/link"), 0o4000);
        assert!(r.is_err(), "must not escape the root: {r:?}");
        assert_eq!(mode_of(&host_target), 0o4755, "the host file is untouched");
        let r = clear_in_root(&root_dir, Path::new("/bin/tool"), 0o4000).unwrap();
        assert!(matches!(r, Revert::Reverted { after: 0o755, .. }), "{r:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
