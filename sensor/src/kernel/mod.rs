//! The kernel side, as the daemon drives it: the embedded eBPF object, the protection
//! [`catalog`], loading and attaching ([`attach`]), the maps ([`maps`]), the kernel facts it
//! needs ([`btf`], [`tracefs`]), scope roots ([`scope`]) and pinned enforcement ([`pins`]).
//!
//! Maps are filled before any program is attached, so there is no moment at which a program
//! runs with an empty destination list. Everything attached here is held by [`Loaded`]: dropping
//! it detaches every program (the links are file descriptors), except pinned links.

pub mod attach;
pub mod btf;
pub mod catalog;
pub mod floor;
pub mod fmod_ret;
pub mod maps;
pub mod pins;
pub mod scope;
pub mod tracefs;

use std::collections::{BTreeMap, BTreeSet};

use aya::{
    Ebpf, EbpfError, EbpfLoader,
    maps::{MapData, MapError, RingBuf},
    programs::{ProgramError, links::PinnedLink},
};
use sensor_common::{Counter, KernelRule, globals, maps as map_names};
use sensor_policy::destinations::Prefix;

pub use self::{catalog::Tier, maps::DestEntry};
use self::{
    pins::{EVENTS_PIN, PinDir},
    scope::ScopeRoot,
};

/// The object built by `build.rs` from `sensor-ebpf` (empty under `AYA_BUILD_SKIP=1`).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sensor-ebpf"));

/// Which tier serves the privilege hooks (`--tier`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TierChoice {
    /// Per hook, the best tier the running kernel accepts: BPF LSM, then override, then kill.
    #[default]
    Auto,
    /// BPF LSM or fail at start-up (naming the hook and the kernel's answer).
    Lsm,
    /// The override tier (fmod_ret) or fail at start-up, even where BPF LSM would load.
    Override,
    /// The kill tier only (syscall tracepoints), even where a better tier would load.
    Kill,
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
    #[error(
        "--tier override: fmod_ret on {function} is not available on this kernel ({why}); the \
         override tier needs BPF trampolines (CONFIG_BPF_JIT, CONFIG_FUNCTION_TRACER), BTF, and \
         a kernel that lets this process load tracing programs"
    )]
    OverrideUnavailable { function: &'static str, why: String },
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
    /// The policies (bits) of cgroups no known pod claims.
    pub others: u32,
    /// At most [`sensor_common::MAX_KERNEL_RULES`] (the daemon refuses a policy with more).
    pub chmod_rules: &'a [KernelRule],
    /// Privilege rules in the same form (`mode_bits` = raise kinds).
    pub privilege_rules: &'a [KernelRule],
    pub wakeup_bytes: u64,
    /// The catalog's programs whose tracepoint this kernel has ([`tracefs::available`]).
    pub tracepoints: &'a BTreeSet<&'static str>,
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
    pub tier: Tier,
}

/// Loaded and attached programs. Dropping it detaches everything (but pinned links).
pub struct Loaded {
    ebpf: Ebpf,
    pub attachments: Vec<Attachment>,
    /// The prefixes in the destination tries now.
    destinations: Vec<Prefix>,
    /// The policy membership map now (pod cgroup id, or `OTHER_CGROUPS` -> policy bits).
    members: BTreeMap<u64, u32>,
    /// Pinned mode: our links (closing them leaves them attached: the pins hold them).
    _pinned: Vec<PinnedLink>,
    /// The override tier's links (made through the bpf syscall, not aya).
    _raw_links: Vec<std::os::fd::OwnedFd>,
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
    /// The policy membership map now.
    pub fn members(&self) -> &BTreeMap<u64, u32> {
        &self.members
    }

    /// Make `members` the policy membership (pod cgroup id, or `OTHER_CGROUPS` -> policy bits):
    /// changed and new keys first, then the others removed.
    pub fn set_members(&mut self, members: &BTreeMap<u64, u32>) -> Result<(), ProgramsError> {
        maps::write_members(&mut self.ebpf, members, &self.members)?;
        self.members = members.clone();
        Ok(())
    }

    /// Replace the destination entries in place (policy reload), without a gap for prefixes
    /// the old and the new entries share.
    pub fn replace_destinations(&mut self, entries: &[DestEntry]) -> Result<(), ProgramsError> {
        maps::write_destinations(&mut self.ebpf, entries, &self.destinations)?;
        maps::write_packet_rule(&mut self.ebpf, entries)?;
        self.destinations = entries.iter().map(|e| e.prefix).collect();
        Ok(())
    }

