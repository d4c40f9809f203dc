//! The protection catalog: what the sensor protects, and which kernel programs serve each
//! protection at which tier. Loading ([`super::load`]), `sensor status`, the metrics and the
//! protection table of docs/operations.md are all driven from this one table.
//!
//! A protection lists its variants best first. At start-up the loader takes, per protection,
//! the first variant the running kernel accepts (and `--tier` allows); `sensor status` names
//! the tier of the variant that serves it. Adding a protection is one entry here, its kernel
//! program(s) in `sensor-ebpf`, and its decode/convert arm in `event`.

use sensor_common::{Raise, programs as p};

/// How a program enforces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tier {
    /// cgroup programs at the scope roots: the call fails with EPERM (or the packet is dropped).
    Cgroup,
    /// BPF LSM: the call fails with EPERM before it changes anything.
    Lsm,
    /// fmod_ret on the hook's `security_*` function (BPF trampolines, where BPF LSM is built
    /// but not active): the same decision, EPERM before anything changes.
    Override,
    /// Syscall tracepoints: the caller is killed (SIGKILL); the call may have taken effect, and
    /// the daemon removes set-id bits afterwards where it can.
    Kill,
    /// Detection only (process lifecycle telemetry).
    Tracepoint,
}

impl Tier {
    /// The name `sensor status`, the API and the metrics use.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Cgroup => "cgroup",
            Self::Lsm => "lsm",
            Self::Override => "override",
            Self::Kill => "kill",
            Self::Tracepoint => "tracepoint",
        }
    }
}

/// Where a program attaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// A cgroup sock_addr program, at every scope root (its attach type is its section's).
    SockAddr,
    /// A cgroup skb egress program, at every scope root.
    Egress,
    /// A BPF LSM hook.
    Lsm(&'static str),
    /// fmod_ret on a kernel function (the `security_*` function of an LSM hook).
    Override(&'static str),
    /// A tracepoint.
    Tracepoint(Tracepoint),
}

/// A tracepoint and the record fields the program reads (checked against the tracepoint's
/// `format` file before anything attaches).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tracepoint {
    pub category: &'static str,
    pub name: &'static str,
    /// Whether start-up fails without it (some syscalls exist only on some kernels).
    pub required: bool,
    /// Argument fields and their offsets, as the program reads them.
    pub fields: &'static [(&'static str, usize)],
}

/// One kernel program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Program {
    /// Its name in the object (`sensor_common::programs`).
    pub name: &'static str,
    pub hook: Hook,
    /// It reads kernel structs at offsets taken from the running kernel's BTF: without them it
    /// is not attached.
    pub needs_offsets: bool,
}

/// The programs that together serve a protection at one tier.
#[derive(Clone, Copy, Debug)]
pub struct Variant {
    pub tier: Tier,
    pub programs: &'static [Program],
}

/// The policy rules that drive a protection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rules {
    /// `type: metadata` rules (destinations).
    Metadata,
    /// `type: chmod` rules.
    Chmod,
    /// `type: privilege` rules naming this raise.
    Privilege(Raise),
    /// None: telemetry.
    None,
}

/// What the sensor protects.
#[derive(Clone, Copy, Debug)]
pub struct Protection {
    /// The name `sensor status` and the metrics (label `protection`) use.
    pub name: &'static str,
    /// One line for the docs.
    pub summary: &'static str,
    pub rules: Rules,
    /// Best first.
    pub variants: &'static [Variant],
}

const fn lsm(name: &'static str, hook: &'static str) -> Program {
    Program {
        name,
        hook: Hook::Lsm(hook),
        needs_offsets: true,
    }
}

const fn ovr(name: &'static str, function: &'static str) -> Program {
    Program {
        name,
        hook: Hook::Override(function),
        needs_offsets: true,
    }
}

const fn syscall(
    name: &'static str,
    tracepoint: &'static str,
    fields: &'static [(&'static str, usize)],
) -> Program {
    Program {
        name,
        hook: Hook::Tracepoint(Tracepoint {
            category: "syscalls",
            name: tracepoint,
            required: true,
            fields,
        }),
        needs_offsets: false,
    }
}

/// As [`syscall`], for a tracepoint some kernels lack (start-up goes on without it).
const fn optional(
    name: &'static str,
    tracepoint: &'static str,
    fields: &'static [(&'static str, usize)],
) -> Program {
    let mut program = syscall(name, tracepoint, fields);
    if let Hook::Tracepoint(tp) = &mut program.hook {
        tp.required = false;
    }
    program
}

