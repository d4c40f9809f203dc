//! Loading and attaching the catalog's programs: per protection, the first variant the kernel
//! accepts and `--tier` allows; in pinned mode every link is pinned as it is made.

use std::collections::BTreeSet;

use aya::{
    Ebpf,
    programs::{
        CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSockAddr, Lsm, ProgramError,
        TracePoint,
        links::{FdLink, PinnedLink},
    },
};

use super::{
    Attachment, Config, ProgramsError, TierChoice,
    catalog::{self, Hook, PROTECTIONS, Program, Tier, Variant},
    fmod_ret,
    pins::{LINK_PREFIX, PinDir},
};

/// What [`attach_all`] attached.
#[derive(Default)]
pub struct Attached {
    pub attachments: Vec<Attachment>,
    /// Pinned mode: our links (closing them leaves them attached: the pins hold them).
    pub pinned: Vec<PinnedLink>,
    /// The override tier's links, made through the bpf syscall.
    pub raw_links: Vec<std::os::fd::OwnedFd>,
}

/// Why a variant was not attached.
enum Refused {
    /// The kernel refused one of its programs: the next variant of the protection takes over,
    /// and `error` is the start-up error when there is none.
    Fallback {
        hook: &'static str,
        why: String,
        error: Box<ProgramsError>,
    },
    /// Start-up fails.
    Fatal(Box<ProgramsError>),
}

impl From<ProgramsError> for Refused {
    fn from(e: ProgramsError) -> Self {
        Self::Fatal(Box::new(e))
    }
}

/// Attach every protection, then the process telemetry. `offsets`: whether the kernel struct
/// offsets are in the map (without them, the programs that need them are not attached);
/// `available`: the tracepoints this kernel has (optional ones may be missing).
pub fn attach_all(
    ebpf: &mut Ebpf,
    config: &Config<'_>,
    offsets: bool,
    available: &BTreeSet<&'static str>,
) -> Result<Attached, ProgramsError> {
    let lsm_active = bpf_lsm_active();
    let mut attacher = Attacher {
        ebpf,
        config,
        available,
        btf: None,
        relocated: None,
        attached: Attached::default(),
    };
    match config.tier {
        TierChoice::Kill => {
            tracing::info!("--tier kill: privilege hooks use syscall tracepoints (kill tier)");
        }
        TierChoice::Override => {
            tracing::info!("--tier override: privilege hooks use fmod_ret (override tier)");
        }
        TierChoice::Auto | TierChoice::Lsm => {}
    }
    let mut fell_back: Vec<(Tier, &'static str, String)> = Vec::new();
    for protection in &PROTECTIONS {
        let variants: Vec<&Variant> = protection
            .variants
            .iter()
            .filter(|v| allowed(config.tier, v.tier))
            .collect();
        for (i, variant) in variants.iter().enumerate() {
            let required = matches!(
                (variant.tier, config.tier),
                (Tier::Lsm, TierChoice::Lsm) | (Tier::Override, TierChoice::Override)
            );
            if !offsets && variant.programs.iter().any(|p| p.needs_offsets) {
                // Warned about once, when the offsets could not be read.
                if required {
                    return Err(unavailable(
                        variant,
                        "kernel struct offsets unavailable".into(),
                    ));
                }
                continue;
            }
            if variant.tier == Tier::Lsm
                && let Some(why) = &lsm_active
            {
                // Loaded and attached, an LSM program would never run.
                if required {
                    return Err(unavailable(variant, why.clone()));
                }
                fell_back.push((Tier::Lsm, hook_of(variant), why.clone()));
                continue;
            }
            match attacher.variant(variant) {
                Ok(()) => break,
                Err(Refused::Fallback { why, .. }) if required => {
                    return Err(unavailable(variant, why));
                }
                Err(Refused::Fallback { hook, why, error }) => {
                    if i + 1 == variants.len() {
                        return Err(*error);
                    }
                    if matches!(variant.tier, Tier::Lsm | Tier::Override) {
                        fell_back.push((variant.tier, hook, why));
                    }
                }
                Err(Refused::Fatal(e)) => return Err(*e),
            }
        }
    }
    warn_fell_back(&fell_back);
    match attacher.variant(&catalog::TELEMETRY) {
        Ok(()) => Ok(attacher.attached),
        Err(Refused::Fallback { error, .. } | Refused::Fatal(error)) => Err(*error),
    }
}

/// Whether `--tier` lets a variant of `tier` serve.
fn allowed(choice: TierChoice, tier: Tier) -> bool {
    match choice {
        TierChoice::Auto | TierChoice::Lsm => true,
        TierChoice::Override => tier != Tier::Lsm,
        TierChoice::Kill => !matches!(tier, Tier::Lsm | Tier::Override),
    }
}

/// The hook (or kernel function) of a one-program variant, for messages.
fn hook_of(variant: &Variant) -> &'static str {
    match variant.programs.first().map(|p| p.hook) {
        Some(Hook::Lsm(hook) | Hook::Override(hook)) => hook,
        _ => "?",
    }
}