    /// Make `rules` the chmod rules the programs evaluate: written into the inactive set, which
    /// then becomes the active one with a single 4-byte write (no moment with a half-written
    /// set, none without rules).
    pub fn replace_chmod_rules(&mut self, rules: &[KernelRule]) -> Result<(), ProgramsError> {
        maps::write_rule_set(&mut self.ebpf, maps::CHMOD_RULES, rules)
    }

    /// As [`Loaded::replace_chmod_rules`], for the privilege rules.
    pub fn replace_privilege_rules(&mut self, rules: &[KernelRule]) -> Result<(), ProgramsError> {
        maps::write_rule_set(&mut self.ebpf, maps::PRIVILEGE_RULES, rules)
    }

    /// Take the event ring buffer (once).
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, ProgramsError> {
        maps::take_ring(&mut self.ebpf, map_names::EVENTS)
    }

    /// The kill tier's revert ring: copies of killed set-id calls, for the revert thread.
    pub fn take_reverts(&mut self) -> Result<RingBuf<MapData>, ProgramsError> {
        maps::take_ring(&mut self.ebpf, map_names::REVERTS)
    }

    /// The kernel counters, summed over CPUs.
    pub fn kernel_counters(&self) -> Result<Vec<(Counter, u64)>, ProgramsError> {
        maps::read_counters(&self.ebpf)
    }
}

/// Load the object, fill the maps, load and attach every protection's programs.
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

    let members = BTreeMap::from([(sensor_common::OTHER_CGROUPS, config.others)]);
    maps::write_members(&mut ebpf, &members, &BTreeMap::new())?;
    maps::write_destinations(&mut ebpf, config.destinations, &[])?;
    maps::write_packet_rule(&mut ebpf, config.destinations)?;
    maps::write_rule_set(&mut ebpf, maps::CHMOD_RULES, config.chmod_rules)?;
    maps::write_rule_set(&mut ebpf, maps::PRIVILEGE_RULES, config.privilege_rules)?;
    maps::write_scope(&mut ebpf, config.scopes)?;
    if let Some(pin) = config.pin {
        let path = pin.current().join(EVENTS_PIN);
        let map = ebpf.map(map_names::EVENTS).ok_or(ProgramsError::Map {
            name: map_names::EVENTS,
            source: MapError::InvalidName {
                name: map_names::EVENTS.into(),
            },
        })?;
        map.pin(&path).map_err(|e| ProgramsError::Pin {
            path,
            message: e.to_string(),
        })?;
    }
    // Kernel struct offsets, from this kernel's BTF: the LSM programs and the kill tier's
    // capset and set-id exec checks read credentials with them.
    let offsets = btf::Btf::from_file(std::path::Path::new(btf::VMLINUX))
        .and_then(|b| btf::kernel_offsets(&b));
    let have_offsets = match offsets {
        Ok(o) => {
            maps::write_offsets(&mut ebpf, o)?;
            true
        }
        Err(e) => {
            match config.tier {
                TierChoice::Lsm => {
                    return Err(ProgramsError::LsmUnavailable {
                        hook: "all",
                        why: e.to_string(),
                    });
                }
                TierChoice::Override => {
                    return Err(ProgramsError::OverrideUnavailable {
                        function: "all",
                        why: e.to_string(),
                    });
                }
                TierChoice::Auto | TierChoice::Kill => {}
            }
            tracing::warn!(
                "kernel struct offsets unavailable ({e}): no LSM or override tier, and capset and set-id exec are not enforced"
            );
            false
        }
    };
    let attached = attach::attach_all(&mut ebpf, config, have_offsets, config.tracepoints)?;
    let destinations = config.destinations.iter().map(|e| e.prefix).collect();
    Ok(Loaded {
        ebpf,
        attachments: attached.attachments,
        destinations,
        members,
        _pinned: attached.pinned,
        _raw_links: attached.raw_links,
    })
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; newer ones use memcg accounting.
/// Raising it is best effort: where it is not allowed (no CAP_SYS_RESOURCE) it is not needed
/// on a modern kernel, and a real shortfall shows up as a map creation error naming the map.
pub(super) fn raise_memlock() {
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