const fn sched(name: &'static str, tracepoint: &'static str, needs_offsets: bool) -> Program {
    Program {
        name,
        hook: Hook::Tracepoint(Tracepoint {
            category: "sched",
            name: tracepoint,
            required: true,
            fields: &[],
        }),
        needs_offsets,
    }
}

const fn cgroup(name: &'static str, hook: Hook) -> Program {
    Program {
        name,
        hook,
        needs_offsets: false,
    }
}

const fn variant(tier: Tier, programs: &'static [Program]) -> Variant {
    Variant { tier, programs }
}

/// Every protection, in the order `sensor status` lists them.
pub const PROTECTIONS: [Protection; 12] = [
    Protection {
        name: "metadata-connect",
        summary: "TCP connects and UDP sends to a listed destination (TCP Fast Open and io_uring included)",
        rules: Rules::Metadata,
        variants: &[variant(
            Tier::Cgroup,
            &[
                cgroup(p::CONNECT4, Hook::SockAddr),
                cgroup(p::CONNECT6, Hook::SockAddr),
                cgroup(p::SENDMSG4, Hook::SockAddr),
                cgroup(p::SENDMSG6, Hook::SockAddr),
            ],
        )],
    },
    Protection {
        name: "metadata-raw-packet",
        summary: "packets of raw and ping sockets to a listed destination",
        rules: Rules::Metadata,
        variants: &[
            variant(Tier::Cgroup, &[cgroup(p::EGRESS, Hook::Egress)]),
            // For kernels that refuse current-task helpers in cgroup skb programs: the event
            // names the cgroup, not the process.
            variant(Tier::Cgroup, &[cgroup(p::EGRESS_COMPAT, Hook::Egress)]),
        ],
    },
    Protection {
        name: "metadata-packet",
        summary: "packet sockets (AF_PACKET), whose frames no destination check sees, while a metadata rule applies",
        rules: Rules::Metadata,
        variants: &[
            variant(Tier::Lsm, &[lsm(p::LSM_SOCKET_CREATE, "socket_create")]),
            variant(
                Tier::Override,
                &[ovr(p::OVR_SOCKET_CREATE, "security_socket_create")],
            ),
            variant(
                Tier::Kill,
                &[syscall(
                    p::SOCKET,
                    "sys_enter_socket",
                    &[("family", 16), ("type", 24), ("protocol", 32)],
                )],
            ),
        ],
    },
    Protection {
        name: "metadata-late-connect",
        summary: "connect to a listed destination on a socket created outside the scope",
        rules: Rules::Metadata,
        variants: &[
            variant(Tier::Lsm, &[lsm(p::LSM_SOCKET_CONNECT, "socket_connect")]),
            variant(
                Tier::Override,
                &[ovr(p::OVR_SOCKET_CONNECT, "security_socket_connect")],
            ),
            variant(
                Tier::Kill,
                &[
                    syscall(p::CONN_ENTER, "sys_enter_connect", &[("uservaddr", 24)]),
                    syscall(p::CONN_EXIT, "sys_exit_connect", &[("ret", 16)]),
                ],
            ),
        ],
    },
    Protection {
        name: "metadata-late-send",
        summary: "sending to a listed destination on a socket created outside the scope \
                  (sendto; sendmsg, sendmmsg and io_uring at the lsm and override tiers)",
        rules: Rules::Metadata,
        variants: &[
            variant(Tier::Lsm, &[lsm(p::LSM_SOCKET_SENDMSG, "socket_sendmsg")]),
            variant(
                Tier::Override,
                &[ovr(p::OVR_SOCKET_SENDMSG, "security_socket_sendmsg")],
            ),
            variant(
                Tier::Kill,
                &[
                    syscall(p::SENDTO_ENTER, "sys_enter_sendto", &[("addr", 48)]),
                    syscall(p::SENDTO_EXIT, "sys_exit_sendto", &[("ret", 16)]),
                ],
            ),
        ],
    },
    Protection {
        name: "chmod",
        summary: "chmod, fchmod, fchmodat, fchmodat2 against the chmod rules (set-id bits by default)",
        rules: Rules::Chmod,
        variants: &[
            variant(Tier::Lsm, &[lsm(p::LSM_PATH_CHMOD, "path_chmod")]),
            variant(
                Tier::Override,
                &[ovr(p::OVR_PATH_CHMOD, "security_path_chmod")],
            ),
            variant(
                Tier::Kill,
                &[
                    syscall(
                        p::CHMOD,
                        "sys_enter_chmod",
                        &[("filename", 16), ("mode", 24)],
                    ),
                    syscall(p::FCHMOD, "sys_enter_fchmod", &[("fd", 16), ("mode", 24)]),
                    syscall(
                        p::FCHMODAT,
                        "sys_enter_fchmodat",
                        &[("dfd", 16), ("filename", 24), ("mode", 32)],
                    ),
                    // Linux 6.6 and later.
                    optional(
                        p::FCHMODAT2,
                        "sys_enter_fchmodat2",
                        &[("dfd", 16), ("filename", 24), ("mode", 32), ("flags", 40)],
                    ),
                ],
            ),
        ],
    },
    Protection {
        name: "setid-create",
        summary: "files created with a set-id mode (open with O_CREAT or O_TMPFILE, creat, mknod)",
        rules: Rules::Chmod,
        variants: &[
            variant(Tier::Lsm, &[lsm(p::LSM_PATH_MKNOD, "path_mknod")]),
            variant(
                Tier::Override,
                &[ovr(p::OVR_PATH_MKNOD, "security_path_mknod")],
            ),
            variant(
                Tier::Kill,
                &[
                    // open, creat and mknod exist on x86_64 only; openat2 from Linux 5.6.
                    optional(
                        p::OPEN,
                        "sys_enter_open",
                        &[("filename", 16), ("flags", 24), ("mode", 32)],
                    ),
                    syscall(
                        p::OPENAT,
                        "sys_enter_openat",
                        &[("dfd", 16), ("filename", 24), ("flags", 32), ("mode", 40)],
                    ),
                    optional(
                        p::OPENAT2,
                        "sys_enter_openat2",
                        &[("dfd", 16), ("filename", 24), ("how", 32)],
                    ),
                    optional(
                        p::CREAT,
                        "sys_enter_creat",
                        &[("pathname", 16), ("mode", 24)],
                    ),
                    optional(
                        p::MKNOD,
                        "sys_enter_mknod",
                        &[("filename", 16), ("mode", 24)],
                    ),
                    syscall(
                        p::MKNODAT,
                        "sys_enter_mknodat",
                        &[("dfd", 16), ("filename", 24), ("mode", 32)],
                    ),
                ],
            ),
        ],
    },
    Protection {
        name: "setuid-root",
        summary: "a process whose real uid is not 0 making a uid 0",
        rules: Rules::Privilege(Raise::SetuidRoot),
        variants: &[
            variant(Tier::Lsm, &[lsm(p::LSM_FIX_SETUID, "task_fix_setuid")]),
            variant(
                Tier::Override,
                &[ovr(p::OVR_FIX_SETUID, "security_task_fix_setuid")],
            ),
            variant(
                Tier::Kill,
                &[
                    syscall(p::SETUID, "sys_enter_setuid", &[("uid", 16)]),
                    syscall(p::SETFSUID, "sys_enter_setfsuid", &[("uid", 16)]),
                    syscall(
                        p::SETREUID,
                        "sys_enter_setreuid",
                        &[("ruid", 16), ("euid", 24)],
                    ),
                    syscall(
                        p::SETRESUID,
                        "sys_enter_setresuid",
                        &[("ruid", 16), ("euid", 24), ("suid", 32)],
                    ),
                ],
            ),
        ],
    },
    Protection {
        name: "setgid-root",
        summary: "a process whose real gid is not 0 making a gid 0",
        rules: Rules::Privilege(Raise::SetgidRoot),
        variants: &[
            variant(Tier::Lsm, &[lsm(p::LSM_FIX_SETGID, "task_fix_setgid")]),
            variant(
                Tier::Override,
                &[ovr(p::OVR_FIX_SETGID, "security_task_fix_setgid")],
            ),
            variant(
                Tier::Kill,
                &[
                    syscall(p::SETGID, "sys_enter_setgid", &[("gid", 16)]),
                    syscall(p::SETFSGID, "sys_enter_setfsgid", &[("gid", 16)]),
                    syscall(
                        p::SETREGID,
                        "sys_enter_setregid",
                        &[("rgid", 16), ("egid", 24)],
                    ),
                    syscall(
                        p::SETRESGID,
                        "sys_enter_setresgid",
                        &[("rgid", 16), ("egid", 24), ("sgid", 32)],
                    ),
                ],
            ),
        ],
    },
    Protection {
        name: "capset",
        summary: "capset adding a capability the process did not hold",
        rules: Rules::Privilege(Raise::Capset),
        variants: &[
            variant(Tier::Lsm, &[lsm(p::LSM_CAPSET, "capset")]),
            variant(Tier::Override, &[ovr(p::OVR_CAPSET, "security_capset")]),
            variant(
                Tier::Kill,
                &[Program {
                    needs_offsets: true,
                    ..syscall(p::CAPSET, "sys_enter_capset", &[("data", 24)])
                }],
            ),
        ],
    },
    Protection {
        name: "setid-exec",
        summary: "an exec of a set-uid or set-gid file that changes the process's ids",
        rules: Rules::Privilege(Raise::SetidExec),
        variants: &[
            variant(Tier::Lsm, &[lsm(p::LSM_SETID_EXEC, "bprm_creds_from_file")]),
            variant(
                Tier::Override,
                &[ovr(p::OVR_SETID_EXEC, "security_bprm_creds_from_file")],
            ),
            variant(
                Tier::Kill,
                &[sched(p::SETID_EXEC, "sched_process_exec", true)],
            ),
        ],
    },
    Protection {
        name: "file-caps",
        summary: "writing security.capability (granting file capabilities)",
        rules: Rules::Privilege(Raise::FileCaps),
        variants: &[
            variant(Tier::Lsm, &[lsm(p::LSM_SETXATTR, "inode_setxattr")]),
            variant(
                Tier::Override,
                &[ovr(p::OVR_SETXATTR, "security_inode_setxattr")],
            ),
            variant(
                Tier::Kill,
                &[
                    syscall(p::SETXATTR, "sys_enter_setxattr", &[("name", 24)]),
                    syscall(p::LSETXATTR, "sys_enter_lsetxattr", &[("name", 24)]),
                    syscall(p::FSETXATTR, "sys_enter_fsetxattr", &[("name", 24)]),
                    // Linux 6.13 and later.
                    optional(p::SETXATTRAT, "sys_enter_setxattrat", &[("name", 40)]),
                ],
            ),
        ],
    },
];

