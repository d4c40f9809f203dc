//! Scope roots: cgroup v2 directories below which the sensor enforces and reports.
//!
//! A root is validated before anything is loaded: it must exist, be a directory on a cgroup2
//! file system, and not be the cgroup2 root (the whole host). Its cgroup id is the directory's
//! inode number, which is what `bpf_get_current_cgroup_id()` reports.

use std::{
    ffi::CString,
    fs::File,
    io,
    os::unix::{ffi::OsStrExt as _, fs::MetadataExt as _},
    path::{Path, PathBuf},
};

/// `CGROUP2_SUPER_MAGIC` from `linux/magic.h`.
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
/// The root directory of every cgroup2 mount has inode 1.
const CGROUP2_ROOT_INO: u64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum ScopeError {
    #[error(
        "scope cgroup {path} does not exist: create it (mkdir -p {path}), or leave --scope-cgroup out and the sensor protects a cgroup it creates itself"
    )]
    Missing { path: PathBuf },
    #[error("scope cgroup {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("scope cgroup {path}: not a directory")]
    NotDir { path: PathBuf },
    #[error(
        "scope cgroup {path}: not on a cgroup v2 file system (mount cgroup2 and pass a directory below it)"
    )]
    NotCgroup2 { path: PathBuf },
    #[error("scope cgroup {path}: is the cgroup2 root (the whole host); pass a cgroup below it")]
    Root { path: PathBuf },
}

/// A validated scope root, with the directory open for attaching programs.
#[derive(Debug)]
pub struct ScopeRoot {
    pub path: PathBuf,
    /// cgroup v2 id (inode number of the directory).
    pub id: u64,
    pub dir: File,
    /// The daemon made this cgroup itself (and removes it on exit when empty).
    pub created: bool,
}

impl ScopeRoot {
    pub fn open(path: &Path) -> Result<Self, ScopeError> {
        let open_err = |source| ScopeError::Open {
            path: path.to_owned(),
            source,
        };
        let meta = match std::fs::metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ScopeError::Missing {
                    path: path.to_owned(),
                });
            }
            Err(e) => return Err(open_err(e)),
        };
        if !meta.is_dir() {
            return Err(ScopeError::NotDir {
                path: path.to_owned(),
            });
        }
        if fs_magic(path).map_err(open_err)? != CGROUP2_SUPER_MAGIC {
            return Err(ScopeError::NotCgroup2 {
                path: path.to_owned(),
            });
        }
        if meta.ino() == CGROUP2_ROOT_INO {
            return Err(ScopeError::Root {
                path: path.to_owned(),
            });
        }
        let dir = File::open(path).map_err(open_err)?;
        Ok(Self {
            path: path.to_owned(),
            id: meta.ino(),
            dir,
            created: false,
        })
    }
}

fn fs_magic(path: &Path) -> io::Result<i64> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
    let mut buf = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: valid NUL-terminated path and a buffer of the right type.
    let rc = unsafe { libc::statfs(c_path.as_ptr(), buf.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statfs succeeded and filled the buffer.
    let f_type = unsafe { buf.assume_init() }.f_type;
    #[expect(
        clippy::unnecessary_cast,
        reason = "f_type's C type differs by architecture"
    )]
    Ok(f_type as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_path_is_rejected_with_its_name() {
        let err = ScopeRoot::open(Path::new("/nonexistent/sensor-scope")).unwrap_err();
        assert!(matches!(err, ScopeError::Missing { .. }));
        let text = err.to_string();
        assert!(text.contains("/nonexistent/sensor-scope"), "{text}");
        assert!(
            text.contains("mkdir -p") && text.contains("leave --scope-cgroup out"),
            "{text}"
        );
    }

    #[test]
    fn a_file_or_a_non_cgroup_directory_is_rejected() {
        let dir = std::env::temp_dir();
        assert!(matches!(
            ScopeRoot::open(&dir).unwrap_err(),
            ScopeError::NotCgroup2 { .. }
        ));
        let file = dir.join(format!("sensor-scope-test-{}", std::process::id()));
        std::fs::write(&file, b"").unwrap();
        let err = ScopeRoot::open(&file).unwrap_err();
        std::fs::remove_file(&file).unwrap();
        assert!(matches!(err, ScopeError::NotDir { .. }));
    }
}
