//! The embedded eBPF object: load it, fill its maps, attach its programs.
//!
//! Maps are filled before any program is attached, so there is no moment at which a program
//! runs with an empty destination list. Everything attached here is held by [`Loaded`]: dropping
//! it detaches every program (the links are file descriptors).

pub mod btf;
pub mod pins;
pub mod scope;
pub mod tracefs;

use std::{collections::BTreeSet, net::IpAddr};

use aya::{
    Ebpf, EbpfError, EbpfLoader,
    maps::{
        Array, HashMap, MapData, MapError, PerCpuArray, RingBuf,
        lpm_trie::{Key, LpmTrie},
    },
    programs::{
        CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSockAddr, Lsm, ProgramError,
        TracePoint,
        links::{FdLink, PinnedLink},
    },
};
use sensor_common::{
    ALL_COUNTERS, Action, ChmodRule, ChmodRules, Counter, DestRule, KernelOffsets, MAX_CHMOD_RULES,
    MAX_RULE_PORTS, globals, maps, programs,
};

use sensor_policy::destinations::Prefix;

use self::{
    pins::{EVENTS_PIN, LINK_PREFIX, PinDir},
    scope::ScopeRoot,
    tracefs::SyscallTracepoint,
};

/// The object built by `build.rs` from `sensor-ebpf` (empty under `AYA_BUILD_SKIP=1`).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sensor-ebpf"));

/// The cgroup sock_addr programs, attached at every scope root.
pub const SOCK_ADDR_PROGRAMS: [&str; 4] = [
    programs::CONNECT4,
    programs::CONNECT6,
    programs::SENDMSG4,
    programs::SENDMSG6,
];

/// Every program attached at the scope roots (cgroup tier).
pub const CGROUP_PROGRAMS: [&str; 6] = [
    programs::CONNECT4,
    programs::CONNECT6,
    programs::SENDMSG4,
    programs::SENDMSG6,
    programs::EGRESS,
    programs::EGRESS_COMPAT,
];

/// One BPF LSM program of the LSM tier: its hook, and the kill-tier tracepoint programs it
/// makes unnecessary (they are not attached when it is: a tracepoint would kill the caller
/// before the hook could deny the call).
pub struct LsmHook {
    pub program: &'static str,
    pub hook: &'static str,
    pub replaces: &'static [&'static str],
}

/// The LSM tier, hook by hook.
pub const LSM_HOOKS: [LsmHook; 8] = [
    LsmHook {
        program: programs::LSM_PATH_CHMOD,
        hook: "path_chmod",
        replaces: &[
            programs::CHMOD,
            programs::FCHMOD,
            programs::FCHMODAT,
            programs::FCHMODAT2,
        ],
    },
    LsmHook {
        program: programs::LSM_PATH_MKNOD,
        hook: "path_mknod",
        replaces: &[
            programs::OPEN,
            programs::OPENAT,
            programs::OPENAT2,
            programs::CREAT,
            programs::MKNOD,
            programs::MKNODAT,
        ],
    },
    LsmHook {
        program: programs::LSM_FIX_SETUID,
        hook: "task_fix_setuid",
        replaces: &[
            programs::SETUID,
            programs::SETFSUID,
            programs::SETREUID,
            programs::SETRESUID,
        ],
    },
    LsmHook {
        program: programs::LSM_FIX_SETGID,
        hook: "task_fix_setgid",
        replaces: &[
            programs::SETGID,
            programs::SETFSGID,
            programs::SETREGID,
            programs::SETRESGID,
        ],
    },
    LsmHook {
        program: programs::LSM_CAPSET,
        hook: "capset",
        replaces: &[programs::CAPSET],
    },
    LsmHook {
        program: programs::LSM_SETID_EXEC,
        hook: "bprm_creds_from_file",
        replaces: &[programs::SETID_EXEC],
    },
    LsmHook {
        program: programs::LSM_SOCKET_CREATE,
        hook: "socket_create",
        replaces: &[programs::SOCKET],
    },
    LsmHook {
        program: programs::LSM_SETXATTR,
        hook: "inode_setxattr",
        replaces: &[
            programs::SETXATTR,
            programs::LSETXATTR,
            programs::FSETXATTR,
            programs::SETXATTRAT,
        ],
    },
];