/// Process lifecycle telemetry (exec and exit of tasks in scope, for the process cache): not a
/// protection, always attached.
pub const TELEMETRY: Variant = variant(
    Tier::Tracepoint,
    &[
        sched(p::EXEC, "sched_process_exec", false),
        sched(p::EXIT, "sched_process_exit", false),
    ],
);

/// Every program of the catalog with the tier of its variant.
pub fn programs() -> impl Iterator<Item = (Tier, &'static Program)> {
    PROTECTIONS
        .iter()
        .flat_map(|p| p.variants)
        .chain([&TELEMETRY])
        .flat_map(|v| v.programs.iter().map(move |p| (v.tier, p)))
}

/// The tier of a program, by name (`None`: not in the catalog).
pub fn tier_of(program: &str) -> Option<Tier> {
    programs().find(|(_, p)| p.name == program).map(|(t, _)| t)
}

/// The tier serving each protection, given the attached programs: the tier of the first
/// variant with an attached program, `None` when nothing serves it (this kernel and tier offer
/// no program for it).
pub fn protection_tiers<'a>(
    attached: impl Iterator<Item = &'a str> + Clone,
) -> Vec<(&'static str, Option<Tier>)> {
    PROTECTIONS
        .iter()
        .map(|protection| {
            let tier = protection
                .variants
                .iter()
                .find(|v| {
                    v.programs
                        .iter()
                        .any(|p| attached.clone().any(|a| a == p.name))
                })
                .map(|v| v.tier);
            (protection.name, tier)
        })
        .collect()
}

