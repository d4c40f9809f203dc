//! `sensor floor` (hidden; `cargo xtask bench` runs it): the kill tier's hooks with empty
//! programs, the floor its cost is measured against (docs/benchmarks.md, "Kernel tiers").
//!
//! - [`Floor::Tracepoints`]: `sensor_floor` (empty) on every tracepoint the kill tier and the
//!   process telemetry use, as `sensor run --tier kill` attaches them;
//! - [`Floor::RawSyscalls`]: the alternative design, one `tp_btf` program on `sys_enter` and one
//!   on `sys_exit` (each looking the syscall up in a bitmap of the hooked ones) instead of the
//!   per-syscall tracepoints, and `sensor_floor` on the other (sched) tracepoints.

use std::collections::BTreeSet;

use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::Array,
    programs::{BtfTracePoint, TracePoint},
};
use sensor_common::{maps as map_names, programs as p};

use super::{
    OBJECT, ProgramsError,
    catalog::{self, Hook, Tier},
    program,
};

/// Which floor to attach.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Floor {
    /// Empty programs on the kill tier's tracepoints.
    Tracepoints,
    /// `tp_btf` sys_enter/sys_exit with a syscall bitmap, instead of per-syscall tracepoints.
    RawSyscalls,
}

/// The attached floor: detached when dropped.
pub struct Attached {
    _ebpf: Ebpf,
    /// What was attached, for the bench's log.
    pub targets: Vec<String>,
}

/// Attach `floor` (`available`: the catalog programs whose tracepoint this kernel has).
pub fn attach(floor: Floor, available: &BTreeSet<&'static str>) -> Result<Attached, ProgramsError> {
    if OBJECT.is_empty() {
        return Err(ProgramsError::NoObject);
    }
    super::raise_memlock();
    let mut ebpf = EbpfLoader::new()
        .load(OBJECT)
        .map_err(ProgramsError::Load)?;
    let mut targets = Vec::new();
    let mut syscalls = Vec::new();
    let mut other = Vec::new();
    for (tier, program) in catalog::programs() {
        let Hook::Tracepoint(tp) = program.hook else {
            continue;
        };
        if !matches!(tier, Tier::Kill | Tier::Tracepoint) || !available.contains(program.name) {
            continue;
        }
        // A tracepoint two programs use (sched_process_exec) gets one floor program.
        if tp.category == "syscalls" && floor == Floor::RawSyscalls {
            syscalls.push(tp.name);
        } else if !other.contains(&(tp.category, tp.name)) {
            other.push((tp.category, tp.name));
        }
    }
    let empty: &mut TracePoint = program(&mut ebpf, p::FLOOR)?;
    empty.load().map_err(|source| ProgramsError::ProgramLoad {
        name: p::FLOOR,
        feature: "tracepoint programs (CONFIG_BPF_EVENTS)",
        source,
    })?;
    for (category, name) in other {
        empty
            .attach(category, name)
            .map_err(|source| super::attach::attach_error(p::FLOOR, name, source))?;
        targets.push(format!("{category}/{name}"));
    }
    if floor == Floor::RawSyscalls {
        let mut bitmap: Array<_, u64> = Array::try_from(
            ebpf.map_mut(map_names::FLOOR_SYSCALLS)
                .ok_or_else(|| super::maps::missing(map_names::FLOOR_SYSCALLS))?,
        )
        .map_err(super::maps::map_error(map_names::FLOOR_SYSCALLS))?;
        let mut words = [0u64; 8];
        for name in &syscalls {
            if let Some(nr) = syscall_number(name) {
                words[nr / 64] |= 1 << (nr % 64);
            }
        }
        for (i, w) in words.iter().enumerate() {
            bitmap
                .set(i as u32, w, 0)
                .map_err(super::maps::map_error(map_names::FLOOR_SYSCALLS))?;
        }
        let btf = Btf::from_sys_fs().map_err(|e| ProgramsError::LsmUnavailable {
            hook: "sys_enter",
            why: format!("kernel BTF: {e}"),
        })?;
        for (name, event) in [
            (p::FLOOR_SYS_ENTER, "sys_enter"),
            (p::FLOOR_SYS_EXIT, "sys_exit"),
        ] {
            let prog: &mut BtfTracePoint = program(&mut ebpf, name)?;
            prog.load(event, &btf)
                .map_err(|source| ProgramsError::ProgramLoad {
                    name,
                    feature: "tp_btf programs (BTF)",
                    source,
                })?;
            prog.attach()
                .map_err(|source| super::attach::attach_error(name, event, source))?;
            targets.push(format!("tp_btf/{event}"));
        }
    }
    Ok(Attached {
        _ebpf: ebpf,
        targets,
    })
}

/// The (x86_64) syscall number of a `sys_enter_NAME` / `sys_exit_NAME` tracepoint.
fn syscall_number(tracepoint: &str) -> Option<usize> {
    let name = tracepoint
        .strip_prefix("sys_enter_")
        .or_else(|| tracepoint.strip_prefix("sys_exit_"))?;
    let nr = match name {
        "chmod" => libc::SYS_chmod,
        "fchmod" => libc::SYS_fchmod,
        "fchmodat" => libc::SYS_fchmodat,
        "fchmodat2" => 452,
        "open" => libc::SYS_open,
        "openat" => libc::SYS_openat,
        "openat2" => libc::SYS_openat2,
        "creat" => libc::SYS_creat,
        "mknod" => libc::SYS_mknod,
        "mknodat" => libc::SYS_mknodat,
        "setuid" => libc::SYS_setuid,
        "setfsuid" => libc::SYS_setfsuid,
        "setreuid" => libc::SYS_setreuid,
        "setresuid" => libc::SYS_setresuid,
        "setgid" => libc::SYS_setgid,
        "setfsgid" => libc::SYS_setfsgid,
        "setregid" => libc::SYS_setregid,
        "setresgid" => libc::SYS_setresgid,
        "capset" => libc::SYS_capset,
        "setxattr" => libc::SYS_setxattr,
        "lsetxattr" => libc::SYS_lsetxattr,
        "fsetxattr" => libc::SYS_fsetxattr,
        "setxattrat" => 463,
        "socket" => libc::SYS_socket,
        "connect" => libc::SYS_connect,
        "sendto" => libc::SYS_sendto,
        _ => return None,
    };
    usize::try_from(nr).ok().filter(|n| *n < 512)
}

#[cfg(test)]
mod tests {
    /// Every syscall tracepoint of the kill tier has a number for the raw-syscall floor's bitmap.
    #[test]
    fn every_kill_tier_syscall_has_a_number() {
        for (_, program) in super::catalog::programs() {
            if let super::Hook::Tracepoint(tp) = program.hook
                && tp.category == "syscalls"
            {
                assert!(super::syscall_number(tp.name).is_some(), "{}", tp.name);
            }
        }
    }
}
