//! Syscall tracepoints: where tracefs is, which chmod-family and set*id tracepoints this kernel
//! has, and a check that their record layout is the one the kernel programs read.

use std::{
    ffi::CString,
    fs, io,
    path::{Path, PathBuf},
};

use sensor_common::programs;

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

/// One syscall tracepoint and the program that handles it.
#[derive(Clone, Copy, Debug)]
pub struct SyscallTracepoint {
    /// Tracepoint name in the `syscalls` category.
    pub name: &'static str,
    pub program: &'static str,
    /// Whether start-up fails without it (fchmodat2 exists from Linux 6.6).
    pub required: bool,
    /// Argument fields and their offsets, as the kernel program reads them.
    pub fields: &'static [(&'static str, usize)],
}

pub const CHMOD_TRACEPOINTS: [SyscallTracepoint; 4] = [
    SyscallTracepoint {
        name: "sys_enter_chmod",
        program: programs::CHMOD,
        required: true,
        fields: &[("filename", 16), ("mode", 24)],
    },
    SyscallTracepoint {
        name: "sys_enter_fchmod",
        program: programs::FCHMOD,
        required: true,
        fields: &[("fd", 16), ("mode", 24)],
    },
    SyscallTracepoint {
        name: "sys_enter_fchmodat",
        program: programs::FCHMODAT,
        required: true,
        fields: &[("dfd", 16), ("filename", 24), ("mode", 32)],
    },
    SyscallTracepoint {
        name: "sys_enter_fchmodat2",
        program: programs::FCHMODAT2,
        required: false,
        fields: &[("dfd", 16), ("filename", 24), ("mode", 32), ("flags", 40)],
    },
];

/// connect/sendto entry and exit (sockets created outside the scope).
pub const LATE_SOCKET_TRACEPOINTS: [SyscallTracepoint; 4] = [
    required(
        "sys_enter_connect",
        programs::CONN_ENTER,
        &[("uservaddr", 24)],
    ),
    required("sys_exit_connect", programs::CONN_EXIT, &[("ret", 16)]),
    required("sys_enter_sendto", programs::SENDTO_ENTER, &[("addr", 48)]),
    required("sys_exit_sendto", programs::SENDTO_EXIT, &[("ret", 16)]),
];

/// Kill tier for set-id file creation, file capabilities, capset and packet sockets (the LSM
/// tier's path_mknod, inode_setxattr, capset and socket_create). open, creat and mknod exist on x86_64 only;
/// openat2 from Linux 5.6, setxattrat from 6.13.
pub const SETID_TRACEPOINTS: [SyscallTracepoint; 12] = [
    optional(
        "sys_enter_open",
        programs::OPEN,
        &[("filename", 16), ("flags", 24), ("mode", 32)],
    ),
    required(
        "sys_enter_openat",
        programs::OPENAT,
        &[("dfd", 16), ("filename", 24), ("flags", 32), ("mode", 40)],
    ),
    optional(
        "sys_enter_openat2",
        programs::OPENAT2,
        &[("dfd", 16), ("filename", 24), ("how", 32)],
    ),
    optional(
        "sys_enter_creat",
        programs::CREAT,
        &[("pathname", 16), ("mode", 24)],
    ),
    optional(
        "sys_enter_mknod",
        programs::MKNOD,
        &[("filename", 16), ("mode", 24)],
    ),
    required(
        "sys_enter_mknodat",
        programs::MKNODAT,
        &[("dfd", 16), ("filename", 24), ("mode", 32)],
    ),
    required("sys_enter_setxattr", programs::SETXATTR, &[("name", 24)]),
    required("sys_enter_lsetxattr", programs::LSETXATTR, &[("name", 24)]),
    required("sys_enter_fsetxattr", programs::FSETXATTR, &[("name", 24)]),
    optional(
        "sys_enter_setxattrat",
        programs::SETXATTRAT,
        &[("name", 40)],
    ),
    required("sys_enter_capset", programs::CAPSET, &[("data", 24)]),
    required(
        "sys_enter_socket",
        programs::SOCKET,
        &[("family", 16), ("type", 24), ("protocol", 32)],
    ),
];

/// The set*id syscalls (privilege raises to uid/gid 0).
pub const CREDS_TRACEPOINTS: [SyscallTracepoint; 8] = [
    required("sys_enter_setuid", programs::SETUID, &[("uid", 16)]),
    required("sys_enter_setfsuid", programs::SETFSUID, &[("uid", 16)]),
    required(
        "sys_enter_setreuid",
        programs::SETREUID,
        &[("ruid", 16), ("euid", 24)],
    ),
    required(
        "sys_enter_setresuid",
        programs::SETRESUID,
        &[("ruid", 16), ("euid", 24), ("suid", 32)],
    ),
    required("sys_enter_setgid", programs::SETGID, &[("gid", 16)]),
    required("sys_enter_setfsgid", programs::SETFSGID, &[("gid", 16)]),
    required(
        "sys_enter_setregid",
        programs::SETREGID,
        &[("rgid", 16), ("egid", 24)],
    ),
    required(
        "sys_enter_setresgid",
        programs::SETRESGID,
        &[("rgid", 16), ("egid", 24), ("sgid", 32)],
    ),
];

const fn required(
    name: &'static str,
    program: &'static str,
    fields: &'static [(&'static str, usize)],
) -> SyscallTracepoint {
    SyscallTracepoint {
        name,
        program,
        required: true,
        fields,
    }
}

/// As [`required`], for tracepoints some kernels lack (start-up goes on without them).
const fn optional(
    name: &'static str,
    program: &'static str,
    fields: &'static [(&'static str, usize)],
) -> SyscallTracepoint {
    SyscallTracepoint {
        required: false,
        ..required(name, program, fields)
    }
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

/// The chmod-family and set*id tracepoints to attach on this kernel, each with its layout
/// checked.
pub fn syscall_tracepoints(root: &Path) -> Result<Vec<SyscallTracepoint>, TracefsError> {
    let mut found = Vec::new();
    for tp in CHMOD_TRACEPOINTS
        .into_iter()
        .chain(CREDS_TRACEPOINTS)
        .chain(LATE_SOCKET_TRACEPOINTS)
        .chain(SETID_TRACEPOINTS)
    {
        let path = root.join("events/syscalls").join(tp.name).join("format");
        match fs::read_to_string(&path) {
            Ok(format) => {
                check_layout(tp, &format)?;
                found.push(tp);
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

fn check_layout(tp: SyscallTracepoint, format: &str) -> Result<(), TracefsError> {
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

    #[test]
    fn accepts_the_expected_layout() {
        check_layout(CHMOD_TRACEPOINTS[3], FCHMODAT2).unwrap();
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
        let err = check_layout(CHMOD_TRACEPOINTS[3], &moved).unwrap_err();
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