/// The start-up error of a `--tier lsm|override` whose tier is not available.
fn unavailable(variant: &Variant, why: String) -> ProgramsError {
    if variant.tier == Tier::Override {
        ProgramsError::OverrideUnavailable {
            function: hook_of(variant),
            why,
        }
    } else {
        ProgramsError::LsmUnavailable {
            hook: hook_of(variant),
            why,
        }
    }
}

/// The active LSM list, `/sys/kernel/security/lsm`: `None` when BPF LSM is active (or the list
/// cannot be read: then loading decides), else why not.
fn bpf_lsm_active() -> Option<String> {
    let list = std::fs::read_to_string("/sys/kernel/security/lsm").ok()?;
    (!list.trim().split(',').any(|l| l == "bpf")).then(|| {
        format!(
            "`bpf` is not in the active LSM list ({}); add it to the lsm= boot parameter",
            list.trim()
        )
    })
}

struct Attacher<'a, 'c> {
    ebpf: &'a mut Ebpf,
    config: &'a Config<'c>,
    available: &'a BTreeSet<&'static str>,
    /// The kernel's BTF, read for the first LSM or override program.
    btf: Option<Result<aya::Btf, String>>,
    /// The object relocated for the override tier's own loader, made for its first program.
    relocated: Option<Result<fmod_ret::Relocated, String>>,
    attached: Attached,
}

