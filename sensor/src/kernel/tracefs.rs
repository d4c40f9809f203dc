//! Tracepoints: where tracefs is, which of the catalog's tracepoints this kernel has, and a
//! check that their record layout is the one the kernel programs read.

use std::{
    collections::BTreeSet,
    ffi::CString,
    fs, io,
    path::{Path, PathBuf},
};

use super::catalog::{self, Hook, Tracepoint};

const TRACEFS_DIRS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    #[error(
        "kernel feature missing: tracefs (not mounted at {} and mounting it failed: {source}); \
         mount it with 'mount -t tracefs tracefs /sys/kernel/tracing'",
        TRACEFS_DIRS[0]
    )]
    NotMounted {
        #[source]
        source: io::Error,
    },
    #[error(
        "kernel feature missing: tracepoint {name} (syscall tracepoints need CONFIG_FTRACE_SYSCALLS): {source}"
    )]
    Missing {
        name: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("tracepoint {name}: unexpected record layout, field '{field}' not at offset {offset}")]
    Layout {
        name: &'static str,
        field: &'static str,
        offset: usize,
    },
}

/// The tracefs mount point, mounting it at `/sys/kernel/tracing` when nothing is mounted.
pub fn tracefs_root() -> Result<PathBuf, TracefsError> {
    if let Some(dir) = TRACEFS_DIRS
        .iter()
        .map(Path::new)
        .find(|d| d.join("events").is_dir())
    {
        return Ok(dir.to_owned());
    }
    let target = TRACEFS_DIRS[0];
    let c = |s: &str| CString::new(s).expect("no NUL");
    let (src, dst, fstype) = (c("tracefs"), c(target), c("tracefs"));
    // SAFETY: valid NUL-terminated strings, no data argument.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            dst.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(TracefsError::NotMounted {
            source: io::Error::last_os_error(),
        });
    }
    tracing::info!(path = target, "mounted tracefs");
    Ok(PathBuf::from(target))
}

/// The programs of the catalog whose tracepoint this kernel has, each tracepoint's record
/// layout checked against what its program reads. A missing required tracepoint is an error;
/// a missing optional one is logged and its program left out.
pub fn available(root: &Path) -> Result<BTreeSet<&'static str>, TracefsError> {
    let mut found = BTreeSet::new();
    for (_, program) in catalog::programs() {
        let Hook::Tracepoint(tp) = program.hook else {
            continue;
        };
        let path = root
            .join("events")
            .join(tp.category)
            .join(tp.name)
            .join("format");
        match fs::read_to_string(&path) {
            Ok(format) => {
                check_layout(&tp, &format)?;
                found.insert(program.name);
            }
            Err(source) if tp.required => {
                return Err(TracefsError::Missing {
                    name: tp.name,
                    source,
                });
            }
            Err(_) => tracing::info!(tracepoint = tp.name, "not available on this kernel"),
        }
    }
    Ok(found)
}

/// The offset of field `name` in a tracepoint `format` file.
fn field_offset(format: &str, name: &str) -> Option<usize> {
    format.lines().find_map(|line| {
        let mut parts = line.trim().split(';').map(str::trim);
        let decl = parts.next()?.strip_prefix("field:")?;
        let off = parts.next()?.strip_prefix("offset:")?;
        (decl.rsplit([' ', '*']).next() == Some(name))
            .then(|| off.parse().ok())
            .flatten()
    })
}

fn check_layout(tp: &Tracepoint, format: &str) -> Result<(), TracefsError> {
    for &(field, offset) in tp.fields {
        if field_offset(format, field) != Some(offset) {
            return Err(TracefsError::Layout {
                name: tp.name,
                field,
                offset,
            });
        }
    }
    Ok(())
}

/// Offset of `__data_loc char[] filename` in `sched:sched_process_exec` records.
pub fn exec_filename_offset(root: &Path) -> Result<u64, TracefsError> {
    let path = root.join("events/sched/sched_process_exec/format");
    let format = fs::read_to_string(&path).map_err(|source| TracefsError::Missing {
        name: "sched/sched_process_exec",
        source,
    })?;
    let ok = format
        .lines()
        .any(|l| l.contains("__data_loc char[] filename;"));
    match field_offset(&format, "filename") {
        Some(off) if ok => Ok(off as u64),
        _ => Err(TracefsError::Layout {
            name: "sched/sched_process_exec",
            field: "filename",
            offset: 0,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FCHMODAT2: &str = "name: sys_enter_fchmodat2\nID: 798\nformat:\n\
        \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
        \tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;\n\
        \tfield:int dfd;\toffset:16;\tsize:8;\tsigned:0;\n\
        \tfield:const char * filename;\toffset:24;\tsize:8;\tsigned:0;\n\
        \tfield:umode_t mode;\toffset:32;\tsize:8;\tsigned:0;\n\
        \tfield:unsigned int flags;\toffset:40;\tsize:8;\tsigned:0;\n";

    /// The catalog's fchmodat2 tracepoint.
    fn fchmodat2() -> Tracepoint {
        catalog::programs()
            .find_map(|(_, p)| match p.hook {
                Hook::Tracepoint(tp) if tp.name == "sys_enter_fchmodat2" => Some(tp),
                _ => None,
            })
            .expect("fchmodat2 is in the catalog")
    }

    #[test]
    fn accepts_the_expected_layout() {
        check_layout(&fchmodat2(), FCHMODAT2).unwrap();
    }

    #[test]
    fn finds_the_exec_filename_data_loc() {
        let exec = "name: sched_process_exec\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\n\
            \tfield:__data_loc char[] filename;\toffset:8;\tsize:4;\tsigned:0;\n\tfield:pid_t pid;\toffset:12;\tsize:4;\tsigned:1;\n";
        assert_eq!(field_offset(exec, "filename"), Some(8));
        assert_eq!(field_offset(exec, "pid"), Some(12));
        assert_eq!(field_offset(exec, "old_pid"), None);
    }

    #[test]
    fn rejects_a_moved_field() {
        let moved = FCHMODAT2.replace("offset:32", "offset:48");
        let err = check_layout(&fchmodat2(), &moved).unwrap_err();
        assert!(
            matches!(
                err,
                TracefsError::Layout {
                    field: "mode",
                    offset: 32,
                    ..
                }
            ),
            "{err}"
        );
    }
}