/// What the sensor protects, each with the programs that can serve it, best tier first.
const PROTECTIONS: [(&str, &[&str]); 11] = [
    (
        "metadata-connect",
        &[
            programs::CONNECT4,
            programs::CONNECT6,
            programs::SENDMSG4,
            programs::SENDMSG6,
        ],
    ),
    (
        "metadata-raw-packet",
        &[programs::EGRESS, programs::EGRESS_COMPAT],
    ),
    (
        "metadata-packet",
        &[programs::LSM_SOCKET_CREATE, programs::SOCKET],
    ),
    (
        "metadata-late-socket",
        &[programs::CONN_ENTER, programs::SENDTO_ENTER],
    ),
    ("chmod", &[programs::LSM_PATH_CHMOD, programs::CHMOD]),
    (
        "setid-create",
        &[programs::LSM_PATH_MKNOD, programs::OPENAT],
    ),
    ("setuid-root", &[programs::LSM_FIX_SETUID, programs::SETUID]),
    ("setgid-root", &[programs::LSM_FIX_SETGID, programs::SETGID]),
    ("capset", &[programs::LSM_CAPSET, programs::CAPSET]),
    (
        "setid-exec",
        &[programs::LSM_SETID_EXEC, programs::SETID_EXEC],
    ),
    ("file-caps", &[programs::LSM_SETXATTR, programs::SETXATTR]),
];

/// The tier serving each protection, given the attached programs: the tier of the first
/// attached program that serves it, `none` when nothing does (this kernel and tier offer no
/// program for it).
pub fn protection_tiers<'a>(
    attached: impl Iterator<Item = &'a str> + Clone,
) -> Vec<(&'static str, &'static str)> {
    PROTECTIONS
        .iter()
        .map(|(what, candidates)| {
            let tier = candidates
                .iter()
                .find(|p| attached.clone().any(|a| a == **p))
                .map_or("none", |p| tier(p));
            (*what, tier)
        })
        .collect()
}

/// Which tier serves the privilege hooks (`--tier`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum TierChoice {
    /// BPF LSM for every hook the running kernel accepts, the kill tier for the others.
    #[default]
    Auto,
    /// BPF LSM or fail at start-up (naming the hook and the kernel's answer).
    Lsm,
    /// The kill tier only (syscall tracepoints), even where BPF LSM would load.
    Kill,
}

/// The enforcement tier of a program, as `sensor status` names it: `cgroup` (sock_addr hooks:
/// the call fails with EPERM), `lsm` (BPF LSM: the call fails with EPERM before it changes
/// anything), `kill` (syscall tracepoints: the caller is killed with SIGKILL, set-id bits
/// removed afterwards), `tracepoint` (detection only).
pub fn tier(program: &str) -> &'static str {
    if CGROUP_PROGRAMS.contains(&program) {
        "cgroup"
    } else if LSM_HOOKS.iter().any(|h| h.program == program) {
        "lsm"
    } else if [programs::EXEC, programs::EXIT].contains(&program) {
        "tracepoint"
    } else {
        // Syscall tracepoints and the set-id exec check: they kill.
        "kill"
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProgramsError {
    #[error(
        "this sensor binary was built with AYA_BUILD_SKIP=1 and carries no eBPF object; rebuild without it"
    )]
    NoObject,
    #[error(
        "loading the eBPF object failed (kernel features needed: BPF ring buffer and LPM trie maps, \
         BTF, bounded loops; Linux 5.8 or later): {0}"
    )]
    Load(#[source] EbpfError),
    #[error("eBPF map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
    #[error("eBPF program {name} is missing from the object")]
    MissingProgram { name: &'static str },
    #[error("loading program {name} failed (it needs {feature}); the kernel said: {source}")]
    ProgramLoad {
        name: &'static str,
        feature: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("pinning {} on bpffs: {message}", path.display())]
    Pin {
        path: std::path::PathBuf,
        message: String,
    },
    #[error(
        "--tier lsm: BPF LSM hook {hook} is not available on this kernel ({why}); BPF LSM needs \
         CONFIG_BPF_LSM=y, `bpf` in the active LSM list (the lsm= boot parameter) and BTF"
    )]
    LsmUnavailable { hook: &'static str, why: String },
    #[error("attaching {name} to {target}: {source}")]
    Attach {
        name: &'static str,
        target: String,
        #[source]
        source: ProgramError,
    },
}