impl Attacher<'_, '_> {
    /// Load and attach every program of `variant`. Only an LSM or egress program the kernel
    /// refuses is a fallback, and only before anything of the variant is attached (each such
    /// variant has one program).
    fn variant(&mut self, variant: &Variant) -> Result<(), Refused> {
        for program in variant.programs {
            match program.hook {
                Hook::SockAddr => self.sock_addr(program)?,
                Hook::Egress => self.egress(program)?,
                Hook::Lsm(hook) => self.lsm(program, hook)?,
                Hook::Override(function) => self.fmod_ret(program, function)?,
                Hook::Tracepoint(tp) => {
                    if self.available.contains(program.name) {
                        self.tracepoint(program.name, tp.category, tp.name)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn sock_addr(&mut self, program: &Program) -> Result<(), ProgramsError> {
        let name = program.name;
        let prog: &mut CgroupSockAddr = super::program(self.ebpf, name)?;
        prog.load().map_err(|source| ProgramsError::ProgramLoad {
            name,
            feature: "cgroup sock_addr programs (CONFIG_CGROUP_BPF)",
            source,
        })?;
        for scope in self.config.scopes {
            let target = scope.path.display().to_string();
            // With bpf_link (Linux 5.7+, which aya uses there) the kernel always attaches in
            // multi mode: other programs at the same cgroup keep running beside ours.
            let id = prog
                .attach(&scope.dir, CgroupAttachMode::Single)
                .map_err(|source| attach_error(name, &target, source))?;
            record(&mut self.attached, self.config.pin, name, target, || {
                prog.take_link(id)
            })?;
        }
        Ok(())
    }

    fn egress(&mut self, program: &Program) -> Result<(), Refused> {
        let name = program.name;
        let prog: &mut CgroupSkb = super::program(self.ebpf, name)?;
        if let Err(source) = prog.load() {
            // Kernels before 6.x refuse current-task helpers (pid, uid, comm) in cgroup skb
            // programs: the compat variant reports the packet's cgroup instead of its process.
            tracing::info!(
                error = %error_chain(&source),
                "{name} refused; raw and ping socket events will name the cgroup, not the process"
            );
            return Err(Refused::Fallback {
                hook: "cgroup_skb/egress",
                why: error_chain(&source),
                error: Box::new(ProgramsError::ProgramLoad {
                    name,
                    feature: "cgroup skb programs (CONFIG_CGROUP_BPF)",
                    source,
                }),
            });
        }
        for scope in self.config.scopes {
            let target = scope.path.display().to_string();
            let id = prog
                .attach(
                    &scope.dir,
                    CgroupSkbAttachType::Egress,
                    CgroupAttachMode::Single,
                )
                .map_err(|source| attach_error(name, &target, source))?;
            record(&mut self.attached, self.config.pin, name, target, || {
                prog.take_link(id)
            })?;
        }
        Ok(())
    }

    /// The kernel's BTF (read once), or why not as a fallback.
    fn kernel_btf(&mut self, hook: &'static str) -> Result<&aya::Btf, Refused> {
        let btf = self
            .btf
            .get_or_insert_with(|| aya::Btf::from_sys_fs().map_err(|e| format!("kernel BTF: {e}")));
        btf.as_ref().map_err(|why| Refused::Fallback {
            hook,
            why: why.clone(),
            error: Box::new(ProgramsError::LsmUnavailable {
                hook,
                why: why.clone(),
            }),
        })
    }

    fn fmod_ret(&mut self, program: &Program, function: &'static str) -> Result<(), Refused> {
        let fallback = |why: String| Refused::Fallback {
            hook: function,
            why: why.clone(),
            error: Box::new(ProgramsError::OverrideUnavailable { function, why }),
        };
        self.kernel_btf(function)?;
        let relocated = self
            .relocated
            .get_or_insert_with(|| fmod_ret::Relocated::new(super::OBJECT, self.ebpf));
        let relocated = relocated.as_ref().map_err(|why| fallback(why.clone()))?;
        let btf = self
            .btf
            .as_ref()
            .and_then(|b| b.as_ref().ok())
            .expect("read above");
        let n = self.attached.attachments.len();
        let pin = self.config.pin.map(|pin| {
            pin.current()
                .join(format!("{LINK_PREFIX}{}-{n}", program.name))
        });
        let link = relocated
            .attach(program.name, function, btf, pin.as_deref())
            .map_err(fallback)?;
        self.attached.raw_links.push(link);
        self.attached.attachments.push(Attachment {
            program: program.name,
            target: format!("fmod_ret/{function}"),
            tier: Tier::Override,
        });
        Ok(())
    }

    fn lsm(&mut self, program: &Program, hook: &'static str) -> Result<(), Refused> {
        self.kernel_btf(hook)?;
        let btf = self
            .btf
            .as_ref()
            .and_then(|b| b.as_ref().ok())
            .expect("read above");
        let name = program.name;
        let prog: &mut Lsm = super::program(self.ebpf, name)?;
        match prog.load(hook, btf).and_then(|()| prog.attach()) {
            Ok(id) => {
                record(
                    &mut self.attached,
                    self.config.pin,
                    name,
                    format!("lsm/{hook}"),
                    || prog.take_link(id),
                )?;
                Ok(())
            }
            // A failed load leaves nothing attached; the next variant takes over the hook.
            Err(source) => Err(Refused::Fallback {
                hook,
                why: error_chain(&source),
                error: Box::new(ProgramsError::LsmUnavailable {
                    hook,
                    why: error_chain(&source),
                }),
            }),
        }
    }

    fn tracepoint(
        &mut self,
        name: &'static str,
        category: &'static str,
        tracepoint: &'static str,
    ) -> Result<(), ProgramsError> {
        let prog: &mut TracePoint = super::program(self.ebpf, name)?;
        prog.load().map_err(|source| ProgramsError::ProgramLoad {
            name,
            feature: "tracepoint programs (CONFIG_BPF_EVENTS)",
            source,
        })?;
        let target = format!("{category}/{tracepoint}");
        let id = prog
            .attach(category, tracepoint)
            .map_err(|source| attach_error(name, &target, source))?;
        record(&mut self.attached, self.config.pin, name, target, || {
            prog.take_link(id)
        })
    }
}

pub(super) fn attach_error(
    name: &'static str,
    target: &str,
    source: ProgramError,
) -> ProgramsError {
    ProgramsError::Attach {
        name,
        target: target.to_owned(),
        source,
    }
}

/// Record an attachment; in pinned mode, take its link from the program (`take`) and pin it.
/// (Without pinning the link stays with its program: taking it and dropping it would detach
/// it.)
fn record<L>(
    attached: &mut Attached,
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
        let n = attached.attachments.len();
        attached.pinned.push(pin_link(pin, program, n, take())?);
    }
    let tier = catalog::tier_of(program).unwrap_or(Tier::Kill);
    attached.attachments.push(Attachment {
        program,
        target,
        tier,
    });
    Ok(())
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

/// One warning per tier and distinct reason, naming the hooks that fell back to the next tier
/// (or to nothing: `sensor status` lists them as `none`).
fn warn_fell_back(fell_back: &[(Tier, &'static str, String)]) {
    let mut reasons: Vec<(Tier, &str)> = fell_back
        .iter()
        .map(|(t, _, why)| (*t, why.as_str()))
        .collect();
    reasons.sort_unstable();
    reasons.dedup();
    for (tier, why) in reasons {
        let hooks: Vec<&str> = fell_back
            .iter()
            .filter(|(t, _, w)| *t == tier && w == why)
            .map(|(_, h, _)| *h)
            .collect();
        let what = match tier {
            Tier::Lsm => "BPF LSM",
            _ => "the override tier (fmod_ret)",
        };
        tracing::warn!(
            hooks = %hooks.join(","),
            "{what} not available ({why}): these hooks use the next tier where they have one (`sensor status` names the tier of each)"
        );
    }
}

/// An error and its sources on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
