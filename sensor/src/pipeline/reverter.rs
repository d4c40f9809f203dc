//! The kill tier's revert path, ahead of the event pipeline: the kernel puts a copy of every
//! killed set-id chmod or creation into a ring of its own (`SENSOR_REVERTS`, always woken), and
//! a thread of its own reads it and undoes the call at once ([`super::revert`]), however many
//! events wait in the main ring. The chmod step then finds the outcome here ([`Outcomes::take`])
//! and puts it into the event; when the copy was lost (a full revert ring, counted) it reverts
//! from the event itself, as before.
//!
//! On each copy the thread first takes what only a living caller gives: its root directory
//! (an open descriptor reaches the container's files after the caller is gone), the file's
//! name through its working directory or descriptor, and its cgroup (whose other processes
//! are the second way in). Then it waits for the call to end ([`revert::wait_for_call_end`]) and
//! clears the set-id bits the call asked for.

use std::{
    collections::HashMap,
    fs::File,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    sync::{
        Arc, Condvar, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use aya::maps::{MapData, RingBuf};

use super::{
    chmod::resolve_name,
    revert::{self, Revert},
};
use crate::{
    attribution::cgroups::CgroupIndex,
    event::{self, Body},
};

/// How long the chmod step waits for an outcome the revert thread has not finished (it
/// waits up to [`revert::CALL_END_WAIT`] per call itself).
const IN_HAND_WAIT: Duration = Duration::from_secs(1);
/// How long the chmod step waits for a copy the revert thread has not read yet (submitted
/// before the event, with a wakeup: it is normally there first).
const UNSEEN_WAIT: Duration = Duration::from_millis(100);
/// Outcomes no event came for (the event was lost to a full ring) are dropped after this.
const KEEP: Duration = Duration::from_secs(30);
/// At most this many outcomes are kept; the oldest finished one goes first.
const CAP: usize = 4096;

/// The identity of a killed call: (pid, tid). A killed thread makes no second call.
type Key = (u32, u32);

/// What the revert thread found out about one killed call.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The file's absolute name, resolved while the caller was alive.
    pub name: Option<PathBuf>,
    pub revert: Revert,
    /// From the copy's arrival to the bits cleared (or the attempt given up).
    pub took: Duration,
}

enum Entry {
    InHand(Instant),
    Done(Outcome, Instant),
}

/// Outcomes of the revert thread, by killed call, for the chmod step.
#[derive(Default)]
pub struct Outcomes {
    entries: Mutex<HashMap<Key, Entry>>,
    changed: Condvar,
}

impl Outcomes {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn begin(&self, key: Key) {
        let mut entries = self.lock();
        let now = Instant::now();
        entries.retain(|k, e| match e {
            Entry::Done(o, at) if now.duration_since(*at) > KEEP => {
                tracing::warn!(
                    pid = k.0,
                    outcome = ?o.revert,
                    "a killed set-id call was handled but its event never came (lost to a full ring buffer: see the loss records)"
                );
                false
            }
            Entry::InHand(at) => now.duration_since(*at) <= KEEP,
            Entry::Done(..) => true,
        });
        if entries.len() >= CAP
            && let Some(oldest) = entries
                .iter()
                .filter_map(|(k, e)| match e {
                    Entry::Done(_, at) => Some((*at, *k)),
                    Entry::InHand(_) => None,
                })
                .min()
                .map(|(_, k)| k)
        {
            entries.remove(&oldest);
        }
        entries.insert(key, Entry::InHand(now));
    }

    fn finish(&self, key: Key, outcome: Outcome) {
        self.lock()
            .insert(key, Entry::Done(outcome, Instant::now()));
        self.changed.notify_all();
    }

    /// The outcome for the killed call of `pid`/`tid`, removed; waits while the thread has it
    /// in hand ([`IN_HAND_WAIT`]) or has not read its copy yet ([`UNSEEN_WAIT`]). `None`: no
    /// copy came (the revert ring was full), or the thread is stuck.
    pub fn take(&self, pid: u32, tid: u32) -> Option<Outcome> {
        let key = (pid, tid);
        let start = Instant::now();
        let mut entries = self.lock();
        loop {
            let limit = match entries.get(&key) {
                Some(Entry::Done(..)) => match entries.remove(&key) {
                    Some(Entry::Done(o, _)) => return Some(o),
                    _ => unreachable!("just seen"),
                },
                Some(Entry::InHand(_)) => IN_HAND_WAIT,
                None => UNSEEN_WAIT,
            };
            let left = limit.checked_sub(start.elapsed())?;
            entries = self
                .changed
                .wait_timeout(entries, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    #[cfg(test)]
    pub fn finish_for_test(&self, pid: u32, tid: u32, outcome: Outcome) {
        self.begin((pid, tid));
        self.finish((pid, tid), outcome);
    }
}

/// The revert thread; stops when `stop` is set (checked every 100 ms).
pub fn spawn(
    mut ring: RingBuf<MapData>,
    proc_root: PathBuf,
    cgroup_root: Option<PathBuf>,
    outcomes: Arc<Outcomes>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("sensor-revert".into())
        .spawn(move || {
            // Walked only if a cgroup cannot be opened by its id (no CAP_DAC_READ_SEARCH).
            let mut index: Option<CgroupIndex> = None;
            while !stop.load(Ordering::Relaxed) {
                let mut fd = libc::pollfd {
                    fd: ring.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                unsafe { libc::poll(&mut fd, 1, 100) };
                while let Some(item) = ring.next() {
                    let decoded = event::decode(&item);
                    drop(item);
                    match decoded {
                        Ok(ev) => handle(
                            &ev,
                            &proc_root,
                            cgroup_root.as_deref(),
                            &mut index,
                            &outcomes,
                        ),
                        Err(err) => tracing::warn!(error = %err, "undecodable revert record"),
                    }
                }
            }
        })
}

fn handle(
    ev: &event::Event,
    proc_root: &Path,
    cgroup_root: Option<&Path>,
    index: &mut Option<CgroupIndex>,
    outcomes: &Outcomes,
) {
    let Body::Chmod(chmod) = &ev.body else {
        return;
    };
    let arrived = Instant::now();
    let key = (ev.pid, ev.tid);
    outcomes.begin(key);
    // While the caller is alive (the kill lands when its call returns).
    let own = File::open(proc_root.join(ev.pid.to_string()).join("root")).ok();
    let name = resolve_name(proc_root, ev.pid, chmod);
    // By the event's cgroup id first: the caller may already be gone (its kill lands when its
    // call returns), its cgroup's other processes are not. By handle where the daemon may
    // (CAP_DAC_READ_SEARCH), else through an index of the cgroup tree, else the caller's own
    // /proc entry.
    let cgroup_dir = cgroup_root.and_then(|root| {
        cgroup_by_id(root, ev.cgroup_id)
            .or_else(|| {
                if index.is_none() {
                    *index = CgroupIndex::scan(root).ok();
                }
                let path = index.as_mut()?.path(ev.cgroup_id)?;
                Some(root.join(path.trim_start_matches('/')))
            })
            .or_else(|| cgroup_of(proc_root, ev.pid, root))
    });
    let mut chmod = chmod.clone();
    chmod.name.clone_from(&name);
    let revert = if revert::wait_for_call_end(proc_root, ev.pid, ev.tid, revert::CALL_END_WAIT) {
        revert::setid_bits_from(own, proc_root, ev.pid, cgroup_dir.as_deref(), &chmod)
    } else {
        // Undoing a call that has not happened yet would be undone by it.
        Revert::Failed(format!(
            "the caller was still running {:?} after the kill",
            revert::CALL_END_WAIT
        ))
    };
    outcomes.finish(
        key,
        Outcome {
            name,
            revert,
            took: arrived.elapsed(),
        },
    );
}

/// The cgroup v2 directory whose id (the kernfs node id the kernel programs read) is `id`:
/// opened by file handle on the cgroup2 mount (`FILEID_KERNFS`, needs CAP_DAC_READ_SEARCH),
/// named through `/proc/self/fd`.
fn cgroup_by_id(root: &Path, id: u64) -> Option<PathBuf> {
    use std::os::{fd::FromRawFd as _, unix::ffi::OsStrExt as _};
    /// include/linux/exportfs.h: a kernfs node id in 8 bytes.
    const FILEID_KERNFS: libc::c_int = 0xfe;
    #[repr(C)]
    struct Handle {
        bytes: libc::c_uint,
        kind: libc::c_int,
        id: [u8; 8],
    }
    if id == 0 {
        return None;
    }
    let mount = File::open(root).ok()?;
    let mut handle = Handle {
        bytes: 8,
        kind: FILEID_KERNFS,
        id: id.to_ne_bytes(),
    };
    // SAFETY: a file_handle header followed by its 8 handle bytes; the fd is owned below.
    let fd = unsafe {
        libc::open_by_handle_at(
            mount.as_raw_fd(),
            (&raw mut handle).cast(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return None;
    }
    // SAFETY: a fresh descriptor we own.
    let dir = unsafe { File::from_raw_fd(fd) };
    let path = std::fs::read_link(format!("/proc/self/fd/{}", dir.as_raw_fd())).ok()?;
    // A cgroup removed meanwhile reads " (deleted)".
    (!path.as_os_str().as_bytes().ends_with(b" (deleted)")).then_some(path)
}

/// The cgroup v2 directory of `pid` (`0::/path` in `/proc/<pid>/cgroup`), under `root`.
fn cgroup_of(proc_root: &Path, pid: u32, root: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(proc_root.join(pid.to_string()).join("cgroup")).ok()?;
    let path = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    Some(root.join(path.trim_start_matches('/')))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(why: &str) -> Outcome {
        Outcome {
            name: None,
            revert: Revert::NotNeeded(why.into()),
            took: Duration::ZERO,
        }
    }

    #[test]
    fn an_outcome_is_taken_once_and_a_missing_one_gives_up() {
        let o = Outcomes::default();
        o.finish_for_test(10, 11, outcome("a"));
        assert!(matches!(o.take(10, 11), Some(x) if x.revert == Revert::NotNeeded("a".into())));
        let t = Instant::now();
        assert!(o.take(10, 11).is_none());
        assert!(t.elapsed() >= UNSEEN_WAIT);
    }

    #[test]
    fn the_step_waits_for_an_outcome_in_hand() {
        let o = Arc::new(Outcomes::default());
        o.begin((5, 6));
        let o2 = Arc::clone(&o);
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            o2.finish((5, 6), outcome("late"));
        });
        // Longer than UNSEEN_WAIT: the entry in hand makes it wait.
        assert!(matches!(o.take(5, 6), Some(x) if x.revert == Revert::NotNeeded("late".into())));
        t.join().unwrap();
    }

    /// The id the kernel programs see (the directory's inode number on cgroup2) opens the
    /// directory by handle.
    #[test]
    fn cgroup_by_id_finds_this_process_cgroup() {
        use std::os::unix::fs::MetadataExt as _;
        let Ok(root) = crate::attribution::cgroups::cgroup2_root() else {
            panic!("no cgroup2 mount");
        };
        let own = cgroup_of(Path::new("/proc"), std::process::id(), &root).unwrap();
        let id = std::fs::metadata(&own).unwrap().ino();
        // Unprivileged runs cannot open by handle (CAP_DAC_READ_SEARCH): then None, never a
        // wrong directory.
        match cgroup_by_id(&root, id) {
            Some(found) => assert_eq!(found, own),
            None => assert_ne!(unsafe { libc::geteuid() }, 0, "root could not open {own:?}"),
        }
        assert_eq!(cgroup_by_id(&root, 0), None);
    }

    #[test]
    fn cgroup_of_reads_the_unified_line() {
        let dir = std::env::temp_dir().join(format!("sensor-reverter-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("7")).unwrap();
        std::fs::write(
            dir.join("7/cgroup"),
            "1:name=systemd:/x\n0::/kubepods/pod1/c\n",
        )
        .unwrap();
        assert_eq!(
            cgroup_of(&dir, 7, Path::new("/sys/fs/cgroup")),
            Some(PathBuf::from("/sys/fs/cgroup/kubepods/pod1/c"))
        );
        assert_eq!(cgroup_of(&dir, 8, Path::new("/sys/fs/cgroup")), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