/// What is configured into the kernel.
pub struct Config<'a> {
    pub scopes: &'a [ScopeRoot],
    pub destinations: &'a [DestEntry],
    /// At most [`MAX_CHMOD_RULES`] (the daemon refuses a policy with more).
    pub chmod_rules: &'a [ChmodRule],
    /// Privilege rules in the same form (`mode_bits` = raise kinds); at most
    /// [`MAX_CHMOD_RULES`].
    pub privilege_rules: &'a [ChmodRule],
    pub wakeup_bytes: u64,
    pub tracepoints: &'a [SyscallTracepoint],
    /// Offset of `filename` in `sched:sched_process_exec` records.
    pub exec_filename_offset: u64,
    /// Pinned mode: every link and the ring buffer are pinned in this generation.
    pub pin: Option<&'a PinDir>,
    pub tier: TierChoice,
}

/// One attachment, for logs and status.
#[derive(Clone, Debug)]
pub struct Attachment {
    pub program: &'static str,
    pub target: String,
}

/// Loaded and attached programs. Dropping it detaches everything.
pub struct Loaded {
    ebpf: Ebpf,
    pub attachments: Vec<Attachment>,
    /// The prefixes in the destination tries now.
    destinations: Vec<Prefix>,
    /// The exempted cgroup ids now.
    exempt: BTreeSet<u64>,
    /// Pinned mode: our links (closing them leaves them attached: the pins hold them).
    _pinned: Vec<PinnedLink>,
}

/// An earlier generation being retired: its links are unpinned; what its ring buffer still
/// holds is to be read before [`pins::remove_generation`].
pub struct Retired {
    pub dir: std::path::PathBuf,
    pub links: usize,
    pub events: Option<RingBuf<MapData>>,
    /// The daemon that made it is still running (its events are its own to read).
    pub owner_running: bool,
}

/// Retire the earlier generations of a pin directory (after this daemon's own programs are
/// attached and pinned): unpin their links, open their ring buffers.
pub fn retire(
    previous: &[std::path::PathBuf],
) -> Vec<Result<Retired, (std::path::PathBuf, std::io::Error)>> {
    previous
        .iter()
        .map(|dir| {
            let links = pins::unpin_links(dir).map_err(|e| (dir.clone(), e))?;
            // A daemon of that generation still running (an upgrade overlapping it) reads its
            // own ring buffer until it exits: a second reader would race it for records.
            let owner_running = pins::generation_owner_running(dir);
            let events = if owner_running {
                None
            } else {
                MapData::from_pin(dir.join(EVENTS_PIN))
                    .and_then(aya::maps::Map::from_map_data)
                    .ok()
                    .and_then(|map| RingBuf::try_from(map).ok())
            };
            Ok(Retired {
                dir: dir.clone(),
                links,
                events,
                owner_running,
            })
        })
        .collect()
}

impl Loaded {
    /// Make `ids` the exempted (pod-level) cgroups: add the new ones, then remove the others.
    pub fn set_exemptions(&mut self, ids: &BTreeSet<u64>) -> Result<(), ProgramsError> {
        let err = |source| ProgramsError::Map {
            name: maps::EXEMPT,
            source,
        };
        let map = self.ebpf.map_mut(maps::EXEMPT).ok_or_else(|| {
            err(MapError::InvalidName {
                name: maps::EXEMPT.into(),
            })
        })?;
        let mut exempt: HashMap<_, u64, u32> = HashMap::try_from(map).map_err(err)?;
        for id in ids.difference(&self.exempt) {
            exempt.insert(id, 1, 0).map_err(err)?;
        }
        for id in self.exempt.difference(ids) {
            match exempt.remove(id) {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(err(e)),
            }
        }
        self.exempt = ids.clone();
        Ok(())
    }