/// A tier name for display: `none` when nothing serves a protection.
pub fn tier_name(tier: Option<Tier>) -> &'static str {
    tier.map_or("none", Tier::as_str)
}

/// The protection table of docs/operations.md, rendered from the catalog.
pub fn markdown_table() -> String {
    let mut out =
        String::from("| protection | what | rules | tiers, best first |\n|---|---|---|---|\n");
    for protection in &PROTECTIONS {
        let rules = match protection.rules {
            Rules::Metadata => "metadata".to_owned(),
            Rules::Chmod => "chmod".to_owned(),
            Rules::Privilege(raise) => format!("privilege `{raise}`"),
            Rules::None => "none".to_owned(),
        };
        let tiers: Vec<String> = protection
            .variants
            .iter()
            .map(|v| {
                let hooks: Vec<String> = v
                    .programs
                    .iter()
                    .map(|p| match p.hook {
                        Hook::SockAddr => {
                            format!("cgroup `{}`", p.name.trim_start_matches(p::PREFIX))
                        }
                        Hook::Egress => {
                            format!("cgroup skb `{}`", p.name.trim_start_matches(p::PREFIX))
                        }
                        Hook::Lsm(hook) => format!("`{hook}`"),
                        Hook::Override(function) => format!("`{function}`"),
                        Hook::Tracepoint(tp) => format!("`{}`", tp.name),
                    })
                    .collect();
                format!("{}: {}", v.tier.as_str(), hooks.join(", "))
            })
            .collect();
        out.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            protection.name,
            protection.summary,
            rules,
            tiers.join("; ")
        ));
    }
    out
}

#[cfg(test)]
#[path = "catalog_tests.rs"]
mod tests;