    /// Replace the destination entries in place (policy reload), without a gap for prefixes
    /// the old and the new entries share.
    pub fn replace_destinations(&mut self, entries: &[DestEntry]) -> Result<(), ProgramsError> {
        write_destinations(&mut self.ebpf, entries, &self.destinations)?;
        write_packet_rule(&mut self.ebpf, entries)?;
        self.destinations = entries.iter().map(|e| e.prefix).collect();
        Ok(())
    }

    /// Make `rules` the chmod rules the programs evaluate: written into the inactive set, which
    /// then becomes the active one with a single 4-byte write (no moment with a half-written
    /// set, none without rules).
    pub fn replace_chmod_rules(&mut self, rules: &[ChmodRule]) -> Result<(), ProgramsError> {
        write_rule_set(&mut self.ebpf, CHMOD_MAPS, rules)
    }

    /// As [`Loaded::replace_chmod_rules`], for the privilege rules.
    pub fn replace_privilege_rules(&mut self, rules: &[ChmodRule]) -> Result<(), ProgramsError> {
        write_rule_set(&mut self.ebpf, PRIV_MAPS, rules)
    }

    /// Take the event ring buffer (once).
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, ProgramsError> {
        let map = self.ebpf.take_map(maps::EVENTS).ok_or(ProgramsError::Map {
            name: maps::EVENTS,
            source: MapError::InvalidName {
                name: maps::EVENTS.into(),
            },
        })?;
        RingBuf::try_from(map).map_err(|source| ProgramsError::Map {
            name: maps::EVENTS,
            source,
        })
    }

    /// The kernel counters, summed over CPUs.
    pub fn kernel_counters(&self) -> Result<Vec<(Counter, u64)>, ProgramsError> {
        let err = |source| ProgramsError::Map {
            name: maps::COUNTERS,
            source,
        };
        let map = self.ebpf.map(maps::COUNTERS).ok_or_else(|| {
            err(MapError::InvalidName {
                name: maps::COUNTERS.into(),
            })
        })?;
        let array = PerCpuArray::<_, u64>::try_from(map).map_err(err)?;
        ALL_COUNTERS
            .iter()
            .map(|&c| Ok((c, array.get(&(c as u32), 0).map_err(err)?.iter().sum())))
            .collect()
    }
}

/// Load the object, fill the maps, load and attach every program.
pub fn load(config: &Config<'_>) -> Result<Loaded, ProgramsError> {
    if OBJECT.is_empty() {
        return Err(ProgramsError::NoObject);
    }
    raise_memlock();
    let mut ebpf = EbpfLoader::new()
        .override_global(globals::WAKEUP_BYTES, &config.wakeup_bytes, true)
        .override_global(
            globals::EXEC_FILENAME_OFFSET,
            &config.exec_filename_offset,
            true,
        )
        .load(OBJECT)
        .map_err(ProgramsError::Load)?;

    write_destinations(&mut ebpf, config.destinations, &[])?;
    write_packet_rule(&mut ebpf, config.destinations)?;
    write_rule_set(&mut ebpf, CHMOD_MAPS, config.chmod_rules)?;
    write_rule_set(&mut ebpf, PRIV_MAPS, config.privilege_rules)?;
    fill_scope(&mut ebpf, config.scopes)?;
    if let Some(pin) = config.pin {
        let path = pin.current().join(EVENTS_PIN);
        let map = ebpf.map(maps::EVENTS).ok_or(ProgramsError::Map {
            name: maps::EVENTS,
            source: MapError::InvalidName {
                name: maps::EVENTS.into(),
            },
        })?;
        map.pin(&path).map_err(|e| ProgramsError::Pin {
            path,
            message: e.to_string(),
        })?;
    }

    let mut attached = Attached::default();
    for name in SOCK_ADDR_PROGRAMS {
        let prog: &mut CgroupSockAddr = program(&mut ebpf, name)?;
        prog.load().map_err(|source| ProgramsError::ProgramLoad {
            name,
            feature: "cgroup sock_addr programs (CONFIG_CGROUP_BPF)",
            source,
        })?;
        for scope in config.scopes {
            let target = scope.path.display().to_string();
            // With bpf_link (Linux 5.7+, which aya uses there) the kernel always attaches in
            // multi mode: other programs at the same cgroup keep running beside ours.
            let id = prog
                .attach(&scope.dir, CgroupAttachMode::Single)
                .map_err(|source| ProgramsError::Attach {
                    name,
                    target: target.clone(),
                    source,
                })?;
            attached.add(config.pin, name, target, || prog.take_link(id))?;
        }
    }
    {
        // Kernels before 6.x refuse current-task helpers (pid, uid, comm) in cgroup skb
        // programs: the compat variant reports the packet's cgroup instead of its process.
        let full = program::<CgroupSkb>(&mut ebpf, programs::EGRESS)?.load();
        let name = match full {
            Ok(()) => programs::EGRESS,
            Err(e) => {
                tracing::info!(
                    error = %error_chain(&e),
                    "{} refused; raw and ping socket events will name the cgroup, not the process",
                    programs::EGRESS
                );
                programs::EGRESS_COMPAT
            }
        };
        let prog: &mut CgroupSkb = program(&mut ebpf, name)?;
        if name == programs::EGRESS_COMPAT {
            prog.load().map_err(|source| ProgramsError::ProgramLoad {
                name,
                feature: "cgroup skb programs (CONFIG_CGROUP_BPF)",
                source,
            })?;
        }
        for scope in config.scopes {
            let target = scope.path.display().to_string();
            let id = prog
                .attach(
                    &scope.dir,
                    CgroupSkbAttachType::Egress,
                    CgroupAttachMode::Single,
                )
                .map_err(|source| ProgramsError::Attach {
                    name,
                    target: target.clone(),
                    source,
                })?;
            attached.add(config.pin, name, target, || prog.take_link(id))?;
        }
    }
    let lifecycle = [
        (programs::EXEC, "sched", "sched_process_exec"),
        (programs::EXIT, "sched", "sched_process_exit"),
    ];
    let replaced = attach_lsm(&mut ebpf, config, &mut attached)?;
    let setid_exec = [(programs::SETID_EXEC, "sched", "sched_process_exec")];
    let syscalls = config
        .tracepoints
        .iter()
        .map(|tp| (tp.program, "syscalls", tp.name));
    for (name, category, tracepoint) in lifecycle
        .into_iter()
        .chain(setid_exec)
        .chain(syscalls)
        .filter(|(name, ..)| !replaced.contains(name))
    {
        let prog: &mut TracePoint = program(&mut ebpf, name)?;
        prog.load().map_err(|source| ProgramsError::ProgramLoad {
            name,
            feature: "tracepoint programs (CONFIG_BPF_EVENTS)",
            source,
        })?;
        let target = format!("{category}/{tracepoint}");
        let id = prog
            .attach(category, tracepoint)
            .map_err(|source| ProgramsError::Attach {
                name,
                target: target.clone(),
                source,
            })?;
        attached.add(config.pin, name, target, || prog.take_link(id))?;
    }
    let destinations = config.destinations.iter().map(|e| e.prefix).collect();
    Ok(Loaded {
        ebpf,
        attachments: attached.attachments,
        destinations,
        exempt: BTreeSet::new(),
        _pinned: attached.pinned,
    })
}

/// The LSM tier: load and attach every hook the kernel accepts (all of them or fail with
/// `--tier lsm`, none with `--tier kill`). Returns the kill-tier programs not to attach (the
/// LSM tier serves their hook, or they could not work).
fn attach_lsm(
    ebpf: &mut Ebpf,
    config: &Config<'_>,
    attached: &mut Attached,
) -> Result<Vec<&'static str>, ProgramsError> {
    let mut replaced = Vec::new();
    // Kernel struct offsets, from this kernel's BTF: the LSM programs and the kill tier's
    // capset and set-id exec checks read credentials with them.
    let offsets =
        crate::kernel::btf::Btf::from_file(std::path::Path::new(crate::kernel::btf::VMLINUX))
            .and_then(|b| crate::kernel::btf::kernel_offsets(&b));
    let offsets = match offsets {
        Ok(o) => o,
        Err(e) => {
            if config.tier == TierChoice::Lsm {
                return Err(ProgramsError::LsmUnavailable {
                    hook: "all",
                    why: e.to_string(),
                });
            }
            tracing::warn!(
                "kernel struct offsets unavailable ({e}): no LSM tier, and capset and set-id exec are not enforced"
            );
            return Ok(vec![programs::CAPSET, programs::SETID_EXEC]);
        }
    };
    write_offsets(ebpf, offsets)?;
    if config.tier == TierChoice::Kill {
        tracing::info!("--tier kill: privilege hooks use syscall tracepoints (kill tier)");
        return Ok(replaced);
    }
    let mut fell_back: Vec<(&'static str, String)> = Vec::new();
    let mut unavailable = |hook: &'static str, why: String| {
        if config.tier == TierChoice::Lsm {
            Err(ProgramsError::LsmUnavailable { hook, why })
        } else {
            fell_back.push((hook, why));
            Ok(())
        }
    };
    let btf = match aya::Btf::from_sys_fs() {
        Ok(b) => b,
        Err(e) => {
            unavailable("all", format!("kernel BTF: {e}"))?;
            warn_fell_back(&fell_back);
            return Ok(replaced);
        }
    };
    for hook in &LSM_HOOKS {
        let name = hook.program;
        let prog: &mut Lsm = program(ebpf, name)?;
        let id = match prog.load(hook.hook, &btf).and_then(|()| prog.attach()) {
            Ok(id) => id,
            Err(e) => {
                // A failed load leaves nothing attached; the kill tier takes over the hook.
                unavailable(hook.hook, error_chain(&e))?;
                continue;
            }
        };
        attached.add(config.pin, name, format!("lsm/{}", hook.hook), || {
            prog.take_link(id)
        })?;
        replaced.extend_from_slice(hook.replaces);
    }
    warn_fell_back(&fell_back);
    Ok(replaced)
}

/// One warning per distinct reason, naming the hooks that fell back to the kill tier (or to
/// nothing: `sensor status` lists them as `none`).
fn warn_fell_back(fell_back: &[(&'static str, String)]) {
    let mut reasons: Vec<&str> = fell_back.iter().map(|(_, why)| why.as_str()).collect();
    reasons.dedup();
    for why in reasons {
        let hooks: Vec<&str> = fell_back
            .iter()
            .filter(|(_, w)| w == why)
            .map(|(h, _)| *h)
            .collect();
        tracing::warn!(
            hooks = %hooks.join(","),
            "BPF LSM not available ({why}): these hooks use the kill tier where it has one (`sensor status` names the tier of each)"
        );
    }
}

/// An error and its sources on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn write_offsets(ebpf: &mut Ebpf, offsets: KernelOffsets) -> Result<(), ProgramsError> {
    set_single(ebpf, maps::OFFSETS, offsets)
}

/// Set the one entry of the array map `name`.
fn set_single<T: aya::Pod>(
    ebpf: &mut Ebpf,
    name: &'static str,
    value: T,
) -> Result<(), ProgramsError> {
    let err = |source| ProgramsError::Map { name, source };
    let map = ebpf
        .map_mut(name)
        .ok_or_else(|| err(MapError::InvalidName { name: name.into() }))?;
    let mut array: Array<_, T> = Array::try_from(map).map_err(err)?;
    array.set(0, value, 0).map_err(err)
}

/// What [`load`] attached so far.
#[derive(Default)]
struct Attached {
    attachments: Vec<Attachment>,
    pinned: Vec<PinnedLink>,
}

impl Attached {
    /// Record an attachment; in pinned mode, take its link from the program (`take`) and pin
    /// it. (Without pinning the link stays with its program: taking it and dropping it would
    /// detach it.)
    fn add<L>(
        &mut self,
        pin: Option<&PinDir>,
        program: &'static str,
        target: String,
        take: impl FnOnce() -> Result<L, ProgramError>,
    ) -> Result<(), ProgramsError>
    where
        FdLink: TryFrom<L>,
        <FdLink as TryFrom<L>>::Error: std::fmt::Display,
    {
        if let Some(pin) = pin {
            let n = self.attachments.len();
            self.pinned.push(pin_link(pin, program, n, take())?);
        }
        self.attachments.push(Attachment { program, target });
        Ok(())
    }
}

/// Pin a link just taken from its program (`link-<program>-<n>` in this generation).
fn pin_link<L>(
    pin: &PinDir,
    name: &str,
    n: usize,
    taken: Result<L, ProgramError>,
) -> Result<PinnedLink, ProgramsError>
where
    FdLink: TryFrom<L>,
    <FdLink as TryFrom<L>>::Error: std::fmt::Display,
{
    let path = pin.current().join(format!("{LINK_PREFIX}{name}-{n}"));
    let error = |message: String| ProgramsError::Pin {
        path: path.clone(),
        message,
    };
    let link = taken.map_err(|e| error(e.to_string()))?;
    let link = FdLink::try_from(link).map_err(|e| error(e.to_string()))?;
    link.pin(&path).map_err(|e| error(e.to_string()))
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; newer ones use memcg accounting.
/// Raising it is best effort: where it is not allowed (no CAP_SYS_RESOURCE) it is not needed
/// on a modern kernel, and a real shortfall shows up as a map creation error naming the map.
fn raise_memlock() {
    let limit = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: valid resource id and rlimit pointer.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) } != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "could not raise RLIMIT_MEMLOCK (fine with memcg accounting)");
    }
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, ProgramsError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    let prog = ebpf
        .program_mut(name)
        .ok_or(ProgramsError::MissingProgram { name })?;
    prog.try_into()
        .map_err(|source| ProgramsError::ProgramLoad {
            name,
            feature: "program type",
            source,
        })
}

const _: () = assert!(sensor_policy::MAX_PORTS == MAX_RULE_PORTS);
const _: () = assert!(sensor_policy::MAX_CHMOD_RULES == MAX_CHMOD_RULES);

/// One destination trie entry: a prefix, what a match does, and the index the kernel reports
/// (it names the entry in events).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DestEntry {
    pub prefix: Prefix,
    pub action: Action,
    pub rule: u32,
    /// Destination ports the entry applies to; empty = every port. At most
    /// [`MAX_RULE_PORTS`] (the policy parser refuses more).
    pub ports: Vec<u16>,
}

/// Write `entries` into the tries (each insert replaces a key's value atomically), then remove
/// the keys of `old` that `entries` no longer has. A prefix in both never leaves the trie: no
/// moment in which a destination both versions block is open.
fn write_destinations(
    ebpf: &mut Ebpf,
    entries: &[DestEntry],
    old: &[Prefix],
) -> Result<(), ProgramsError> {
    let [v4, v6] = ebpf.maps_disjoint_mut([maps::DEST_V4, maps::DEST_V6]);
    let missing = |name: &'static str| ProgramsError::Map {
        name,
        source: MapError::InvalidName { name: name.into() },
    };
    let v4_err = |source| ProgramsError::Map {
        name: maps::DEST_V4,
        source,
    };
    let v6_err = |source| ProgramsError::Map {
        name: maps::DEST_V6,
        source,
    };
    let mut v4: LpmTrie<_, [u8; 4], DestRule> =
        LpmTrie::try_from(v4.ok_or_else(|| missing(maps::DEST_V4))?).map_err(v4_err)?;
    let mut v6: LpmTrie<_, [u8; 16], DestRule> =
        LpmTrie::try_from(v6.ok_or_else(|| missing(maps::DEST_V6))?).map_err(v6_err)?;
    for e in entries {
        let mut ports = [0u16; MAX_RULE_PORTS];
        let nports = e.ports.len().min(MAX_RULE_PORTS);
        ports[..nports].copy_from_slice(&e.ports[..nports]);
        let value = DestRule {
            action: e.action as u32,
            rule: e.rule,
            nports: nports as u32,
            _pad: 0,
            ports,
        };
        let len = u32::from(e.prefix.len);
        match e.prefix.addr {
            IpAddr::V4(a) => v4
                .insert(&Key::new(len, a.octets()), value, 0)
                .map_err(v4_err)?,
            IpAddr::V6(a) => v6
                .insert(&Key::new(len, a.octets()), value, 0)
                .map_err(v6_err)?,
        }
    }
    for gone in old
        .iter()
        .filter(|p| !entries.iter().any(|e| e.prefix == **p))
    {
        let len = u32::from(gone.len);
        match gone.addr {
            IpAddr::V4(a) => v4.remove(&Key::new(len, a.octets())).map_err(v4_err)?,
            IpAddr::V6(a) => v6.remove(&Key::new(len, a.octets())).map_err(v6_err)?,
        }
    }
    Ok(())
}

/// The metadata rule that decides about packet sockets (which can reach any destination): the
/// first enforcing entry's, else the first audit entry's, else none.
fn write_packet_rule(ebpf: &mut Ebpf, entries: &[DestEntry]) -> Result<(), ProgramsError> {
    let chosen = entries
        .iter()
        .find(|e| e.action != Action::Audit)
        .or_else(|| entries.first());
    let value = DestRule {
        action: chosen.map_or(Action::Audit as u32, |e| e.action as u32),
        rule: chosen.map_or(sensor_common::NO_RULE, |e| e.rule),
        nports: 0,
        _pad: 0,
        ports: [0; MAX_RULE_PORTS],
    };
    set_single(ebpf, maps::PACKET_RULE, value)
}

/// (rule sets, active index) maps of the chmod rules and of the privilege rules.
const CHMOD_MAPS: (&str, &str) = (maps::CHMOD_RULES, maps::CHMOD_ACTIVE);
const PRIV_MAPS: (&str, &str) = (maps::PRIV_RULES, maps::PRIV_ACTIVE);

/// Write `rules` into the inactive set of a double-buffered rule map, then make it the active
/// one with a single 4-byte write.
fn write_rule_set(
    ebpf: &mut Ebpf,
    (sets_name, active_name): (&'static str, &'static str),
    rules: &[ChmodRule],
) -> Result<(), ProgramsError> {
    let err = |name: &'static str| move |source| ProgramsError::Map { name, source };
    let missing = |name: &'static str| ProgramsError::Map {
        name,
        source: MapError::InvalidName { name: name.into() },
    };
    let [sets, active] = ebpf.maps_disjoint_mut([sets_name, active_name]);
    let mut sets: Array<_, ChmodRules> =
        Array::try_from(sets.ok_or_else(|| missing(sets_name))?).map_err(err(sets_name))?;
    let mut active: Array<_, u32> =
        Array::try_from(active.ok_or_else(|| missing(active_name))?).map_err(err(active_name))?;
    let now = active.get(&0, 0).map_err(err(active_name))? & 1;
    let mut set = ChmodRules {
        count: rules.len().min(MAX_CHMOD_RULES) as u32,
        _pad: 0,
        rules: [ChmodRule::default(); MAX_CHMOD_RULES],
    };
    for (slot, rule) in set.rules.iter_mut().zip(rules) {
        *slot = *rule;
    }
    sets.set(1 - now, set, 0).map_err(err(maps::CHMOD_RULES))?;
    active.set(0, 1 - now, 0).map_err(err(maps::CHMOD_ACTIVE))
}

fn fill_scope(ebpf: &mut Ebpf, scopes: &[ScopeRoot]) -> Result<(), ProgramsError> {
    let err = |source| ProgramsError::Map {
        name: maps::SCOPE,
        source,
    };
    let map = ebpf.map_mut(maps::SCOPE).ok_or_else(|| {
        err(MapError::InvalidName {
            name: maps::SCOPE.into(),
        })
    })?;
    let mut scope: HashMap<_, u64, u32> = HashMap::try_from(map).map_err(err)?;
    for root in scopes {
        scope.insert(root.id, 1, 0).map_err(err)?;
    }
    Ok(())
}
